"""Worker heartbeats: what each DataLoader worker has in flight, readable by the main process.

The stall watchdog of :mod:`wan_data.observe.watchdog` runs inside each worker, so it cannot
see the worker it lives in being frozen (``SIGSTOP``, a debugger, a hung NFS mount holding
every thread), and an alert that only reports leaves the run hanging. When a worker dies
(the OOM killer), torch's error names a pid and nothing else. Both need the main process to
know, at any moment, which stage and file each worker is busy with.

Each worker publishes that in its own slot of a :class:`HeartbeatTable`: a small array of
ctypes structures in shared memory (like :class:`~wan_data.planning.epochs.SharedProgress`),
written by the worker's :class:`~wan_data.observe.watchdog.StallWatchdog` as items enter and
leave stages, with no lock and no system call (a few microseconds per item). The main
process reads it:

- :class:`WorkerSupervisor`, a thread started by :class:`~wan_data.loader.ProgressLoader`,
  fails the run when a worker makes no progress for ``stall_seconds``: it kills the stuck
  worker (torch cannot replace a worker, nor skip its batch, so recovery is not possible
  inside one ``DataLoader`` pass) and the loader raises :class:`WorkerError` naming the pid,
  the stage and the file;
- :meth:`WorkerSupervisor.explain` turns torch's ``DataLoader worker (pid(s) ...) exited
  unexpectedly`` into a :class:`WorkerError` naming what the dead worker had in flight, and
  :func:`defer_worker_errors` keeps torch from raising its bare error first, from a signal
  handler, wherever the main thread happens to be.

A slot is written by one process only (its worker) and read by others; a sequence number
(odd while a write is under way) lets a reader retry instead of reading half a file name.
Times are ``time.monotonic()``, which on Linux and macOS is one clock for every process.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import signal
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.context import get_spawning_popen
from multiprocessing.sharedctypes import RawArray
from types import FrameType
from typing import Any, Protocol

from wan_data.errors import WanDataError, format_error

__all__ = [
    "BUSY",
    "DONE",
    "IDLE",
    "Heartbeat",
    "HeartbeatSlot",
    "HeartbeatTable",
    "WorkerError",
    "WorkerSupervisor",
    "defer_worker_errors",
]

logger = logging.getLogger("wan_data")

# Slot states. UNUSED: no worker has attached this pass; IDLE: between items (waiting for
# the trainer to take prefetched batches, or for the next batch to start); BUSY: an item is
# in flight; DONE: the worker finished its part of the pass.
UNUSED, IDLE, BUSY, DONE = 0, 1, 2, 3
_STATE_NAMES = {UNUSED: "unused", IDLE: "idle", BUSY: "busy", DONE: "done"}

_STAGE_BYTES = 48
_PATH_BYTES = 464  # with the numbers, a slot is 576 bytes


class _Beat(ctypes.Structure):
    """One worker's slot (module level: a spawned worker unpickles the type by name)."""

    _fields_ = [
        ("seq", ctypes.c_int64),  # odd while the worker writes the slot
        ("pid", ctypes.c_int64),
        ("state", ctypes.c_int64),
        ("since", ctypes.c_double),  # when the item in flight entered its stage
        ("activity", ctypes.c_double),  # last item entering/leaving a stage, or progress()
        ("alive", ctypes.c_double),  # last tick of the worker's watchdog thread; 0 = none
        ("stage", ctypes.c_char * _STAGE_BYTES),
        ("path", ctypes.c_char * _PATH_BYTES),
    ]
    seq: int
    pid: int
    state: int
    since: float
    activity: float
    alive: float
    stage: bytes
    path: bytes


def _encode(text: str, size: int) -> bytes:
    """``text`` as at most ``size - 1`` bytes, keeping the end: a path's tail names the file."""
    data = text.encode("utf-8", "replace")
    if len(data) >= size:
        data = b"..." + data[-(size - 4) :]
    return data


