"""Structured logs: one JSON object per line, from every worker and rank, into one file.

Text logs of a multi-hour, multi-worker run are hard to search ("which files failed in decode on
rank 3?"); a JSON-lines file answers that with ``jq`` or pandas. Skips and alerts pass their
``stage``, ``path``, ``reason`` and ``error_type`` through ``extra=``, and this handler turns them
into columns.

Several processes append to the same file safely: it is opened with ``O_APPEND`` and each line
goes out in one ``os.write``, which on a local filesystem lands whole at the end of the file, so
lines of different workers never interleave (no lock, no queue, nothing to drain when a worker
is killed). NFS does not honour ``O_APPEND`` across machines: give each machine its own file.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import get_worker_info

__all__ = ["JsonLinesHandler", "log_to_jsonl", "remove_jsonl"]

logger = logging.getLogger("wan_data")

# Record attributes copied into every line (``None`` when a record was logged without them).
EXTRA_FIELDS = ("stage", "key", "path", "reason", "error_type")

_FORMATTER = logging.Formatter()

# The ``wan_data`` logger's own level before log_to_jsonl lowered it; restored when the last
# JSON-lines handler is removed.
_saved_level: int | None = None


def _worker() -> int | None:
    info = get_worker_info()
    return int(info.id) if info is not None else None


def _rank() -> int | None:
    """The global rank: ``torch.distributed``'s, else ``$RANK`` (torchrun sets it; DataLoader
    workers inherit it but not the process group), else ``None``."""
    dist = torch.distributed
    try:
        if dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except Exception:  # a process group torn down under us: fall back to the environment
        pass
    value = os.environ.get("RANK")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class JsonLinesHandler(logging.Handler):
    """Appends one JSON object per record to ``path``.

    Keys: ``time`` (ISO-8601, UTC), ``level``, ``logger``, ``stage``, ``key``, ``path``,
    ``reason``, ``error_type`` (from ``extra=``, else ``null``), ``worker`` (DataLoader worker
    id, ``null`` in the main process), ``rank`` and ``message`` (with the traceback, if any).

    The file is reopened in a forked child on its first record, so a child never shares or
    closes its parent's descriptor.

    Args:
        path: the file; created when missing, never truncated.
        level: the handler's level.
    """

    def __init__(self, path: str | os.PathLike[str], level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.path = Path(os.path.abspath(path))
        self._fd: int | None = None
        self._pid = -1
        self._open()

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        # Its folder is made as the ledger's is: log_jsonl="runs/exp1/log.jsonl" must not need
        # a mkdir first (found by the docs' snippet test).
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, flags, 0o644)
        self._pid = os.getpid()

    def format_record(self, record: logging.LogRecord) -> dict[str, Any]:
        """The JSON object of one record (separate from :meth:`emit` so it can be tested)."""
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            message = f"{message}\n{record.exc_text}"
        if record.stack_info:
            message = f"{message}\n{_FORMATTER.formatStack(record.stack_info)}"
        created = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
        line: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        for name in EXTRA_FIELDS:
            line[name] = getattr(record, name, None)
        line["worker"] = _worker()
        line["rank"] = _rank()
        line["message"] = message
        return line

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (
                json.dumps(self.format_record(record), ensure_ascii=False, default=str) + "\n"
            ).encode("utf-8")
            if self._pid != os.getpid():
                self._open()  # the inherited descriptor belongs to the parent
            fd = self._fd
            if fd is None:  # closed
                return
            view = memoryview(data)
            while view:  # a short write (disk full, signal) is rare; finish the line anyway
                written = os.write(fd, view)
                view = view[written:]
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.acquire()
        try:
            fd, self._fd = self._fd, None
            if fd is not None and self._pid == os.getpid():
                with contextlib.suppress(OSError):
                    os.close(fd)
        finally:
            self.release()
        super().close()

    def __repr__(self) -> str:
        return f"<JsonLinesHandler {self.path} ({logging.getLevelName(self.level)})>"


def log_to_jsonl(path: str | os.PathLike[str], level: int = logging.INFO) -> JsonLinesHandler:
    """Attach a :class:`JsonLinesHandler` for ``path`` to the ``wan_data`` logger.

    Idempotent per file: a second call for the same path returns the handler already attached
    (its level unchanged), so a DataLoader ``worker_init_fn`` or a re-run notebook cell never
    writes each line twice. The logger's own level is lowered to ``level`` when it would
    otherwise drop those records before they reach the handler; note that other handlers on
    ``wan_data`` or its parents with no level of their own then see them too.

    Args:
        path: the JSON-lines file (appended to).
        level: the least severe level written.
    """
    target = Path(os.path.abspath(path))
    for handler in logger.handlers:
        if isinstance(handler, JsonLinesHandler) and handler.path == target:
            return handler
    global _saved_level
    handler = JsonLinesHandler(target, level)
    if logger.getEffectiveLevel() > level:
        if _saved_level is None:
            _saved_level = logger.level
        logger.setLevel(level)
    logger.addHandler(handler)
    return handler


def remove_jsonl(handler: JsonLinesHandler) -> None:
    """Detach and close ``handler``; restore the logger level :func:`log_to_jsonl` lowered."""
    global _saved_level
    logger.removeHandler(handler)
    handler.close()
    others = any(isinstance(h, JsonLinesHandler) for h in logger.handlers)
    if _saved_level is not None and not others:
        logger.setLevel(_saved_level)
        _saved_level = None
