"""(e) The command line: flags generated from the config, and a config printed as a command.

    python examples/cli_flags.py [DATA]

Every ``DatasetConfig`` field a subcommand takes is a flag of it (``wan-data cache --help``
lists them by group); ``command_line`` writes a config back as the command that rebuilds it,
every non-default option included. The dataset uses it for the hint of a missing cache
entry, so the command it suggests fills exactly the cache that dataset reads.
"""

from __future__ import annotations

import argparse
import shlex
import tempfile
from pathlib import Path

from example_data import TINY, data_root

from wan_data import CacheIncompleteError, WanVideoDataset
from wan_data.config import DatasetConfig
from wan_data.config.cli import add_config_arguments, command_line, config_from_args
from wan_data.tools.synthetic import make_tiny_wan_vae


def main(root: Path) -> None:
    # The flags of `wan-data cache`, generated from the config's fields.
    parser = argparse.ArgumentParser(prog="wan-data cache")
    parser.add_argument("roots", nargs="+")
    add_config_arguments(parser, "cache")
    groups = [line[:-1] for line in parser.format_help().splitlines() if line.endswith(" options:")]
    print(f"wan-data cache option groups: {', '.join(groups)}")

    with tempfile.TemporaryDirectory() as tmp:
        vae = make_tiny_wan_vae(Path(tmp) / "vae")  # a tiny random Wan2.1 VAE, no download
        config = DatasetConfig.build(
            preset="wan2.1", batch_size=2, vae=vae, cache_dir=Path(tmp) / "cache", **TINY
        )
        line = command_line(config, "cache", [str(root)])
        print(f"command: {line}")
        rebuilt = config_from_args(parser.parse_args(shlex.split(line)[2:]), "cache")
        same = rebuilt.flat() | {"preset": None} == config.flat() | {"preset": None}
        print(f"the command rebuilds the config: {same}")  # (the preset's values written out)

        # An empty cache: the first read names the command that fills it.
        ds = WanVideoDataset(root, config)
        try:
            next(iter(ds.loader(num_workers=0)))
        except CacheIncompleteError as exc:
            print(f"hint names the same command: {f'`{line}`' in str(exc)}")
            print(str(exc))


if __name__ == "__main__":
    main(data_root(__doc__.splitlines()[0]))
