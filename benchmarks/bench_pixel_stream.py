"""Pixel-stream throughput against bare decoders and baselines, as ratios measured in the same run.

Every variant decodes the clips of the dataset's epoch plan (metadata probed once, at
construction); the variants run interleaved, round by round, and each rate is the median of the
rounds (the machines here are noisy), so the ratios compare like with like.

Variants (clips/s, one FFmpeg thread):
    pipeline            WanVideoDataset via DataLoader(num_workers=0): float batches
    pipeline_before     the same with today's-before decode path (issue 14): torchcodec's
                        decoder-side ``Resize`` (patched in), no resize afterwards
    bare_torchcodec     per clip one decoder with the decoder-side ``Resize``, one
                        ``get_frames_played_at`` for the same timestamps, the same crop slice
    decode_only         PyAV: the same source frames decoded (seek, decode up to the last
                        planned time), no conversion: the decoder's limit
    musubi              a musubi-tuner-style loader: PyAV decode, ``to_ndarray("rgb24")`` and
                        ``cv2.resize(INTER_AREA)`` of the planned frames, the same crop, float
                        [-1, 1] (C, F, H, W) per clip
    workers2            DataLoader(num_workers=2)

Ratios and targets:
    pipeline_vs_before        >= 1.35
    pipeline_vs_decode_only   >= 0.65
    pipeline_vs_musubi        >= 1.0
    pipeline_vs_bare          (was >= 0.90 against the decoder-side Resize)
    workers2_vs_0             >= 1.7 on 2 cores

PyAV and OpenCV are benchmark dependencies (``pip install av opencv-python-headless``); without
PyAV the two PyAV variants are skipped.

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


def _video_clips(ds: WanVideoDataset) -> list[tuple[str, Any]]:
    """(path, plan) of every video clip of the dataset's epoch plan, in batch order."""
    out = []
    for batch in ds.plan().batches:
        for member in batch.members:
            sample = ds.samples[member]
            if sample.probed.metadata.media_type != "video":
                continue
            clip = plan_clips(sample.probed, ds._decode, ds.epoch)[sample.clip_index]
            if clip.times is not None:
                out.append((sample.path, clip))
    return out


def _pyav_frames(path: str, times: list[float], convert: Any) -> list[Any]:
    """Decode from the keyframe before ``times[0]`` up to the frame shown at ``times[-1]``;
    ``convert`` (or nothing, when ``None``) is applied to the frame shown at each time."""
    import av

    out: list[Any] = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"  # one thread, like the other variants
        base = float(stream.time_base or 0) or 1e-6
        container.seek(int(times[0] / base), stream=stream, backward=True)
        previous = None
        j = 0
        for frame in container.decode(stream):
            t = float(frame.pts or 0) * base
            while j < len(times) and times[j] < t - 1e-6:
                if convert is not None and previous is not None:
                    out.append(convert(previous))
                j += 1
            previous = frame
            if j >= len(times):
                break
        while j < len(times) and previous is not None:
            if convert is not None:
                out.append(convert(previous))
            j += 1
    return out


def decode_only(ds: WanVideoDataset) -> tuple[int, float]:
    """The same source frames decoded by PyAV, nothing converted: the decoder's limit."""
    clips = _video_clips(ds)
    started = time.perf_counter()
    for path, clip in clips:
        _pyav_frames(path, list(clip.times), None)
    return len(clips), time.perf_counter() - started


def musubi(ds: WanVideoDataset) -> tuple[int, float]:
    """A musubi-tuner-style loader: PyAV + ``to_ndarray("rgb24")`` + ``cv2.resize(INTER_AREA)``,
    the same crop, float [-1, 1] per clip."""
    import cv2
    import numpy as np

    clips = _video_clips(ds)
    started = time.perf_counter()
    for path, clip in clips:
        rw, rh = clip.resized
        x, y = clip.offset
        w, h = clip.bucket.width, clip.bucket.height

        def convert(frame: Any, rw: int = rw, rh: int = rh) -> Any:
            rgb = frame.to_ndarray(format="rgb24")
            return cv2.resize(rgb, (rw, rh), interpolation=cv2.INTER_AREA)

        frames = np.stack(_pyav_frames(path, list(clip.times), convert))[:, y : y + h, x : x + w]
        torch.from_numpy(frames).permute(3, 0, 1, 2).float().div_(127.5).sub_(1.0)
    return len(clips), time.perf_counter() - started


def pipeline(ds: WanVideoDataset, workers: int) -> tuple[int, float]:
    started = time.perf_counter()
    clips = 0
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    for batch in loader:
        clips += len(batch["paths"])
    return clips, time.perf_counter() - started


