"""(c) A pipeline built by hand from the stages, without the dataset's plan.

    python examples/hand_built_pipeline.py [DATA]

Collect → Probe → Filter → Bucket → Decode → Map → BatchClips, chained by ``compose`` with
one ``StageContext`` (policy, counters, breakers, epoch). The stage options come from the
same ``DatasetConfig`` the dataset would use. What it gives up: there is no plan, so batches
come in walk order, a bucket's last batch may be partial, a failed clip shrinks its batch
instead of being replaced, ranks get no equal counts and there is no resume.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from example_data import TINY, data_root

from wan_data.config import DatasetConfig
from wan_data.items import Clip, Probed
from wan_data.planning.construction import decode_options, probe_limits
from wan_data.sources.concepts import concepts_from
from wan_data.stages import (
    BatchClips,
    Bucket,
    Collect,
    Decode,
    Filter,
    Map,
    Probe,
    StageContext,
    compose,
)


def long_enough(item: Probed) -> bool:
    return item.metadata.duration >= 2.0


def grayscale(clip: Clip) -> Clip:
    gray = clip.pixels.float().mean(dim=1, keepdim=True).round().to(torch.uint8)
    return dataclasses.replace(clip, pixels=gray.expand_as(clip.pixels).contiguous())


def main(root: Path) -> None:
    config = DatasetConfig.build(**TINY, seed=0)
    decode = decode_options(config, config.shape.bucket_set())  # frames, fps, buckets, crop...
    stages = [
        Collect(),
        Probe(probe_limits(config), threads=2),
        Filter(long_enough, name="min_duration", why="shorter than 2 s"),
        Bucket(decode),
        Decode(decode),
        Map(grayscale, name="grayscale"),
        BatchClips(2),
    ]
    context = StageContext(epoch=0)  # the epoch picks windows, crops and captions
    sizes = []
    for i, batch in enumerate(compose(concepts_from(root), stages, context)):
        names = [str(Path(p).relative_to(root)) for p in batch["paths"]]
        sizes.append(len(names))
        print(f"batch {i}: {len(names)} clip(s) of bucket {batch['buckets'][0]} {names}")
    partial = sum(n < 2 for n in sizes)
    print(f"{len(sizes)} batch(es), {partial} partial (no plan fills a bucket's last one)")

    for stage in stages[:-1]:  # the counters, in pipeline order (BatchClips counts batches)
        s = context.metrics.stage(stage.name)
        print(f"{stage.name:>12}: in {s.items_in:2d} out {s.items_out:2d} failed {s.failed}")
    for skip in context.metrics.skipped:
        print(f"skipped {Path(skip['path']).relative_to(root)} [{skip['stage']}] {skip['reason']}")


if __name__ == "__main__":
    main(data_root(__doc__.splitlines()[0]))
