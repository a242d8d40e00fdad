"""Per-stage counters and their aggregation across DataLoader workers and ranks.

Workers are separate processes: each writes a JSON snapshot of its counters into the dataset's
report folder (atomically, at most every half second and at the end), and ``report()`` in the
main process merges them. Files, not queues, because they survive a worker being killed, need no
draining thread, and work with fork and spawn alike. Ranks merge by exchanging their parts
(``report(all_ranks=True)``) or by sharing one report folder.

:func:`scalars` flattens a report into ``name -> number`` pairs for a trainer's logger (the
``metrics_callback`` of :class:`~wan_data.WanVideoDataset` receives the report every N batches).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .items import Failed
from .latent_cache import CacheStats
from .memory import merge_memory

__all__ = [
    "Metrics",
    "MetricsCallback",
    "StageStats",
    "latest_memory",
    "merge_reports",
    "scalars",
    "write_snapshot",
]

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
    cache: CacheStats | None = None
    memory: dict[str, Any] | None = None
    setup: bool = False  # counts of construction (identical on every rank)

    def stage(self, name: str) -> StageStats:
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
        return {
            "stages": {name: s.as_dict() for name, s in self.stages.items()},
            "skipped": list(self.skipped),
            "warnings": dict(self.warnings),
            "batches": self.batches,
            "samples": self.samples,
            "dropped_in_collate": self.dropped_in_collate,
            "cache": self.cache.as_dict() if self.cache is not None else None,
            "memory": self.memory,
            "setup": self.setup,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "time": time.time(),
        }

    def write(self, path: Path) -> None:
        """Atomically replace ``path`` with the snapshot (a reader never sees half a file)."""
        write_snapshot(path, self.snapshot())


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
    """Sum per-process snapshots into one report (counts add, skip lists concatenate)."""
    stages: dict[str, dict[str, Any]] = {}
    skipped: list[dict[str, object]] = []
    warnings: collections.Counter[str] = collections.Counter()
    totals = {"batches": 0, "samples": 0, "dropped_in_collate": 0}
    cache: CacheStats | None = None
    memories = latest_memory(parts)
    for part in parts:
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
    return {
        "cache": cache.as_dict() if cache is not None else None,
        "memory": merge_memory(memories) if memories else None,
        "stages": stages,
        "skipped": skipped,
        "warnings": dict(sorted(warnings.items())),
        **totals,
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
    (batches, samples, sources, skipped); cache counters and rates; memory figures. Values that
    are not numbers (lists, ``None``) are left out, so every value can go to ``add_scalar``.
    """
    out: dict[str, float] = {}

    def put(name: str, value: object) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}/{name}"] = float(value)

    for key in ("batches", "samples", "sources", "dropped_in_collate", "epoch"):
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
