"""Property 6: circuit breaker — failure sequences over the threshold open it; under it never.

Feature: wan-training-pipeline-fixes, Property 6: circuit breaker

Random outcome sequences are fed to ``CircuitBreaker`` directly and through ``map_stage``, with
random thresholds, ``min_items`` and windows, and compared with a plain reference model: the
window is the last ``window`` counted outcomes (filter reasons never count), and a mandatory
breaker raises ``PipelineHealthError`` once a window of at least ``min_items`` outcomes has a
failure fraction above the threshold. Optional breakers never raise; ``allow()`` follows
open / half-open / closed with an injected clock.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from prop_helpers import Out, Rec, fast_policy, recs

from wan_data.errors import PipelineHealthError, SampleError
from wan_data.failures.breaker import FILTER_REASONS, BreakerConfig, CircuitBreaker
from wan_data.failures.mechanism import StageContext, map_stage
from wan_data.items import Failed

PROPERTY = "Feature: wan-training-pipeline-fixes, Property 6: circuit breaker"
FAILURE_REASONS = ("decode_error", "unreadable", "missing", "sample_error")

FILTERS = sorted(FILTER_REASONS)


@st.composite
def outcomes(draw: st.DrawFn, max_size: int = 300) -> list[str | None]:
    """Outcome sequences (None = success, else a failure reason, filter reasons included).

    The failure share is drawn per sequence (0 to 100%), so runs that trip the breaker and runs
    that never do are both common.
    """
    failures = draw(st.integers(0, 10))
    filters = draw(st.integers(0, 3))
    pool: list[str | None] = [None] * (10 - failures)
    pool += [FAILURE_REASONS[i % len(FAILURE_REASONS)] for i in range(failures)]
    pool += FILTERS[:filters]
    n = draw(st.integers(0, max_size))
    return draw(st.lists(st.sampled_from(pool or [None]), min_size=n, max_size=n))


@st.composite
def configs(draw: st.DrawFn) -> BreakerConfig:
    min_items = draw(st.integers(1, 30))
    return BreakerConfig(
        threshold=draw(st.floats(0.01, 1.0)),
        min_items=min_items,
        window=draw(st.integers(min_items, 80)),
        cooldown_seconds=draw(st.floats(0.0, 100.0)),
    )


def _failed(i: int, reason: str) -> Failed:
    return Failed(
        key=f"rec/{i}",
        path=f"/data/clip_{i}.mp4",
        stage="decode",
        reason=reason,
        error_type="SampleError",
        message=f"clip {i} failed",
    )


def reference_trip(seq: list[str | None], config: BreakerConfig) -> int | None:
    """Index of the outcome at which the breaker must open (None: never).

    The window is checked after every counted outcome, a success included: a success can
    complete the ``min_items`` window of a stage that fails most of the time.
    """
    window: collections.deque[bool] = collections.deque(maxlen=config.window)
    for i, reason in enumerate(seq):
        if reason in FILTER_REASONS:
            continue
        window.append(reason is None)
        failures = sum(1 for ok in window if not ok)
        if len(window) >= config.min_items and failures / len(window) > config.threshold:
            return i
    return None


def _feed(breaker: CircuitBreaker, seq: list[str | None]) -> int | None:
    for i, reason in enumerate(seq):
        try:
            if reason is None:
                breaker.record_success()
            else:
                breaker.record_failure(_failed(i, reason))
        except PipelineHealthError as exc:
            assert "decode" in str(exc), "the health message names the stage"
            assert any(r in str(exc) for r in FAILURE_REASONS), "and the top causes"
            assert breaker.state == "open"
            return i
    return None


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seq=outcomes(), config=configs())
@example(
    seq=["decode_error"] * 11 + [None] * 9,
    config=BreakerConfig(threshold=0.5, min_items=20, window=100),
)
def test_mandatory_breaker_opens_exactly_when_the_window_crosses_the_threshold(
    seq: list[str | None], config: BreakerConfig
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 6: circuit breaker

    A mandatory CircuitBreaker raises exactly at the reference trip point.
    """
    breaker = CircuitBreaker("decode", config=config)
    expected = reference_trip(seq, config)
    event("tripped" if expected is not None else "stayed closed")
    assert _feed(breaker, seq) == expected
    disabled = CircuitBreaker(
        "decode",
        config=BreakerConfig(
            threshold=config.threshold,
            min_items=config.min_items,
            window=config.window,
            enabled=False,
        ),
    )
    assert _feed(disabled, seq) is None, "a disabled breaker never raises"
    filtered_only = [r for r in seq if r in FILTER_REASONS]
    assert _feed(CircuitBreaker("decode", config=config), filtered_only) is None


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seq=outcomes(), config=configs())
def test_map_stage_stops_at_the_reference_trip_point(
    seq: list[str | None], config: BreakerConfig
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 6: circuit breaker

    map_stage stops with PipelineHealthError at the reference trip point.
    """
    items = recs(len(seq))
    outcome = {r.key: reason for r, reason in zip(items, seq, strict=True)}

    def fn(item: Rec) -> list[Out]:
        reason = outcome[item.key]
        if reason is not None:
            raise SampleError(f"{item.path} is not usable ({reason}).", reason=reason)
        return [Out(item.key, item.path, item.value)]

    context = StageContext(breaker_config=config)
    out: list[Out | Failed] = []
    stream = map_stage(
        items, fn, stage="decode", accepts=Rec, policy=fast_policy(), context=context
    )
    expected = reference_trip(seq, config)
    if expected is None:
        out = list(stream)
        assert len(out) == len(seq)
    else:
        with pytest.raises(PipelineHealthError, match="decode"):
            for item in stream:
                out.append(item)
        # The outcome that trips it is yielded first (so the report keeps a tripping failure),
        # then the run stops: nothing after it is produced.
        assert len(out) == expected + 1, "it stops right after the outcome that trips it"
        assert out[-1].key == items[expected].key
    for item, reason in zip(out, seq, strict=False):
        assert isinstance(item, Failed) == (reason is not None)


@dataclass(frozen=True)
class Step:
    """One step of an optional stage: time passes, then one item is offered."""

    dt: float
    reason: str | None


def timed_outcomes() -> st.SearchStrategy[list[Step]]:
    """Outcome sequences where each item also advances the clock by a drawn amount."""
    return outcomes().flatmap(
        lambda seq: st.lists(
            st.sampled_from([0.0, 0.0, 0.5, 1.0, 10.0, 50.0, 200.0]),
            min_size=len(seq),
            max_size=len(seq),
        ).map(lambda dts: [Step(dt, reason) for dt, reason in zip(dts, seq, strict=True)])
    )


@dataclass
class OptionalModel:
    """Reference model of an optional breaker used the intended way (ask allow() per item)."""

    config: BreakerConfig
    now: float = 0.0
    state: str = "closed"
    opened_at: float = 0.0

    def __post_init__(self) -> None:
        self.window: collections.deque[bool] = collections.deque(maxlen=self.config.window)

    def allow(self) -> bool:
        if self.state == "open" and self.now - self.opened_at >= self.config.cooldown_seconds:
            self.state = "half_open"
        return self.state != "open"

    def record(self, reason: str | None) -> None:
        if reason is None:
            self.window.append(True)
            if self.state == "half_open":
                self.state = "closed"
                self.window.clear()
                return
        elif reason in FILTER_REASONS:
            return
        else:
            self.window.append(False)
            if self.state == "half_open":
                self.state, self.opened_at = "open", self.now
                return
        failures = sum(1 for ok in self.window if not ok)
        if self.state == "closed" and (
            len(self.window) >= self.config.min_items
            and failures / len(self.window) > self.config.threshold
        ):
            self.state, self.opened_at = "open", self.now


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    config=configs(),
    steps=timed_outcomes(),
)
def test_optional_breaker_never_raises_and_allow_follows_the_clock(
    config: BreakerConfig, steps: list[Step]
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 6: circuit breaker

    An optional breaker never raises; allow() follows open/half-open with the clock.
    """
    clock = [0.0]
    breaker = CircuitBreaker("cache", config=config, mandatory=False, clock=lambda: clock[0])
    model = OptionalModel(config)
    for i, step in enumerate(steps):
        clock[0] += step.dt
        model.now = clock[0]
        allowed = breaker.allow()
        assert allowed == model.allow(), f"step {i}: allow() disagrees in state {model.state}"
        assert breaker.state == model.state
        if not allowed:
            continue  # bypassed: nothing to record
        if step.reason is None:
            breaker.record_success()
        else:
            breaker.record_failure(_failed(i, step.reason))  # must never raise
        model.record(step.reason)
        assert breaker.state == model.state, f"step {i}"
        event(f"reached {model.state}")


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    config=configs(),
    steps=timed_outcomes(),
)
def test_optional_map_stage_never_raises_and_bypasses_while_open(
    config: BreakerConfig, steps: list[Step]
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 6: circuit breaker

    An optional map_stage never raises; while its breaker is open its items pass through
    unchanged (bypassed), and a trial after the cooldown closes or reopens it.
    """
    clock = [0.0]
    context = StageContext(breaker_config=config)
    context.breakers["cache"] = CircuitBreaker(
        "cache", config=config, mandatory=False, clock=lambda: clock[0]
    )
    items = recs(len(steps))
    step_of = {r.key: step for r, step in zip(items, steps, strict=True)}

    def paced() -> Iterator[Rec]:
        for item in items:
            clock[0] += step_of[item.key].dt
            yield item

    def fn(item: Rec) -> list[Out]:
        reason = step_of[item.key].reason
        if reason is not None:
            raise SampleError(f"{item.path} could not be cached ({reason}).", reason=reason)
        return [Out(item.key, item.path, item.value)]

    out = list(
        map_stage(
            paced(),
            fn,
            stage="cache",
            accepts=Rec,
            policy=fast_policy(),
            context=context,
            mandatory=False,
        )
    )
    model = OptionalModel(config)
    bypassed = 0
    assert len(out) == len(items)
    for item, result, step in zip(items, out, steps, strict=True):
        model.now += step.dt
        if not model.allow():
            bypassed += 1
            assert result is item, "an open optional stage passes its input through"
            continue
        if step.reason is None:
            assert isinstance(result, Out)
        else:
            assert isinstance(result, Failed) and result.reason == step.reason
        model.record(step.reason)
    stats = context.metrics.stage("cache")
    assert stats.bypassed == bypassed
    event("bypassed some" if bypassed else "never bypassed")
