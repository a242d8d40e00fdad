"""Work claims of the cache pass: two passes on one cache folder encode each key once.

Two cache passes that know nothing of each other (two jobs pointed at one shared folder, a
rerun started while the first still runs) used to each encode every missing clip: a valid
cache, for twice the GPU time. Before a clip is decoded, its pass takes a claim on its key: a
file ``claims/<key>.claim`` created with ``O_CREAT | O_EXCL`` (atomic on local and NFSv3+
filesystems: one creator wins) holding the owner's pid, host, pass token and time. A pass skips
keys another live pass holds and comes back to them at the end: by then the other pass has
written them, or its claim has gone stale and is taken over.

A claim is stale when it is older than ``timeout`` seconds, or when its owner ran on this host
and its process is gone (a pass killed with ``kill -9`` leaves claims that are then taken over at
once instead of after the timeout). Claims only save work: a lost race at worst encodes a key
twice, and two writers of a key each rename a complete, identical entry (see
:mod:`wan_data.latents.atomic`), so correctness never depends on them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "CLAIMS_DIR",
    "STALE_CLAIM_SECONDS",
    "TORN_CLAIM_SECONDS",
    "ClaimOwner",
    "Claims",
    "pid_alive",
    "settle",
]

logger = logging.getLogger("wan_data")

CLAIMS_DIR = "claims"
# A claim covers decoding and encoding one chunk of clips, seconds to a few minutes; a claim
# this old belongs to a pass that died on another host (same-host deaths are seen at once).
STALE_CLAIM_SECONDS = 1800.0
# A claim file with no readable record (created by O_EXCL but not yet written, or torn by a
# crash) this old is stale: its writer needs microseconds between the create and the write.
TORN_CLAIM_SECONDS = 30.0
# Temporary claim records: ``.<key>.<token>.<random>.tmp`` in the claims folder.
_TMP_SUFFIX = ".tmp"

ClaimState = Literal["free", "mine", "live", "stale"]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (signal 0 checks without signalling)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


@dataclass(frozen=True)
class ClaimOwner:
    """Who holds a claim: the process of the cache pass (not a DataLoader worker, which exits
    while its claims are still meant to hold), its host, and a token naming the pass."""

    pid: int
    host: str
    token: str

    @classmethod
    def current(cls) -> ClaimOwner:
        """This process, this host and a fresh random token: the owner of a new pass's claims."""
        return cls(os.getpid(), socket.gethostname(), secrets.token_hex(8))


