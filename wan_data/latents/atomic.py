"""Crash-safe file replacement: a reader sees the old file, the new file, or nothing.

Half-written cache files that a later run trusts are one of the ways latent caches fail (design
§5). :func:`_atomic_write` writes a temp file in the target's directory, fsyncs it, renames it
over the target with ``os.replace`` and fsyncs the directory; the cache's entries, its marker
and its index rewrites all go through it. Kept apart so that the one place that decides
durability is small enough to check by reading.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable; some filesystems refuse directory fsync (harmless)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` so that readers see the old file or the new one, never a part.

    Temp file in the same directory (same filesystem, so ``os.replace`` is an atomic rename),
    flushed and fsynced before the rename, directory fsynced after it. The temp file has a unique
    name, so concurrent writers of one target never share it. On any failure the temp file is
    removed and the old target is untouched.
    """
    tmp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
