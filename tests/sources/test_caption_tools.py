"""Caption tools: prefix/suffix, seeded tag shuffle with keep_tokens, tag dropout, and how they
reach ``caption_for``, the text cache and the configuration."""

from __future__ import annotations

import dataclasses
import math
import random
from typing import ClassVar

import pytest

from wan_data.conditioning.text_cache import TextSpec, sample_captions, text_key, text_keys
from wan_data.config import CaptionConfig, DatasetConfig
from wan_data.errors import ConfigError
from wan_data.items import Bucket, PlanSample, Probed, Source, VideoMetadata
from wan_data.planning.clips import DecodeOptions, caption_for
from wan_data.sources.caption_tools import (
    CaptionTools,
    apply_caption_tools,
    apply_fixed_tools,
    split_tags,
)

TAGS = "sks dog, grass, running, sunny, park, ball, tree, close-up"


def _probed(*captions: str, key: str = "c/a.mp4") -> Probed:
    meta = VideoMetadata(
        width=64, height=64, fps=16.0, duration=2.0, frame_count=32, format="mp4", codec="h264"
    )
    return Probed(Source(key=key, path=f"/d/{key}", media_type="video", captions=captions), meta)


def _options(tools: CaptionTools, seed: int = 0) -> DecodeOptions:
    return DecodeOptions(frames=(17,), fps=16.0, buckets=((64, 64),), seed=seed, captions=tools)


def test_default_tools_leave_the_caption_and_the_choice_unchanged() -> None:
    item = _probed("first, a", "second, b")
    plain = DecodeOptions(frames=(17,), fps=16.0, buckets=((64, 64),), seed=3)
    with_default = _options(CaptionTools(), seed=3)
    for epoch in range(10):
        assert caption_for(item, plain, epoch) == caption_for(item, with_default, epoch)
        assert caption_for(item, plain, epoch) in item.source.captions


@pytest.mark.parametrize(
    ("prefix", "suffix", "caption", "expected"),
    [
        ("sks", "", "a dog", "sks, a dog"),
        ("sks ", "", "a dog", "sks a dog"),
        ("sks,", "", "a dog", "sks,a dog"),
        ("", "4k", "a dog", "a dog, 4k"),
        ("", " in the style of x", "a dog", "a dog in the style of x"),
        ("sks", "4k", "a dog", "sks, a dog, 4k"),
        ("sks", "4k", "", "sks, 4k"),
        ("sks, ", "", "", "sks"),
        ("", "", "", ""),
    ],
)
def test_prefix_and_suffix(prefix: str, suffix: str, caption: str, expected: str) -> None:
    tools = CaptionTools(caption_prefix=prefix, caption_suffix=suffix)
    assert apply_fixed_tools(caption, tools) == expected
    assert apply_caption_tools(caption, tools, lambda: pytest.fail("no draw")) == expected


def test_caption_for_applies_the_prefix_to_a_source_without_caption() -> None:
    tools = CaptionTools(caption_prefix="sks")
    assert caption_for(_probed(), _options(tools), 0) == "sks"
    assert caption_for(_probed("a dog"), _options(tools), 0) == "sks, a dog"
    assert caption_for(_probed(), _options(CaptionTools()), 0) == ""


def test_empty_and_blank_captions_with_random_tools() -> None:
    tools = CaptionTools(shuffle_tags=True, keep_tokens=2, tag_dropout=0.5)
    for caption in ("", "  ", ", ,", ","):
        assert apply_caption_tools(caption, tools, lambda: random.Random(0)) == ""
    assert apply_caption_tools(" , one ,", tools, lambda: random.Random(0)) == "one"
    with_prefix = dataclasses.replace(tools, caption_prefix="sks", caption_suffix="end")
    assert apply_caption_tools("", with_prefix, lambda: random.Random(0)) == "sks, end"
    assert caption_for(_probed(), _options(with_prefix), 4) == "sks, end"


def test_keep_tokens_stay_in_place() -> None:
    tools = CaptionTools(shuffle_tags=True, keep_tokens=2, tag_dropout=0.3)
    tags = split_tags(TAGS)
    for epoch in range(50):
        out = split_tags(caption_for(_probed(TAGS), _options(tools), epoch))
        assert out[:2] == tags[:2]
        assert set(out[2:]) <= set(tags[2:])


def test_keep_tokens_longer_than_the_caption_keeps_everything() -> None:
    tools = CaptionTools(shuffle_tags=True, keep_tokens=20, tag_dropout=0.9)
    assert caption_for(_probed(TAGS), _options(tools), 1) == ", ".join(split_tags(TAGS))


def test_shuffle_is_seeded_by_seed_epoch_and_key() -> None:
    tools = CaptionTools(shuffle_tags=True)
    item = _probed(TAGS)
    a = [caption_for(item, _options(tools, seed=1), epoch) for epoch in range(20)]
    assert a == [caption_for(item, _options(tools, seed=1), epoch) for epoch in range(20)]
    # Every epoch is a permutation of the same tags, and they are not all the same order.
    assert all(sorted(split_tags(c)) == sorted(split_tags(TAGS)) for c in a)
    assert len(set(a)) > 10
    assert a != [caption_for(item, _options(tools, seed=2), epoch) for epoch in range(20)]
    other = _probed(TAGS, key="c/b.mp4")
    assert a != [caption_for(other, _options(tools, seed=1), epoch) for epoch in range(20)]


