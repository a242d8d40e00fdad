"""Pixel stream: the decode path against decode-only and PyAV+OpenCV; workers; broken files.

Decode-only is ``benchmarks/bench_pixel_stream.py``'s ``decode_only`` (the same source frames
decoded by PyAV, nothing converted: the decoder's limit), the path before issue 14 is its
``bare_torchcodec`` (torchcodec with its ``Resize``, the same timestamps and crop) and the
pipeline side is its ``pipeline``; all are called, not copied, so the bench measures what the
script's docstring defines. PyAV+OpenCV is what many training
repositories do instead (decode with PyAV from the nearest key frame, convert to RGB,
``cv2.resize``, crop): it tells whether the pipeline beats the usual alternative, not only its
own lower bound. Rounds interleave the sides and ratios are medians of per-round ratios, so a
burst of load on a shared machine hits both sides of a ratio alike.
"""

from __future__ import annotations

import logging
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from wan_data.tools.bench.data import synthetic_videos
from wan_data.tools.bench.machine import two_process_scaling
from wan_data.tools.bench.measure import BenchContext, Measure, MeasureSpec, median_ratio
from wan_data.tools.bench.scripts import benchmark_function

__all__ = ["BROKEN_SPECS", "PIXEL_SPECS", "pyav_opencv", "run_broken", "run_pixels"]

PIPELINE_VS_DECODE = MeasureSpec(
    "pixels.pipeline_vs_decode_only",
    "WanVideoDataset, DataLoader(num_workers=0), 1 FFmpeg thread / the same source frames "
    "decoded by PyAV with no conversion (the decoder's limit)",
    "clips/s",
    "decode-only",
    0.65,
)
PIPELINE_VS_RESIZE = MeasureSpec(
    "pixels.pipeline_vs_torchcodec_resize",
    "WanVideoDataset, num_workers=0, 1 thread / bare torchcodec with its Resize transform "
    "(the decode path before issue 14), same clips",
    "clips/s",
    "torchcodec+Resize",
    1.0,
)
PIPELINE_VS_PYAV = MeasureSpec(
    "pixels.pipeline_vs_pyav_opencv",
    "WanVideoDataset, num_workers=0, 1 thread / PyAV decode + cv2.resize + crop, same clips",
    "clips/s",
    "PyAV+OpenCV",
    1.0,
)
WORKERS = MeasureSpec(
    "pixels.workers2_vs_0",
    "DataLoader(num_workers=2) / num_workers=0, 1 FFmpeg thread per decoder",
    "clips/s",
    "num_workers=0",
    1.7,
)
BROKEN = MeasureSpec(
    "broken.broken20_vs_clean",
    "construction + one epoch (num_workers=0), good clips/s with 20% of sources broken / clean",
    "clips/s",
    "clean sources",
    0.90,
)
PIXEL_SPECS = (PIPELINE_VS_DECODE, PIPELINE_VS_RESIZE, PIPELINE_VS_PYAV, WORKERS)
BROKEN_SPECS = (BROKEN,)


def _options(ctx: BenchContext) -> tuple[Path, dict[str, Any]]:
    """The sources and dataset options: docs/performance.md's corpus, or a tiny one."""
    if ctx.quick:
        root = synthetic_videos(ctx, count=4, size=(160, 96), seconds=1.5)
        common: dict[str, Any] = {"frames": [9], "fps": 8.0, "resolution": (64, 64)}
    else:
        root = synthetic_videos(ctx, count=24, size=(832, 480), seconds=3.0)
        common = {"frames": [33], "fps": 16.0, "resolution": (416, 240)}
    return root, {**common, "batch_size": 2, "seed": 0}


def _rate(result: tuple[int, float]) -> float:
    clips, seconds = result
    return clips / seconds if seconds > 0 else 0.0


def run_pixels(ctx: BenchContext) -> list[Measure]:
    """Clips/s of the pixel stream (``DataLoader(num_workers=0)``, one FFmpeg thread) against
    decode-only, torchcodec with its ``Resize`` and PyAV+OpenCV on the same clips, and
    ``num_workers=2`` against 0: the four ``pixels.*`` rows. Without PyAV the rows that need it
    are ``SKIP``."""
    from wan_data import WanVideoDataset

    bare = benchmark_function("bench_pixel_stream", "bare_torchcodec")
    pipeline = benchmark_function("bench_pixel_stream", "pipeline")
    root, common = _options(ctx)

    def make() -> Any:
        return WanVideoDataset(root, num_ffmpeg_threads=1, **common)

    have_pyav = _pyav_available()
    sides: dict[str, Callable[[], tuple[int, float]]] = {
        "bare": lambda: bare(make(), 1),
        "workers0": lambda: pipeline(make(), 0),
        "workers2": lambda: pipeline(make(), 2),
        # What each worker runs as: DataLoader workers use one torch thread, while the
        # one-process path converts and resizes on every core (see the workers row's details).
        "workers0_one_torch_thread": lambda: _one_torch_thread(lambda: pipeline(make(), 0)),
    }
    if have_pyav:
        sides["pyav"] = lambda: pyav_opencv(make())
        decode_only = benchmark_function("bench_pixel_stream", "decode_only")
        sides["decode_only"] = lambda: decode_only(make())
    pipeline(make(), 0)  # warm-up: imports, page cache; not measured
    runs: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(ctx.repeats):
        for name, fn in sides.items():
            runs[name].append(_rate(fn()))
    med = {name: statistics.median(r) for name, r in runs.items()}

    def per_round(a: str, b: str) -> float | None:
        return median_ratio(runs[a], runs[b])

    details = {"root": root.name, "options": _jsonable(common), "runs_clips_per_s": runs}
    rows = [
        Measure.of(
            PIPELINE_VS_RESIZE,
            med["workers0"],
            med["bare"],
            ratio=per_round("workers0", "bare"),
            details=details,
        )
    ]
    if have_pyav:
        rows.insert(
            0,
            Measure.of(
                PIPELINE_VS_DECODE,
                med["workers0"],
                med["decode_only"],
                ratio=per_round("workers0", "decode_only"),
            ),
        )
    else:
        rows.insert(
            0,
            Measure.missing(PIPELINE_VS_DECODE, "SKIP", "PyAV (av) not installed: pip install av"),
        )
    if have_pyav:
        rows.append(
            Measure.of(
                PIPELINE_VS_PYAV, med["workers0"], med["pyav"], ratio=per_round("workers0", "pyav")
            )
        )
    else:
        rows.append(
            Measure.missing(PIPELINE_VS_PYAV, "SKIP", "PyAV (av) or OpenCV (cv2) not installed")
        )
    note = "" if not ctx.quick else "too few clips to amortise starting the workers"
    rows.append(
        Measure.of(
            WORKERS,
            med["workers2"],
            med["workers0"],
            ratio=per_round("workers2", "workers0"),
            note=note,
            details={
                "torch_threads_workers0": torch.get_num_threads(),
                "workers0_one_torch_thread_clips_per_s": med["workers0_one_torch_thread"],
                "ratio_vs_one_torch_thread": per_round("workers2", "workers0_one_torch_thread"),
                # The machine's own ceiling for two processes (memory-bound work scales less).
                "two_process_scaling": two_process_scaling(quick=ctx.quick),
            },
        )
    )
    return rows


