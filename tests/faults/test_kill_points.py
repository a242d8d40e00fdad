"""``kill -9`` of the cache pass at seeded random moments (issue 13): nothing corrupt, nothing lost.

A cache pass (``ds.prepare()``) runs in a child process (forked from a process that imported
everything once, so a kill point costs a pass, not a Python start-up) and is killed with
``SIGKILL`` at a seeded random kill point: after ``k`` new entries are on disk (various ``k``),
at a random delay of up to 1.5 s after the pass starts (loading the VAE, claiming, decoding), or
at a random sub-second delay after its first new entry (in the middle of encodes, temp-file
writes, renames, index rewrites). Kill points follow one another on the same cache folder (each
later pass resumes what the killed ones left, taking over their claims), in rounds of four;
after each round:

* every entry the killed passes left on disk verifies (``verify_all`` quarantines nothing);
* a clean re-run completes at once (the dead passes' claims are taken over, not waited out),
  encodes only what is missing and skips nothing;
* ``LatentCache(cache_dir).verify_all()`` quarantines nothing and finds every key;
* nothing is left but entries, the index, the marker, the documented temp files of writers
  killed mid-write (``.<entry>.<pid>.<hex>.tmp``, removed by ``prune`` after an hour) and claims
  of dead passes on complete keys (see ``check_cache``);
* a train pass serves every sample from verified entries, equal to what ``verify_all`` read.

The claimed-work scenario: two passes on one folder, one killed while it holds claims; the
survivor takes the dead pass's keys over at once and completes the cache alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from media import make_video
from vae_fixtures import make_tiny_wan21_vae

from wan_data import WanVideoDataset
from wan_data.latents.claims import pid_alive
from wan_data.latents.prepare import sample_key
from wan_data.latents.store import LatentCache

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]
SEED = 20261302
TARGET_KILLS = 12  # kill points that killed a running pass, plus the claimed-work scenario's
KILLS_PER_ROUND = 4  # then a clean re-run and the checks, on a fresh cache for the next round
MAX_TRIES_PER_ROUND = 6  # a pass may end before its kill point (a fast machine, a full cache)
MAX_ROUNDS = (
    12  # rounds end early on a fast machine (passes fill the cache before their kill point)
)
MAX_NEW_ENTRIES = 6
MAX_DELAY_SECONDS = 1.0
CLAIM_TEMP = re.compile(r"\.[0-9a-f]{64}\.[0-9a-f]{16}\.[0-9a-f]{8}\.tmp")

OPTIONS: dict[str, Any] = {
    "frames": [5, 9],
    "fps": 8,
    "resolution": (32, 32),
    "batch_size": 2,
    "seed": 1,
    "device": "cpu",
    "latent_dtype": torch.float32,
    "variations": 4,
    "sampling": "random",  # each variant its own window and crop: 4 distinct keys per clip
    "crop": "random",
}

ZYGOTE = r"""
import json, os, select, sys, time, traceback
from pathlib import Path
import torch
torch.set_num_threads(1)
from diffusers import AutoencoderKLWan  # noqa: F401  (imported once, before any fork)
from wan_data import WanVideoDataset
root, vae = sys.argv[1:3]
options = json.loads(sys.argv[3])
options["latent_dtype"] = torch.float32
print("zygote", flush=True)
running = set()
while True:
    while running:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        running.discard(pid)
        print(f"exit {pid} {os.waitstatus_to_exitcode(status)}", flush=True)
    if not select.select([sys.stdin], [], [], 0.005)[0]:
        continue
    line = sys.stdin.readline()
    if not line:  # the test is done: end the passes still running, reap them
        for pid in running:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        break
    command, *args = line.split()
    if command == "kill":  # only an unreaped child: its pid cannot be another process's yet
        pid = int(args[0])
        if pid in running:
            os.kill(pid, 9)
        continue
    cache_dir, ready = args
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            ds = WanVideoDataset(root, **options, vae=vae, cache_dir=cache_dir)
            Path(ready).write_text(str(os.getpid()))
            summary = ds.prepare(num_workers=0, progress=False)
            Path(ready + ".done").write_text(json.dumps(summary))
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    running.add(pid)
    print(f"pid {pid}", flush=True)
