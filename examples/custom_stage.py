"""(d) Writing a stage: a ``MapStage`` subclass, checked with ``check_stage_contract``.

    python examples/custom_stage.py [DATA]

A per-item stage implements ``process(item)`` (or ``process_in(item, context)`` when it needs
the epoch) and returns every output of one input; the mechanism behind ``MapStage`` handles
``Failed`` pass-through, type checks, the error policy, retries, counters and the breaker.
``wan_data.testing.check_stage_contract`` checks it keeps the contract every stage keeps.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from example_data import TINY, data_root

from wan_data import WanVideoDataset
from wan_data.config import DatasetConfig
from wan_data.failures.mechanism import StageContext
from wan_data.items import Clip
from wan_data.media.sampling import sample_rng
from wan_data.planning.construction import decode_options, probe_limits
from wan_data.sources.concepts import concepts_from
from wan_data.stages import Bucket, Collect, Decode, MapStage, Probe, compose
from wan_data.testing import check_stage_contract


class RandomFlip(MapStage[Clip, Clip]):
    """Mirror a clip left-right with probability ``p``, seeded by (seed, epoch, clip key)."""

    name = "random_flip"  # counters, skips and the breaker use it
    version = 1  # bump when the logic changes: latent cache entries made by v1 stop matching
    accepts = Clip  # anything else becomes Failed(reason="invalid_item")
    varies_by_epoch = True  # it reads context.epoch: each cached variant gets its own draw

    def __init__(self, p: float = 0.5, *, seed: int = 0) -> None:
        self.p = p  # public attributes are the options: part of identity()
        self.seed = seed

    def process_in(self, item: Clip, context: StageContext) -> list[Clip]:
        # Randomness from the item and the epoch, never the global RNG: the same clip is
        # flipped the same way whichever worker decodes it.
        if sample_rng(self.seed, context.epoch, item.key, "flip").random() >= self.p:
            return [item]
        return [dataclasses.replace(item, pixels=item.pixels.flip(-1))]


class GlobalNoise(MapStage[Clip, Clip]):
    """A stage that breaks the contract: it draws from torch's global RNG."""

    name = "global_noise"
    accepts = Clip

    def process(self, item: Clip) -> list[Clip]:
        noise = torch.randint(0, 8, item.pixels.shape, dtype=torch.uint8)
        return [dataclasses.replace(item, pixels=item.pixels // 2 + noise)]


def decoded_clips(root: Path, count: int) -> list[Clip]:
    config = DatasetConfig.build(**TINY)
    decode = decode_options(config, config.shape.bucket_set())
    stages = [Collect(), Probe(probe_limits(config)), Bucket(decode), Decode(decode)]
    clips = [c for c in compose(concepts_from(root), stages) if isinstance(c, Clip)]
    return clips[:count]


def main(root: Path) -> None:
    clips = decoded_clips(root, 4)
    check_stage_contract(RandomFlip(p=0.5), clips)  # raises AssertionError naming the clause
    print(f"RandomFlip keeps the stage contract on {len(clips)} clip(s)")
    try:
        check_stage_contract(GlobalNoise(), clips)
    except AssertionError as exc:
        print(f"GlobalNoise breaks it: {str(exc).splitlines()[0]}")

    for epoch in (0, 1, 2):
        out = list(RandomFlip(p=0.5)(clips, StageContext(epoch=epoch)))
        flipped = [not torch.equal(a.pixels, b.pixels) for a, b in zip(clips, out, strict=True)]
        print(f"epoch {epoch}: flipped {flipped}")

    # The same object is a clip stage of the dataset (it pickles to the workers).
    ds = WanVideoDataset(root, clip_stages=[RandomFlip(p=0.5)], batch_size=2, **TINY)
    batches = list(ds.loader(num_workers=2))
    stats = ds.report()["stages"]["random_flip"]
    print(f"in the dataset: {len(batches)} batch(es), random_flip out {stats['out']}")


if __name__ == "__main__":
    main(data_root(__doc__.splitlines()[0]))
