"""heartbeat.py: workers publish what is in flight; the main process finds stuck and dead ones."""

from __future__ import annotations

import copy
import multiprocessing
import os
import pickle
import signal
import time
from typing import Any

import pytest

from wan_data.observe.alerts import AlertConfig, AlertMonitor
from wan_data.observe.heartbeat import (
    BUSY,
    DONE,
    IDLE,
    HeartbeatTable,
    WorkerError,
    WorkerSupervisor,
)
from wan_data.observe.watchdog import StallWatchdog, worker_watchdog


class FakeProcess:
    """A worker as the supervisor sees it."""

    def __init__(self, pid: int, alive: bool = True) -> None:
        self.pid = pid
        self.alive = alive
        self.killed = 0

    def is_alive(self) -> bool:
        return self.alive

    def kill(self) -> None:
        self.killed += 1


def _busy_table(pid: int, stage: str = "decode", path: str = "/data/a.mp4") -> HeartbeatTable:
    table = HeartbeatTable(2)
    slot = table.slot(1)
    slot.attach(pid)
    now = time.monotonic()
    slot.show(stage, path, now, now)
    slot.tick(now)
    return table


def test_slot_round_trip_and_states() -> None:
    table = HeartbeatTable(3)
    slot = table.slot(2)
    assert table.read(2).state == 0 and table.find(os.getpid()) is None
    slot.attach()
    beat = table.read(2)
    assert (beat.pid, beat.state, beat.alive, beat.path) == (os.getpid(), IDLE, 0.0, "")
    slot.show("decode", "/data/clip.mp4", 10.0, 11.0)
    beat = table.read(2)
    assert (beat.stage, beat.path, beat.since, beat.activity) == (
        "decode",
        "/data/clip.mp4",
        10.0,
        11.0,
    )
    assert beat.state == BUSY and table.find(os.getpid()) == beat
    assert beat.describe(now=12.5) == "stage 'decode' on '/data/clip.mp4' for 2.5 s"
    slot.idle(13.0)
    beat = table.read(2)
    assert beat.state == IDLE and beat.path == "/data/clip.mp4"  # the last item stays visible
    assert beat.describe().startswith("no item in flight (last: stage 'decode'")
    slot.done()
    assert table.read(2).state == DONE
    assert table.read(0).pid == 0  # other slots untouched


def test_long_paths_keep_their_tail_and_bad_sizes_are_refused() -> None:
    table = HeartbeatTable(1)
    long = "/mnt/" + "x" * 2000 + "/the_file.mp4"
    table.slot(0).show("a-stage-name-" * 10, long, 0.0, 0.0)
    beat = table.read(0)
    assert beat.path.startswith("...") and beat.path.endswith("/the_file.mp4")
    assert len(beat.path.encode()) < 464 and beat.stage.endswith("-stage-name-")
    with pytest.raises(ValueError, match="heartbeat table size"):
        HeartbeatTable(0)
    with pytest.raises(IndexError, match="heartbeat slot"):
        table.slot(1)


def _publish(table: HeartbeatTable, index: int) -> None:
    table.slot(index).show("probe", f"/data/from-{os.getpid()}.mp4", 1.0, 2.0)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_child_process_writes_what_the_parent_reads(method: str) -> None:
    table = HeartbeatTable(2)
    context: Any = multiprocessing.get_context(method)
    process = context.Process(target=_publish, args=(table, 1))
    process.start()
    process.join(60)
    assert process.exitcode == 0
    assert table.read(1).path == f"/data/from-{process.pid}.mp4"


def test_plain_pickling_gives_an_empty_table_of_the_same_size() -> None:
    table = _busy_table(123)
    for clone in (pickle.loads(pickle.dumps(table)), copy.copy(table)):
        assert clone.size == 2 and clone.read(1).pid == 0
        clone.slot(1).attach(7)
        assert table.read(1).pid == 123  # not the same memory


