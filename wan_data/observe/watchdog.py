"""The stall watchdog: notices when the pipeline stops making progress on an item.

A decoder hung on one file (a network filesystem that stopped answering, an FFmpeg bug) shows
in no counter: nothing fails, nothing finishes. Stages announce the item they work on
(``context.watchdog.working(stage, item)``), and a thread raises the ``stall`` alert of
:mod:`wan_data.observe.alerts` when one item takes longer than ``AlertConfig.stall_seconds``.

In a DataLoader worker the watchdog also publishes what is in flight to the worker's
heartbeat slot (:mod:`wan_data.observe.heartbeat`, see :func:`worker_watchdog`), because an
alert raised inside the worker can neither see the worker frozen nor end the hang: the main
process reads the slot to fail the run, naming the stage and file.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from wan_data.errors import ConfigError, format_error
from wan_data.observe.alerts import Alert, AlertMonitor
from wan_data.observe.heartbeat import HeartbeatSlot, HeartbeatTable

__all__ = ["StallWatchdog", "worker_watchdog"]

logger = logging.getLogger("wan_data")

# -- stall watchdog --------------------------------------------------------------------------

# Guards the lazy start of watchdog threads. Replaced in a forked child, where a thread of the
# parent may have held it at the moment of the fork.
_START_LOCK = threading.Lock()


def _reset_start_lock() -> None:
    global _START_LOCK
    _START_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_start_lock)


@dataclass
class _InFlight:
    stage: str
    item: str
    started: float


class StallWatchdog:
    """Notices when the pipeline stops making progress on an item.

    A decoder hung on one damaged file, or a read from an unresponsive network mount, raises
    nothing: the run just stops, and the DataLoader's own ``timeout`` (when set at all) names
    neither the file nor the stage. Stages mark the item they work on with :meth:`working` and
    may beat :meth:`progress`; a daemon thread checks every ``poll_seconds``.

    A stall is: at least one item in flight and no activity (an item entering or leaving
    :meth:`working`, or a :meth:`progress` call, in any stage) for more than ``stall_seconds``.
    Activity anywhere counts because stages are nested generators in one thread: while a
    batch waits for a decode, the batch item is in flight without being stuck. The alert names
    the most recently entered item (the innermost, which is what blocks) and lists the others.
    It fires once per stall; the next activity re-arms it.

    The thread starts on first use in each process and is dropped by pickling and by fork, so
    one watchdog built in the main process works in every DataLoader worker. It is a daemon
    and never keeps the interpreter alive; :meth:`close` stops it.

    Args:
        stall_seconds: seconds without activity that make a stall; ``None``: never fires
            and starts no thread, only tracks and publishes to a heartbeat slot.
        on_stall: called with the ``stall`` alert, from the watchdog thread (e.g.
            :meth:`AlertMonitor.emit`); an exception it raises is logged.
        poll_seconds: how often to check; default ``stall_seconds / 10`` within [0.01, 10] s.
            An alert comes at most this much after ``stall_seconds``.
    """

    def __init__(
        self,
        stall_seconds: float | None,
        on_stall: Callable[[Alert], None],
        poll_seconds: float | None = None,
    ) -> None:
        problems = []
        if stall_seconds is not None and not (
            isinstance(stall_seconds, (int, float)) and 0 < stall_seconds < math.inf
        ):
            problems.append(format_error("watchdog stall_seconds", stall_seconds, "must be > 0"))
        if poll_seconds is not None and not (
            isinstance(poll_seconds, (int, float)) and 0 < poll_seconds < math.inf
        ):
            problems.append(
                format_error(
                    "watchdog poll_seconds", poll_seconds, "must be > 0 or None", "None = auto"
                )
            )
        if problems:
            raise ConfigError(problems)
        self.stall_seconds = float(stall_seconds) if stall_seconds is not None else None
        self.on_stall = on_stall
        self.poll_seconds = (
            float(poll_seconds)
            if poll_seconds is not None
            else min(max((self.stall_seconds or 100.0) / 10, 0.01), 10.0)
        )
        self._tokens = itertools.count()
        self._heartbeat: HeartbeatSlot | None = None
        self._reset()

    def _reset(self) -> None:
        """Fresh per-process state: nothing in flight, no thread, an unheld lock, not closed.

        The token counter is kept: a forked child may still leave a block its parent entered,
        and a reused token would remove the child's own entry.
        """
        self._pid = os.getpid()
        self._closed = False
        self._lock = threading.Lock()
        self._inflight: dict[int, _InFlight] = {}
        self._last_activity = time.monotonic()
        self._fired = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {
            "stall_seconds": self.stall_seconds,
            "on_stall": self.on_stall,
            "poll_seconds": self.poll_seconds,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._tokens = itertools.count()
        self._heartbeat = None  # a slot belongs to one worker: never carried by a copy
        self._reset()

    def publish_to(self, slot: HeartbeatSlot) -> None:
        """Publish what is in flight to ``slot`` (a worker's heartbeat), from now on.

        The watchdog thread then also ticks the slot every ``poll_seconds``, which tells the
        main process this worker is running even while it has nothing in flight.
        """
        self._own()
        slot.attach()
        self._heartbeat = slot

    def __enter__(self) -> StallWatchdog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """Whether this process's watchdog thread is alive."""
        thread = self._thread
        return self._pid == os.getpid() and thread is not None and thread.is_alive()

    def _own(self) -> None:
        """In a forked child, drop the parent's thread and lock state.

        A parent thread may have held the lock at the moment of the fork, and the parent's
        thread does not exist in the child.
        """
        if self._pid != os.getpid():
            self._reset()

    def _ensure_started(self) -> None:
        self._own()
        if self._thread is not None or self._closed or self.stall_seconds is None:
            return
        with _START_LOCK:
            if self._thread is not None:
                return
            thread = threading.Thread(
                target=_watch,
                args=(weakref.ref(self), self._stop, self.poll_seconds, self._heartbeat),
                name=f"wan_data-stall-watchdog-{self._pid}",
                daemon=True,
            )
            thread.start()
            self._thread = thread

    def _activity(self) -> None:
        self._last_activity = time.monotonic()
        self._fired = False

    @contextlib.contextmanager
    def working(self, stage: str, item: str) -> Iterator[None]:
        """Mark ``item`` in flight in ``stage`` for the duration of the block."""
        self._ensure_started()
        heartbeat = self._heartbeat
        with self._lock:
            token = next(self._tokens)
            entry = _InFlight(stage, str(item), time.monotonic())
            self._inflight[token] = entry
            self._activity()
            if heartbeat is not None:
                heartbeat.show(entry.stage, entry.item, entry.started, entry.started)
        try:
            yield
        finally:
            self._own()
            with self._lock:
                self._inflight.pop(token, None)
                self._activity()
                if heartbeat is not None and heartbeat is self._heartbeat:
                    # Show the innermost item still in flight (the enclosing stage's).
                    now = self._last_activity
                    if self._inflight:
                        inner = self._inflight[max(self._inflight)]
                        heartbeat.show(inner.stage, inner.item, inner.started, now)
                    else:
                        heartbeat.idle(now)

    def progress(self, stage: str) -> None:
        """Heartbeat: ``stage`` is making progress (e.g. a frame decoded)."""
        self._ensure_started()
        with self._lock:
            self._activity()
            if self._heartbeat is not None:
                self._heartbeat.activity(self._last_activity)

    def check(self) -> Alert | None:
        """Fire the stall alert if there is a new stall (the thread calls this; so may tests)."""
        if self._pid != os.getpid() or self._closed or self.stall_seconds is None:
            return None
        with self._lock:
            if self._fired or not self._inflight:
                return None
            threshold = self.stall_seconds
            idle = time.monotonic() - self._last_activity
            if threshold is None or idle <= threshold:
                return None
            self._fired = True
            entries = sorted(self._inflight.items())
        _, current = entries[-1]
        others = [e for _, e in entries[:-1]]
        alert = _stall_alert(current, others, idle, threshold)
        try:
            self.on_stall(alert)
        except Exception as exc:
            logger.error(
                "stall callback %r raised %s: %s",
                self.on_stall,
                type(exc).__name__,
                exc,
                exc_info=True,
                extra={"stage": current.stage, "path": current.item, "reason": "alert_callback"},
            )
        return alert

    def close(self) -> None:
        """Stop this process's thread (idempotent); a closed watchdog tracks but never fires.

        Closing is per process: a copy pickled to, or forked into, another process afterwards
        starts open, so closing the main process's watchdog does not silence the workers.
        """
        self._own()  # the parent's event and thread are not this process's to touch
        if self._heartbeat is not None:
            self._heartbeat.done()  # silence from now on is expected, not a freeze
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.poll_seconds + 1.0)
        self._thread = None


