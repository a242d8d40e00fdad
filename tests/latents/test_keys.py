"""Cache keys' source identity: a source swapped for a FIFO never blocks the content hash."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from bounded import finishes

from wan_data.errors import SampleError
from wan_data.latents.keys import source_identity


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_content_hash_of_a_source_replaced_by_a_fifo_fails_fast(tmp_path: Path) -> None:
    fifo = tmp_path / "replaced.mp4"
    os.mkfifo(fifo)
    # Without the content hash only a stat: a FIFO's identity is computed as any file's.
    assert source_identity(str(fifo))["size"] == 0
    result = finishes(lambda: source_identity(str(fifo), content_hash=True), 10.0)
    assert isinstance(result, SampleError), result
    assert result.reason == "not_a_file"
    message = str(result)
    assert str(fifo) in message and "FIFO" in message and "stage=cache" in message


def test_content_hash_still_hashes_a_regular_file(tmp_path: Path) -> None:
    f = tmp_path / "v.mp4"
    f.write_bytes(b"x" * ((1 << 20) + 3))  # more than one read chunk
    ident = source_identity(str(f), content_hash=True)
    assert ident["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
