"""One row of ``wan-data bench``: a value, the baseline it is divided by, and its target.

Every figure of the bench is a ratio against a baseline measured in the same run (the machines
are noisy; absolute clips/s mean little from one hour to the next), so a row carries both sides
and the ratio, plus the target the ratio is held to and which way it points. A row is always
produced, also when its group failed or could not run here, so the JSON has the same measures
on every machine and a reader sees why one is missing instead of not noticing.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["STATUSES", "BenchContext", "Measure", "MeasureSpec", "median_ratio"]

# PASS/FAIL: the ratio against its target. INFO: a measure without a target. SKIP: it cannot run
# here (a missing optional package). ERROR: the measuring code raised; the message says what.
STATUSES = ("PASS", "FAIL", "INFO", "SKIP", "ERROR")


@dataclass(frozen=True)
class MeasureSpec:
    """What a measure is, known before it runs (so a failed group still lists its rows)."""

    name: str
    description: str
    unit: str
    baseline_name: str
    target: float | None
    direction: str = ">="  # the ratio must be >= target, or "<=" for costs and growth

    def __post_init__(self) -> None:
        if self.direction not in (">=", "<="):
            raise ValueError(f"direction must be '>=' or '<=', got {self.direction!r}")


@dataclass
class Measure:
    """A measured row. ``ratio`` is ``value / baseline`` unless the group gives its own (the
    median of per-round ratios is steadier than the ratio of medians on a busy machine)."""

    spec: MeasureSpec
    value: float | None = None
    baseline: float | None = None
    ratio: float | None = None
    status: str = "INFO"
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        spec: MeasureSpec,
        value: float | None,
        baseline: float | None,
        *,
        ratio: float | None = None,
        note: str = "",
        details: dict[str, Any] | None = None,
    ) -> Measure:
        """A row with its ratio (computed unless given) and its PASS/FAIL status."""
        if ratio is None and value is not None and baseline:
            ratio = value / baseline
        if ratio is not None and not math.isfinite(ratio):
            ratio = None
        row = cls(spec, value, baseline, ratio, note=note, details=dict(details or {}))
        row.status = row.judge()
        return row

    @classmethod
    def missing(cls, spec: MeasureSpec, status: str, note: str) -> Measure:
        """A row that could not be measured (``SKIP`` or ``ERROR``), with the reason."""
        if status not in ("SKIP", "ERROR"):
            raise ValueError(f"status must be SKIP or ERROR, got {status!r}")
        return cls(spec, status=status, note=note)

    def judge(self) -> str:
        """``PASS``/``FAIL``: the ratio against the spec's target in its direction; ``INFO`` without
        a target, ``ERROR`` with a target but no ratio."""
        target = self.spec.target
        if target is None:
            return "INFO"
        if self.ratio is None:
            return "ERROR"
        ok = self.ratio >= target if self.spec.direction == ">=" else self.ratio <= target
        return "PASS" if ok else "FAIL"

    def as_dict(self) -> dict[str, Any]:
        """The row as the bench JSON holds it: the spec's fields, then value, baseline and ratio (6
        significant digits, ``None`` when missing or not finite), status, note and details."""
        spec = asdict(self.spec)
        return {
            "name": spec.pop("name"),
            **spec,
            "value": _rounded(self.value),
            "baseline": _rounded(self.baseline),
            "ratio": _rounded(self.ratio),
            "status": self.status,
            "note": self.note,
            "details": self.details,
        }


def median_ratio(values: list[float], baselines: list[float]) -> float | None:
    """The median of the per-round ratios ``values[i] / baselines[i]`` (rounds measured side by
    side, so a burst of load hits both alike); rounds with a zero baseline are left out, and
    ``None`` when none is left."""
    ratios = [v / b for v, b in zip(values, baselines, strict=True) if b > 0]
    return statistics.median(ratios) if ratios else None


def _rounded(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.6g}")


@dataclass
class BenchContext:
    """What every measure group gets: the size to run at, a scratch folder, progress output.

    ``quick`` is the smallest size of every measure (seconds, for CI: only the shape of the
    JSON is checked there); without it the sizes are those of docs/performance.md.
    """

    quick: bool
    workdir: Path
    log: Callable[[str], None] = lambda _line: None
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def repeats(self) -> int:
        """Rounds per measure: 1 with ``quick``, else 3 (the medians are taken over them)."""
        return 1 if self.quick else 3