def test_supervisor_kills_a_worker_whose_item_makes_no_progress() -> None:
    worker = FakeProcess(4321)
    table = _busy_table(4321, "user_stage", "/data/hangs.mp4")
    supervisor = WorkerSupervisor(table, [FakeProcess(99), worker], stall_seconds=2.0)
    now = time.monotonic()
    assert supervisor.check(now + 1.0) is None and worker.killed == 0
    table.slot(1).tick(now + 2.9)  # the process runs; its item does not move
    error = supervisor.check(now + 3.0)
    assert isinstance(error, WorkerError) and isinstance(error, RuntimeError)
    assert (error.pid, error.stage, error.path, error.reason) == (
        4321,
        "user_stage",
        "/data/hangs.mp4",
        "stalled",
    )
    text = str(error)
    assert "4321" in text and "/data/hangs.mp4" in text and "stage=user_stage" in text
    assert "made no progress for 3.0 s" in text
    assert worker.killed == 1 and supervisor.failure is error
    assert supervisor.check(now + 9.0) is None and worker.killed == 1  # once


def test_supervisor_kills_a_frozen_worker_even_between_items() -> None:
    worker = FakeProcess(555)
    table = HeartbeatTable(1)
    slot = table.slot(0)
    slot.attach(555)
    now = time.monotonic()
    slot.show("decode", "/data/last.mp4", now, now)
    slot.idle(now)
    slot.tick(now)
    supervisor = WorkerSupervisor(table, [worker], stall_seconds=1.0)
    assert supervisor.check(now + 0.5) is None  # idle and ticking: waiting for the trainer
    error = supervisor.check(now + 1.5)
    assert error is not None and error.reason == "frozen" and worker.killed == 1
    assert "stopped running" in str(error) and "/data/last.mp4" in str(error)


@pytest.mark.parametrize("case", ["done", "other_pid", "dead", "never_ticked_idle", "no_threshold"])
def test_supervisor_leaves_alone_what_is_not_a_stuck_worker(case: str) -> None:
    worker = FakeProcess(77, alive=case != "dead")
    table = HeartbeatTable(1)
    slot = table.slot(0)
    slot.attach(78 if case == "other_pid" else 77)
    now = time.monotonic()
    if case != "never_ticked_idle":
        slot.show("decode", "/x.mp4", now, now)
        slot.tick(now)
    if case == "done":
        slot.done()
    stall = None if case == "no_threshold" else 1.0
    supervisor = WorkerSupervisor(table, [worker], stall_seconds=stall)
    assert supervisor.check(now + 100.0) is None and worker.killed == 0


def test_explain_names_the_file_a_dead_worker_had_in_flight() -> None:
    table = _busy_table(4242, "decode", "/data/crash.mp4")
    supervisor = WorkerSupervisor(table, [FakeProcess(1), FakeProcess(4242)], None)
    torch_error = RuntimeError("DataLoader worker (pid(s) 4242) exited unexpectedly")
    error = supervisor.explain(torch_error)
    assert error is not None and error.reason == "died"
    assert (error.pid, error.stage, error.path) == (4242, "decode", "/data/crash.mp4")
    assert "exited unexpectedly" in str(error) and "OOM killer" in str(error)
    signal_error = RuntimeError(
        "DataLoader worker (pid 4242) is killed by signal: Killed. See the traceback above."
    )
    assert supervisor.explain(signal_error) is not None
    assert supervisor.explain(RuntimeError("CUDA out of memory")) is None
    assert supervisor.explain(RuntimeError("DataLoader worker (pid(s) 9) exited")) is None
    assert supervisor.explain(error) is error  # already ours


def test_explain_prefers_the_stall_the_supervisor_killed_for() -> None:
    worker = FakeProcess(31)
    table = HeartbeatTable(1)
    table.slot(0).attach(31)
    now = time.monotonic()
    table.slot(0).show("decode", "/data/fifo", now, now)
    supervisor = WorkerSupervisor(table, [worker], stall_seconds=1.0)
    stall = supervisor.check(now + 5.0)
    assert stall is not None
    assert supervisor.explain(RuntimeError("DataLoader worker (pid(s) 31) exited")) is stall


def test_worker_error_pickles_with_its_fields() -> None:
    error = WorkerError("m", pid=3, stage="s", path="p", reason="frozen")
    clone = pickle.loads(pickle.dumps(error))
    assert (str(clone), clone.pid, clone.stage, clone.path, clone.reason) == (
        "m",
        3,
        "s",
        "p",
        "frozen",
    )