"""
"""A process that imports torch, diffusers and wan_data once, then forks one cache pass per
request (``<cache_dir> <ready file>`` on stdin): a kill point costs the pass, not a Python
start-up (seconds of imports on two cores). It reaps its children and reports ``pid N`` and
``exit N CODE`` (``-9`` for a kill) on stdout, so a killed pass's pid is gone at once, as it is
after a real ``kill -9``."""


class Zygote:
    def __init__(self, data: Path, vae: Path) -> None:
        plain = json.dumps({k: v for k, v in OPTIONS.items() if k != "latent_dtype"})
        path = os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path.rstrip(os.pathsep)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE, str(data), str(vae), plain],
            env=env,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.exits: dict[int, int] = {}
        threading.Thread(target=self._read, daemon=True).start()
        assert self._next(r"zygote", 180), "the zygote did not start:\n" + self.text()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line.strip())

    def text(self) -> str:
        return "".join(self.output)[-4000:]

    def _next(self, pattern: str, timeout: float) -> re.Match[str] | None:
        """The next stdout line matching ``pattern`` (recording exits met on the way)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=min(left, 0.002))
            except queue.Empty:
                continue
            exited = re.fullmatch(r"exit (\d+) (-?\d+)", line)
            if exited:
                self.exits[int(exited[1])] = int(exited[2])
            found = re.fullmatch(pattern, line)
            if found:
                return found
        return None

    def exited(self, pid: int, timeout: float = 0.0) -> int | None:
        if pid not in self.exits:
            self._next(rf"exit {pid} -?\d+", timeout)
        return self.exits.get(pid)

    def start_pass(self, cache_dir: Path, ready: Path) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"run {cache_dir} {ready}\n")
        self.proc.stdin.flush()
        found = self._next(r"pid (\d+)", 60)
        assert found, "the zygote did not fork:\n" + self.text()
        pid = int(found[1])
        deadline = time.monotonic() + 120
        while not ready.exists():
            if self.exited(pid) is not None:
                pytest.fail(f"the cache pass exited before it started:\n{self.text()}")
            assert time.monotonic() < deadline, "the cache pass did not start within 120 s"
            time.sleep(0.002)
        return pid

    def kill(self, pid: int) -> None:
        """``SIGKILL`` the pass ``pid``, sent by the zygote, which has not reaped it yet if it
        ended already (so the signal can never reach a process that reused the pid)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"kill {pid}\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def zygote(data: Path, vae: Path) -> Iterator[Zygote]:
    z = Zygote(data, vae)
    try:
        yield z
    finally:
        z.close()


TEMP = re.compile(r"^\.[0-9a-f]+\.safetensors\.\d+\.[0-9a-f]+\.tmp$")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kill_points") / "data"
    for i in range(8):
        make_video(root / f"v{i}.mp4", width=48, height=32, fps=16, num_frames=20 + 2 * (i % 3))
    return root


@pytest.fixture(scope="module")
def vae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_wan21_vae(tmp_path_factory.mktemp("kill_points_vae") / "vae")


def entries(cache_dir: Path) -> list[Path]:
    folder = cache_dir / "entries"
    return list(folder.rglob("*.safetensors")) if folder.exists() else []


def claim_files(cache_dir: Path) -> list[Path]:
    folder = cache_dir / "claims"
    return sorted(p for p in folder.iterdir()) if folder.exists() else []


def dataset(data: Path, vae: Path, cache_dir: Path) -> WanVideoDataset:
    return WanVideoDataset(data, **OPTIONS, vae=vae, cache_dir=cache_dir)


def claims_of(cache_dir: Path, pid: int) -> list[str]:
    """The keys whose claim file names ``pid`` as its owner."""
    held = []
    for path in claim_files(cache_dir):
        with contextlib.suppress(OSError, ValueError):
            if path.suffix == ".claim" and json.loads(path.read_text()).get("pid") == pid:
                held.append(path.name.removesuffix(".claim"))
    return held


def kill_at(
    zygote: Zygote,
    pid: int,
    cache_dir: Path,
    point: tuple[str, float],
    *,
    holding: bool = False,
) -> dict[str, Any]:
    """Wait for the kill point (and, with ``holding``, until the pass holds a claim), then
    ``SIGKILL`` the pass; what happened, for the log."""
    kind, value = point
    before = len(entries(cache_dir))
    started = time.monotonic()
    deadline = started + 120
    first: float | None = None
    held: list[str] = []
    while zygote.exited(pid) is None and time.monotonic() < deadline:
        reached = False
        if kind == "entries":
            reached = len(entries(cache_dir)) - before >= value
        elif kind == "delay":
            reached = time.monotonic() - started >= value
        else:  # after_first_entry
            if first is None and len(entries(cache_dir)) > before:
                first = time.monotonic()
            reached = first is not None and time.monotonic() - first >= value
        if reached:
            held = claims_of(cache_dir, pid)  # just before the kill: a later pass takes them
            if held or not holding:
                break
        time.sleep(0.001)
    if zygote.exited(pid) is None:
        zygote.kill(pid)
    code = zygote.exited(pid, timeout=60)
    assert code in (0, -signal.SIGKILL), (code, zygote.text())
    finished = code == 0  # it may have ended just before the signal
    return {
        "point": point,
        "killed": not finished,
        "held_claims": held,
        "new_entries": len(entries(cache_dir)) - before,
        "claims_left": len([p for p in claim_files(cache_dir) if p.suffix == ".claim"]),
    }


def check_cache(ds: WanVideoDataset, cache_dir: Path, log: list[dict[str, Any]]) -> None:
    """After kill points: the clean re-run, verification, leftovers and a train pass."""
    keys = ds.cache_keys()
    on_disk = LatentCache(cache_dir).verify_all()
    assert on_disk["quarantined"] == 0, f"a killed pass left a corrupt entry: {log}"

    started = time.monotonic()
    summary = ds.prepare(num_workers=0, progress=False)
    took = time.monotonic() - started
    assert took < 60, f"the re-run waited {took:.0f} s (claims not taken over at once?)"
    assert summary["skipped"] == 0 and summary["encoded_elsewhere"] == 0, summary
    assert summary["already_cached"] + summary["encoded"] == summary["tasks"], summary
    assert summary["already_cached"] == on_disk["ok"], (summary, on_disk)

    cache = LatentCache(cache_dir)
    verified = cache.verify_all()
    assert verified == {"ok": len(keys), "quarantined": 0}, (verified, log)
    assert cache.keys() == keys
    assert ds.cache_complete()

    # A pass killed after writing an entry and before releasing its claim leaves that claim;
    # its key is complete, so no pass claims it again (were the entry ever lost, the claim is
    # stale at once: its owner's pid is gone). A killed stale-claim taker can leave the claim
    # it had renamed aside. Neither may belong to a live pass or hold back a missing key.
    for path in claim_files(cache_dir):
        if path.suffix == ".claim":
            record = json.loads(path.read_text() or "{}")
            assert record.get("pid") not in (None, os.getpid()), (path, record)
            assert not pid_alive(record["pid"]), f"a live pass holds {path}: {record}"
            assert cache.contains(path.name.removesuffix(".claim")), f"{path} on a missing key"
        else:
            # Or the temporary record of a pass killed between writing it and linking it into
            # place (never read as a claim; a later pass sweeps it after 30 s).
            assert ".claim.stale." in path.name or CLAIM_TEMP.fullmatch(path.name), (
                f"stray file {path}"
            )
    assert not (cache_dir / "quarantine").exists() or not any((cache_dir / "quarantine").iterdir())
    for path in (cache_dir / "entries").rglob("*"):
        if path.is_file() and not path.name.endswith(".safetensors"):
            # The only documented leftover: the temp file of a writer killed mid-write.
            assert TEMP.match(path.name), f"stray file {path}"
            pid = int(path.name.split(".")[3])
            assert pid != os.getpid(), f"a temp file of the clean re-run was left: {path}"

    # The train pass: every sample served, from the entries verify_all just read.
    spec = ds.cache_spec
    assert spec is not None
    by_key = {s.key: s for s in ds.samples}
    variant = spec.variant(ds.epoch)
    served = 0
    for batch in ds.loader(num_workers=0):
        assert len(batch["keys"]) == OPTIONS["batch_size"]
        for i, member in enumerate(batch["keys"]):
            key, _ = sample_key(by_key[member], variant, ds._decode, spec)
            entry = cache.get(key)
            assert entry is not None, key
            assert torch.equal(batch["latents"][i].to(entry.latents.dtype), entry.latents)
            served += 1
    report = ds.report()
    assert report["skipped"] == [], report["skipped"]
    assert served >= len(ds.samples)


def kill_point(rng: random.Random, n: int) -> tuple[str, float]:
    """The ``n``-th kill point: after ``k`` new entries; at a delay after the pass starts
    (loading the VAE, claiming, decoding); or at a delay after its first new entry (in the
    middle of encodes, temp-file writes, renames, index rewrites)."""
    kind = ("entries", "delay", "after_first_entry")[n % 3]
    if kind == "entries":
        return kind, rng.randint(1, MAX_NEW_ENTRIES)
    if kind == "delay":
        return kind, round(rng.uniform(0.0, MAX_DELAY_SECONDS), 3)
    return kind, round(rng.uniform(0.0, MAX_DELAY_SECONDS / 2), 3)


@pytest.mark.timeout(600)
def test_kill_9_at_random_points_of_the_cache_pass_loses_nothing_but_in_flight_work(
    data: Path, vae: Path, zygote: Zygote, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    log: list[dict[str, Any]] = []
    kills = 0
    for round_ in range(MAX_ROUNDS):
        if kills >= TARGET_KILLS:
            break
        cache_dir = tmp_path / f"cache{round_}"
        ds = dataset(data, vae, cache_dir)
        total = len(ds.cache_keys())
        round_kills = 0
        for i in range(MAX_TRIES_PER_ROUND):
            if round_kills == min(KILLS_PER_ROUND, TARGET_KILLS - kills):
                break
            if len(entries(cache_dir)) >= total:
                break
            point = kill_point(rng, len(log))
            ready = tmp_path / f"ready{round_}_{i}"
            pid = zygote.start_pass(cache_dir, ready)
            record = kill_at(zygote, pid, cache_dir, point)
            log.append(record)
            round_kills += record["killed"]
        kills += round_kills
        check_cache(ds, cache_dir, log)
    print("\n".join(str({k: v for k, v in r.items() if k != "held_claims"}) for r in log))
    assert kills >= TARGET_KILLS, f"only {kills} passes were killed mid-way: {log}"
    assert any(r["held_claims"] for r in log), "no pass was killed holding a claim"


@pytest.mark.timeout(300)
def test_a_pass_killed_while_another_runs_leaves_its_claims_to_the_survivor(
    data: Path, vae: Path, zygote: Zygote, tmp_path: Path
) -> None:
    """Two passes on one folder; one is killed holding claims. The survivor sees the dead
    pass's claims as stale at once (same host, pid gone), encodes those keys itself and ends
    with the cache complete, without waiting out the claim timeout (30 minutes)."""
    cache_dir = tmp_path / "cache"
    ds = dataset(data, vae, cache_dir)
    total = len(ds.cache_keys())
    assert total == 8 * OPTIONS["variations"]
    rng = random.Random(SEED + 1)
    point = ("entries", rng.randint(2, MAX_NEW_ENTRIES))
    victim = zygote.start_pass(cache_dir, tmp_path / "victim")
    survivor = zygote.start_pass(cache_dir, tmp_path / "survivor")
    record = kill_at(zygote, victim, cache_dir, point, holding=True)
    assert record["killed"], f"the victim finished before its kill point: {record}"
    killed_at = time.monotonic()
    code = zygote.exited(survivor, timeout=180)
    waited = time.monotonic() - killed_at
    assert code == 0, zygote.text()
    assert waited < 90, f"the survivor needed {waited:.0f} s after the kill"
    summary = json.loads((tmp_path / "survivor.done").read_text())
    assert summary["skipped"] == 0, summary
    assert (
        summary["encoded"] + summary["encoded_elsewhere"] + summary["already_cached"]
        == (summary["tasks"])
    ), summary
    assert record["held_claims"], f"the victim held no claim when it was killed: {record}"
    cache = LatentCache(cache_dir)
    assert all(cache.contains(key) for key in record["held_claims"])
    assert len(entries(cache_dir)) == total
    check_cache(ds, cache_dir, [record])
