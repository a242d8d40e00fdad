"""Cache-folder faults (issue 13), each reproduced end to end with a tiny Wan VAE.

A touched source, a read-only cache folder, a full disk, hostile entries (a deeply nested
header, a FIFO, a directory, a valid entry of the wrong shape) and two cache passes on one
folder. Every fault must end as a recorded skip or a clear error, never a hang, a raw
traceback, a stale latent, or doubled work. See docs/reliability.md, "Cache folder".
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from latents.ro_fs import read_only_folder
from media import make_video
from vae_fixtures import make_tiny_wan21_vae

import wan_data.latents.atomic as atomic
from wan_data import WanVideoDataset
from wan_data.errors import FatalError
from wan_data.latents.claims import ClaimOwner, Claims
from wan_data.latents.entry import RESERVED_METADATA
from wan_data.latents.prepare import sample_key
from wan_data.latents.store import LatentCache

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]

OPTIONS: dict[str, Any] = {
    "frames": [5],
    "fps": 8,
    "resolution": (32, 32),
    "batch_size": 2,
    "seed": 1,
    "device": "cpu",
    "latent_dtype": torch.float32,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache_faults") / "data"
    for i in range(6):
        make_video(root / f"v{i}.mp4", width=48, height=32, fps=16, num_frames=12 + 2 * i)
    return root


@pytest.fixture(scope="module")
def vae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_wan21_vae(tmp_path_factory.mktemp("cache_faults_vae") / "vae")


def prepared(data: Path, vae: Path, cache: Path, **extra: Any) -> WanVideoDataset:
    ds = WanVideoDataset(data, **{**OPTIONS, **extra}, vae=vae, cache_dir=cache)
    ds.prepare(num_workers=0, progress=False)
    return ds


def keys_of(ds: WanVideoDataset) -> list[str]:
    spec = ds.cache_spec
    assert spec is not None
    return [sample_key(s, 0, ds._decode, spec)[0] for s in ds.samples]


def skipped(ds: WanVideoDataset, reason: str) -> list[dict[str, Any]]:
    return [r for r in ds.report()["skipped"] if r["reason"] == reason]


def quarantine_reasons(cache_dir: Path) -> list[str]:
    return sorted(p.read_text() for p in (cache_dir / "quarantine").glob("*.reason.txt"))


def temp_files(cache_dir: Path) -> list[Path]:
    return [p for p in cache_dir.rglob("*") if ".tmp" in p.name]


# -- a touched source ----------------------------------------------------------------------


def test_a_source_touched_during_a_cached_train_pass_is_skipped_not_fatal(
    data: Path, vae: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "data"
    shutil.copytree(data, folder)
    ds = prepared(folder, vae, tmp_path / "cache")
    victim = folder / "v2.mp4"
    st = os.stat(victim)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # `touch`, mid-run
    batches = list(ds.loader(num_workers=0))  # used to raise CacheIncompleteError
    assert len(batches) == len(ds)
    served = [k for b in batches for k in b["keys"]]
    assert not any("v2.mp4" in k for k in served), "a stale latent was served"
    stale = skipped(ds, "stale_cache")
    assert stale and all(r["path"] == str(victim) for r in stale)
    assert "changed" in stale[0]["message"] and "cache pass" in stale[0]["message"]
    assert any(b["replaced"] for b in batches)


# -- a read-only cache folder --------------------------------------------------------------


def test_training_from_a_read_only_cache_folder(
    data: Path,
    vae: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``chmod -R a-w`` does not bind root, so the folder is made read-only by
    :func:`read_only_folder`: every write under it fails with ``EROFS``, as on a read-only
    mount. The default ledger (inside the cache folder) is opened read-only, with a warning."""
    cache_dir = tmp_path / "cache"
    first = prepared(data, vae, cache_dir)
    victim = LatentCache(cache_dir).path_for(keys_of(first)[0])
    blob = bytearray(victim.read_bytes())
    blob[-2] ^= 0x01
    victim.write_bytes(bytes(blob))
    read_only_folder(monkeypatch, cache_dir)
    with caplog.at_level(logging.WARNING, logger="wan_data"):
        ds = WanVideoDataset(data, **OPTIONS, vae=vae, cache_dir=cache_dir)
        batches = list(ds.loader(num_workers=0))
        report = ds.report()
    assert len(batches) == len(ds)
    assert [r for r in report["skipped"] if r["reason"] == "cache_corrupt"]
    assert victim.exists() and not any((cache_dir / "quarantine").iterdir())
    warnings = [r.getMessage() for r in caplog.records if "latent cache folder" in r.getMessage()]
    assert all("is read-only" in w for w in warnings)
    assert len(warnings) == 1 and str(cache_dir) in warnings[0]
    ledger_warnings = [
        r.getMessage() for r in caplog.records if "folder is read-only" in r.getMessage()
    ]
    assert len(ledger_warnings) == 1 and ds.ledger is not None and ds.ledger.read_only
    with pytest.raises(FatalError, match="read-only"):
        ds.prepare(num_workers=0, progress=False)


