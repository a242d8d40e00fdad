"""The ``wan-data`` command line.

Subcommands:
    demo    the main job on a synthetic dataset with broken files and a tiny local VAE: scan,
            cache pass (``prepare``), one epoch through ``DataLoader(num_workers=2)``, report.
    cache   fill (and optionally verify / prune) the latent cache of a dataset.
    scan    a dataset doctor: what training would make of every file (good / bad and why,
            buckets, summaries), as a table, JSON and pictures (docs/scan.md).
    import  read a musubi-tuner dataset TOML or a OneTrainer concepts JSON and print the
            equivalent Python and command line, and what has no equivalent (docs/migrating.md).
    bench   the performance targets of docs/performance.md as ratios measured in one run: a
            table (measure, baseline, value, ratio, target, PASS/FAIL) and JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from wan_data.config.cli import add_config_arguments
from wan_data.tools.bench_command import add_bench_parser, run_bench_command
from wan_data.tools.import_command import add_import_parser, run_import

__all__ = ["format_report", "main"]

# Small enough that the cache pass on a CPU takes seconds, large enough to make several
# buckets: the synthetic videos are 2.5 s, so at 16 fps every one fills 33 frames.
DEMO_FRAMES = (17, 33)
DEMO_FPS = 16.0
DEMO_RESOLUTION = (128, 128)
# Pipeline order, for the report table; stages it does not know follow in their own order.
_STAGE_ORDER = (
    "collect",
    "ledger",
    "probe",
    "bucket",
    "decode",
    "encode",
    "cache_write",
    "cache",
    "batch",
)


def _build_parser() -> argparse.ArgumentParser:
    from wan_data import __version__

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
        help="the main job on a generated dataset with broken files: scan, cache, train, report",
        description="Generate a small synthetic dataset (videos of several shapes and frame "
        "rates plus broken files) and a tiny random Wan2.1 VAE, then do what a training job "
        "does: scan the dataset, encode every clip into the latent cache (ds.prepare()), "
        "stream one epoch of latent batches through DataLoader(num_workers=2) and print the "
        "report of what was produced and what was skipped. Nothing is downloaded.",
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=None,
        help="keep the dataset, VAE and cache in this folder (default: a temporary folder); "
        "a second run reuses the cache",
    )
    demo.add_argument(
        "--workers",
        type=int,
        default=2,
        help="DataLoader workers for the cache pass and the epoch (default: %(default)s)",
    )
    demo.add_argument(
        "--videos", type=int, default=8, help="good videos to generate (default: %(default)s)"
    )
    demo.add_argument(
        "--batch-size", type=int, default=2, help="samples per batch (default: %(default)s)"
    )
    demo.add_argument(
        "--pixels",
        action="store_true",
        help="no VAE and no cache: stream decoded pixel batches instead of latents",
    )
    demo.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write the report here (with the scan totals and the prepare summary)",
    )

    cache = sub.add_parser(
        "cache",
        help="encode a dataset's clips with a Wan VAE into the latent cache (resumable)",
        description="Decode every planned clip (in worker processes), encode it with the VAE in "
        "this process and write it to the cache; present entries are skipped, so an interrupted "
        "run is simply rerun. --vae and --cache-dir are required; use the same options as the "
        "WanVideoDataset that will read the cache. Exit status 2 for a bad configuration.",
    )
    cache.add_argument("roots", nargs="+", help="folders or .jsonl/.csv metadata files")
    add_config_arguments(cache, "cache")
    run = cache.add_argument_group("cache pass")
    run.add_argument(
        "--workers", type=int, default=2, help="decoding worker processes (default: %(default)s)"
    )
    run.add_argument(
        "--verify",
        action="store_true",
        help="afterwards, read and check every entry of the cache (checksum, finite values) and "
        "quarantine the bad ones",
    )
    run.add_argument(
        "--prune", action="store_true", help="delete entries no clip of this dataset uses (orphans)"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar (on stderr)")
    run.add_argument("--json", type=Path, default=None, help="also write the summary as JSON here")
    _add_scan_parser(sub)
    add_import_parser(sub)
    add_bench_parser(sub)
    return parser


def _add_scan_parser(sub: Any) -> None:
    scan = sub.add_parser(
        "scan",
        help="check a dataset before training: good and bad files, buckets, summaries, plots",
        description="Collect, probe and bucket every file exactly as WanVideoDataset would with "
        "the same options, and report what training would do with each: good (its bucket) or "
        "bad (the reason it is skipped). Exit status 0 even when bad files exist; 2 for a bad "
        "configuration (every problem listed on stderr); 1 for a fault of the environment, such "
        "as missing FFmpeg libraries (docs/scan.md).",
    )
    scan.add_argument("roots", nargs="+", help="folders or .jsonl/.csv metadata files")
    add_config_arguments(scan, "scan")
    scan.add_argument(
        "--json", type=Path, default=None, help="write the full report, file by file, as JSON here"
    )
    scan.add_argument(
        "--plots",
        type=Path,
        default=None,
        help="write buckets.png (samples per bucket) and contact_sheet.png (samples of each "
        "bucket, decoded as training decodes them) into this folder",
    )
    scan.add_argument(
        "--max-rows",
        type=_at_least(1),
        default=20,
        help="rows per list in the printed table; the JSON has all (default: %(default)s)",
    )
    scan.add_argument(
        "--sheet-buckets",
        type=_at_least(1),
        default=12,
        help="contact sheet: rows, one bucket each (default: %(default)s)",
    )
    scan.add_argument(
        "--sheet-samples",
        type=_at_least(1),
        default=3,
        help="contact sheet: samples per row (default: %(default)s)",
    )
    scan.add_argument(
        "--sheet-frames",
        type=_at_least(1),
        default=4,
        help="contact sheet: frames per sample (default: %(default)s)",
    )
    scan.add_argument(
        "--thumb-height",
        type=_at_least(8),
        default=64,
        help="contact sheet: thumbnail height in pixels (default: %(default)s)",
    )
    scan.add_argument(
        "--sheet-augment",
        default="",
        metavar="SPEC",
        help="run augmentations on the contact sheet's clips and label each thumbnail, e.g. "
        "'crop_jitter,flip,color_jitter' or 'crop_jitter:min_scale=0.9,flip:p=1' "
        "(docs/composing.md, Augmentations)",
    )
    scan.add_argument("--no-progress", action="store_true", help="no progress bar (on stderr)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wan-data`` with ``argv`` (default: the process's arguments); returns the exit status.

    Without a subcommand it prints the help and returns 0. A malformed command line raises
    ``SystemExit(2)`` (argparse); a subcommand returns 2 for a bad configuration or input file,
    and ``scan`` returns 1 when a fatal error stops the scan."""
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
    if args.command == "import":
        return run_import(args, sys.stdout, sys.stderr)
    if args.command == "bench":
        return run_bench_command(args, sys.stdout, sys.stderr)
    parser.error(f"unknown command {args.command!r}")
    return 2


