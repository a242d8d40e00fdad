"""Property: the caption tools only reorder and drop tags, never invent one.

For any caption (comma-separated tags), any prefix/suffix and any ``shuffle_tags``,
``keep_tokens``, ``tag_dropout`` and (seed, epoch, key): the output is the prefix, then the
first ``keep_tokens`` tags in their order, then a sub-multiset of the other tags, then the
suffix; and the same inputs give the same output.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from wan_data.items import Probed, Source, VideoMetadata
from wan_data.planning.clips import DecodeOptions, caption_for
from wan_data.sources.caption_tools import CaptionTools, split_tags

_WORD = st.text(alphabet="abcdefgh xyz-", min_size=0, max_size=8)
_META = VideoMetadata(
    width=64, height=64, fps=16.0, duration=2.0, frame_count=32, format="mp4", codec="h264"
)


@settings(max_examples=300, deadline=None)
@given(
    tags=st.lists(_WORD, max_size=12),
    prefix=st.sampled_from(["", "sks", "ohwx person"]),
    suffix=st.sampled_from(["", "4k", "masterpiece"]),
    shuffle=st.booleans(),
    keep=st.integers(min_value=0, max_value=6),
    dropout=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]),
    seed=st.integers(min_value=0, max_value=2**31),
    epoch=st.integers(min_value=0, max_value=1000),
    key=st.text(alphabet="abc/._0123", min_size=1, max_size=10),
)
def test_tools_output_is_prefix_kept_subset_suffix(
    tags: list[str],
    prefix: str,
    suffix: str,
    shuffle: bool,
    keep: int,
    dropout: float,
    seed: int,
    epoch: int,
    key: str,
) -> None:
    caption = ",".join(tags)
    tools = CaptionTools(prefix, suffix, shuffle, keep, dropout)
    options = DecodeOptions(frames=(17,), fps=16.0, buckets=((64, 64),), seed=seed, captions=tools)
    item = Probed(Source(key=key, path="/d/x.mp4", media_type="video", captions=(caption,)), _META)
    out = caption_for(item, options, epoch)
    assert out == caption_for(item, options, epoch)

    parts = split_tags(out)
    if prefix:
        assert parts[0] == prefix
        parts = parts[1:]
    if suffix:
        assert parts[-1] == suffix
        parts = parts[:-1]
    given_tags = split_tags(caption)
    if not (shuffle or dropout > 0):
        # No random tool: the caption is kept as written (only the prefix/suffix added).
        assert parts == given_tags
        return
    kept = given_tags[:keep]
    assert parts[: len(kept)] == kept  # kept tags lead, in order, never dropped
    rest = parts[len(kept) :]
    assert not Counter(rest) - Counter(given_tags[keep:])  # a sub-multiset of the others
    if dropout == 0:
        assert sorted(rest) == sorted(given_tags[keep:])  # shuffle alone drops nothing
    if not shuffle:
        remaining = iter(given_tags[keep:])
        assert all(tag in remaining for tag in rest)  # dropout alone keeps the order