@dataclass(frozen=True)
class Heartbeat:
    """A consistent copy of one slot (see :meth:`HeartbeatTable.read`)."""

    index: int
    pid: int
    state: int
    stage: str
    path: str
    since: float
    activity: float
    alive: float

    @property
    def state_name(self) -> str:
        """``unused``, ``idle``, ``busy`` or ``done`` (the number itself for an unknown state)."""
        return _STATE_NAMES.get(self.state, str(self.state))

    def describe(self, now: float | None = None) -> str:
        """``stage 'decode' on '/data/a.mp4' for 12.3 s``, or what it did last when idle."""
        now = time.monotonic() if now is None else now
        if self.state == BUSY and self.path:
            return f"stage '{self.stage}' on {self.path!r} for {now - self.since:.1f} s"
        if self.path:
            return f"no item in flight (last: stage '{self.stage}' on {self.path!r})"
        return "no item in flight"


class HeartbeatTable:
    """One heartbeat slot per DataLoader worker, in shared memory.

    Made in the main process before the workers start; forked workers inherit the mapping,
    spawned workers receive it while being spawned. Plain pickling (``copy``, saving a
    dataset) gives a fresh, empty table of the same size: shared memory cannot travel, and
    another process's heartbeats mean nothing to the copy.
    """

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or size < 1:
            raise ValueError(format_error("heartbeat table size", size, "must be an int >= 1"))
        self.size = size
        self._slots: Any = RawArray(_Beat, size)

    def __getstate__(self) -> dict[str, Any]:
        if get_spawning_popen() is None:
            return {"size": self.size}
        return {"size": self.size, "slots": self._slots}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.size = state["size"]
        self._slots = state.get("slots") or RawArray(_Beat, self.size)

    def __repr__(self) -> str:
        return f"HeartbeatTable({[self.read(i) for i in range(self.size)]})"

    def slot(self, index: int) -> HeartbeatSlot:
        """The writer of slot ``index`` (a worker's ``get_worker_info().id``)."""
        if not 0 <= index < self.size:
            raise IndexError(format_error("heartbeat slot", index, f"must be in [0, {self.size})"))
        return HeartbeatSlot(self._slots[index])

    def read(self, index: int) -> Heartbeat:
        """A consistent copy of slot ``index``.

        Retries while the worker is writing; after a few tries it returns what it read (a
        frozen worker may have stopped mid-write, and a half-written name in an error
        message is better than no message).
        """
        beat = self._slots[index]
        for _ in range(100):
            before = int(beat.seq)
            copy = _snapshot(index, beat)
            if not before & 1 and int(beat.seq) == before:
                return copy
        return _snapshot(index, beat)

    def find(self, pid: int) -> Heartbeat | None:
        """The slot of worker ``pid``, if one has attached this pass."""
        for index in range(self.size):
            if int(self._slots[index].pid) == pid:
                return self.read(index)
        return None


def _snapshot(index: int, beat: _Beat) -> Heartbeat:
    return Heartbeat(
        index=index,
        pid=int(beat.pid),
        state=int(beat.state),
        stage=bytes(beat.stage).decode("utf-8", "replace"),
        path=bytes(beat.path).decode("utf-8", "replace"),
        since=float(beat.since),
        activity=float(beat.activity),
        alive=float(beat.alive),
    )


class HeartbeatSlot:
    """The worker side of one slot. Only its worker writes it, so no lock is needed."""

    __slots__ = ("_beat",)

    def __init__(self, beat: _Beat) -> None:
        self._beat = beat

    def attach(self, pid: int | None = None) -> None:
        """Claim the slot for this process at the start of a pass: idle, never ticked."""
        beat = self._beat
        beat.seq += 1
        beat.pid = os.getpid() if pid is None else pid
        beat.state = IDLE
        beat.stage = b""
        beat.path = b""
        beat.since = beat.activity = time.monotonic()
        beat.alive = 0.0
        beat.seq += 1

    def show(self, stage: str, item: str, since: float, now: float) -> None:
        """``item`` is in flight in ``stage`` since ``since`` (the innermost item)."""
        beat = self._beat
        beat.seq += 1
        beat.state = BUSY
        beat.stage = _encode(stage, _STAGE_BYTES)
        beat.path = _encode(item, _PATH_BYTES)
        beat.since = since
        beat.activity = now
        beat.seq += 1

    def idle(self, now: float) -> None:
        """Nothing in flight; the last item stays visible for messages."""
        beat = self._beat
        beat.state = IDLE
        beat.activity = now

    def activity(self, now: float) -> None:
        """The item in flight made progress."""
        self._beat.activity = now

    def tick(self, now: float) -> None:
        """The worker's watchdog thread runs: the process is not frozen."""
        self._beat.alive = now

    def done(self) -> None:
        """This worker's part of the pass is over; its silence from now on is expected."""
        self._beat.state = DONE


