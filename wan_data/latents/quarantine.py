"""Moving a cache entry that failed verification aside, with the reason, for a person to inspect.

A corrupt entry must neither be served (the caller re-encodes it: a miss, never zeros) nor
silently deleted (the bytes are the evidence of what went wrong: a torn write, bit rot, another
writer). :func:`quarantine_entry` moves it to ``quarantine/<key>.<ns>.<pid>.safetensors`` next
to a ``.reason.txt``, but only if the file is still the one that failed: a concurrent writer
may have replaced it with a good entry in the meantime. Kept apart from
:mod:`wan_data.latents.store` because this race check is the one subtle step of the read path.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from wan_data.latents.index import ENTRY_SUFFIX, append_index

__all__ = ["quarantine_entry"]

logger = logging.getLogger("wan_data")


def quarantine_entry(
    quarantine_dir: Path,
    index_path: Path,
    path: Path,
    key: str,
    reason: str,
    seen: os.stat_result,
) -> bool:
    """Move a failed entry aside with a ``.reason.txt``; return whether it was moved.

    The file is moved only if it is still the one that was read (same inode and mtime): a
    concurrent writer may have replaced it with a good entry in the meantime. A moved entry gets
    a tombstone line in the index at ``index_path``.

    Args:
        quarantine_dir: where failed entries go (created if needed).
        index_path: the cache's ``index.jsonl``.
        path: the failed entry's file.
        key: its cache key.
        reason: which check failed (written to the ``.reason.txt``).
        seen: the ``stat`` of the file as it was read.
    """
    logger.warning("latent cache: corrupt entry %s (%s); quarantining it", path, reason)
    try:
        now = os.lstat(path)  # the file (or planted link) that was read, not a link's target
    except FileNotFoundError:
        return False
    if (now.st_ino, now.st_dev, now.st_mtime_ns) != (
        seen.st_ino,
        seen.st_dev,
        seen.st_mtime_ns,
    ):
        logger.info("latent cache: %s was replaced while being read; not quarantined", path)
        return False
    stem = f"{key}.{time.time_ns()}.{os.getpid()}"
    dest = quarantine_dir / f"{stem}{ENTRY_SUFFIX}"
    try:
        quarantine_dir.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
    except FileNotFoundError:
        return False  # another reader quarantined it first
    except OSError as exc:
        logger.warning("latent cache: cannot quarantine %s (%s); left in place", path, exc)
        return False
    try:
        (quarantine_dir / f"{stem}.reason.txt").write_text(
            f"key: {key}\nfile: {path}\nreason: {reason}\n"
            f"time: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n",
            encoding="utf-8",
        )
    except OSError as exc:
        logger.warning("latent cache: cannot write the reason for %s: %s", dest, exc)
    append_index(index_path, {"key": key, "removed": True})
    return True
