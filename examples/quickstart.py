"""(a) The dataset in one line, and the same options as a typed config.

    python examples/quickstart.py [DATA]

On your own folder, ``WanVideoDataset("data/", preset="wan2.1", batch_size=2)`` is all it
takes (81 frames at 832x480 / 1280x720); the generated clips are short and small, so the
example also passes ``TINY`` (``frames=[17], fps=16, resolution=(64, 64)``: keywords win
over the preset).
"""

from __future__ import annotations

from pathlib import Path

from example_data import TINY, data_root

from wan_data import WanVideoDataset
from wan_data.config import DatasetConfig


def main(root: Path) -> None:
    # The one-liner: the keywords are DatasetConfig's fields, by name.
    ds = WanVideoDataset(root, preset="wan2.1", batch_size=2, **TINY)
    print(f"{len(ds.sources)} source(s), {len(ds.samples)} sample(s), {len(ds)} batch(es)")
    for batch in ds.loader(num_workers=2):
        files = [str(Path(p).relative_to(root)) for p in batch["paths"]]
        shape = tuple(batch["pixels"].shape)
        print(f"batch {batch['position']}: pixels {shape} bucket {batch['buckets'][0]} {files}")
    for skip in ds.report()["skipped"]:
        print(f"skipped {Path(skip['path']).name} [{skip['stage']}] {skip['reason']}")

    # The config form: the same options, typed, grouped by concern, checked at once.
    config = DatasetConfig.build(preset="wan2.1", batch_size=2, **TINY)
    print(f"config.shape.frames: {config.shape.frames}, config.shape.fps: {config.shape.fps}")
    print(f"config.batching: {config.batching}")
    same = WanVideoDataset(root, config)
    keys, same_keys = [s.key for s in ds.samples], [s.key for s in same.samples]
    print(f"the config gives the same samples: {keys == same_keys}")

    # replace() returns a new, checked config; the original is frozen.
    smaller = config.replace(batch_size=1, resolution=(48, 48))
    before = config.flat()
    changed = {name: value for name, value in smaller.flat().items() if before[name] != value}
    print(f"replace() changed: {changed}")


if __name__ == "__main__":
    main(data_root(__doc__.splitlines()[0]))
