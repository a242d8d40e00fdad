"""Per-stage circuit breaker: tell a systemic fault from a few bad files.

Skipping bad files is right for a handful of them and wrong when a missing codec or a wrong mount
makes every file fail: the run would "succeed" on nothing. The breaker watches a sliding window of
outcomes; over the threshold a mandatory stage stops the run with the top causes, an optional
stage (a cache write) is bypassed and probed again after a cooldown.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from wan_data.errors import ConfigError, PipelineHealthError, format_error
from wan_data.items import Failed

__all__ = ["FILTER_REASONS", "BreakerConfig", "CircuitBreaker"]

# Rejections that mean "this file does not fit the options" rather than "something is broken":
# they are reported like any skip but do not count toward the breaker's failure rate.
# "filtered" is the reason of a user's filter stage (wan_data.stages.Filter), and
# "missing_caption" that of missing_caption="skip": both are skips the user asked for.
FILTER_REASONS = frozenset(
    {
        "too_short",
        "too_long",
        "too_large",
        "too_small",
        "low_fps",
        "known_bad",
        "filtered",
        "missing_caption",
        "other_split",
    }
)


@dataclass(frozen=True)
class BreakerConfig:
    """Thresholds of the breaker.

    Args:
        threshold: failure fraction above which the breaker opens (0.5 = more than half).
        min_items: outcomes needed in the window before it may open, so two bad files at the
            start of a run do not stop it.
        window: number of most recent outcomes considered.
        cooldown_seconds: how long an open optional stage is bypassed before a trial.
        enabled: ``False`` turns the breaker off (every failure is only skipped).
    """

    threshold: float = 0.5
    min_items: int = 20
    window: int = 100
    cooldown_seconds: float = 30.0
    enabled: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 < self.threshold <= 1.0:
            problems.append(format_error("breaker threshold", self.threshold, "must be in (0, 1]"))
        if self.min_items < 1:
            problems.append(format_error("breaker min_items", self.min_items, "must be >= 1"))
        if self.window < self.min_items:
            problems.append(
                format_error(
                    "breaker window", self.window, f"must be >= min_items ({self.min_items})"
                )
            )
        if self.cooldown_seconds < 0:
            problems.append(
                format_error("breaker cooldown_seconds", self.cooldown_seconds, "must be >= 0")
            )
        if problems:
            raise ConfigError(problems)


@dataclass
class CircuitBreaker:
    """Sliding-window failure counter for one stage in one worker.

    States: ``closed`` (normal), ``open`` (tripped), ``half_open`` (optional stage: one trial
    after the cooldown; success closes it, failure reopens it).
    """

    stage: str
    config: BreakerConfig = field(default_factory=BreakerConfig)
    mandatory: bool = True
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    state: str = "closed"
    _outcomes: collections.deque[bool] = field(init=False, repr=False)
    _failures: collections.deque[Failed] = field(init=False, repr=False)
    _opened_at: float = field(default=0.0, init=False, repr=False)
    _bad: int = field(default=0, init=False, repr=False)  # failures in _outcomes (O(1) rate)

    def __post_init__(self) -> None:
        self._outcomes = collections.deque(maxlen=self.config.window)
        self._failures = collections.deque(maxlen=self.config.window)

    @property
    def failure_rate(self) -> float:
        """Failures per outcome in the current window (0.0 before any outcome)."""
        if not self._outcomes:
            return 0.0
        return self._bad / len(self._outcomes)

    def _append(self, ok: bool) -> None:
        if len(self._outcomes) == self._outcomes.maxlen and not self._outcomes[0]:
            self._bad -= 1  # the oldest outcome, a failure, slides out of the window
        self._outcomes.append(ok)
        self._bad += not ok

    def _clear(self) -> None:
        self._outcomes.clear()
        self._failures.clear()
        self._bad = 0

    def allow(self) -> bool:
        """Whether an optional stage should run for the next item."""
        if self.state == "open" and self.clock() - self._opened_at >= self.config.cooldown_seconds:
            self.state = "half_open"
        return self.state != "open"

    def record_success(self) -> None:
        """Count a success; closes a half-open breaker, and may still trip a closed one.

        A success can complete the ``min_items`` window of a stage that is failing most of the
        time (11 failures then 9 successes is 55 % over 20 items), so the rate is checked here
        too, not only when a failure arrives.
        """
        self._append(True)
        if self.state == "half_open":
            self.state = "closed"
            self._clear()
            return
        self._check()

    def record_failure(self, failed: Failed) -> None:
        """Count a failure; raises :class:`PipelineHealthError` when a mandatory stage trips."""
        if failed.reason in FILTER_REASONS:
            return
        self._append(False)
        self._failures.append(failed)
        if self.state == "half_open":
            self._open()
            return
        self._check()

    def _check(self) -> None:
        if self.state != "closed" or not self.config.enabled:
            return
        if (
            len(self._outcomes) >= self.config.min_items
            and self.failure_rate > self.config.threshold
        ):
            self._open()

    def _open(self) -> None:
        self.state = "open"
        self._opened_at = self.clock()
        if self.mandatory:
            raise PipelineHealthError(self.describe())

    def describe(self) -> str:
        """The health message: rate, top reasons and example files, and what to do."""
        by_reason: collections.Counter[str] = collections.Counter(f.reason for f in self._failures)
        lines = [
            format_error(
                f"failure rate of stage '{self.stage}'",
                f"{self.failure_rate:.0%} of the last {len(self._outcomes)} items",
                f"exceeds the circuit-breaker threshold of {self.config.threshold:.0%}",
                "this looks systemic (a missing codec, a wrong path, a bug), not a few bad "
                "files; fix the cause below, or raise breaker_threshold / pass "
                "breaker_threshold=None to skip them anyway",
                stage=self.stage,
            ),
            "top causes:",
        ]
        for reason, count in by_reason.most_common(3):
            example = next(f for f in reversed(self._failures) if f.reason == reason)
            lines.append(
                f"  - {reason} x{count}, e.g. {example.path}: "
                f"{example.error_type}: {example.message[:200]}"
            )
        return "\n".join(lines)
