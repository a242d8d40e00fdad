"""A hostile cache folder (issue 13): every planted file is refused, reported, never served.

Kinds already covered elsewhere are not repeated here:

- an entry whose JSON header nests 100k lists deep, a FIFO or a directory at an entry path, an
  entry of another shape with a valid checksum: ``tests/faults/test_cache_faults.py::
  test_hostile_entries_are_quarantined_with_their_reason_and_never_served`` (train pass) and
  ``tests/latents/test_store_hostile.py`` (store level);
- a read-only cache folder: ``tests/faults/test_cache_faults.py::
  test_training_from_a_read_only_cache_folder``.

Here: one table of entry-level forgeries (:data:`ENTRY_KINDS`), each planted in a copy of a
prepared cache and met by a real train pass (``dataset.loader(num_workers=0)``): the pass
yields every batch, the forged entry is skipped as ``cache_corrupt`` and quarantined with its
reason, and every latent served is bit-identical to the one a clean cache serves for that
sample. Then folder-level damage (index, quarantine, claims, marker, metadata cache) met by the
train pass and the cache pass, and the one thing a hostile cache *can* do, stated as a test:
serve a well-formed entry with a valid checksum but forged latents (the checksum guards
against corruption, it is not a signature). docs/reliability.md ("Threat model") cites these.

Run: ``.venv/bin/python -m pytest tests/security/test_hostile_cache.py -q -p no:cacheprovider``
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from bounded import finishes
from media import ffmpeg_available, make_video
from vae_fixtures import make_tiny_wan21_vae

from wan_data import WanVideoDataset
from wan_data.errors import WanDataError
from wan_data.latents.entry import RESERVED_METADATA, entry_checksum
from wan_data.latents.prepare import sample_key
from wan_data.latents.store import LatentCache

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not ffmpeg_available(), reason="needs the ffmpeg CLI"),
]

OPTIONS: dict[str, Any] = {
    "frames": [5],
    "fps": 8,
    "resolution": (32, 32),
    "batch_size": 2,
    "seed": 1,
    "device": "cpu",
    "latent_dtype": torch.float32,
}

PASS_SECONDS = 60.0
"""Upper bound on one train or cache pass here (each takes well under a second)."""


@dataclass(frozen=True)
class Prepared:
    data: Path
    vae: Path
    cache: Path
    keys: dict[str, str]  # sample key -> cache key
    clean: dict[str, torch.Tensor]  # sample key -> the latents a clean cache serves


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    base = tmp_path_factory.mktemp("hostile_cache")
    data = base / "data"
    for i in range(4):
        make_video(data / f"v{i}.mp4", width=48, height=32, fps=16, num_frames=12 + 2 * i)
    vae = make_tiny_wan21_vae(base / "vae")
    cache = base / "cache"
    ds = WanVideoDataset(data, **OPTIONS, vae=vae, cache_dir=cache)
    ds.prepare(num_workers=0, progress=False)
    spec = ds.cache_spec
    assert spec is not None
    keys = {s.key: sample_key(s, 0, ds._decode, spec)[0] for s in ds.samples}
    clean: dict[str, torch.Tensor] = {}
    for batch in ds.loader(num_workers=0):
        for i, key in enumerate(batch["keys"]):
            clean[key] = batch["latents"][i].clone()
    assert set(clean) == set(keys) and len(set(keys.values())) == 4
    return Prepared(data, vae, cache, keys, clean)


def _copy_cache(prepared: Prepared, tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    shutil.copytree(prepared.cache, cache, symlinks=True)
    return cache


def train_pass(prepared: Prepared, cache: Path) -> tuple[WanVideoDataset, list[dict[str, Any]]]:
    """Construct over ``cache`` and iterate once; check every batch and every latent served."""

    def run() -> tuple[WanVideoDataset, list[dict[str, Any]]]:
        ds = WanVideoDataset(prepared.data, **OPTIONS, vae=prepared.vae, cache_dir=cache)
        return ds, list(ds.loader(num_workers=0))

    result = finishes(run, PASS_SECONDS)
    if isinstance(result, BaseException):
        raise result
    ds, batches = result
    assert len(batches) == len(ds) and batches
    for batch in batches:
        assert len(batch["keys"]) == ds.batch_size
        for i, key in enumerate(batch["keys"]):
            assert torch.equal(batch["latents"][i], prepared.clean[key]), (
                f"{key}: served latents differ from the clean cache's"
            )
    assert not [r for r in ds.report()["skipped"] if r["reason"] == "unexpected_error"]
    return ds, batches


def quarantine_reasons(cache: Path) -> str:
    folder = cache / "quarantine"
    if not folder.is_dir():
        return ""
    return "\n".join(p.read_text() for p in folder.glob("*.reason.txt"))


def entry_path(cache: Path, key: str) -> Path:
    return cache / "entries" / key[:2] / key[2:4] / f"{key}.safetensors"


# ------------------------------------------------------------------ entry-level forgeries


def _split(blob: bytes) -> tuple[dict[str, Any], bytes]:
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def _join(header: dict[str, Any] | list[Any], body: bytes) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)  # keep the tensor bytes aligned
    return len(raw).to_bytes(8, "little") + raw + body


def _edit_header(edit: Callable[[dict[str, Any]], Any]) -> Callable[[Path, Path], None]:
    def plant(path: Path, _outside: Path) -> None:
        header, body = _split(path.read_bytes())
        out = edit(header)
        path.write_bytes(_join(header if out is None else out, body))

    return plant


def _set_tensor(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(header: dict[str, Any]) -> None:
        header["latents"][field] = value

    return edit


def huge_declared_header_length(path: Path, _outside: Path) -> None:
    blob = path.read_bytes()
    path.write_bytes((2**63).to_bytes(8, "little") + blob[8:])


def header_length_past_the_end(path: Path, _outside: Path) -> None:
    blob = path.read_bytes()
    path.write_bytes((len(blob) - 7).to_bytes(8, "little") + blob[8:])


def oversized_header(path: Path, _outside: Path) -> None:
    """A 200 MB file (sparse) whose header length claims nearly all of it."""
    size = 200_000_000
    with open(path, "wb") as fh:
        fh.write((size - 8).to_bytes(8, "little") + b"{")
        fh.truncate(size)


def empty_entry(path: Path, _outside: Path) -> None:
    path.write_bytes(b"")


def truncated_entry(path: Path, _outside: Path) -> None:
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) - 16])


def extended_entry(path: Path, _outside: Path) -> None:
    with open(path, "ab") as fh:
        fh.write(b"\0" * 64)


def flipped_latent_byte(path: Path, _outside: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0x10
    path.write_bytes(bytes(blob))


def flipped_metadata_byte(path: Path, _outside: Path) -> None:
    blob = bytearray(path.read_bytes())
    at = blob.find(b'"path":"') + len(b'"path":"') + 2
    blob[at] ^= 0x01
    path.write_bytes(bytes(blob))


def not_json_header(path: Path, _outside: Path) -> None:
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    path.write_bytes(blob[:8] + b"\xff" * n + blob[8 + n :])


def symlink_to_a_valid_entry_outside(path: Path, outside: Path) -> None:
    """The entry moved out of the cache, a link left in its place: bytes and checksum valid."""
    target = outside / path.name
    shutil.move(path, target)
    path.symlink_to(target)


def symlink_to_a_fifo_outside(path: Path, outside: Path) -> None:
    fifo = outside / "pipe"
    os.mkfifo(fifo)
    path.unlink()
    path.symlink_to(fifo)


def symlink_to_dev_zero(path: Path, _outside: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def socket_at_entry_path(path: Path, outside: Path) -> None:
    path.unlink()
    short = Path(tempfile.mkdtemp(prefix="s", dir="/tmp"))  # AF_UNIX paths are short
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(short / "s"))
    sock.close()
    os.rename(short / "s", path)
    short.rmdir()


@dataclass(frozen=True)
class EntryKind:
    id: str
    plant: Callable[[Path, Path], None]
    reason: str
    """A fragment of the quarantine's ``.reason.txt``."""


