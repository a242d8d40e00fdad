"""The bench's two outputs: a table for a person and a JSON document for a machine.

The table keeps one line per measure with both sides of the ratio, so a FAIL can be read at a
glance as "we got slower" or "the baseline got faster". The JSON holds every row with its
details, the machine and the options, under a schema version a reader can check.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wan_data.tools.bench.measure import Measure

__all__ = ["SCHEMA_VERSION", "bench_document", "format_table"]

SCHEMA_VERSION = 1
_HEADERS = ("measure", "baseline", "value", "ratio", "target", "status")


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text} {unit}".rstrip()


def format_table(rows: Sequence[Measure]) -> str:
    """measure | baseline | value | ratio | target | PASS/FAIL, then the notes of rows that
    have one (why a row was skipped, at which size it was measured)."""
    lines = [tuple(_HEADERS)]
    for row in rows:
        spec = row.spec
        target = "-" if spec.target is None else f"{spec.direction} {spec.target:g}"
        lines.append(
            (
                spec.name,
                _number(row.baseline, spec.unit),
                _number(row.value, spec.unit),
                "-" if row.ratio is None else f"{row.ratio:.3f}",
                target,
                row.status,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(_HEADERS))]
    right = {1, 2, 3}
    out = []
    for j, line in enumerate(lines):
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        out.append("  ".join(cells).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    notes = [f"  {row.spec.name}: {row.note}" for row in rows if row.note]
    if notes:
        out += ["", "notes:", *notes]
    return "\n".join(out)


def bench_document(
    rows: Sequence[Measure], *, machine: dict[str, Any], quick: bool, seconds: float
) -> dict[str, Any]:
    """The JSON document: schema, options, machine, totals and every measure."""
    counts = {
        s: sum(r.status == s for r in rows) for s in ("PASS", "FAIL", "INFO", "SKIP", "ERROR")
    }
    return {
        "benchmark": "wan-data bench",
        "schema_version": SCHEMA_VERSION,
        "quick": quick,
        "seconds": round(seconds, 2),
        "machine": machine,
        "summary": counts,
        "measures": [r.as_dict() for r in rows],
    }
