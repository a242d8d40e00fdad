"""``WanVideoDataset.report()``: merging every process's report parts into one view.

Each process that iterates the dataset (the trainer's, every DataLoader worker) writes its
counters as a part file in the dataset's report folder; the trainer's process also counts what
its loader hands over. Reading a report merges the latest parts, reads this process's running
iteration and yield counters live, adds memory, the bucket statistics and the cache folder's
size. :class:`DatasetReporter` holds what that needs per process (the folder, the live
counters, the memoised statistics); the functions below compute the epoch-independent bucket
statistics once at construction and run the periodic alert and callback hook of the loader.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from wan_data.latents.store import CacheStats, LatentCache
from wan_data.media.buckets import cover_size
from wan_data.media.sampling import (
    expected_repeated_fraction,
    frames_available,
    split_unused_frames,
)
from wan_data.observe.alerts import Alert, AlertMonitor
from wan_data.observe.memory import MemoryStats, merge_memory
from wan_data.observe.metrics import (
    Metrics,
    MetricsCallback,
    YieldCounter,
    latest_memory,
    merge_reports,
)

if TYPE_CHECKING:
    from wan_data.dataset import WanVideoDataset
    from wan_data.items import PlanSample, Probed
    from wan_data.planning.clips import DecodeOptions

__all__ = [
    "CACHE_STATS_SECONDS",
    "SNAPSHOT_SECONDS",
    "DatasetReporter",
    "check_alerts",
    "emit_metrics",
    "static_bucket_stats",
    "write_part",
]

logger = logging.getLogger("wan_data")

# Report snapshots are written at most this often while iterating (and always at the end): a
# snapshot per batch cost 0.8 ms, more than reading a small cached batch.
SNAPSHOT_SECONDS = 0.5
# The cache folder's entry count and size in report() are refreshed at most this often.
CACHE_STATS_SECONDS = 60.0

_CACHE_READ_KEYS = ("hits", "misses", "corruption_count", "writes", "quarantined", "access_seconds")


class DatasetReporter:
    """One process's view of a dataset's reports.

    Args:
        report_dir: the folder every process of the dataset writes its parts to.
    """

    def __init__(self, report_dir: Path) -> None:
        self.report_dir = report_dir
        # This process's running iteration (part name, counters): read live, not from its
        # last snapshot.
        self.live: tuple[str, Metrics] | None = None
        # The YieldCounters of this process's running loaders, by part name: read live rather
        # than their last written parts.
        self.yielding: dict[str, YieldCounter] = {}
        self._cache_stats: tuple[float, CacheStats] | None = None
        self._plan_stats: tuple[tuple[int, int], dict[str, object]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["yielding"] = {}  # the trainer's process counts what it receives
        return state

    def parts(self) -> list[dict[str, Any]]:
        """Every process's latest snapshot; this process's running iteration counted live.

        Worker snapshots lag by at most :data:`SNAPSHOT_SECONDS` while they iterate (exact
        once their iteration ends).
        """
        live: dict[str, Callable[[], dict[str, Any]]] = {
            name: counter.snapshot for name, counter in self.yielding.items()
        }
        if self.live is not None:
            live[self.live[0]] = self.live[1].snapshot
        parts = []
        for path in sorted(self.report_dir.glob("part-*.json")):
            if path.name in live:
                continue
            try:
                parts.append(json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                logger.warning("report part %s unreadable (%s); ignored", path, exc)
        return parts + [snapshot() for snapshot in live.values()]

    def report(self, ds: WanVideoDataset, *, all_ranks: bool = False) -> dict[str, Any]:
        """``ds.report(all_ranks=...)`` (see its docstring)."""
        parts = self.parts()
        # This process's memory now, and each worker's latest snapshot (not this process's
        # own older snapshots: it would count twice).
        mine = (socket.gethostname(), os.getpid())
        here = MemoryStats.measure().as_dict()
        memories = [here, *latest_memory([p for p in parts if _owner(p) != mine])]
        dist = torch.distributed
        rank, world = ds.rank_and_world_size()
        if all_ranks and world > 1 and dist.is_available() and dist.is_initialized():
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, (rank, parts, memories))
            parts, memories = [], []
            for other, their_parts, their_memories in gathered:
                memories += their_memories
                parts += [p for p in their_parts if other == 0 or not _is_setup_part(p)]
        merged = merge_reports(parts)
        merged["memory"] = merge_memory(memories)
        merged["sources"] = len(ds.sources)
        merged["epoch"] = ds.epoch
        merged["buckets"] = ds.bucket_report()
        if ds.cache_spec is not None:
            directory = self.cache_directory_stats(ds.cache_spec.root)
            reads = merged.get("cache") or {}
            stats = dataclasses.replace(directory, **{k: reads.get(k, 0) for k in _CACHE_READ_KEYS})
            merged["cache"] = stats.as_dict()
        return merged

    def bucket_report(self, ds: WanVideoDataset) -> dict[str, Any]:
        """``ds.bucket_report()`` (see its docstring)."""
        if "repeated_frames_expected_fraction" not in ds._static_stats:
            # Saved in a sample index by an earlier version, with the old single trim count.
            ds._static_stats = static_bucket_stats(ds.samples, ds.probed, ds._decode)
        # report() runs every metrics_every batches; the plan of an epoch never changes.
        which = (ds.epoch, ds.rank_and_world_size()[1])
        if self._plan_stats is None or self._plan_stats[0] != which:
            plan = ds.plan(which[0], rank=0)
            self._plan_stats = (which, plan.stats)
        return {
            "plan": self._plan_stats[1],
            **ds._static_stats,
            "bucket_set": [list(b) for b in ds.buckets],
        }

    def cache_directory_stats(self, root: str) -> CacheStats:
        """Entries and size of the cache folder, refreshed at most every
        :data:`CACHE_STATS_SECONDS`: it lists every fan-out folder (25 ms at 400 entries,
        seconds at 100k), and ``report()`` runs every ``metrics_every`` batches."""
        now = time.monotonic()
        cached = self._cache_stats
        if cached is None or now - cached[0] >= CACHE_STATS_SECONDS:
            cached = self._cache_stats = (now, LatentCache(root).stats())
        return cached[1]

    def forget_cache_stats(self) -> None:
        """The cache folder is about to change: list it again at the next report."""
        self._cache_stats = None

    def reset(self) -> None:
        """Forget the counters of earlier iterations (setup results are kept)."""
        for path in self.report_dir.glob("part-e*.json"):
            path.unlink(missing_ok=True)
        self.live = None
        self._cache_stats = None

    def count_yields(self, epoch: int, rank: int, workers: list[tuple[str, int]]) -> YieldCounter:
        """A counter of what a loader hands to the trainer, read live by :meth:`parts` until
        :meth:`stop_counting`."""
        counter = YieldCounter(
            self.report_dir, f"part-e{epoch}-r{rank}", workers, write_every=SNAPSHOT_SECONDS
        )
        self.yielding[counter.name] = counter
        return counter

    def stop_counting(self, counter: YieldCounter) -> None:
        """Write the counter's final part and stop reading it live."""
        counter.close()
        self.yielding.pop(counter.name, None)


