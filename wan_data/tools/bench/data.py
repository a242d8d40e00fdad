"""Synthetic sources for the bench, written once per run and shared by the measure groups.

Generating videos is the slowest part of a quick run, so each set is made once (keyed by its
parameters in the context's cache) and handed to every group that asks for the same one.
Large source counts are made from them by ``benchmarks/bench_cache.py``'s ``replicate`` (hard
links): only the bookkeeping grows, which is what the scaling measures are about.
"""

from __future__ import annotations

from pathlib import Path

from wan_data.tools.bench.measure import BenchContext

__all__ = ["synthetic_videos"]


def synthetic_videos(
    ctx: BenchContext,
    *,
    count: int,
    size: tuple[int, int],
    seconds: float,
    fps_choices: tuple[float, ...] = (24.0, 30.0),
) -> Path:
    """A folder of ``count`` good synthetic videos (with captions), made once per run."""
    from wan_data.tools.synthetic import make_synthetic_dataset

    key = f"videos-{count}-{size[0]}x{size[1]}-{seconds}-{'_'.join(map(str, fps_choices))}"
    if key not in ctx.cache:
        root = ctx.workdir / key
        make_synthetic_dataset(
            root,
            num_videos=count,
            seconds=seconds,
            broken=False,
            sizes=(size,),
            fps_choices=fps_choices,
        )
        ctx.log(f"generated {count} videos {size[0]}x{size[1]}, {seconds} s")
        ctx.cache[key] = root
    path: Path = ctx.cache[key]
    return path
