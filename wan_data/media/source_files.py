"""Opening a source file for reading: only a regular file, never a FIFO, device or socket.

A source was checked to be a regular file when the dataset was built, but a file can be
replaced at any time afterwards (a sync tool, a user's ``mkfifo`` over a bad file). FFmpeg or
Pillow opening a FIFO blocks forever waiting for a writer, which hangs a DataLoader worker
without an error. So every stage that opens a source (probe, integrity, decode, image decode)
checks the file type right before it opens it, through :func:`open_source` (open without
blocking, then ``fstat`` the descriptor that is actually read: no window for a swap between
the check and the open) or, where another program opens the path (the ``ffmpeg`` CLI of the
integrity check), :func:`check_regular`.

Decoders are handed the open file object instead of the path, which also lets torchcodec read
a file whose name is not valid UTF-8 (a surrogate-escaped ``str`` it cannot convert to C++).
"""

from __future__ import annotations

import errno
import io
import os
import stat

from wan_data.errors import SampleError, format_error

__all__ = ["SourceFile", "check_regular", "open_source", "require_regular"]

_NOT_REGULAR_HINT = (
    "the path no longer holds a regular file (replaced by a FIFO, device or socket?); restore "
    "the file or remove its entry"
)


class SourceFile(io.FileIO):
    """A read-only source file that closes quietly when the last reference goes.

    A decoder keeps the file object it reads from, and drops it when the decoder is dropped;
    a plain :class:`io.FileIO` would then warn ``ResourceWarning: unclosed file`` for a file
    whose lifetime is, by design, the decoder's.
    """

    def __del__(self) -> None:
        self.close()


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def require_regular(path: str, mode: int, stage: str) -> None:
    """Raise for anything but a regular file: ``IsADirectoryError`` for a directory (the
    policy's ``not_a_file``), a :class:`SampleError` ``not_a_file`` naming the kind otherwise."""
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    raise SampleError(
        format_error(
            "source file",
            path,
            f"is {_kind(mode)}, not a regular file; refused before opening it, since reading it "
            "could block forever",
            _NOT_REGULAR_HINT,
            stage=stage,
        ),
        reason="not_a_file",
    )


def check_regular(path: str, *, stage: str) -> os.stat_result:
    """``os.stat(path)`` after checking it is a regular file (follows symlinks).

    For callers that hand the *path* to another program; prefer :func:`open_source`.

    Raises:
        OSError: from ``stat`` (missing, ``ELOOP`` for a symlink loop, permission denied).
        IsADirectoryError: ``path`` is a directory.
        SampleError: ``not_a_file``: a FIFO, socket or device.
    """
    st = os.stat(path)
    require_regular(path, st.st_mode, stage)
    return st


def open_source(path: str, *, stage: str) -> SourceFile:
    """Open the regular file ``path`` for reading, never blocking on a FIFO.

    The path is ``stat``-ed first (a socket cannot even be opened), then opened with
    ``O_NONBLOCK`` and the descriptor ``fstat``-ed, so a file swapped between the two is still
    refused; blocking mode is restored for the reads.

    Raises:
        OSError: the file cannot be opened (missing, ``ELOOP``, permission denied, ``EMFILE``).
        IsADirectoryError: ``path`` is a directory.
        SampleError: ``not_a_file``: a FIFO, socket or device.
    """
    check_regular(path, stage=stage)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        require_regular(path, os.fstat(fd).st_mode, stage)
        os.set_blocking(fd, True)
        return SourceFile(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise
