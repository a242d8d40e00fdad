"""Worker memory against dataset size: is a DataLoader worker's memory flat in the sources?

For each size N (hard links to a few synthetic videos, so only the bookkeeping grows), a dataset
is constructed twice (cold: collect and probe; warm: from the sample index), then iterated with
``ds.loader(num_workers=2)`` (fork) for ``--batches`` batches; at that point every worker's
memory is read with psutil:

    uss     unique set size: the memory that exists only because the worker does (what an OOM
            killer reclaims by killing it). Pages a forked worker shares copy-on-write with its
            parent are not in it, until the worker writes them.
    rss     resident set size (shared pages counted in every process).

Measured ratios (printed and written to JSON): worker USS at the largest N / at the smallest N,
for the cold and the warm dataset. Flat means close to 1.

Usage:
    .venv/bin/python benchmarks/bench_memory.py                       # N = 1000, 10000
    .venv/bin/python benchmarks/bench_memory.py --sizes 1000 30000
Writes JSON to benchmarks/results/memory.json (or --json).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cache import media_files, replicate

from wan_data import WanVideoDataset
from wan_data.tools.synthetic import make_synthetic_dataset


def worker_memory(batches: int, ds: WanVideoDataset) -> dict[str, Any]:
    """Iterate ``batches`` batches with two fork workers, then read each worker's memory."""
    loader = ds.loader(num_workers=2, multiprocessing_context="fork", timeout=300)
    it = iter(loader)
    for _ in range(batches):
        next(it)
    me = psutil.Process()
    workers = [p.memory_full_info() for p in me.children()]
    main = me.memory_full_info()
    del it
    return {
        "workers": len(workers),
        "worker_uss_mb": [round(w.uss / 2**20, 1) for w in workers],
        "worker_rss_mb": [round(w.rss / 2**20, 1) for w in workers],
        "main_uss_mb": round(main.uss / 2**20, 1),
        "main_rss_mb": round(main.rss / 2**20, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--batches", type=int, default=20, help="batches before measuring")
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "memory.json"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    common: dict[str, Any] = {
        "frames": [5, 9],
        "fps": 8.0,
        "resolution": (64, 64),
        "batch_size": 4,
        "seed": 0,
    }
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="wan_bench_memory_") as tmp:
        work = Path(tmp)
        make_synthetic_dataset(
            work / "data",
            num_videos=16,
            seconds=1.5,
            broken=False,
            sizes=((64, 64), (96, 64)),
            fps_choices=(24.0,),
        )
        files = media_files(work / "data")
        for n in args.sizes:
            root, _ = replicate(files, work / f"n{n}", n)
            time.sleep(2.5)  # past the sample index's racy window, as a real dataset is
            meta = work / f"meta{n}.jsonl"
            t0 = time.perf_counter()
            cold = WanVideoDataset(root, **common, metadata_cache=meta)
            cold_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            warm = WanVideoDataset(root, **common, metadata_cache=meta)
            warm_s = time.perf_counter() - t0
            results[str(n)] = {
                "samples": len(cold.samples),
                "warm_from_index": type(warm.samples).__name__ == "SampleTable",
                "construction_seconds": {"cold": round(cold_s, 3), "warm": round(warm_s, 3)},
                "cold": worker_memory(args.batches, cold),
                "warm": worker_memory(args.batches, warm),
            }
            del cold, warm
            print(f"N={n}: {json.dumps(results[str(n)])}")
    small, large = (str(n) for n in (min(args.sizes), max(args.sizes)))

    def ratio(kind: str) -> float:
        a = max(results[small][kind]["worker_uss_mb"])
        b = max(results[large][kind]["worker_uss_mb"])
        return round(b / a, 3) if a else float("nan")

    result = {
        "benchmark": "memory",
        "sizes": args.sizes,
        "options": {**common, "resolution": list(common["resolution"])},
        "results": results,
        "ratios": {
            "worker_uss_largest_vs_smallest_cold": ratio("cold"),
            "worker_uss_largest_vs_smallest_warm": ratio("warm"),
        },
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["ratios"], indent=2))
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