class WorkerError(WanDataError, RuntimeError):
    """A DataLoader worker stalled, froze or died; the message names what it had in flight.

    A ``RuntimeError`` too, so code that caught torch's worker errors still catches it.

    Attributes:
        pid: the worker's process id.
        stage: the stage it was in (``None`` if unknown).
        path: the file or item it was working on (``None`` if unknown).
        reason: ``stalled`` (an item made no progress), ``frozen`` (the process stopped
            running) or ``died``.
    """

    def __init__(
        self,
        message: str,
        *,
        pid: int | None = None,
        stage: str | None = None,
        path: str | None = None,
        reason: str = "died",
    ) -> None:
        super().__init__(message)
        self.pid = pid
        self.stage = stage
        self.path = path
        self.reason = reason

    def __reduce__(self) -> Any:
        kwargs = {"pid": self.pid, "stage": self.stage, "path": self.path, "reason": self.reason}
        return (_rebuild_worker_error, (str(self), kwargs))


def _rebuild_worker_error(message: str, kwargs: dict[str, Any]) -> WorkerError:
    return WorkerError(message, **kwargs)


class _Process(Protocol):
    """What the supervisor needs of a worker (``multiprocessing.Process``)."""

    @property
    def pid(self) -> int | None: ...

    def is_alive(self) -> bool: ...

    def kill(self) -> None: ...


_TORCH_PIDS = re.compile(r"DataLoader worker \(pid(?:\(s\))? ([\d, ]+)\)")