def _demo(args: argparse.Namespace, out: TextIO) -> int:
    """``wan-data demo``: the whole job (scan, cache pass, one epoch, report) on a CPU.

    Everything it needs is made on the spot (videos with torchcodec's encoder, a tiny random
    VAE with diffusers), so it runs on a fresh machine without downloads; the broken files are
    there to show that they are found by the scan, skipped by training and listed in the report.
    """
    from wan_data.tools.synthetic import make_tiny_wan_vae

    log = logging.getLogger("wan_data")
    level = log.level
    # The skips are the point of the demo and are printed below; one log line each is noise.
    if args.verbose == 0:
        log.setLevel(logging.ERROR)
    # Bars go to stderr; in a log file or a captured test they would be a wall of \r lines.
    progress = sys.stderr.isatty()
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="wan_data_demo_") as tmp:
            work = args.out if args.out is not None else Path(tmp)
            root = work / "dataset"
            good, broken, reused = _demo_dataset_files(root, args.videos)
            vae = None
            if not args.pixels:
                vae = work / "tiny_vae"
                if not (vae / "config.json").is_file():
                    make_tiny_wan_vae(vae, variant="wan2.1")
            out.write(
                f"wan-data demo in {work}: {good} videos, {broken} broken files"
                + (" (reused)" if reused else "")
                + ("" if vae is None else ", a tiny random Wan2.1 VAE")
                + "\n\n"
            )
            scan = _demo_scan(root, progress, out)
            ds, summary = _demo_dataset(args, root, vae, work / "latent_cache", progress, out)
            _demo_epoch(ds, args.workers, out)
            report = ds.report()
            out.write("\n== 4. report: ds.report(), merged over every worker\n")
            out.write(f"{format_report(report, relative_to=root)}\n")
            out.write(f"\ndone in {time.perf_counter() - started:.1f} s\n")
            if args.json is not None:
                report["scan"] = scan
                if summary is not None:
                    report["prepare"] = summary
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
                out.write(f"report written to {args.json}\n")
    finally:
        log.setLevel(level)
    return 0