# -- a full disk ---------------------------------------------------------------------------


class _FullFile:
    """An open temp file on a disk that fills up: half of the write lands, then ENOSPC."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()

    def write(self, data: bytes) -> int:
        self.fh.write(data[: len(data) // 2])
        self.fh.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)


class _FullDisk:
    """``os`` as the atomic writer sees it, on a disk with room for ``room`` more files."""

    def __init__(self, room: int) -> None:
        self.room = room

    def fdopen(self, fd: int, mode: str) -> Any:
        fh = os.fdopen(fd, mode)
        if self.room <= 0:
            return _FullFile(fh)
        self.room -= 1
        return fh

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def test_a_full_disk_ends_the_cache_pass_with_a_clear_error_and_a_clean_resumable_cache(
    data: Path, vae: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    ds = WanVideoDataset(data, **OPTIONS, vae=vae, cache_dir=cache_dir)
    total = len(set(keys_of(ds)))
    assert total > 2
    monkeypatch.setattr(atomic, "os", _FullDisk(room=2))
    with pytest.raises(FatalError) as info:  # used to be a raw OSError traceback
        ds.prepare(num_workers=0, progress=False)
    message = str(info.value)
    assert str(cache_dir) in message
    assert "wrote 2 entries" in message and f"{total - 2} clip(s) are still to encode" in message
    assert "free space" in message and "another folder" in message
    assert isinstance(info.value.__cause__, OSError)
    monkeypatch.undo()
    assert temp_files(cache_dir) == []
    assert not list((cache_dir / "claims").glob("*.claim"))
    assert LatentCache(cache_dir).verify_all() == {"ok": 2, "quarantined": 0}
    summary = ds.prepare(num_workers=0, progress=False)  # resumes
    assert summary["already_cached"] == 2 and summary["encoded"] == total - 2
    assert ds.cache_complete()


# -- hostile entries -----------------------------------------------------------------------


def test_hostile_entries_are_quarantined_with_their_reason_and_never_served(
    data: Path, vae: Path, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    ds = prepared(data, vae, cache_dir)
    cache = LatentCache(cache_dir)
    keys = sorted(set(keys_of(ds)))
    nested, fifo, _, directory = (cache.path_for(k) for k in keys[:4])
    header = b"[" * 100_000 + b"]" * 100_000
    nested.write_bytes(len(header).to_bytes(8, "little") + header)
    fifo.unlink()
    os.mkfifo(fifo)
    good = cache.get(keys[2])
    assert good is not None
    meta = {k: v for k, v in good.metadata.items() if k not in RESERVED_METADATA}
    z, t, h, w = good.latents.shape
    cache.put(keys[2], torch.zeros(z, t, h + 1, w), meta)  # valid checksum, wrong bucket shape

    started = time.monotonic()
    batches = list(ds.loader(num_workers=0))  # a FIFO used to hang here
    assert time.monotonic() - started < 120
    assert len(batches) == len(ds)
    for batch in batches:
        assert tuple(batch["latents"].shape[1:]) == (z, t, h, w)
    assert len(skipped(ds, "cache_corrupt")) >= 3
    reasons = "\n".join(quarantine_reasons(cache_dir))
    assert "nested too deeply" in reasons
    assert "not a regular file: a FIFO" in reasons
    assert f"differs from {(z, t, h, w)}" in reasons

    directory.unlink()
    directory.mkdir()  # used to end the cache pass in IsADirectoryError
    summary = ds.prepare(num_workers=0, progress=False)
    assert summary["encoded"] == 4
    assert "not a regular file: a directory" in "\n".join(quarantine_reasons(cache_dir))
    assert LatentCache(cache_dir).verify_all()["quarantined"] == 0


# -- two cache passes on one folder ----------------------------------------------------------


CHILD = """
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
import wan_data.latents.encode as encode_module
from wan_data import WanVideoDataset
root, vae, cache_dir, gate, name = sys.argv[1:6]
log = Path(gate, name + ".encoded")
original = encode_module.Encode.process
def counting(self, item):
    with open(log, "a") as fh:
        fh.write("".join(k + "\\n" for k in item.keys))
    return original(self, item)
