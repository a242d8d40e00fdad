"""A persistent ledger of sources that failed for reasons of their own, so a run skips them.

Probing a broken file costs as much as probing a good one (often more: FFmpeg scans the whole
file looking for a stream), and a dataset scraped from the web keeps its broken files run after
run. The ledger remembers each such file with the size and ``mtime_ns`` it had when it failed;
while both still hold, the ``ledger`` stage (:mod:`wan_data.stages.ledger`) turns it into a
:class:`~wan_data.items.Failed` before anything opens it. A file that changed (re-downloaded,
re-encoded) is tried again.

Only verdicts about the bytes of a file are kept (:data:`LEDGER_REASONS`): a file that is too
short for today's ``frames`` may fit tomorrow's, so configuration-dependent skips are never
recorded. The file is JSON lines, appended with ``O_APPEND`` and one ``write`` per line so that
ranks, jobs and DataLoader workers can share it, and read tolerantly: a torn or garbage line is
skipped and counted, never trusted, and never unpickled. See docs/ledger.md.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wan_data.errors import ConfigError, format_error
from wan_data.items import Failed

__all__ = ["LEDGER_FORMAT", "LEDGER_REASONS", "LEDGER_STAGES", "Ledger", "LedgerEntry"]

logger = logging.getLogger("wan_data")

LEDGER_FORMAT = 1  # bump when a record's fields or their meaning change

LEDGER_REASONS = frozenset(
    {
        "bad_timestamps",  # decode: frame times go backwards (damaged sample table)
        "corrupt_frames",  # probe: the integrity check's full decode found decode errors
        "decode_error",  # probe / decode: a damaged packet, FFmpeg "invalid data"
        "invalid_data",  # probe: Pillow cannot identify / finish an image; absurd header values
        "no_frames",  # probe: a video stream without frames
        "no_video_stream",  # probe: audio only
        "not_a_file",  # collect / probe: a directory or special file named like media
        "truncated",  # probe: < 90 % of the frames the header declares; an image cut short
        "unreadable",  # probe: empty, garbage, text, overwritten header, truncated before index
    }
)
"""Skip reasons that are properties of the file's bytes, and so the only ones recorded.

Everything else is left out on purpose, because a later run could find the file usable:
``too_short``, ``too_long``, ``too_large``, ``too_small`` and ``missing_caption`` depend on the
options; ``outside_root`` on ``allow_outside_root``; ``permission_denied`` is fixed by ``chmod``,
which changes neither size nor mtime, so the ledger could never notice the fix; ``missing``
leaves nothing to ``stat``; ``transient``, ``timeout`` and ``io_transient`` are the
filesystem's or the machine's (EMFILE, ENOMEM, EIO: a healthy file must not be skipped as
``known_bad`` in every later run because one run ran out of descriptors); ``out_of_memory``,
``non_finite_latents`` and ``cache_corrupt`` are the device's or the cache's;
``unexpected_error`` and ``invalid_item`` are wan_data bugs that a fix resolves;
``bad_metadata_line`` and ``unsupported_extension`` concern a line of a metadata file, not a
media file; ``known_bad`` is the ledger's own verdict, recorded already.
"""

LEDGER_STAGES = frozenset({"collect", "probe", "decode"})
"""Stages whose failures judge the source file itself.