def _demo_dataset_files(root: Path, videos: int) -> tuple[int, int, bool]:
    """Write the synthetic dataset unless ``root`` holds the one a previous run wrote.

    Rewriting identical files would still change their mtimes, which are part of every cache
    key: a second ``--out`` run would encode everything again instead of showing that the
    cache pass resumes. Returns (good videos, broken files, reused).
    """
    from wan_data.tools.synthetic import make_synthetic_dataset

    marker = root / ".wan_data_demo.json"
    try:
        previous = json.loads(marker.read_text())
        if previous["videos"] == videos:
            return int(previous["good"]), int(previous["broken"]), True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    files = make_synthetic_dataset(root, num_videos=videos)
    good = sum(f.good for f in files)
    marker.write_text(
        json.dumps({"videos": videos, "good": good, "broken": len(files) - good}) + "\n"
    )
    return good, len(files) - good, False


def _demo_scan(root: Path, progress: bool, out: TextIO) -> dict[str, Any]:
    """Step 1: the scan a user runs before training; returns its totals for the JSON."""
    from wan_data.tools.scan import format_scan_table, scan_dataset

    out.write("== 1. scan: what training will make of every file (wan-data scan)\n")
    report = scan_dataset(
        root, frames=DEMO_FRAMES, fps=DEMO_FPS, resolution=DEMO_RESOLUTION, progress=progress
    )
    # The min/median/max statistics are the part a reader of the demo can skip; the verdicts,
    # the buckets and the bad files are what the demo is about.
    table = _drop_section(format_scan_table(report, max_rows=4), "good files")
    out.write(table + "\n\n")
    totals: dict[str, Any] = report.totals()
    return totals


def _drop_section(table: str, title: str) -> str:
    """``table`` without the blank-line-separated section that starts with ``title``."""
    sections = table.split("\n\n")
    return "\n\n".join(s for s in sections if not s.startswith(title))


def _demo_dataset(
    args: argparse.Namespace,
    root: Path,
    vae: Path | None,
    cache_dir: Path,
    progress: bool,
    out: TextIO,
) -> tuple[Any, dict[str, Any] | None]:
    """Step 2: the dataset, and with a VAE the cache pass that encodes every clip once."""

    from wan_data.dataset import WanVideoDataset

    options: dict[str, Any] = {
        "frames": DEMO_FRAMES,
        "fps": DEMO_FPS,
        "resolution": DEMO_RESOLUTION,
        "batch_size": args.batch_size,
        "seed": 0,
    }
    if vae is None:
        out.write("== 2. dataset (--pixels: no VAE, batches carry decoded pixels)\n")
        ds = WanVideoDataset(root, **options)
        out.write(f"{ds}\n\n")
        return ds, None
    out.write("== 2. prepare: encode every clip once into the latent cache (ds.prepare())\n")
    ds = WanVideoDataset(root, vae=vae, cache_dir=cache_dir, device="cpu", **options)
    out.write(f"{ds}\n")
    # prepare() leaves the decoding workers their cores (see prepare_cache).
    summary: dict[str, Any] = ds.prepare(num_workers=args.workers, progress=progress)
    vae_threads = summary["vae_threads"]
    out.write(
        f"cache pass: {summary['encoded']} clip(s) encoded, {summary['already_cached']} already "
        f"cached, {summary['skipped']} skipped, {summary['seconds']:.1f} s "
        f"({args.workers} decoding worker(s), VAE on cpu with {vae_threads} thread(s))\n\n"
    )
    return ds, summary


