"""Alerts: tell a person early that a run is going wrong, once per incident.

The report says what happened after the fact; an alert says it while there is still time to act
(a rising failure rate, memory close to the OOM killer, a decoder hung on one file). Each alert
is logged as a ``WARNING`` on the ``wan_data`` logger and handed to callbacks (a trainer's
notifier), and fires when its threshold is crossed, not on every check while it stays crossed:
a message repeated every few seconds for hours is noise that hides the next real one.

Checks are pure functions of the numbers they are given, so the same :class:`AlertMonitor` works
in a DataLoader worker on its own counters and in the main process on the merged report.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wan_data.errors import ConfigError, format_error
from wan_data.failures.breaker import FILTER_REASONS
from wan_data.observe.memory import MemoryStats

if TYPE_CHECKING:
    from wan_data.observe.watchdog import StallWatchdog

__all__ = ["ALERT_KINDS", "Alert", "AlertConfig", "AlertMonitor"]

logger = logging.getLogger("wan_data")

ALERT_KINDS = ("cache_corruption", "failure_rate", "gpu_memory", "memory", "stall")

_GIB = float(1 << 30)


def _check_fraction(
    problems: list[str], name: str, value: float | None, *, low_inclusive: bool
) -> None:
    if value is None:
        return
    low_ok = value >= 0.0 if low_inclusive else value > 0.0
    if not (isinstance(value, (int, float)) and low_ok and value < 1.0):
        interval = "[0, 1)" if low_inclusive else "(0, 1)"
        problems.append(
            format_error(
                f"alert {name}",
                value,
                f"must be in {interval} or None",
                "use None to disable the check",
            )
        )


@dataclass(frozen=True)
class AlertConfig:
    """Thresholds of the alerts; ``None`` disables a check.

    Every check fires when its value *exceeds* the threshold; a value exactly at the threshold
    does not fire (like the circuit breaker's ``threshold``). Hence fractions must be below 1.

    Args:
        failure_rate: fraction of a stage's input items that failed. Filter rejections
            (``too_short``, ``known_bad``...; see ``breaker.FILTER_REASONS``) are not failures:
            they mean a file does not fit the options, and a dataset of many short clips would
            otherwise alert on every run.
        failure_min_items: items a stage must have received before its rate is judged, so two
            bad files at the start of a run do not alert.
        rss_bytes: resident memory of one process, absolute; catches a leak in one worker long
            before the machine runs out.
        rss_fraction: fraction of the machine's RAM in use, ``(total - available) / total``.
            The machine-wide figure, not this process's RSS over total, because the OOM killer
            acts on the machine: with N workers each process's own share is N times smaller
            than the danger, and the trainer itself holds RAM too.
        gpu_memory_fraction: fraction of the current CUDA device's memory held by live tensors
            (``allocated / total``); only measurable in a process that uses CUDA.
        stall_seconds: how long an item may be in flight with no progress before a ``stall``
            alert (see :class:`StallWatchdog`). Through ``dataset.loader()`` it is also how
            long a DataLoader worker may make no progress (frozen, or blocked on one item)
            before the loader kills it and raises ``WorkerError`` naming the file (see
            :mod:`wan_data.observe.heartbeat`).
    """

    failure_rate: float | None = 0.2
    failure_min_items: int = 20
    rss_bytes: int | None = None
    rss_fraction: float | None = 0.9
    gpu_memory_fraction: float | None = 0.95
    stall_seconds: float | None = 300.0

    def __post_init__(self) -> None:
        problems: list[str] = []
        _check_fraction(problems, "failure_rate", self.failure_rate, low_inclusive=True)
        _check_fraction(problems, "rss_fraction", self.rss_fraction, low_inclusive=False)
        _check_fraction(
            problems, "gpu_memory_fraction", self.gpu_memory_fraction, low_inclusive=False
        )
        if (
            not isinstance(self.failure_min_items, int)
            or isinstance(self.failure_min_items, bool)
            or self.failure_min_items < 1
        ):
            problems.append(
                format_error("alert failure_min_items", self.failure_min_items, "must be >= 1")
            )
        if self.rss_bytes is not None and (
            not isinstance(self.rss_bytes, int)
            or isinstance(self.rss_bytes, bool)
            or self.rss_bytes <= 0
        ):
            problems.append(
                format_error(
                    "alert rss_bytes",
                    self.rss_bytes,
                    "must be a positive number of bytes or None",
                    "e.g. 16 * 2**30 for 16 GiB",
                )
            )
        if self.stall_seconds is not None and not (
            isinstance(self.stall_seconds, (int, float))
            and math.isfinite(self.stall_seconds)
            and self.stall_seconds > 0
        ):
            problems.append(
                format_error(
                    "alert stall_seconds",
                    self.stall_seconds,
                    "must be > 0 or None",
                    "use None to disable the stall watchdog",
                )
            )
        if problems:
            raise ConfigError(problems)


@dataclass(frozen=True)
class Alert:
    """One fired alert.

    Args:
        kind: ``failure_rate``, ``memory``, ``gpu_memory``, ``stall`` or ``cache_corruption``.
        message: the full human-readable message (``<what> (<value>) <rule>. <hint>``).
        value: the measured value that crossed the threshold.
        threshold: the threshold it crossed.
        stage: the pipeline stage concerned, when there is one.
        path: the file or item concerned (for a stall, the item in flight).
        time: when it fired, epoch seconds (comparable across processes, unlike a monotonic
            clock).
    """

    kind: str
    message: str
    value: float
    threshold: float
    stage: str | None = None
    path: str | None = None
    time: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return dataclasses.asdict(self)


def _deliver(alert: Alert, callbacks: Sequence[Callable[[Alert], None]]) -> None:
    """Log ``alert`` and pass it to every callback; a failing callback is logged, not raised.

    A notifier that cannot reach its server must not stop a training run, which is the thing
    the alert is trying to protect.
    """
    logger.warning(
        "%s",
        alert.message,
        extra={
            "stage": alert.stage,
            "path": alert.path,
            "reason": alert.kind,
            "alert_value": alert.value,
            "alert_threshold": alert.threshold,
        },
    )
    for callback in callbacks:
        try:
            callback(alert)
        except Exception as exc:
            logger.error(
                "alert callback %r raised %s: %s (alert %s ignored by it)",
                callback,
                type(exc).__name__,
                exc,
                alert.kind,
                exc_info=True,
                extra={"stage": alert.stage, "path": alert.path, "reason": "alert_callback"},
            )


class AlertMonitor:
    """Compares counters and memory against :class:`AlertConfig`, firing each alert once.

    Every check is edge-triggered: an alert fires when its value goes above the threshold and
    is re-armed when the value drops back to or below it, so a condition that persists for
    hours produces one message, and a second incident produces a second one. Cache corruption
    is a count rather than a level: it fires whenever ``corruption_count`` grows.

    Picklable (a DataLoader worker receives a copy with the same armed state and callbacks, so
    callbacks must be picklable too: module-level functions or ``functools.partial``, not
    lambdas). Thread-safe: the watchdog may emit from its own thread.

    Args:
        config: the thresholds.
        callbacks: called with every fired alert, in the process that fired it.
    """

    def __init__(
        self,
        config: AlertConfig | None = None,
        callbacks: Sequence[Callable[[Alert], None]] = (),
    ) -> None:
        self.config = config if config is not None else AlertConfig()
        self.callbacks: tuple[Callable[[Alert], None], ...] = tuple(callbacks)
        self._active: set[tuple[str, str]] = set()
        self._corruption_count = 0
        self._new_lock()

    def _new_lock(self) -> None:
        self._lock = threading.Lock()
        self._lock_pid = os.getpid()

    @property
    def _guard(self) -> threading.Lock:
        """This process's lock; a forked child gets a new one (a parent thread may hold it)."""
        if self._lock_pid != os.getpid():
            self._new_lock()
        return self._lock

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"], state["_lock_pid"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._new_lock()

    def emit(self, alert: Alert) -> None:
        """Log ``alert`` as a warning and pass it to every callback."""
        _deliver(alert, self.callbacks)

    def stall_watchdog(self, poll_seconds: float | None = None) -> StallWatchdog | None:
        """A :class:`StallWatchdog` that emits through this monitor (``None`` when disabled)."""
        from wan_data.observe.watchdog import StallWatchdog  # it builds this module's Alerts

        if self.config.stall_seconds is None:
            return None
        return StallWatchdog(self.config.stall_seconds, self.emit, poll_seconds=poll_seconds)

    def _edge(self, key: tuple[str, str], crossed: bool) -> bool:
        """Whether a check that is ``crossed`` now should fire (it was not before)."""
        if not crossed:
            self._active.discard(key)
            return False
        if key in self._active:
            return False
        self._active.add(key)
        return True

    def check_metrics(self, snapshot: Mapping[str, Any]) -> list[Alert]:
        """Check per-stage failure rates and cache corruption; emit and return new alerts.

        Args:
            snapshot: ``Metrics.snapshot()`` of one process or ``merge_reports(...)`` of
                several: ``{"stages": {name: {"in", "failed", "failed_by_reason", ...}},
                "cache": {"corruption_count", ...} | None}``.
        """
        fired: list[Alert] = []
        now = time.time()
        with self._guard:
            threshold = self.config.failure_rate
            for stage, counts in sorted((snapshot.get("stages") or {}).items()):
                if threshold is None:
                    break
                items = int(counts.get("in", 0) or 0)
                failed = int(counts.get("failed", 0) or 0)
                by_reason = counts.get("failed_by_reason") or {}
                filtered = sum(int(n) for r, n in by_reason.items() if r in FILTER_REASONS)
                failed = max(failed - filtered, 0)
                rate = failed / items if items else 0.0
                crossed = items >= self.config.failure_min_items and rate > threshold
                if self._edge(("failure_rate", stage), crossed):
                    fired.append(_failure_alert(stage, rate, threshold, failed, items, now))
            cache = snapshot.get("cache")
            if cache:
                count = int(cache.get("corruption_count", 0) or 0)
                if count > self._corruption_count:
                    fired.append(_corruption_alert(count, self._corruption_count, now))
                # A smaller count is a fresh set of counters (a new epoch); follow it down so the
                # next corruption fires.
                self._corruption_count = count
        for alert in fired:
            self.emit(alert)
        return fired

    def check_memory(self, stats: MemoryStats) -> list[Alert]:
        """Check one process's memory; emit and return new alerts.

        A value that could not be measured (``None``) leaves its check as it was.
        """
        fired: list[Alert] = []
        now = time.time()
        config = self.config
        who = f"process {stats.pid}" if stats.pid is not None else "this process"
        with self._guard:
            if config.rss_bytes is not None and stats.rss_bytes is not None:
                crossed = stats.rss_bytes > config.rss_bytes
                if self._edge(("memory", "rss_bytes"), crossed):
                    message = format_error(
                        f"resident memory of {who} in GiB",
                        round(stats.rss_bytes / _GIB, 2),
                        f"exceeds the alert threshold {config.rss_bytes / _GIB:.2f} GiB",
                        "a steady rise is a leak; otherwise lower num_workers, prefetch_factor "
                        "or the frame count and resolution",
                    )
                    fired.append(
                        Alert("memory", message, stats.rss_bytes, config.rss_bytes, time=now)
                    )
            used = stats.used_fraction
            if (
                config.rss_fraction is not None
                and used is not None
                and self._edge(("memory", "rss_fraction"), used > config.rss_fraction)
            ):
                assert stats.available_bytes is not None
                message = format_error(
                    "fraction of the machine's RAM in use",
                    round(used, 3),
                    f"exceeds the alert threshold {config.rss_fraction:g} "
                    f"({stats.available_bytes / _GIB:.2f} GiB left)",
                    "the OOM killer may end the run; lower num_workers, prefetch_factor "
                    "or the decode threads",
                )
                fired.append(Alert("memory", message, used, config.rss_fraction, time=now))
            gpu = stats.gpu_fraction
            if (
                config.gpu_memory_fraction is not None
                and gpu is not None
                and self._edge(("gpu_memory", "allocated"), gpu > config.gpu_memory_fraction)
            ):
                message = format_error(
                    f"fraction of GPU memory allocated by {who}",
                    round(gpu, 3),
                    f"exceeds the alert threshold {config.gpu_memory_fraction:g}",
                    "lower the batch size or resolution, or enable gradient checkpointing "
                    "or VAE tiling",
                )
                fired.append(
                    Alert("gpu_memory", message, gpu, config.gpu_memory_fraction, time=now)
                )
        for alert in fired:
            self.emit(alert)
        return fired


def _failure_alert(
    stage: str, rate: float, threshold: float, failed: int, items: int, now: float
) -> Alert:
    message = format_error(
        f"failure rate of stage '{stage}'",
        round(rate, 4),
        f"exceeds the alert threshold {threshold:g} ({failed} of {items} items failed)",
        "look for a common reason among the skipped files in ds.report() "
        "(a codec, a mount, permissions)",
        stage=stage,
    )
    return Alert("failure_rate", message, rate, threshold, stage=stage, time=now)


def _corruption_alert(count: int, previous: int, now: float) -> Alert:
    message = format_error(
        "latent cache corruption count",
        count,
        f"grew from {previous}",
        "the corrupt entries were quarantined and are re-encoded; repeated corruption points "
        "to a failing disk or a filesystem without atomic rename (see docs/cache.md)",
        stage="cache",
    )
    return Alert("cache_corruption", message, count, previous, stage="cache", time=now)
