"""``WanVideoDataset``: the public entry point, an ``IterableDataset`` of ready batches.

Use it as ``DataLoader(WanVideoDataset(...), batch_size=None, num_workers=N)``: the dataset forms
bucket-homogeneous batches itself (a DataLoader-side batch would mix shapes). Sources are listed
once at construction; each epoch they are shuffled with (seed, epoch) and dealt round-robin to
``rank x worker`` shards, so every source is handled by exactly one worker, and since every
random choice is seeded by (seed, epoch, key), the multiset of samples of an epoch does not depend
on ``num_workers``.
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from multiprocessing.context import get_spawning_popen
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from .breaker import BreakerConfig
from .buckets import check_resolution, make_buckets
from .collate import batch_clips
from .collect import Concept, check_concepts, collect, concepts_from
from .decode import DecodeOptions, decode, default_ffmpeg_threads
from .errors import ConfigError, format_error
from .items import Source
from .metrics import Metrics, merge_reports
from .pipeline import StageContext
from .policy import ErrorPolicy
from .probe import ProbeLimits, probe
from .sampling import SAMPLING_MODES, check_frame_buckets, sample_rng

__all__ = ["WanVideoDataset"]

logger = logging.getLogger("wan_data")

Roots = str | os.PathLike[str] | Concept | Sequence[str | os.PathLike[str] | Concept]


def _remove_dir(path: str, owner_pid: int) -> None:
    # Forked workers inherit finalizers; only the process that made the folder removes it.
    if os.getpid() == owner_pid:
        shutil.rmtree(path, ignore_errors=True)


class WanVideoDataset(IterableDataset[dict[str, Any]]):
    """Pixel clips from folders of videos and images, batched by bucket, failures skipped.

    Args:
        roots: folder(s), ``.jsonl``/``.csv`` metadata file(s) or :class:`Concept` objects.
        frames: frame buckets, 4k+1 counts; each video takes the largest it can fill.
        fps: sampling rate by presentation time; ``None`` keeps native frames.
        resolution: target ``(width, height)``; buckets keep its area at other aspects.
        step: side multiple of every bucket (16 for Wan2.1 / 2.2-A14B, 32 for TI2V-5B).
        max_aspect: widest aspect ratio of a bucket (and 1/max_aspect the tallest).
        batch_size: samples per batch (batches never mix buckets).
        seed: base of every random choice (windows, crops, captions, order).
        sampling: ``head``, ``random``, ``uniform`` or ``chunks``.
        clips_per_video: windows per video for ``uniform``; cap for ``chunks`` (0 = all).
        crop: ``center`` or ``random``.
        shuffle: shuffle source order each epoch (seeded).
        drop_last: drop the partial batches at the end of a worker's epoch.
        missing_caption: ``empty``, ``filename``, ``skip`` or ``error`` (see collect).
        caption_extension: sidecar caption suffix.
        allow_outside_root: accept entries that resolve outside their root.
        max_pixels: width x height above which a file is skipped as ``too_large``.
        max_duration_seconds: longest accepted video, ``None`` for any.
        policy: the error policy (default: 3 attempts for transient errors).
        breaker_threshold: failure fraction that stops the run; ``None`` disables the breaker.
        breaker_min_items: items a worker must see before the breaker may open.
        num_ffmpeg_threads: decoder threads; ``None`` divides the cores among workers.
        report_dir: where workers write report parts (default: a private temp folder).
        rank, world_size: override ``torch.distributed``'s values.
    """

    def __init__(
        self,
        roots: Roots,
        *,
        frames: Sequence[int] | int = (17, 33, 49, 81),
        fps: float | None = 16.0,
        resolution: tuple[int, int] = (832, 480),
        step: int = 16,
        max_aspect: float = 4.0,
        batch_size: int = 1,
        seed: int = 0,
        sampling: str = "head",
        clips_per_video: int = 1,
        crop: str = "center",
        shuffle: bool = True,
        drop_last: bool = False,
        missing_caption: str = "empty",
        caption_extension: str = ".txt",
        allow_outside_root: bool = False,
        max_pixels: int = 4096 * 4096,
        max_duration_seconds: float | None = None,
        policy: ErrorPolicy | None = None,
        breaker_threshold: float | None = 0.5,
        breaker_min_items: int = 20,
        num_ffmpeg_threads: int | None = None,
        report_dir: str | os.PathLike[str] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        frame_list = [frames] if isinstance(frames, int) else list(frames)
        problems: list[str] = []
        concepts: list[Concept] = []
        try:
            concepts = concepts_from(roots)
            problems += check_concepts(concepts)
        except (TypeError, ValueError) as exc:
            problems.append(str(exc))
        problems += check_frame_buckets(frame_list)
        problems += check_resolution(resolution, step)
        problems += _check_options(
            fps=fps,
            batch_size=batch_size,
            sampling=sampling,
            clips_per_video=clips_per_video,
            crop=crop,
            missing_caption=missing_caption,
            max_aspect=max_aspect,
            max_pixels=max_pixels,
            num_ffmpeg_threads=num_ffmpeg_threads,
            seed=seed,
        )
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

        self.frames = tuple(sorted(frame_list))
        self.fps = fps
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.step = step
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.policy = policy if policy is not None else ErrorPolicy()
        self.breaker_config = breaker
        self.num_ffmpeg_threads = num_ffmpeg_threads
        # Shared memory, so set_epoch reaches persistent DataLoader workers too.
        self._epoch = multiprocessing.RawValue(ctypes.c_int64, 0)
        self._rank = rank
        self._world_size = world_size
        self.buckets = make_buckets(self.resolution, step=step, max_aspect=max_aspect)
        self.limits = ProbeLimits(
            min_frames=min(self.frames),
            fps=fps,
            max_pixels=max_pixels,
            max_duration_seconds=max_duration_seconds,
        )
        self._decode = DecodeOptions(
            frames=self.frames,
            fps=fps,
            buckets=self.buckets,
            sampling=sampling,
            clips_per_video=clips_per_video,
            crop=crop,
            seed=seed,
        )
        if report_dir is None:
            self.report_dir = Path(tempfile.mkdtemp(prefix="wan_data_report_"))
            weakref.finalize(self, _remove_dir, str(self.report_dir), os.getpid())
        else:
            self.report_dir = Path(report_dir)
            self.report_dir.mkdir(parents=True, exist_ok=True)
        self._iterations = 0  # per process: names this process's report parts

        context = StageContext(breaker_config=BreakerConfig(enabled=False))
        self.sources: list[Source] = []
        for item in collect(
            concepts,
            policy=self.policy,
            context=context,
            missing_caption=missing_caption,
            caption_extension=caption_extension,
            allow_outside_root=allow_outside_root,
        ):
            if isinstance(item, Source):
                self.sources.append(item)
            else:
                context.metrics.record_failed(item)
        context.metrics.write(self.report_dir / f"part-collect-{os.getpid()}.json")
        logger.info(
            "WanVideoDataset: %d source(s), %d skipped while collecting, %d bucket(s) at %s",
            len(self.sources),
            len(context.metrics.skipped),
            len(self.buckets),
            self.resolution,
        )

    # -- epochs and sharding -------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: reshuffles order and redraws every seeded choice.

        The value lives in shared memory, so workers started earlier with
        ``persistent_workers=True`` see it at their next iteration.
        """
        self._epoch.value = int(epoch)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if get_spawning_popen() is None:
            # Plain pickling (not a worker being spawned): shared memory cannot travel, the
            # value can. A spawned worker receives the shared value itself.
            state["_epoch"] = int(self._epoch.value)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["_epoch"], int):
            state["_epoch"] = multiprocessing.RawValue(ctypes.c_int64, state["_epoch"])
        self.__dict__.update(state)

    def _rank_world(self) -> tuple[int, int]:
        if self._rank is not None or self._world_size is not None:
            return int(self._rank or 0), int(self._world_size or 1)
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def shard_sources(self, shard: int, num_shards: int) -> list[Source]:
        """The sources of one ``rank x worker`` shard this epoch (disjoint, covering)."""
        order = list(self.sources)
        if self.shuffle:
            sample_rng(self.seed, self.epoch, "", "order").shuffle(order)
        return order[shard::num_shards]

    # -- iteration -----------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        if info is not None:
            _freeze_inherited_objects()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = self._rank_world()
        threads = self.num_ffmpeg_threads
        if threads is None:
            threads = default_ffmpeg_threads(workers if info is not None else 1)
        options = DecodeOptions(**{**self._decode.__dict__, "num_ffmpeg_threads": threads})
        context = StageContext(
            metrics=Metrics(), breaker_config=self.breaker_config, epoch=self.epoch
        )
        self._iterations += 1
        part = self.report_dir / (
            f"part-e{self.epoch}-r{rank}-w{worker}-p{os.getpid()}-i{self._iterations}.json"
        )
        sources = self.shard_sources(rank * workers + worker, world * workers)
        probed = probe(sources, policy=self.policy, context=context, limits=self.limits)
        clips = decode(
            probed, policy=self.policy, options=options, context=context, epoch=self.epoch
        )
        try:
            for batch in batch_clips(
                clips, batch_size=self.batch_size, drop_last=self.drop_last, context=context
            ):
                context.metrics.write(part)
                yield batch
        finally:
            context.metrics.write(part)

    # -- reporting -----------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """The aggregate over every worker and iteration so far (JSON-serialisable).

        Keys: ``stages`` ({name: in/out/failed/seconds/...}), ``skipped`` (one record per
        skip: path, stage, reason, error_type, message, attempts, epoch), ``warnings``,
        ``batches``, ``samples``, ``sources``, ``buckets``.
        """
        parts = []
        for path in sorted(self.report_dir.glob("part-*.json")):
            try:
                parts.append(json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                logger.warning("report part %s unreadable (%s); ignored", path, exc)
        merged = merge_reports(parts)
        merged["sources"] = len(self.sources)
        merged["epoch"] = self.epoch
        merged["buckets"] = [list(b) for b in self.buckets]
        return merged

    def reset_report(self) -> None:
        """Forget the counters of earlier iterations (collect results are kept)."""
        for path in self.report_dir.glob("part-e*.json"):
            path.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return (
            f"WanVideoDataset({len(self.sources)} sources, frames={list(self.frames)}, "
            f"fps={self.fps}, resolution={self.resolution}, batch_size={self.batch_size}, "
            f"epoch={self.epoch})"
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


def _check_options(**o: Any) -> list[str]:
    problems = []
    fps = o["fps"]
    if fps is not None and (not isinstance(fps, (int, float)) or isinstance(fps, bool) or fps <= 0):
        problems.append(
            format_error(
                "fps",
                fps,
                "must be a positive number or None",
                "16 for Wan2.1/2.2-A14B, 24 for TI2V-5B",
            )
        )
    bs = o["batch_size"]
    if not isinstance(bs, int) or isinstance(bs, bool) or bs < 1:
        problems.append(format_error("batch_size", bs, "must be an int >= 1"))
    if o["sampling"] not in SAMPLING_MODES:
        problems.append(format_error("sampling", o["sampling"], f"must be one of {SAMPLING_MODES}"))
    cpv = o["clips_per_video"]
    if not isinstance(cpv, int) or cpv < 0:
        problems.append(format_error("clips_per_video", cpv, "must be an int >= 0"))
    if o["crop"] not in ("center", "random"):
        problems.append(format_error("crop", o["crop"], "must be 'center' or 'random'"))
    if o["missing_caption"] not in ("empty", "filename", "skip", "error"):
        problems.append(
            format_error(
                "missing_caption",
                o["missing_caption"],
                "must be 'empty', 'filename', 'skip' or 'error'",
            )
        )
    if not isinstance(o["max_aspect"], (int, float)) or o["max_aspect"] < 1:
        problems.append(format_error("max_aspect", o["max_aspect"], "must be >= 1"))
    if not isinstance(o["max_pixels"], int) or o["max_pixels"] < 1:
        problems.append(format_error("max_pixels", o["max_pixels"], "must be a positive int"))
    t = o["num_ffmpeg_threads"]
    if t is not None and (not isinstance(t, int) or t < 0):
        problems.append(format_error("num_ffmpeg_threads", t, "must be an int >= 0 or None"))
    if not isinstance(o["seed"], int):
        problems.append(format_error("seed", o["seed"], "must be an int"))
    return problems
