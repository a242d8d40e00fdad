"""clips.py: DecodeOptions.identity (what the resume and sample-index fingerprints cover), and
the seeded draws of plan_clips and caption_for."""

from __future__ import annotations

import pytest

import wan_data.planning.clips as clips_module
from wan_data.items import Probed, Source, VideoMetadata
from wan_data.media.buckets import crop_offsets
from wan_data.media.sampling import clip_starts, frames_available, sample_rng
from wan_data.planning.clips import DecodeOptions, caption_for, plan_clips
from wan_data.sources.caption_tools import CaptionTools

BASE = DecodeOptions(frames=(17,), fps=16.0, buckets=((64, 64),))


def test_options_added_later_are_left_out_at_their_defaults() -> None:
    # The fields fingerprints covered before stride, frame_stride and the caption tools existed:
    # a state saved then must still match a dataset that sets none of them.
    before = {"frames", "fps", "sampling", "clips_per_video", "crop", "seed", "no_upscale"}
    assert set(BASE.identity(captions=True)) == before
    assert set(BASE.identity(captions=False)) == before


def test_set_options_change_the_identity() -> None:
    strided = DecodeOptions(frames=(17,), fps=None, buckets=((64, 64),), frame_stride=2, stride=8)
    assert strided.identity(captions=False)["frame_stride"] == 2
    assert strided.identity(captions=False)["stride"] == 8
    tools = DecodeOptions(
        frames=(17,), fps=16.0, buckets=((64, 64),), captions=CaptionTools(caption_prefix="sks")
    )
    assert "captions" in tools.identity(captions=True)
    assert "captions" not in tools.identity(captions=False)  # captions never change samples


def _video(captions: tuple[str, ...] = ("a dog",)) -> Probed:
    meta = VideoMetadata(
        width=96, height=64, fps=24.0, duration=4.0, frame_count=96, format="mp4", codec="h264"
    )
    source = Source(key="v.mp4", path="/d/v.mp4", media_type="video", captions=captions)
    return Probed(source, meta)


@pytest.mark.parametrize("sampling", ["head", "random", "uniform", "slide"])
@pytest.mark.parametrize("crop", ["center", "random"])
def test_plans_draw_from_their_seeded_streams_and_seed_only_those_they_draw_from(
    sampling: str, crop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Window and crop generators are seeded only for the random modes (a sha256 and a Mersenne
    Twister seeding per clip of every cached read otherwise); where seeded, the draws are the
    ones of (seed, epoch, key, purpose)."""
    item = _video()
    options = DecodeOptions(
        frames=(17,), fps=16.0, buckets=((64, 48),), sampling=sampling, crop=crop, seed=3
    )
    purposes: list[str] = []

    def counting(seed: int, epoch: int, key: str, purpose: str = "") -> object:
        purposes.append(purpose)
        return sample_rng(seed, epoch, key, purpose)

    monkeypatch.setattr(clips_module, "sample_rng", counting)
    for epoch in range(4):
        plans = plan_clips(item, options, epoch)
        n = frames_available(item.metadata, 16.0, 1)
        window = sample_rng(3, epoch, "v.mp4", "window") if sampling == "random" else None
        starts = clip_starts(n, 17, mode=sampling, rng=window)
        assert len(plans) == len(starts)
        for i, plan in enumerate(plans):
            crop_rng = sample_rng(3, epoch, "v.mp4", f"crop{i}") if crop == "random" else None
            assert plan.offset == crop_offsets(*plan.resized, 64, 48, mode=crop, rng=crop_rng)
        first = plans[0].times
        assert first is not None
        assert round((first[0] - item.metadata.begin_seconds) * 16.0) == starts[0]
    seeded = set(purposes)
    assert ("window" in seeded) == (sampling == "random")
    assert any(p.startswith("crop") for p in seeded) == (crop == "random")


def test_a_single_caption_is_served_without_a_draw_and_several_by_their_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    options = DecodeOptions(frames=(17,), fps=16.0, buckets=((64, 48),), seed=5)
    several = _video(("a dog", "a cat", "a bird"))
    expected = [
        sample_rng(5, e, "v.mp4", "caption").choice(several.source.captions) for e in range(8)
    ]
    assert [caption_for(several, options, e) for e in range(8)] == expected
    assert len(set(expected)) > 1

    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError("a generator was seeded for a caption with no choice to make")

    monkeypatch.setattr(clips_module, "sample_rng", refuse)
    assert caption_for(_video(("a dog",)), options, 0) == "a dog"
    assert caption_for(_video(()), options, 0) == ""
