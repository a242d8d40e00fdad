"""Probed metadata kept on disk, keyed by path, size and modification time.

Planning an epoch needs every file's metadata before anything is decoded, and probing costs
~8 ms per video (an exact demux scan): 15 minutes for 100k files on two cores. A file whose
size and ``mtime_ns`` are unchanged has unchanged metadata, so a warm start only ``stat``\\ s it.
The cache is a JSON-lines file rewritten atomically; an unreadable line is ignored (and re-probed),
never trusted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from wan_data.items import VideoMetadata

__all__ = ["CACHE_FORMAT", "MetadataCache", "Verdict"]

logger = logging.getLogger("wan_data")

T = TypeVar("T")
CACHE_FORMAT = 1  # bump when VideoMetadata's fields or the probe's rules change


@dataclass(frozen=True)
class Verdict:
    """The remembered outcome of an integrity check (see ``wan_data.media.integrity``)."""

    ok: bool
    errors: tuple[str, ...] = ()


class MetadataCache:
    """Thread-safe map ``path -> VideoMetadata`` valid while the file's size and mtime hold.

    Args:
        path: the JSON-lines file; ``None`` keeps the cache in memory only (it still saves
            re-probing the repeats of a concept within one process).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._entries: dict[str, tuple[int, int, VideoMetadata]] = {}
        self._verdicts: dict[str, tuple[int, int, Verdict]] = {}
        self._lock = threading.Lock()
        self._dirty = False
        self.hits = 0
        self.misses = 0
        if self.path is not None and self.path.exists():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        bad = 0
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                    if row.get("format") != CACHE_FORMAT:
                        bad += 1
                        continue
                    meta = VideoMetadata(**row["metadata"])
                    version = (int(row["size"]), int(row["mtime_ns"]))
                    self._entries[row["path"]] = (*version, meta)
                    checked = row.get("integrity")
                    if isinstance(checked, dict):
                        verdict = Verdict(bool(checked["ok"]), tuple(checked.get("errors", ())))
                        self._verdicts[row["path"]] = (*version, verdict)
                except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
                    bad += 1  # a garbage line: a list, a string, JSON nested past the stack
        if bad:
            logger.warning(
                "metadata cache %s: %d unreadable or outdated line(s) ignored", path, bad
            )

    def get(self, path: str) -> VideoMetadata | None:
        """The cached metadata of ``path`` if the file still has the size and mtime it had."""
        version = _version(path)
        if version is None:  # a vanished file is neither a hit nor a miss
            return None
        meta = self._current(self._entries, path, version)
        with self._lock:
            if meta is None:
                self.misses += 1
            else:
                self.hits += 1
        return meta

    def put(self, path: str, meta: VideoMetadata) -> None:
        """Remember ``meta`` for the file's current size and mtime (a file that vanished is not
        stored).
        """
        self._store(self._entries, path, meta)

    def get_integrity(self, path: str) -> Verdict | None:
        """The integrity verdict of ``path`` if it was checked at its current size and mtime."""
        version = _version(path)
        return None if version is None else self._current(self._verdicts, path, version)

    def put_integrity(self, path: str, verdict: Verdict) -> None:
        """Remember a verdict for the file's current version (saved with its metadata row)."""
        self._store(self._verdicts, path, verdict)

    def _current(
        self, table: dict[str, tuple[int, int, T]], path: str, version: tuple[int, int]
    ) -> T | None:
        """``table``'s value for ``path`` if it was stored for this ``(size, mtime_ns)``."""
        with self._lock:
            entry = table.get(path)
        return entry[2] if entry is not None and entry[:2] == version else None

    def _store(self, table: dict[str, tuple[int, int, T]], path: str, value: T) -> None:
        version = _version(path)
        if version is None:
            return
        with self._lock:
            table[path] = (*version, value)
            self._dirty = True

    def save(self) -> None:
        """Write the cache atomically (temp file, fsync, replace) if anything changed."""
        if self.path is None or not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".metadata-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                with self._lock:
                    items = list(self._entries.items())
                    verdicts = dict(self._verdicts)
                for path, (size, mtime_ns, meta) in items:
                    row = _row(path, size, mtime_ns, meta)
                    checked = verdicts.get(path)
                    if checked is not None and checked[:2] == (size, mtime_ns):
                        row["integrity"] = {"ok": checked[2].ok, "errors": list(checked[2].errors)}
                    fh.write(json.dumps(row) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._dirty = False

    def __len__(self) -> int:
        return len(self._entries)


def _version(path: str) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a file, or None when it cannot be ``stat``-ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _row(path: str, size: int, mtime_ns: int, meta: VideoMetadata) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "path": path,
        "size": size,
        "mtime_ns": mtime_ns,
        "metadata": dataclasses.asdict(meta),
    }