ENTRY_KINDS: tuple[EntryKind, ...] = (
    EntryKind("huge-declared-header-length", huge_declared_header_length, "header length"),
    EntryKind("header-length-past-the-end", header_length_past_the_end, "header length"),
    EntryKind("oversized-header", oversized_header, "header length"),
    EntryKind("empty-entry", empty_entry, "truncated"),
    EntryKind("truncated-entry", truncated_entry, "do not match"),
    EntryKind("extended-entry", extended_entry, "do not match"),
    EntryKind("flipped-latent-byte", flipped_latent_byte, "checksum mismatch"),
    EntryKind("flipped-metadata-byte", flipped_metadata_byte, "checksum mismatch"),
    EntryKind("header-not-utf8-json", not_json_header, "unparsable header"),
    EntryKind(
        "header-a-list",
        _edit_header(lambda h: [h]),
        "no str->str __metadata__",
    ),
    EntryKind(
        "metadata-value-not-a-string",
        _edit_header(lambda h: h["__metadata__"].update(path=["x"])),
        "no str->str __metadata__",
    ),
    EntryKind(
        "offsets-beyond-the-file",
        _edit_header(_set_tensor("data_offsets", [0, 10**12])),
        "do not match",
    ),
    EntryKind(
        "negative-offsets",
        _edit_header(_set_tensor("data_offsets", [-64, 0])),
        "do not match",
    ),
    EntryKind(
        "huge-declared-shape",
        _edit_header(_set_tensor("shape", [2**31, 2**31, 2**31, 2**31])),
        "do not match",
    ),
    EntryKind(
        "negative-shape",
        _edit_header(_set_tensor("shape", [-1, 16, 2, 4, 4])),
        "is not a list of sizes",
    ),
    EntryKind("unknown-dtype", _edit_header(_set_tensor("dtype", "I64")), "dtype"),
    EntryKind(
        "two-tensors",
        _edit_header(lambda h: h.update(extra=h["latents"])),
        "expected ['latents']",
    ),
    EntryKind(
        "another-format-version",
        _edit_header(lambda h: h["__metadata__"].update(format="0")),
        "another version",
    ),
    EntryKind(
        "metadata-lacks-checksum",
        _edit_header(lambda h: h["__metadata__"].pop("checksum") and None),
        "metadata lacks",
    ),
    EntryKind(
        "symlink-to-a-valid-entry-outside-the-cache",
        symlink_to_a_valid_entry_outside,
        "symbolic link",
    ),
    EntryKind("symlink-to-a-fifo-outside-the-cache", symlink_to_a_fifo_outside, "symbolic link"),
    EntryKind("symlink-to-dev-zero", symlink_to_dev_zero, "symbolic link"),
    EntryKind("socket-at-entry-path", socket_at_entry_path, "not a regular file: a socket"),
)


