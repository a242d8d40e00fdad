"""The cached train pass against bare reads, and a warm start against a bare ``os.stat``.

Both baselines are ``benchmarks/bench_cache.py``'s: ``bare_safetensors`` reads the entry files
one epoch reads (paths from ``epoch_paths``, computed before the clock starts) and stacks them
per batch; ``stat_all`` stats every source, which is what any warm start has to do to notice a
changed file. The cache is filled with seeded random latents of the Wan 2.1 shape of each
clip (16 x (F-1)/4+1 x H/8 x W/8) in place of VAE output: these measures are about reading,
and encoding with even the tiny VAE would dominate the setup.

The warm start here is a pixel dataset (no latent cache), so it scales to 100k and 1M sources
without a cache pass over every one of them: construction from the sample index and the
metadata cache, then the first batch of ``ds.loader(num_workers=0)`` (a few tiny clips).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from wan_data.tools.bench.data import synthetic_videos
from wan_data.tools.bench.measure import BenchContext, Measure, MeasureSpec, median_ratio
from wan_data.tools.bench.scripts import benchmark_function

__all__ = ["CACHE_SPECS", "WARM_SPECS", "WanShapeEncoder", "run_cache", "run_warm_start"]

TRAIN_VS_BARE = MeasureSpec(
    "cache.train_vs_bare_reads",
    "cached train pass ds.loader(num_workers=0) / bare safetensors reads + torch.stack",
    "clips/s",
    "bare safetensors",
    0.90,
)
WARM_VS_STAT = MeasureSpec(
    "warm_start.vs_stat",
    "fresh dataset (sample index, warm metadata cache) + first batch / os.stat of every source",
    "s",
    "os.stat of all sources",
    3.0,
    "<=",
)
WARM_GROWTH = MeasureSpec(
    "warm_start.growth_10x",
    "warm start (as above) at 10x the sources / at 1x (10 is linear)",
    "s",
    "warm start at 1x",
    11.0,
    "<=",
)
CACHE_SPECS = (TRAIN_VS_BARE,)
WARM_SPECS = (WARM_VS_STAT, WARM_GROWTH)

_RACY_WINDOW_S = 2.5  # the sample index trusts no file modified within 2 s of its snapshot


class WanShapeEncoder:
    """Stands in for the VAE in the cache pass: seeded random latents of the Wan 2.1 shape.

    The interface of ``VaeEncoder`` that the cache pass uses (``encode_each``,
    ``encode_batch_size``, ``device``), with the latent shape derived from the pixels as the
    real VAE's would be, so the train pass's shape check accepts the entries.
    """

    device = "cpu"

    def __init__(self, dtype: torch.dtype = torch.bfloat16) -> None:
        self.dtype = dtype
        self.encode_batch_size = 4
        self.generator = torch.Generator().manual_seed(0)

    def encode_each(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """One latent per clip of ``pixels`` ``(B, 3, F, H, W)``: seeded random values of shape
        ``(16, (F - 1) // 4 + 1, H // 8, W // 8)`` in ``dtype``, as Wan 2.1's VAE would return."""
        _, _, frames, height, width = pixels.shape
        shape = (16, (frames - 1) // 4 + 1, height // 8, width // 8)
        return [
            torch.randn(shape, generator=self.generator).to(self.dtype)
            for _ in range(pixels.shape[0])
        ]


def run_cache(ctx: BenchContext) -> list[Measure]:
    """Clips/s of the cached train pass (``ds.loader(num_workers=0)``) against bare safetensors
    reads of the same entries stacked per batch (``cache.train_vs_bare_reads``).

    The measure is taken at Wan's training shape: 81-frame 832x480 clips, whose latents
    (16 x 21 x 60 x 104 bf16) make 4.2 MB entries, 100 of them. The same pass over 200 smaller
    entries (33 x 416 x 240 clips: 450 KB) is reported in the details (``small_entries``): there
    the per-clip Python work (the cache key, the checks, the batch assembly) outweighs the read,
    see docs/performance.md. Each cache is filled first by a cache pass with
    :class:`WanShapeEncoder` in place of the VAE; the first batch of both sides is checked to
    hold the same tensors. 8 small sources with ``--quick`` (and no second size).

    The details carry the floor of any verified read into a batch (``verified_reads``: read
    and hash only, see ``benchmarks/bench_cache.py``) against the bare reader and against the
    train pass, so the share of the gap that is the read itself and the share that is the
    train pass's own work are measured in the same run."""
    if ctx.quick:
        base = synthetic_videos(ctx, count=4, size=(160, 96), seconds=1.5)
        common = {"frames": [9], "fps": 8.0, "resolution": (160, 96)}
        measured = _cache_pass_vs_bare(ctx, "quick", base, 8, common)
        small = None
    else:
        base = synthetic_videos(ctx, count=8, size=(208, 120), seconds=5.5)  # 832:480
        common = {"frames": [81], "fps": 16.0, "resolution": (832, 480)}
        measured = _cache_pass_vs_bare(ctx, "wan", base, 100, common)
        base = synthetic_videos(ctx, count=8, size=(416, 240), seconds=2.5)
        common = {"frames": [33], "fps": 16.0, "resolution": (416, 240)}
        small = _cache_pass_vs_bare(ctx, "small", base, 200, common)
    pipe_runs, bare_runs, details = measured
    if small is not None:
        s_pipe, s_bare, s_details = small
        details["small_entries"] = {**s_details, "ratio": median_ratio(s_pipe, s_bare)}
    return [
        Measure.of(
            TRAIN_VS_BARE,
            statistics.median(pipe_runs),
            statistics.median(bare_runs),
            ratio=median_ratio(pipe_runs, bare_runs),
            note=f"{details['entry_bytes'] / 1e6:.1f} MB entries",
            details=details,
        )
    ]


def _cache_pass_vs_bare(
    ctx: BenchContext, name: str, base: Path, sources: int, common: dict[str, Any]
) -> tuple[list[float], list[float], dict[str, Any]]:
    """Fill a cache of ``sources`` copies of ``base``'s videos, then time interleaved rounds of
    the train pass and of bare reads of the same entries: (pipeline clips/s per round, bare
    clips/s per round, details)."""
    from wan_data.tools.synthetic import make_tiny_wan_vae

    replicate = benchmark_function("bench_cache", "replicate")
    media_files = benchmark_function("bench_cache", "media_files")
    make_dataset = benchmark_function("bench_cache", "make_dataset")
    epoch_paths = benchmark_function("bench_cache", "epoch_paths")
    bare_safetensors = benchmark_function("bench_cache", "bare_safetensors")
    pipeline = benchmark_function("bench_cache", "pipeline")
    read_bare = benchmark_function("bench_cache", "read_bare")
    verified_reads = benchmark_function("bench_cache", "verified_reads")

    common = {**common, "batch_size": 4, "seed": 0}
    work = ctx.workdir / f"cache_pass_{name}"
    root, _ = replicate(media_files(base), work / "sources", sources)
    make_tiny_wan_vae(work / "vae")
    ds = make_dataset(root, work, common, device="cpu", latent_dtype=torch.bfloat16)
    ds._encoder = WanShapeEncoder()
    summary = ds.prepare(num_workers=2, progress=False)
    ctx.log(f"cache pass ({name}): {summary['encoded']} entries written")

    ds = make_dataset(root, work, common)
    batches = epoch_paths(ds)
    first = next(iter(ds.loader(num_workers=0)))
    same = bool(torch.equal(first["latents"], read_bare(batches[0])))
    del first
    pipeline(ds, 0)  # warm-up
    bare_safetensors(batches)  # and the baseline's (see bench_cache.py: malloc's state)
    bare_runs: list[float] = []
    pipe_runs: list[float] = []
    floor_runs: list[float] = []
    # A pass takes a tenth of a second here, and the machine's memory speed drifts between
    # passes: many short interleaved rounds, so a burst of load hits every side alike and the
    # median of the per-round ratios holds still.
    for _ in range(ctx.repeats if ctx.quick else 3 * ctx.repeats):
        clips, seconds = bare_safetensors(batches)
        bare_runs.append(clips / seconds if seconds > 0 else 0.0)
        clips, seconds = pipeline(ds, 0)
        pipe_runs.append(clips / seconds if seconds > 0 else 0.0)
        clips, seconds = verified_reads(batches)
        floor_runs.append(clips / seconds if seconds > 0 else 0.0)
    details = {
        "sources": sources,
        "latent_shape": list(ds.cache_spec.latent_shape(ds.samples[0].bucket))
        if ds.cache_spec is not None
        else None,
        "entry_bytes": Path(batches[0][0]).stat().st_size,
        "same_tensors_first_batch": same,
        "runs_bare": bare_runs,
        "runs_pipeline": pipe_runs,
        # The floor of any verified read into a batch (verified_reads): the train pass cannot
        # beat it, so it bounds what the train pass can reach against the bare reader.
        "runs_verified_reads": floor_runs,
        "verified_reads_vs_bare": median_ratio(floor_runs, bare_runs),
        "pipeline_vs_verified_reads": median_ratio(pipe_runs, floor_runs),
    }
    return pipe_runs, bare_runs, details


# -- warm start --------------------------------------------------------------------------------


def run_warm_start(ctx: BenchContext) -> list[Measure]:
    """Seconds to a first batch of a fresh dataset over a warm metadata cache and sample index,
    against an ``os.stat`` of every source (``warm_start.vs_stat``), and the same warm start at
    10x the sources (``warm_start.growth_10x``): 100k and 1M sources, 30 and 300 with
    ``--quick``."""
    from wan_data import WanVideoDataset

    replicate = benchmark_function("bench_cache", "replicate")
    media_files = benchmark_function("bench_cache", "media_files")
    stat_all = benchmark_function("bench_cache", "stat_all")

    small, large = (30, 300) if ctx.quick else (100_000, 1_000_000)
    base = synthetic_videos(ctx, count=4, size=(64, 64), seconds=1.5, fps_choices=(24.0,))
    files = media_files(base)
    common: dict[str, Any] = {
        "frames": [5, 9],
        "fps": 8.0,
        "resolution": (64, 64),
        "batch_size": 4,
        "seed": 0,
    }
    work = ctx.workdir / "warm_start"
    roots = {}
    for n in (small, large):
        roots[n], _ = replicate(files, work / f"n{n}", n)
        ctx.log(f"warm start: {n} sources linked")
    time.sleep(_RACY_WINDOW_S)

    def warm(n: int) -> float:
        started = time.perf_counter()
        ds = WanVideoDataset(roots[n], **common, metadata_cache=work / f"meta{n}.jsonl")
        next(iter(ds.loader(num_workers=0)))
        return time.perf_counter() - started

    details: dict[str, Any] = {"sizes": [small, large]}
    for n in (small, large):
        started = time.perf_counter()
        warm(n)  # cold: probes every source, writes the metadata cache and the sample index
        details[f"cold_s_{n}"] = round(time.perf_counter() - started, 3)
    totals: dict[int, list[float]] = {small: [], large: []}
    stats: list[float] = []
    # The bare stat of the large tree too: whether the filesystem itself stays linear (a
    # million copied sources may not keep every inode cached) is what the growth is read against.
    stats_large: list[float] = []
    sources = [str(p) for p in media_files(roots[small])]
    sources_large = [str(p) for p in media_files(roots[large])]
    for _ in range(max(3, ctx.repeats)):
        stats.append(stat_all(sources))
        stats_large.append(stat_all(sources_large))
        for n in (small, large):
            totals[n].append(warm(n))
    details.update(
        runs_stat_s=stats,
        runs_stat_large_s=stats_large,
        runs_warm_s={str(k): v for k, v in totals.items()},
    )
    if stats and stats_large and min(stats) > 0:
        details["stat_growth"] = round(statistics.median(stats_large) / statistics.median(stats), 3)
    warm_small = statistics.median(totals[small])
    return [
        Measure.of(
            WARM_VS_STAT,
            warm_small,
            statistics.median(stats),
            ratio=median_ratio(totals[small], stats),
            note=f"at {small:,} sources",
            details=details,
        ),
        Measure.of(
            WARM_GROWTH,
            statistics.median(totals[large]),
            warm_small,
            note=f"{large:,} / {small:,} sources (bare stat: {details.get('stat_growth')}x)",
        ),
    ]
