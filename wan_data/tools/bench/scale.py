"""How costs grow with the dataset: epoch planning and a DataLoader worker's memory.

Both call ``benchmarks/``' own measuring functions: ``bench_plan.measure`` (median of 5
``plan_epoch`` calls over a seeded, skewed synthetic sample list) and ``bench_memory.
worker_memory`` (two fork workers iterate some batches, then psutil reads each worker's unique
set size). The bench divides the larger size by the smaller, 10x apart: 10 is linear for the
plan, 1 is flat for memory.
"""

from __future__ import annotations

import logging
from typing import Any

from wan_data.tools.bench.data import synthetic_videos
from wan_data.tools.bench.measure import BenchContext, Measure, MeasureSpec
from wan_data.tools.bench.scripts import benchmark_function

__all__ = ["MEMORY_SPECS", "PLAN_SPECS", "run_memory", "run_plan"]

PLAN_GROWTH = MeasureSpec(
    "plan.growth_10x",
    "plan_epoch seconds at 10x the samples / at 1x (10 is linear)",
    "s",
    "plan_epoch at 1x",
    11.0,
    "<=",
)
WORKER_MEMORY = MeasureSpec(
    "memory.worker_uss_10x",
    "largest DataLoader worker's USS at 10x the sources / at 1x (cold construction, fork)",
    "MB",
    "worker USS at 1x",
    1.10,
    "<=",
)
PLAN_SPECS = (PLAN_GROWTH,)
MEMORY_SPECS = (WORKER_MEMORY,)


def run_plan(ctx: BenchContext) -> list[Measure]:
    """Seconds of ``plan_epoch`` at 10x the samples against 1x (``plan.growth_10x``; 10 is
    linear): 100k and 1M samples, 1k and 10k with ``--quick``."""
    measure = benchmark_function("bench_plan", "measure")
    small, large = (1_000, 10_000) if ctx.quick else (100_000, 1_000_000)
    rows = {n: measure(n) for n in (small, large)}
    keep = ("seconds", "us_per_sample", "runs_s", "column_s", "pickled_bytes", "buckets")
    return [
        Measure.of(
            PLAN_GROWTH,
            rows[large]["seconds"],
            rows[small]["seconds"],
            note=f"{large:,} / {small:,} samples",
            details={str(n): {k: row[k] for k in keep if k in row} for n, row in rows.items()},
        )
    ]


def run_memory(ctx: BenchContext) -> list[Measure]:
    """The largest DataLoader worker's unique set size (MB) at 10x the sources against 1x
    (``memory.worker_uss_10x``; 1 is flat): 1k and 10k sources, 100 and 1k with ``--quick``."""
    from wan_data import WanVideoDataset

    worker_memory = benchmark_function("bench_memory", "worker_memory")
    replicate = benchmark_function("bench_cache", "replicate")
    media_files = benchmark_function("bench_cache", "media_files")
    small, large = (100, 1_000) if ctx.quick else (1_000, 10_000)
    batches = 5 if ctx.quick else 20
    files = media_files(
        synthetic_videos(ctx, count=4, size=(64, 64), seconds=1.5, fps_choices=(24.0,))
    )
    common: dict[str, Any] = {
        "frames": [5, 9],
        "fps": 8.0,
        "resolution": (64, 64),
        "batch_size": 4,
        "seed": 0,
    }
    results: dict[int, dict[str, Any]] = {}
    log = logging.getLogger("wan_data")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        for n in (small, large):
            root, _ = replicate(files, ctx.workdir / f"memory_n{n}", n)
            ds = WanVideoDataset(root, **common, metadata_cache=ctx.workdir / f"memory{n}.jsonl")
            results[n] = worker_memory(batches, ds)
            del ds
    finally:
        log.setLevel(level)
    a = max(results[small]["worker_uss_mb"], default=0.0)
    b = max(results[large]["worker_uss_mb"], default=0.0)
    return [
        Measure.of(
            WORKER_MEMORY,
            b or None,
            a or None,
            note=f"{large:,} / {small:,} sources",
            details={str(n): r for n, r in results.items()},
        )
    ]
