"""Property 1: error recovery — any stage, any injected error.

Feature: wan-training-pipeline-fixes, Property 1: error recovery

An exception of any (non-fatal) type raised for any item in any stage turns that item into a
``Failed`` naming the stage, the reason, the file and the cause, logged as a warning; every other
item still comes out, in order; an error that goes away on retry costs nothing.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prop_helpers import (
    BUCKETS,
    FPS,
    FRAMES,
    GOOD_VIDEOS,
    Injection,
    Injector,
    Out,
    Rec,
    expected_outcome,
    fast_policy,
    injections,
    recs,
)

import wan_data.stages.decode
import wan_data.stages.probe
from wan_data.errors import SampleError
from wan_data.failures.breaker import BreakerConfig
from wan_data.failures.mechanism import StageContext, map_stage
from wan_data.items import Clip, Failed, Source
from wan_data.stages.decode import DecodeOptions, decode
from wan_data.stages.probe import probe

PROPERTY = "Feature: wan-training-pipeline-fixes, Property 1: error recovery"
OPTIONS = DecodeOptions(frames=FRAMES, fps=FPS, buckets=BUCKETS)
REAL_PROBE_METADATA = wan_data.stages.probe.probe_metadata
REAL_DECODE_ONE = wan_data.stages.decode.decode_one


def _forward(item: Rec | Out) -> list[Out]:
    return [Out(key=item.key, path=item.path, value=item.value + 1)]


def _check_failed(
    failed: Failed,
    *,
    stage: str,
    key: str,
    path: str,
    injection: Injection,
    reason: str,
    attempts: int,
    warnings: list[str],
) -> None:
    exc = injection.make()
    assert failed.stage == stage
    assert failed.key == key
    assert failed.path == path
    assert failed.reason == reason
    assert failed.error_type == type(exc).__name__
    assert failed.attempts == attempts
    assert failed.message.strip(), f"{failed!r} has no message"
    if isinstance(exc, SampleError):
        assert str(exc) in failed.message
    else:
        assert path in failed.message and type(exc).__name__ in failed.message
    assert any(path in m and f"stage={stage}" in m for m in warnings), (
        f"no warning names {path} at stage={stage}: {warnings}"
    )


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(n=st.integers(0, 25), num_stages=st.integers(1, 3), data=st.data())
def test_map_stage_pipeline_recovers_from_any_injected_error(
    caplog: pytest.LogCaptureFixture, n: int, num_stages: int, data: st.DataObject
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 1: error recovery

    Chains of one to three map_stage stages, errors injected into any of them.
    """
    items = recs(n)
    keys = [r.key for r in items]
    plans: list[dict[str, Injection]] = [
        data.draw(st.dictionaries(st.sampled_from(keys), injections, max_size=n)) if n else {}
        for _ in range(num_stages)
    ]
    policy = fast_policy()
    context = StageContext(breaker_config=BreakerConfig(enabled=False))
    injectors = [Injector(_forward, plan) for plan in plans]
    stream: object = items
    for j, injector in enumerate(injectors):
        stream = map_stage(
            stream,  # type: ignore[arg-type]
            injector,
            stage=f"stage{j}",
            accepts=(Rec, Out),
            policy=policy,
            context=context,
        )
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="wan_data"):
        out = list(stream)  # type: ignore[call-overload]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    assert [o.key for o in out] == keys, "items lost, duplicated or reordered"
    for item, result in zip(items, out, strict=True):
        expected = None
        for j, plan in enumerate(plans):
            outcome = expected_outcome(plan.get(item.key), policy)
            if outcome is not None:
                expected = (j, plan[item.key], *outcome)
                break
            injection = plan.get(item.key)
            if injection is not None:  # transient: retried until it succeeded
                assert injectors[j].calls[item.key] == injection.fail_attempts + 1
        if expected is None:
            assert isinstance(result, Out), result
            assert result.value == item.value + num_stages
            continue
        j, injection, reason, attempts = expected
        assert isinstance(result, Failed), result
        _check_failed(
            result,
            stage=f"stage{j}",
            key=item.key,
            path=item.path,
            injection=injection,
            reason=reason,
            attempts=attempts,
            warnings=warnings,
        )
        for later in injectors[j + 1 :]:
            assert item.key not in later.calls, "a Failed item was processed again downstream"
    assert context.metrics.stage("stage0").items_in == n


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    picks=st.lists(st.sampled_from([v.name for v in GOOD_VIDEOS]), min_size=1, max_size=8),
    data=st.data(),
)
def test_probe_and_decode_recover_from_any_injected_error(
    media_pool, caplog: pytest.LogCaptureFixture, picks: list[str], data: st.DataObject
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 1: error recovery

    The real probe and decode stages, their inner functions failing on demand.
    """
    sources = [
        Source(key=f"v{i}/{name}", path=str(media_pool.good[name]), media_type="video")
        for i, name in enumerate(picks)
    ]
    keys = [s.key for s in sources]
    probe_plan = data.draw(st.dictionaries(st.sampled_from(keys), injections), label="probe")
    decode_plan = data.draw(st.dictionaries(st.sampled_from(keys), injections), label="decode")
    policy = fast_policy()
    context = StageContext(breaker_config=BreakerConfig(enabled=False))
    probe_injector = Injector(REAL_PROBE_METADATA, probe_plan)
    decode_injector = Injector(REAL_DECODE_ONE, decode_plan)
    caplog.clear()
    with (
        pytest.MonkeyPatch.context() as mp,
        caplog.at_level(logging.DEBUG, logger="wan_data"),
    ):
        mp.setattr(wan_data.stages.probe, "probe_metadata", probe_injector)
        mp.setattr(wan_data.stages.decode, "decode_one", decode_injector)
        probed = probe(sources, policy=policy, context=context)
        out = list(decode(probed, policy=policy, options=OPTIONS, context=context))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    assert len(out) == len(sources)
    for source, result in zip(sources, out, strict=True):
        probe_outcome = expected_outcome(probe_plan.get(source.key), policy)
        decode_outcome = expected_outcome(decode_plan.get(source.key), policy)
        if probe_outcome is not None:
            stage, injection, (reason, attempts) = "probe", probe_plan[source.key], probe_outcome
        elif decode_outcome is not None:
            stage, injection, (reason, attempts) = "decode", decode_plan[source.key], decode_outcome
        else:
            assert isinstance(result, Clip), result
            assert result.key == f"{source.key}#0"
            assert result.source == source
            continue
        assert isinstance(result, Failed), result
        _check_failed(
            result,
            stage=stage,
            key=source.key,
            path=source.path,
            injection=injection,
            reason=reason,
            attempts=attempts,
            warnings=warnings,
        )
    assert context.metrics.stage("probe").items_in == len(sources)
    probed_ok = sum(1 for s in sources if expected_outcome(probe_plan.get(s.key), policy) is None)
    assert context.metrics.stage("probe").items_out == probed_ok
    assert context.metrics.stage("decode").items_in == probed_ok
