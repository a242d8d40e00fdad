"""FFmpeg's errno texts for damaged data: the file's fault or the machine's?

FFmpeg reports some damaged files with the C library's error codes: the Matroska demuxer
returns ``AVERROR(EIO)`` for an EBML header cut short, and a flipped bit in an MP4 index can
ask for an absurd allocation that fails with ``AVERROR(ENOMEM)``. torchcodec raises them as
``RuntimeError: ... Input/output error`` / ``... Cannot allocate memory``: the words a failing
disk or a host out of memory give too, which the policy retries and, when they persist, skips
as ``io_transient`` (never ledgered, so the file is probed again by every run).

:func:`file_fault` tells the two apart once the policy's retries are spent, by asking the
machine directly (docs/reliability.md, "Input files"):

* the file is read again from Python, to its end, through
  :func:`~wan_data.media.source_files.open_source`: if that read fails (``OSError``) the
  storage is at fault, and the error stays the machine's;
* for ENOMEM, Python must also allocate (and zero) ``ALLOCATION_CHECK_BYTES``, more than FFmpeg
  needs to open and index a video: a host out of memory, a strict overcommit or a
  ``ulimit -v`` fails that too, and the error stays the machine's.

Otherwise the storage delivered every byte and memory is there, while FFmpeg failed the same
way on every attempt: its error came from the bytes, and the file is skipped with the reason
the policy gives damaged data (:func:`~wan_data.failures.policy.damage_reason`), ledgered.
"""

from __future__ import annotations

import logging

from wan_data.errors import SampleError, format_error
from wan_data.failures.mechanism import clean_message, failure_hint
from wan_data.failures.policy import damage_reason
from wan_data.media.source_files import open_source

__all__ = ["ALLOCATION_CHECK_BYTES", "can_allocate", "ffmpeg_errno", "file_fault", "read_to_end"]

logger = logging.getLogger("wan_data")

# FFmpeg's strerror texts (lower case) that a damaged file can produce, by errno name.
_ERRNO_TEXTS = (("input/output error", "EIO"), ("cannot allocate memory", "ENOMEM"))
ALLOCATION_CHECK_BYTES = 64 << 20
_READ_CHUNK = 1 << 20


def ffmpeg_errno(exc: BaseException) -> str | None:
    """``"EIO"`` or ``"ENOMEM"`` for torchcodec's ``RuntimeError`` carrying that errno's text
    (FFmpeg's error), else ``None`` (an ``OSError`` is Python's own I/O: the machine's)."""
    if not isinstance(exc, RuntimeError):
        return None
    text = str(exc).lower()
    for fragment, name in _ERRNO_TEXTS:
        if fragment in text:
            return name
    return None


def read_to_end(path: str, *, stage: str) -> int:
    """Read the regular file ``path`` to its end; the number of bytes read.

    Raises:
        OSError: the storage failed the read (or the file is gone).
        SampleError: ``not_a_file``: the path now holds a FIFO, socket or device.
    """
    total = 0
    buffer = bytearray(_READ_CHUNK)
    with open_source(path, stage=stage) as fh:
        while n := fh.readinto(buffer):
            total += n
    return total


def can_allocate(nbytes: int | None = None) -> bool:
    """Whether Python can allocate and zero ``nbytes`` (``ALLOCATION_CHECK_BYTES``) now."""
    try:
        block = bytearray(ALLOCATION_CHECK_BYTES if nbytes is None else nbytes)
    except MemoryError:
        return False
    del block
    return True


def file_fault(path: str, exc: BaseException, *, stage: str, attempts: int) -> SampleError | None:
    """The skip to raise instead of ``exc`` when FFmpeg's EIO/ENOMEM is the file's fault.

    Call it once FFmpeg failed with the same errno text on every one of ``attempts`` attempts.

    Returns:
        a :class:`SampleError` with the damaged-data reason (``unreadable``, ``decode_error``)
        when the file reads back to its end (and, for ENOMEM, memory can be allocated);
        ``None`` when the machine may be at fault (raise ``exc``: ``io_transient``) or ``exc``
        carries no such errno text.

    Raises:
        SampleError: ``not_a_file`` when the path now holds a FIFO, socket or device.
    """
    name = ffmpeg_errno(exc)
    if name is None:
        return None
    try:
        size = read_to_end(path, stage=stage)
    except OSError as read_error:
        logger.debug(
            "%s of %s: the storage fails a read too (%s): a machine fault", name, path, read_error
        )
        return None
    memory = ""
    if name == "ENOMEM":
        if not can_allocate():
            logger.debug("ENOMEM of %s: Python cannot allocate either: a machine fault", path)
            return None
        memory = f" and Python allocates {ALLOCATION_CHECK_BYTES >> 20} MiB"
    reason = damage_reason(exc)
    tries = "the one attempt" if attempts == 1 else f"all {attempts} attempts"
    return SampleError(
        format_error(
            "file",
            path,
            f"failed in FFmpeg with {name} on {tries} ({clean_message(exc)[:300]}), while it "
            f"reads back to its end ({size} bytes){memory}: the data is damaged, not the storage "
            "or the memory",
            failure_hint(reason),
            stage=stage,
        ),
        reason=reason,
    )
