"""Every public stage object honours the stage contract (wan_data.testing), and composes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from media import Corpus

from wan_data.errors import SampleError
from wan_data.failures.ledger import Ledger
from wan_data.failures.mechanism import StageContext, drop_failed
from wan_data.items import Clip, Encoded, EncodeJob, Failed, PlanSample, Probed, Source
from wan_data.latents.encode import Encode
from wan_data.sources.concepts import concepts_from
from wan_data.stages import (
    BatchClips,
    Bucket,
    Collect,
    Decode,
    Filter,
    Map,
    Probe,
    ProbeLimits,
    SkipKnownBad,
    Stage,
    compose,
)
from wan_data.stages.decode import DecodeOptions
from wan_data.testing import check_stage_contract

OPTIONS = DecodeOptions(frames=(17,), fps=16.0, buckets=((64, 64),))
LIMITS = ProbeLimits(min_frames=17, fps=16.0)


def _sources(corpus: Corpus) -> list[Source]:
    names = ["good/h264_landscape.mp4", "images/portrait.jpg"]
    return [
        Source(
            key=n,
            path=str(corpus.path(n)),
            media_type="image" if n.startswith("images/") else "video",
        )
        for n in names
    ]


def _probed(corpus: Corpus) -> list[Probed]:
    return [p for p in Probe(LIMITS)(_sources(corpus)) if isinstance(p, Probed)]


def _samples(corpus: Corpus) -> list[PlanSample]:
    return [s for s in Bucket(OPTIONS)(_probed(corpus)) if isinstance(s, PlanSample)]


def is_landscape(item: Probed) -> bool:
    return item.metadata.width > item.metadata.height


def flip(clip: Clip) -> Clip:
    return dataclasses.replace(clip, pixels=clip.pixels.flip(-1))


def test_collect_contract(corpus: Corpus) -> None:
    check_stage_contract(Collect(), concepts_from(str(corpus.root / "good")))


def test_probe_contract(corpus: Corpus) -> None:
    check_stage_contract(Probe(LIMITS, threads=2), _sources(corpus))


def test_ledger_contract(corpus: Corpus, tmp_path: Path) -> None:
    check_stage_contract(SkipKnownBad(Ledger(tmp_path / "ledger.jsonl")), _sources(corpus))


def test_bucket_contract(corpus: Corpus) -> None:
    check_stage_contract(Bucket(OPTIONS), _probed(corpus))


def test_decode_contract(corpus: Corpus) -> None:
    check_stage_contract(Decode(OPTIONS), _samples(corpus))


def test_filter_and_map_contracts(corpus: Corpus) -> None:
    check_stage_contract(Filter(is_landscape, name="landscape", why="portrait"), _probed(corpus))
    clips = [c for c in Decode(OPTIONS)(_samples(corpus)) if isinstance(c, Clip)]
    check_stage_contract(Map(flip, name="flip"), clips)


class _FakeEncoder:
    """Latents are the mean of each clip's pixels; a clip whose key ends in 'x' runs out of
    memory on its own (encode_each's per-clip SampleError)."""

    def encode_each(self, pixels: torch.Tensor) -> list[torch.Tensor | SampleError]:
        return [
            SampleError("out of memory", reason="oom") if float(p.mean()) > 0.5 else p.mean((1,))
            for p in pixels
        ]


def _job(*means: float) -> EncodeJob:
    pixels = torch.stack([torch.full((3, 1, 2, 2), m) for m in means])
    keys = tuple(f"k{i}" for i in range(len(means)))
    return EncodeJob(keys, tuple(f"/d/{k}.mp4" for k in keys), pixels, tuple({} for _ in keys))


def test_encode_contract_and_partial_failures() -> None:
    check_stage_contract(Encode(_FakeEncoder()), [_job(0.1, 0.2), _job(-0.5)])
    context = StageContext()
    out = list(Encode(_FakeEncoder())([_job(0.1, 0.9)], context))
    assert isinstance(out[0], Encoded) and out[0].key == "k0"
    assert isinstance(out[1], Failed) and out[1].reason == "oom" and out[1].stage == "encode"
    stats = context.metrics.stage("encode")
    assert (stats.items_in, stats.items_out, stats.failed) == (1, 1, 1)


def test_a_hand_built_pipeline_filters_decodes_transforms_and_batches(corpus: Corpus) -> None:
    context = StageContext()
    stages: list[Stage] = [
        Collect(),
        Probe(LIMITS),
        Filter(is_landscape, name="landscape", why="portrait images are not trained"),
        Bucket(OPTIONS),
        Decode(OPTIONS),
        Map(flip, name="flip"),
        BatchClips(2),
    ]
    batches = list(compose(concepts_from(str(corpus.root / "good")), stages, context))
    assert batches and all(b["pixels"].shape[1:] == (3, 17, 64, 64) for b in batches)
    skipped = {r["stage"]: r for r in context.metrics.skipped}
    filtered = context.metrics.stage("landscape")
    # good/ holds a portrait video and a square one: the filter drops both, by name.
    assert filtered.failed >= 2 and filtered.items_out > 0
    assert skipped["landscape"]["reason"] == "filtered"
    assert "portrait images are not trained" in skipped["landscape"]["message"]
    assert sum(len(b["paths"]) for b in batches) == filtered.items_out


def test_map_refuses_a_transform_that_returns_the_wrong_type(corpus: Corpus) -> None:
    clips = [c for c in Decode(OPTIONS)(_samples(corpus)) if isinstance(c, Clip)]
    out = list(Map(lambda c: c.pixels, name="pixels_only")(clips))
    assert all(isinstance(o, Failed) and o.reason == "invalid_item" for o in out)
    assert "must be Clip" in out[0].message


def test_compose_refuses_what_is_not_a_stage() -> None:
    with pytest.raises(TypeError, match=r"wan_data\.stages\.Stage"):
        compose([], [lambda items, context: items])  # type: ignore[list-item]


def test_failures_sink_into_the_report(corpus: Corpus) -> None:
    context = StageContext()
    kept = list(
        drop_failed(
            Filter(is_landscape, name="landscape")(_probed(corpus), context), context=context
        )
    )
    assert all(is_landscape(p) for p in kept)
    assert len(context.metrics.skipped) == len(_probed(corpus)) - len(kept)


def test_a_map_stage_without_work_is_refused_when_defined() -> None:
    from wan_data.stages import MapStage

    with pytest.raises(TypeError, match=r"must override process\(\) or process_in\(\)"):

        class Idle(MapStage[Clip, Clip]):
            name = "idle"