def test_the_entry_table_holds_distinct_kinds() -> None:
    assert len({k.id for k in ENTRY_KINDS}) == len(ENTRY_KINDS) >= 20


@pytest.mark.parametrize("kind", [pytest.param(k, id=k.id) for k in ENTRY_KINDS])
def test_a_forged_entry_is_quarantined_and_never_served(
    kind: EntryKind, prepared: Prepared, tmp_path: Path
) -> None:
    cache = _copy_cache(prepared, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    victim_sample, victim = sorted(prepared.keys.items())[1]
    kind.plant(entry_path(cache, victim), outside)

    ds, batches = train_pass(prepared, cache)
    served = [k for b in batches for k in b["keys"]]
    assert victim_sample not in served, "the forged entry was served"
    corrupt = [r for r in ds.report()["skipped"] if r["reason"] == "cache_corrupt"]
    assert corrupt and {r["path"] for r in corrupt} == {str(prepared.data / "v1.mp4")}
    assert kind.reason in quarantine_reasons(cache), quarantine_reasons(cache)
    assert not entry_path(cache, victim).is_symlink() and not entry_path(cache, victim).exists()
    # The cache pass re-encodes it; the next train pass serves the clean latents.
    summary = finishes(lambda: ds.prepare(num_workers=0, progress=False), PASS_SECONDS)
    assert isinstance(summary, dict) and summary["encoded"] == 1, summary
    _, again = train_pass(prepared, cache)
    assert victim_sample in [k for b in again for k in b["keys"]]


def test_an_entry_of_another_key_is_refused(prepared: Prepared, tmp_path: Path) -> None:
    """A valid entry (checksum and all) copied over another key's path."""
    cache = _copy_cache(prepared, tmp_path)
    (_, a), (victim_sample, b) = sorted(prepared.keys.items())[:2]
    shutil.copy(entry_path(cache, a), entry_path(cache, b))
    _, batches = train_pass(prepared, cache)
    assert victim_sample not in [k for b in batches for k in b["keys"]]
    assert f"file holds key '{a}'" in quarantine_reasons(cache)


# -------------------------------------------------------------------- folder-level damage


def _garbage_index(cache: Path) -> None:
    (cache / "index.jsonl").write_bytes(os.urandom(4096) + b"\n" + b"[" * 100_000 + b"\n")


def _index_of_lies(cache: Path) -> None:
    rows = [
        {"key": "0" * 64, "size": 10**18},
        {"key": "../../etc/passwd", "size": 1},
        {"key": ["x"], "size": "big"},
        {"key": "f" * 64, "removed": True},
        [],
        "text",
    ]
    with open(cache / "index.jsonl", "a") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))


def _index_a_directory(cache: Path) -> None:
    (cache / "index.jsonl").unlink()
    (cache / "index.jsonl").mkdir()


