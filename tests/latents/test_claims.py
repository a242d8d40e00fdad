"""Work claims of the cache pass (issue 13): claiming, stale-claim expiry, waiting at the end."""

from __future__ import annotations

import json
import os
from pathlib import Path

from wan_data.latents.claims import ClaimOwner, Claims, settle

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
