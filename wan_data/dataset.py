"""``WanVideoDataset``: the public entry point, an ``IterableDataset`` of ready batches.

Use it as ``DataLoader(ds, batch_size=None, num_workers=N)`` (or ``ds.loader(num_workers=N)``,
which also tracks progress for exact resume). At construction every source is collected, probed
(in threads, with an optional metadata cache) and given its buckets, so each epoch's batch plan
is a pure function of (seed, epoch, metadata, world size), computed by every rank and worker
alike without communication. Each rank's batches are dealt round-robin to its DataLoader workers,
which is the order the DataLoader collects them in, so the loader yields the plan in order.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import socket
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.context import get_spawning_popen
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from wan_data.config.options import check_sample_options, resolve_shape
from wan_data.errors import ConfigError, format_error
from wan_data.failures.breaker import BreakerConfig
from wan_data.failures.ledger import Ledger, skip_known_bad
from wan_data.failures.mechanism import StageContext
from wan_data.failures.policy import ErrorPolicy
from wan_data.index.metadata_cache import MetadataCache
from wan_data.index.sample_index import load_index, save_index, setup_fingerprint
from wan_data.items import Failed, Probed, Source
from wan_data.latents.prepare import (
    CachedClip,
    CacheSpec,
    LatentBatcher,
    prepare_cache,
    sample_key,
    vae_info_from_files,
)
from wan_data.latents.store import CacheStats, LatentCache
from wan_data.latents.vae import VaeEncoder
from wan_data.media.buckets import check_resolutions, cover_size, make_bucket_set
from wan_data.media.integrity import FfmpegNotFoundError, find_ffmpeg
from wan_data.media.sampling import (
    check_frame_buckets,
    expected_repeated_fraction,
    frames_available,
    split_unused_frames,
)
from wan_data.observe.alerts import Alert, AlertConfig, AlertMonitor
from wan_data.observe.logs import log_to_jsonl
from wan_data.observe.memory import MemoryStats, merge_memory
from wan_data.observe.metrics import (
    Metrics,
    MetricsCallback,
    YieldCounter,
    latest_memory,
    merge_reports,
    write_snapshot,
)
from wan_data.planning.batches import MemberReader, PlanSample, build_batches, build_samples
from wan_data.planning.plan import EpochPlan, check_plan_options, plan_epoch
from wan_data.planning.resume import describe_changes, save_sketch
from wan_data.stages.collect import (
    Concept,
    check_concepts,
    collect,
    concepts_from,
    fallback_captions,
)
from wan_data.stages.decode import DecodeOptions, default_ffmpeg_threads
from wan_data.stages.probe import ProbeLimits, probe

__all__ = ["WanVideoDataset"]

logger = logging.getLogger("wan_data")

Roots = str | os.PathLike[str] | Concept | Sequence[str | os.PathLike[str] | Concept]
Resolution = tuple[int, int] | Sequence[tuple[int, int]]
STATE_VERSION = 1
# Slots of WanVideoDataset._shared (shared memory, so set_epoch and load_state_dict reach
# persistent DataLoader workers): the last pass and its epoch, the resume point, the progress.
_PASS, _RESUME_EPOCH, _RESUME_POSITION, _PROGRESS_EPOCH, _PROGRESS_POSITION = range(5)
# Slot _PASS holds (pass id << 23) | (epoch + 1): one 64-bit value, so it changes atomically;
# pass id 0 means "no pass since set_epoch", and its epoch is then the one before the next.
_EPOCH_BITS = 23
_MAX_EPOCH = (1 << _EPOCH_BITS) - 2
_PASS_ID_MASK = (1 << 40) - 1
_MAIN_PASS = 1  # an iteration in the main process; worker passes have bit 1 set


def _pack_pass(pass_id: int, epoch: int) -> int:
    return (pass_id << _EPOCH_BITS) | ((epoch + 1) & ((1 << _EPOCH_BITS) - 1))


def _unpack_pass(value: int) -> tuple[int, int]:
    """``(pass id, epoch)``; pass id 0 means no pass since the last ``set_epoch``."""
    return value >> _EPOCH_BITS, (value & ((1 << _EPOCH_BITS) - 1)) - 1


# Report snapshots are written at most this often while iterating (and always at the end): a
# snapshot per batch cost 0.8 ms, more than reading a small cached batch.
SNAPSHOT_SECONDS = 0.5
# The cache folder's entry count and size in report() are refreshed at most this often.
CACHE_STATS_SECONDS = 60.0


class _Default:
    """Marks an option left to the preset (``None`` is a meaningful value for ``fps``)."""

    def __repr__(self) -> str:
        return "<preset default>"


DEFAULT: Any = _Default()


def _remove_dir(path: str, owner_pid: int) -> None:
    # Forked workers inherit finalizers; only the process that made the folder removes it.
    if os.getpid() == owner_pid:
        shutil.rmtree(path, ignore_errors=True)


class WanVideoDataset(IterableDataset[dict[str, Any]]):
    """Pixel clips from folders of videos and images, in planned, bucket-homogeneous batches.

    Args:
        roots: folder(s), ``.jsonl``/``.csv`` metadata file(s) or :class:`Concept` objects.
        preset: ``"wan2.1"``, ``"wan2.2-a14b"`` or ``"wan2.2-ti2v-5b"``: sets ``step``,
            ``fps``, ``frames`` and ``resolution`` unless those are given explicitly.
        frames: frame buckets, 4k+1 counts; each video takes the largest it can fill.
        fps: sampling rate by presentation time; ``None`` keeps native frames.
        resolution: target ``(width, height)`` or a list of them (bucket tiers); buckets
            keep each target's area at other aspects.
        step: side multiple of every bucket (16 for Wan2.1 / 2.2-A14B, 32 for TI2V-5B).
        max_aspect: widest aspect ratio of a bucket (and 1/max_aspect the tallest).
        no_upscale: choose the largest bucket whose sides do not exceed the source (sources
            smaller than every bucket are skipped as ``too_small``).
        batch_size: samples per batch (batches never mix buckets).
        small_buckets: what to do with a bucket's last partial batch (and with buckets smaller
            than the batch): ``"repeat"`` its samples to fill it, ``"drop"`` it, or keep it
            ``"partial"``.
        seed: base of every random choice (plan, windows, crops, captions).
        sampling: ``head``, ``random``, ``uniform`` or ``chunks``.
        clips_per_video: windows per video for ``uniform``; cap for ``chunks`` (0 = all).
        crop: ``center`` or ``random``.
        missing_caption: ``empty``, ``filename``, ``skip`` or ``error`` (see collect).
        caption_extension: sidecar caption suffix.
        allow_outside_root: accept entries that resolve outside their root.
        max_pixels: width x height above which a file is skipped as ``too_large``.
        max_duration_seconds: longest accepted video, ``None`` for any.
        min_source_fps: skip videos whose frame rate is below this as ``low_fps`` (a source
            slower than ``fps`` repeats frames: ``report()["buckets"]`` and each pixel batch's
            ``repeated_fraction`` say how many); ``None`` accepts any rate.
        integrity_check: decode every video fully once with FFmpeg's error detection and
            skip those with decode errors as ``corrupt_frames`` (FFmpeg conceals damaged
            frames: without the check they are served as smeared pixels; see docs/errors.md).
            ``None`` (default): on when ``vae`` and ``cache_dir`` are given (the cache pass
            decodes anyway), off for pixel streaming. The verdict is kept per file version in
            the metadata cache (``<cache_dir>/metadata.jsonl`` unless ``metadata_cache`` is
            given), so it runs once per file; needs the ``ffmpeg`` CLI.
        policy: the error policy (default: 3 attempts for transient errors).
        breaker_threshold: failure fraction that stops the run; ``None`` disables the breaker.
        breaker_min_items: items a worker must see before the breaker may open.
        num_ffmpeg_threads: decoder threads; ``None`` divides the cores among workers.
        probe_threads: threads probing metadata at construction (``None``: the cores).
        metadata_cache: a JSON-lines file keeping probed metadata of unchanged files across
            runs (``None``: probe every file at every construction).
        report_dir: where workers write report parts (default: a private temp folder).
        rank, world_size: override ``torch.distributed``'s values.
        vae: a local folder holding a Wan VAE (``AutoencoderKLWan``) or a full Wan Diffusers
            repo with a ``vae/`` subfolder; with ``cache_dir``, batches carry ``latents``
            read from the cache instead of pixels (see docs/cache.md).
        cache_dir: the latent cache folder (shared by ranks and runs).
        device: where :meth:`prepare` runs the VAE (default: ``cuda`` when available).
        vae_dtype, latent_dtype: VAE compute dtype and stored latent dtype.
        encode_batch_size: clips of one bucket per VAE call.
        vae_subfolder: overrides the ``vae/`` detection.
        variations: cached variants per clip (random windows and crops); epoch ``e`` reads
            variant ``e mod variations``.
        prepare: ``"error"`` (a missing entry stops iteration with the command that fills the
            cache) or ``"auto"`` (:meth:`loader` and ``num_workers=0`` iteration fill it first).
        content_hash: add the sha256 of each source's bytes to its cache key (for filesystems
            whose mtimes cannot be trusted).
        ledger: a JSON-lines file of sources that failed for reasons of their own (unreadable,
            no video stream, undecodable...); later constructions skip them without opening
            them unless they changed (see docs/ledger.md). Default: ``<cache_dir>/ledger.jsonl``
            with a cache, none without; ``None`` disables it.
        retry_failed: try the ledger's known-bad files again (and clear those that now work).
        metrics: collect per-process report snapshots, memory figures, alerts and the stall
            watchdog while iterating; ``False`` keeps only the stage counters in memory
            (``report()`` then covers construction only).
        alerts: thresholds of the alerts (see docs/observability.md); ``None`` disables them.
        on_alert: called with each :class:`~wan_data.observe.alerts.Alert`, in the process that
            fired
            it (a worker for memory and stall alerts: pass a picklable function).
        metrics_callback: receives :meth:`report` every ``metrics_every`` batches in the main
            process while iterating :meth:`loader` (e.g. to forward
            :func:`~wan_data.observe.metrics.scalars` to TensorBoard).
        metrics_every: batches between two ``metrics_callback`` calls and alert checks.
        log_jsonl: also write the ``wan_data`` log as JSON lines to this file (from every
            worker process too).
        sample_index: a folder for snapshots of construction (one per set of options): the
            next construction with the same options and unchanged files loads the sources,
            metadata and samples from it in about two ``stat`` calls per source instead of
            collecting and probing again (see docs/performance.md). Default:
            ``<cache_dir>/samples`` with a cache, ``<metadata_cache>.samples`` with a metadata
            cache, else none; ``None`` disables it.
    """

    def __init__(
        self,
        roots: Roots,
        *,
        preset: str | None = None,
        frames: Sequence[int] | int | None = None,
        fps: float | None = DEFAULT,
        resolution: Resolution | None = None,
        step: int | None = None,
        max_aspect: float = 4.0,
        no_upscale: bool = False,
        batch_size: int = 1,
        small_buckets: str = "repeat",
        seed: int = 0,
        sampling: str = "head",
        clips_per_video: int = 1,
        crop: str = "center",
        missing_caption: str = "empty",
        caption_extension: str = ".txt",
        allow_outside_root: bool = False,
        max_pixels: int = 4096 * 4096,
        max_duration_seconds: float | None = None,
        min_source_fps: float | None = None,
        integrity_check: bool | None = None,
        policy: ErrorPolicy | None = None,
        breaker_threshold: float | None = 0.5,
        breaker_min_items: int = 20,
        num_ffmpeg_threads: int | None = None,
        probe_threads: int | None = None,
        metadata_cache: str | os.PathLike[str] | None = None,
        report_dir: str | os.PathLike[str] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        vae: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        device: str | None = None,
        vae_dtype: torch.dtype = torch.float32,
        latent_dtype: torch.dtype = torch.bfloat16,
        encode_batch_size: int = 1,
        vae_subfolder: str | None = None,
        variations: int = 1,
        prepare: str = "error",
        content_hash: bool = False,
        ledger: str | os.PathLike[str] | None = DEFAULT,
        retry_failed: bool = False,
        metrics: bool = True,
        alerts: AlertConfig | None = DEFAULT,
        on_alert: Callable[[Alert], None] | Sequence[Callable[[Alert], None]] | None = None,
        metrics_callback: MetricsCallback | None = None,
        metrics_every: int = 50,
        log_jsonl: str | os.PathLike[str] | None = None,
        sample_index: str | os.PathLike[str] | None = DEFAULT,
    ) -> None:
        super().__init__()
        shape = resolve_shape(
            preset, frames=frames, fps=fps, resolution=resolution, step=step, unset=DEFAULT
        )
        problems: list[str] = list(shape.problems)
        frame_list, fps, resolution, step = shape.frames, shape.fps, shape.resolution, shape.step
        concepts: list[Concept] = []
        try:
            concepts = concepts_from(roots)
            problems += check_concepts(concepts)
        except (TypeError, ValueError) as exc:
            problems.append(str(exc))
        problems += check_frame_buckets(frame_list)
        problems += check_resolutions(resolution, step)
        problems += _check_options(
            fps=fps,
            sampling=sampling,
            clips_per_video=clips_per_video,
            crop=crop,
            missing_caption=missing_caption,
            max_aspect=max_aspect,
            max_pixels=max_pixels,
            num_ffmpeg_threads=num_ffmpeg_threads,
            probe_threads=probe_threads,
            seed=seed,
        )
        problems += check_plan_options(batch_size, small_buckets, world_size or 1, rank or 0)
        if integrity_check is None:
            integrity_check = vae is not None and cache_dir is not None
        if integrity_check:
            try:
                find_ffmpeg()
            except FfmpegNotFoundError as exc:
                problems.append(str(exc))
            if metadata_cache is None and cache_dir is not None:
                metadata_cache = Path(cache_dir) / "metadata.jsonl"
        problems += _check_cache_options(
            vae=vae,
            cache_dir=cache_dir,
            variations=variations,
            prepare=prepare,
            encode_batch_size=encode_batch_size,
        )
        if (
            not isinstance(metrics_every, int)
            or isinstance(metrics_every, bool)
            or metrics_every < 1
        ):
            problems.append(format_error("metrics_every", metrics_every, "must be an int >= 1"))
        if metrics_callback is not None and not callable(metrics_callback):
            problems.append(
                format_error("metrics_callback", repr(metrics_callback), "must be callable")
            )
        callbacks = [] if on_alert is None else [on_alert] if callable(on_alert) else list(on_alert)
        if not all(callable(c) for c in callbacks):
            problems.append(format_error("on_alert", repr(on_alert), "must be callable(s)"))
        if alerts is DEFAULT:
            alerts = AlertConfig()
        if alerts is not None and not isinstance(alerts, AlertConfig):
            problems.append(
                format_error(
                    "alerts", repr(alerts), "must be an AlertConfig or None", "see alerts.py"
                )
            )
        ledger_path = (
            (Path(cache_dir) / "ledger.jsonl" if cache_dir is not None else None)
            if ledger is DEFAULT
            else ledger
        )
        self.ledger: Ledger | None = None
        if ledger_path is not None:
            try:
                self.ledger = Ledger(ledger_path)
            except ConfigError as exc:
                problems += list(exc.problems)
        breaker = BreakerConfig(enabled=False)
        try:
            breaker = BreakerConfig(
                threshold=breaker_threshold if breaker_threshold is not None else 1.0,
                min_items=breaker_min_items,
                window=max(100, breaker_min_items),
                enabled=breaker_threshold is not None,
            )
        except ConfigError as exc:
            problems += list(exc.problems)
        if problems:
            raise ConfigError(problems)

        self.preset = preset
        self.frames = tuple(sorted(frame_list))
        self.fps = fps
        targets: list[Any] = [resolution] if _is_pair(resolution) else list(resolution)
        self.resolutions: tuple[tuple[int, int], ...] = tuple(
            (int(pair[0]), int(pair[1])) for pair in targets
        )
        self.resolution = self.resolutions[0]
        self.step = step
        self.batch_size = batch_size
        self.small_buckets = small_buckets
        self.seed = seed
        self.policy = policy if policy is not None else ErrorPolicy()
        self.breaker_config = breaker
        self.num_ffmpeg_threads = num_ffmpeg_threads
        self._rank = rank
        self._world_size = world_size
        self._dist_rank_world = (0, 1)
        self.rank_and_world_size()
        self._shared = multiprocessing.RawArray(ctypes.c_int64, [_pack_pass(0, -1), -1, 0, -1, 0])
        self.bucket_set = make_bucket_set(self.resolutions, step=step, max_aspect=max_aspect)
        self.buckets = self.bucket_set.all
        self.limits = ProbeLimits(
            min_frames=min(self.frames),
            fps=fps,
            max_pixels=max_pixels,
            max_duration_seconds=max_duration_seconds,
            min_source_fps=min_source_fps,
            integrity=bool(integrity_check),
        )
        self._decode = DecodeOptions(
            frames=self.frames,
            fps=fps,
            buckets=self.bucket_set,
            sampling=sampling,
            clips_per_video=clips_per_video,
            crop=crop,
            seed=seed,
            no_upscale=no_upscale,
        )
        if report_dir is None:
            self.report_dir = Path(tempfile.mkdtemp(prefix="wan_data_report_"))
            weakref.finalize(self, _remove_dir, str(self.report_dir), os.getpid())
        else:
            self.report_dir = Path(report_dir)
            self.report_dir.mkdir(parents=True, exist_ok=True)
        self._iterations = 0  # per process: names this process's report parts
        self._live: tuple[str, Metrics] | None = None
        # The YieldCounters of this process's running loaders, by part name: report() reads
        # them live rather than their last written parts.
        self._yielding: dict[str, YieldCounter] = {}
        self._cache_stats: tuple[float, CacheStats] | None = None
        self._plan_stats: tuple[tuple[int, int], dict[str, object]] | None = None
        self.metrics_enabled = bool(metrics)
        self.alert_monitor = (
            AlertMonitor(alerts, callbacks) if alerts is not None and metrics else None
        )
        self.metrics_callback = metrics_callback
        self.metrics_every = metrics_every
        self.log_jsonl = str(log_jsonl) if log_jsonl is not None else None
        if self.log_jsonl is not None:
            log_to_jsonl(self.log_jsonl)

        index_path = self._index_path(
            sample_index,
            cache_dir=cache_dir,
            metadata_cache=metadata_cache,
            fingerprint=self._setup_fingerprint(
                concepts,
                missing_caption=missing_caption,
                caption_extension=caption_extension,
                allow_outside_root=allow_outside_root,
                max_pixels=max_pixels,
                max_duration_seconds=max_duration_seconds,
                max_aspect=max_aspect,
            ),
        )
        self._index_folder = index_path.parent if index_path is not None else None
        self._sketch_saved = False
        loaded = (
            load_index(index_path, index_path.stem)
            if index_path is not None and not retry_failed
            else None
        )
        if loaded is not None:
            self.sources: Sequence[Source] = loaded.sources
            self.probed: Sequence[Probed] = loaded.probed
            self.samples: Sequence[PlanSample] = loaded.samples
            self._sample_buckets = loaded.samples.buckets
            self._static_stats: dict[str, Any] = loaded.extra["static_stats"]
            samples_digest = str(loaded.extra["samples_digest"])
            part = {**loaded.setup_part, "pid": os.getpid(), "host": socket.gethostname()}
            write_snapshot(self.report_dir / f"part-setup-{os.getpid()}.json", part)
            logger.info(
                "WanVideoDataset: %d source(s), %d sample(s) from the sample index %s "
                "(nothing changed since it was saved)",
                len(self.sources),
                len(self.samples),
                index_path,
            )
        else:
            samples_digest = self._construct(
                concepts,
                breaker=breaker,
                missing_caption=missing_caption,
                caption_extension=caption_extension,
                allow_outside_root=allow_outside_root,
                metadata_cache=metadata_cache,
                probe_threads=probe_threads,
                retry_failed=retry_failed,
                index_path=index_path,
            )
        self.fingerprint = self._fingerprint(samples_digest)
        self.vae = vae
        self.cache_dir = str(cache_dir) if cache_dir is not None else None
        self.prepare_mode = prepare
        self._encoder_options: dict[str, Any] = {
            "device": device or ("cuda" if torch.cuda.is_available() else "cpu"),
            "vae_dtype": vae_dtype,
            "latent_dtype": latent_dtype,
            "encode_batch_size": encode_batch_size,
            "subfolder": vae_subfolder,
        }
        self._encoder: Any = None
        self.cache_spec: CacheSpec | None = None
        if vae is not None and cache_dir is not None:
            roots_text = " ".join(str(c.root) for c in concepts)
            self.cache_spec = CacheSpec.from_info(
                str(cache_dir),
                vae_info_from_files(vae, subfolder=vae_subfolder, dtype=vae_dtype),
                latent_dtype,
                variations=variations,
                content_hash=content_hash,
                command_hint=f"`wan-data cache {roots_text} --vae {vae} --cache-dir {cache_dir}` "
                "(with the same options) or ds.prepare()",
            )
            LatentCache(cache_dir)  # create it now: an unwritable folder fails at construction

    def _construct(
        self,
        concepts: list[Concept],
        *,
        breaker: BreakerConfig,
        missing_caption: str,
        caption_extension: str,
        allow_outside_root: bool,
        metadata_cache: str | os.PathLike[str] | None,
        probe_threads: int | None,
        retry_failed: bool,
        index_path: Path | None,
    ) -> str:
        """Collect, probe and bucket every source (the cold path); returns the samples digest.

        Saves the sample index afterwards, so the next construction with the same options and
        unchanged files skips all of it (see ``sample_index.py``).
        """
        started_ns = time.time_ns()
        context = StageContext(breaker_config=breaker)
        sources: list[Source] = []
        failures: list[Failed] = []  # what the ledger may record, once construction succeeds
        visited: list[str] = []
        for item in collect(
            concepts,
            policy=self.policy,
            context=context,
            missing_caption=missing_caption,
            caption_extension=caption_extension,
            allow_outside_root=allow_outside_root,
            visited=visited,
        ):
            if isinstance(item, Source):
                sources.append(item)
            else:
                context.metrics.record_failed(item)
                failures.append(item)
        cache = MetadataCache(metadata_cache)
        threads = probe_threads if probe_threads is not None else (os.cpu_count() or 1)
        samples: list[PlanSample] = []
        probed: list[Probed] = []
        self.sources, self.probed, self.samples = sources, probed, samples
        part = self.report_dir / f"part-setup-{os.getpid()}.json"
        try:
            probed_stream = probe(
                skip_known_bad(
                    sources,
                    policy=self.policy,
                    context=context,
                    ledger=self.ledger,
                    retry_failed=retry_failed,
                ),
                policy=self.policy,
                context=context,
                limits=self.limits,
                threads=threads,
                cache=cache,
            )
            for planned in build_samples(
                probed_stream, options=self._decode, policy=self.policy, context=context
            ):
                if isinstance(planned, Failed):
                    context.metrics.record_failed(planned)
                    failures.append(planned)
                else:
                    samples.append(planned)
                    if not probed or probed[-1] is not planned.probed:
                        probed.append(planned.probed)
            self._update_ledger(failures)
        finally:
            cache.save()
            context.metrics.setup = True
            context.metrics.write(part)
        self._sample_buckets = [s.bucket for s in samples]
        self._static_stats = self._compute_static_stats()
        digest = hashlib.sha256()
        for sample in samples:
            meta = sample.probed.metadata
            digest.update(
                f"{sample.key}|{sample.bucket}|{meta.frame_count}|{meta.duration}\n".encode()
            )
        samples_digest = digest.hexdigest()
        logger.info(
            "WanVideoDataset: %d source(s), %d sample(s) in %d bucket(s), %d skipped at setup; "
            "metadata cache %d hit(s), %d miss(es)",
            len(sources),
            len(samples),
            len(set(self._sample_buckets)),
            len(context.metrics.skipped),
            cache.hits,
            cache.misses,
        )
        if index_path is not None and self.rank_and_world_size()[0] == 0:
            skipped_paths = [str(r["path"]) for r in context.metrics.skipped if r.get("path")]
            ledger = [str(self.ledger.path)] if self.ledger is not None else []
            by_name = {c.name or "": c for c in reversed(concepts)}
            deferred = []
            for source in sources:
                concept = by_name.get(source.concept)
                fallback = (
                    fallback_captions(source.path, concept.caption, missing_caption)
                    if concept is not None and os.path.isdir(concept.root)
                    else None
                )
                deferred.append((fallback is not None, fallback or ()))
            saved = save_index(
                index_path,
                fingerprint=index_path.stem,
                sources=sources,
                probed=probed,
                samples=samples,
                setup_part=context.metrics.snapshot(),
                folders=visited,
                deferred=deferred,
                files=skipped_paths,
                appended=ledger,
                caption_extension=caption_extension,
                extra={"static_stats": self._static_stats, "samples_digest": samples_digest},
                started_ns=started_ns,
            )
            if saved:
                logger.info("sample index saved to %s", index_path)
        return samples_digest

    def _setup_fingerprint(self, concepts: list[Concept], **options: Any) -> str:
        """What construction's result depends on besides the files (see ``sample_index``)."""
        from wan_data import __version__

        return setup_fingerprint(
            {
                "version": __version__,
                "concepts": [
                    [os.path.abspath(os.fspath(c.root)), c.name, c.repeats, c.caption]
                    for c in concepts
                ],
                "decode": {
                    k: v
                    for k, v in self._decode.__dict__.items()
                    if k not in ("buckets", "num_ffmpeg_threads")
                },
                "buckets": [list(b) for b in self.buckets],
                "limits": dataclasses.asdict(self.limits),
                "policy": repr(self.policy),
                "breaker": dataclasses.asdict(self.breaker_config),
                "ledger": str(self.ledger.path) if self.ledger is not None else None,
                **options,
            }
        )

    @staticmethod
    def _index_path(
        option: str | os.PathLike[str] | None,
        *,
        cache_dir: str | os.PathLike[str] | None,
        metadata_cache: str | os.PathLike[str] | None,
        fingerprint: str,
    ) -> Path | None:
        if option is DEFAULT:
            if cache_dir is not None:
                folder = Path(cache_dir) / "samples"
            elif metadata_cache is not None:
                folder = Path(f"{os.fspath(metadata_cache)}.samples")
            else:
                return None
        elif option is None:
            return None
        else:
            folder = Path(option)
        return folder / f"{fingerprint}.npz"

    def _emit_metrics(self) -> None:
        """The periodic hook of :meth:`loader`: alerts, then the trainer's callback."""
        report = self.report()
        self.check_alerts(report)
        if self.metrics_callback is not None:
            try:
                self.metrics_callback(report)
            except Exception as exc:
                logger.error(
                    "metrics_callback %r raised %s: %s (ignored; iteration continues)",
                    self.metrics_callback,
                    type(exc).__name__,
                    exc,
                    exc_info=True,
                )

    def _update_ledger(self, failures: list[Failed]) -> None:
        """Record this construction's skips of the file's own making; clear files that now work.

        Only after construction succeeded (a tripped breaker, e.g. a broken FFmpeg, must not
        mark a whole dataset bad) and only on rank 0 (every rank probes every source). Decode
        failures while iterating are not recorded: they concern one clip window, and dropping
        the whole file at the next construction would change the sample list under a resumed
        run.
        """
        if self.ledger is None or self.rank_and_world_size()[0] != 0:
            return
        recorded = sum(self.ledger.record(f) for f in failures)
        cleared = sum(self.ledger.resolve(p.path) for p in self.probed)
        if recorded or cleared:
            logger.info(
                "ledger %s: %d file(s) recorded as bad, %d cleared",
                self.ledger.path,
                recorded,
                cleared,
            )

    # -- epochs, plan and sharding -------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The epoch of the current (or last) pass; before any pass, the one the next will use."""
        pass_id, epoch = _unpack_pass(int(self._shared[_PASS]))
        return epoch if pass_id else epoch + 1

    def next_epoch(self) -> int:
        """The epoch the next pass over the dataset will use.

        Each new pass (a new ``iter()`` of a DataLoader, or of the dataset itself) advances the
        epoch by one, so a plain loop never trains on epoch 0's windows, crops and captions
        forever; :meth:`set_epoch` (and :meth:`load_state_dict`) choose it explicitly instead.
        """
        return _unpack_pass(int(self._shared[_PASS]))[1] + 1

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next pass: a new plan and new seeded windows, crops and
        captions. Later passes go on from it (``epoch + 1``, ...) unless it is set again.

        The value lives in shared memory, so workers started earlier with
        ``persistent_workers=True`` see it at their next iteration.
        """
        epoch = int(epoch)
        if not 0 <= epoch < _MAX_EPOCH:
            raise ValueError(format_error("epoch", epoch, f"must be in [0, {_MAX_EPOCH})"))
        self._shared[_PASS] = _pack_pass(0, epoch - 1)
        self.rank_and_world_size()

    def _begin_pass(self, info: Any) -> int:
        """The epoch of the iteration starting now, the same in every worker of one pass.

        A pass is identified without any communication: every DataLoader worker of one
        ``iter(loader)`` has the same base seed (``info.seed - info.id``) and, with persistent
        workers, has run the same number of iterations. A worker that finds another pass
        recorded takes the next epoch and records its own pass; the others read it. The pass
        and its epoch share one 64-bit slot, written and read in one access, so two workers
        starting at once either both see the old pass (and both write the same new value) or
        one sees the other's. An iteration in the main process is always a pass of its own.
        """
        if info is None:
            epoch = self.next_epoch()
            self._shared[_PASS] = _pack_pass(_MAIN_PASS, epoch)
            return epoch
        pass_id = (hash((int(info.seed) - int(info.id), self._iterations)) & _PASS_ID_MASK) | 2
        recorded, epoch = _unpack_pass(int(self._shared[_PASS]))
        if recorded == pass_id:
            return epoch
        self._shared[_PASS] = _pack_pass(pass_id, epoch + 1)
        return epoch + 1

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_encoder"] = None  # the VAE stays in the process that loaded it
        state["_yielding"] = {}  # the trainer's process counts what it receives
        if get_spawning_popen() is None:
            # Plain pickling (not a worker being spawned): shared memory cannot travel, the
            # values can. A spawned worker receives the shared array itself.
            state["_shared"] = list(self._shared)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["_shared"], list):
            state["_shared"] = multiprocessing.RawArray(ctypes.c_int64, state["_shared"])
        self.__dict__.update(state)

    def rank_and_world_size(self) -> tuple[int, int]:
        """``(rank, world_size)``: the explicit values, else ``torch.distributed``'s.

        The values read from ``torch.distributed`` are remembered, because DataLoader worker
        processes do not see the process group; they receive a copy of this dataset made after
        the main process called this (at construction, ``set_epoch``, ``loader`` or
        ``len``), so create or touch the dataset after ``init_process_group``.
        """
        if self._rank is not None or self._world_size is not None:
            return int(self._rank or 0), int(self._world_size or 1)
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            self._dist_rank_world = (dist.get_rank(), dist.get_world_size())
        return self._dist_rank_world

    def plan(self, epoch: int | None = None, rank: int | None = None) -> EpochPlan:
        """This rank's batch plan of an epoch (pure: every process computes the same)."""
        own_rank, world = self.rank_and_world_size()
        return plan_epoch(
            self._sample_buckets,
            batch_size=self.batch_size,
            seed=self.seed,
            epoch=self.epoch if epoch is None else epoch,
            rank=own_rank if rank is None else rank,
            world_size=world,
            small_buckets=self.small_buckets,
        )

    def __len__(self) -> int:
        """Batches this rank yields per epoch (the same on every rank)."""
        return len(self.plan().batches)

    # -- iteration -----------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        if info is not None:
            _freeze_inherited_objects()
        else:
            self._prepare_if_needed()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, _ = self.rank_and_world_size()
        self._iterations += 1
        epoch = self._begin_pass(info)
        threads = self.num_ffmpeg_threads
        if threads is None:
            threads = default_ffmpeg_threads(workers if info is not None else 1)
        options = DecodeOptions(**{**self._decode.__dict__, "num_ffmpeg_threads": threads})
        context = StageContext(metrics=Metrics(), breaker_config=self.breaker_config, epoch=epoch)
        if info is not None and self.log_jsonl is not None:
            log_to_jsonl(self.log_jsonl)  # spawned workers do not inherit handlers
        monitor = self.alert_monitor
        context.watchdog = monitor.stall_watchdog() if monitor is not None else None
        part = self.report_dir / (
            f"part-e{epoch}-r{rank}-w{worker}-p{os.getpid()}-i{self._iterations}.json"
        )
        plan = self.plan(epoch)
        start = self._start_position(epoch)
        # Dealt from the resume point on, so that worker 0 holds the next batch: the DataLoader
        # collects from workers round-robin starting at worker 0.
        mine = [b for b in plan.batches if b.position >= start][worker::workers]
        if info is None:
            self._record_progress(epoch, start)
            # report() reads this iteration's counters live, not from its last snapshot
            self._live = (part.name, context.metrics)
        reader = (
            self._latent_reader(options, context.metrics) if self.cache_spec is not None else None
        )
        last_snapshot = time.monotonic()  # the first snapshot after SNAPSHOT_SECONDS, not at once
        try:
            for batch, out in build_batches(
                mine,
                plan,
                self.samples,
                options=options,
                policy=self.policy,
                context=context,
                batch_size=self.batch_size,
                reader=reader,
            ):
                now = time.monotonic()
                if self.metrics_enabled and now - last_snapshot >= SNAPSHOT_SECONDS:
                    self._snapshot(context, part)
                    last_snapshot = now
                if info is None:
                    self._record_progress(epoch, batch.position + 1)
                yield out
        finally:
            if context.watchdog is not None:
                context.watchdog.close()
            if self.metrics_enabled:
                self._snapshot(context, part)

    def _snapshot(self, context: StageContext, part: Path) -> None:
        """Write this process's report part, with its memory, and check the memory alerts."""
        memory = MemoryStats.measure()
        context.metrics.memory = memory.as_dict()
        if self.alert_monitor is not None:
            self.alert_monitor.check_memory(memory)
        try:
            context.metrics.write(part)
        except FileNotFoundError:
            # The dataset's private report folder is gone: it was garbage collected (or the
            # interpreter is exiting) before this iteration was closed. Nobody can read it.
            logger.debug("report folder %s is gone; snapshot not written", part.parent)

    def _latent_reader(self, options: DecodeOptions, metrics: Metrics) -> MemberReader:
        spec = self.cache_spec
        assert spec is not None
        cache = LatentCache(spec.root)

        batcher = LatentBatcher(options, spec, cache, self.batch_size)

        def read(sample: PlanSample, epoch: int) -> CachedClip:
            try:
                return batcher.read(sample, epoch)
            finally:
                metrics.cache = cache.counters()

        return MemberReader("cache", read, batcher.collate)

    # -- the cache pass ------------------------------------------------------------------

    def prepare(self, *, num_workers: int = 2, progress: bool = True) -> dict[str, Any]:
        """Fill the latent cache for every clip and variant of this rank (see docs/cache.md).

        Decoding runs in ``num_workers`` DataLoader workers, the VAE in this process on
        ``device``. Resumable: present entries are skipped. Returns a summary dict.
        """
        if self.cache_spec is None or self.vae is None:
            raise ConfigError(
                format_error(
                    "prepare()", "no cache", "needs vae= and cache_dir=", "pass both to the dataset"
                )
            )
        if self._encoder is None:
            self._encoder = VaeEncoder(self.vae, **self._encoder_options)
        rank, world = self.rank_and_world_size()
        self._cache_stats = None  # the folder is about to change
        return prepare_cache(
            self.samples,
            options=self._decode,
            spec=self.cache_spec,
            encoder=self._encoder,
            policy=self.policy,
            report_dir=str(self.report_dir),
            rank=rank,
            world_size=world,
            num_workers=num_workers,
            progress=progress,
        )

    def cache_keys(self, variant: int | None = None) -> set[str]:
        """The cache keys of every clip of this dataset (all ranks), in one variant or all."""
        spec = self.cache_spec
        if spec is None:
            return set()
        variants = range(spec.variations) if variant is None else (variant,)
        return {sample_key(s, v, self._decode, spec)[0] for s in self.samples for v in variants}

    def cache_complete(self, epoch: int | None = None) -> bool:
        """Whether every clip this dataset reads in ``epoch`` is in the cache."""
        spec = self.cache_spec
        if spec is None:
            return True
        cache = LatentCache(spec.root)
        variant = spec.variant(self.epoch if epoch is None else epoch)
        return all(cache.contains(key) for key in self.cache_keys(variant))

    def _prepare_if_needed(self) -> None:
        if (
            self.cache_spec is not None
            and self.prepare_mode == "auto"
            and not self.cache_complete(self.next_epoch())
        ):
            logger.info("prepare='auto': filling the latent cache before iterating")
            self.prepare(num_workers=0, progress=False)

    def loader(self, **kwargs: Any) -> DataLoader[dict[str, Any]]:
        """A ``DataLoader`` over this dataset that also records progress for ``state_dict()``.

        Keyword arguments go to ``torch.utils.data.DataLoader`` (``batch_size`` is always
        ``None``: the dataset makes the batches). ``collate_fn`` defaults to passing batches
        through: they are already tensors, and DataLoader's default ``default_convert`` walks
        every list element of every batch (a third of a cached read of small latents).
        """
        kwargs["batch_size"] = None
        kwargs.setdefault("collate_fn", keep_batch)
        self.rank_and_world_size()
        self._prepare_if_needed()
        return _ProgressLoader(self, **kwargs)

    def _start_position(self, epoch: int) -> int:
        if int(self._shared[_RESUME_EPOCH]) == epoch:
            return int(self._shared[_RESUME_POSITION])
        return 0

    def _record_progress(self, epoch: int, position: int) -> None:
        self._shared[_PROGRESS_EPOCH] = epoch
        self._shared[_PROGRESS_POSITION] = position

    # -- exact resume --------------------------------------------------------------------

    def state_dict(self, last_batch: dict[str, Any] | None = None) -> dict[str, Any]:
        """Where this rank is: resuming from it yields exactly the batches after the last one.

        Progress is known when iterating with ``num_workers=0`` or through :meth:`loader`; with
        a plain multi-worker ``DataLoader``, pass the last batch the trainer consumed. The state
        is a few integers and a fingerprint, whatever the dataset size.
        """
        if last_batch is not None:
            epoch, position = int(last_batch["epoch"]), int(last_batch["position"]) + 1
        elif int(self._shared[_PROGRESS_EPOCH]) < 0:
            raise RuntimeError(
                format_error(
                    "progress of this dataset",
                    "unknown",
                    "was never recorded: DataLoader workers do not report it to the main process",
                    "iterate through ds.loader(num_workers=...) (or with num_workers=0), or pass "
                    "the last batch the trainer consumed: ds.state_dict(last_batch=batch)",
                )
            )
        else:
            epoch = int(self._shared[_PROGRESS_EPOCH])
            position = int(self._shared[_PROGRESS_POSITION])
        epoch, position = self._normalise_position(epoch, position)
        rank, world = self.rank_and_world_size()
        return {
            "version": STATE_VERSION,
            "epoch": epoch,
            "position": position,
            "rank": rank,
            "world_size": world,
            "seed": self.seed,
            "fingerprint": self.fingerprint,
            # What the fingerprint covers, so a refused state can say what changed (the
            # per-source sketch goes to a file beside the sample index: see resume.py).
            "options": self._fingerprint_options(),
            "sources": self._save_sketch(),
        }

    def _normalise_position(self, epoch: int, position: int) -> tuple[int, int]:
        """A position after an epoch's last batch is the start of the next epoch (resuming
        there must not give an empty iteration)."""
        if position > 0 and position >= len(self.plan(epoch).batches):
            return epoch + 1, 0
        return epoch, position

    def _save_sketch(self) -> int:
        """Write this fingerprint's source sketch once (beside the sample index, when there is
        one); returns the number of sources it covers."""
        contents = self._source_contents()
        if self._index_folder is not None and not self._sketch_saved:
            save_sketch(self._index_folder, self.fingerprint, contents)
            self._sketch_saved = True
        return len(contents)

    def _source_contents(self) -> dict[str, str]:
        """Per source key, what of it the fingerprint covers (its samples' buckets, frame count
        and duration)."""
        contents: dict[str, list[str]] = {}
        for sample in self.samples:
            meta = sample.probed.metadata
            contents.setdefault(sample.probed.key, []).append(
                f"{sample.bucket}|{meta.frame_count}|{meta.duration}"
            )
        return {key: "\n".join(parts) for key, parts in contents.items()}

    def load_state_dict(self, state: dict[str, Any], *, allow_mismatch: bool = False) -> None:
        """Resume: the next iteration starts at the batch after the one the state was saved at.

        Raises:
            ConfigError: the state was saved against other sources or options (another
                fingerprint), another world size or another seed, unless ``allow_mismatch``
                (then the plan of *this* dataset is resumed at the saved position).
        """
        problems = []
        if state.get("version") != STATE_VERSION:
            problems.append(
                format_error("state version", state.get("version"), f"must be {STATE_VERSION}")
            )
        _, world = self.rank_and_world_size()
        hint = "pass allow_mismatch=True to resume this dataset's plan at the saved position"
        for name, mine in (("world_size", world), ("seed", self.seed)):
            if state.get(name) != mine:
                problems.append(
                    format_error(
                        f"state {name}",
                        state.get(name),
                        f"differs from this dataset's ({mine})",
                        hint,
                    )
                )
        if state.get("fingerprint") != self.fingerprint:
            changes = describe_changes(
                state, self._fingerprint_options(), self._source_contents(), self._index_folder
            )
            problems.append(
                format_error(
                    "state fingerprint",
                    state.get("fingerprint"),
                    f"differs from this dataset's ({self.fingerprint}): "
                    + ("; ".join(changes) or "the sources or options changed since it was saved"),
                    hint,
                )
            )
        if problems and not allow_mismatch:
            raise ConfigError(problems)
        for problem in problems:
            logger.warning("load_state_dict: %s (allowed)", problem)
        epoch, position = self._normalise_position(int(state["epoch"]), int(state["position"]))
        self.set_epoch(epoch)
        self._shared[_RESUME_EPOCH] = epoch
        self._shared[_RESUME_POSITION] = position
        self._record_progress(epoch, position)

    def _fingerprint(self, samples_digest: str) -> str:
        """Identity of the options and samples, for ``load_state_dict`` to refuse a mismatch."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self._fingerprint_options(), sort_keys=True).encode())
        digest.update(samples_digest.encode())
        return digest.hexdigest()[:32]

    def _fingerprint_options(self) -> dict[str, Any]:
        """The options the fingerprint covers, as JSON values."""
        options = {
            "frames": self.frames,
            "fps": self.fps,
            "resolutions": self.resolutions,
            "step": self.step,
            "batch_size": self.batch_size,
            "small_buckets": self.small_buckets,
            "decode": {
                k: v
                for k, v in self._decode.__dict__.items()
                if k not in ("buckets", "num_ffmpeg_threads")
            },
        }
        parsed: dict[str, Any] = json.loads(json.dumps(options, sort_keys=True, default=str))
        return parsed

    # -- reporting -----------------------------------------------------------------------

    def _report_parts(self) -> list[dict[str, Any]]:
        """Every process's latest snapshot; this process's running iteration counted live.

        Worker snapshots lag by at most :data:`SNAPSHOT_SECONDS` while they iterate (exact
        once their iteration ends).
        """
        live: dict[str, Callable[[], dict[str, Any]]] = {
            name: counter.snapshot for name, counter in self._yielding.items()
        }
        if self._live is not None:
            live[self._live[0]] = self._live[1].snapshot
        parts = []
        for path in sorted(self.report_dir.glob("part-*.json")):
            if path.name in live:
                continue
            try:
                parts.append(json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                logger.warning("report part %s unreadable (%s); ignored", path, exc)
        return parts + [snapshot() for snapshot in live.values()]

    def report(self, *, all_ranks: bool = False) -> dict[str, Any]:
        """The aggregate over every worker and iteration so far (JSON-serialisable).

        Keys: ``stages`` ({name: in/out/failed/seconds/items_per_second/...}), ``skipped``
        (one record per skip: path, stage, reason, error_type, message, attempts, epoch),
        ``warnings``, ``batches_produced``/``samples_produced`` (built by any process,
        prefetched batches the trainer never took included; ``batches``/``samples`` are the
        same numbers under their old names), ``batches_yielded``/``samples_yielded`` (handed
        to the trainer: counted in this process by :meth:`loader`, equal to produced for
        ``num_workers=0``, ``None`` when workers of a plain ``DataLoader`` produced batches
        nobody counted on receipt), ``sources``, ``buckets`` (see :meth:`bucket_report`),
        ``cache`` (:class:`~wan_data.latents.store.CacheStats`: reads of the train pass plus
        the writes of :meth:`prepare`) and ``memory`` (RSS summed over this process and its
        workers' latest snapshots, peaks, available RAM, swap, GPU; see
        :func:`~wan_data.observe.memory.merge_memory`).

        Args:
            all_ranks: merge every rank's parts (exchanged with ``all_gather_object``): a
                collective call, so every rank must make it, at the same point (e.g. at the
                end of an epoch). Ranks that share one ``report_dir`` get the same totals
                without it. Construction counts are the same on every rank (each probes
                every source), so they are taken from rank 0's parts only.
        """
        parts = self._report_parts()
        # This process's memory now, and each worker's latest snapshot (not this process's
        # own older snapshots: it would count twice).
        mine = (socket.gethostname(), os.getpid())
        here = MemoryStats.measure().as_dict()
        memories = [here, *latest_memory([p for p in parts if _owner(p) != mine])]
        dist = torch.distributed
        rank, world = self.rank_and_world_size()
        if all_ranks and world > 1 and dist.is_available() and dist.is_initialized():
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, (rank, parts, memories))
            parts, memories = [], []
            for other, their_parts, their_memories in gathered:
                memories += their_memories
                parts += [p for p in their_parts if other == 0 or not _is_setup_part(p)]
        merged = merge_reports(parts)
        merged["memory"] = merge_memory(memories)
        merged["sources"] = len(self.sources)
        merged["epoch"] = self.epoch
        merged["buckets"] = self.bucket_report()
        if self.cache_spec is not None:
            directory = self._cache_directory_stats()
            reads = merged.get("cache") or {}
            stats = dataclasses.replace(
                directory,
                **{
                    k: reads.get(k, 0)
                    for k in (
                        "hits",
                        "misses",
                        "corruption_count",
                        "writes",
                        "quarantined",
                        "access_seconds",
                    )
                },
            )
            merged["cache"] = stats.as_dict()
        return merged

    def bucket_report(self) -> dict[str, Any]:
        """Samples per bucket, repeats and drops of the current epoch's plan (all ranks),
        pixels lost to cropping, and the frames no clip uses: ``frames_trimmed_to_bucket``
        (clips rounded down to a 4k+1 frame bucket) and ``frames_unused_by_sampling`` (the
        tail the sampling mode never reads), see :meth:`_compute_static_stats`."""
        if "repeated_frames_expected_fraction" not in self._static_stats:
            # Saved in a sample index by an earlier version, with the old single trim count.
            self._static_stats = self._compute_static_stats()
        # report() runs every metrics_every batches; the plan of an epoch never changes.
        which = (self.epoch, self.rank_and_world_size()[1])
        if self._plan_stats is None or self._plan_stats[0] != which:
            plan = plan_epoch(
                self._sample_buckets,
                batch_size=self.batch_size,
                seed=self.seed,
                epoch=which[0],
                rank=0,
                world_size=which[1],
                small_buckets=self.small_buckets,
            )
            self._plan_stats = (which, plan.stats)
        stats = self._plan_stats[1]
        return {
            "plan": stats,
            **self._static_stats,
            "bucket_set": [list(b) for b in self.buckets],
        }

    def _compute_static_stats(self) -> dict[str, Any]:
        """The epoch-independent part of :meth:`bucket_report`, computed once at construction
        (and kept in the sample index): it walks every sample.

        Frames no clip uses are split by cause, exactly as ``wan-data scan`` splits them
        (:func:`~wan_data.media.sampling.split_unused_frames`): rounding a clip down to a 4k+1 frame
        bucket (``frames_trimmed_to_bucket``) vs. the tail the sampling mode never reads
        (``frames_unused_by_sampling``: e.g. all of a long video after ``head``'s one window).
        One number for both made long videos under ``head`` look like a trimming problem.
        Counted for ``head`` and ``chunks`` only (consecutive windows from the start, the same
        every epoch); ``None`` for ``random``/``uniform``.
        """
        crop_loss = []
        for sample in self.samples:
            meta = sample.probed.metadata
            b = sample.bucket
            rw, rh = cover_size(meta.width, meta.height, b.width, b.height)
            crop_loss.append(1.0 - (b.width * b.height) / (rw * rh))
        trimmed = unused = 0
        videos = 0
        clips: dict[str, list[int]] = {}
        for sample in self.samples:
            clips.setdefault(sample.probed.key, []).append(sample.bucket.frames)
        largest = max(self.frames)
        for probed in self.probed:
            meta = probed.metadata
            if meta.media_type != "video":
                continue
            videos += 1
            available = frames_available(meta, self.fps)
            to_bucket, by_sampling = split_unused_frames(
                available, clips.get(probed.key, []), largest
            )
            trimmed += to_bucket
            unused += by_sampling
        counted = self._decode.sampling in ("head", "chunks")

        def total(n: int) -> int | None:
            return n if counted else None

        def mean(n: int) -> float | None:
            return (round(n / videos, 2) if videos else 0.0) if counted else None

        return {
            "crop_pixels_lost_mean": round(sum(crop_loss) / len(crop_loss), 4)
            if crop_loss
            else 0.0,
            "frames_trimmed_to_bucket": total(trimmed),
            "frames_trimmed_to_bucket_mean_per_video": mean(trimmed),
            "frames_unused_by_sampling": total(unused),
            "frames_unused_by_sampling_mean_per_video": mean(unused),
            **self._repeat_stats(),
        }

    def _repeat_stats(self) -> dict[str, Any]:
        """Frames a source slower than ``fps`` must repeat (a 10 fps clip at 16 fps shows ~38 %
        of its frames twice), expected from the metadata: the mean share over the samples of
        videos, and the sources below the target rate."""
        shares = []
        slow: set[str] = set()
        for sample in self.samples:
            meta = sample.probed.metadata
            if meta.media_type != "video":
                continue
            share = expected_repeated_fraction(self.fps, meta.fps)
            shares.append(share)
            if share > 0:
                slow.add(sample.probed.path)
        return {
            "repeated_frames_expected_fraction": round(sum(shares) / len(shares), 4)
            if shares
            else 0.0,
            "low_fps_sources": len(slow),
        }

    def _cache_directory_stats(self) -> CacheStats:
        """Entries and size of the cache folder, refreshed at most every
        :data:`CACHE_STATS_SECONDS`: it lists every fan-out folder (25 ms at 400 entries, seconds
        at 100k), and ``report()`` runs every ``metrics_every`` batches."""
        assert self.cache_spec is not None
        now = time.monotonic()
        cached = self._cache_stats
        if cached is None or now - cached[0] >= CACHE_STATS_SECONDS:
            cached = self._cache_stats = (now, LatentCache(self.cache_spec.root).stats())
        return cached[1]

    def check_alerts(self, report: dict[str, Any] | None = None) -> list[Alert]:
        """Check the failure-rate, cache-corruption and memory alerts against the merged report
        (this process's memory included, GPU too); returns what fired. :meth:`loader` calls it
        every ``metrics_every`` batches; with a plain DataLoader, call it yourself."""
        if self.alert_monitor is None:
            return []
        merged = report if report is not None else self.report()
        fired = self.alert_monitor.check_metrics(merged)
        fired += self.alert_monitor.check_memory(MemoryStats.measure())
        return fired

    def reset_report(self) -> None:
        """Forget the counters of earlier iterations (setup results are kept)."""
        for path in self.report_dir.glob("part-e*.json"):
            path.unlink(missing_ok=True)
        self._live = None
        self._cache_stats = None

    def __repr__(self) -> str:
        return (
            f"WanVideoDataset({len(self.sources)} sources, {len(self.samples)} samples, "
            f"frames={list(self.frames)}, fps={self.fps}, resolution={list(self.resolutions)}, "
            f"batch_size={self.batch_size}, epoch={self.epoch})"
        )


def keep_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """The ``collate_fn`` of :meth:`WanVideoDataset.loader`: batches arrive ready."""
    return batch


class _ProgressLoader(DataLoader[dict[str, Any]]):
    """A DataLoader that tells its dataset which batch the trainer has received.

    It also counts what it hands to the trainer (``batches_yielded``/``samples_yielded`` in
    :meth:`WanVideoDataset.report`): with workers, their own counts include the batches they
    prefetched, which the trainer may never take (it stops mid-epoch, or the epoch ends with
    batches in flight). With ``num_workers=0`` the dataset iterates in this process and hands
    each batch over as it makes it, so its own counts are already what the trainer received.
    """

    def __iter__(self) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        dataset = self.dataset
        assert isinstance(dataset, WanVideoDataset)
        # Begin the pass here, in the main process, so the progress recorded below and every
        # worker agree on its epoch.
        dataset.set_epoch(dataset.next_epoch())
        dataset._record_progress(dataset.epoch, dataset._start_position(dataset.epoch))
        every = dataset.metrics_every
        watch = dataset.metrics_enabled and (
            dataset.metrics_callback is not None or dataset.alert_monitor is not None
        )
        batches = super().__iter__()
        counter = None
        if dataset.metrics_enabled and self.num_workers > 0:
            # The workers exist once the iterator does; naming them tells the merge that
            # their production is accounted for by this counter.
            host = socket.gethostname()
            workers = [
                (host, int(w.pid)) for w in getattr(batches, "_workers", []) if w.pid is not None
            ]
            rank, _ = dataset.rank_and_world_size()
            counter = YieldCounter(
                dataset.report_dir,
                f"part-e{dataset.epoch}-r{rank}",
                workers,
                write_every=SNAPSHOT_SECONDS,
            )
            dataset._yielding[counter.name] = counter
        try:
            for count, batch in enumerate(batches, start=1):
                dataset._record_progress(int(batch["epoch"]), int(batch["position"]) + 1)
                if counter is not None:
                    counter.record(len(batch["paths"]))
                if watch and count % every == 0:
                    dataset._emit_metrics()
                yield batch
        finally:
            if counter is not None:
                counter.close()
                dataset._yielding.pop(counter.name, None)
        if watch:
            dataset._emit_metrics()


def _owner(part: dict[str, Any]) -> tuple[object, object]:
    return part.get("host"), part.get("pid")


def _is_setup_part(part: dict[str, Any]) -> bool:
    return bool(part.get("setup"))


def _is_pair(value: object) -> bool:
    return (
        isinstance(value, Sequence)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )


_FROZEN_IN_PID: int | None = None


def _freeze_inherited_objects() -> None:
    """Keep a forked worker's garbage collector away from objects inherited from the parent.

    The parent may hold unreachable video decoders (its own or a user's) that still own FFmpeg
    thread pools; collecting their copies in the child deadlocks, because the threads were not
    forked. Freezing also avoids copy-on-write of every inherited object (Python's ``gc``
    documentation recommends it for fork-based workers).
    """
    global _FROZEN_IN_PID
    if _FROZEN_IN_PID != os.getpid():
        gc.freeze()
        _FROZEN_IN_PID = os.getpid()


def _check_cache_options(**o: Any) -> list[str]:
    problems = []
    if (o["vae"] is None) != (o["cache_dir"] is None):
        given, missing = ("vae", "cache_dir") if o["vae"] is not None else ("cache_dir", "vae")
        problems.append(
            format_error(
                given,
                str(o[given]),
                f"needs {missing} too",
                "latents are encoded by the VAE into the cache folder; pass both",
            )
        )
    v = o["variations"]
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        problems.append(format_error("variations", v, "must be an int >= 1"))
    if o["prepare"] not in ("error", "auto"):
        problems.append(format_error("prepare", o["prepare"], "must be 'error' or 'auto'"))
    b = o["encode_batch_size"]
    if not isinstance(b, int) or isinstance(b, bool) or b < 1:
        problems.append(format_error("encode_batch_size", b, "must be an int >= 1"))
    return problems


def _check_options(**o: Any) -> list[str]:
    problems = check_sample_options(
        **{k: o[k] for k in ("fps", "sampling", "clips_per_video", "crop", "missing_caption")},
        **{k: o[k] for k in ("max_aspect", "max_pixels", "seed")},
    )
    pt = o["probe_threads"]
    if pt is not None and (not isinstance(pt, int) or pt < 1):
        problems.append(format_error("probe_threads", pt, "must be an int >= 1 or None"))
    t = o["num_ffmpeg_threads"]
    if t is not None and (not isinstance(t, int) or t < 0):
        problems.append(format_error("num_ffmpeg_threads", t, "must be an int >= 0 or None"))
    return problems