def _watch(
    ref: weakref.ref[StallWatchdog],
    stop: threading.Event,
    poll: float,
    heartbeat: HeartbeatSlot | None,
) -> None:
    """Thread body; holds the watchdog only weakly so an abandoned one ends its thread.

    Each round also ticks the heartbeat slot: a tick proves the process runs (a frozen
    worker's threads stop with it), which the main process cannot tell from idleness alone.
    """
    if heartbeat is not None:
        heartbeat.tick(time.monotonic())
    while not stop.wait(poll):
        watchdog = ref()
        if watchdog is None or watchdog._closed:
            return
        if heartbeat is not None:
            heartbeat.tick(time.monotonic())
        try:
            watchdog.check()
        except Exception:  # the thread must survive anything a check meets
            logger.exception("stall watchdog check failed")
        del watchdog


def _stall_alert(
    current: _InFlight, others: list[_InFlight], idle: float, threshold: float
) -> Alert:
    now = time.monotonic()
    rule = f"made no progress for {idle:.1f} s (stall threshold {threshold:g} s)"
    if others:
        shown = ", ".join(
            f"{e.stage} {e.item!r} for {now - e.started:.1f} s" for e in reversed(others[-5:])
        )
        rule += f"; also in flight: {shown}"
    message = format_error(
        f"stage '{current.stage}' working on",
        current.item,
        rule,
        "the file may hang the decoder or the filesystem may be unresponsive; check the file "
        "and its mount. dataset.loader() ends the hang after stall_seconds; with a plain "
        "DataLoader, set its timeout to turn a hang into an error",
        stage=current.stage,
    )
    return Alert(
        "stall", message, idle, threshold, stage=current.stage, path=current.item, time=time.time()
    )


def worker_watchdog(
    monitor: AlertMonitor | None, heartbeats: HeartbeatTable | None, worker: int | None
) -> StallWatchdog | None:
    """The watchdog of one iteration, publishing to worker ``worker``'s heartbeat slot.

    ``monitor``'s stall watchdog when it has one; in a worker with a heartbeat slot but no
    stall threshold, a watchdog that never fires, so the main process can still name the
    file a dying worker had in flight. ``None`` when there is nothing to watch or publish.
    """
    watchdog = monitor.stall_watchdog() if monitor is not None else None
    if heartbeats is None or worker is None or not 0 <= worker < heartbeats.size:
        return watchdog
    if watchdog is None:
        watchdog = StallWatchdog(None, _ignore)
    watchdog.publish_to(heartbeats.slot(worker))
    return watchdog


def _ignore(alert: Alert) -> None:
    """The callback of a watchdog that never fires."""
