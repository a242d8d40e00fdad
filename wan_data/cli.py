"""The ``wan-data`` command line.

Subcommands:
    demo    make a small synthetic dataset (with broken files), stream one epoch of pixel
            batches through ``DataLoader(num_workers=2)`` and print the report.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="wan-data",
        description="A crash-proof data pipeline for Wan 2.1 / 2.2 video diffusion training.",
    )
    parser.add_argument("--version", action="version", version=f"wan_data {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="run the pipeline on a generated dataset with broken files and print the report",
        description="Generate a small synthetic dataset (videos of several shapes and frame "
        "rates plus broken files), stream one epoch of pixel batches through "
        "DataLoader(num_workers=2) and print what was produced and what was skipped.",
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the dataset (default: a temporary folder)",
    )
    demo.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    demo.add_argument("--videos", type=int, default=8, help="good videos to generate")
    demo.add_argument("--batch-size", type=int, default=2)
    demo.add_argument("--json", type=Path, default=None, help="also write the report here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else 10
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "demo":
        return _demo(args, sys.stdout)
    parser.error(f"unknown command {args.command!r}")
    return 2


def _demo(args: argparse.Namespace, out: TextIO) -> int:
    import torch

    from .dataset import WanVideoDataset
    from .synthetic import make_synthetic_dataset

    # The skips are the point of the demo and are printed below; one log line each is noise.
    if args.verbose == 0:
        logging.getLogger("wan_data").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="wan_data_demo_") as tmp:
        root = args.out if args.out is not None else Path(tmp) / "dataset"
        started = time.perf_counter()
        files = make_synthetic_dataset(root, num_videos=args.videos)
        good = sum(f.good for f in files)
        out.write(f"dataset: {root} ({good} videos, {len(files) - good} broken files)\n")
        ds = WanVideoDataset(
            root, frames=[17, 33], fps=16, resolution=(128, 128), batch_size=args.batch_size, seed=0
        )
        out.write(f"{ds}\n\n")
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=args.workers)
        for i, batch in enumerate(loader):
            names = ", ".join(Path(p).name for p in batch["paths"])
            out.write(
                f"batch {i}: pixels {tuple(batch['pixels'].shape)} "
                f"[{batch['pixels'].min():.2f}, {batch['pixels'].max():.2f}]  {names}\n"
            )
        report = ds.report()
        out.write(f"\n{format_report(report)}\n")
        out.write(f"done in {time.perf_counter() - started:.1f} s\n")
        if args.json is not None:
            args.json.write_text(json.dumps(report, indent=2))
            out.write(f"report written to {args.json}\n")
    return 0


def format_report(report: dict[str, Any]) -> str:
    """A human-readable table of a ``WanVideoDataset.report()``."""
    lines = ["stage      in    out  failed  seconds"]
    for name, s in report["stages"].items():
        lines.append(f"{name:<9}{s['in']:>4}{s['out']:>7}{s['failed']:>8}{s['seconds']:>9.2f}")
    lines.append(f"batches: {report['batches']}  samples: {report['samples']}")
    skipped = report["skipped"]
    lines.append(f"skipped: {len(skipped)}")
    for rec in skipped:
        lines.append(f"  {rec['path']}  [{rec['stage']}] {rec['reason']} ({rec['error_type']})")
    return "\n".join(lines)