def test_shuffle_never_touches_the_global_rng() -> None:
    tools = CaptionTools(shuffle_tags=True, tag_dropout=0.5)
    random.seed(123)
    expected = random.random()
    random.seed(123)
    for epoch in range(5):
        caption_for(_probed(TAGS), _options(tools), epoch)
    assert random.random() == expected
    random.seed(999)  # a different global state gives the same captions
    first = caption_for(_probed(TAGS), _options(tools), 0)
    random.seed(1)
    assert caption_for(_probed(TAGS), _options(tools), 0) == first


def test_tag_dropout_rate_is_within_binomial_bounds() -> None:
    rate = 0.3
    tools = CaptionTools(tag_dropout=rate, keep_tokens=1)
    tags = [f"tag{i}" for i in range(20)]
    caption = ", ".join(tags)
    trials = n = 0
    dropped = 0
    for epoch in range(200):
        out = split_tags(caption_for(_probed(caption), _options(tools), epoch))
        assert out[0] == "tag0"  # kept, never dropped
        # Without shuffle, the survivors keep their order.
        assert out == [t for t in tags if t in out]
        trials += 1
        n += len(tags) - 1
        dropped += len(tags) - len(out)
    assert trials == 200
    mean, sd = n * rate, math.sqrt(n * rate * (1 - rate))
    assert abs(dropped - mean) < 5 * sd, (dropped, mean, sd)


def test_tag_dropout_one_keeps_only_the_kept_tags() -> None:
    tools = CaptionTools(tag_dropout=1.0, keep_tokens=1, caption_prefix="sks")
    assert caption_for(_probed(TAGS), _options(tools), 0) == "sks, sks dog"


def test_caption_config_validates_and_builds_tools() -> None:
    config = DatasetConfig.build(
        caption_prefix="sks", shuffle_tags=True, keep_tokens=1, tag_dropout=0.1
    )
    assert config.captions == CaptionConfig("sks", "", True, 1, 0.1)
    assert config.captions.tools() == CaptionTools("sks", "", True, 1, 0.1)
    with pytest.raises(ConfigError) as err:
        DatasetConfig.build(keep_tokens=-1, tag_dropout=1.5, caption_prefix=3)
    text = str(err.value)
    assert "keep_tokens" in text and "tag_dropout" in text and "caption_prefix" in text


@pytest.mark.parametrize("random_tool", [{"shuffle_tags": True}, {"tag_dropout": 0.2}])
def test_random_tools_are_refused_with_a_text_encoder(random_tool: dict[str, object]) -> None:
    common = {"vae": "/v", "cache_dir": "/c", "text_encoder": "/t"}
    with pytest.raises(ConfigError, match="cannot be pre-encoded"):
        DatasetConfig.build(**common, **random_tool)
    # Prefix and suffix are fine: they are encoded with every caption.
    DatasetConfig.build(**common, caption_prefix="sks", caption_suffix="4k")


def test_the_text_cache_encodes_the_prefixed_captions() -> None:
    tools = CaptionTools(caption_prefix="sks", caption_suffix="4k")
    samples = [
        PlanSample(_probed("a dog", "a cat"), 0, Bucket(17, 64, 64)),
        PlanSample(_probed(key="c/b.mp4"), 0, Bucket(17, 64, 64)),
    ]
    assert sample_captions(samples[0], tools) == ("sks, a dog, 4k", "sks, a cat, 4k")
    assert sample_captions(samples[1], tools) == ("sks, 4k",)
    assert sample_captions(samples[0]) == ("a dog", "a cat")
    spec = TextSpec(encoder="e", captions=tools)
    keys = text_keys(samples, spec)
    assert set(keys.values()) == {"", "sks, a dog, 4k", "sks, a cat, 4k", "sks, 4k"}
    # Every caption caption_for can produce has an entry.
    options = _options(tools)
    for sample in samples:
        for epoch in range(10):
            assert text_key(caption_for(sample.probed, options, epoch), spec) in keys


def test_caption_tools_leave_the_sample_index_fingerprint_and_cache_keys_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from wan_data.latents import prepare
    from wan_data.latents import spec as spec_module
    from wan_data.planning import sample_list

    monkeypatch.setattr(
        spec_module, "source_identity", lambda path, content_hash=False: {"p": path}
    )
    plain = _options(CaptionTools())
    tooled = _options(CaptionTools("sks", "x", True, 1, 0.5))
    sample = PlanSample(_probed(TAGS), 0, Bucket(17, 64, 64))

    class _Spec:  # the parts of CacheSpec that sample_key reads
        transforms: tuple[str, ...] = ()
        transforms_vary = False
        config: ClassVar[dict[str, object]] = {"vae": "v"}
        content_hash = False

    spec = _Spec()
    assert (
        prepare.sample_key(sample, 0, plain, spec)[0]
        == (  # type: ignore[arg-type]
            prepare.sample_key(sample, 0, tooled, spec)[0]  # type: ignore[arg-type]
        )
    )
    # The sample index's fingerprint hashes the decode options without the tools.
    seen: list[dict[str, object]] = []
    monkeypatch.setattr(sample_list, "setup_fingerprint", lambda options: seen.append(options))

    class _Resolved:
        config = DatasetConfig.build(caption_prefix="sks", shuffle_tags=True)
        ledger = None
        concepts: tuple[object, ...] = ()

    from wan_data.media.buckets import make_bucket_set

    buckets = make_bucket_set(((64, 64),), step=16, max_aspect=4.0)
    sample_list._fingerprint(_Resolved(), buckets, plain, ())  # type: ignore[arg-type]
    sample_list._fingerprint(_Resolved(), buckets, tooled, ())  # type: ignore[arg-type]
    assert seen[0] == seen[1]
    assert "captions" not in seen[0]["decode"]  # type: ignore[operator]
