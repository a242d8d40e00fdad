"""Property 2: validation integrity — no None or wrongly typed item passes a stage boundary.

Feature: wan-training-pipeline-fixes, Property 2: validation integrity

Whatever mixture of valid items, ``None``, numbers, strings, dicts, items of another stage and
failures a stage is fed, every output is the stage's output type or a ``Failed``; failures pass
through untouched; and the item dataclasses refuse wrong shapes, dtypes and frame counts.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prop_helpers import BUCKETS, FPS, FRAMES, GOOD_VIDEOS, MediaPool, Out, Rec, fast_policy

from wan_data.failures.breaker import BreakerConfig
from wan_data.failures.mechanism import StageContext, map_stage
from wan_data.items import Bucket, Clip, CropBox, Failed, Probed, Source
from wan_data.stages.decode import DecodeOptions, decode
from wan_data.stages.probe import probe

PROPERTY = "Feature: wan-training-pipeline-fixes, Property 2: validation integrity"
OPTIONS = DecodeOptions(frames=FRAMES, fps=FPS, buckets=BUCKETS)
NAMES = [v.name for v in GOOD_VIDEOS]

_SOURCE = Source(key="other/x.mp4", path="/data/other/x.mp4", media_type="video")
_CLIP = Clip(
    key="other/x.mp4#0",
    source=_SOURCE,
    pixels=torch.zeros((5, 3, 32, 32), dtype=torch.uint8),
    frame_times=(0.0, 0.125, 0.25, 0.375, 0.5),
    bucket=Bucket(5, 32, 32),
    crop=CropBox(0, 0, 32, 32),
)


@pytest.fixture(scope="module")
def probed_pool(media_pool: MediaPool) -> dict[str, Probed]:
    """One real Probed per pool video (probed once)."""
    sources = [
        Source(key=f"pool/{name}", path=str(path), media_type="video")
        for name, path in media_pool.good.items()
    ]
    out = list(probe(sources, policy=fast_policy()))
    assert all(isinstance(p, Probed) for p in out), out
    return {p.source.path.rsplit("/", 1)[1]: p for p in out}


def _failed(i: int) -> Failed:
    return Failed(
        key=f"upstream/{i}",
        path=f"/data/upstream_{i}.mp4",
        stage="collect",
        reason="missing",
        error_type="FileNotFoundError",
        message="upstream failure",
    )


junk = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.binary(max_size=8),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.lists(st.integers(), max_size=3),
    st.tuples(st.integers(), st.text(max_size=3)),
    st.just(object()),
    st.just(_CLIP),
)
"""Things that are never a valid stage input (a Clip is valid nowhere before collate)."""


def _check_stage_outputs(
    inputs: list[Any], outputs: list[Any], *, stage: str, valid: type, out_type: type
) -> None:
    assert len(outputs) == len(inputs), "one output per input (single-clip sampling)"
    for item, out in zip(inputs, outputs, strict=True):
        assert isinstance(out, (out_type, Failed)), f"{type(out).__name__} crossed {stage}"
        if isinstance(item, Failed):
            assert out is item, "a Failed must pass through untouched"
        elif not isinstance(item, valid):
            assert isinstance(out, Failed)
            assert out.stage == stage and out.reason == "invalid_item"
            assert type(item).__name__ in out.message
        else:
            assert isinstance(out, out_type), out


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_probe_and_decode_only_emit_their_output_type(
    media_pool: MediaPool, probed_pool: dict[str, Probed], data: st.DataObject
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 2: validation integrity

    Probe, decode and probe -> decode fed any mixture of items and junk.
    """
    n = len(NAMES)
    sources = st.integers(0, 10_000).flatmap(
        lambda i: st.sampled_from(NAMES).map(
            lambda name: Source(
                key=f"s{i}/{name}", path=str(media_pool.good[name]), media_type="video"
            )
        )
    )
    probeds = st.sampled_from(NAMES).map(lambda name: probed_pool[name])
    failures = st.integers(0, 99).map(_failed)
    context = StageContext(breaker_config=BreakerConfig(enabled=False))
    policy = fast_policy()

    # probe: Sources are valid; Probed (a later stage's type) is not.
    inputs = data.draw(
        st.lists(st.one_of(sources, probeds, failures, junk), max_size=n + 4), label="probe in"
    )
    outputs = list(probe(inputs, policy=policy, context=context))
    _check_stage_outputs(inputs, outputs, stage="probe", valid=Source, out_type=Probed)

    # decode: Probed are valid; Source (an earlier stage's type) is not.
    inputs = data.draw(
        st.lists(st.one_of(probeds, sources, failures, junk), max_size=n + 4), label="decode in"
    )
    outputs = list(decode(inputs, policy=policy, options=OPTIONS, context=context))
    _check_stage_outputs(inputs, outputs, stage="decode", valid=Probed, out_type=Clip)
    for clip in (o for o in outputs if isinstance(o, Clip)):
        assert clip.pixels.dtype == torch.uint8
        assert clip.bucket.frames in FRAMES

    # probe -> decode chained over anything: only Clip or Failed comes out.
    inputs = data.draw(
        st.lists(st.one_of(sources, probeds, failures, junk), max_size=n + 4), label="chain in"
    )
    chained = list(
        decode(
            probe(inputs, policy=policy, context=context),
            policy=policy,
            options=OPTIONS,
            context=context,
        )
    )
    assert len(chained) == len(inputs)
    assert all(isinstance(o, (Clip, Failed)) for o in chained)