def write_part(metrics: Metrics, part: Path, monitor: AlertMonitor | None) -> None:
    """Write this process's report part, with its memory, and check the memory alerts."""
    memory = MemoryStats.measure()
    metrics.memory = memory.as_dict()
    if monitor is not None:
        monitor.check_memory(memory)
    try:
        metrics.write(part)
    except FileNotFoundError:
        # The dataset's private report folder is gone: it was garbage collected (or the
        # interpreter is exiting) before this iteration was closed. Nobody can read it.
        logger.debug("report folder %s is gone; snapshot not written", part.parent)


def check_alerts(monitor: AlertMonitor, report: dict[str, Any]) -> list[Alert]:
    """Check the failure-rate, cache-corruption and memory alerts against a merged report and
    this process's memory; returns what fired."""
    fired = monitor.check_metrics(report)
    fired += monitor.check_memory(MemoryStats.measure())
    return fired


def emit_metrics(ds: WanVideoDataset) -> None:
    """The periodic hook of the dataset's loader: alerts, then the trainer's callback."""
    report = ds.report()
    ds.check_alerts(report)
    callback: MetricsCallback | None = ds.metrics_callback
    if callback is not None:
        try:
            callback(report)
        except Exception as exc:
            logger.error(
                "metrics_callback %r raised %s: %s (ignored; iteration continues)",
                callback,
                type(exc).__name__,
                exc,
                exc_info=True,
            )