def _demo_epoch(ds: Any, workers: int, out: TextIO, max_lines: int = 8) -> None:
    """Step 3: one epoch through a DataLoader, as a training loop would consume it."""
    key = "pixels" if ds.cache_spec is None else "latents"
    out.write(f"== 3. one epoch: ds.loader(num_workers={workers}), batches of {key}\n")
    shapes: Counter[tuple[int, ...]] = Counter()
    batches = samples = 0
    for i, batch in enumerate(ds.loader(num_workers=workers)):
        tensor = batch[key]
        shapes[tuple(tensor.shape)] += 1
        batches += 1
        samples += len(batch["paths"])
        if i < max_lines:
            names = ", ".join(Path(p).name for p in batch["paths"])
            out.write(f"batch {i}: {key} {tuple(tensor.shape)} {_dtype(tensor)}  {names}\n")
    if batches > max_lines:
        out.write(f"... and {batches - max_lines} more batch(es)\n")
    out.write(
        f"epoch 0: {batches} batch(es), {samples} sample(s), {len(shapes)} {key} shape(s) "
        "(one per bucket: a batch never mixes buckets)\n"
    )


def _dtype(tensor: Any) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def _cache(args: argparse.Namespace, out: TextIO) -> int:
    from wan_data.config.cli import config_from_args
    from wan_data.dataset import WanVideoDataset
    from wan_data.errors import ConfigError
    from wan_data.latents.store import LatentCache

    try:
        config = config_from_args(args, "cache")
        if not config.latents.enabled:
            raise ConfigError(
                "--vae and --cache-dir are required: the cache pass encodes clips into the cache"
            )
        ds = WanVideoDataset(args.roots, config)
    except ConfigError as exc:
        sys.stderr.write(f"wan-data cache: {exc}\n")
        return 2
    out.write(f"{ds}\n")
    summary: dict[str, Any] = ds.prepare(num_workers=args.workers, progress=not args.no_progress)
    cache = LatentCache(str(ds.cache_dir))
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
        f"{summary['cache']['cache_size_mb']:.1f} MB in {ds.cache_dir}\n"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2, default=str))
    return 0


def _scan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``wan-data scan``: bad files are findings (exit 0), a bad configuration is not (exit 2)."""
    from wan_data.config.cli import config_from_args
    from wan_data.errors import ConfigError, FatalError
    from wan_data.stages.augment import augmentations_from_spec
    from wan_data.tools.plots import bucket_histogram, contact_sheet
    from wan_data.tools.scan import format_scan_table, scan_dataset

    log = logging.getLogger("wan_data")
    level = log.level
    # Every skip is in the table; a warning line per bad file on top of it is noise.
    if args.verbose == 0:
        log.setLevel(logging.ERROR)
    try:
        try:
            config = config_from_args(args, "scan")
            augmentations = augmentations_from_spec(args.sheet_augment)
        except ConfigError as exc:
            err.write(f"wan-data scan: {exc}\n")
            return 2
        try:
            report = scan_dataset(args.roots, config, progress=not args.no_progress)
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
                augmentations=augmentations,
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


def _at_least(low: int) -> Any:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}, got {value}")
        return value

    return parse


def format_report(report: dict[str, Any], *, relative_to: str | Path | None = None) -> str:
    """A human-readable table of a ``WanVideoDataset.report()``.

    Stages are listed in pipeline order so a reader can follow where items were lost; skipped
    files show path, stage, reason and error type (the JSON has the full message). Paths under
    ``relative_to`` are shortened to be relative to it: a temp folder prefix repeated on every
    line hides the file names.
    """
    stages: dict[str, dict[str, Any]] = report.get("stages", {})
    order = [name for name in _STAGE_ORDER if name in stages]
    order += [name for name in stages if name not in order]
    lines = [f"{'stage':<12}{'in':>5}{'out':>6}{'failed':>8}{'seconds':>9}"]
    for name in order:
        s = stages[name]
        lines.append(
            f"{name:<12}{s['in']:>5}{s['out']:>6}{s['failed']:>8}{float(s['seconds']):>9.2f}"
        )
    lines.append(f"batches: {report['batches']}  samples: {report['samples']}")
    skipped = report["skipped"]
    lines.append(f"skipped: {len(skipped)}")
    base = None if relative_to is None else str(Path(relative_to).absolute()) + os.sep
    for rec in skipped:
        path = str(rec["path"])
        if base is not None and path.startswith(base):
            path = path[len(base) :]
        lines.append(f"  {path}  [{rec['stage']}] {rec['reason']} ({rec['error_type']})")
    cache = report.get("cache")
    if cache:
        lines.append(
            f"cache: {cache['total_items']} entries, {cache['cache_size_mb']:.2f} MB; "
            f"{cache['hits']} hit(s), {cache['misses']} miss(es), "
            f"{cache['corruption_count']} corrupt, {cache['quarantined']} quarantined"
        )
    return "\n".join(lines)
