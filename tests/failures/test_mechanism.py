"""pipeline.py: map_stage (the mechanism behind every stage) and drop_failed."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from wan_data.errors import FatalError, PipelineHealthError, SampleError
from wan_data.failures.breaker import BreakerConfig, CircuitBreaker
from wan_data.failures.mechanism import StageContext, drop_failed, failure_hint, map_stage
from wan_data.failures.policy import Action, ErrorPolicy
from wan_data.items import Bucket, Clip, CropBox, Failed, Source
from wan_data.testing import check_stage_contract, fingerprint


@dataclass(frozen=True)
class Num:
    """A minimal stage input: an int with a key and a path, like a real item."""

    value: int

    @property
    def key(self) -> str:
        return f"n/{self.value}"

    @property
    def path(self) -> str:
        return f"/data/{self.value}.mp4"


@dataclass(frozen=True)
class Doubled:
    key: str
    value: int


def _double(n: Num) -> list[Doubled]:
    if n.value < 0:
        raise SampleError(f"value ({n.value}) must be >= 0. use a positive one.", reason="negative")
    return [Doubled(n.key, n.value * 2)]


def _fan_out(n: Num) -> list[Doubled | Failed]:
    """Two outputs per input, the second a partial failure for odd values; negatives fail."""
    if n.value < 0:
        raise SampleError(f"value ({n.value}) must be >= 0.", reason="negative")
    second: Doubled | Failed = Doubled(f"{n.key}#1", n.value * 2 + 1)
    if n.value % 2:
        second = Failed(
            key=f"{n.key}#1",
            path=n.path,
            stage="fan",
            reason="partial",
            error_type="SampleError",
            message="clip (1) could not be decoded.",
        )
    return [Doubled(f"{n.key}#0", n.value * 2), second]


def _to_clip(n: Num) -> list[Clip]:
    source = Source(key=n.key, path=n.path, media_type="video")
    gen = torch.Generator().manual_seed(n.value)
    pixels = torch.randint(0, 256, (5, 3, 4, 8), generator=gen, dtype=torch.uint8)
    return [
        Clip(
            key=f"{n.key}#0",
            source=source,
            pixels=pixels,
            frame_times=tuple(i / 16 for i in range(5)),
            bucket=Bucket(5, 8, 4),
            crop=CropBox(0, 0, 8, 4),
        )
    ]


def _fail_all(n: Num) -> list[Doubled]:
    raise RuntimeError("Could not open input file: Invalid data found when processing input")


def _policy(waits: list[float] | None = None) -> ErrorPolicy:
    return ErrorPolicy(sleep=(waits.append if waits is not None else lambda s: None))


def _upstream_failed() -> Failed:
    return Failed(
        key="up/x",
        path="/data/up.mp4",
        stage="probe",
        reason="unreadable",
        error_type="RuntimeError",
        message="file ('/data/up.mp4') could not be opened.",
    )


# --- the stage contract ---------------------------------------------------------------------


def test_map_stage_contract() -> None:
    check_stage_contract(
        map_stage, [Num(1), Num(2), Num(3)], fn=_double, stage="double", accepts=Num
    )


def test_map_stage_contract_with_failures_and_fan_out() -> None:
    check_stage_contract(
        map_stage, [Num(1), Num(-4), Num(2), Num(7)], fn=_fan_out, stage="fan", accepts=Num
    )
    check_stage_contract(map_stage, [Num(-1), Num(5)], fn=_double, stage="double", accepts=Num)


def test_map_stage_contract_with_tensors() -> None:
    check_stage_contract(map_stage, [Num(1), Num(2)], fn=_to_clip, stage="clip", accepts=Num)


def test_contract_with_custom_policy_keyword() -> None:
    def stage(items: Iterable[Any], *, error_policy: ErrorPolicy) -> Iterator[Any]:
        return map_stage(items, _double, stage="double", accepts=Num, policy=error_policy)

    check_stage_contract(stage, [Num(1)], policy_kw="error_policy")


# The contract must catch stages that break it.


def _lets_none_through(items: Iterable[Any], *, policy: ErrorPolicy) -> Iterator[Any]:
    for item in items:
        if item is None:
            yield None
            continue
        yield from map_stage([item], _double, stage="double", accepts=Num, policy=policy)


def _drops_failed(items: Iterable[Any], *, policy: ErrorPolicy) -> Iterator[Any]:
    for out in map_stage(items, _double, stage="double", accepts=Num, policy=policy):
        if not (isinstance(out, Failed) and out.reason == "unreadable"):
            yield out


def _copies_failed(items: Iterable[Any], *, policy: ErrorPolicy) -> Iterator[Any]:
    for out in map_stage(items, _double, stage="double", accepts=Num, policy=policy):
        if isinstance(out, Failed) and out.reason == "unreadable":
            yield Failed(**{**out.as_record(), "stage": out.stage})
        else:
            yield out


def _random_outputs(items: Iterable[Any], *, policy: ErrorPolicy) -> Iterator[Any]:
    def fn(n: Num) -> list[Doubled]:
        return [Doubled(n.key, random.randint(0, 10**9))]

    return map_stage(items, fn, stage="rand", accepts=Num, policy=policy)


def _accepts_anything(items: Iterable[Any], *, policy: ErrorPolicy) -> Iterator[Any]:
    return map_stage(items, lambda x: [x], stage="any", accepts=object, policy=policy)


def _local_function() -> Any:
    def inner() -> None:
        """Equal to itself across runs, but a local object: pickle refuses it."""

    return inner


_NOT_PICKLABLE = _local_function()


def _unpicklable(items: Iterable[Any], *, policy: ErrorPolicy) -> Iterator[Any]:
    def fn(n: Num) -> list[Any]:
        return [Doubled(n.key, n.value), _NOT_PICKLABLE]

    return map_stage(items, fn, stage="lock", accepts=Num, policy=policy)


def _not_empty(items: Iterable[Any], *, policy: ErrorPolicy) -> Iterator[Any]:
    yield Doubled("header", 0)
    yield from map_stage(items, _double, stage="double", accepts=Num, policy=policy)


@pytest.mark.parametrize(
    ("broken", "clause"),
    [
        (_not_empty, "(a)"),
        (_drops_failed, "(b)"),
        (_copies_failed, "(b)"),
        (_random_outputs, "(c)"),
        (_lets_none_through, "(d)"),
        (_accepts_anything, "(d)"),
        (_unpicklable, "(f)"),
    ],
)
def test_contract_catches_broken_stages(broken: Any, clause: str) -> None:
    with pytest.raises(AssertionError) as info:
        check_stage_contract(broken, [Num(1), Num(2)])
    assert str(info.value).startswith(clause)


def test_contract_needs_good_inputs() -> None:
    with pytest.raises(AssertionError, match="at least one good input"):
        check_stage_contract(map_stage, [], fn=_double, stage="double", accepts=Num)


def test_fingerprint_compares_tensors_by_value() -> None:
    (a,) = _to_clip(Num(3))
    (b,) = _to_clip(Num(3))
    (c,) = _to_clip(Num(4))
    assert a.pixels is not b.pixels
    assert fingerprint([a]) == fingerprint([b])
    assert fingerprint([a]) != fingerprint([c])
    assert fingerprint(torch.zeros(2)) != fingerprint(torch.zeros(2, dtype=torch.float64))
    assert fingerprint((1, 2)) != fingerprint([1, 2])


# --- counting -------------------------------------------------------------------------------


def test_counts_in_out_failed_and_reasons() -> None:
    ctx = StageContext()
    upstream = _upstream_failed()
    items: list[Any] = [Num(1), upstream, Num(-2), Num(3), None]
    out = list(
        map_stage(items, _double, stage="double", accepts=Num, policy=_policy(), context=ctx)
    )
    assert [getattr(o, "value", None) for o in out if isinstance(o, Doubled)] == [2, 6]
    assert out[1] is upstream
    stats = ctx.metrics.stages["double"]
    # The upstream Failed is not an input of this stage; None is (and fails as invalid_item).
    assert (stats.items_in, stats.items_out, stats.failed) == (4, 2, 2)
    assert stats.by_reason == {"negative": 1, "invalid_item": 1}
    assert stats.by_error_type == {"SampleError": 1, "TypeError": 1}
    assert stats.seconds > 0


def test_fn_returning_failed_is_counted_and_passed_on() -> None:
    ctx = StageContext()
    out = list(
        map_stage(
            [Num(1), Num(2)], _fan_out, stage="fan", accepts=Num, policy=_policy(), context=ctx
        )
    )
    assert [o.key for o in out] == ["n/1#0", "n/1#1", "n/2#0", "n/2#1"]
    assert isinstance(out[1], Failed)
    assert out[1].reason == "partial"
    stats = ctx.metrics.stages["fan"]
    assert (stats.items_in, stats.items_out, stats.failed) == (2, 3, 1)
    assert stats.by_reason == {"partial": 1}
    assert len(ctx.breakers["fan"]._failures) == 1


def test_invalid_item_message() -> None:
    (failed,) = list(map_stage([42], _double, stage="double", accepts=Num, policy=_policy()))
    assert isinstance(failed, Failed)
    assert (failed.reason, failed.stage, failed.error_type) == (
        "invalid_item",
        "double",
        "TypeError",
    )
    assert "input of stage 'double' ('int') must be Num." in failed.message
    assert "wiring bug" in failed.message
    assert failed.key == "42"


def test_invalid_item_names_accepted_types() -> None:
    (failed,) = list(
        map_stage([None], _double, stage="s", accepts=(Num, Doubled), policy=_policy())
    )
    assert isinstance(failed, Failed)
    assert "must be Num or Doubled" in failed.message


# --- retries and messages -------------------------------------------------------------------


def test_flaky_fn_is_retried() -> None:
    calls: list[int] = []

    def flaky(n: Num) -> list[Doubled]:
        calls.append(n.value)
        if len(calls) <= 2:
            raise TimeoutError("NFS read timed out")
        return [Doubled(n.key, n.value)]

    waits: list[float] = []
    ctx = StageContext()
    out = list(
        map_stage([Num(9)], flaky, stage="s", accepts=Num, policy=_policy(waits), context=ctx)
    )
    assert out == [Doubled("n/9", 9)]
    assert calls == [9, 9, 9]
    assert waits == pytest.approx([0.05, 0.1])
    stats = ctx.metrics.stages["s"]
    assert (stats.items_in, stats.items_out, stats.failed) == (1, 1, 0)


def test_exhausted_retries_become_failed_with_attempts() -> None:
    def always_slow(n: Num) -> list[Doubled]:
        raise TimeoutError("NFS read timed out")

    (failed,) = list(map_stage([Num(1)], always_slow, stage="s", accepts=Num, policy=_policy()))
    assert isinstance(failed, Failed)
    assert (failed.reason, failed.attempts, failed.error_type) == ("timeout", 3, "TimeoutError")


def test_sample_error_message_kept_verbatim() -> None:
    (failed,) = list(map_stage([Num(-5)], _double, stage="s", accepts=Num, policy=_policy()))
    assert isinstance(failed, Failed)
    assert failed.message == "value (-5) must be >= 0. use a positive one."
    assert (failed.reason, failed.key, failed.path) == ("negative", "n/-5", "/data/-5.mp4")


def test_other_errors_get_file_stage_and_hint() -> None:
    (failed,) = list(map_stage([Num(1)], _fail_all, stage="probe", accepts=Num, policy=_policy()))
    assert isinstance(failed, Failed)
    assert failed.reason == "unreadable"
    assert failed.message.startswith("probe of file ('/data/1.mp4') failed with RuntimeError: ")
    assert "Invalid data found" in failed.message
    assert failure_hint("unreadable") in failed.message
    assert failed.message.endswith("[stage=probe]")


def test_fatal_error_stops_the_stage() -> None:
    def no_ffmpeg(n: Num) -> list[Doubled]:
        raise OSError("libavcodec.so.59: cannot open shared object file")

    stage = map_stage([Num(1), Num(2)], no_ffmpeg, stage="decode", accepts=Num, policy=_policy())
    with pytest.raises(FatalError, match=r"file=/data/1\.mp4"):
        next(stage)


def test_failure_hint() -> None:
    assert "re-encode" in failure_hint("decode_error")
    assert failure_hint("no_such_reason") == ""
    # A machine fault must not read as a verdict on the file; a bomb is not a wan_data bug.
    assert "never ledgered" in failure_hint("io_transient")
    assert "ulimit" in failure_hint("io_transient")
    assert "downscale" in failure_hint("too_large")
    assert "symlink loop" in failure_hint("missing")


# --- circuit breaker ------------------------------------------------------------------------


def test_systemic_failure_stops_mandatory_stage_mid_stream() -> None:
    items = [Num(i) for i in range(25)]
    stage = map_stage(items, _fail_all, stage="probe", accepts=Num, policy=_policy())
    seen: list[Any] = []
    with pytest.raises(PipelineHealthError) as info:
        for out in stage:
            seen.append(out)
    # The 20th failure (min_items) trips the breaker; it is yielded first, so the report
    # keeps every failure that led to the stop.
    assert len(seen) == 20
    assert all(isinstance(o, Failed) for o in seen)
    message = str(info.value)
    assert "stage 'probe'" in message
    assert "unreadable x20" in message
    assert "/data/19.mp4" in message


def test_systemic_failure_does_not_stop_optional_stage() -> None:
    ctx = StageContext()
    items = [Num(i) for i in range(25)]
    out = list(
        map_stage(
            items,
            _fail_all,
            stage="cache",
            accepts=Num,
            policy=_policy(),
            context=ctx,
            mandatory=False,
        )
    )
    assert len(out) == 25
    # 20 failures open the breaker; the 5 items after it bypass the optional stage unchanged.
    assert all(isinstance(o, Failed) and o.reason == "unreadable" for o in out[:20])
    assert out[20:] == items[20:]
    assert ctx.breakers["cache"].state == "open"
    assert ctx.metrics.stages["cache"].failed == 20
    assert ctx.metrics.stages["cache"].bypassed == 5


def test_optional_stage_retries_after_cooldown_and_closes_on_success() -> None:
    now = [0.0]
    ctx = StageContext(breaker_config=BreakerConfig(min_items=2, window=4, cooldown_seconds=10))
    ctx.breakers["cache"] = CircuitBreaker(
        "cache", config=ctx.breaker_config, mandatory=False, clock=lambda: now[0]
    )
    healthy = [False]

    def flaky(n: Num) -> list[Num]:
        if not healthy[0]:
            raise RuntimeError("Could not open input file: disk gone")
        return [Num(n.value * 10)]

    stage = map_stage(
        iter([Num(i) for i in range(6)]),
        flaky,
        stage="cache",
        accepts=Num,
        policy=_policy(),
        context=ctx,
        mandatory=False,
    )
    first = [next(stage) for _ in range(3)]  # two failures open it, the third is bypassed
    assert [type(o).__name__ for o in first] == ["Failed", "Failed", "Num"]
    assert first[2] == Num(2)
    healthy[0] = True
    now[0] = 11.0  # cooldown over: half-open trial succeeds and closes the breaker
    rest = list(stage)
    assert rest == [Num(30), Num(40), Num(50)]
    assert ctx.breakers["cache"].state == "closed"


def test_warning_decision_passes_the_item_through_an_optional_stage() -> None:
    policy = ErrorPolicy(
        backoff_seconds=0, extra_rules=((ValueError, "minor", Action.WARN, "minor_issue"),)
    )
    ctx = StageContext()

    def fn(n: Num) -> list[Num]:
        raise ValueError("a minor problem")

    out = list(
        map_stage(
            [Num(1)], fn, stage="cache", accepts=Num, policy=policy, context=ctx, mandatory=False
        )
    )
    assert out == [Num(1)]
    assert ctx.metrics.stages["cache"].warned == 1
    assert ctx.metrics.warnings["cache:minor_issue"] == 1
    mandatory = list(map_stage([Num(1)], fn, stage="decode", accepts=Num, policy=policy))
    assert isinstance(mandatory[0], Failed) and mandatory[0].reason == "minor_issue"


def test_few_failures_do_not_trip() -> None:
    items = [Num(-1) if i % 3 == 0 else Num(i) for i in range(60)]
    out = list(map_stage(items, _double, stage="s", accepts=Num, policy=_policy()))
    assert sum(isinstance(o, Failed) for o in out) == 20
    assert len(out) == 60


def test_breaker_config_comes_from_context() -> None:
    ctx = StageContext(breaker_config=BreakerConfig(enabled=False))
    out = list(
        map_stage(
            [Num(i) for i in range(40)],
            _fail_all,
            stage="s",
            accepts=Num,
            policy=_policy(),
            context=ctx,
        )
    )
    assert len(out) == 40
    assert ctx.breaker("s").state == "closed"


# --- debug tracing --------------------------------------------------------------------------


def test_debug_logging_traces_every_item(caplog: pytest.LogCaptureFixture) -> None:
    items = [Num(1), Num(-2), Num(3)]
    with caplog.at_level(logging.DEBUG, logger="wan_data"):
        out = list(map_stage(items, _fan_out, stage="fan", accepts=Num, policy=_policy()))
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    in_lines = [m for m in debug if " in=" in m]
    out_lines = [m for m in debug if " out=" in m]
    assert len(in_lines) == 3
    for item in items:
        assert any(f"key={item.key}" in m and "stage=fan" in m for m in in_lines), item
    assert len(out_lines) == len(out) == 5
    for o in out:
        assert any(m.endswith(f"key={o.key}") for m in out_lines), o
    assert any("out=Failed key=n/-2" in m for m in out_lines)
    assert any("out=Doubled key=n/1#0" in m for m in out_lines)


def test_debug_logging_traces_invalid_items(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="wan_data"):
        (failed,) = list(map_stage([42], _double, stage="s", accepts=Num, policy=_policy()))
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert debug == ["stage=s in=int key=42", "stage=s out=Failed key=42"]
    assert isinstance(failed, Failed)


# --- drop_failed ----------------------------------------------------------------------------


def test_drop_failed_records_and_drops() -> None:
    ctx = StageContext(epoch=3)
    failed = _upstream_failed()
    items: list[Any] = [Doubled("a", 1), failed, None, Doubled("b", 2)]
    assert list(drop_failed(items, context=ctx)) == [Doubled("a", 1), Doubled("b", 2)]
    assert ctx.metrics.skipped == [{**failed.as_record(), "epoch": 3}]
    assert ctx.metrics.warnings == {"none_item_dropped": 1}


def test_drop_failed_is_lazy() -> None:
    def source() -> Iterator[Any]:
        yield Doubled("a", 1)
        raise AssertionError("read too far")

    assert next(drop_failed(source())) == Doubled("a", 1)


def test_stage_context_breaker_is_shared() -> None:
    ctx = StageContext()
    assert ctx.breaker("x") is ctx.breaker("x", mandatory=False)
    assert ctx.breaker("x").mandatory is True
    assert ctx.breaker("y", mandatory=False).mandatory is False


def test_quiet_reasons_log_returned_failures_at_debug_and_still_count_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def judge(n: Num) -> list[Num | Failed]:
        if n.value > 0:
            return [n]
        reason = "expected" if n.value == 0 else "broken"
        return [Failed(f"n{n.value}", f"/n{n.value}", "judge", reason, "ValueError", "no")]

    context = StageContext()
    caplog.set_level(logging.DEBUG, logger="wan_data")
    out = list(
        map_stage(
            [Num(1), Num(0), Num(-1)],
            judge,
            stage="judge",
            accepts=Num,
            policy=ErrorPolicy(),
            context=context,
            quiet_reasons=("expected",),
        )
    )
    assert [getattr(o, "reason", None) for o in out] == [None, "expected", "broken"]
    skips = [r for r in caplog.records if r.getMessage().startswith("skipped")]
    assert [(r.levelname, r.getMessage().split()[1]) for r in skips] == [
        ("DEBUG", "/n0"),
        ("WARNING", "/n-1"),
    ]
    assert context.metrics.stages["judge"].by_reason == {"expected": 1, "broken": 1}
