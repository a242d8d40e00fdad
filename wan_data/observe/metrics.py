"""Per-stage counters and their aggregation across DataLoader workers and ranks.

Workers are separate processes: each writes a JSON snapshot of its counters into the dataset's
report folder (atomically, at most every half second and at the end), and ``report()`` in the
main process merges them. Files, not queues, because they survive a worker being killed, need no
draining thread, and work with fork and spawn alike. Ranks merge by exchanging their parts
(``report(all_ranks=True)``) or by sharing one report folder.

:func:`scalars` flattens a report into ``name -> number`` pairs for a trainer's logger (the
``metrics_callback`` of :class:`~wan_data.WanVideoDataset` receives the report every N batches).

Produced is not consumed: a DataLoader worker builds batches ahead of the trainer (up to
``prefetch_factor`` per worker), so what workers count is what they *produced*. Only the process
that hands batches to the trainer knows what the trainer *received*: :class:`YieldCounter` counts
that in the main process (``ds.loader()`` uses it) and writes it as a part of its own, which
names the worker processes whose batches it received. :func:`merge_reports` reports both,
``batches_produced`` and ``batches_yielded`` (and the same for samples).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import get_worker_info

from wan_data.items import Failed
from wan_data.latents.store import CacheStats
from wan_data.observe.memory import merge_memory

__all__ = [
    "Metrics",
    "MetricsCallback",
    "StageStats",
    "YieldCounter",
    "latest_memory",
    "merge_reports",
    "scalars",
    "write_snapshot",
]

logger = logging.getLogger("wan_data")

MetricsCallback = Callable[[dict[str, Any]], None]
"""Receives ``ds.report()`` every ``metrics_every`` batches (in the main process)."""


@dataclass
class StageStats:
    """Counters of one stage in one process."""

    items_in: int = 0
    items_out: int = 0
    failed: int = 0
    bypassed: int = 0
    warned: int = 0
    seconds: float = 0.0
    by_reason: collections.Counter[str] = field(default_factory=collections.Counter)
    by_error_type: collections.Counter[str] = field(default_factory=collections.Counter)

    def as_dict(self) -> dict[str, Any]:
        """The counters as a report's ``stages`` entry (JSON-ready; ``seconds`` of work,
        rounded to microseconds)."""
        return {
            "in": self.items_in,
            "out": self.items_out,
            "failed": self.failed,
            "bypassed": self.bypassed,
            "warned": self.warned,
            "seconds": round(self.seconds, 6),
            "failed_by_reason": dict(sorted(self.by_reason.items())),
            "failed_by_error_type": dict(sorted(self.by_error_type.items())),
        }


@dataclass
class Metrics:
    """Counters of one process; ``snapshot()`` is what gets merged."""

    stages: dict[str, StageStats] = field(default_factory=dict)
    skipped: list[dict[str, object]] = field(default_factory=list)
    warnings: collections.Counter[str] = field(default_factory=collections.Counter)
    batches: int = 0
    samples: int = 0
    dropped_in_collate: int = 0
    # Frames of the pixel clips produced, and how many of them repeat the frame before them.
    frames_served: int = 0
    frames_repeated: int = 0
    cache: CacheStats | None = None
    memory: dict[str, Any] | None = None
    setup: bool = False  # counts of construction (identical on every rank)
    # Made inside a DataLoader worker? Decided at creation: a worker's last snapshot is taken
    # when its iteration is finalised, after torch has already cleared the worker info.
    in_worker: bool = field(default_factory=lambda: get_worker_info() is not None)

    def stage(self, name: str) -> StageStats:
        """The counters of stage ``name``, made empty on first use."""
        if name not in self.stages:
            self.stages[name] = StageStats()
        return self.stages[name]

    def record_failed(self, failed: Failed, epoch: int | None = None) -> None:
        """Remember a skip for the report (once, where the item leaves the pipeline)."""
        record = failed.as_record()
        if epoch is not None:
            record["epoch"] = epoch
        self.skipped.append(record)

    def snapshot(self) -> dict[str, Any]:
        """This process's counters as a report part.

        ``batches``/``samples`` are what this process produced. ``in_worker`` tells
        :func:`merge_reports` whether they went straight to the trainer (counters made outside
        a DataLoader worker: produced is yielded) or through a DataLoader queue (a worker: what
        the trainer received is known only from a :class:`YieldCounter` part naming it).
        """
        return {
            "stages": {name: s.as_dict() for name, s in self.stages.items()},
            "skipped": list(self.skipped),
            "warnings": dict(self.warnings),
            "batches": self.batches,
            "samples": self.samples,
            "dropped_in_collate": self.dropped_in_collate,
            "frames_served": self.frames_served,
            "frames_repeated": self.frames_repeated,
            "cache": self.cache.as_dict() if self.cache is not None else None,
            "memory": self.memory,
            "setup": self.setup,
            "in_worker": self.in_worker,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "time": time.time(),
        }

    def write(self, path: Path) -> None:
        """Atomically replace ``path`` with the snapshot (a reader never sees half a file)."""
        write_snapshot(path, self.snapshot())


YIELD_PART_KIND = "yielded"
"""``kind`` of the report parts written by :class:`YieldCounter`."""

_sequence = itertools.count()


class YieldCounter:
    """Batches and samples a loader handed to the trainer, counted in the trainer's process.

    Workers count what they produce, ahead of the trainer; this counts what the trainer got.
    Its part also lists the DataLoader workers (host, pid) whose batches it received, so that
    :func:`merge_reports` knows those workers' production is accounted for (a worker part no
    counter names belongs to a loader that did not count: a plain ``DataLoader``).

    ``report()`` in the trainer's process reads the open counter's :meth:`snapshot` live (the
    dataset holds it while its loader runs); the part file, written at most every
    ``write_every`` seconds and at :meth:`close`, is for other processes that read the folder.

    Args:
        report_dir: the dataset's report folder.
        prefix: the part's name prefix (``part-e<epoch>-r<rank>``: the dataset's
            ``reset_report`` removes ``part-e*`` parts).
        workers: ``(host, pid)`` of the loader's worker processes.
        write_every: seconds between two writes of the part while counting.
    """

    def __init__(
        self,
        report_dir: Path,
        prefix: str,
        workers: list[tuple[str, int]],
        *,
        write_every: float = 0.5,
    ) -> None:
        self.name = f"{prefix}-yielded-p{os.getpid()}-i{next(_sequence)}.json"
        self.path = Path(report_dir) / self.name
        self.workers = list(workers)
        self.batches = 0
        self.samples = 0
        self.write_every = write_every
        self._written = time.monotonic()

    def record(self, samples: int) -> None:
        """Count one batch of ``samples`` samples handed to the trainer."""
        self.batches += 1
        self.samples += samples
        now = time.monotonic()
        if now - self._written >= self.write_every:
            self._written = now
            self._write()

    def snapshot(self) -> dict[str, Any]:
        """This counter as a report part (``kind`` names it for :func:`merge_reports`): what the
        trainer received, the workers it came from, and who wrote it and when (``time``: seconds
        since the epoch)."""
        return {
            "kind": YIELD_PART_KIND,
            "part": self.name,
            "batches_yielded": self.batches,
            "samples_yielded": self.samples,
            "workers": [list(w) for w in self.workers],
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "time": time.time(),
        }

    def close(self) -> None:
        """Write the final counts."""
        self._write()

    def _write(self) -> None:
        try:
            write_snapshot(self.path, self.snapshot())
        except FileNotFoundError:
            # The dataset's private report folder is gone (garbage collected, or the
            # interpreter is exiting): nobody can read the part any more.
            logger.debug("report folder %s is gone; %s not written", self.path.parent, self.name)


def write_snapshot(path: Path, snapshot: dict[str, Any]) -> None:
    """Atomically replace ``path`` with a report part (a reader never sees half a file)."""
    data = json.dumps(snapshot)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def merge_reports(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum per-process snapshots into one report (counts add, skip lists concatenate).

    Batches and samples are reported twice (see the module docstring):

    - ``batches_produced``/``samples_produced``: built by any process (workers run ahead of
      the trainer by their prefetch). ``batches``/``samples`` are the same numbers, kept under
      their old names for compatibility.
    - ``batches_yielded``/``samples_yielded``: received by the trainer. A main-process
      iteration yields what it produces; workers' batches are counted by the
      :class:`YieldCounter` parts that name those workers. When some worker produced batches
      that no counter names (a plain multi-worker ``DataLoader``), what the trainer received
      is unknown and both are ``None``.
    """
    stages: dict[str, dict[str, Any]] = {}
    skipped: list[dict[str, object]] = []
    warnings: collections.Counter[str] = collections.Counter()
    totals = {
        "batches": 0,
        "samples": 0,
        "dropped_in_collate": 0,
        "frames_served": 0,
        "frames_repeated": 0,
    }
    yielded = {"batches_yielded": 0, "samples_yielded": 0}
    counted_workers: set[tuple[object, object]] = set()
    uncounted_workers: set[tuple[object, object]] = set()
    cache: CacheStats | None = None
    memories = latest_memory(parts)
    for part in parts:
        if part.get("kind") == YIELD_PART_KIND:
            for k in yielded:
                yielded[k] += int(part.get(k) or 0)
            counted_workers.update((str(h), int(p)) for h, p in part.get("workers") or [])
            continue
        if part.get("in_worker"):
            if part.get("batches") or part.get("samples"):
                uncounted_workers.add((str(part.get("host")), int(part.get("pid") or 0)))
        else:
            yielded["batches_yielded"] += int(part.get("batches", 0))
            yielded["samples_yielded"] += int(part.get("samples", 0))
        if part.get("cache"):
            fields = {f.name for f in dataclasses.fields(CacheStats)}
            stats = CacheStats(**{k: v for k, v in part["cache"].items() if k in fields})
            cache = stats if cache is None else cache.merge(stats)
        for name, s in part.get("stages", {}).items():
            acc = stages.setdefault(
                name,
                {
                    "in": 0,
                    "out": 0,
                    "failed": 0,
                    "bypassed": 0,
                    "warned": 0,
                    "seconds": 0.0,
                    "failed_by_reason": collections.Counter(),
                    "failed_by_error_type": collections.Counter(),
                },
            )
            for k in ("in", "out", "failed", "bypassed", "warned", "seconds"):
                acc[k] += s.get(k, 0)
            acc["failed_by_reason"].update(s.get("failed_by_reason", {}))
            acc["failed_by_error_type"].update(s.get("failed_by_error_type", {}))
        skipped.extend(part.get("skipped", []))
        warnings.update(part.get("warnings", {}))
        for k in totals:
            totals[k] += int(part.get(k, 0))
    for acc in stages.values():
        acc["seconds"] = round(acc["seconds"], 6)
        acc["items_per_second"] = round(acc["out"] / acc["seconds"], 3) if acc["seconds"] else None
        acc["failed_by_reason"] = dict(sorted(acc["failed_by_reason"].items()))
        acc["failed_by_error_type"] = dict(sorted(acc["failed_by_error_type"].items()))
    skipped.sort(key=lambda r: (str(r.get("path")), str(r.get("stage")), str(r.get("key"))))
    known = uncounted_workers <= counted_workers
    return {
        "cache": cache.as_dict() if cache is not None else None,
        "memory": merge_memory(memories) if memories else None,
        "stages": stages,
        "skipped": skipped,
        "warnings": dict(sorted(warnings.items())),
        **totals,
        "repeated_frames_fraction": round(totals["frames_repeated"] / totals["frames_served"], 4)
        if totals["frames_served"]
        else 0.0,
        "batches_produced": totals["batches"],
        "samples_produced": totals["samples"],
        "batches_yielded": yielded["batches_yielded"] if known else None,
        "samples_yielded": yielded["samples_yielded"] if known else None,
    }


