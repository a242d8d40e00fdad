"""DecodeOptions.identity: what the resume and sample-index fingerprints cover."""

from __future__ import annotations

from wan_data.planning.clips import DecodeOptions
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