A ``RuntimeError`` in the VAE encode or cache stages is classified ``decode_error`` too (the
policy's fallback for ``RuntimeError``), but there it says nothing about the file.
"""

_MESSAGE_CHARS = 2000  # keep lines short; the full message is in that run's report
_UNWRITABLE_HINT = (
    "pass a ledger path in a writable folder (e.g. under cache_dir), fix the folder's "
    "permissions, or pass ledger=None to run without a ledger"
)


@dataclass(frozen=True)
class LedgerEntry:
    """What the ledger knows about one known-bad file.

    Attributes:
        path: absolute path of the source file.
        size: its size in bytes when it failed.
        mtime_ns: its modification time (ns) when it failed; with ``size``, the file's identity:
            while both hold, the bytes are taken to be the ones that failed.
        stage: the stage that failed (``collect``, ``probe``, ``decode``).
        reason: the skip reason, one of :data:`LEDGER_REASONS`.
        error_type: class name of the exception.
        message: the failure message (shortened to 2000 characters).
        key: the sample key it failed under.
        time: when it was recorded (unix seconds).
    """

    path: str
    size: int
    mtime_ns: int
    stage: str
    reason: str
    error_type: str
    message: str
    key: str
    time: float

    def as_record(self) -> dict[str, Any]:
        """The JSON line written for this entry."""
        return {
            "format": LEDGER_FORMAT,
            "status": "bad",
            "path": self.path,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "stage": self.stage,
            "reason": self.reason,
            "error_type": self.error_type,
            "message": self.message,
            "key": self.key,
            "time": self.time,
        }

    def matches(self, st: os.stat_result) -> bool:
        """Whether a file with this ``stat`` still holds the bytes that failed."""
        return st.st_size == self.size and st.st_mtime_ns == self.mtime_ns


class Ledger:
    """The known-bad files of a JSON-lines ledger file, shared by processes.

    The file is read on first use (and again by :meth:`load`); every change is appended as one
    line, so what other processes append is seen after their next :meth:`load`, and a crash
    loses at most the line being written. A later line for a path supersedes earlier ones.

    Args:
        path: the JSON-lines file. Its folder is created; an unwritable location raises
            :class:`~wan_data.errors.ConfigError` here, naming the path and the fix, rather
            than after hours of probing.
        read_only: only read the file (a shared read-only cache mount): known-bad files are
            still skipped, but nothing is recorded, resolved or compacted.

    Attributes:
        path: the ledger file.
        skipped_lines: unreadable lines found by the last load (torn, garbage, other format).
    """

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self.path = Path(os.path.abspath(os.fspath(path)))
        self.read_only = read_only
        self.skipped_lines = 0
        self._entries: dict[str, LedgerEntry] = {}
        self._loaded = False
        self._warned_lines = 0
        self._lock = threading.Lock()
        if not read_only:
            self._check_writable()

    # -- pickling (DataLoader workers under spawn receive the dataset, and so the ledger) ----

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        shown = len(self._entries) if self._loaded else "not loaded"
        return f"Ledger({str(self.path)!r}, entries={shown})"

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._entries)

    # -- reading -------------------------------------------------------------------------

    def load(self) -> Ledger:
        """(Re)read the file: the state after its last readable line for every path.

        Lines that cannot be read (a torn last line of a writer that died, garbage, another
        format version) are skipped, counted in :attr:`skipped_lines` and logged in one
        warning; :meth:`compact` drops them.

        Returns:
            This ledger, so ``Ledger(path).load()`` reads in one expression.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            # The ledger only saves time: an unreadable one means every file is tried again.
            logger.warning(
                "%s",
                format_error(
                    f"ledger {self.path}",
                    f"{type(exc).__name__}: {exc}",
                    "could not be read; no file is skipped as known-bad",
                    "make it a readable file, or delete it",
                ),
            )
            data = b""
        entries: dict[str, LedgerEntry] = {}
        bad = 0
        lines = data.split(b"\n")
        if lines[-1].strip():
            bad += 1  # no newline yet: a writer died mid-line, or is still writing it
        for line in lines[:-1]:
            if not line.strip():
                continue
            try:
                path, entry = _parse(line)
            except (ValueError, TypeError, KeyError, RecursionError):
                bad += 1
                continue
            if entry is None:
                entries.pop(path, None)
            else:
                entries[path] = entry
        with self._lock:
            self._entries = entries
            self._loaded = True
            self.skipped_lines = bad
        if bad and bad != self._warned_lines:
            self._warned_lines = bad
            logger.warning(
                "%s",
                format_error(
                    f"ledger {self.path}",
                    f"{bad} line(s)",
                    "could not be read (a torn write, garbage or another format version) and "
                    "were skipped",
                    "nothing is lost but those records (their files are tried again); "
                    "Ledger.compact() drops them",
                ),
            )
        return self

    def known_bad(self, source_path: str | os.PathLike[str]) -> LedgerEntry | None:
        """The entry of ``source_path`` if it failed before and has not changed since.

        Costs a dictionary lookup for a file the ledger does not hold, and one ``stat``
        otherwise. A file whose size or ``mtime_ns`` differs from the recorded ones, or that
        no longer exists, is not known-bad.
        """
        path = _normalise(source_path)
        self._ensure_loaded()
        with self._lock:
            entry = self._entries.get(path)
        if entry is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        return entry if entry.matches(st) else None

    def entries(self) -> dict[str, LedgerEntry]:
        """Every path the ledger holds as bad (changed files included), sorted by path."""
        self._ensure_loaded()
        with self._lock:
            return dict(sorted(self._entries.items()))

    # -- writing -------------------------------------------------------------------------

    def record(self, failed: Failed) -> bool:
        """Remember ``failed``'s file as bad, if the failure is a property of the file.

        The file is ``stat``-ed now: its size and ``mtime_ns`` are what a later run compares.
        A failure whose stage is not in :data:`LEDGER_STAGES` or whose reason is not in
        :data:`LEDGER_REASONS`, or whose file cannot be ``stat``-ed, is ignored. An entry that
        is already there with the same size, mtime, stage and reason is not written again.
        An append that fails (a full disk) is logged and ignored: the ledger only saves time,
        and must never stop a run.

        Returns:
            Whether the file is now in the ledger as bad.
        """
        if failed.stage not in LEDGER_STAGES or failed.reason not in LEDGER_REASONS:
            return False
        if not failed.path:
            return False
        path = _normalise(failed.path)
        try:
            st = os.stat(path)
        except OSError:
            return False
        entry = LedgerEntry(
            path=path,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            stage=failed.stage,
            reason=failed.reason,
            error_type=failed.error_type,
            message=failed.message[:_MESSAGE_CHARS],
            key=failed.key,
            time=round(time.time(), 3),
        )
        self._ensure_loaded()
        with self._lock:
            old = self._entries.get(path)
        if (
            old is not None
            and old.matches(st)
            and (old.stage, old.reason) == (entry.stage, entry.reason)
        ):
            return True
        if not self._append(entry.as_record()):
            return False
        with self._lock:
            self._entries[path] = entry
        return True

    def resolve(self, path: str | os.PathLike[str]) -> bool:
        """Mark ``path`` as good again (it now works), so it leaves the known-bad set.

        Writes a line only when the ledger holds the path, so calling it for every file that
        passed is cheap.

        Returns:
            Whether the path was in the ledger.
        """
        key = _normalise(path)
        self._ensure_loaded()
        with self._lock:
            if key not in self._entries:
                return False
        record = {
            "format": LEDGER_FORMAT,
            "status": "ok",
            "path": key,
            "time": round(time.time(), 3),
        }
        if not self._append(record):
            return False
        with self._lock:
            self._entries.pop(key, None)
        return True

    def compact(self) -> int:
        """Rewrite the file with one line per known-bad path, atomically.

        Re-reads the file first (so other processes' appends are kept), then writes a temp
        file, fsyncs it and ``os.replace``-s the ledger with it, under an exclusive lock that
        appenders wait for, so no append is lost to the rewrite. Resolved paths, superseded
        and unreadable lines disappear.

        Returns:
            The number of entries written.

        Raises:
            ConfigError: the ledger was opened ``read_only``.
        """
        if self.read_only:
            raise ConfigError(
                format_error(
                    "ledger file",
                    str(self.path),
                    "was opened read-only and cannot be compacted",
                    "compact it where its folder is writable",
                )
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.load()
            entries = self.entries()
            tmp_fd, tmp = tempfile.mkstemp(
                dir=self.path.parent, prefix=f".{self.path.name}-", suffix=".tmp"
            )
            try:
                with os.fdopen(tmp_fd, "wb") as fh:
                    for entry in entries.values():
                        fh.write(_line(entry.as_record()))
                    fh.flush()
                    os.fsync(fh.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            with self._lock:
                self.skipped_lines = 0
            return len(entries)
        finally:
            os.close(fd)  # releases the lock

    # -- internals -----------------------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.load()

    def _check_writable(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_dir():
                raise IsADirectoryError(f"Is a directory: {self.path}")
            target = self.path if self.path.exists() else self.path.parent
            if not os.access(target, os.W_OK):
                raise PermissionError(f"Permission denied: {target}")
        except OSError as exc:
            raise ConfigError(
                format_error(
                    "ledger file",
                    str(self.path),
                    f"cannot be written ({type(exc).__name__}: {exc})",
                    _UNWRITABLE_HINT,
                )
            ) from exc

    def _append(self, record: dict[str, Any]) -> bool:
        """Append one line with one ``write`` on an ``O_APPEND`` descriptor; False on failure.

        Appends take a shared lock (many appenders at once) and :meth:`compact` an exclusive
        one; an appender that got its lock on a file that compact has just replaced reopens
        the new one, so its line cannot land in the discarded file.
        """
        if self.read_only:
            return False
        data = _line(record)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            for _ in range(10):
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH)
                    st = os.fstat(fd)
                    try:
                        current = os.stat(self.path)
                    except FileNotFoundError:
                        continue  # deleted under us: reopen (and so recreate) it
                    if (st.st_dev, st.st_ino) != (current.st_dev, current.st_ino):
                        continue  # compact replaced it while we waited for the lock
                    _write_all(fd, data if _ends_with_newline(fd, st) else b"\n" + data)
                    return True
                finally:
                    os.close(fd)
            raise OSError(f"the file kept being replaced while appending to {self.path}")
        except OSError as exc:
            logger.warning(
                "%s",
                format_error(
                    f"ledger {self.path}",
                    record.get("path", "?"),
                    f"could not be recorded ({type(exc).__name__}: {exc})",
                    "the file will be tried again next run; " + _UNWRITABLE_HINT,
                ),
            )
            return False


def _normalise(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.fspath(path))


def _line(record: dict[str, Any]) -> bytes:
    # ensure_ascii: a non-UTF-8 file name (a surrogate escape) survives as a \udcxx escape.
    return json.dumps(record, ensure_ascii=True, separators=(", ", ": ")).encode("ascii") + b"\n"


def _ends_with_newline(fd: int, st: os.stat_result) -> bool:
    """Whether the file is empty or ends a line; a torn tail must not swallow the next line."""
    return st.st_size == 0 or os.pread(fd, 1, st.st_size - 1) == b"\n"


def _write_all(fd: int, data: bytes) -> None:
    # One write is the whole line on a regular file unless a signal or a full disk cuts it;
    # then finish it (a torn line would be skipped by readers anyway).
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"not an int: {value!r}")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"not a str: {value!r}")
    return value


def _parse(line: bytes) -> tuple[str, LedgerEntry | None]:
    """``(path, entry)`` of one line, ``entry`` None for a resolved path; raises if unusable."""
    row = json.loads(line)
    if not isinstance(row, dict) or row.get("format") != LEDGER_FORMAT:
        raise ValueError("not a ledger record of this format")
    path = _str(row["path"])
    if not path:
        raise ValueError("empty path")
    status = row.get("status")
    if status == "ok":
        return path, None
    if status != "bad":
        raise ValueError(f"unknown status {status!r}")
    when = row["time"]
    if isinstance(when, bool) or not isinstance(when, (int, float)):
        raise TypeError(f"not a time: {when!r}")
    return path, LedgerEntry(
        path=path,
        size=_int(row["size"]),
        mtime_ns=_int(row["mtime_ns"]),
        stage=_str(row["stage"]),
        reason=_str(row["reason"]),
        error_type=_str(row["error_type"]),
        message=_str(row["message"]),
        key=_str(row["key"]),
        time=float(when),
    )
