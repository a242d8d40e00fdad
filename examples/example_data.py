"""The examples' data: the folder given on the command line, or a small generated one.

``python examples/example_data.py OUT [--vae VAE_DIR]`` writes the generated dataset into ``OUT``
(and a tiny random Wan 2.1 VAE into ``VAE_DIR``):

- ``videos/``: 7 clips of 2.5 s with captions, 96x64, 64x96 and 64x64 (three buckets at
  ``resolution=(64, 64)``), at 16 and 24 fps;
- ``short/videos/``: 3 clips of 1.25 s at 24, 25 and 30 fps (long enough for 17 frames, dropped
  by a 2 s filter);
- ``broken/``: 4 files no decoder opens (empty, random bytes, text, a cut mp4).
"""

from __future__ import annotations

import argparse
import atexit
import shutil
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


def main() -> None:
    """``python examples/example_data.py OUT [--vae VAE_DIR]``: the dataset, and optionally a
    tiny random Wan 2.1 VAE (what docs/quickstart.md trains with; nothing is downloaded)."""
    parser = argparse.ArgumentParser(description="Write the examples' dataset (and a tiny VAE).")
    parser.add_argument("out", type=Path, help="the folder to write the dataset into")
    parser.add_argument("--vae", type=Path, help="also write a tiny random Wan 2.1 VAE here")
    args = parser.parse_args()
    print(make_example_data(args.out))
    if args.vae is not None:
        from wan_data.tools.synthetic import make_tiny_wan_vae

        print(make_tiny_wan_vae(args.vae))


if __name__ == "__main__":
    main()