def _index_a_fifo(cache: Path) -> None:
    (cache / "index.jsonl").unlink()
    os.mkfifo(cache / "index.jsonl")


def _quarantine_a_file(cache: Path) -> None:
    shutil.rmtree(cache / "quarantine")
    (cache / "quarantine").write_bytes(b"not a folder")


def _metadata_cache_garbage(cache: Path) -> None:
    with open(cache / "metadata.jsonl", "ab") as fh:
        fh.write(b"[" * 100_000 + b'\n[1, 2]\n"text"\n\xff\xfe\n{"format": null}\n')


def _samples_garbage(cache: Path) -> None:
    for snapshot in (cache / "samples").glob("*"):
        snapshot.write_bytes(os.urandom(2048))


def _stray_files_in_entries(cache: Path) -> None:
    entries = cache / "entries"
    (entries / "zz").mkdir()
    (entries / "readme.txt").write_text("hello")
    leaf = next(p for p in entries.glob("*/*") if p.is_dir())
    (leaf / "not-a-key.safetensors").write_bytes(b"junk")
    os.mkfifo(leaf / ("a" * 64 + ".safetensors"))  # a key-shaped FIFO in the wrong leaf


@dataclass(frozen=True)
class FolderKind:
    id: str
    plant: Callable[[Path], None]
    corrupt_entry: bool = True
    """Also corrupt one entry, so the quarantine path runs."""
    fatal: bool = False
    """Construction stops with a clear error naming the cache folder instead."""


FOLDER_KINDS: tuple[FolderKind, ...] = (
    FolderKind("index-garbage", _garbage_index),
    FolderKind("index-of-lies", _index_of_lies),
    FolderKind("index-a-directory", _index_a_directory),
    FolderKind("index-a-fifo", _index_a_fifo),
    # The cache cannot be opened writable: FatalError "latent cache root (...) cannot be created
    # or written (FileExistsError ...)" at construction, before any read.
    FolderKind("quarantine-a-file", _quarantine_a_file, fatal=True),
    FolderKind("metadata-cache-garbage", _metadata_cache_garbage),
    FolderKind("sample-snapshot-garbage", _samples_garbage),
    FolderKind("stray-files-in-entries", _stray_files_in_entries),
)


@pytest.mark.parametrize("kind", [pytest.param(k, id=k.id) for k in FOLDER_KINDS])
def test_folder_damage_never_serves_a_bad_latent_nor_crashes(
    kind: FolderKind, prepared: Prepared, tmp_path: Path
) -> None:
    cache = _copy_cache(prepared, tmp_path)
    victim_sample, victim = sorted(prepared.keys.items())[2]
    if kind.corrupt_entry:
        flipped_latent_byte(entry_path(cache, victim), tmp_path)
    kind.plant(cache)
    if kind.fatal:
        with pytest.raises(WanDataError, match="latent cache root") as info:
            train_pass(prepared, cache)
        assert str(cache) in str(info.value)
        return
    ds, batches = train_pass(prepared, cache)
    assert victim_sample not in [k for b in batches for k in b["keys"]]
    assert [r for r in ds.report()["skipped"] if r["reason"] == "cache_corrupt"]
    # The cache pass over the same folder: fills the hole or stops with a clear error.
    result = finishes(lambda: ds.prepare(num_workers=0, progress=False), PASS_SECONDS)
    if isinstance(result, BaseException):
        assert isinstance(result, WanDataError), repr(result)
        assert str(cache) in str(result)
    else:
        assert result["encoded"] <= 1, result


# ----------------------------------------------------------------------- the cache pass


def _claims(cache: Path, plant: Callable[[Path], object], keys: list[str]) -> None:
    """Plant a claim on each key, an hour old: past the 30-minute timeout, so stale. (A fresh
    garbage claim is taken for a claim being written and waited for until it times out: a
    hostile claims folder can delay a cache pass by up to that timeout, not forever.)"""
    folder = cache / "claims"
    folder.mkdir(exist_ok=True)
    old = time.time() - 3600
    for key in keys:
        claim = folder / f"{key}.claim"
        plant(claim)
        os.utime(claim, (old, old))


CLAIM_PLANTS: dict[str, Callable[[Path], object]] = {
    "garbage-bytes": lambda p: p.write_bytes(os.urandom(300)),
    "deeply-nested-json": lambda p: p.write_bytes(b"[" * 100_000 + b"]" * 100_000),
    "a-list": lambda p: p.write_text("[1, 2, 3]"),
    "lying-fields": lambda p: p.write_text(
        json.dumps({"pid": "x", "host": ["h"], "time": "soon", "token": 5})
    ),
    "a-directory": lambda p: p.mkdir(),
    "a-fifo": os.mkfifo,
}


