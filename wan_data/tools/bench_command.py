"""``wan-data bench``: the performance targets as one table (see :mod:`wan_data.tools.bench`).

The subcommand's parser and its output; the measures are in :mod:`wan_data.tools.bench`.
Kept out of ``cli.py`` so each subcommand reads alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

__all__ = ["add_bench_parser", "run_bench_command"]


def add_bench_parser(sub: Any) -> None:
    """Add ``wan-data bench`` and its options to the ``add_subparsers()`` object ``sub``."""
    bench = sub.add_parser(
        "bench",
        help="measure the performance targets (ratios against same-run baselines) as a table",
        description="Run the measures of docs/performance.md, each a ratio against a baseline "
        "measured in the same run (decode path vs decode-only and PyAV+OpenCV, workers 2/0, "
        "broken files, cached train pass vs bare reads, warm start vs os.stat, planning and "
        "worker-memory growth, text pass), print measure | baseline | value | ratio | target | "
        "PASS/FAIL and write JSON with the machine's details. Without --quick the sizes are those "
        "of the docs, 1M sources included: tens of minutes. The measures call benchmarks/*.py, "
        "so they need a source checkout; elsewhere their rows are SKIP. Exit status 0 even when "
        "a target is missed; 2 for an unknown --only name.",
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help="every measure at its smallest size (about a minute; what CI runs, to check that the "
        "JSON is well formed and nothing crashed: the ratios mean little at that size)",
    )
    bench.add_argument(
        "--json", type=Path, default=None, help="also write the rows and the machine as JSON here"
    )
    bench.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="NAME",
        help="run only these groups or measures (pixels, broken, cache, warm_start, plan, "
        "memory, text, or a measure name such as plan.growth_10x)",
    )


def run_bench_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``wan-data bench``: the table on stdout, progress on stderr, the JSON where asked."""
    from wan_data.tools.bench import format_table, run_bench

    def log(line: str) -> None:
        err.write(f"wan-data bench: {line}\n")
        err.flush()

    try:
        rows, document = run_bench(quick=args.quick, only=args.only, log=log)
    except ValueError as exc:
        err.write(f"wan-data bench: {exc}\n")
        return 2
    machine = document["machine"]
    gpu = machine["gpu"]["name"] if machine.get("gpu") else "no GPU"
    out.write(
        f"wan-data bench{' --quick' if args.quick else ''}: {machine['cpu_count']} CPU(s) "
        f"({machine['cpu_model']}), {machine['ram_gb']} GB RAM, {gpu}, "
        f"{document['seconds']:.0f} s\n"
        + (
            "(--quick: every measure at its smallest size; the ratios mean little)\n"
            if args.quick
            else ""
        )
        + "\n"
    )
    out.write(format_table(rows) + "\n")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        out.write(f"\nJSON written to {args.json}\n")
    return 0
