"""What the metrics cost: pixel-stream clips/s with metrics on vs off, measured in one run.

"On" is the default ``WanVideoDataset``: per-stage counters, report snapshots (with psutil memory
figures and memory alerts) at most every 0.5 s per process, the stall watchdog around every stage
call, and ``loader()``'s periodic alert check and ``metrics_callback`` (here every 10 batches).
"Off" is ``metrics=False``: stage counters only, nothing written, no watchdog. Rounds alternate
on/off so that load bursts on these noisy machines hit both sides; the ratio is the median of
the per-round ratios.

Usage:
    .venv/bin/python benchmarks/bench_metrics.py                # 12 synthetic 832x480 videos
    .venv/bin/python benchmarks/bench_metrics.py --workers 0 2 --repeats 5
Writes JSON to benchmarks/results/metrics.json (or --json).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wan_data import WanVideoDataset
from wan_data.tools.synthetic import make_synthetic_dataset


def epoch(ds: WanVideoDataset, workers: int) -> tuple[int, float]:
    started = time.perf_counter()
    clips = 0
    for batch in ds.loader(num_workers=workers):
        clips += len(batch["paths"])
    return clips, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="use this folder instead of generating one")
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--size", default="832x480", help="generated source size WxH")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--resolution", default="416x240", help="target WxH")
    parser.add_argument("--frames", type=int, nargs="+", default=[33])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "metrics.json"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    with tempfile.TemporaryDirectory(prefix="wan_bench_metrics_") as tmp:
        if args.root is not None:
            root = args.root
        else:
            w, h = (int(v) for v in args.size.split("x"))
            root = Path(tmp) / "data"
            make_synthetic_dataset(
                root,
                num_videos=args.videos,
                seconds=args.seconds,
                broken=False,
                sizes=((w, h),),
                fps_choices=(24.0, 30.0),
            )
        rw, rh = (int(v) for v in args.resolution.split("x"))
        common: dict[str, Any] = {
            "frames": args.frames,
            "fps": 16.0,
            "resolution": (rw, rh),
            "batch_size": args.batch_size,
            "seed": 0,
            "num_ffmpeg_threads": 1,
        }
        reports: list[int] = []
        on = WanVideoDataset(
            root, **common, metrics_every=10, metrics_callback=lambda r: reports.append(1)
        )
        off = WanVideoDataset(root, **common, metrics=False)
        epoch(on, 0)  # warm-up: libraries, page cache
        results: dict[str, Any] = {}
        for workers in args.workers:
            runs: dict[str, list[float]] = {"on": [], "off": []}
            for _ in range(args.repeats):
                for name, ds in (("on", on), ("off", off)):
                    clips, seconds = epoch(ds, workers)
                    runs[name].append(round(clips / seconds, 3))
            ratio = statistics.median(a / b for a, b in zip(runs["on"], runs["off"], strict=True))
            results[f"workers{workers}"] = {
                "clips_per_second_on": statistics.median(runs["on"]),
                "clips_per_second_off": statistics.median(runs["off"]),
                "on_vs_off": round(ratio, 3),
                "runs": runs,
                "clips_per_epoch": clips,
            }
        result = {
            "benchmark": "metrics",
            "root": str(args.root) if args.root else f"synthetic {args.videos}x {args.size}",
            "options": {**common, "resolution": list(common["resolution"])},
            "results": results,
            "callbacks_made": len(reports),
            "machine": {"python": platform.python_version(), "torch": torch.__version__},
        }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    for name, r in results.items():
        print(
            f"{name}: on {r['clips_per_second_on']:.1f} clips/s, off "
            f"{r['clips_per_second_off']:.1f} clips/s, on/off {r['on_vs_off']}"
        )
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