def static_bucket_stats(
    samples: Sequence[PlanSample], probed: Sequence[Probed], options: DecodeOptions
) -> dict[str, Any]:
    """The epoch-independent part of ``bucket_report()``, computed once at construction (and
    kept in the sample index): it walks every sample.

    Frames no clip uses are split by cause, exactly as ``wan-data scan`` splits them
    (:func:`~wan_data.media.sampling.split_unused_frames`): rounding a clip down to a 4k+1
    frame bucket (``frames_trimmed_to_bucket``) vs. the tail the sampling mode never reads
    (``frames_unused_by_sampling``: e.g. all of a long video after ``head``'s one window).
    One number for both made long videos under ``head`` look like a trimming problem.
    Counted for ``head`` and ``chunks`` only (consecutive windows from the start, the same
    every epoch); ``None`` for ``random``/``uniform``.
    """
    crop_loss = []
    for sample in samples:
        meta = sample.probed.metadata
        b = sample.bucket
        rw, rh = cover_size(meta.width, meta.height, b.width, b.height)
        crop_loss.append(1.0 - (b.width * b.height) / (rw * rh))
    trimmed = unused = 0
    videos = 0
    clips: dict[str, list[int]] = {}
    for sample in samples:
        clips.setdefault(sample.probed.key, []).append(sample.bucket.frames)
    # Each source by its own concept's options (frames, fps, sampling may be per source).
    counted = all(
        o.sampling in ("head", "chunks") for o in (options, *(o for _, o in options.by_concept))
    )
    for source in probed:
        meta = source.metadata
        if meta.media_type != "video":
            continue
        videos += 1
        own_options = options.for_source(source.source)
        available = frames_available(meta, own_options.fps, own_options.frame_stride)
        to_bucket, by_sampling = split_unused_frames(
            available, clips.get(source.key, []), max(own_options.frames)
        )
        trimmed += to_bucket
        unused += by_sampling

    def total(n: int) -> int | None:
        return n if counted else None

    def mean(n: int) -> float | None:
        return (round(n / videos, 2) if videos else 0.0) if counted else None

    return {
        "crop_pixels_lost_mean": round(sum(crop_loss) / len(crop_loss), 4) if crop_loss else 0.0,
        "frames_trimmed_to_bucket": total(trimmed),
        "frames_trimmed_to_bucket_mean_per_video": mean(trimmed),
        "frames_unused_by_sampling": total(unused),
        "frames_unused_by_sampling_mean_per_video": mean(unused),
        **_repeat_stats(samples, options),
    }


def _repeat_stats(samples: Sequence[PlanSample], options: DecodeOptions) -> dict[str, Any]:
    """Frames a source slower than its target fps must repeat (a 10 fps clip at 16 fps shows ~38 %
    of its frames twice), expected from the metadata: the mean share over the samples of
    videos, and the sources below the target rate."""
    shares = []
    slow: set[str] = set()
    for sample in samples:
        meta = sample.probed.metadata
        if meta.media_type != "video":
            continue
        share = expected_repeated_fraction(options.for_source(sample.probed.source).fps, meta.fps)
        shares.append(share)
        if share > 0:
            slow.add(sample.probed.path)
    return {
        "repeated_frames_expected_fraction": round(sum(shares) / len(shares), 4) if shares else 0.0,
        "low_fps_sources": len(slow),
    }


def _owner(part: dict[str, Any]) -> tuple[object, object]:
    return part.get("host"), part.get("pid")


def _is_setup_part(part: dict[str, Any]) -> bool:
    return bool(part.get("setup"))
