"""Pixel-stream throughput against bare torchcodec, as ratios measured in the same run.

Baseline: the clips of the dataset's epoch plan, each with one decoder open with the same
decoder-side ``Resize``, one ``get_frames_played_at`` call for the same timestamps and the same
crop slice; metadata is probed once, at construction, for both sides. That is the least work that
yields the same frames.

Measured:
    pipeline_vs_bare    WanVideoDataset via DataLoader(num_workers=0) / baseline (target >= 0.90)
    workers2_vs_0       DataLoader(num_workers=2) / DataLoader(num_workers=0), both with one FFmpeg
                        thread per decoder, so only the worker parallelism differs (target >= 1.7 on
                        2 cores)

Usage:
    .venv/bin/python benchmarks/bench_pixel_stream.py                 # synthetic 832x480 clips
    .venv/bin/python benchmarks/bench_pixel_stream.py --corpus        # the test-suite corpus
    .venv/bin/python benchmarks/bench_pixel_stream.py --root DIR      # your own folder
Writes JSON to benchmarks/results/pixel_stream.json (or --json).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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
from wan_data.stages.decode import plan_clips
from wan_data.tools.synthetic import make_synthetic_dataset


def bare_torchcodec(ds: WanVideoDataset, threads: int) -> tuple[int, float]:
    """Decode exactly the clips of the dataset's epoch plan with torchcodec alone.

    Metadata was probed once, at construction, for both sides; per clip the baseline opens one
    decoder with the same ``Resize`` and asks for the same timestamps, then crops by slicing.
    """
    from torchcodec.decoders import VideoDecoder
    from torchcodec.transforms import Resize

    options = ds._decode
    plan = ds.plan()
    started = time.perf_counter()
    clips = 0
    for batch in plan.batches:
        for member in batch.members:
            sample = ds.samples[member]
            meta = sample.probed.metadata
            if meta.media_type != "video":
                continue
            clip = plan_clips(sample.probed, options, ds.epoch)[sample.clip_index]
            rw, rh = clip.resized
            transforms = [] if (rw, rh) == (meta.width, meta.height) else [Resize((rh, rw))]
            try:
                decoder = VideoDecoder(
                    sample.path,
                    seek_mode="exact",
                    num_ffmpeg_threads=threads,
                    transforms=transforms,
                )
                frames = decoder.get_frames_played_at(list(clip.times or ())).data
            except Exception:
                continue
            x, y = clip.offset
            frames[..., y : y + clip.bucket.height, x : x + clip.bucket.width].contiguous()
            clips += 1
    return clips, time.perf_counter() - started


def pipeline(ds: WanVideoDataset, workers: int) -> tuple[int, float]:
    started = time.perf_counter()
    clips = 0
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    for batch in loader:
        clips += len(batch["paths"])
    return clips, time.perf_counter() - started


def best_rate(fn: Any, repeats: int) -> tuple[float, int, list[float]]:
    """Median clips/s over ``repeats`` runs (the machines here are noisy)."""
    rates = []
    clips = 0
    for _ in range(repeats):
        clips, seconds = fn()
        rates.append(clips / seconds if seconds else 0.0)
    return statistics.median(rates), clips, rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="use this folder instead of generating one")
    parser.add_argument("--corpus", action="store_true", help="use the test-suite media corpus")
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--size", default="832x480", help="generated source size WxH")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--resolution", default="416x240", help="target WxH")
    parser.add_argument("--frames", type=int, nargs="+", default=[33])
    parser.add_argument("--fps", type=float, default=16.0)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "pixel_stream.json"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    with tempfile.TemporaryDirectory(prefix="wan_bench_") as tmp:
        if args.root is not None:
            root = args.root
        elif args.corpus:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from media import build_corpus

            root = build_corpus(Path(tmp) / "corpus").root
        else:
            w, h = (int(v) for v in args.size.split("x"))
            root = Path(tmp) / "data"
            t0 = time.perf_counter()
            make_synthetic_dataset(
                root,
                num_videos=args.videos,
                seconds=args.seconds,
                broken=False,
                sizes=((w, h),),
                fps_choices=(24.0, 30.0),
            )
            print(f"generated {args.videos} videos {w}x{h} in {time.perf_counter() - t0:.1f} s")
        rw, rh = (int(v) for v in args.resolution.split("x"))
        common = {
            "frames": args.frames,
            "fps": args.fps,
            "resolution": (rw, rh),
            "batch_size": args.batch_size,
            "seed": 0,
        }

        def make(threads: int | None) -> WanVideoDataset:
            return WanVideoDataset(root, num_ffmpeg_threads=threads, **common)

        cores = os.cpu_count() or 1
        # warm-up: library loading and page cache, not measured
        pipeline(make(1), 0)
        bare, bare_clips, bare_runs = best_rate(lambda: bare_torchcodec(make(1), 1), args.repeats)
        pipe0, pipe_clips, pipe0_runs = best_rate(lambda: pipeline(make(1), 0), args.repeats)
        pipe2, _, pipe2_runs = best_rate(lambda: pipeline(make(1), 2), args.repeats)
        auto_bare, _, _ = best_rate(lambda: bare_torchcodec(make(cores), cores), args.repeats)
        auto_pipe, _, _ = best_rate(lambda: pipeline(make(None), 0), args.repeats)
        result = {
            "benchmark": "pixel_stream",
            "root": str(root) if args.root else ("test corpus" if args.corpus else args.size),
            "options": {**common, "resolution": list(common["resolution"])},
            "clips_per_epoch": {"bare": bare_clips, "pipeline": pipe_clips},
            "clips_per_second": {
                "bare_torchcodec_1thread": round(bare, 2),
                "pipeline_workers0_1thread": round(pipe0, 2),
                "pipeline_workers2_1thread": round(pipe2, 2),
                f"bare_torchcodec_{cores}threads": round(auto_bare, 2),
                f"pipeline_workers0_{cores}threads": round(auto_pipe, 2),
            },
            "runs": {"bare": bare_runs, "workers0": pipe0_runs, "workers2": pipe2_runs},
            "ratios": {
                "pipeline_vs_bare": round(pipe0 / bare, 3),
                "pipeline_vs_bare_auto_threads": round(auto_pipe / auto_bare, 3),
                "workers2_vs_0": round(pipe2 / pipe0, 3),
            },
            "targets": {"pipeline_vs_bare": 0.90, "workers2_vs_0": 1.7},
            "machine": {
                "cores": cores,
                "python": platform.python_version(),
                "torch": torch.__version__,
            },
        }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["clips_per_second"], indent=2))
    print(json.dumps(result["ratios"], indent=2))
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