@dataclass
class Claims:
    """The claims of one cache pass on the cache folder ``root`` (picklable: workers claim too).

    Args:
        root: the cache root; claims live in ``root/claims``.
        owner: this pass.
        timeout: seconds after which anyone's claim is stale.
        clock: the time source (injectable for tests of expiry).
        alive: whether a pid of this host is running (injectable for tests).
    """

    root: Path
    owner: ClaimOwner
    timeout: float = STALE_CLAIM_SECONDS
    clock: Callable[[], float] = field(default=time.time)
    alive: Callable[[int], bool] = field(default=pid_alive)

    @property
    def folder(self) -> Path:
        """``<root>/claims``, where the claim files are."""
        return self.root / CLAIMS_DIR

    def path(self, key: str) -> Path:
        """The claim file of ``key``: ``claims/<key>.claim``."""
        return self.folder / f"{key}.claim"

    def claim(self, key: str) -> bool:
        """Take the claim on ``key``; ``False`` when another live pass holds it.

        A stale claim is taken over; a claim of this pass is kept.
        """
        for _ in range(3):
            try:
                if self._create(key):
                    return True
            except OSError as exc:
                # Claims only save work: a folder that cannot take one (full, read-only)
                # must not stop the pass, which then encodes the key unclaimed.
                logger.debug(
                    "cache pass: cannot claim %s... (%s); encoding it unclaimed", key[:12], exc
                )
                return True
            try:
                state, record = self._read(key)
            except OSError as exc:  # not a file (a directory, a FIFO planted as a claim)
                logger.debug(
                    "cache pass: claim on %s... unreadable (%s); encoding it unclaimed",
                    key[:12],
                    exc,
                )
                return True
            if state == "mine":
                return True
            if state == "live":
                return False
            if state == "stale" and not self._remove_stale(key, record):
                return False  # someone else took it over first
        return False

    def state(self, key: str) -> ClaimState:
        """``free`` (no claim), ``mine``, ``live`` (another pass holds it) or ``stale``; a
        claim that is not a readable file protects nothing: ``stale``."""
        try:
            return self._read(key)[0]
        except OSError:
            return "stale"

    def release(self, key: str) -> None:
        """Drop this pass's claim on ``key`` (another pass's claim is left alone)."""
        try:
            state, _ = self._read(key)
        except OSError:
            return  # not a claim this pass wrote
        if state == "mine":
            self.path(key).unlink(missing_ok=True)

    def sweep(self) -> int:
        """Remove the leftovers of passes killed mid-claim (temporary records, claims set
        aside for a takeover) older than ``TORN_CLAIM_SECONDS``; how many were removed.

        Their writers remove them within microseconds, so an old one has no owner left.
        Called at the start of every cache pass, so a folder never fills with them.
        """
        removed = 0
        try:
            names = os.listdir(self.folder)
        except OSError:
            return 0  # no claims folder yet (or none readable): nothing to sweep
        for name in names:
            if not (name.endswith(_TMP_SUFFIX) or ".claim.stale." in name):
                continue
            path = self.folder / name
            try:
                if self.clock() - path.lstat().st_mtime > TORN_CLAIM_SECONDS:
                    path.unlink()
                    removed += 1
            except OSError:
                continue  # gone already, or not ours to remove: harmless either way
        if removed:
            logger.info("cache pass: removed %d leftover claim file(s) of killed passes", removed)
        return removed

    def is_stale(self, record: dict[str, Any]) -> bool:
        """Whether a claim record no longer protects its key (see the module docstring)."""
        claimed_at = record.get("time")
        if not isinstance(claimed_at, (int, float)):
            return True
        age = self.clock() - float(claimed_at)
        if age > self.timeout or (
            record.get("torn") and age > min(TORN_CLAIM_SECONDS, self.timeout)
        ):
            return True
        pid = record.get("pid")
        if record.get("host") == self.owner.host and isinstance(pid, int):
            if pid == self.owner.pid:
                # An earlier pass of this very process: passes here run one after the other and
                # release their claims as they end, so its claim is a leftover.
                return record.get("token") != self.owner.token
            return not self.alive(pid)
        return False

    # -- internals -----------------------------------------------------------------------

    def _create(self, key: str) -> bool:
        """Create the claim on ``key`` with this pass's record; ``False`` if a claim exists."""
        record = {
            "pid": self.owner.pid,
            "host": self.owner.host,
            "token": self.owner.token,
            "time": self.clock(),
        }
        data = json.dumps(record).encode("utf-8")
        path = self.path(key)
        tmp = self.folder / f".{key}.{self.owner.token}.{secrets.token_hex(4)}{_TMP_SUFFIX}"
        try:
            _write_new(tmp, data)
        except FileNotFoundError:
            self.folder.mkdir(parents=True, exist_ok=True)
            _write_new(tmp, data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise
            # No hard links here (some FUSE and SMB mounts): create and write in place; a
            # claim torn by a crash in between goes stale after TORN_CLAIM_SECONDS.
            try:
                _write_new(path, data)
            except FileExistsError:
                return False
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _read(self, key: str) -> tuple[ClaimState, dict[str, Any]]:
        path = self.path(key)
        try:
            raw, mtime = _read_claim(path)
        except FileNotFoundError:
            return "free", {}
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError):
            # Created but not yet written (only where claims cannot be hard-linked whole), or
            # torn by a crash: judged by its age alone, with the short torn-claim limit.
            record = {"time": mtime, "torn": True}
        if record.get("token") == self.owner.token and record.get("host") == self.owner.host:
            return "mine", record
        return ("stale" if self.is_stale(record) else "live"), record

    def _remove_stale(self, key: str, seen: dict[str, Any]) -> bool:
        """Remove the stale claim ``seen``; ``False`` if the file was no longer that claim.

        Rename first (only one taker's rename of a given file succeeds), then check that the
        renamed file is the claim judged stale: if a faster taker had already replaced it with
        a fresh claim, that claim is put back.
        """
        path = self.path(key)
        aside = path.with_name(f"{path.name}.stale.{self.owner.token}.{secrets.token_hex(4)}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return True  # gone already: free to create
        try:
            try:
                record = json.loads(aside.read_bytes())
            except (ValueError, RecursionError):
                record = None
            if isinstance(record, dict) and record != seen and not self.is_stale(record):
                with contextlib.suppress(FileExistsError):
                    os.link(aside, path)  # put the fresh claim back
                return False
        finally:
            aside.unlink(missing_ok=True)
        logger.info(
            "cache pass: took over the stale claim on %s... (pid %s on %s)",
            key[:12],
            seen.get("pid"),
            seen.get("host"),
        )
        return True


# ``link`` errors meaning the filesystem has no hard links (not that the claim exists).
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS}


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` exclusively and write ``data`` to it.

    Raises:
        FileExistsError: ``path`` exists.
        FileNotFoundError: its folder does not.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _read_claim(path: Path) -> tuple[bytes, float]:
    """The bytes and mtime of claim file ``path``, opened non-blocking: a FIFO planted as a
    claim must not hang the pass.

    Raises:
        FileNotFoundError: no claim.
        OSError: something other than a regular file is there (or the folder is a file).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb", closefd=True) as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return fh.read(), st.st_mtime


def settle(
    keys: list[str],
    complete: Callable[[str], bool],
    claims: Claims,
    attempted: set[str],
    *,
    poll: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """After a round of the cache pass: the keys this pass must still encode itself.

    ``keys`` are the keys the round was given; those ``complete`` by now drop out. A key this
    pass claimed and did not finish failed here (its skip is recorded): it goes to
    ``attempted``, its claim is released, and it is not tried again. A key another live pass
    holds is waited for, polling every ``poll`` seconds, until it is complete (the other pass
    wrote it) or its claim is released or stale (the other pass failed or died): then it is
    returned, to be encoded by this pass. Waiting ends, since a claim goes stale after
    ``claims.timeout`` seconds at the latest.
    """
    waiting: list[str] = []
    for key in keys:
        if complete(key):
            continue
        if key in attempted or claims.state(key) == "mine":
            attempted.add(key)
            claims.release(key)
            continue
        waiting.append(key)
    retry: list[str] = []
    if waiting:
        logger.info("cache pass: waiting for %d clip(s) another pass is encoding", len(waiting))
    while waiting:
        still: list[str] = []
        for key in waiting:
            if complete(key):
                continue
            if claims.state(key) in ("free", "stale"):
                retry.append(key)
            else:
                still.append(key)
        waiting = still
        if waiting:
            sleep(poll)
    return retry
