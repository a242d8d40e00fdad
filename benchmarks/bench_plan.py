"""Cost of planning an epoch (``plan_epoch``) as the sample list grows, as ratios in one run.

Synthetic sample lists of 1k, 10k, 100k and 1M samples, each sample's bucket drawn (seeded,
skewed like real datasets: a few common resolutions, a long tail of rare ones) from 40 spatial
buckets x 4 frame buckets; batch size 4, world size 8, rank 0. Every rank and worker plans the
same epoch, so this cost is paid once per epoch per process (or once per rank when the plan is
shipped to the workers, whose pickled size is reported too). The buckets are passed as the
dataset passes them: a ``BucketColumn`` (codes into the distinct buckets, what the sample index
stores), built once outside the timing as the dataset builds it once at construction;
``column_s`` is that one-off cost from a plain list of ``Bucket`` objects.

Measured:
    seconds             median of 5 ``plan_epoch`` calls
    us_per_sample       seconds / samples * 1e6 (flat when planning is linear)
    growth              seconds(n) / seconds(previous n); 10.0 is linear for 10x more samples
    pickled_bytes       ``len(pickle.dumps(plan))`` of the rank's plan (what a worker receives),
                        split into the rank's batches and the all-rank ``pools``
    first_candidate_s   time to the first replacement candidate of a batch of the largest bucket
                        (what one decode failure costs the consumer)

It prints ratios and never asserts timings: they depend on the machine.

Usage:
    .venv/bin/python benchmarks/bench_plan.py [--sizes 1000 10000 ...] [--json PATH]
Writes JSON to benchmarks/results/plan.json (or --json).
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wan_data.items import Bucket
from wan_data.media.sampling import sample_rng
from wan_data.planning.columns import BucketColumn
from wan_data.planning.plan import plan_epoch, replacement_candidates

FRAMES = (1, 17, 33, 81)
BATCH_SIZE = 4
WORLD_SIZE = 8
SEED = 0
REPEATS = 5


def spatial_buckets(count: int = 40) -> list[tuple[int, int]]:
    """``count`` (width, height) pairs on the 16-pixel grid around 480p, both orientations."""
    sizes = []
    for i in range(count // 2):
        w, h = 832 - 16 * i, 480 + 16 * (i // 2)
        sizes += [(w, h), (h, w)]
    return sizes[:count]


def synthetic_buckets(n: int) -> list[Bucket]:
    """Bucket of each of ``n`` samples; ``Bucket`` objects shared, as a real caller would."""
    buckets = [Bucket(f, w, h) for f in FRAMES for w, h in spatial_buckets()]
    weights = [1.0 / (1 + i) for i in range(len(buckets))]  # Zipf-like: a long tail of rare ones
    rng = sample_rng(SEED, 0, f"bench:{n}", "buckets")
    return rng.choices(buckets, weights=weights, k=n)


def measure(n: int) -> dict[str, Any]:
    listed = synthetic_buckets(n)
    started = time.perf_counter()
    buckets = BucketColumn.of(listed)
    column_s = time.perf_counter() - started
    del listed
    runs = []
    plan = None
    for _ in range(REPEATS):
        started = time.perf_counter()
        plan = plan_epoch(buckets, batch_size=BATCH_SIZE, seed=SEED, epoch=1, world_size=WORLD_SIZE)
        runs.append(time.perf_counter() - started)
    assert plan is not None
    seconds = statistics.median(runs)
    largest = max(plan.pools, key=lambda b: len(plan.pools[b]))
    batch = next(b for b in plan.batches if b.bucket == largest)
    started = time.perf_counter()
    next(replacement_candidates(plan, batch, seed=SEED))
    first_candidate = time.perf_counter() - started
    return {
        "samples": n,
        "buckets": len(plan.pools),
        "batches_per_rank": len(plan.batches),
        "padding_batches": plan.stats["padding_batches"],
        "repeated": plan.stats["repeated"],
        "runs_s": runs,
        "seconds": seconds,
        "column_s": column_s,
        "us_per_sample": seconds / n * 1e6,
        "pickled_bytes": len(pickle.dumps(plan)),
        "pickled_batches_bytes": len(pickle.dumps(plan.batches)),
        "pickled_pools_bytes": len(pickle.dumps(plan.pools)),
        "largest_bucket": len(plan.pools[largest]),
        "first_candidate_s": first_candidate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).resolve().parent / "results" / "plan.json"
    )
    args = parser.parse_args()

    rows = []
    print(f"plan_epoch: batch {BATCH_SIZE}, world {WORLD_SIZE}, median of {REPEATS}")
    print(f"{'samples':>9} {'seconds':>9} {'us/sample':>10} {'growth':>7} {'pickled':>11}")
    previous = None
    for n in args.sizes:
        row = measure(n)
        row["growth"] = row["seconds"] / previous["seconds"] if previous else None
        growth = f"{row['growth']:.1f}x" if row["growth"] else "-"
        print(
            f"{n:>9} {row['seconds']:>9.4f} {row['us_per_sample']:>10.2f} {growth:>7} "
            f"{row['pickled_bytes']:>11,}"
        )
        rows.append(row)
        previous = row
    for row in rows:
        if row["samples"] == 100_000:
            print(
                f"pickled EpochPlan at 100k samples (rank 0 of {WORLD_SIZE}): "
                f"{row['pickled_bytes']:,} bytes (batches {row['pickled_batches_bytes']:,}, "
                f"pools {row['pickled_pools_bytes']:,})"
            )
    last = rows[-1]
    print(
        f"first replacement candidate, largest bucket ({last['largest_bucket']:,} samples) at "
        f"{last['samples']:,}: {last['first_candidate_s'] * 1e3:.2f} ms"
    )

    result = {
        "benchmark": "plan",
        "options": {"batch_size": BATCH_SIZE, "world_size": WORLD_SIZE, "frames": FRAMES},
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "sizes": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
