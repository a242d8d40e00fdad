"""Worker faults: a frozen, blocked or killed DataLoader worker ends the run with its file named.

Each fault is injected by a user clip stage that misbehaves on one file (``good3.mp4``), in the
worker that happens to hold it: the worker freezes itself (``SIGSTOP``), kills itself
(``SIGKILL``), or blocks forever (standing in for an ``open`` that never returns, such as a
source replaced by a FIFO). ``dataset.loader()`` must then raise a :class:`WorkerError` naming
the worker's pid, the stage and the file, within a bounded time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from media import make_video

from wan_data import WanVideoDataset
from wan_data.items import Clip
from wan_data.observe.alerts import AlertConfig
from wan_data.observe.heartbeat import WorkerError
from wan_data.stages.base import MapStage

pytestmark = pytest.mark.integration

TARGET = "good3.mp4"
OPTIONS: dict[str, Any] = {"frames": [5], "fps": 16, "resolution": (32, 32), "batch_size": 1}


class Misbehave(MapStage[Clip, Clip]):
    """Passes clips through, and on ``TARGET`` freezes, kills or blocks its own process."""

    accepts = Clip

    def __init__(self, fault: str) -> None:
        self.name = f"fault_{fault}"
        self.fault = fault

    def process(self, item: Clip) -> list[Clip]:
        if Path(item.source.path).name == TARGET:
            if self.fault == "sigstop":
                os.kill(os.getpid(), signal.SIGSTOP)
            elif self.fault == "sigkill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif self.fault == "block":
                time.sleep(3600)
        return [item]


def _dataset(root: Path, fault: str, stall_seconds: float | None) -> WanVideoDataset:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(6):
        make_video(root / f"good{i}.mp4", width=32, height=32, fps=16, num_frames=6)
    return WanVideoDataset(
        root,
        **OPTIONS,
        clip_stages=[Misbehave(fault)],
        alerts=AlertConfig(stall_seconds=stall_seconds),
    )


def _fail(ds: WanVideoDataset, **kwargs: Any) -> tuple[WorkerError, float]:
    """Iterate ``ds.loader(...)`` until it raises; the error and the seconds it took."""
    loader = ds.loader(num_workers=2, **kwargs)
    started = time.monotonic()
    with pytest.raises(WorkerError) as caught:
        for _ in loader:
            pass
    return caught.value, time.monotonic() - started


def _assert_names_the_target(error: WorkerError, stage: str) -> None:
    assert error.pid is not None and error.pid != os.getpid()
    assert error.stage == stage
    # A clip stage's item is named by its key, ``<source key>#<clip index>``.
    assert error.path is not None and TARGET in error.path
    text = str(error)
    assert f"DataLoader worker pid ({error.pid})" in text
    assert f"stage={stage}" in text and TARGET in text


@pytest.mark.timeout(120)
def test_a_frozen_worker_fails_the_run_naming_the_worker_and_file(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "data", "sigstop", stall_seconds=2.0)
    error, seconds = _fail(ds)
    _assert_names_the_target(error, "fault_sigstop")
    assert error.reason == "frozen" and "stopped running" in str(error)
    assert seconds < 2.0 + 15.0  # threshold, poll and torch's 5 s liveness check
    with pytest.raises(ProcessLookupError):
        os.kill(error.pid or 0, 0)  # the frozen worker was ended, not left behind


@pytest.mark.timeout(120)
def test_a_worker_blocked_in_a_stage_fails_the_run_naming_the_stage_and_file(
    tmp_path: Path,
) -> None:
    ds = _dataset(tmp_path / "data", "block", stall_seconds=2.0)
    error, seconds = _fail(ds)
    _assert_names_the_target(error, "fault_block")
    assert error.reason == "stalled" and "made no progress" in str(error)
    assert seconds < 2.0 + 15.0


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "start",
    ["fork", pytest.param("spawn", marks=pytest.mark.slow)],  # spawn: ~15 s
)
def test_a_killed_worker_names_the_file_in_flight(tmp_path: Path, start: str) -> None:
    # No stall threshold: naming the file of a dead worker needs no watchdog. Spawned
    # workers receive the heartbeat table while being spawned, forked ones inherit it.
    ds = _dataset(tmp_path / "data", "sigkill", stall_seconds=None)
    error, _ = _fail(ds, multiprocessing_context=start)
    _assert_names_the_target(error, "fault_sigkill")
    assert error.reason == "died" and "exited unexpectedly" in str(error)
    # torch's own error, chained: its "exited unexpectedly", or the lost batch's EOFError when
    # the worker died while the main process received that batch.
    assert isinstance(error.__cause__, (RuntimeError, EOFError, ConnectionError))
    # torch's SIGCHLD handler would raise its error again at any child's exit while the dead
    # worker's pid stays registered; the loader shut the pass down, so nothing surfaces here.
    for _ in range(3):
        subprocess.run(["true"], check=True)
        time.sleep(0.05)


@pytest.mark.timeout(120)
def test_persistent_workers_start_afresh_after_a_worker_fault(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "data", "sigkill", stall_seconds=None)
    loader = ds.loader(num_workers=2, persistent_workers=True)
    for _ in range(2):  # the second pass gets new workers, and the same error
        with pytest.raises(WorkerError) as caught:
            list(loader)
        assert caught.value.path is not None and TARGET in caught.value.path


@pytest.mark.slow  # ~15 s: torch's shutdown waits for the blocked worker
@pytest.mark.timeout(120)
def test_a_plain_dataloader_needs_its_timeout_and_names_no_file(tmp_path: Path) -> None:
    """What docs/reliability.md tells plain DataLoader users: only ``timeout=`` ends a hang."""
    ds = _dataset(tmp_path / "data", "block", stall_seconds=None)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, timeout=3)
    with pytest.raises(RuntimeError, match="timed out") as caught:
        list(loader)
    assert TARGET not in str(caught.value)
