"""``wan-data import``: a musubi-tuner, OneTrainer or diffusion-pipe dataset config as ours.

The subcommand's parser and its output (the Python that builds the same dataset, the command
line when flags can say it, every setting not carried over); the mapping itself is
:mod:`wan_data.config.importing`. Kept out of ``cli.py`` so each subcommand reads alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

__all__ = ["add_import_parser", "format_import", "run_import"]


def add_import_parser(sub: Any) -> None:
    """Add ``wan-data import`` and its options to the ``add_subparsers()`` object ``sub``."""
    from wan_data.config.importing import IMPORTERS

    command = sub.add_parser(
        "import",
        help="read a musubi-tuner or diffusion-pipe dataset TOML or a OneTrainer concepts JSON "
        "into our options",
        description="Map every option of a musubi-tuner dataset config ([general] + "
        "[[datasets]]), a OneTrainer concepts file or a diffusion-pipe dataset config "
        "([[directory]]; or its training config, whose `dataset` names it) that has an "
        "equivalent, and print the "
        "Python that builds the same dataset, the wan-data command (when the result can be "
        "said with flags) and every setting that was not carried over, with why "
        "(docs/migrating.md). Exit status 0; 2 for a file that cannot be read or is malformed.",
    )
    command.add_argument("format", choices=tuple(IMPORTERS), help="whose config the file is")
    command.add_argument("file", type=Path, help="the dataset TOML / concepts JSON")
    command.add_argument(
        "--vae",
        default=None,
        help="musubi: the Wan VAE to cache latents with (musubi names it on its caching "
        "command line); with it, cache_directory becomes --cache-dir",
    )
    command.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="write the result as JSON to PATH, or to stdout instead of the text when no PATH",
    )


def run_import(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``wan-data import``: the imported config as Python, a command line and a list of what
    did not map; a malformed file exits 2 with every problem of it."""
    from wan_data.config.importing import import_config
    from wan_data.errors import ConfigError

    options = {"vae": args.vae} if args.vae is not None else {}
    if options and args.format != "musubi":
        err.write("wan-data import: --vae applies to musubi configs only\n")
        return 2
    try:
        result = import_config(args.format, args.file, **options)
    except ConfigError as exc:
        err.write(f"wan-data import: {exc}\n")
        return 2
    if args.json == "-":
        out.write(json.dumps(result.as_dict(), indent=2) + "\n")
        return 0
    out.write(format_import(result))
    if args.json is not None:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
        out.write(f"\nresult written to {path}\n")
    return 0


def format_import(result: Any) -> str:
    """The text of ``wan-data import``: Python, command line, unmapped settings, notes."""
    lines = [f"# {result.source} ({result.peer}) as a WanVideoDataset:", "", result.python_code()]
    command = result.command_line()
    if command is not None:
        lines += ["# the same on the command line:", command, ""]
    else:
        lines.append("# no wan-data command says the same:")
        lines += [f"#   - {p}" for p in result.command_line_problems()]
        lines.append("")
    if result.unmapped:
        lines.append(f"# not carried over ({len(result.unmapped)}):")
        lines += [f"#   - {u}" for u in result.unmapped]
    else:
        lines.append("# every setting was carried over")
    if result.notes:
        lines += ["", "# notes:"]
        lines += [f"#   - {n}" for n in result.notes]
    return "\n".join(lines) + "\n"
