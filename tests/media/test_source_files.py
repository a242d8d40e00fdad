"""source_files.py: sources are opened as regular files only, never blocking on a FIFO."""

from __future__ import annotations

import errno
import gc
import os
import socket
import warnings
from pathlib import Path

import pytest

from wan_data.errors import SampleError
from wan_data.failures.policy import ErrorPolicy
from wan_data.media.source_files import SourceFile, check_regular, open_source

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")


def test_open_source_reads_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "a.mp4"
    path.write_bytes(b"0123456789")
    with open_source(str(path), stage="probe") as fh:
        assert isinstance(fh, SourceFile)
        assert fh.read(4) == b"0123"
        fh.seek(8)
        assert fh.read() == b"89"
        assert os.get_blocking(fh.fileno())  # O_NONBLOCK was only for the open


@needs_fifo
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(SampleError) as info:
        open_source(str(fifo), stage="decode")
    assert info.value.reason == "not_a_file"
    text = str(info.value)
    assert str(fifo) in text and "FIFO" in text and "stage=decode" in text
    assert ErrorPolicy().classify(info.value).reason == "not_a_file"


def test_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.mp4"
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.bind(str(path))
        except OSError as exc:  # path too long for AF_UNIX on some systems
            pytest.skip(f"cannot bind a unix socket here: {exc}")
        with pytest.raises(SampleError, match="a socket") as info:
            open_source(str(path), stage="probe")
    assert info.value.reason == "not_a_file"


def test_directory_raises_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        open_source(str(tmp_path), stage="probe")
    assert ErrorPolicy().classify(IsADirectoryError(errno.EISDIR, "x")).reason == "not_a_file"


def test_missing_and_symlink_loop_raise_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_source(str(tmp_path / "nope.mp4"), stage="probe")
    (tmp_path / "a.mp4").symlink_to("b.mp4")
    (tmp_path / "b.mp4").symlink_to("a.mp4")
    with pytest.raises(OSError) as info:
        open_source(str(tmp_path / "a.mp4"), stage="probe")
    assert info.value.errno == errno.ELOOP
    assert ErrorPolicy().classify(info.value).reason == "missing"


def test_check_regular_follows_symlinks(tmp_path: Path) -> None:
    target = tmp_path / "a.mp4"
    target.write_bytes(b"x")
    (tmp_path / "link.mp4").symlink_to(target)
    assert check_regular(str(tmp_path / "link.mp4"), stage="integrity").st_size == 1


def test_non_utf8_name_opens(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/\xff\xfe.mp4"
    with open(raw, "wb") as fh:
        fh.write(b"data")
    with open_source(os.fsdecode(raw), stage="probe") as fh:
        assert fh.read() == b"data"


def test_dropped_source_file_closes_without_resource_warning(tmp_path: Path) -> None:
    # A decoder owns the file object it reads; dropping the decoder drops the file.
    path = tmp_path / "a.mp4"
    path.write_bytes(b"x")
    fh = open_source(str(path), stage="decode")
    fd = fh.fileno()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del fh
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    with pytest.raises(OSError):
        os.fstat(fd)  # closed
