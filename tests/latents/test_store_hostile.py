"""Hostile and unusual cache folders at the store level (issue 13): nested headers, non-files at
entry paths, wrong shapes, read-only folders."""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from pathlib import Path

import pytest
import torch
from ro_fs import read_only_folder

from wan_data.errors import FatalError
from wan_data.latents.entry import CacheCorruptionError, decode_entry, encode_entry
from wan_data.latents.store import LatentCache

KEY = "c" * 64


def nested_header_entry(depth: int = 100_000) -> bytes:
    """A safetensors-shaped file whose JSON header is ``depth`` nested lists."""
    header = b"[" * depth + b"]" * depth
    return len(header).to_bytes(8, "little") + header


def reasons(cache: LatentCache) -> list[str]:
    return [p.read_text() for p in cache.quarantine_dir.glob("*.reason.txt")]


def test_a_deeply_nested_header_is_corrupt_not_a_recursion_error(tmp_path: Path) -> None:
    with pytest.raises(CacheCorruptionError, match="nested too deeply"):
        decode_entry(KEY, nested_header_entry())
    cache = LatentCache(tmp_path)
    path = cache.path_for(KEY)
    path.parent.mkdir(parents=True)
    path.write_bytes(nested_header_entry())
    assert cache.lookup(KEY) == (None, "corrupt")  # the train pass's read
    assert not path.exists()
    assert any("nested too deeply" in r for r in reasons(cache))
    path.write_bytes(nested_header_entry())
    assert cache.verify_all() == {"ok": 0, "quarantined": 1}  # `wan-data verify`


def test_a_directory_at_an_entry_path_is_quarantined_by_reads_and_replaced_by_puts(
    tmp_path: Path,
) -> None:
    cache = LatentCache(tmp_path)
    path = cache.path_for(KEY)
    path.mkdir(parents=True)
    assert not cache.contains(KEY)
    cache.put(KEY, torch.ones(2, 3), {"path": "x"})  # used to raise IsADirectoryError
    assert path.is_file()
    entry = cache.get(KEY)
    assert entry is not None and torch.equal(entry.latents, torch.ones(2, 3))
    assert any("not a regular file: a directory" in r for r in reasons(cache))
    # And a read that meets one quarantines it with the same record.
    path.unlink()
    path.mkdir()
    assert cache.lookup(KEY) == (None, "corrupt")
    assert not path.exists()
    assert len(reasons(cache)) == 2
    assert cache.counters().quarantined == 2


def test_a_fifo_at_an_entry_path_does_not_hang_a_read(tmp_path: Path) -> None:
    cache = LatentCache(tmp_path)
    path = cache.path_for(KEY)
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    result: list[object] = []
    reader = threading.Thread(target=lambda: result.append(cache.lookup(KEY)), daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():
        with open(path, "wb"):  # unblock the reader so the test process can end
            pass
        pytest.fail("reading a FIFO entry blocked")
    assert result == [(None, "corrupt")]
    assert any("not a regular file: a FIFO" in r for r in reasons(cache))
    os.mkfifo(path)
    assert cache.verify_all() == {"ok": 0, "quarantined": 1}


def test_an_entry_of_another_shape_is_corrupt_for_its_bucket(tmp_path: Path) -> None:
    cache = LatentCache(tmp_path)
    cache.put(KEY, torch.zeros(4, 2, 8, 8), {})
    entry, status = cache.lookup(KEY, expect_shape=(4, 2, 8, 8))
    assert status == "hit" and entry is not None
    cache.put(KEY, torch.zeros(4, 3, 8, 8), {})  # valid checksum, wrong shape
    assert cache.lookup(KEY, expect_shape=(4, 2, 8, 8)) == (None, "corrupt")
    assert any("differs from (4, 2, 8, 8)" in r for r in reasons(cache))


def test_a_read_only_cache_serves_reads_and_skips_quarantine_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "cache"
    cache = LatentCache(root)
    good, bad = "d" * 64, "e" * 64
    cache.put(good, torch.ones(3), {})
    cache.put(bad, torch.ones(3), {})
    blob = bytearray(cache.path_for(bad).read_bytes())
    blob[-1] ^= 0xFF
    cache.path_for(bad).write_bytes(bytes(blob))
    (root / "index.jsonl").write_text("")  # stale: a writable cache would rewrite it
    read_only_folder(monkeypatch, root)
    with caplog.at_level(logging.WARNING, logger="wan_data"):
        ro = LatentCache(root)
        again = LatentCache(root, create=False)
        assert ro.read_only and again.read_only
        entry = ro.get(good)
        assert entry is not None and torch.equal(entry.latents, torch.ones(3))
        assert ro.lookup(bad) == (None, "corrupt")
        assert ro.keys() == {good, bad}
        assert ro.verify_all() == {"ok": 1, "quarantined": 0}
    assert cache.path_for(bad).exists()  # left in place, never served
    assert (root / "index.jsonl").read_text() == ""
    warnings = [r for r in caplog.records if "is read-only" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    with pytest.raises(FatalError, match="read-only"):
        ro.put(good, torch.ones(3), {})
    with pytest.raises(FatalError, match="read-only"):
        ro.prune([])


def test_the_read_only_simulation_refuses_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helper the read-only tests rely on really refuses writes under its folder only."""
    root = tmp_path / "ro"
    root.mkdir()
    (root / "f").write_text("x")
    read_only_folder(monkeypatch, root)
    for attempt in (
        lambda: (root / "g").write_text("y"),
        lambda: open(root / "f", "a"),  # noqa: SIM115
        lambda: os.open(root / "h", os.O_WRONLY | os.O_CREAT),
        lambda: (root / "d").mkdir(),
        lambda: (root / "f").unlink(),
        lambda: os.replace(root / "f", root / "k"),
    ):
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EROFS
    assert (root / "f").read_text() == "x"
    (tmp_path / "elsewhere").write_text(json.dumps({"ok": True}))  # outside: writable
    assert encode_entry(KEY, torch.ones(1), {})  # pure code is unaffected