def _garbage_out(kind: int, item: Rec | Out) -> list[Any]:
    if kind == 0:
        return [Out(item.key, item.path, item.value)]
    if kind == 1:
        return [None]
    if kind == 2:
        return None  # type: ignore[return-value]  # not even a list: a stage bug
    if kind == 3:
        return [item.value]
    return [{"key": item.key}]


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    inputs=st.lists(
        st.one_of(
            st.builds(
                Rec,
                key=st.text(min_size=1, max_size=8),
                path=st.text(max_size=8),
                value=st.integers(-5, 5),
            ),
            st.integers(0, 99).map(_failed),
            junk,
        ),
        max_size=20,
    ),
    kinds=st.lists(st.integers(0, 4), min_size=20, max_size=20),
)
def test_map_stage_boundary_rejects_everything_but_its_input_type(
    inputs: list[Any], kinds: list[int]
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 2: validation integrity

    A misbehaving map_stage function cannot smuggle junk past the next stage.

    A first stage whose function misbehaves (returns None, ints, dicts or not a list) cannot
    push a wrongly typed item past the next stage's boundary.
    """
    policy = fast_policy()
    context = StageContext(breaker_config=BreakerConfig(enabled=False))
    kind_of = {id(item): kinds[i] for i, item in enumerate(inputs)}

    def sloppy(item: Rec) -> list[Any]:
        return _garbage_out(kind_of[id(item)], item)

    def strict(item: Out) -> list[Out]:
        return [Out(item.key, item.path, item.value + 1)]

    first = list(
        map_stage(inputs, sloppy, stage="first", accepts=Rec, policy=policy, context=context)
    )
    second = list(
        map_stage(first, strict, stage="second", accepts=Out, policy=policy, context=context)
    )
    assert len(first) == len(inputs)
    assert len(second) == len(inputs)
    for item, out in zip(inputs, second, strict=True):
        assert isinstance(out, (Out, Failed)), f"{type(out).__name__} crossed the boundary"
        if isinstance(item, Failed):
            assert out is item
        elif not isinstance(item, Rec):
            assert isinstance(out, Failed) and out.stage == "first"
            assert out.reason == "invalid_item"
        elif kind_of[id(item)] == 0:
            assert isinstance(out, Out) and out.value == item.value + 1
        else:
            assert isinstance(out, Failed), out
            assert out.stage == ("first" if kind_of[id(item)] == 2 else "second")


dtypes = st.sampled_from(
    [
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.bool,
    ]
)
frame_counts = st.integers(1, 5).map(lambda k: 4 * (k - 1) + 1)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    frames=frame_counts,
    width=st.integers(1, 6),
    height=st.integers(1, 6),
    shape=st.one_of(
        st.lists(st.integers(0, 6), min_size=0, max_size=6).map(tuple),
        st.just(None),  # None: the bucket's own shape (only the dtype or times may be wrong)
    ),
    dtype=dtypes,
    times_delta=st.sampled_from([0, 0, 0, -1, 1, 2]),
)
def test_clip_rejects_wrong_shapes_and_dtypes(
    frames: int,
    width: int,
    height: int,
    shape: tuple[int, ...] | None,
    dtype: torch.dtype,
    times_delta: int,
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 2: validation integrity

    Clip refuses any pixel shape, dtype or frame-time count that does not match its bucket.
    """
    bucket = Bucket(frames, width, height)
    expected = (frames, 3, height, width)
    shape = expected if shape is None else shape
    pixels = torch.zeros(shape, dtype=dtype)
    n_times = max(0, frames + times_delta)
    times = tuple(i / 16 for i in range(n_times))
    valid = dtype == torch.uint8 and tuple(shape) == expected and n_times == frames

    def make() -> Clip:
        return Clip(
            key="k#0",
            source=_SOURCE,
            pixels=pixels,
            frame_times=times,
            bucket=bucket,
            crop=CropBox(0, 0, width, height),
        )

    if valid:
        clip = make()
        assert clip.pixels.shape == expected
        repr(clip)
    else:
        with pytest.raises(ValueError, match=r"Clip\.|frame_times") as info:
            make()
        assert _SOURCE.path in str(info.value), "the message must name the file"


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    frames=st.integers(-10, 200),
    width=st.integers(-4, 64),
    height=st.integers(-4, 64),
    pixels=st.one_of(st.none(), st.integers(), st.lists(st.integers(0, 255), max_size=4)),
)
def test_bucket_requires_4k_plus_1_frames_and_positive_sides(
    frames: int, width: int, height: int, pixels: Any
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 2: validation integrity

    Bucket refuses frame counts that are not 4k+1 and non-positive sides.

    Also: a Clip whose pixels are not a tensor at all is refused with ValueError.
    """
    valid = frames >= 1 and (frames - 1) % 4 == 0 and width > 0 and height > 0
    if valid:
        bucket = Bucket(frames, width, height)
        assert str(bucket) == f"{frames}x{width}x{height}"
        with pytest.raises(ValueError, match=r"Clip\.pixels"):
            Clip(
                key="k#0",
                source=_SOURCE,
                pixels=pixels,
                frame_times=tuple(float(i) for i in range(frames)),
                bucket=bucket,
                crop=CropBox(0, 0, width, height),
            )
    else:
        with pytest.raises(ValueError, match=r"Bucket\.(frames|width|height)"):
            Bucket(frames, width, height)