encode_module.Encode.process = counting
ds = WanVideoDataset(root, **json.loads(sys.argv[6]), latent_dtype=torch.float32,
                     vae=vae, cache_dir=cache_dir)
Path(gate, name + ".ready").touch()
deadline = time.monotonic() + 120
while len(list(Path(gate).glob("*.ready"))) < 2:
    assert time.monotonic() < deadline, "the other process never got ready"
    time.sleep(0.01)
summary = ds.prepare(num_workers=0, progress=False)
Path(gate, name + ".json").write_text(json.dumps(summary))
"""


@pytest.mark.timeout(600)
def test_two_concurrent_cache_passes_encode_each_key_once(
    data: Path, vae: Path, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    keys = keys_of(WanVideoDataset(data, **OPTIONS, vae=vae, cache_dir=cache_dir))
    distinct = set(keys)
    gate = tmp_path / "gate"
    gate.mkdir()
    plain = json.dumps({k: v for k, v in OPTIONS.items() if k != "latent_dtype"})
    path = os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path.rstrip(os.pathsep)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, *map(str, (data, vae, cache_dir, gate)), name, plain],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for name in ("first", "second")
    ]
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=300)
            outputs.append(out.decode(errors="replace"))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(outputs)[-4000:]

    encoded: list[str] = []
    for name in ("first", "second"):
        log = gate / f"{name}.encoded"
        encoded += log.read_text().split() if log.exists() else []
    counts = {k: encoded.count(k) for k in distinct}
    assert counts == dict.fromkeys(distinct, 1), "a key was encoded twice (or never)"
    summaries = [json.loads((gate / f"{n}.json").read_text()) for n in ("first", "second")]
    for s in summaries:
        assert s["encoded"] + s["encoded_elsewhere"] + s["already_cached"] == s["tasks"]
        assert s["skipped"] == 0
    assert sum(s["encoded"] for s in summaries) == len(distinct)
    cache = LatentCache(cache_dir)
    assert cache.keys() == distinct
    assert cache.verify_all() == {"ok": len(distinct), "quarantined": 0}
    assert not list((cache_dir / "claims").glob("*.claim*")) and temp_files(cache_dir) == []


def test_a_claim_left_by_a_killed_pass_is_taken_over_at_once(
    data: Path, vae: Path, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    ds = WanVideoDataset(data, **OPTIONS, vae=vae, cache_dir=cache_dir)
    keys = sorted(set(keys_of(ds)))
    dead = Claims(cache_dir, ClaimOwner(2**22 + 4321, ClaimOwner.current().host, "killed"))
    assert dead.claim(keys[0])  # its pass was killed with kill -9 before writing the entry
    started = time.monotonic()
    summary = ds.prepare(num_workers=0, progress=False)
    assert summary["encoded"] == len(keys) and summary["skipped"] == 0
    assert time.monotonic() - started < 120  # no waiting out the claim timeout
    assert ds.cache_complete()
