"""The ``wan-data`` command line.

Subcommands:
    demo    make a small synthetic dataset (with broken files), stream one epoch of pixel
            batches through ``DataLoader(num_workers=2)`` and print the report.
    cache   fill (and optionally verify / prune) the latent cache of a dataset.
    scan    a dataset doctor: what training would make of every file (good / bad and why,
            buckets, summaries), as a table, JSON and pictures (docs/scan.md).
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

    cache = sub.add_parser(
        "cache",
        help="encode a dataset's clips with a Wan VAE into the latent cache (resumable)",
        description="Decode every planned clip (in worker processes), encode it with the VAE in "
        "this process and write it to the cache; present entries are skipped, so an interrupted "
        "run is simply rerun. Use the same options as the WanVideoDataset that will read it.",
    )
    cache.add_argument("roots", nargs="+", help="folders or .jsonl/.csv metadata files")
    cache.add_argument("--vae", required=True, help="local VAE folder or Wan Diffusers repo")
    cache.add_argument("--cache-dir", required=True, type=Path)
    cache.add_argument(
        "--preset", default=None, choices=["wan2.1", "wan2.2-a14b", "wan2.2-ti2v-5b"]
    )
    cache.add_argument("--frames", type=int, nargs="+", default=None)
    cache.add_argument("--fps", type=float, default=None)
    cache.add_argument("--resolution", nargs="+", default=None, help="WxH [WxH ...]")
    cache.add_argument("--batch-size", type=int, default=1)
    cache.add_argument("--seed", type=int, default=0)
    cache.add_argument(
        "--sampling", default="head", choices=["head", "random", "uniform", "chunks"]
    )
    cache.add_argument("--crop", default="center", choices=["center", "random"])
    cache.add_argument("--variations", type=int, default=1)
    cache.add_argument("--device", default=None, help="default: cuda when available")
    cache.add_argument("--vae-dtype", default="float32", choices=["float32", "bfloat16"])
    cache.add_argument("--latent-dtype", default="bfloat16", choices=["float32", "bfloat16"])
    cache.add_argument("--encode-batch-size", type=int, default=1)
    cache.add_argument("--workers", type=int, default=2, help="decoding worker processes")
    cache.add_argument("--verify", action="store_true", help="verify every entry afterwards")
    cache.add_argument(
        "--prune", action="store_true", help="delete entries no clip of this dataset uses (orphans)"
    )
    cache.add_argument("--no-progress", action="store_true")
    cache.add_argument("--json", type=Path, default=None, help="also write the summary here")
    _add_scan_parser(sub)
    return parser


def _add_scan_parser(sub: Any) -> None:
    scan = sub.add_parser(
        "scan",
        help="check a dataset before training: good and bad files, buckets, summaries, plots",
        description="Collect, probe and bucket every file exactly as WanVideoDataset would with "
        "the same options, and report what training would do with each: good (its bucket) or "
        "bad (the reason it is skipped). Exit status 0 even when bad files exist; 2 for a bad "
        "configuration.",
    )
    scan.add_argument("roots", nargs="+", help="folders or .jsonl/.csv metadata files")
    scan.add_argument("--preset", default=None, choices=["wan2.1", "wan2.2-a14b", "wan2.2-ti2v-5b"])
    scan.add_argument("--frames", type=int, nargs="+", default=None, help="4k+1 frame buckets")
    scan.add_argument(
        "--fps", default=None, help="sampling fps, or 'native' (default: the preset's, else 16)"
    )
    scan.add_argument("--resolution", nargs="+", default=None, help="WxH [WxH ...] (tiers)")
    scan.add_argument("--step", type=int, default=None, help="bucket side multiple (16 or 32)")
    scan.add_argument("--no-upscale", action="store_true", help="as WanVideoDataset(no_upscale)")
    scan.add_argument("--sampling", default="head", choices=["head", "random", "uniform", "chunks"])
    scan.add_argument("--clips-per-video", type=int, default=1)
    scan.add_argument("--crop", default="center", choices=["center", "random"])
    scan.add_argument("--seed", type=int, default=0)
    scan.add_argument("--threads", type=int, default=None, help="probe threads (default: cores)")
    scan.add_argument(
        "--metadata-cache", type=Path, default=None, help="the dataset's metadata cache file"
    )
    scan.add_argument("--json", type=Path, default=None, help="write the full report here")
    scan.add_argument(
        "--plots", type=Path, default=None, help="write buckets.png and contact_sheet.png here"
    )
    scan.add_argument(
        "--max-rows", type=_at_least(1), default=20, help="rows per list in the table"
    )
    scan.add_argument("--sheet-buckets", type=_at_least(1), default=12, help="contact sheet rows")
    scan.add_argument("--sheet-samples", type=_at_least(1), default=3, help="samples per row")
    scan.add_argument("--sheet-frames", type=_at_least(1), default=4, help="frames per sample")
    scan.add_argument("--thumb-height", type=_at_least(8), default=64, help="thumbnail height (px)")
    scan.add_argument("--no-progress", action="store_true")


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
    if args.command == "cache":
        return _cache(args, sys.stdout)
    if args.command == "scan":
        return _scan(args, sys.stdout, sys.stderr)
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


def _cache(args: argparse.Namespace, out: TextIO) -> int:
    import torch

    from .dataset import WanVideoDataset
    from .latent_cache import LatentCache

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    options: dict[str, Any] = {
        "batch_size": args.batch_size,
        "seed": args.seed,
        "sampling": args.sampling,
        "crop": args.crop,
        "variations": args.variations,
        "device": args.device,
        "vae_dtype": dtypes[args.vae_dtype],
        "latent_dtype": dtypes[args.latent_dtype],
        "encode_batch_size": args.encode_batch_size,
        "preset": args.preset,
    }
    if args.frames is not None:
        options["frames"] = args.frames
    if args.fps is not None:
        options["fps"] = args.fps
    if args.resolution is not None:
        options["resolution"] = [_size(text) for text in args.resolution]
    ds = WanVideoDataset(args.roots, vae=args.vae, cache_dir=args.cache_dir, **options)
    out.write(f"{ds}\n")
    summary: dict[str, Any] = ds.prepare(num_workers=args.workers, progress=not args.no_progress)
    cache = LatentCache(args.cache_dir)
    if args.verify:
        summary["verify"] = cache.verify_all()
    if args.prune:
        summary["pruned"] = cache.prune(ds.cache_keys())
    report = ds.report()
    summary["skipped_files"] = report["skipped"]
    summary["cache"] = cache.stats().as_dict()
    out.write(
        f"cache pass: {summary['encoded']} encoded, {summary['already_cached']} already cached, "
        f"{len(summary['skipped_files'])} skipped file(s), "
        f"{summary['seconds']:.1f} s\n"
    )
    for rec in report["skipped"]:
        out.write(f"  {rec['path']}  [{rec['stage']}] {rec['reason']} ({rec['error_type']})\n")
    if "verify" in summary:
        out.write(f"verify: {summary['verify']}\n")
    if "pruned" in summary:
        out.write(f"pruned: {summary['pruned']} orphan entr(y/ies)\n")
    out.write(
        f"cache: {summary['cache']['total_items']} entries, "
        f"{summary['cache']['cache_size_mb']:.1f} MB in {args.cache_dir}\n"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2, default=str))
    return 0


def _scan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``wan-data scan``: bad files are findings (exit 0), a bad configuration is not (exit 2)."""
    from .errors import ConfigError, FatalError
    from .plots import bucket_histogram, contact_sheet
    from .scan import UNSET, format_scan_table, scan_dataset

    log = logging.getLogger("wan_data")
    level = log.level
    # Every skip is in the table; a warning line per bad file on top of it is noise.
    if args.verbose == 0:
        log.setLevel(logging.ERROR)
    try:
        options: dict[str, Any] = {
            "preset": args.preset,
            "frames": args.frames,
            "step": args.step,
            "no_upscale": args.no_upscale,
            "sampling": args.sampling,
            "clips_per_video": args.clips_per_video,
            "crop": args.crop,
            "seed": args.seed,
            "threads": args.threads,
            "metadata_cache": args.metadata_cache,
            "progress": not args.no_progress,
        }
        # Unparseable values go to scan_dataset as they are: it reports them together with
        # every other configuration problem, so one run lists everything to fix.
        options["fps"] = UNSET
        if args.fps is not None:
            options["fps"] = None if args.fps.lower() in ("native", "none") else _number(args.fps)
        if args.resolution is not None:
            options["resolution"] = [_size_or_text(text) for text in args.resolution]
        try:
            report = scan_dataset(args.roots, **options)
        except ConfigError as exc:
            err.write(f"wan-data scan: {exc}\n")
            return 2
        except FatalError as exc:
            err.write(f"wan-data scan: {exc}\n")
            return 1
        out.write(format_scan_table(report, max_rows=args.max_rows) + "\n")
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
            out.write(f"report written to {args.json}\n")
        if args.plots is not None:
            histogram = args.plots / "buckets.png"
            bucket_histogram(report, histogram)
            sheet = contact_sheet(
                report,
                args.plots / "contact_sheet.png",
                per_bucket=args.sheet_samples,
                frames_per_sample=args.sheet_frames,
                thumb_height=args.thumb_height,
                max_buckets=args.sheet_buckets,
            )
            out.write(f"plots written to {histogram} and {sheet.path}\n")
            for path, why in sheet.failed:
                out.write(f"  contact sheet: {path} did not decode: {why}\n")
        bad = len(report.bad)
        out.write(
            f"{bad} bad file(s) of {len(report.rows)}: training skips them\n"
            if bad
            else f"all {len(report.rows)} file(s) are usable\n"
        )
        return 0
    finally:
        log.setLevel(level)


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _size_or_text(text: str) -> tuple[int, int] | str:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        return text
    return width, height


def _at_least(low: int) -> Any:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}, got {value}")
        return value

    return parse


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise SystemExit(f"wan-data: --resolution ({text!r}) must look like 832x480") from exc
    return width, height


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
