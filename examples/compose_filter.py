"""(b) Your stages inside the dataset: an index filter and a clip stage, plan and resume kept.

    python examples/compose_filter.py [DATA]

``index_stages`` run at construction on probed metadata (after ``Probe``, before buckets are
given), so what they drop is never planned: batches stay full, bucket-homogeneous and equal
on every rank. ``clip_stages`` run on every decoded batch member (after ``Decode``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from example_data import TINY, data_root

from wan_data import ConfigError, WanVideoDataset
from wan_data.items import Clip, Probed
from wan_data.stages import Filter, Map


# Stage functions live at module level: DataLoader workers receive the dataset, stages
# included, by pickle (spawn workers import this module to find them), and a stage's identity
# names its function by module and name.
def long_enough(item: Probed) -> bool:
    return item.metadata.duration >= 2.0


def grayscale(clip: Clip) -> Clip:
    gray = clip.pixels.float().mean(dim=1, keepdim=True).round().to(torch.uint8)
    return dataclasses.replace(clip, pixels=gray.expand_as(clip.pixels).contiguous())


MIN_DURATION = Filter(long_enough, name="min_duration", why="shorter than 2 s")
GRAYSCALE = Map(grayscale, name="grayscale")
OPTIONS = {**TINY, "batch_size": 2, "seed": 3, "sampling": "random", "crop": "random"}


def main(root: Path) -> None:
    ds = WanVideoDataset(root, index_stages=[MIN_DURATION], clip_stages=[GRAYSCALE], **OPTIONS)
    print(f"{len(ds.samples)} sample(s) planned in {len(ds)} batch(es)")
    for batch in ds.loader(num_workers=2):
        pixels = batch["pixels"]
        print(
            f"batch {batch['position']}: {len(batch['paths'])} clip(s) of bucket"
            f" {set(batch['buckets'])}, gray {bool((pixels[:, 0] == pixels[:, 1]).all())}"
        )
    report = ds.report()
    filtered = [r for r in report["skipped"] if r["stage"] == "min_duration"]
    print(f"min_duration skipped {len(filtered)} file(s), reason {filtered[0]['reason']!r}:")
    print(f"  {filtered[0]['message']}")
    print(f"grayscale stage: {report['stages']['grayscale']['out']} clip(s) out")

    # Identity: an index stage's identity (class, name, version, function by module and name)
    # is part of the sample-index fingerprint, a clip stage's part of every latent cache key.
    # Bump `version=` when a stage function's logic changes.
    print(f"identity: {MIN_DURATION.identity()}")

    # Exact resume: stop after two batches, save, resume in a new dataset (a new process).
    ds.set_epoch(1)
    reference = list(ds.loader(num_workers=0))
    ds.set_epoch(1)
    it = iter(ds.loader(num_workers=0))
    next(it), next(it)
    state = ds.state_dict()
    again = WanVideoDataset(root, index_stages=[MIN_DURATION], clip_stages=[GRAYSCALE], **OPTIONS)
    again.load_state_dict(state)
    rest = list(again.loader(num_workers=2))
    same = len(rest) == len(reference) - 2 and all(
        a["keys"] == b["keys"] and torch.equal(a["pixels"], b["pixels"])
        for a, b in zip(rest, reference[2:], strict=False)
    )
    print(f"resumed at batch {rest[0]['position']}: {len(rest)} batch(es), identical: {same}")

    # The state names its samples: a dataset without the filter (other samples) refuses it.
    plain = WanVideoDataset(root, clip_stages=[GRAYSCALE], **OPTIONS)
    try:
        plain.load_state_dict(state)
    except ConfigError as exc:
        print(f"without the filter the state is refused: {exc.problems[0]}")


if __name__ == "__main__":
    main(data_root(__doc__.splitlines()[0]))
