"""``WanVideoDataset``: the public entry point, an ``IterableDataset`` of ready batches.

Use it as ``DataLoader(ds, batch_size=None, num_workers=N)`` (or ``ds.loader(num_workers=N)``,
which also tracks progress for exact resume). At construction every source is collected, probed
(in threads, with an optional metadata cache) and given its buckets, so each epoch's batch plan
is a pure function of (seed, epoch, metadata, world size), computed by every rank and worker
alike without communication. Each rank's batches are dealt round-robin to its DataLoader workers,
which is the order the DataLoader collects them in, so the loader yields the plan in order.

The class composes; the jobs beside construction and iteration live in their own modules:
``planning/epochs.py`` (the epoch of each pass and the progress, in shared memory),
``planning/state.py`` (``state_dict``/``load_state_dict``), ``observe/report.py``
(``report()`` and the bucket statistics) and ``loader.py`` (the DataLoader of :meth:`loader`).
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from wan_data.conditioning.text_cache import prepare_text, text_keys
from wan_data.config.dataset_config import DatasetConfig
from wan_data.config.resolve import resolve
from wan_data.dataset_options import DatasetOptions
from wan_data.errors import ConfigError, format_error
from wan_data.failures.mechanism import StageContext
from wan_data.items import Batch, Clip, Probed
from wan_data.latents.dataset_cache import (
    cache_spec_for,
    latent_reader,
    make_encoder,
    make_image_encoder,
    make_text_encoder,
)
from wan_data.latents.prepare import (
    prepare_cache,
    sample_key,
)
from wan_data.latents.store import LatentCache
from wan_data.loader import ProgressLoader, freeze_inherited_objects, keep_batch
from wan_data.observe import report as reporting
from wan_data.observe.alerts import Alert, AlertMonitor
from wan_data.observe.logs import log_to_jsonl
from wan_data.observe.metrics import Metrics
from wan_data.observe.watchdog import worker_watchdog
from wan_data.planning import state as resume_state
from wan_data.planning.balance import Balancing, sample_batch_sizes
from wan_data.planning.batches import build_batches, pixel_reader
from wan_data.planning.construction import decode_options, probe_limits
from wan_data.planning.epochs import SharedProgress
from wan_data.planning.plan import EpochPlan, plan_epoch
from wan_data.planning.rank_check import check_ranks_agree
from wan_data.planning.sample_list import load_or_construct
from wan_data.sources.concepts import RootsLike
from wan_data.stages.base import Stage
from wan_data.stages.decode import DecodeOptions, default_ffmpeg_threads

__all__ = ["WanVideoDataset", "keep_batch"]

logger = logging.getLogger("wan_data")


def _remove_dir(path: str, owner_pid: int) -> None:
    # Forked workers inherit finalizers; only the process that made the folder removes it.
    if os.getpid() == owner_pid:
        shutil.rmtree(path, ignore_errors=True)


class WanVideoDataset(DatasetOptions, IterableDataset[Batch]):
    """Clips from folders of videos and images, in planned, bucket-homogeneous batches.

    Every option is a field of :class:`~wan_data.config.DatasetConfig` (one group per
    concern: sources, shape, sampling, filters, batching, errors, latents, reuse, observe,
    workers; see docs/composing.md and the groups' docstrings). Pass a config, or its fields
    as keywords, or both (keywords win)::

        WanVideoDataset("data/", preset="wan2.1", batch_size=2)
        WanVideoDataset(root, frames=[17, 33], fps=16, resolution=(256, 256), batch_size=2)
        WanVideoDataset(root, DatasetConfig.build(preset="wan2.1"), vae=vae, cache_dir=cache)

    Args:
        roots: folder(s), ``.jsonl``/``.csv`` metadata file(s) or
            :class:`~wan_data.sources.concepts.Concept` objects.
        config: the options (default: :class:`~wan_data.config.DatasetConfig`'s defaults).
        index_stages: the user's stages over probed metadata, run at construction after the
            probe and before buckets are assigned (``Probed → Probed``, e.g. a
            :class:`~wan_data.stages.Filter` on duration or a score). What they drop is
            skipped like any file (``reason="filtered"`` for a Filter) and never planned, so
            batches stay full and equal across ranks.
        clip_stages: the user's stages over decoded clips, run on every batch member after
            the decode stage (``Clip → Clip``, e.g. a :class:`~wan_data.stages.Map` doing
            colour jitter); with a latent cache they run in the cache pass, and their
            identities are part of every cache key.
        **options: any field of any configuration group, by name (``preset=``,
            ``frames=``, ``batch_size=``, ``vae=``...; ``wan_data.config.option_names()``
            lists them).

    Raises:
        ConfigError: every problem at once: unknown or invalid options, unusable roots, stages
            that are not stages, no ``ffmpeg`` for the integrity check, an unwritable ledger.
    """

    def __init__(
        self,
        roots: RootsLike,
        config: DatasetConfig | None = None,
        *,
        index_stages: Sequence[Stage[Probed, Probed]] = (),
        clip_stages: Sequence[Stage[Clip, Clip]] = (),
        **options: Any,
    ) -> None:
        super().__init__()
        resolved = resolve(
            roots,
            config,
            options=options,
            stages={"index_stages": index_stages, "clip_stages": clip_stages},
        )
        self.config: DatasetConfig = resolved.config
        self.ledger = resolved.ledger
        self.index_stages: tuple[Stage[Probed, Probed], ...] = tuple(index_stages)
        self.clip_stages: tuple[Stage[Clip, Clip], ...] = tuple(clip_stages)
        self.bucket_set = self.config.shape.bucket_set()
        self.concepts = tuple(resolved.concepts)
        self.limits = probe_limits(self.config, self.concepts)
        self._decode = decode_options(self.config, self.bucket_set, self.concepts)
        self.policy = self.config.errors.policy
        self.breaker_config = self.config.errors.breaker_config()
        self._dist_rank_world = (0, 1)
        rank, _ = self.rank_and_world_size()
        self._shared = SharedProgress()
        observe = self.config.observe
        if observe.report_dir is None:
            self.report_dir = Path(tempfile.mkdtemp(prefix="wan_data_report_"))
            weakref.finalize(self, _remove_dir, str(self.report_dir), os.getpid())
        else:
            self.report_dir = Path(observe.report_dir)
            self.report_dir.mkdir(parents=True, exist_ok=True)
        self._iterations = 0  # per process: names this process's report parts
        self._plan_memo: tuple[tuple[int, int, int], EpochPlan] | None = None  # see plan()
        self._ranks_checked = False  # see check_ranks_once()
        self._reporter = reporting.DatasetReporter(self.report_dir)
        self.metrics_enabled = bool(observe.metrics)
        self.alert_monitor = (
            AlertMonitor(observe.alerts, observe.alert_callbacks())
            if observe.alerts is not None and observe.metrics
            else None
        )
        self.log_jsonl = str(observe.log_jsonl) if observe.log_jsonl is not None else None
        if self.log_jsonl is not None:
            log_to_jsonl(self.log_jsonl)
        listed = load_or_construct(
            resolved,
            buckets=self.bucket_set,
            decode=self._decode,
            index_stages=self.index_stages,
            report_dir=self.report_dir,
            rank=rank,
        )
        self.sources = listed.sources
        self.probed = listed.probed
        self.samples = listed.samples
        self._sample_buckets = listed.buckets
        # Per-concept balancing and batch sizes (None, free, when no concept sets them).
        self._balancing = Balancing.from_samples(self.samples, self.concepts, seed=self.seed)
        self._batch_sizes = sample_batch_sizes(
            self.samples,
            self.concepts,
            batch_size=self.batch_size,
            frame_batch_sizes=self.config.batching.frame_sizes(),
        )
        self._static_stats = listed.static_stats
        self._index_folder = listed.index_folder
        self._sketch_saved = False
        self.fingerprint = resume_state.fingerprint(self, listed.digest)
        self._encoder: Any = None
        self._text_encoder: Any = None
        self._image_encoder: Any = None
        self.cache_spec = cache_spec_for(
            self.config,
            resolved.concepts,
            clip_stages=[s.identity() for s in self.clip_stages],
            python_stages=bool(self.index_stages or self.clip_stages),
            clip_stages_vary=any(s.varies_by_epoch for s in self.clip_stages),
        )

    # -- epochs, plan and sharding -------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The epoch of the current (or last) pass; before any pass, the one the next will use."""
        return self._shared.epoch

    def next_epoch(self) -> int:
        """The epoch the next pass over the dataset will use.

        Each new pass (a new ``iter()`` of a DataLoader, or of the dataset itself) advances the
        epoch by one, so a plain loop never trains on epoch 0's windows, crops and captions
        forever; :meth:`set_epoch` (and :meth:`load_state_dict`) choose it explicitly instead.
        """
        return self._shared.next_epoch()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next pass: a new plan and new seeded windows, crops and
        captions. Later passes go on from it (``epoch + 1``, ...) unless it is set again.

        The value lives in shared memory, so workers started earlier with
        ``persistent_workers=True`` see it at their next iteration.
        """
        self._shared.set_epoch(epoch)
        self.rank_and_world_size()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_encoder"] = None  # the VAE stays in the process that loaded it
        state["_text_encoder"] = None  # so do the text encoder
        state["_image_encoder"] = None  # and the image encoder
        state["_plan_memo"] = None  # recomputed where needed: a plan pickles to megabytes
        # A copy (pickling, copy.copy) gets the shared progress by value, in shared memory of
        # its own, unless it is a worker being spawned: that one gets the same shared memory
        # (see SharedProgress). The report state is copied without its live yield counters.
        state["_shared"] = copy.copy(self._shared)
        state["_reporter"] = copy.copy(self._reporter)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def rank_and_world_size(self) -> tuple[int, int]:
        """``(rank, world_size)``: the explicit values, else ``torch.distributed``'s.

        The values read from ``torch.distributed`` are remembered, because DataLoader worker
        processes do not see the process group; they receive a copy of this dataset made after
        the main process called this (at construction, ``set_epoch``, ``loader`` or
        ``len``), so create or touch the dataset after ``init_process_group``.
        """
        workers = self.config.workers
        if workers.rank is not None or workers.world_size is not None:
            return int(workers.rank or 0), int(workers.world_size or 1)
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            self._dist_rank_world = (dist.get_rank(), dist.get_world_size())
        return self._dist_rank_world

    def plan(self, epoch: int | None = None, rank: int | None = None) -> EpochPlan:
        """This rank's batch plan of an epoch (pure: every process computes the same)."""
        own_rank, world = self.rank_and_world_size()
        chosen = self.epoch if epoch is None else epoch
        key = (chosen, own_rank if rank is None else rank, world)
        memo = self._plan_memo
        if memo is not None and memo[0] == key:
            return memo[1]
        # The plan is pure, so the last one is kept: ``loader()`` plans the epoch in this
        # process before forking its workers, which then read it instead of each allocating
        # its own (fork copies every heap page a worker writes to; planning 10k samples in
        # each worker cost ~1.5 MB of private memory apiece).
        plan = self._plan_uncached(chosen, key[1], world)
        self._plan_memo = (key, plan)
        return plan

    def _plan_uncached(self, chosen: int, rank: int, world: int) -> EpochPlan:
        return plan_epoch(
            self._sample_buckets,
            batch_size=self.batch_size,
            seed=self.seed,
            epoch=chosen,
            rank=rank,
            world_size=world,
            small_buckets=self.small_buckets,
            batch_sizes=self._batch_sizes,
            selection=self._balancing.selection(chosen) if self._balancing is not None else None,
        )

    def __len__(self) -> int:
        """Batches this rank yields per epoch (the same on every rank)."""
        return len(self.plan().batches)

    # -- iteration -----------------------------------------------------------------------

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        if info is not None:
            freeze_inherited_objects()
        else:
            self._prepare_if_needed()
            self.check_ranks_once()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, _ = self.rank_and_world_size()
        self._iterations += 1
        epoch = self._shared.begin_pass(info, self._iterations)
        threads = self.num_ffmpeg_threads
        if threads is None:
            threads = default_ffmpeg_threads(workers if info is not None else 1)
        options = DecodeOptions(**{**self._decode.__dict__, "num_ffmpeg_threads": threads})
        context = StageContext(
            metrics=Metrics(), policy=self.policy, breaker_config=self.breaker_config, epoch=epoch
        )
        if info is not None and self.log_jsonl is not None:
            log_to_jsonl(self.log_jsonl)  # spawned workers do not inherit handlers
        monitor = self.alert_monitor
        # In a worker it also publishes what is in flight, for the loader's supervisor.
        context.watchdog = worker_watchdog(
            monitor, self._shared.heartbeats, info.id if info is not None else None
        )
        part = self.report_dir / (
            f"part-e{epoch}-r{rank}-w{worker}-p{os.getpid()}-i{self._iterations}.json"
        )
        plan = self.plan(epoch)
        start = self._shared.start_position(epoch)
        # Dealt from the resume point on, so that worker 0 holds the next batch: the DataLoader
        # collects from workers round-robin starting at worker 0.
        mine = [b for b in plan.batches if b.position >= start][worker::workers]
        if info is None:
            self._shared.record_progress(epoch, start)
            # report() reads this iteration's counters live, not from its last snapshot
            self._reporter.live = (part.name, context.metrics)
        # Pixels: every member through the decode stage, then the clip stages. Latents: the
        # cache read (the clip stages ran in the cache pass).
        reader = (
            latent_reader(self.cache_spec, options, self.batch_size, context.metrics)
            if self.cache_spec is not None
            else pixel_reader(options, self.clip_stages)
        )
        last_snapshot = time.monotonic()  # the first snapshot after SNAPSHOT_SECONDS, not at once
        try:
            for batch, out in build_batches(
                mine,
                plan,
                self.samples,
                options=options,
                context=context,
                batch_size=self.batch_size,
                reader=reader,
            ):
                now = time.monotonic()
                if self.metrics_enabled and now - last_snapshot >= reporting.SNAPSHOT_SECONDS:
                    reporting.write_part(context.metrics, part, monitor)
                    last_snapshot = now
                if info is None:
                    self._shared.record_progress(epoch, batch.position + 1)
                yield out
        finally:
            if context.watchdog is not None:
                context.watchdog.close()
            if self.metrics_enabled:
                reporting.write_part(context.metrics, part, monitor)

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
            self._encoder = make_encoder(self.config)
        if self._image_encoder is None:
            self._image_encoder = make_image_encoder(self.config)
        rank, world = self.rank_and_world_size()
        self._reporter.forget_cache_stats()  # the folder is about to change
        monitor = self.alert_monitor
        watchdog = monitor.stall_watchdog() if monitor is not None else None
        try:
            summary = prepare_cache(
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
                clip_stages=self.clip_stages,
                breaker_config=self.breaker_config,
                watchdog=watchdog,
                image_encoder=self._image_encoder,
            )
            if self.cache_spec.text is not None:
                if self._text_encoder is None:
                    self._text_encoder = make_text_encoder(self.config)
                context = StageContext(
                    policy=self.policy, breaker_config=self.breaker_config, watchdog=watchdog
                )
                summary["text"] = prepare_text(
                    self.samples,
                    spec=self.cache_spec.text,
                    encoder=self._text_encoder,
                    cache=LatentCache(self.cache_spec.root),
                    rank=rank,
                    world_size=world,
                    batch_size=self.config.conditioning.text_batch_size,
                    context=context,
                )
                context.metrics.write(self.report_dir / f"part-prepare-text-{os.getpid()}.json")
            return summary
        finally:
            if watchdog is not None:
                watchdog.close()

    def cache_keys(self, variant: int | None = None) -> set[str]:
        """The cache keys of every clip of this dataset (all ranks), in one variant or all,
        and of every caption's text embedding when the dataset has a text encoder."""
        spec = self.cache_spec
        if spec is None:
            return set()
        variants = range(spec.variations) if variant is None else (variant,)
        keys = {sample_key(s, v, self._decode, spec)[0] for s in self.samples for v in variants}
        keys |= {k for key in keys for k in spec.conditions.keys(key).values()}
        if spec.text is not None:
            keys |= set(text_keys(self.samples, spec.text))
        return keys

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

    def loader(self, **kwargs: Any) -> DataLoader[Batch]:
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
        return ProgressLoader(self, **kwargs)

    def check_ranks_once(self) -> None:
        """Check, once, that every rank built the same sample list and plan (a collective:
        :func:`~wan_data.planning.rank_check.check_ranks_agree`). ``loader()`` and a
        ``num_workers=0`` iteration call it before the first batch; with a plain multi-worker
        ``DataLoader``, call it on every rank after construction.

        Raises:
            RankMismatchError: the ranks differ (on every rank), instead of a DDP hang later.
        """
        if not self._ranks_checked:
            self._ranks_checked = check_ranks_agree(self)

    # -- exact resume (planning/state.py) ------------------------------------------------

    def state_dict(self, last_batch: Batch | dict[str, Any] | None = None) -> dict[str, Any]:
        """Where this rank is: resuming from it yields exactly the batches after the last one.

        Progress is known when iterating with ``num_workers=0`` or through :meth:`loader`; with
        a plain multi-worker ``DataLoader``, pass the last batch the trainer consumed. The state
        is a few integers and a fingerprint, whatever the dataset size.
        """
        return resume_state.state_dict(self, last_batch)

    def load_state_dict(self, state: dict[str, Any], *, allow_mismatch: bool = False) -> None:
        """Resume: the next iteration starts at the batch after the one the state was saved at.

        Raises:
            ConfigError: the state was saved against other sources or options (another
                fingerprint), another world size or another seed, unless ``allow_mismatch``
                (then the plan of *this* dataset is resumed at the saved position).
        """
        resume_state.load_state_dict(self, state, allow_mismatch=allow_mismatch)

    # -- reporting (observe/report.py) ---------------------------------------------------

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
        return self._reporter.report(self, all_ranks=all_ranks)

    def bucket_report(self) -> dict[str, Any]:
        """Samples per bucket, repeats and drops of the current epoch's plan (all ranks),
        pixels lost to cropping, and the frames no clip uses: ``frames_trimmed_to_bucket``
        (clips rounded down to a 4k+1 frame bucket) and ``frames_unused_by_sampling`` (the
        tail the sampling mode never reads), see
        :func:`~wan_data.observe.report.static_bucket_stats`."""
        return self._reporter.bucket_report(self)

    def check_alerts(self, report: dict[str, Any] | None = None) -> list[Alert]:
        """Check the failure-rate, cache-corruption and memory alerts against the merged report
        (this process's memory included, GPU too); returns what fired. :meth:`loader` calls it
        every ``metrics_every`` batches; with a plain DataLoader, call it yourself."""
        if self.alert_monitor is None:
            return []
        merged = report if report is not None else self.report()
        return reporting.check_alerts(self.alert_monitor, merged)

    def reset_report(self) -> None:
        """Forget the counters of earlier iterations (setup results are kept)."""
        self._reporter.reset()

    def __repr__(self) -> str:
        return (
            f"WanVideoDataset({len(self.sources)} sources, {len(self.samples)} samples, "
            f"frames={list(self.frames)}, fps={self.fps}, resolution={list(self.resolutions)}, "
            f"batch_size={self.batch_size}, epoch={self.epoch})"
        )
