"""Property 5: logging completeness — item types and flow traced at debug level.

Feature: wan-training-pipeline-fixes, Property 5: logging completeness

With the ``wan_data`` logger at DEBUG, every item a stage takes in appears in an ``in=<type>``
line with its key, and every item it puts out (``Failed`` included) in an ``out=<type>`` line.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prop_helpers import (
    BUCKETS,
    FPS,
    FRAMES,
    GOOD_VIDEOS,
    Injection,
    Injector,
    MediaPool,
    Out,
    Rec,
    fast_policy,
    injections,
    recs,
)

from wan_data.failures.breaker import BreakerConfig
from wan_data.failures.mechanism import StageContext, map_stage
from wan_data.items import Failed, Source
from wan_data.stages.decode import DecodeOptions, decode
from wan_data.stages.probe import probe

PROPERTY = "Feature: wan-training-pipeline-fixes, Property 5: logging completeness"
OPTIONS = DecodeOptions(frames=FRAMES, fps=FPS, buckets=BUCKETS)
NAMES = [v.name for v in GOOD_VIDEOS]


def _debug_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]


def _assert_traced(lines: list[str], stage: str, inputs: list[Any], outputs: list[Any]) -> None:
    for item in inputs:
        key = getattr(item, "key", None)
        if key is None:
            key = repr(item)[:80]
        line = f"stage={stage} in={type(item).__name__} key={key}"
        assert line in lines, f"no debug line {line!r}"
    for out in outputs:
        line = f"stage={stage} out={type(out).__name__} key={out.key}"
        assert line in lines, f"no debug line {line!r}"


def _fan(partial: set[str]):
    def fn(item: Rec) -> list[Out | Failed]:
        second: Out | Failed = Out(f"{item.key}#1", item.path, item.value)
        if item.key in partial:
            second = Failed(
                key=f"{item.key}#1",
                path=item.path,
                stage="fan",
                reason="partial",
                error_type="SampleError",
                message=f"clip 1 of {item.path} could not be used.",
            )
        return [Out(f"{item.key}#0", item.path, item.value), second]

    return fn


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(n=st.integers(0, 20), data=st.data())
def test_map_stage_traces_every_input_and_output(
    caplog: pytest.LogCaptureFixture, n: int, data: st.DataObject
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 5: logging completeness

    Every input and output of a map_stage (failures included) is traced.
    """
    items = recs(n)
    keys = [r.key for r in items]
    plan: dict[str, Injection] = (
        data.draw(st.dictionaries(st.sampled_from(keys), injections)) if n else {}
    )
    partial = set(data.draw(st.lists(st.sampled_from(keys), unique=True))) if n else set()
    context = StageContext(breaker_config=BreakerConfig(enabled=False))
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="wan_data"):
        out = list(
            map_stage(
                items,
                Injector(_fan(partial), plan),
                stage="fan",
                accepts=Rec,
                policy=fast_policy(),
                context=context,
            )
        )
    _assert_traced(_debug_lines(caplog), "fan", items, out)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    picks=st.lists(st.sampled_from([*NAMES, "missing.mp4"]), max_size=6),
    data=st.data(),
)
def test_probe_and_decode_trace_every_input_and_output(
    media_pool: MediaPool,
    caplog: pytest.LogCaptureFixture,
    picks: list[str],
    data: st.DataObject,
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 5: logging completeness

    Every input and output of the real probe and decode stages is traced.
    """
    sources = [
        Source(
            key=f"v{i}/{name}",
            path=str(media_pool.good.get(name, media_pool.root / name)),
            media_type="video",
        )
        for i, name in enumerate(picks)
    ]
    policy = fast_policy()
    context = StageContext(breaker_config=BreakerConfig(enabled=False))
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="wan_data"):
        probed = list(probe(sources, policy=policy, context=context))
        ok = [p for p in probed if not isinstance(p, Failed)]
        clips = list(decode(ok, policy=policy, options=OPTIONS, context=context))
    lines = _debug_lines(caplog)
    _assert_traced(lines, "probe", sources, probed)
    _assert_traced(lines, "decode", ok, clips)


junk = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=10),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    items=st.lists(
        st.one_of(
            st.integers(0, 50).map(lambda i: Rec(f"rec/{i}", f"/data/{i}.mp4", i)),
            st.integers(0, 50).map(
                lambda i: Failed(
                    key=f"up/{i}",
                    path=f"/data/up_{i}.mp4",
                    stage="collect",
                    reason="missing",
                    error_type="FileNotFoundError",
                    message=f"/data/up_{i}.mp4 vanished.",
                )
            ),
            junk,
        ),
        max_size=10,
    )
)
@example(items=[None])
@example(
    items=[
        Failed(
            key="up/0",
            path="/data/up_0.mp4",
            stage="collect",
            reason="missing",
            error_type="FileNotFoundError",
            message="/data/up_0.mp4 vanished.",
        )
    ]
)
def test_map_stage_traces_rejected_and_passed_through_items(
    caplog: pytest.LogCaptureFixture, items: list[Any]
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 5: logging completeness

    Rejected inputs and passed-through failures are traced too.

    Inputs a stage rejects (None, numbers, dicts) and failures it passes on are part of the flow
    too: each should get its ``in=`` and ``out=`` line like any other item.
    """
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="wan_data"):
        out = list(
            map_stage(
                items,
                lambda r: [Out(r.key, r.path, r.value)],
                stage="s",
                accepts=Rec,
                policy=fast_policy(),
            )
        )
    _assert_traced(_debug_lines(caplog), "s", items, out)
