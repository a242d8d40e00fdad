"""breaker.py: a few bad files are skipped, a systemic fault stops the run."""

from __future__ import annotations

import pytest

from wan_data.errors import ConfigError, PipelineHealthError
from wan_data.failures.breaker import FILTER_REASONS, BreakerConfig, CircuitBreaker
from wan_data.items import Failed


def _failed(i: int, reason: str = "unreadable", path: str | None = None) -> Failed:
    p = path or f"/data/bad_{i}.mp4"
    return Failed(
        key=f"c/bad_{i}.mp4",
        path=p,
        stage="probe",
        reason=reason,
        error_type="RuntimeError",
        message=f"file ('{p}') could not be opened.",
    )


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(mandatory: bool = True, **config: object) -> tuple[CircuitBreaker, _Clock]:
    clock = _Clock()
    cfg = BreakerConfig(**config)  # type: ignore[arg-type]
    return CircuitBreaker("probe", config=cfg, mandatory=mandatory, clock=clock), clock


def test_default_config_matches_design() -> None:
    cfg = BreakerConfig()
    assert (cfg.threshold, cfg.min_items, cfg.enabled) == (0.5, 20, True)


def test_does_not_open_before_min_items() -> None:
    breaker, _ = _breaker(min_items=20)
    for i in range(19):
        breaker.record_failure(_failed(i))
    assert breaker.state == "closed"
    assert breaker.failure_rate == 1.0
    with pytest.raises(PipelineHealthError):
        breaker.record_failure(_failed(19))
    assert breaker.state == "open"


def test_exactly_at_threshold_does_not_open() -> None:
    breaker, _ = _breaker(min_items=20, threshold=0.5)
    for i in range(10):
        breaker.record_success()
        breaker.record_failure(_failed(i))
    assert breaker.failure_rate == 0.5
    assert breaker.state == "closed"
    # One more failure tips it over: 11 of 21.
    with pytest.raises(PipelineHealthError):
        breaker.record_failure(_failed(10))


def test_sliding_window_forgets_old_failures() -> None:
    breaker, _ = _breaker(min_items=4, window=4, threshold=0.5)
    breaker.record_failure(_failed(0))
    breaker.record_failure(_failed(1))
    for _ in range(4):
        breaker.record_success()
    assert breaker.failure_rate == 0.0
    breaker.record_failure(_failed(2))
    breaker.record_failure(_failed(3))  # 2 of the last 4: at threshold, still closed
    assert breaker.state == "closed"


def test_filter_reasons_are_ignored() -> None:
    assert {"too_short", "too_long"} <= FILTER_REASONS
    breaker, _ = _breaker(min_items=5)
    for i in range(50):
        breaker.record_failure(_failed(i, reason="too_short"))
    assert breaker.state == "closed"
    assert breaker.failure_rate == 0.0


def test_mandatory_message_names_stage_reasons_and_example() -> None:
    breaker, _ = _breaker(min_items=20)
    for _ in range(5):
        breaker.record_success()
    for i in range(12):
        breaker.record_failure(_failed(i, reason="unreadable"))
    for i in range(12, 14):
        breaker.record_failure(_failed(i, reason="decode_error"))
    with pytest.raises(PipelineHealthError) as info:
        breaker.record_failure(_failed(14, reason="missing", path="/mnt/gone/x.mp4"))
    message = str(info.value)
    assert "stage 'probe'" in message
    assert "[stage=probe]" in message
    assert "75% of the last 20 items" in message
    assert "threshold of 50%" in message
    assert "unreadable x12, e.g. /data/bad_11.mp4" in message
    assert "decode_error x2, e.g. /data/bad_13.mp4" in message
    assert "missing x1, e.g. /mnt/gone/x.mp4" in message
    # Most common cause first.
    assert message.index("unreadable x12") < message.index("decode_error x2")


def test_top_causes_are_limited_to_three() -> None:
    breaker, _ = _breaker(min_items=4, window=4)
    reasons = ["a_reason", "b_reason", "c_reason", "d_reason"]
    with pytest.raises(PipelineHealthError) as info:
        for i, reason in enumerate(reasons):
            breaker.record_failure(_failed(i, reason=reason))
    assert str(info.value).count(" x1, e.g. ") == 3


def test_optional_stage_half_open_cycle() -> None:
    breaker, clock = _breaker(mandatory=False, min_items=4, window=10, cooldown_seconds=30.0)
    assert breaker.allow()
    for i in range(4):
        breaker.record_failure(_failed(i))  # no raise: optional
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.now += 29.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()
    assert breaker.state == "half_open"
    # The trial fails: open again, with a fresh cooldown.
    breaker.record_failure(_failed(5))
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.now += 30.0
    assert breaker.allow()
    assert breaker.state == "half_open"
    # The trial succeeds: closed, with a clean window.
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.failure_rate == 0.0
    assert breaker.allow()
    # A clean window means it takes min_items failures again to reopen.
    for i in range(3):
        breaker.record_failure(_failed(10 + i))
    assert breaker.state == "closed"


def test_disabled_never_opens() -> None:
    breaker, _ = _breaker(enabled=False, min_items=1, window=1)
    for i in range(100):
        breaker.record_failure(_failed(i))
    assert breaker.state == "closed"
    assert breaker.allow()


def test_config_validation_gathers_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        BreakerConfig(threshold=0.0, min_items=0, window=-1, cooldown_seconds=-5)
    problems = info.value.problems
    assert len(problems) == 4
    text = str(info.value)
    for fragment in ("threshold (0.0)", "min_items (0)", "window (-1)", "cooldown_seconds (-5)"):
        assert fragment in text


@pytest.mark.parametrize("threshold", [1.5, -0.1, 0.0])
def test_config_rejects_threshold(threshold: float) -> None:
    with pytest.raises(ConfigError, match="threshold"):
        BreakerConfig(threshold=threshold)


def test_config_window_must_cover_min_items() -> None:
    with pytest.raises(ConfigError, match=r"window \(10\) must be >= min_items \(20\)"):
        BreakerConfig(window=10, min_items=20)
    assert BreakerConfig(threshold=1.0, window=20, min_items=20).threshold == 1.0
