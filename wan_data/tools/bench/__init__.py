"""``wan-data bench``: the performance targets of docs/performance.md in one command.

Each measure is a ratio against a baseline measured in the same run (see
:mod:`~wan_data.tools.bench.measure`); the groups call the measuring functions of
``benchmarks/*.py`` (:mod:`~wan_data.tools.bench.scripts`), so the bench and the scripts never
disagree on what a baseline is. :func:`run_bench` runs them, :func:`format_table` and the JSON
document report them.
"""

from wan_data.tools.bench.measure import BenchContext, Measure, MeasureSpec
from wan_data.tools.bench.report import SCHEMA_VERSION, format_table
from wan_data.tools.bench.runner import GROUPS, measure_names, run_bench

__all__ = [
    "GROUPS",
    "SCHEMA_VERSION",
    "BenchContext",
    "Measure",
    "MeasureSpec",
    "format_table",
    "measure_names",
    "run_bench",
]
