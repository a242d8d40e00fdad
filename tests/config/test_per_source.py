"""Per-source options, balancing, loss weights and batch sizes, through the dataset.

Concepts with different frames, resolution, caption prefix, batch size and loss weight share
one plan: every batch holds one shape and one batch size, ranks get equal batch counts, resume
is exact, and the balancing of fractional repeats and ``samples_per_epoch`` is the same for any
number of DataLoader workers.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from media import make_image, make_video

from wan_data import ConfigError, WanVideoDataset
from wan_data.sources.concepts import Concept
from wan_data.tools.scan import scan_dataset

OPTIONS: dict[str, Any] = {"frames": [5], "fps": 8, "resolution": (32, 32), "seed": 3}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("per_source")
    for i in range(5):
        make_video(root / "videos" / f"v{i}.mp4", width=32, height=32, fps=8, num_frames=12)
    for i in range(7):
        make_image(root / "stills" / f"s{i}.png", width=48, height=24)
    old = time.time() - 3600
    for path in root.rglob("*"):
        os.utime(path, (old, old))
    return root


def _concepts(data: Path, **video: Any) -> list[Concept]:
    return [
        Concept(
            data / "videos",
            name="videos",
            loss_weight=2.0,
            batch_size=2,
            options={"frames": (9,), "caption_prefix": "sks"},
            **video,
        ),
        Concept(
            data / "stills",
            name="stills",
            batch_size=3,
            options={"frames": (1,), "resolution": ((32, 16),)},
        ),
    ]


def _epoch(ds: WanVideoDataset, epoch: int) -> list[dict[str, Any]]:
    ds.set_epoch(epoch)
    return list(ds)


@pytest.mark.integration
def test_concepts_with_their_own_options_share_one_plan(data: Path) -> None:
    ds = WanVideoDataset(_concepts(data), **OPTIONS)
    batches = _epoch(ds, 0)
    assert len(batches) == len(ds)
    seen: Counter[str] = Counter()
    for batch in batches:
        (concept,) = set(batch["concepts"])  # one size per batch: here one concept per batch
        frames, width, height = (int(v) for v in batch["buckets"][0].split("x"))
        b, _, f, h, w = batch["pixels"].shape
        assert len(set(batch["buckets"])) == 1 and (f, w, h) == (frames, width, height)
        if concept == "videos":
            assert (b, f, w, h) == (2, 9, 32, 32)
            assert all(c.startswith("sks") for c in batch["captions"])
            assert torch.equal(batch["loss_weights"], torch.full((2,), 2.0))
        else:
            assert (b, f, w, h) == (3, 1, 32, 16)
            assert not any(c.startswith("sks") for c in batch["captions"])
            assert torch.equal(batch["loss_weights"], torch.ones(3))
        seen.update(batch["keys"])
    assert {k.split("/")[0] for k in seen} == {"videos", "stills"}
    # The dataset's own options apply to nothing here; each concept's frames were used.
    assert ds.bucket_report()["plan"]["batches"] == len(batches)


@pytest.mark.integration
def test_equal_rank_counts_and_exact_resume_with_per_source_sizes(data: Path) -> None:
    lengths = [
        len(WanVideoDataset(_concepts(data), **OPTIONS, rank=r, world_size=3)) for r in range(3)
    ]
    assert len(set(lengths)) == 1
    ds = WanVideoDataset(_concepts(data), **OPTIONS)
    ds.set_epoch(1)
    full = list(ds)
    ds.set_epoch(1)
    it = iter(ds)
    first = [next(it), next(it)]
    state = ds.state_dict()
    resumed = WanVideoDataset(_concepts(data), **OPTIONS)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert [b["keys"] for b in first + rest] == [b["keys"] for b in full]


def _balanced(data: Path, videos: dict[str, Any], stills: dict[str, Any]) -> list[Concept]:
    return [
        Concept(data / "videos", name="videos", batch_size=2, options={"frames": (9,)}, **videos),
        Concept(data / "stills", name="stills", batch_size=3, options={"frames": (1,)}, **stills),
    ]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("videos", "stills"),
    [
        ({"repeats": 1.5}, {"repeats": 0.5}),
        ({"samples_per_epoch": 3}, {"samples_per_epoch": 8}),
        ({"repeats": 2.5}, {"samples_per_epoch": 4}),
    ],
)
def test_equal_rank_counts_and_exact_resume_with_fractional_repeats_and_samples_per_epoch(
    data: Path, videos: dict[str, Any], stills: dict[str, Any]
) -> None:
    """Balancing draws which sources repeat, or which fill ``samples_per_epoch``, anew each
    epoch: the drawn plan is still split into equal rank counts, and a resumed run redraws
    exactly the plan of the epoch it stopped in, then of the next one."""
    lengths = [
        len(WanVideoDataset(_balanced(data, videos, stills), **OPTIONS, rank=r, world_size=3))
        for r in range(3)
    ]
    assert len(set(lengths)) == 1
    ds = WanVideoDataset(_balanced(data, videos, stills), **OPTIONS)
    epochs = [[b["keys"] for b in _epoch(ds, e)] for e in (1, 2)]
    assert epochs[0] != epochs[1]  # a new draw (and order) each epoch
    ds.set_epoch(1)
    it = iter(ds)
    first = [next(it)["keys"] for _ in range(2)]
    state = ds.state_dict()
    resumed = WanVideoDataset(_balanced(data, videos, stills), **OPTIONS)
    resumed.load_state_dict(state)
    assert first + [b["keys"] for b in resumed] == epochs[0]
    assert [b["keys"] for b in resumed] == epochs[1]  # the next epoch's draw, too


@pytest.mark.integration
def test_concept_options_are_checked_with_the_dataset_rules(data: Path) -> None:
    bad = [
        Concept(data / "videos", name="videos", options={"frames": (4,), "batch_size": 2}),
        Concept(data / "stills", name="stills", options={"sampling": "sideways"}),
        Concept(data / "stills", name="more", repeats=0, loss_weight=-1, batch_size=0),
    ]
    with pytest.raises(ConfigError) as info:
        WanVideoDataset(bad, **OPTIONS)
    text = str(info.value)
    assert "batch_size" in text and "not an option a concept can set" in text
    assert "concepts[0] (videos).options" in text and "frames" in text
    assert "concepts[1] (stills).options" in text and "sideways" in text
    assert "repeats" in text and "loss_weight" in text and "concepts[2].batch_size" in text
    with pytest.raises(ConfigError, match="cannot be combined with repeats"):
        WanVideoDataset(
            [Concept(data / "videos", name="v", repeats=2, samples_per_epoch=3)], **OPTIONS
        )


@pytest.mark.integration
def test_frame_batch_sizes_batch_images_and_videos_apart(data: Path) -> None:
    concepts = [
        Concept(data / "videos", name="videos"),
        Concept(data / "stills", name="stills", options={"frames": (1,)}),
    ]
    ds = WanVideoDataset(concepts, **OPTIONS, batch_size=1, frame_batch_sizes={1: 4})
    sizes = {(b["buckets"][0].split("x")[0], len(b["keys"])) for b in _epoch(ds, 0)}
    assert sizes == {("1", 4), ("5", 1)}


@pytest.mark.integration
def test_fractional_repeats_are_drawn_per_epoch(data: Path) -> None:
    concepts = [Concept(data / "videos", name="videos", repeats=1.5)]
    ds = WanVideoDataset(concepts, **OPTIONS, batch_size=1)
    counts = []
    keys_per_epoch = []
    for epoch in range(4):
        keys = [k for b in _epoch(ds, epoch) for k in b["keys"]]
        counts.append(len(keys))
        keys_per_epoch.append({k for k in keys if "@1" in k})
    # 5 sources: every one once, and a copy of 2 or 3 of them (0.5 * 5 = 2.5) per epoch.
    assert all(7 <= c <= 8 for c in counts)
    assert all(len(k) == c - 5 for k, c in zip(keys_per_epoch, counts, strict=True))
    assert len({frozenset(k) for k in keys_per_epoch}) > 1  # a new draw each epoch
    assert ds.bucket_report()["plan"]["samples"] == counts[-1]


@pytest.mark.integration
def test_samples_per_epoch_and_balancing_are_the_same_for_any_worker_count(data: Path) -> None:
    concepts = [
        Concept(data / "videos", name="videos", samples_per_epoch=3),
        Concept(data / "stills", name="stills", repeats=0.5, options={"frames": (1,)}),
    ]
    ds = WanVideoDataset(concepts, **OPTIONS, batch_size=1)
    ds.set_epoch(2)
    plain = [b["keys"] for b in ds]
    assert sum(k.startswith("videos/") for keys in plain for k in keys) == 3
    assert sum(k.startswith("stills/") for keys in plain for k in keys) in (3, 4)  # 0.5 * 7
    ds.set_epoch(2)
    with_workers = [b["keys"] for b in ds.loader(num_workers=2)]
    assert with_workers == plain


@pytest.mark.integration
def test_scan_plans_each_concept_with_its_own_options(data: Path) -> None:
    report = scan_dataset(_concepts(data), **OPTIONS)
    assert report.options["concepts"]["videos"]["frames"] == [9]
    buckets = {str(s.bucket) for s in report.samples}
    assert buckets == {"9x32x32", "1x32x16"}


@pytest.mark.integration
def test_a_concepts_frames_decide_its_probe_limits(data: Path) -> None:
    # 12 frames at 8 fps are too short for 17-frame clips, long enough for the concept's 9.
    too_short = WanVideoDataset(data / "videos", **{**OPTIONS, "frames": [17]})
    assert not too_short.samples
    assert {r["reason"] for r in too_short.report()["skipped"]} == {"too_short"}
    own = WanVideoDataset(
        [Concept(data / "videos", name="videos", options={"frames": (9,)})],
        **{**OPTIONS, "frames": [17]},
    )
    assert len(own.samples) == 5 and {s.bucket.frames for s in own.samples} == {9}


@pytest.mark.integration
def test_loss_weights_survive_the_sample_index(data: Path, tmp_path: Path) -> None:
    concepts = _concepts(data)
    options = {**OPTIONS, "sample_index": tmp_path / "index"}
    cold = WanVideoDataset(concepts, **options)
    warm = WanVideoDataset(concepts, **options)
    assert [s.probed.source for s in warm.samples] == [s.probed.source for s in cold.samples]
    assert {s.probed.source.loss_weight for s in warm.samples} == {1.0, 2.0}
    # Another weight is another dataset: the snapshot is not reused for it.
    other = [
        Concept(**{**c.__dict__, "loss_weight": 3.0}) if c.name == "videos" else c for c in concepts
    ]
    again = WanVideoDataset(other, **options)
    assert {s.probed.source.loss_weight for s in again.samples} == {1.0, 3.0}


def test_text_keys_use_each_concepts_caption_tools() -> None:
    from wan_data.conditioning.text_cache import TextSpec, text_keys
    from wan_data.items import Bucket, PlanSample, Probed, Source, VideoMetadata
    from wan_data.sources.caption_tools import CaptionTools

    meta = VideoMetadata(
        width=64, height=64, fps=16.0, duration=2.0, frame_count=32, format="mp4", codec="h264"
    )

    def sample(concept: str) -> PlanSample:
        source = Source(
            key=f"{concept}/a.mp4",
            path=f"/d/{concept}/a.mp4",
            media_type="video",
            captions=("a dog",),
            concept=concept,
        )
        return PlanSample(Probed(source, meta), 0, Bucket(17, 64, 64))

    spec = TextSpec(
        encoder="e",
        captions=CaptionTools(caption_prefix="all"),
        concept_captions=(("char", CaptionTools(caption_prefix="sks")),),
    )
    keys = text_keys([sample("char"), sample("other")], spec)
    assert set(keys.values()) == {"", "sks, a dog", "all, a dog"}