def pipeline_before(ds: WanVideoDataset) -> tuple[int, float]:
    """The pipeline with the decode path before issue 14: torchcodec's decoder-side ``Resize``
    (``resize_frames`` then finds frames already at size and returns them untouched)."""
    import wan_data.stages.decode as decode_module
    from wan_data.media import frames as frames_module

    def open_seekable(item: Any, plan: Any, threads: int) -> Any:
        from torchcodec.decoders import VideoDecoder
        from torchcodec.transforms import Resize

        if not frames_module._seekable_video(item):
            return None
        meta = item.metadata
        rw, rh = plan.resized
        transforms = [] if (rw, rh) == (meta.width, meta.height) else [Resize((rh, rw))]
        fh = open(item.path, "rb")  # noqa: SIM115 - the decoder keeps it, as before
        decoder = VideoDecoder(
            fh, seek_mode="exact", num_ffmpeg_threads=threads, transforms=transforms
        )
        frames_module.check_source_unchanged(decoder, item)
        return decoder

    real = decode_module.open_seekable
    decode_module.open_seekable = open_seekable
    try:
        return pipeline(ds, 0)
    finally:
        decode_module.open_seekable = real


def interleaved(variants: dict[str, Any], rounds: int) -> dict[str, tuple[float, int, list[float]]]:
    """Median clips/s of each variant, the variants run in turn in every round."""
    runs: dict[str, list[float]] = {name: [] for name in variants}
    clips: dict[str, int] = {}
    for _ in range(rounds):
        for name, fn in variants.items():
            n, seconds = fn()
            clips[name] = n
            runs[name].append(n / seconds if seconds else 0.0)
    return {name: (statistics.median(r), clips[name], r) for name, r in runs.items()}


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
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--workers2", action="store_true", help="also DataLoader(num_workers=2)")
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
        try:
            import av  # noqa: F401

            have_av = True
        except ImportError:
            have_av = False
            print("PyAV not installed: decode_only and musubi are skipped")
        # warm-up: library loading and page cache, not measured
        pipeline(make(1), 0)
        variants: dict[str, Any] = {
            "pipeline": lambda: pipeline(make(1), 0),
            "pipeline_before": lambda: pipeline_before(make(1)),
            "bare_torchcodec": lambda: bare_torchcodec(make(1), 1),
        }
        if have_av:
            variants["decode_only"] = lambda: decode_only(make(1))
            variants["musubi"] = lambda: musubi(make(1))
        if args.workers2:
            variants["workers2"] = lambda: pipeline(make(1), 2)
        got = interleaved(variants, args.repeats)
        rate = {name: v[0] for name, v in got.items()}
        ratios = {
            "pipeline_vs_before": rate["pipeline"] / rate["pipeline_before"],
            "pipeline_vs_bare": rate["pipeline"] / rate["bare_torchcodec"],
            "before_vs_bare": rate["pipeline_before"] / rate["bare_torchcodec"],
        }
        if have_av:
            ratios["pipeline_vs_decode_only"] = rate["pipeline"] / rate["decode_only"]
            ratios["pipeline_vs_musubi"] = rate["pipeline"] / rate["musubi"]
        if args.workers2:
            ratios["workers2_vs_0"] = rate["workers2"] / rate["pipeline"]
        # The same ratios paired within each round, then the median: robust to a load that
        # drifts between rounds (other jobs on the machine).
        paired = {}
        for name, (num, den) in {
            "pipeline_vs_before": ("pipeline", "pipeline_before"),
            "pipeline_vs_bare": ("pipeline", "bare_torchcodec"),
            "pipeline_vs_decode_only": ("pipeline", "decode_only"),
            "pipeline_vs_musubi": ("pipeline", "musubi"),
            "workers2_vs_0": ("workers2", "pipeline"),
        }.items():
            if num in got and den in got:
                pairs = [a / b for a, b in zip(got[num][2], got[den][2], strict=True) if b]
                paired[name] = round(statistics.median(pairs), 3)
        result = {
            "benchmark": "pixel_stream",
            "root": str(root) if args.root else ("test corpus" if args.corpus else args.size),
            "options": {**common, "resolution": list(common["resolution"])},
            "rounds": args.repeats,
            "clips_per_epoch": {name: v[1] for name, v in got.items()},
            "clips_per_second": {name: round(v[0], 2) for name, v in got.items()},
            "runs": {name: [round(r, 3) for r in v[2]] for name, v in got.items()},
            "ratios": {name: round(r, 3) for name, r in ratios.items()},
            "paired_ratios": paired,
            "targets": {
                "pipeline_vs_before": 1.35,
                "pipeline_vs_decode_only": 0.65,
                "pipeline_vs_musubi": 1.0,
                "workers2_vs_0": 1.7,
            },
            "machine": {
                "cores": cores,
                "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                "python": platform.python_version(),
                "torch": torch.__version__,
            },
        }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["clips_per_second"], indent=2))
    print(json.dumps(result["ratios"], indent=2))
    print("paired by round:", json.dumps(result["paired_ratios"]))
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