def test_the_stall_watchdog_publishes_the_innermost_item() -> None:
    table = HeartbeatTable(1)
    got: list[Any] = []
    with StallWatchdog(60.0, got.append, poll_seconds=0.01) as watchdog:
        watchdog.publish_to(table.slot(0))
        with watchdog.working("batch", "batch 3"):
            assert (table.read(0).stage, table.read(0).path) == ("batch", "batch 3")
            with watchdog.working("decode", "/data/a.mp4"):
                beat = table.read(0)
                assert (beat.state, beat.stage, beat.path) == (BUSY, "decode", "/data/a.mp4")
                before = beat.activity
                watchdog.progress("decode")
                assert table.read(0).activity >= before
            beat = table.read(0)
            assert (beat.state, beat.stage, beat.path) == (BUSY, "batch", "batch 3")
        assert table.read(0).state == IDLE
        deadline = time.monotonic() + 5
        while table.read(0).alive == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert table.read(0).alive > 0  # the thread ticks: the process runs
    assert table.read(0).state == DONE and not got


def test_worker_watchdog_publishes_even_without_a_stall_threshold() -> None:
    table = HeartbeatTable(2)
    quiet = AlertMonitor(AlertConfig(stall_seconds=None))
    for monitor in (None, quiet):
        watchdog = worker_watchdog(monitor, table, 1)
        assert watchdog is not None and watchdog.stall_seconds is None
        with watchdog.working("decode", "/data/b.mp4"):
            assert table.read(1).path == "/data/b.mp4"
            assert watchdog.check() is None and not watchdog.running
        watchdog.close()
    assert worker_watchdog(None, None, None) is None
    assert worker_watchdog(None, table, None) is None  # the main process publishes nothing
    watched = worker_watchdog(AlertMonitor(AlertConfig(stall_seconds=5.0)), table, 0)
    assert watched is not None and watched.stall_seconds == 5.0
    assert table.read(0).pid == os.getpid()
    watched.close()


def _hang_in_stage(table: HeartbeatTable, stall: float, stop_between_items: bool) -> None:
    watchdog = StallWatchdog(stall, lambda alert: None)
    watchdog.publish_to(table.slot(0))
    if stop_between_items:
        with watchdog.working("decode", "/data/done.mp4"):
            pass
        time.sleep(3600)  # idle, ticking, until the test stops this process
    with watchdog.working("user_stage", "/data/blocked.mp4"):
        time.sleep(3600)


@pytest.mark.parametrize("frozen", [False, True])
def test_supervisor_ends_a_real_stuck_process(frozen: bool) -> None:
    table = HeartbeatTable(1)
    process = multiprocessing.get_context("fork").Process(
        target=_hang_in_stage, args=(table, 0.5, frozen), daemon=True
    )
    process.start()
    try:
        deadline = time.monotonic() + 30
        # Alive, and (frozen case) past its one item: stopped before it, the process would have
        # no file to name (a race the CI machine lost once).
        while time.monotonic() < deadline and (
            table.read(0).alive == 0 or (frozen and table.read(0).path != "/data/done.mp4")
        ):
            time.sleep(0.02)
        if frozen:
            assert process.pid is not None
            os.kill(process.pid, signal.SIGSTOP)
        supervisor = WorkerSupervisor(table, [process], stall_seconds=0.5).start()
        process.join(30)
        supervisor.stop()
        assert process.exitcode == -signal.SIGKILL
        error = supervisor.failure
        assert error is not None and error.pid == process.pid
        assert error.reason == ("frozen" if frozen else "stalled")
        expected = "/data/done.mp4" if frozen else "/data/blocked.mp4"
        assert error.path == expected and expected in str(error)
    finally:
        if process.is_alive():
            process.kill()


def test_a_batch_lost_with_its_worker_is_explained_as_the_worker_death() -> None:
    table = _busy_table(808, "decode", "/data/big.mp4")
    dead = FakeProcess(808, alive=False)
    supervisor = WorkerSupervisor(table, [FakeProcess(1), dead], None)
    error = supervisor.explain(EOFError())
    assert error is not None and error.reason == "died"
    assert (error.pid, error.path) == (808, "/data/big.mp4")
    assert "exited unexpectedly (EOFError)" in str(error)
    assert supervisor.reported is error
    alive = WorkerSupervisor(table, [FakeProcess(808)], None)
    assert alive._dead_pids(wait=0.1) == []
    assert alive.explain(ValueError("unrelated")) is None
