"""Work claims of the cache pass (issue 13): claiming, stale-claim expiry, waiting at the end."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from wan_data.latents import claims as claims_module
from wan_data.latents.claims import TORN_CLAIM_SECONDS, ClaimOwner, Claims, settle

KEY_A = "a" * 64
KEY_B = "b" * 64


class Clock:
    """An injected clock: tests move time instead of sleeping."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def claims(root: Path, pid: int, host: str, clock: Clock, *, timeout: float = 60.0) -> Claims:
    alive = {pid}
    return Claims(
        root,
        ClaimOwner(pid, host, f"token-{pid}-{host}"),
        timeout=timeout,
        clock=clock,
        alive=lambda p: p in alive or p == os.getpid(),
    )


def test_one_claim_per_key_and_only_the_owner_releases_it(tmp_path: Path) -> None:
    clock = Clock()
    mine = claims(tmp_path, os.getpid(), "here", clock)
    other = claims(tmp_path, os.getpid(), "there", clock)  # another host: no pid check
    assert mine.claim(KEY_A)
    assert mine.claim(KEY_A)  # taking one's own claim again is fine
    assert not other.claim(KEY_A)
    assert other.state(KEY_A) == "live" and mine.state(KEY_A) == "mine"
    record = json.loads(mine.path(KEY_A).read_text())
    assert record["pid"] == os.getpid() and record["host"] == "here" and record["time"] == clock.now
    other.release(KEY_A)  # not its claim: left alone
    assert mine.state(KEY_A) == "mine"
    mine.release(KEY_A)
    assert mine.state(KEY_A) == "free" and other.claim(KEY_A)


def test_a_claim_older_than_the_timeout_expires_and_is_taken_over(tmp_path: Path) -> None:
    clock = Clock()
    first = claims(tmp_path, os.getpid(), "host-1", clock, timeout=60.0)
    second = claims(tmp_path, os.getpid(), "host-2", clock, timeout=60.0)
    assert first.claim(KEY_A)
    clock.now += 59.0
    assert second.state(KEY_A) == "live" and not second.claim(KEY_A)
    clock.now += 2.0  # 61 s old: stale
    assert second.state(KEY_A) == "stale"
    assert second.claim(KEY_A)
    assert second.state(KEY_A) == "mine" and first.state(KEY_A) == "live"
    assert [p.name for p in (tmp_path / "claims").iterdir()] == [f"{KEY_A}.claim"]


def test_a_claim_of_a_dead_process_on_this_host_expires_at_once(tmp_path: Path) -> None:
    clock = Clock()
    dead_pid = 2**22 + 12345  # above any pid_max in use
    dead = Claims(tmp_path, ClaimOwner(dead_pid, "here", "dead"), clock=clock)
    assert dead.claim(KEY_A)
    me = Claims(tmp_path, ClaimOwner(os.getpid(), "here", "me"), clock=clock)
    assert me.state(KEY_A) == "stale" and me.claim(KEY_A)
    # On another host the pid means nothing: only the timeout expires it.
    assert dead.claim(KEY_B)
    elsewhere = Claims(tmp_path, ClaimOwner(os.getpid(), "other-host", "x"), clock=clock)
    assert elsewhere.state(KEY_B) == "live"


def test_an_unwritten_claim_is_judged_by_its_age(tmp_path: Path) -> None:
    """A claim file created by a writer that died before writing it is not live forever."""
    clock = Clock(now=os.stat(tmp_path).st_mtime)
    me = claims(tmp_path, os.getpid(), "here", clock, timeout=60.0)
    me.folder.mkdir()
    me.path(KEY_A).write_bytes(b"")
    assert me.state(KEY_A) == "live"
    clock.now += 3600
    assert me.state(KEY_A) == "stale" and me.claim(KEY_A)


def test_a_writer_killed_mid_claim_leaves_no_claim_and_its_leftover_is_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the kill-point test: a pass killed between creating its claim and writing it
    left an empty claim that held the key for the whole timeout (30 min). The record is now
    written aside and linked into place: the claim is whole or absent."""
    clock = Clock(now=os.stat(tmp_path).st_mtime)
    dying = claims(tmp_path, os.getpid(), "here", clock)

    class Killed(BaseException):
        pass

    def killed_in_write(fd: int, data: bytes) -> int:
        raise Killed

    monkeypatch.setattr(claims_module.os, "write", killed_in_write)
    monkeypatch.setattr(claims_module.Path, "unlink", lambda *a, **k: None)  # no cleanup: dead
    with pytest.raises(Killed):
        dying.claim(KEY_A)
    monkeypatch.undo()
    leftovers = [p.name for p in dying.folder.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].endswith(".tmp"), leftovers
    other = claims(tmp_path, os.getpid(), "there", clock)
    assert other.state(KEY_A) == "free" and other.claim(KEY_A)

    assert other.sweep() == 0  # young: its writer may still be between write and link
    clock.now += TORN_CLAIM_SECONDS + 1
    assert other.sweep() == 1
    assert [p.name for p in other.folder.iterdir()] == [f"{KEY_A}.claim"]


def test_without_hard_links_claims_are_still_exclusive_and_a_torn_one_expires_soon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(claims_module.os, "link", no_links)
    clock = Clock(now=os.stat(tmp_path).st_mtime)
    mine = claims(tmp_path, os.getpid(), "here", clock, timeout=1800.0)
    other = claims(tmp_path, os.getpid(), "there", clock, timeout=1800.0)
    assert mine.claim(KEY_A) and not other.claim(KEY_A)
    assert json.loads(mine.path(KEY_A).read_text())["host"] == "here"
    assert [p.name for p in mine.folder.iterdir()] == [f"{KEY_A}.claim"]  # no temporaries left
    other.path(KEY_B).write_bytes(b"")  # torn: its writer died between create and write
    assert other.state(KEY_B) == "live"
    clock.now += TORN_CLAIM_SECONDS + 1  # far below the 1800 s timeout
    assert mine.state(KEY_B) == "stale" and mine.claim(KEY_B)


def test_settle_waits_for_a_live_claim_then_takes_over_when_it_goes_stale(
    tmp_path: Path,
) -> None:
    clock = Clock()
    other = claims(tmp_path, os.getpid(), "there", clock, timeout=60.0)
    me = claims(tmp_path, os.getpid(), "here", clock, timeout=60.0)
    done: set[str] = set()
    assert other.claim(KEY_A) and other.claim(KEY_B)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            done.add(KEY_B)  # the other pass writes B...
            other.release(KEY_B)
        else:
            clock.now += 120  # ...and dies before writing A: its claim goes stale

    retry = settle([KEY_A, KEY_B], done.__contains__, me, set(), poll=0.25, sleep=sleep)
    assert retry == [KEY_A]
    assert sleeps == [0.25, 0.25]


def test_settle_does_not_retry_what_this_pass_tried_and_failed(tmp_path: Path) -> None:
    me = claims(tmp_path, os.getpid(), "here", Clock())
    assert me.claim(KEY_A)  # decoded and failed here: the claim is still this pass's
    attempted: set[str] = set()

    def never(seconds: float) -> None:
        raise AssertionError("nothing to wait for")

    assert settle([KEY_A], lambda k: False, me, attempted, sleep=never) == []
    assert attempted == {KEY_A} and me.state(KEY_A) == "free"
