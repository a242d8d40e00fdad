"""Crash-safe, content-addressed disk store of VAE latents.

The field's caches fail in three ways (design §5): they key entries by file name, so a changed
source or config serves stale latents; they write non-atomically, so a crash leaves a half file
that a later run trusts; and they serve zeros for a missing entry. This store answers each:

- **Content + config keys.** :func:`cache_key` hashes everything that changes the tensor (source
  identity, frame selection, bucket and crop, VAE identity, dtypes, normalisation, format
  version). Changing any of them changes the key, so a stale entry is never found, only orphaned
  (and :meth:`LatentCache.prune` removes orphans).
- **Atomic writes.** An entry is written to a temp file in its final directory, fsynced, renamed
  over the target with ``os.replace`` and the directory fsynced. A reader sees the old file, the
  new file, or nothing; never a prefix. Concurrent writers of one key each rename a complete file.
- **Verified reads, misses never zeros.** :meth:`LatentCache.get` returns ``None`` for an absent
  entry and for any entry that fails verification (truncated, flipped bytes, wrong key,
  non-finite values); a failed entry is moved to ``quarantine/`` with the reason so the caller
  re-encodes it and a person can inspect it later.

Entries are safetensors files, parsed as data only (never by a deserialiser that can run code:
a cache directory may come from elsewhere, and reading it must not execute anything).
Layout under the root::

    wan_data_cache.json            {"format": CACHE_FORMAT_VERSION}; a root with another -> error
    entries/ab/cd/abcd....safetensors   two-level fan-out keeps directories small at 100k entries
    quarantine/<key>.<ns>.safetensors   failed entries, each with a .reason.txt
    index.jsonl                    one {"key", "size"} line per put (see :meth:`LatentCache.keys`)
    claims/<key>.claim             cache passes at work (see :mod:`~wan_data.latents.claims`)

A cache folder that refuses writes (a read-only mount) is served read-only; entries that are
not regular files (a FIFO, a directory) are corrupt, checked on the open descriptor so a read
never blocks.

This module holds :class:`LatentCache`, the store itself (setup, put, verified lookup,
maintenance), and is the public face of the cache: it re-exports the names of its parts, which
live in :mod:`~wan_data.latents.keys` (cache keys), :mod:`~wan_data.latents.entry` (the entry
file format and its verification), :mod:`~wan_data.latents.stats` (:class:`CacheStats`),
:mod:`~wan_data.latents.atomic` (atomic writes), :mod:`~wan_data.latents.index` (the entries
directory and ``index.jsonl``) and :mod:`~wan_data.latents.quarantine`.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import torch

from wan_data.errors import ConfigError, FatalError, format_error
from wan_data.latents.atomic import _atomic_write
from wan_data.latents.entry import CHECKSUM_ALGORITHM as CHECKSUM_ALGORITHM
from wan_data.latents.entry import RESERVED_METADATA as RESERVED_METADATA
from wan_data.latents.entry import TENSOR_NAME as TENSOR_NAME
from wan_data.latents.entry import (
    CacheCorruptionError,
    CacheEntry,
    decode_entry,
    encode_entry,
    entry_checksum,
    read_entry,
)
from wan_data.latents.index import (
    ENTRY_SUFFIX,
    INDEX_NAME,
    append_index,
    entry_path,
    entry_sizes,
    listed_keys,
    read_index,
    remove_stale_temps,
    write_index,
)
from wan_data.latents.keys import (
    CACHE_FORMAT_VERSION,
    _check_key,
    cache_key,
    cache_key_for,
    canonical_json,
    config_digest,
    source_identity,
)
from wan_data.latents.quarantine import quarantine_entry
from wan_data.latents.stats import CacheStats

__all__ = [
    "CACHE_FORMAT_VERSION",
    "CacheCorruptionError",
    "CacheEntry",
    "CacheStats",
    "LatentCache",
    "cache_key",
    "cache_key_for",
    "canonical_json",
    "config_digest",
    "decode_entry",
    "encode_entry",
    "entry_checksum",
    "read_entry",
    "source_identity",
]

logger = logging.getLogger("wan_data")

MARKER_NAME = "wan_data_cache.json"

# errno values that mean "this folder refuses writes" (a read-only mount, chmod a-w, a foreign
# owner), as opposed to a broken one: an existing cache with these is opened read-only.
_READ_ONLY_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
_WARNED_READ_ONLY: set[str] = set()


class _NotRegularFile(Exception):
    """An entry path holds something other than a regular file (directory, FIFO, socket...)."""

    def __init__(self, st: os.stat_result) -> None:
        super().__init__(_file_kind(st.st_mode))
        self.st = st


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return f"special file (mode {mode:o})"


def _open_entry(name: str) -> tuple[IO[bytes], os.stat_result]:
    """Open an entry for reading and ``fstat`` it, refusing anything but a regular file.

    ``O_NONBLOCK``: a FIFO planted at an entry path would otherwise block the open until a
    writer appears (a hung train pass); regular files ignore the flag. ``O_NOFOLLOW``: the
    cache writes files, never links, so a symlink at an entry path (which could lead a read
    out of the cache folder, to a device, or to a valid entry planted elsewhere) is refused.
    The check runs on the opened descriptor, so nothing can be swapped in between the check
    and the read. Same system calls as a plain ``open`` + ``fstat``.

    Raises:
        FileNotFoundError: no entry.
        _NotRegularFile: a symlink, directory, FIFO, socket or device sits at the path.
    """
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        # ELOOP: a symlink (O_NOFOLLOW); ENXIO: a socket, which cannot be opened at all.
        if exc.errno not in (errno.ELOOP, errno.ENXIO):
            raise
        st = os.lstat(name)
        if stat.S_ISREG(st.st_mode):
            raise
        raise _NotRegularFile(st) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegularFile(st)
        return open(fd, "rb", buffering=0, closefd=True), st
    except BaseException:
        os.close(fd)
        raise


class LatentCache:
    """Content-addressed store of VAE latents; see the module docstring for the guarantees.

    Safe for several threads and processes at once (each write is an atomic rename; the index is
    a hint checked against the directory). Each DataLoader worker may hold its own instance of
    the same root.

    Args:
        root: cache directory.
        create: create the directory (and check it is writable) if needed. With ``False`` the
            root must already be a cache. Either way an existing cache that refuses writes (a
            shared read-only mount, ``chmod -R a-w``) opens read-only (:attr:`read_only`): reads
            and verification work, quarantine moves and index rewrites are skipped (one warning
            at opening), and writes (:meth:`put`, :meth:`prune`) raise :class:`FatalError`.

    Raises:
        ConfigError: the root holds a cache of another format version, or is not a cache while
            ``create`` is false.
        FatalError: ``create`` and the root is not yet a cache and cannot be created or written
            (the caller asked for a cache; silently running without one would re-encode every
            epoch).
    """

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        self.root = Path(root)
        self.entries_dir = self.root / "entries"
        self.quarantine_dir = self.root / "quarantine"
        self.index_path = self.root / INDEX_NAME
        self.marker_path = self.root / MARKER_NAME
        self._lock = threading.Lock()
        self._stats = CacheStats()
        self.read_only = False
        self._check_marker()
        if create:
            self._create()
        elif not self.marker_path.is_file():
            raise ConfigError(
                format_error(
                    "latent cache root",
                    str(self.root),
                    f"is not a wan_data cache (no {MARKER_NAME})",
                    "run the prepare pass first or pass create=True",
                )
            )
        elif not os.access(self.root, os.W_OK) or (
            self.entries_dir.is_dir() and not os.access(self.entries_dir, os.W_OK)
        ):
            self._open_read_only("no write permission")

    # -- setup ---------------------------------------------------------------------------------

    def _check_marker(self) -> None:
        try:
            text = self.marker_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            if not self.root.is_dir():
                return  # e.g. root is a file: _create reports it
            raise FatalError(
                format_error("latent cache marker", str(self.marker_path), f"unreadable: {exc}")
            ) from exc
        try:
            found = json.loads(text).get("format")
        except (ValueError, AttributeError, RecursionError):
            found = f"unparsable {text[:40]!r}"
        if found != CACHE_FORMAT_VERSION:
            raise ConfigError(
                format_error(
                    "latent cache format",
                    found,
                    f"differs from this version's {CACHE_FORMAT_VERSION} in {self.root}",
                    "delete the directory (its entries cannot be read) or use another cache dir",
                )
            )

    def _open_read_only(self, why: str) -> None:
        """Serve an existing cache without writing to it; the one warning of a read-only cache.

        Shared caches are often mounted read-only on clusters; training only reads, so refusing
        them would force a copy of the whole cache. What a writable cache would do on the side
        (move a corrupt entry to ``quarantine/``, rewrite a stale index) is skipped: a corrupt
        entry is still never served, only left in place.
        """
        self.read_only = True
        if str(self.root) in _WARNED_READ_ONLY:
            return  # one warning per process: the train pass opens the cache per iteration
        _WARNED_READ_ONLY.add(str(self.root))
        logger.warning(
            "%s",
            format_error(
                "latent cache folder",
                str(self.root),
                f"is read-only ({why}): entries are read and verified, corrupt ones are skipped "
                "without being moved to quarantine/, and the index is not rewritten",
                "mount or copy it writable to fill or repair it with the cache pass",
                stage="cache",
            ),
        )

    def require_writable(self, what: str) -> None:
        """Raise :class:`FatalError` naming ``what`` needs writes when the cache is read-only."""
        if self.read_only:
            raise FatalError(
                format_error(
                    "latent cache root",
                    str(self.root),
                    f"cannot be created or written: it is read-only, and {what} writes to it",
                    "point the cache at a writable folder, or mount this one writable",
                    stage="cache_write",
                )
            )

    def _create(self) -> None:
        existed = self.marker_path.is_file()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not self.marker_path.exists():
                _atomic_write(
                    self.marker_path, json.dumps({"format": CACHE_FORMAT_VERSION}).encode()
                )
            self.entries_dir.mkdir(exist_ok=True)
            self.quarantine_dir.mkdir(exist_ok=True)
            # Probe: a directory may exist yet refuse writes (read-only mount, foreign owner).
            probe = self.entries_dir / f".probe.{os.getpid()}.{secrets.token_hex(6)}.tmp"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            if existed and exc.errno in _READ_ONLY_ERRNOS:
                self._open_read_only(f"{type(exc).__name__}: {exc.strerror or exc}")
                return
            raise FatalError(
                format_error(
                    "latent cache root",
                    str(self.root),
                    f"cannot be created or written ({type(exc).__name__}: {exc.strerror or exc})",
                    "fix its permissions or free space, or point the cache at a writable dir",
                )
            ) from exc

    def __getstate__(self) -> dict[str, Any]:
        """Copyable state for spawned DataLoader workers (the lock is per process)."""
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- paths ---------------------------------------------------------------------------------

    def path_for(self, key: str) -> Path:
        """``entries/<key[:2]>/<key[2:4]>/<key>.safetensors``: ~1.5 entries per leaf at 100k."""
        _check_key(key)
        return entry_path(self.entries_dir, key)

    def contains(self, key: str) -> bool:
        """Whether an entry file exists (no verification: :meth:`get` verifies)."""
        return self.path_for(key).is_file()

    # -- write ---------------------------------------------------------------------------------

    def put(self, key: str, latents: torch.Tensor, metadata: dict[str, str]) -> Path:
        """Store ``latents`` under ``key`` atomically; return the entry's path.

        Raises:
            SampleError: ``reason="non_finite_latents"`` when the tensor holds NaN or inf (the
                VAE failed on this clip; storing it would poison every later epoch).
            ValueError: a malformed key, dtype or metadata (a caller bug).
            OSError: the write failed (disk full, ...); nothing partial is left behind.
        """
        self.require_writable("storing an entry")
        path = self.path_for(key)
        data = encode_entry(key, latents, metadata)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._clear_non_regular(path, key)
        _atomic_write(path, data)
        append_index(self.index_path, {"key": key, "size": len(data)})
        with self._lock:
            self._stats.writes += 1
        return path

    def _clear_non_regular(self, path: Path, key: str) -> None:
        """Quarantine whatever non-file (a directory, a FIFO) sits where an entry goes.

        ``os.replace`` cannot rename a file over a directory, so a directory planted at an entry
        path used to end the cache pass in an ``IsADirectoryError``; it is moved aside with its
        reason like any bad entry, and the fresh entry takes its place.
        """
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISREG(st.st_mode):
            return
        moved = self._quarantine(path, key, f"not a regular file: a {_file_kind(st.st_mode)}", st)
        with self._lock:
            self._stats.corruption_count += 1
            self._stats.quarantined += int(moved)

    # -- read ----------------------------------------------------------------------------------

    def get(self, key: str) -> CacheEntry | None:
        """The verified entry, or ``None`` for a miss (absent or failed verification; never zeros).

        A failed entry is quarantined with its reason and logged, so the caller re-encodes it.
        Read errors other than a missing file (EIO, permissions) propagate for the error policy.
        """
        return self.lookup(key)[0]

    def lookup(
        self,
        key: str,
        *,
        into: Callable[[tuple[int, ...], torch.dtype], torch.Tensor] | None = None,
        expect_shape: tuple[int, ...] | None = None,
    ) -> tuple[CacheEntry | None, str]:
        """Like :meth:`get`, plus why: ``"hit"``, ``"missing"`` or ``"corrupt"`` (quarantined).

        One ``open`` per call (no separate existence check): the train pass calls this once per
        sample, and every system call shows at small entry sizes. The checksum is verified on
        every read; finiteness is not re-checked (see :func:`decode_entry`).

        Args:
            key: the entry.
            into: where the tensor bytes go, given the stored shape and dtype (see
                :func:`read_entry`); a fresh tensor by default.
            expect_shape: the shape the entry must have (its bucket's latent shape); another
                shape is corrupt (quarantined), however valid its checksum.

        A directory, FIFO or other non-file at the entry path is corrupt too (checked on the
        opened descriptor, opened non-blocking: see :func:`_open_entry`).
        """
        start = time.perf_counter()
        status = "missing"
        try:
            _check_key(key)
            # A str path: pathlib's joins cost more than the open on small entries.
            name = f"{self.entries_dir}/{key[:2]}/{key[2:4]}/{key}{ENTRY_SUFFIX}"
            try:
                # The stat of the open file identifies it for the quarantine.
                fh, st = _open_entry(name)
            except FileNotFoundError:
                return None, status
            except _NotRegularFile as bad:
                status = "corrupt"
                self._corrupt(Path(name), key, f"not a regular file: a {bad}", bad.st)
                return None, status
            try:
                with fh:
                    entry = read_entry(fh, st.st_size, key, into=into, expect_shape=expect_shape)
            except CacheCorruptionError as exc:
                status = "corrupt"
                self._corrupt(Path(name), key, exc.reason, st)
                return None, status
            status = "hit"
            return entry, status
        finally:
            elapsed = time.perf_counter() - start
            with self._lock:
                self._stats.access_seconds += elapsed
                if status == "hit":
                    self._stats.hits += 1
                else:
                    self._stats.misses += 1

    def _corrupt(self, path: Path, key: str, reason: str, seen: os.stat_result) -> bool:
        """Count a failed entry and quarantine it; on a read-only cache, only log it."""
        if self.read_only:
            logger.warning("latent cache: corrupt entry %s (%s); skipped (read-only)", path, reason)
            moved = False
        else:
            moved = self._quarantine(path, key, reason, seen)
        with self._lock:
            self._stats.corruption_count += 1
            self._stats.quarantined += int(moved)
        return moved

    def _quarantine(self, path: Path, key: str, reason: str, seen: os.stat_result) -> bool:
        """Move a failed entry aside with a ``.reason.txt``; return whether it was moved.

        The file is moved only if it is still the one that was read (same inode and mtime): a
        concurrent writer may have replaced it with a good entry in the meantime. See
        :func:`~wan_data.latents.quarantine.quarantine_entry`.
        """
        return quarantine_entry(self.quarantine_dir, self.index_path, path, key, reason, seen)

    # -- index ---------------------------------------------------------------------------------

    def _read_index(self) -> dict[str, int] | None:
        """``key -> size`` from the index, tombstones applied; ``None`` when there is no index.

        See :func:`~wan_data.latents.index.read_index`.
        """
        return read_index(self.index_path)

    def _sizes(self) -> dict[str, int]:
        """``key -> file size`` of every entry, from the index when it agrees with the directory.

        See :func:`~wan_data.latents.index.entry_sizes` for why both an index and a listing.
        """
        return entry_sizes(self.entries_dir, self.index_path, rewrite=not self.read_only)

    def keys(self) -> set[str]:
        """Every stored key (present files; :meth:`get` still verifies each on read).

        Uses the index when it matches the directory listing, otherwise rescans and rewrites the
        index atomically (see :meth:`_sizes` for why both).
        """
        return set(self._sizes())

    # -- maintenance ---------------------------------------------------------------------------

    def verify_all(self) -> dict[str, int]:
        """Read and verify every entry; quarantine failures. Returns ``{"ok", "quarantined"}``."""
        ok: dict[str, int] = {}
        quarantined = 0
        for key in sorted(listed_keys(self.entries_dir)):
            path = self.path_for(key)
            try:
                fh, st = _open_entry(str(path))
                with fh:
                    data = fh.read()
            except FileNotFoundError:
                continue
            except _NotRegularFile as bad:
                quarantined += self._corrupt(path, key, f"not a regular file: a {bad}", bad.st)
                continue
            try:
                decode_entry(key, data)
            except CacheCorruptionError as exc:
                quarantined += self._corrupt(path, key, exc.reason, st)
                continue
            ok[key] = len(data)
        if not self.read_only:
            write_index(self.index_path, ok)
        return {"ok": len(ok), "quarantined": quarantined}

    def prune(self, keep: Iterable[str]) -> int:
        """Delete entries whose key is not in ``keep`` (orphans of changed sources or configs).

        Also removes temp files older than an hour (writers killed mid-write). Run it when no
        writer is active: an entry put concurrently under a key missing from ``keep`` is deleted.

        Returns:
            the number of entries deleted.
        """
        self.require_writable("pruning")
        wanted = set(keep)
        sizes = self._sizes()
        removed = 0
        for key in sorted(set(sizes) - wanted):
            try:
                self.path_for(key).unlink()
                removed += 1
            except FileNotFoundError:
                pass
            del sizes[key]
        remove_stale_temps(self.entries_dir)
        write_index(self.index_path, sizes)
        if removed:
            logger.info(
                "latent cache: pruned %d orphan entr%s", removed, "y" if removed == 1 else "ies"
            )
        return removed

    def counters(self) -> CacheStats:
        """The read/write counters only, without scanning the directory (cheap per batch)."""
        with self._lock:
            return dataclasses.replace(self._stats)

    def stats(self) -> CacheStats:
        """A copy of the counters with ``total_items`` and ``cache_size_mb`` of the entries dir."""
        sizes = self._sizes()
        with self._lock:
            out = dataclasses.replace(self._stats)
        out.total_items = len(sizes)
        out.cache_size_mb = sum(sizes.values()) / (1024 * 1024)
        return out