def latest_memory(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The latest memory snapshot of each process among report parts.

    A persistent worker writes one part per epoch; summing them all would count one process
    several times (and processes long gone).
    """
    latest: dict[tuple[object, ...], tuple[float, dict[str, Any]]] = {}
    for part in parts:
        memory = part.get("memory")
        if memory:
            who = (part.get("host"), part.get("pid"))
            when = float(part.get("time", 0.0))
            if who not in latest or when >= latest[who][0]:
                latest[who] = (when, memory)
    return [memory for _, memory in latest.values()]


def scalars(report: Mapping[str, Any], prefix: str = "wan_data") -> dict[str, float]:
    """Flatten a report into ``"prefix/section/name" -> number`` for TensorBoard and the like.

    Per stage: in, out, failed, seconds, items_per_second and failures per reason; totals
    (batches and samples produced and yielded, sources, skipped); cache counters and rates;
    memory figures. Values that are not numbers (lists, ``None``: e.g. ``batches_yielded``
    behind a plain DataLoader) are left out, so every value can go to ``add_scalar``.
    """
    out: dict[str, float] = {}

    def put(name: str, value: object) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}/{name}"] = float(value)

    for key in (
        "batches",
        "samples",
        "batches_produced",
        "samples_produced",
        "batches_yielded",
        "samples_yielded",
        "sources",
        "dropped_in_collate",
        "epoch",
    ):
        put(key, report.get(key))
    put("skipped", len(report.get("skipped") or []))
    for stage, stats in (report.get("stages") or {}).items():
        for key in ("in", "out", "failed", "bypassed", "warned", "seconds", "items_per_second"):
            put(f"stages/{stage}/{key}", stats.get(key))
        for reason, count in (stats.get("failed_by_reason") or {}).items():
            put(f"stages/{stage}/failed_by_reason/{reason}", count)
    for section in ("cache", "memory"):
        for key, value in (report.get(section) or {}).items():
            put(f"{section}/{key}", value)
    return out
