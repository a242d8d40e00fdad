"""The examples' data: the folder given on the command line, or a small generated one.

``python examples/example_data.py OUT`` writes the generated dataset into ``OUT``:

- ``videos/``: 7 clips of 2.5 s with captions, 96x64, 64x96 and 64x64 (three buckets at
  ``resolution=(64, 64)``), at 16 and 24 fps;
- ``short/videos/``: 3 clips of 1.25 s (long enough for 17 frames, dropped by a 2 s filter);
- ``broken/``: 4 files no decoder opens (empty, random bytes, text, a cut mp4).
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import sys
import tempfile
from pathlib import Path

from wan_data.tools.synthetic import make_synthetic_dataset

SIZES = ((96, 64), (64, 96), (64, 64))

# What every example passes for the synthetic clips: 17 frames at 16 fps, 64x64 pixels.
TINY = {"frames": [17], "fps": 16, "resolution": (64, 64)}


def make_example_data(root: str | Path) -> Path:
    """Write the examples' dataset into ``root`` (see the module docstring); returns it."""
    root = Path(root)
    make_synthetic_dataset(root, num_videos=7, seconds=2.5, sizes=SIZES, fps_choices=(16.0, 24.0))
    make_synthetic_dataset(
        root / "short", num_videos=3, seconds=1.25, sizes=SIZES, broken=False, seed=1
    )
    return root


def data_root(description: str) -> Path:
    """The folder named on the command line, or the generated dataset in a temporary folder
    (removed at exit)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "data",
        nargs="?",
        type=Path,
        help="a folder of videos (default: a small generated dataset in a temporary folder)",
    )
    args = parser.parse_args()
    if args.data is not None:
        return Path(args.data)
    folder = Path(tempfile.mkdtemp(prefix="wan_data_example_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    print(f"generating a small dataset in {folder}")
    return make_example_data(folder)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/example_data.py OUT")
    print(make_example_data(sys.argv[1]))
