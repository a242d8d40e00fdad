"""Runs the measure groups of ``wan-data bench`` and collects one row per measure.

Groups run one after another in a fresh scratch folder (a group's processes would otherwise
compete for the cores with the next group's). A group that raises, or whose benchmark script is
not there, still yields all its rows, as ``ERROR`` or ``SKIP`` with the reason, so one broken
measure never hides the others and the JSON always lists every measure.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wan_data.tools.bench import cache, pixels, scale, text
from wan_data.tools.bench.machine import machine_info
from wan_data.tools.bench.measure import BenchContext, Measure, MeasureSpec
from wan_data.tools.bench.report import bench_document
from wan_data.tools.bench.scripts import BenchmarksUnavailable

__all__ = ["GROUPS", "Group", "measure_names", "run_bench"]

logger = logging.getLogger("wan_data")


@dataclass(frozen=True)
class Group:
    """Measures that share their setup (sources, a cache pass) and so run together."""

    name: str
    specs: tuple[MeasureSpec, ...]
    run: Callable[[BenchContext], list[Measure]]


GROUPS: tuple[Group, ...] = (
    Group("pixels", pixels.PIXEL_SPECS, pixels.run_pixels),
    Group("broken", pixels.BROKEN_SPECS, pixels.run_broken),
    Group("cache", cache.CACHE_SPECS, cache.run_cache),
    Group("warm_start", cache.WARM_SPECS, cache.run_warm_start),
    Group("plan", scale.PLAN_SPECS, scale.run_plan),
    Group("memory", scale.MEMORY_SPECS, scale.run_memory),
    Group("text", text.TEXT_SPECS, text.run_text),
)


def measure_names() -> list[str]:
    """Every group and measure name ``--only`` accepts."""
    return [g.name for g in GROUPS] + [s.name for g in GROUPS for s in g.specs]


def _selected(only: Sequence[str] | None) -> list[Group]:
    if not only:
        return list(GROUPS)
    unknown = [n for n in only if n not in measure_names()]
    if unknown:
        raise ValueError(f"unknown measure(s) {unknown}; choose from {', '.join(measure_names())}")
    return [g for g in GROUPS if g.name in only or any(s.name in only for s in g.specs)]


def _run_group(group: Group, ctx: BenchContext) -> list[Measure]:
    try:
        rows = group.run(ctx)
    except BenchmarksUnavailable as exc:
        return [Measure.missing(spec, "SKIP", str(exc)) for spec in group.specs]
    except Exception as exc:
        logger.exception("bench group %s failed", group.name)
        note = f"{type(exc).__name__}: {exc}"[:300]
        return [Measure.missing(spec, "ERROR", note) for spec in group.specs]
    by_name = {r.spec.name: r for r in rows}
    return [
        by_name.get(spec.name) or Measure.missing(spec, "ERROR", "the group returned no row")
        for spec in group.specs
    ]


def run_bench(
    *,
    quick: bool = False,
    only: Sequence[str] | None = None,
    log: Callable[[str], None] = lambda _line: None,
) -> tuple[list[Measure], dict[str, Any]]:
    """Run the selected groups; returns the rows and the JSON document.

    Args:
        quick: every measure at its smallest size (seconds; what CI runs, only the JSON's
            shape is meaningful then). Without it the sizes of docs/performance.md, the
            100k / 1M-source measures included (tens of minutes).
        only: group or measure names (``pixels``, ``plan.growth_10x``, ...); a measure's
            whole group runs, its other rows are dropped.
        log: progress lines (the CLI passes a writer to stderr).

    Raises:
        ValueError: an unknown name in ``only``.
    """
    groups = _selected(only)
    started = time.perf_counter()
    rows: list[Measure] = []
    with tempfile.TemporaryDirectory(prefix="wan_data_bench_") as tmp:
        ctx = BenchContext(quick=quick, workdir=Path(tmp), log=log)
        for group in groups:
            t0 = time.perf_counter()
            log(f"{group.name}: running")
            group_rows = _run_group(group, ctx)
            if only and group.name not in only:
                group_rows = [r for r in group_rows if r.spec.name in only]
            rows += group_rows
            log(f"{group.name}: done in {time.perf_counter() - t0:.1f} s")
    document = bench_document(
        rows, machine=machine_info(), quick=quick, seconds=time.perf_counter() - started
    )
    return rows, document