class WorkerSupervisor:
    """Watches a DataLoader pass's workers from the main process (see the module docstring).

    A worker is stuck when its heartbeat shows, for more than ``stall_seconds``,

    - an item in flight with no activity (a decoder blocked in ``open`` on a FIFO, a user
      stage that never returns): ``stalled``; or
    - no tick of its watchdog thread, which ticks every ``stall_seconds / 10`` while the
      worker runs, even when it is idle waiting for the trainer: ``frozen`` (``SIGSTOP``).

    The supervisor then logs the error, remembers it, and kills the worker: the main thread
    is blocked inside torch waiting for that worker's batch, and the worker's death is what
    wakes it (torch's liveness check raises within ``MP_STATUS_CHECK_INTERVAL``, 5 s); the
    loader then raises the remembered error instead. Killing, not recovering: torch can
    neither replace a worker nor skip the batches dealt to it within one pass.

    Args:
        table: the heartbeats the workers publish.
        workers: the worker processes, in worker-id order.
        stall_seconds: the threshold; ``None`` only explains deaths, never kills.
        poll_seconds: how often to look; default ``stall_seconds / 10`` within [0.01, 5] s.
        kill: how to end a stuck worker (tests may replace it).
    """

    def __init__(
        self,
        table: HeartbeatTable,
        workers: Sequence[_Process],
        stall_seconds: float | None,
        poll_seconds: float | None = None,
        kill: Callable[[_Process], None] | None = None,
    ) -> None:
        self.table = table
        self.workers = list(workers)
        self.stall_seconds = stall_seconds
        self.poll_seconds = (
            poll_seconds
            if poll_seconds is not None
            else min(max((stall_seconds or 1.0) / 10, 0.01), 5.0)
        )
        self._kill = kill if kill is not None else _kill
        self.failure: WorkerError | None = None
        self.reported: WorkerError | None = None  # the last error explain() gave out
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> WorkerSupervisor:
        """Start watching (no thread when ``stall_seconds`` is ``None``), and let
        :func:`defer_worker_errors` know these workers."""
        _SUPERVISED.update(p.pid for p in self.workers if p.pid is not None)
        if self.stall_seconds is not None and self._thread is None:
            self._thread = threading.Thread(
                target=_supervise,
                args=(weakref.ref(self), self._stop, self.poll_seconds),
                name="wan_data-worker-supervisor",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (idempotent)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.poll_seconds + 1.0)
        self._thread = None

    def check(self, now: float | None = None) -> WorkerError | None:
        """Look once; on a stuck worker, log, remember and kill it, and return the error."""
        if self.failure is not None or self.stall_seconds is None:
            return None
        now = time.monotonic() if now is None else now
        limit = self.stall_seconds
        for index, process in enumerate(self.workers):
            if index >= self.table.size or process.pid is None:
                continue
            beat = self.table.read(index)
            if beat.pid != process.pid or beat.state not in (IDLE, BUSY):
                continue
            if beat.alive > 0 and now - beat.alive > limit:
                reason, idle = "frozen", now - beat.alive
            elif beat.state == BUSY and now - beat.activity > limit:
                reason, idle = "stalled", now - beat.activity
            else:
                continue
            if not process.is_alive():
                continue  # dead already: torch reports it, explain() names the file
            error = _stuck_error(beat, reason, idle, limit, now)
            self.failure = error
            logger.error(
                "%s",
                error,
                extra={"stage": error.stage, "path": error.path, "reason": f"worker_{reason}"},
            )
            try:
                self._kill(process)
            except Exception:  # it may have exited meanwhile
                logger.exception("could not kill DataLoader worker %s", process.pid)
            return error
        return None

    def explain(self, exc: BaseException) -> WorkerError | None:
        """The :class:`WorkerError` for torch's worker error ``exc`` (``None``: not one).

        A worker this supervisor killed gives the stall it was killed for; another dead
        worker gives what its heartbeat last showed. The error is remembered as ``reported``
        (the loader then shuts the pass's workers down).
        """
        error = self._explain(exc)
        if error is not None:
            self.reported = error
        return error

    def _explain(self, exc: BaseException) -> WorkerError | None:
        for link in _chain(exc):
            if isinstance(link, WorkerError):
                return link
        if self.failure is not None:
            return self.failure
        pids = _torch_pids(exc)
        if not pids and isinstance(exc, _LOST_WORKER):
            # The batch of a worker that just died cannot be received (its end of the
            # connection closed): torch raises this before it sees the death.
            pids = self._dead_pids()
        if not pids:
            return None
        known = {p.pid for p in self.workers}
        if not any(pid in known for pid in pids):
            return None
        now = time.monotonic()
        beats = [(pid, self.table.find(pid)) for pid in pids]
        pid, beat = next(((p, b) for p, b in beats if b is not None), beats[0])
        busy = beat is not None and beat.state == BUSY and bool(beat.path)
        doing = beat.describe(now) if beat is not None else "no heartbeat published"
        others = [f"pid {p}: {b.describe(now)}" for p, b in beats if p != pid and b is not None]
        rule = f"exited unexpectedly ({clean_torch(exc)}) while {doing}"
        if others:
            rule += f"; also: {'; '.join(others)}"
        hint = (
            "a worker killed by signal 9 is usually the OOM killer: check `dmesg`, lower "
            "num_workers, prefetch_factor or the resolution"
            + ("; or the file crashes the decoder: try it alone" if busy else "")
        )
        stage = beat.stage if beat is not None and beat.stage else None
        path = beat.path if beat is not None and beat.path else None
        return WorkerError(
            format_error("DataLoader worker pid", pid, rule, hint, path=path, stage=stage),
            pid=pid,
            stage=stage,
            path=path,
            reason="died",
        )

    def _dead_pids(self, wait: float = 2.0) -> list[int]:
        """The pids of dead workers, waiting up to ``wait`` s for the kernel to tell."""
        deadline = time.monotonic() + wait
        while True:
            dead = [p.pid for p in self.workers if p.pid is not None and not p.is_alive()]
            if dead or time.monotonic() >= deadline:
                return dead
            time.sleep(0.05)


