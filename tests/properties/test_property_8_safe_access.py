"""Property 8: safe access — no KeyError/IndexError/TypeError escapes for malformed input.

Feature: wan-training-pipeline-fixes, Property 8: safe access

Hypothesis-generated metadata (zero and huge sizes, NaN and infinite rates and durations, zero
frame counts, negative start times) through ``VideoMetadata``, ``probe.validate_metadata``,
``decode.plan_clips`` and the bucket math, and arbitrary lists mixing clips of random shapes,
failures and ``None`` through ``collate`` and ``batch_clips``: every call returns a value or
raises a documented exception (ValueError, ConfigError, SampleError) whose message names what is
wrong; never KeyError, IndexError, TypeError, ZeroDivisionError or OverflowError.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from wan_data.errors import SampleError
from wan_data.failures.mechanism import StageContext
from wan_data.items import Bucket, Clip, CropBox, Failed, Probed, Source, VideoMetadata
from wan_data.media.buckets import cover_size, make_buckets, nearest_bucket
from wan_data.stages.collate import batch_clips, collate
from wan_data.stages.decode import DecodeOptions, plan_clips
from wan_data.stages.probe import ProbeLimits, validate_metadata

PROPERTY = "Feature: wan-training-pipeline-fixes, Property 8: safe access"
SOURCE = Source(key="c/odd.mp4", path="/data/c/odd.mp4", media_type="video")
BUCKET_SETS = [make_buckets((32, 32)), make_buckets((832, 480)), ((32, 32),), ((64, 16), (16, 64))]

sizes = st.one_of(
    st.integers(-2, 4096), st.sampled_from([0, 1, 2**31 - 1, 10**9]), st.integers(0, 2**40)
)
rates = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-9, 1e308, 23.976, 30.0, math.inf, math.nan]),
    st.floats(0.0, 240.0),
)
durations = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1e-9, 0.3, 5.0, 1e5, math.inf, math.nan]),
    st.floats(0.0, 1e5),
)


@st.composite
def metadata_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "width": draw(sizes),
        "height": draw(sizes),
        "fps": draw(rates),
        "duration": draw(durations),
        "frame_count": draw(st.one_of(st.integers(-3, 400), st.sampled_from([0, 10**6]))),
        "format": draw(st.sampled_from(["mp4", "", "webm"])),
        "codec": draw(st.sampled_from(["h264", "", "vp9"])),
        "is_corrupted": draw(st.sampled_from([False, False, False, True])),
        "error_details": draw(st.one_of(st.none(), st.text(max_size=10))),
        "begin_seconds": draw(st.one_of(st.floats(-1e6, 1e6), st.sampled_from([0.0, -1.0, -0.5]))),
        "frame_count_from_header": draw(st.one_of(st.none(), st.integers(-1, 10**6))),
        "media_type": draw(st.sampled_from(["video", "image"])),
    }


@st.composite
def decode_options(draw: st.DrawFn) -> DecodeOptions:
    frames = tuple(sorted(draw(st.sets(st.sampled_from([1, 5, 9, 17, 33, 81]), min_size=1))))
    return DecodeOptions(
        frames=frames,
        fps=draw(st.one_of(st.none(), st.sampled_from([8.0, 16.0, 24.0, 29.97]))),
        buckets=draw(st.sampled_from(BUCKET_SETS)),
        sampling=draw(st.sampled_from(["head", "random", "uniform", "chunks"])),
        clips_per_video=draw(st.integers(1, 4)),
        crop=draw(st.sampled_from(["center", "random"])),
        seed=draw(st.integers(0, 2**32)),
    )


limits_strategy = st.builds(
    ProbeLimits,
    min_frames=st.sampled_from([1, 5, 17, 81]),
    fps=st.one_of(st.none(), st.sampled_from([8.0, 16.0, 24.0])),
    max_pixels=st.sampled_from([1, 64 * 64, 4096 * 4096, 4096 * 4096]),
    min_side=st.sampled_from([1, 8, 8, 64]),
    max_duration_seconds=st.one_of(st.none(), st.sampled_from([0.5, 10.0, 3600.0])),
)


def _metadata_or_none(kwargs: dict[str, Any]) -> VideoMetadata | None:
    """A VideoMetadata, or None when the constructor refused it with a field-naming message."""
    try:
        return VideoMetadata(**kwargs)
    except ValueError as exc:
        assert "VideoMetadata." in str(exc), f"message does not name the field: {exc}"
        return None


def _check_plans(plans: list[Any], meta: VideoMetadata, options: DecodeOptions) -> None:
    assert plans, "plan_clips returns at least one clip or raises SampleError"
    for plan in plans:
        bucket = plan.bucket
        assert (bucket.width, bucket.height) in options.buckets
        assert bucket.frames in options.frames or bucket.frames == 1
        rw, rh = plan.resized
        assert rw >= bucket.width and rh >= bucket.height
        x, y = plan.offset
        assert 0 <= x <= rw - bucket.width and 0 <= y <= rh - bucket.height
        positions = plan.times if plan.times is not None else plan.indices
        assert positions is not None and len(positions) == bucket.frames
        if plan.indices is not None:
            assert all(0 <= i < max(1, meta.frame_count) for i in plan.indices)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(kwargs=metadata_kwargs(), limits=limits_strategy, options=decode_options())
def test_metadata_validation_and_planning_never_crash(
    kwargs: dict[str, Any], limits: ProbeLimits, options: DecodeOptions
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 8: safe access

    validate_metadata and plan_clips on any metadata the constructor accepts.

    Durations up to 1e300 s here; infinite ones, and ones so large that duration x fps
    overflows, have their own test below.
    """
    assume(math.isnan(kwargs["duration"]) or kwargs["duration"] <= 1e300)
    meta = _metadata_or_none(kwargs)
    if meta is None:
        event("VideoMetadata refused")
        return
    broken = validate_metadata(meta, limits)
    event(f"validate: {broken[0] if broken else 'usable'}")
    if broken is not None:
        reason, rule = broken
        assert isinstance(reason, str) and reason and isinstance(rule, str) and rule
    item = Probed(source=SOURCE, metadata=meta)
    try:
        plans = plan_clips(item, options, epoch=0)
    except SampleError as exc:
        assert exc.reason == "too_short" and SOURCE.path in str(exc)
        event("plan: too_short")
        return
    except ValueError as exc:
        assert meta.width <= 0 or meta.height <= 0, f"unexpected ValueError: {exc}"
        assert "source size" in str(exc)
        return
    _check_plans(plans, meta, options)
    event("plan: clips")


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(kwargs=metadata_kwargs(), limits=limits_strategy, options=decode_options())
@example(
    kwargs={
        "width": 64,
        "height": 48,
        "fps": 24.0,
        "duration": math.inf,
        "frame_count": 48,
        "format": "mp4",
        "codec": "h264",
        "is_corrupted": False,
        "error_details": None,
        "begin_seconds": 0.0,
        "frame_count_from_header": 48,
        "media_type": "video",
    },
    limits=ProbeLimits(),
    options=DecodeOptions(frames=(5,), fps=16.0, buckets=((32, 32),)),
)
@example(
    kwargs={
        "width": 64,
        "height": 48,
        "fps": 0.0,
        "duration": 2.2e307,
        "frame_count": 0,
        "format": "mp4",
        "codec": "h264",
        "is_corrupted": False,
        "error_details": None,
        "begin_seconds": 0.0,
        "frame_count_from_header": None,
        "media_type": "video",
    },
    limits=ProbeLimits(fps=None),
    options=DecodeOptions(frames=(1,), fps=8.0, buckets=((32, 32),)),
)
def test_infinite_duration_is_refused_not_overflowing(
    kwargs: dict[str, Any], limits: ProbeLimits, options: DecodeOptions
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 8: safe access

    An infinite or absurdly large duration is refused with a ValueError, not an OverflowError.
    """
    meta = _metadata_or_none(kwargs)
    if meta is None:
        return
    validate_metadata(meta, limits)
    with contextlib.suppress(SampleError, ValueError):
        plan_clips(Probed(source=SOURCE, metadata=meta), options, epoch=0)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(width=sizes, height=sizes, buckets=st.sampled_from(BUCKET_SETS))
def test_nearest_bucket_and_cover_size_on_any_positive_or_invalid_size(
    width: int, height: int, buckets: tuple[tuple[int, int], ...]
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 8: safe access

    nearest_bucket and cover_size on any source size.
    """
    if width <= 0 or height <= 0:
        with pytest.raises(ValueError, match="source size"):
            nearest_bucket(width, height, buckets)
        return
    bw, bh = nearest_bucket(width, height, buckets)
    assert (bw, bh) in buckets
    rw, rh = cover_size(width, height, bw, bh)
    assert rw >= bw and rh >= bh
    assert rw == bw or rh == bh, "the smallest covering size is tight on one side"
    with pytest.raises(ValueError, match="buckets"):
        nearest_bucket(width, height, ())


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(width=sizes, height=sizes, dst=st.sampled_from([(32, 32), (832, 480), (16, 64)]))
@example(width=0, height=90, dst=(32, 32))
@example(width=160, height=-90, dst=(32, 32))
def test_cover_size_refuses_non_positive_sources(
    width: int, height: int, dst: tuple[int, int]
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 8: safe access

    cover_size refuses non-positive source sizes with a ValueError.
    """
    if width > 0 and height > 0:
        rw, rh = cover_size(width, height, *dst)
        assert rw >= dst[0] and rh >= dst[1]
    else:
        with pytest.raises(ValueError, match="size"):
            cover_size(width, height, *dst)


SHAPES = [(1, 32, 32), (5, 32, 32), (5, 16, 64), (9, 8, 8)]


def _clip(i: int, shape: tuple[int, int, int]) -> Clip:
    f, w, h = shape
    return Clip(
        key=f"c/{i}.mp4#0",
        source=Source(key=f"c/{i}.mp4", path=f"/data/c/{i}.mp4", media_type="video"),
        pixels=torch.full((f, 3, h, w), i % 256, dtype=torch.uint8),
        frame_times=tuple(t / 16 for t in range(f)),
        bucket=Bucket(f, w, h),
        crop=CropBox(0, 0, w, h),
        caption=f"clip {i}",
    )


def _failed(i: int) -> Failed:
    return Failed(
        key=f"c/{i}.mp4",
        path=f"/data/c/{i}.mp4",
        stage="decode",
        reason="decode_error",
        error_type="RuntimeError",
        message="broken.",
    )


batch_items = st.lists(
    st.one_of(
        st.tuples(st.integers(0, 999), st.sampled_from(SHAPES)).map(lambda t: _clip(*t)),
        st.integers(0, 999).map(_failed),
        st.none(),
        st.integers(),
        st.text(max_size=5),
    ),
    max_size=12,
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(items=batch_items, batch_size=st.integers(1, 4), drop_last=st.booleans())
@example(items=[], batch_size=1, drop_last=False)
@example(items=[None], batch_size=1, drop_last=False)
@example(items=[_failed(1), _failed(2)], batch_size=2, drop_last=False)
def test_collate_and_batching_take_any_mixture(
    items: list[Any], batch_size: int, drop_last: bool
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 8: safe access

    collate and batch_clips on any mixture of clips, failures, None and junk.
    """
    clips = [c for c in items if isinstance(c, Clip)]
    shapes = {tuple(c.pixels.shape) for c in clips}
    if len(shapes) > 1:
        with pytest.raises(ValueError, match="clip shapes") as info:
            collate(items)
        assert all(c.source.path in str(info.value) for c in clips), "names every sample"
    else:
        batch = collate(items)
        b = len(clips)
        assert batch["dropped"] == len(items) - b
        assert batch["pixels"].dtype == torch.float32
        assert batch["pixels"].shape[0] == b
        for key in ("captions", "paths", "keys", "frame_times", "crops", "buckets"):
            assert len(batch[key]) == b
        if b:
            f, c, h, w = next(iter(shapes))
            assert tuple(batch["pixels"].shape) == (b, c, f, h, w)
            assert batch["pixels"].min() >= -1.0 and batch["pixels"].max() <= 1.0
        else:
            assert batch["pixels"].numel() == 0

    context = StageContext()
    batches = list(batch_clips(items, batch_size=batch_size, drop_last=drop_last, context=context))
    seen = [k for b in batches for k in b["keys"]]
    assert len(seen) == len(set(seen)) or len({c.key for c in clips}) < len(clips)
    for b in batches:
        assert 1 <= len(b["keys"]) <= batch_size
        assert len(set(b["buckets"])) == 1, "a batch never mixes buckets"
    if not drop_last:
        assert len(seen) == len(clips)
    assert len(context.metrics.skipped) == sum(1 for i in items if isinstance(i, Failed))