def _one_torch_thread(fn: Callable[[], tuple[int, float]]) -> tuple[int, float]:
    """``fn()`` with torch limited to one intra-op thread, as in a DataLoader worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


def _pyav_available() -> bool:
    try:
        import av  # noqa: F401
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def pyav_opencv(ds: Any) -> tuple[int, float]:
    """The dataset's planned clips decoded the common way: PyAV, then OpenCV.

    Per clip: open the container, seek to the key frame before the first requested time, decode
    forward keeping the frame on screen at each requested time (the last one whose time is not
    after it, as torchcodec's ``get_frames_played_at``), convert only the kept frames to RGB,
    ``cv2.resize`` each to the plan's resized size (``INTER_AREA``) and crop. Returns (clips,
    seconds), like the other sides. One decoder thread, as on the other sides.
    """
    import av
    import cv2
    import numpy as np
    import torch

    from wan_data.planning.clips import plan_clips

    plan = ds.plan()
    started = time.perf_counter()
    clips = 0
    for batch in plan.batches:
        for member in batch.members:
            sample = ds.samples[member]
            if sample.probed.metadata.media_type != "video":
                continue
            clip = plan_clips(sample.probed, ds._decode, ds.epoch)[sample.clip_index]
            times = list(clip.times or ())
            if not times:
                continue
            try:
                frames = _pyav_frames(av, sample.path, times)
            except Exception:
                continue
            rw, rh = clip.resized
            x, y = clip.offset
            out = []
            for frame in frames:
                rgb = frame.to_ndarray(format="rgb24")
                if rgb.shape[1] != rw or rgb.shape[0] != rh:
                    rgb = cv2.resize(rgb, (rw, rh), interpolation=cv2.INTER_AREA)
                out.append(rgb[y : y + clip.bucket.height, x : x + clip.bucket.width])
            torch.from_numpy(np.ascontiguousarray(np.stack(out))).permute(0, 3, 1, 2)
            clips += 1
    return clips, time.perf_counter() - started


def _pyav_frames(av: Any, path: str, times: list[float]) -> list[Any]:
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        base = stream.time_base
        container.seek(int(times[0] / base), stream=stream, backward=True)
        kept: list[Any] = []
        previous = None
        for frame in container.decode(stream):
            t = float(frame.pts * base) if frame.pts is not None else 0.0
            while len(kept) < len(times) and previous is not None and t > times[len(kept)]:
                kept.append(previous)
            if len(kept) == len(times):
                break
            previous = frame
        while len(kept) < len(times) and previous is not None:
            kept.append(previous)  # past the end: the last frame stays on screen
        return kept


# -- broken files ------------------------------------------------------------------------------


def run_broken(ctx: BenchContext) -> list[Measure]:
    """Good clips/s of a first run over sources of which 20 % are broken, against the same good
    sources alone: construction (probing every file, cold) and one epoch, each round fresh.

    The broken files are of the kinds real datasets hold: empty, random bytes, text named
    ``.mp4``, truncated (index lost) and damaged mid-stream (a good file with its middle
    overwritten: it probes and fails, or decodes garbage, only when decoded).
    """
    from wan_data import WanVideoDataset

    replicate = benchmark_function("bench_cache", "replicate")
    media_files = benchmark_function("bench_cache", "media_files")
    base, common = _options(ctx)
    good = media_files(base)
    clean, _ = replicate(good, ctx.workdir / "broken_clean", len(good))
    dirty, _ = replicate(good, ctx.workdir / "broken_dirty", len(good))
    broken = max(1, round(len(good) / 4))  # broken / (good + broken) = 20 %
    _write_broken(good, dirty / "broken", broken)
    good_names = {p.name for p in media_files(clean)}

    def epoch(root: Path) -> tuple[int, float]:
        import torch

        started = time.perf_counter()
        ds = WanVideoDataset(root, num_ffmpeg_threads=1, **common)
        clips = 0
        for batch in torch.utils.data.DataLoader(ds, batch_size=None, num_workers=0):
            clips += sum(Path(p).name in good_names for p in batch["paths"])
        return clips, time.perf_counter() - started

    log = logging.getLogger("wan_data")
    level = log.level
    log.setLevel(logging.ERROR)  # one warning per broken file is the point, not news
    try:
        epoch(clean)  # warm-up
        clean_runs: list[float] = []
        dirty_runs: list[float] = []
        for _ in range(ctx.repeats):
            clean_runs.append(_rate(epoch(clean)))
            dirty_runs.append(_rate(epoch(dirty)))
    finally:
        log.setLevel(level)
    return [
        Measure.of(
            BROKEN,
            statistics.median(dirty_runs),
            statistics.median(clean_runs),
            ratio=median_ratio(dirty_runs, clean_runs),
            details={
                "good_sources": len(good),
                "broken_sources": broken,
                "runs_clean": clean_runs,
                "runs_broken": dirty_runs,
            },
        )
    ]


def _write_broken(good: list[Path], folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for i in range(count):
        kind = i % 5
        path = folder / f"broken_{i:04d}.mp4"
        data = good[i % len(good)].read_bytes()
        if kind == 0:
            path.write_bytes(b"")
        elif kind == 1:
            path.write_bytes(rng.randbytes(8192))
        elif kind == 2:
            path.write_text("not a video\n" * 50)
        elif kind == 3:
            path.write_bytes(data[: len(data) // 2])
        else:
            middle = bytearray(data)
            lo, hi = len(data) // 4, 3 * len(data) // 4
            middle[lo:hi] = rng.randbytes(hi - lo)
            path.write_bytes(bytes(middle))


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