# What receiving a batch raises when its worker died mid-transfer.
_LOST_WORKER = (EOFError, ConnectionError)


def _torch_pids(exc: BaseException) -> list[int]:
    """The worker pids named by torch's error ``exc`` (empty: not a worker error)."""
    match = _TORCH_PIDS.search(str(exc))
    if match is None:
        return []
    return [int(p) for p in match.group(1).replace(" ", "").split(",") if p]


def clean_torch(exc: BaseException) -> str:
    """torch's message without its advice to read the traceback above (there is none)."""
    return (str(exc) or type(exc).__name__).split(". ")[0].strip().rstrip(".")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in seen:
        seen.append(link)
        link = link.__cause__ or link.__context__
    return seen


def _kill(process: _Process) -> None:
    process.kill()


def _stuck_error(
    beat: Heartbeat, reason: str, idle: float, limit: float, now: float
) -> WorkerError:
    if reason == "frozen":
        rule = (
            f"stopped running for {idle:.1f} s (stall threshold {limit:g} s) with "
            f"{beat.describe(now)}; it was killed to end the hang"
        )
        hint = (
            "the process was stopped (SIGSTOP, a debugger) or is blocked in the kernel "
            "(an unresponsive network mount); check the mount of the file"
        )
    else:
        rule = (
            f"made no progress for {idle:.1f} s (stall threshold {limit:g} s) with "
            f"{beat.describe(now)}; it was killed to end the hang"
        )
        hint = (
            "the file may hang the decoder (a FIFO, a damaged stream) or its filesystem may be "
            "unresponsive; check the file and its mount, or raise stall_seconds"
        )
    stage = beat.stage or None
    path = beat.path or None
    return WorkerError(
        format_error("DataLoader worker pid", beat.pid, rule, hint, path=path, stage=stage),
        pid=beat.pid,
        stage=stage,
        path=path,
        reason=reason,
    )


def _supervise(ref: weakref.ref[WorkerSupervisor], stop: threading.Event, poll: float) -> None:
    """Thread body; holds the supervisor weakly so an abandoned one ends its thread."""
    while not stop.wait(poll):
        supervisor = ref()
        if supervisor is None:
            return
        try:
            if supervisor.check() is not None:
                return
        except Exception:  # the thread must survive anything a check meets
            logger.exception("worker supervisor check failed")
        del supervisor


# -- torch's SIGCHLD error, raised wherever the main thread happens to be --------------------

_SUPERVISED: set[int] = set()  # pids of every worker a supervisor watched in this process
_DEFERRING = False


def defer_worker_errors() -> None:
    """Leave the death of a supervised worker to the loader, instead of torch's ``SIGCHLD``.

    torch raises ``RuntimeError: DataLoader worker (pid X) is killed by signal`` from a
    ``SIGCHLD`` handler, so wherever the main thread happens to be: in the training step, in
    a finalizer (where Python only prints it, and the run goes on), and again at every
    later ``SIGCHLD`` of any child until the loader shuts down. That handler only hurries the
    news: torch's loop also checks its workers are alive every 5 s while it waits for a
    batch, and raises the same error there, in the loader, where
    :class:`~wan_data.loader.ProgressLoader` turns it into a :class:`WorkerError` naming the
    file. So this wraps torch's handler (once per process, in the main thread, after torch
    installed it) to drop its error for workers a :class:`WorkerSupervisor` watched; errors
    about any other worker (a plain ``DataLoader``'s) pass through unchanged.
    """
    global _DEFERRING
    if _DEFERRING or not hasattr(signal, "SIGCHLD"):
        return
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGCHLD)
    if not callable(previous):
        return  # torch installs its handler first; without it there is nothing to wrap

    def handler(signum: int, frame: FrameType | None) -> None:
        try:
            previous(signum, frame)
        except RuntimeError as exc:
            if any(pid in _SUPERVISED for pid in _torch_pids(exc)):
                return  # the loader raises it from its next batch, naming the file
            raise

    signal.signal(signal.SIGCHLD, handler)
    _DEFERRING = True
