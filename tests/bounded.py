"""Run a call that may block forever (a FIFO opened with no writer, a hang) within a bound."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def finishes(
    fn: Callable[[], Any], seconds: float, what: str = "blocked (a FIFO, or a hang)"
) -> Any:
    """``fn()``'s result, or the exception it raised (returned, not raised); fails the test if
    it has not returned within ``seconds`` (the thread is left behind as a daemon: a blocking
    ``open`` cannot be interrupted)."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:
            box.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), what
    return box[0]
