"""LatentCache: content+config keys, atomic writes, verified reads, quarantine, index, stats."""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import logging
import multiprocessing as mp
import os
import pickle
import stat
from pathlib import Path
from typing import Any

import pytest
import torch

import wan_data.latents.atomic as atomic
import wan_data.latents.entry as entry_format
import wan_data.latents.index as cache_index
import wan_data.latents.keys as cache_keys
import wan_data.latents.quarantine as quarantine
import wan_data.latents.stats as cache_stats
import wan_data.latents.store as lc
from wan_data.errors import ConfigError, FatalError, SampleError
from wan_data.latents.store import (
    CACHE_FORMAT_VERSION,
    CacheEntry,
    CacheStats,
    LatentCache,
    cache_key,
    decode_entry,
    encode_entry,
    source_identity,
)

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def key_of(n: int | str) -> str:
    """A valid cache key derived from ``n`` (tests need many distinct ones)."""
    return hashlib.sha256(str(n).encode()).hexdigest()


def latents_for(key: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Deterministic (z, T, h, w) latents for a key, so every writer of a key writes the same."""
    gen = torch.Generator().manual_seed(int(key[:8], 16))
    return torch.randn(16, 3, 6, 8, generator=gen).to(dtype)


def bits(t: torch.Tensor) -> bytes:
    """Bitwise identity of a tensor (torch.equal calls -0.0 == 0.0)."""
    return bytes(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.tmp")]


def write_raw(cache: LatentCache, key: str, data: bytes) -> Path:
    """Place bytes at a key's path behind the cache's back (no index line, no verification)."""
    path = cache.path_for(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


BASE_KEY_INPUTS: dict[str, Any] = {
    "source": {"path": "/data/a.mp4", "size": 1234, "mtime_ns": 1_700_000_000_000_000_000},
    "clip": {
        "frame_times": [0.0, 0.0625, 0.125, 0.1875, 0.25],
        "fps": 16,
        "frames": 5,
        "bucket": [5, 832, 480],
        "crop": [0, 16, 832, 480],
    },
    "vae": {
        "config_sha256": "c" * 64,
        "weights_sha256": "w" * 64,
        "z_dim": 16,
        "temporal_factor": 4,
        "spatial_factor": 8,
    },
    "dtypes": {"vae": "float32", "latent": "bfloat16"},
    "normalisation": {"mean": [-0.7571, -0.7089], "std": [2.8184, 1.4541]},
}


def changed(section: str, field: str, value: object) -> dict[str, Any]:
    inputs = copy.deepcopy(BASE_KEY_INPUTS)
    inputs[section][field] = value
    return inputs


# --------------------------------------------------------------------------------------------
# round trip, misses
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_put_get_round_trip_keeps_tensor_dtype_and_metadata(
    tmp_path: Path, dtype: torch.dtype
) -> None:
    cache = LatentCache(tmp_path / "cache")
    key = key_of("a")
    latents = latents_for(key, dtype)
    meta = {
        "caption": "a cat, ünïcode ✓",
        "path": "/data/a.mp4",
        "frame_times": json.dumps([0.0, 0.0625]),
        "crop": json.dumps([0, 16, 832, 480]),
        "bucket": "5x832x480",
    }
    path = cache.put(key, latents, meta)
    assert path == cache.path_for(key)
    assert path.relative_to(tmp_path / "cache") == Path(
        "entries", key[:2], key[2:4], f"{key}.safetensors"
    )
    assert cache.contains(key)

    entry = cache.get(key)
    assert isinstance(entry, CacheEntry)
    assert entry.key == key
    assert entry.latents.dtype == dtype
    assert entry.latents.shape == latents.shape
    assert bits(entry.latents) == bits(latents)
    assert {k: entry.metadata[k] for k in meta} == meta  # caller's fields untouched
    assert entry.metadata["key"] == key
    assert entry.metadata["format"] == str(CACHE_FORMAT_VERSION)
    assert entry.metadata["dtype"] == str(dtype).removeprefix("torch.")
    assert json.loads(entry.metadata["shape"]) == list(latents.shape)
    assert float(entry.metadata["created_at"]) > 0
    assert "16, 3, 6, 8" in repr(entry) and "tensor(" not in repr(entry)  # shapes, not values


def test_caller_created_at_is_kept(tmp_path: Path) -> None:
    cache = LatentCache(tmp_path)
    key = key_of("t")
    cache.put(key, latents_for(key), {"created_at": "2025-01-01T00:00:00Z"})
    entry = cache.get(key)
    assert entry is not None and entry.metadata["created_at"] == "2025-01-01T00:00:00Z"


def test_miss_returns_none_never_zeros(tmp_path: Path) -> None:
    cache = LatentCache(tmp_path)
    assert cache.get(key_of("absent")) is None
    assert not cache.contains(key_of("absent"))
    s = cache.stats()
    assert (s.hits, s.misses, s.corruption_count) == (0, 1, 0)


def test_put_overwrites_and_a_cache_reopened_reads_it(tmp_path: Path) -> None:
    key = key_of("o")
    LatentCache(tmp_path).put(key, torch.zeros(1, 1, 2, 2), {"v": "1"})
    LatentCache(tmp_path).put(key, torch.ones(1, 1, 2, 2), {"v": "2"})
    entry = LatentCache(tmp_path, create=False).get(key)
    assert entry is not None and entry.metadata["v"] == "2"
    assert torch.equal(entry.latents, torch.ones(1, 1, 2, 2))


@pytest.mark.parametrize(
    "bad_key", ["", "abc", "G" * 64, key_of(1).upper(), "../" + key_of(1)[3:], key_of(1) + "0"]
)
def test_malformed_keys_are_refused(tmp_path: Path, bad_key: str) -> None:
    cache = LatentCache(tmp_path)
    with pytest.raises(ValueError, match="cache key"):
        cache.path_for(bad_key)
    with pytest.raises(ValueError, match="cache key"):
        cache.put(bad_key, torch.zeros(1), {})


def test_reserved_metadata_bad_metadata_and_integer_tensors_are_refused(tmp_path: Path) -> None:
    cache = LatentCache(tmp_path)
    key = key_of("r")
    with pytest.raises(ValueError, match="reserved"):
        cache.put(key, torch.zeros(1), {"checksum": "x"})
    with pytest.raises(ValueError, match="must be str"):
        cache.put(key, torch.zeros(1), {"n": 3})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="dtype"):
        cache.put(key, torch.zeros(1, dtype=torch.int64), {})
    assert not cache.contains(key)


# --------------------------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------------------------


KEY_CHANGES = [
    ("source", "path", "/data/b.mp4"),
    ("source", "size", 1235),
    ("source", "mtime_ns", 1_700_000_000_000_000_001),
    ("source", "sha256", "0" * 64),
    ("clip", "frame_times", [0.0, 0.0625, 0.125, 0.1875, 0.3125]),
    ("clip", "frame_indices", [0, 1, 2, 3, 4]),
    ("clip", "fps", 24),
    ("clip", "frames", 9),
    ("clip", "bucket", [5, 480, 832]),
    ("clip", "crop", [0, 17, 832, 480]),
    ("vae", "config_sha256", "d" * 64),
    ("vae", "weights_sha256", "x" * 64),
    ("vae", "z_dim", 48),
    ("vae", "temporal_factor", 8),
    ("vae", "spatial_factor", 16),
    ("dtypes", "vae", "bfloat16"),
    ("dtypes", "latent", "float32"),
    ("normalisation", "mean", [-0.7571, -0.7088]),
    ("normalisation", "std", [2.8184, 1.4541000000000002]),  # one ulp
]


def test_key_changes_when_any_input_changes() -> None:
    base = cache_key(**BASE_KEY_INPUTS)
    assert len(base) == 64 and int(base, 16) >= 0
    keys = {base}
    for section, field, value in KEY_CHANGES:
        k = cache_key(**changed(section, field, value))
        assert k != base, (section, field)
        keys.add(k)
    keys.add(cache_key(**BASE_KEY_INPUTS, version=CACHE_FORMAT_VERSION + 1))
    assert len(keys) == len(KEY_CHANGES) + 2  # all different from each other too


def test_key_is_the_same_for_equal_values_spelled_differently() -> None:
    base = cache_key(**BASE_KEY_INPUTS)
    respelled = copy.deepcopy(BASE_KEY_INPUTS)
    respelled["clip"] = dict(reversed(list(respelled["clip"].items())))  # key order
    respelled["clip"]["fps"] = 16.0  # integral float == int
    respelled["clip"]["bucket"] = (5, 832, 480)  # tuple == list
    respelled["normalisation"]["mean"] = torch.tensor([-0.7571, -0.7089], dtype=torch.float64)
    assert cache_key(**respelled) == base
    assert cache_key(**BASE_KEY_INPUTS) == base  # pure: same inputs, same key


def test_key_refuses_non_finite_and_unknown_types() -> None:
    with pytest.raises(ValueError, match="finite"):
        cache_key(**changed("normalisation", "std", [1.0, float("nan")]))
    with pytest.raises(ValueError, match="must be None, bool"):
        cache_key(**changed("clip", "crop", object()))


def test_source_identity_tracks_size_mtime_and_optionally_content(tmp_path: Path) -> None:
    f = tmp_path / "v.mp4"
    f.write_bytes(b"abc")
    os.utime(f, ns=(5, 5))
    ident = source_identity(str(f))
    assert ident == {"path": str(f.resolve()), "size": 3, "mtime_ns": 5}
    hashed = source_identity(str(f), content_hash=True)
    assert hashed["sha256"] == hashlib.sha256(b"abc").hexdigest()
    f.write_bytes(b"abd")  # same size
    os.utime(f, ns=(5, 5))  # mtime preserved, as some copies do
    assert source_identity(str(f)) == ident  # only the content hash sees it
    assert source_identity(str(f), content_hash=True)["sha256"] != hashed["sha256"]


# --------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------


def test_put_leaves_no_temp_files(tmp_path: Path) -> None:
    cache = LatentCache(tmp_path)
    for i in range(5):
        cache.put(key_of(i), latents_for(key_of(i)), {})
    assert temp_files(tmp_path) == []


def test_crash_between_temp_write_and_replace_keeps_the_old_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = LatentCache(tmp_path)
    old, fresh = key_of("old"), key_of("fresh")
    cache.put(old, torch.zeros(2, 1, 2, 2), {"v": "old"})

    def crash(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device (simulated crash before rename)")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        cache.put(old, torch.ones(2, 1, 2, 2), {"v": "new"})
    with pytest.raises(OSError, match="simulated"):
        cache.put(fresh, torch.ones(2, 1, 2, 2), {"v": "new"})
    monkeypatch.undo()

    assert temp_files(tmp_path) == []
    assert not cache.contains(fresh)
    assert cache.get(fresh) is None
    entry = cache.get(old)
    assert entry is not None and entry.metadata["v"] == "old"
    assert torch.equal(entry.latents, torch.zeros(2, 1, 2, 2))
    assert cache.keys() == {old}


# --------------------------------------------------------------------------------------------
# corruption and quarantine
# --------------------------------------------------------------------------------------------


def _flip_tensor_byte(data: bytes) -> bytes:
    start = 8 + int.from_bytes(data[:8], "little")
    pos = start + 10
    return data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1 :]


CORRUPTIONS = {
    "flipped_tensor_byte": (lambda key, good: _flip_tensor_byte(good), "checksum"),
    "truncated": (lambda key, good: good[: len(good) // 2], "truncated or extended"),
    "truncated_header": (lambda key, good: good[:5], "truncated"),
    "garbage": (lambda key, good: b"this is not a safetensors file" * 10, "header length"),
    "other_keys_file": (
        lambda key, good: encode_entry(key_of("other"), latents_for(key), {}),
        "file holds key",
    ),
    "flipped_header_byte": (
        lambda key, good: good.replace(b'"caption":"c"', b'"caption":"d"'),
        "checksum",
    ),
    "checksum_field_removed": (
        lambda key, good: good.replace(b'"checksum":"', b'"checksuM":"'),
        "checksum",
    ),
}


def forge_entry(key: str, values: torch.Tensor) -> bytes:
    """An entry holding ``values`` with a valid checksum, made without encode_entry's checks:
    what only a forger (or a bug) could write."""
    data = bytearray(encode_entry(key, torch.zeros_like(values), {}))
    start = len(data) - values.numel() * values.element_size()
    data[start:] = values.contiguous().view(torch.uint8).numpy().tobytes()
    digits = entry_format._checksum_digits_at(memoryview(data))
    data[digits : digits + 32] = lc.entry_checksum(data).split(":")[1].encode("ascii")
    return bytes(data)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_encode_entry_refuses_non_finite_latents(bad: float) -> None:
    with pytest.raises(SampleError, match="1 of 2 values NaN/inf") as info:
        encode_entry(key_of("x"), torch.tensor([1.0, bad]), {"path": "/data/x.mp4"})
    assert info.value.reason == "non_finite_latents"
    assert "/data/x.mp4" in str(info.value)


@pytest.mark.parametrize("bad", [float("nan"), float("-inf")])
def test_forged_non_finite_entry_fails_the_audit(tmp_path: Path, bad: float) -> None:
    """Reads trust the write-time finiteness check (the checksum proves the bytes unchanged);
    the audit (`verify_all`, `wan-data cache --verify`) checks finiteness again."""
    key = key_of("forged")
    data = forge_entry(key, torch.tensor([1.0, bad, 2.0, 3.0]))
    with pytest.raises(lc.CacheCorruptionError, match="non-finite"):
        decode_entry(key, data)
    assert decode_entry(key, data, check_finite=False).latents.shape == (4,)
    cache = LatentCache(tmp_path)
    cache.put(key, torch.zeros(4), {})
    write_raw(cache, key, data)
    assert cache.verify_all() == {"ok": 0, "quarantined": 1}
    assert cache.get(key) is None


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_entry_is_a_miss_quarantined_with_its_reason(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    make, reason_part = CORRUPTIONS[case]
    cache = LatentCache(tmp_path)
    key = key_of(case)
    path = cache.put(key, latents_for(key), {"caption": "c"})
    write_raw(cache, key, make(key, path.read_bytes()))

    with caplog.at_level(logging.WARNING, logger="wan_data"):
        assert cache.get(key) is None
    assert not path.exists()
    assert not cache.contains(key)
    moved = sorted((tmp_path / "quarantine").glob(f"{key}.*.safetensors"))
    reasons = sorted((tmp_path / "quarantine").glob(f"{key}.*.reason.txt"))
    assert len(moved) == 1 and len(reasons) == 1
    text = reasons[0].read_text()
    assert reason_part in text and key in text
    assert any(
        str(path) in r.getMessage() and reason_part in r.getMessage() for r in caplog.records
    )
    s = cache.stats()
    assert (s.corruption_count, s.quarantined, s.misses, s.hits) == (1, 1, 1, 0)
    assert s.total_items == 0
    assert cache.keys() == set()

    # The caller re-encodes: a new put is served again.
    cache.put(key, latents_for(key), {"caption": "c"})
    entry = cache.get(key)
    assert entry is not None and bits(entry.latents) == bits(latents_for(key))


def test_decode_entry_is_pure_and_names_the_failure() -> None:
    key = key_of("p")
    data = encode_entry(key, latents_for(key), {})
    assert bits(decode_entry(key, data).latents) == bits(latents_for(key))
    with pytest.raises(lc.CacheCorruptionError, match="checksum") as info:
        decode_entry(key, _flip_tensor_byte(data))
    assert info.value.reason.startswith("checksum")


def test_flipped_metadata_byte_is_detected(tmp_path: Path) -> None:
    """The checksum covers the caller's metadata too: a changed caption is not served."""
    cache = LatentCache(tmp_path)
    key = key_of("m")
    path = cache.put(key, latents_for(key), {"caption": "a red car"})
    data = path.read_bytes()
    pos = data.index(b"a red car")
    write_raw(cache, key, data[:pos] + b"b" + data[pos + 1 :])
    assert cache.get(key) is None
    assert cache.stats().corruption_count == 1


def test_entry_replaced_while_being_read_is_not_quarantined(tmp_path: Path) -> None:
    cache = LatentCache(tmp_path)
    key = key_of("race")
    path = cache.put(key, latents_for(key), {})
    seen = os.stat(path)
    os.utime(path, ns=(seen.st_atime_ns, seen.st_mtime_ns + 1_000_000))  # "a writer replaced it"
    assert cache._quarantine(path, key, "checksum mismatch", seen) is False
    assert path.exists() and cache.get(key) is not None


def test_put_refuses_non_finite_latents(tmp_path: Path) -> None:
    cache = LatentCache(tmp_path)
    for i, bad in enumerate([float("nan"), float("inf"), float("-inf")]):
        latents = torch.zeros(4, 1, 2, 2, dtype=torch.bfloat16)
        latents[1, 0, 1, 1] = bad
        key = key_of(f"nan{i}")
        with pytest.raises(SampleError, match="1 of 16 values") as info:
            cache.put(key, latents, {"path": "/data/clip.mp4"})
        assert info.value.reason == "non_finite_latents"
        assert "/data/clip.mp4" in str(info.value)
        assert not cache.contains(key)
    assert temp_files(tmp_path) == []
    assert cache.stats().writes == 0


def test_verify_all_quarantines_exactly_the_bad_entries(tmp_path: Path) -> None:
    cache = LatentCache(tmp_path)
    good = [key_of(f"g{i}") for i in range(4)]
    bad = [key_of(f"b{i}") for i in range(2)]
    for k in good + bad:
        cache.put(k, latents_for(k), {})
    for k in bad:
        write_raw(cache, k, _flip_tensor_byte(cache.path_for(k).read_bytes()))
    assert cache.verify_all() == {"ok": 4, "quarantined": 2}
    assert cache.keys() == set(good)
    assert cache.verify_all() == {"ok": 4, "quarantined": 0}


# --------------------------------------------------------------------------------------------
# concurrency
# --------------------------------------------------------------------------------------------

SHARED_KEYS = [key_of(f"shared{i}") for i in range(3)]


def _concurrent_writer(root: str, worker: int, barrier: Any, rounds: int) -> None:
    """Child process: hammer shared keys and write its own; fail loudly on any bad read."""
    torch.set_num_threads(1)
    cache = LatentCache(root)
    barrier.wait()
    for r in range(rounds):
        for key in SHARED_KEYS:
            cache.put(key, latents_for(key), {"writer": "any"})
            entry = cache.get(key)  # a reader racing the writers sees a whole file
            if entry is None or bits(entry.latents) != bits(latents_for(key)):
                raise AssertionError(f"worker {worker} round {r}: bad read of {key}")
        own = key_of(f"own{worker}-{r}")
        cache.put(own, latents_for(own), {"writer": str(worker)})
    if cache.stats().corruption_count:
        raise AssertionError(f"worker {worker} saw corruption")


def test_concurrent_writers_of_same_and_different_keys_leave_a_valid_cache(
    tmp_path: Path,
) -> None:
    root = tmp_path / "cache"
    LatentCache(root)
    workers, rounds = 3, 12
    ctx = mp.get_context("spawn")  # no fork of a torch-initialised parent
    barrier = ctx.Barrier(workers)
    procs = [
        ctx.Process(target=_concurrent_writer, args=(str(root), w, barrier, rounds))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * workers

    cache = LatentCache(root)
    expected = set(SHARED_KEYS) | {
        key_of(f"own{w}-{r}") for w in range(workers) for r in range(rounds)
    }
    assert cache.keys() == expected
    assert cache.verify_all() == {"ok": len(expected), "quarantined": 0}
    assert temp_files(root) == []
    for key in expected:
        entry = cache.get(key)
        assert entry is not None and bits(entry.latents) == bits(latents_for(key))
    # Every put appended one whole line: the index agrees with the directory without a rebuild.
    assert lc.LatentCache(root)._read_index() is not None
    assert set(cache._read_index() or {}) == expected


def test_cache_object_can_be_sent_to_spawned_workers(tmp_path: Path) -> None:
    cache = LatentCache(tmp_path)
    key = key_of("w")
    cache.put(key, latents_for(key), {})
    clone = pickle.loads(pickle.dumps(cache))  # what DataLoader does for spawn workers
    entry = clone.get(key)
    assert entry is not None and bits(entry.latents) == bits(latents_for(key))


# --------------------------------------------------------------------------------------------
# prune, index
# --------------------------------------------------------------------------------------------


def test_prune_removes_exactly_the_orphans_and_old_temp_files(tmp_path: Path) -> None:
    cache = LatentCache(tmp_path)
    keys = [key_of(f"k{i}") for i in range(8)]
    for k in keys:
        cache.put(k, latents_for(k), {})
    keep = set(keys[::2]) | {key_of("never-written")}
    leaf = cache.path_for(keys[0]).parent
    old_tmp = leaf / f".{keys[0]}.safetensors.123.abc.tmp"
    new_tmp = leaf / f".{keys[0]}.safetensors.456.def.tmp"
    old_tmp.write_bytes(b"partial")
    new_tmp.write_bytes(b"in flight")
    os.utime(old_tmp, (1, 1))

    assert cache.prune(keep) == 4
    assert cache.keys() == set(keys[::2])
    assert all(cache.contains(k) == (k in keep) for k in keys)
    assert not old_tmp.exists() and new_tmp.exists()  # a live writer's temp file is left alone
    assert cache.prune(keep) == 0


def test_deleted_index_is_rebuilt(tmp_path: Path) -> None:
    cache = LatentCache(tmp_path)
    keys = {key_of(i) for i in range(5)}
    for k in keys:
        cache.put(k, latents_for(k), {})
    cache.index_path.unlink()
    assert cache.keys() == keys
    assert cache.index_path.exists()
    assert set(cache._read_index() or {}) == keys


def test_truncated_last_index_line_is_tolerated(tmp_path: Path) -> None:
    cache = LatentCache(tmp_path)
    keys = [key_of(i) for i in range(4)]
    for k in keys:
        cache.put(k, latents_for(k), {})
    raw = cache.index_path.read_bytes()
    cache.index_path.write_bytes(raw[:-20])  # crash mid-append of the last line
    assert set(cache._read_index() or {}) == set(keys[:3])  # readable lines kept
    assert cache.keys() == set(keys)  # the lost key is found by the rescan

    # A later append after a partial line starts a new line instead of merging with it.
    cache.index_path.write_bytes(raw[:-20])
    extra = key_of("extra")
    cache.put(extra, latents_for(extra), {})
    assert set(cache._read_index() or {}) == {*keys[:3], extra}


def test_stale_index_is_detected_and_rebuilt(tmp_path: Path) -> None:
    cache = LatentCache(tmp_path)
    keys = {key_of(i) for i in range(3)}
    for k in keys:
        cache.put(k, latents_for(k), {})
    behind = key_of("behind")
    write_raw(cache, behind, encode_entry(behind, latents_for(behind), {}))  # no index line
    assert cache.keys() == keys | {behind}
    assert set(cache._read_index() or {}) == keys | {behind}

    # Same count, different keys (one removed, one added behind its back): still detected.
    gone = sorted(keys)[0]
    cache.path_for(gone).unlink()
    other = key_of("other")
    write_raw(cache, other, encode_entry(other, latents_for(other), {}))
    assert cache.keys() == (keys - {gone}) | {behind, other}


def test_index_is_trusted_when_it_agrees_with_the_directory(tmp_path: Path) -> None:
    cache = LatentCache(tmp_path)
    keys = [key_of(i) for i in range(3)]
    for k in keys:
        cache.put(k, latents_for(k), {})
    # Sizes only the index knows: if stats() used them, no file was stat'ed.
    fake = "".join(json.dumps({"key": k, "size": 1024 * 1024}) + "\n" for k in keys)
    cache.index_path.write_text(fake)
    assert cache.stats().cache_size_mb == pytest.approx(3.0)
    assert cache.index_path.read_text() == fake  # not rewritten


def test_misplaced_and_foreign_files_are_not_keys(tmp_path: Path) -> None:
    cache = LatentCache(tmp_path)
    k = key_of("x")
    misplaced = tmp_path / "entries" / "00" / "00" / f"{k}.safetensors"
    misplaced.parent.mkdir(parents=True)
    misplaced.write_bytes(b"")
    (tmp_path / "entries" / "00" / "00" / "notes.txt").write_text("hi")
    assert cache.keys() == set()


# --------------------------------------------------------------------------------------------
# root checks
# --------------------------------------------------------------------------------------------


def test_root_of_another_format_version_is_a_config_error(tmp_path: Path) -> None:
    LatentCache(tmp_path)
    marker = tmp_path / "wan_data_cache.json"
    assert json.loads(marker.read_text()) == {"format": CACHE_FORMAT_VERSION}
    marker.write_text(json.dumps({"format": CACHE_FORMAT_VERSION + 1}))
    with pytest.raises(ConfigError, match="another cache dir"):
        LatentCache(tmp_path)
    marker.write_text("garbage")
    with pytest.raises(ConfigError, match="format"):
        LatentCache(tmp_path, create=False)


def test_create_false_needs_an_existing_cache(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a wan_data cache"):
        LatentCache(tmp_path / "nowhere", create=False)
    assert not (tmp_path / "nowhere").exists()


def test_root_that_is_a_file_is_fatal(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("not a directory")
    with pytest.raises(FatalError, match="cannot be created or written") as info:
        LatentCache(blocker)
    assert str(blocker) in str(info.value)


def test_existing_cache_refusing_writes_opens_read_only_and_refuses_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only mount of an existing cache (simulated: chmod does not bind root).

    Issue 13: it used to be fatal at opening, which made shared read-only cache mounts
    unusable for training; now it opens read-only and only writes are fatal.
    """
    LatentCache(tmp_path)

    def refuse(self: Path, data: bytes) -> int:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "write_bytes", refuse)
    cache = LatentCache(tmp_path)
    assert cache.read_only
    with pytest.raises(FatalError, match="cannot be created or written") as info:
        cache.put("ab" * 32, torch.zeros(2), {})
    assert str(tmp_path) in str(info.value)
    monkeypatch.undo()
    assert LatentCache(tmp_path, create=False).keys() == set()  # reading needs no write


def test_unwritable_root_is_fatal(tmp_path: Path) -> None:
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(root, os.W_OK):
            pytest.skip("running as root: chmod does not make a directory unwritable")
        with pytest.raises(FatalError, match="cannot be created or written") as info:
            LatentCache(root / "cache")
        assert str(root / "cache") in str(info.value)
    finally:
        root.chmod(stat.S_IRWXU)


# --------------------------------------------------------------------------------------------
# stats, no pickle
# --------------------------------------------------------------------------------------------


def test_stats_rates_sizes_and_json(tmp_path: Path) -> None:
    cache = LatentCache(tmp_path)
    keys = [key_of(i) for i in range(3)]
    for k in keys:
        cache.put(k, latents_for(k), {})
    for k in keys:
        assert cache.get(k) is not None
    assert cache.get(key_of("missing")) is None
    s = cache.stats()
    assert (s.hits, s.misses, s.writes, s.total_items) == (3, 1, 3, 3)
    assert s.hit_rate == pytest.approx(0.75) and s.miss_rate == pytest.approx(0.25)
    on_disk = sum(cache.path_for(k).stat().st_size for k in keys)
    assert s.cache_size_mb == pytest.approx(on_disk / 2**20) and s.cache_size_mb > 0
    assert s.avg_access_time > 0 and s.avg_access_time == pytest.approx(s.access_seconds / 4)
    d = json.loads(json.dumps(s.as_dict()))
    assert d["hit_rate"] == pytest.approx(0.75) and d["total_items"] == 3

    merged = s.merge(CacheStats(hits=1, misses=3, writes=2, total_items=2, cache_size_mb=0.0))
    assert (merged.hits, merged.misses, merged.writes) == (4, 4, 5)
    assert merged.total_items == 3  # same directory seen by two workers: not 5
    assert merged.hit_rate == pytest.approx(0.5)


def test_empty_stats_have_zero_rates() -> None:
    s = CacheStats()
    assert (s.hit_rate, s.miss_rate, s.avg_access_time) == (0.0, 0.0, 0.0)


def test_module_never_unpickles() -> None:
    # The store and every module it is made of (the entry format parses the files).
    for module in (lc, entry_format, atomic, cache_index, cache_keys, quarantine, cache_stats):
        source = inspect.getsource(module)
        assert "pickle" not in source, module.__name__
        assert "torch.load" not in source, module.__name__