@pytest.mark.parametrize("plant", list(CLAIM_PLANTS), ids=list(CLAIM_PLANTS))
def test_garbage_claims_do_not_crash_or_hang_the_cache_pass(
    plant: str, prepared: Prepared, tmp_path: Path
) -> None:
    cache = _copy_cache(prepared, tmp_path)
    victims = sorted(prepared.keys.values())[:2]
    for key in victims:
        entry_path(cache, key).unlink()
    _claims(cache, CLAIM_PLANTS[plant], victims)
    ds = WanVideoDataset(prepared.data, **OPTIONS, vae=prepared.vae, cache_dir=cache)
    started = time.monotonic()
    result = finishes(lambda: ds.prepare(num_workers=0, progress=False), PASS_SECONDS)
    assert time.monotonic() - started < PASS_SECONDS
    if isinstance(result, BaseException):
        assert isinstance(result, WanDataError), repr(result)
        assert "claim" in str(result)
    else:
        assert result["encoded"] == 2, result
        train_pass(prepared, cache)


def test_claims_folder_a_file(prepared: Prepared, tmp_path: Path) -> None:
    cache = _copy_cache(prepared, tmp_path)
    victim = sorted(prepared.keys.values())[0]
    entry_path(cache, victim).unlink()
    shutil.rmtree(cache / "claims", ignore_errors=True)
    (cache / "claims").write_text("not a folder")
    ds = WanVideoDataset(prepared.data, **OPTIONS, vae=prepared.vae, cache_dir=cache)
    result = finishes(lambda: ds.prepare(num_workers=0, progress=False), PASS_SECONDS)
    if isinstance(result, BaseException):
        assert isinstance(result, WanDataError), repr(result)
        assert "claims" in str(result)
    else:
        assert result["encoded"] == 1, result
        train_pass(prepared, cache)


def test_a_garbage_marker_is_a_clear_configuration_error(
    prepared: Prepared, tmp_path: Path
) -> None:
    cache = _copy_cache(prepared, tmp_path)
    (cache / "wan_data_cache.json").write_bytes(b"[" * 100_000)
    with pytest.raises(WanDataError, match="latent cache format"):
        WanVideoDataset(prepared.data, **OPTIONS, vae=prepared.vae, cache_dir=cache)


# ------------------------------------------------------------- what a hostile cache CAN do


def test_a_forged_entry_with_a_valid_checksum_is_served(prepared: Prepared, tmp_path: Path) -> None:
    """The documented limit: the checksum is xxh3 over the file, not a signature. Whoever can
    write the cache folder can write an entry of the right key, format and shape whose
    checksum they computed themselves, and it is served, non-finite values included
    (finiteness is checked when an entry is written, not on every read)."""
    cache = _copy_cache(prepared, tmp_path)
    victim_sample, victim = sorted(prepared.keys.items())[3]
    store = LatentCache(cache)
    real = store.get(victim)
    assert real is not None
    forged_latents = torch.full_like(real.latents, 7.0)
    forged_latents.view(-1)[0] = float("nan")
    meta = {k: v for k, v in real.metadata.items() if k not in RESERVED_METADATA}
    store.put(victim, torch.zeros_like(real.latents), meta)  # a valid entry to edit
    path = entry_path(cache, victim)
    header, body = _split(path.read_bytes())
    body = forged_latents.contiguous().view(torch.uint8).numpy().tobytes()
    zeros = "xxh3_128:" + "0" * 32
    header["__metadata__"]["checksum"] = zeros
    blob = _join(header, body)
    blob = blob.replace(zeros.encode(), entry_checksum(blob).encode())
    path.write_bytes(blob)

    ds = WanVideoDataset(prepared.data, **OPTIONS, vae=prepared.vae, cache_dir=cache)
    served = {k: b["latents"][i] for b in ds.loader(num_workers=0) for i, k in enumerate(b["keys"])}
    assert victim_sample in served
    assert torch.isnan(served[victim_sample]).any()  # forged, and served
    assert not ds.report()["skipped"]


def test_the_corpus_of_hostile_cache_kinds() -> None:
    """Counted for docs/reliability.md: entry forgeries + folder damage + claim plants + the
    key swap, the claims-folder file and the garbage marker."""
    total = len(ENTRY_KINDS) + len(FOLDER_KINDS) + len(CLAIM_PLANTS) + 3
    assert total >= 35
