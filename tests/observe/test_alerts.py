"""alerts.py: thresholds fire once per crossing, callbacks are safe, the watchdog finds stalls."""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import pickle
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wan_data.errors import ConfigError
from wan_data.latents.store import CacheStats
from wan_data.observe.alerts import Alert, AlertConfig, AlertMonitor
from wan_data.observe.memory import MemoryStats
from wan_data.observe.metrics import Metrics, merge_reports
from wan_data.observe.watchdog import StallWatchdog

GIB = 1 << 30


class Collect:
    """A picklable callback that keeps what it receives."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def __call__(self, alert: Alert) -> None:
        self.alerts.append(alert)


def _raise(alert: Alert) -> None:
    raise RuntimeError("notifier down")


def _append_json(path: str, alert: Alert) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(alert.as_dict()) + "\n")


def _snapshot(
    stage: str = "decode",
    items: int = 100,
    failed: int = 0,
    by_reason: dict[str, int] | None = None,
    corruption: int | None = None,
) -> dict[str, Any]:
    m = Metrics()
    s = m.stage(stage)
    s.items_in, s.items_out, s.failed = items, items - failed, failed
    s.by_reason.update(by_reason if by_reason is not None else {"decode_error": failed})
    if corruption is not None:
        m.cache = CacheStats(misses=corruption, corruption_count=corruption)
    return m.snapshot()


def _memory(used: float = 0.5, gpu: float | None = None, rss: int = GIB) -> MemoryStats:
    total = 100 * GIB
    return MemoryStats(
        rss_bytes=rss,
        available_bytes=round(total * (1 - used)),
        total_bytes=total,
        gpu_allocated_bytes=None if gpu is None else round(gpu * 1000),
        gpu_total_bytes=None if gpu is None else 1000,
        pid=42,
    )


# -- configuration -----------------------------------------------------------------------


def test_default_config_is_valid() -> None:
    c = AlertConfig()
    assert (c.failure_rate, c.failure_min_items, c.rss_bytes) == (0.2, 20, None)
    assert (c.rss_fraction, c.gpu_memory_fraction, c.stall_seconds) == (0.9, 0.95, 300.0)
    AlertConfig(None, 1, None, None, None, None)  # everything disabled


def test_invalid_config_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        AlertConfig(
            failure_rate=1.0,
            failure_min_items=0,
            rss_bytes=-5,
            rss_fraction=0.0,
            gpu_memory_fraction=float("nan"),
            stall_seconds=0,
        )
    problems = info.value.problems
    assert len(problems) == 6
    text = str(info.value)
    for name in (
        "failure_rate",
        "failure_min_items",
        "rss_bytes",
        "rss_fraction",
        "gpu_memory_fraction",
        "stall_seconds",
    ):
        assert f"alert {name} (" in text
    assert "must be in [0, 1) or None" in text


# -- failure rate --------------------------------------------------------------------------


def test_failure_rate_fires_above_threshold_not_at_it(caplog: pytest.LogCaptureFixture) -> None:
    monitor = AlertMonitor(AlertConfig(failure_rate=0.2, failure_min_items=20))
    assert monitor.check_metrics(_snapshot(items=100, failed=20)) == []  # exactly 0.2
    caplog.set_level(logging.WARNING, logger="wan_data")
    fired = monitor.check_metrics(_snapshot(items=100, failed=21))
    assert [a.kind for a in fired] == ["failure_rate"]
    alert = fired[0]
    assert alert.stage == "decode" and alert.path is None
    assert alert.value == pytest.approx(0.21) and alert.threshold == 0.2
    assert "failure rate of stage 'decode' (0.21) exceeds the alert threshold 0.2" in alert.message
    assert "(21 of 100 items failed)" in alert.message
    assert alert.message.endswith("[stage=decode]")
    assert abs(alert.time - time.time()) < 60
    records = [r for r in caplog.records if r.name == "wan_data"]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == alert.message
    assert (record.stage, record.path, record.reason) == ("decode", None, "failure_rate")  # type: ignore[attr-defined]


def test_failure_rate_needs_min_items() -> None:
    monitor = AlertMonitor(AlertConfig(failure_rate=0.2, failure_min_items=20))
    assert monitor.check_metrics(_snapshot(items=19, failed=19)) == []
    assert len(monitor.check_metrics(_snapshot(items=20, failed=19))) == 1


def test_failure_rate_fires_once_and_rearms() -> None:
    monitor = AlertMonitor(AlertConfig(failure_rate=0.2, failure_min_items=1))
    assert len(monitor.check_metrics(_snapshot(failed=50))) == 1
    assert monitor.check_metrics(_snapshot(failed=60)) == []  # still above: silent
    assert monitor.check_metrics(_snapshot(failed=90)) == []
    assert monitor.check_metrics(_snapshot(failed=20)) == []  # back to the threshold: re-armed
    assert len(monitor.check_metrics(_snapshot(failed=30))) == 1


def test_failure_rate_is_per_stage() -> None:
    monitor = AlertMonitor(AlertConfig(failure_rate=0.1, failure_min_items=1))
    assert [a.stage for a in monitor.check_metrics(_snapshot("probe", failed=50))] == ["probe"]
    both = _snapshot("probe", failed=50)
    both["stages"].update(_snapshot("decode", failed=50)["stages"])
    assert [a.stage for a in monitor.check_metrics(both)] == ["decode"]


def test_filter_rejections_are_not_failures() -> None:
    monitor = AlertMonitor(AlertConfig(failure_rate=0.2, failure_min_items=1))
    snap = _snapshot("probe", failed=60, by_reason={"too_short": 50, "unreadable": 10})
    assert monitor.check_metrics(snap) == []
    snap = _snapshot("probe", failed=80, by_reason={"too_short": 50, "unreadable": 30})
    assert [round(a.value, 2) for a in monitor.check_metrics(snap)] == [0.3]


def test_merged_report_is_accepted() -> None:
    report = merge_reports([_snapshot(failed=10), _snapshot(failed=40), {}])
    fired = AlertMonitor(AlertConfig(failure_rate=0.2)).check_metrics(report)
    assert [(a.kind, a.value) for a in fired] == [("failure_rate", 0.25)]


def test_disabled_failure_rate_never_fires() -> None:
    monitor = AlertMonitor(AlertConfig(failure_rate=None))
    assert monitor.check_metrics(_snapshot(failed=100)) == []


# -- cache corruption ------------------------------------------------------------------------


def test_cache_corruption_fires_on_every_increase() -> None:
    monitor = AlertMonitor()
    assert monitor.check_metrics(_snapshot(corruption=0)) == []
    fired = monitor.check_metrics(_snapshot(corruption=2))
    assert [(a.kind, a.value, a.threshold, a.stage) for a in fired] == [
        ("cache_corruption", 2, 0, "cache")
    ]
    assert "latent cache corruption count (2) grew from 0" in fired[0].message
    assert monitor.check_metrics(_snapshot(corruption=2)) == []
    assert [a.value for a in monitor.check_metrics(_snapshot(corruption=3))] == [3]
    # Fresh counters (a new epoch) start lower; the next increase fires again.
    assert monitor.check_metrics(_snapshot(corruption=1)) == []
    assert [a.value for a in monitor.check_metrics(_snapshot(corruption=2))] == [2]


def test_no_cache_no_alert() -> None:
    assert AlertMonitor().check_metrics(_snapshot(corruption=None)) == []
    assert AlertMonitor().check_metrics({}) == []


# -- memory ------------------------------------------------------------------------------


def test_machine_memory_fraction() -> None:
    monitor = AlertMonitor(AlertConfig(rss_fraction=0.9))
    assert monitor.check_memory(_memory(used=0.9)) == []  # exactly at the threshold
    fired = monitor.check_memory(_memory(used=0.95))
    assert [(a.kind, round(a.value, 3), a.threshold) for a in fired] == [("memory", 0.95, 0.9)]
    assert "fraction of the machine's RAM in use (0.95) exceeds" in fired[0].message
    assert "5.00 GiB left" in fired[0].message
    assert monitor.check_memory(_memory(used=0.99)) == []
    assert monitor.check_memory(_memory(used=0.5)) == []
    assert len(monitor.check_memory(_memory(used=0.91))) == 1


def test_process_rss_bytes() -> None:
    monitor = AlertMonitor(AlertConfig(rss_bytes=8 * GIB, rss_fraction=None))
    assert monitor.check_memory(_memory(rss=8 * GIB)) == []
    fired = monitor.check_memory(_memory(rss=10 * GIB))
    assert [(a.kind, a.value, a.threshold) for a in fired] == [("memory", 10 * GIB, 8 * GIB)]
    assert "resident memory of process 42 in GiB (10.0) exceeds" in fired[0].message
    assert monitor.check_memory(_memory(rss=11 * GIB)) == []


def test_rss_bytes_and_fraction_are_separate_alerts() -> None:
    monitor = AlertMonitor(AlertConfig(rss_bytes=GIB, rss_fraction=0.5))
    fired = monitor.check_memory(_memory(used=0.6, rss=2 * GIB))
    assert [(a.kind, a.threshold) for a in fired] == [("memory", GIB), ("memory", 0.5)]


def test_gpu_memory_fraction() -> None:
    monitor = AlertMonitor(AlertConfig(gpu_memory_fraction=0.95))
    assert monitor.check_memory(_memory(gpu=0.95)) == []
    fired = monitor.check_memory(_memory(gpu=0.97))
    assert [(a.kind, a.value) for a in fired] == [("gpu_memory", 0.97)]
    assert monitor.check_memory(_memory(gpu=0.99)) == []
    assert monitor.check_memory(_memory(gpu=0.1)) == []
    assert len(monitor.check_memory(_memory(gpu=0.96))) == 1


def test_unmeasured_values_leave_checks_alone() -> None:
    monitor = AlertMonitor(AlertConfig(rss_bytes=1))
    assert monitor.check_memory(MemoryStats()) == []
    assert len(monitor.check_memory(_memory(used=0.95, gpu=0.99))) == 3
    # An unreadable measurement neither re-arms nor fires.
    assert monitor.check_memory(MemoryStats()) == []
    assert monitor.check_memory(_memory(used=0.95, gpu=0.99)) == []


# -- callbacks and pickling ----------------------------------------------------------------


def test_callbacks_receive_every_alert() -> None:
    first, second = Collect(), Collect()
    monitor = AlertMonitor(AlertConfig(failure_min_items=1), callbacks=[first, second])
    fired = monitor.check_metrics(_snapshot(failed=50, corruption=1))
    assert [a.kind for a in fired] == ["failure_rate", "cache_corruption"]
    assert first.alerts == fired and second.alerts == fired


def test_raising_callback_is_logged_and_does_not_propagate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="wan_data")
    after = Collect()
    monitor = AlertMonitor(AlertConfig(failure_min_items=1), callbacks=[_raise, after])
    fired = monitor.check_metrics(_snapshot(failed=50))
    assert len(fired) == 1 and after.alerts == fired
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "RuntimeError: notifier down" in errors[0].getMessage()
    assert errors[0].exc_info is not None


def test_emit_logs_and_calls_back() -> None:
    got = Collect()
    alert = Alert("stall", "m", 1.0, 0.5, stage="decode", path="a.mp4", time=1.0)
    AlertMonitor(callbacks=[got]).emit(alert)
    assert got.alerts == [alert]
    assert alert.as_dict() == {
        "kind": "stall",
        "message": "m",
        "value": 1.0,
        "threshold": 0.5,
        "stage": "decode",
        "path": "a.mp4",
        "time": 1.0,
    }


def test_monitor_pickles_with_config_callbacks_and_state() -> None:
    monitor = AlertMonitor(
        AlertConfig(failure_rate=0.1, failure_min_items=1), callbacks=[Collect()]
    )
    assert len(monitor.check_metrics(_snapshot(failed=50))) == 1
    copy = pickle.loads(pickle.dumps(monitor))
    assert copy.config == monitor.config
    assert isinstance(copy.callbacks[0], Collect)
    assert copy.check_metrics(_snapshot(failed=50)) == []  # still armed-off, as in the original
    assert copy.check_metrics(_snapshot(failed=0)) == []
    fired = copy.check_metrics(_snapshot(failed=50))
    assert len(fired) == 1 and copy.callbacks[0].alerts[-1:] == fired  # type: ignore[attr-defined]
    assert pickle.loads(pickle.dumps(Alert("memory", "m", 1, 2))).kind == "memory"


# -- stall watchdog --------------------------------------------------------------------------


def _blocking_stage(watchdog: StallWatchdog, items: list[str], seconds: float) -> Iterator[str]:
    for item in items:
        with watchdog.working("decode", item):
            time.sleep(seconds)
        yield item


def test_blocked_stage_fires_exactly_one_stall_alert() -> None:
    got = Collect()
    with StallWatchdog(0.1, got, poll_seconds=0.02) as watchdog:
        assert list(_blocking_stage(watchdog, ["clips/slow.mp4"], 0.5)) == ["clips/slow.mp4"]
        time.sleep(0.1)  # idle with nothing in flight: no stall
    assert len(got.alerts) == 1
    alert = got.alerts[0]
    assert (alert.kind, alert.stage, alert.path) == ("stall", "decode", "clips/slow.mp4")
    assert 0.1 < alert.value < 0.5 and alert.threshold == 0.1
    assert "stage 'decode' working on ('clips/slow.mp4') made no progress for" in alert.message
    assert alert.message.endswith("[stage=decode]")


def test_continuous_progress_does_not_fire() -> None:
    got = Collect()
    with StallWatchdog(0.25, got, poll_seconds=0.02) as watchdog:
        with watchdog.working("decode", "long.mp4"):
            end = time.monotonic() + 0.6
            while time.monotonic() < end:
                time.sleep(0.01)
                watchdog.progress("decode")
        # Quick items one after another are progress too.
        for i in range(30):
            with watchdog.working("decode", f"{i}.mp4"):
                time.sleep(0.01)
    assert got.alerts == []


def test_stall_fires_again_only_after_progress() -> None:
    got = Collect()
    with (
        StallWatchdog(0.1, got, poll_seconds=0.02) as watchdog,
        watchdog.working("batch", "batch-7"),
        watchdog.working("decode", "a.mp4"),
    ):
        time.sleep(0.35)
        assert len(got.alerts) == 1
        watchdog.progress("decode")
        time.sleep(0.35)
    assert [a.path for a in got.alerts] == ["a.mp4", "a.mp4"]
    # The innermost item is named; the enclosing one is listed.
    assert "also in flight: batch 'batch-7' for" in got.alerts[0].message


def test_watchdog_thread_is_lazy_daemon_and_closes() -> None:
    watchdog = StallWatchdog(10.0, Collect())
    assert watchdog.poll_seconds == 1.0
    assert not watchdog.running
    watchdog.progress("decode")
    assert watchdog.running
    assert watchdog._thread is not None and watchdog._thread.daemon
    watchdog.close()
    assert not watchdog.running
    watchdog.progress("decode")  # closed: tracks, never restarts
    assert not watchdog.running


def test_raising_on_stall_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="wan_data")
    watchdog = StallWatchdog(0.05, _raise, poll_seconds=10)  # the thread stays out of it
    with watchdog.working("probe", "x.mp4"):
        time.sleep(0.1)
        alert = watchdog.check()
        assert alert is not None and alert.stage == "probe"
        assert watchdog.check() is None  # once per stall
    watchdog.close()
    assert any("stall callback" in r.getMessage() for r in caplog.records)


def test_watchdog_pickles_without_thread_and_works_after() -> None:
    got = Collect()
    with StallWatchdog(0.1, got, poll_seconds=0.02) as watchdog:
        watchdog.progress("decode")
        assert watchdog.running
    # Closed here; closing is per process, so a copy for a worker still watches.
    copy = pickle.loads(pickle.dumps(watchdog))
    assert not copy.running and copy.stall_seconds == 0.1
    with copy:
        list(_blocking_stage(copy, ["b.mp4"], 0.3))
    assert [a.path for a in copy.on_stall.alerts] == ["b.mp4"]  # type: ignore[attr-defined]


def test_invalid_watchdog_arguments() -> None:
    with pytest.raises(ConfigError) as info:
        StallWatchdog(0, Collect(), poll_seconds=-1)
    assert len(info.value.problems) == 2


def test_monitor_builds_a_watchdog_that_emits_through_it() -> None:
    assert AlertMonitor(AlertConfig(stall_seconds=None)).stall_watchdog() is None
    got = Collect()
    monitor = AlertMonitor(AlertConfig(stall_seconds=0.1), callbacks=[got])
    watchdog = monitor.stall_watchdog(poll_seconds=0.02)
    assert watchdog is not None
    with watchdog:
        list(_blocking_stage(watchdog, ["c.mp4"], 0.3))
    assert [(a.kind, a.path) for a in got.alerts] == [("stall", "c.mp4")]


def _stall_in_child(watchdog: StallWatchdog) -> None:
    list(_blocking_stage(watchdog, ["child.mp4"], 0.4))
    watchdog.close()


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_forked_child_runs_its_own_watchdog(tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    watchdog = StallWatchdog(0.1, functools.partial(_append_json, str(out)), poll_seconds=0.02)
    watchdog.progress("decode")  # the parent's thread runs; the child inherits none
    assert watchdog.running
    child = multiprocessing.get_context("fork").Process(target=_stall_in_child, args=(watchdog,))
    child.start()
    child.join(30)
    watchdog.close()
    assert child.exitcode == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(a["kind"], a["stage"], a["path"]) for a in lines] == [("stall", "decode", "child.mp4")]
