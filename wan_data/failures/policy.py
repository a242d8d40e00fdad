"""The one object that decides what every error means.

torchcodec reports corrupt data, missing files and EOF all as ``RuntimeError``, so the policy
classifies by type *and* message. Stages never catch exceptions themselves; they hand them here,
which keeps the decision "skip, retry or stop" in one auditable place.
"""

from __future__ import annotations

import enum
import errno
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from wan_data.errors import (
    ConfigError,
    FatalError,
    PipelineHealthError,
    SampleError,
    TransientError,
    format_error,
)

__all__ = ["Action", "Decision", "ErrorPolicy", "damage_reason", "release_frames"]

logger = logging.getLogger("wan_data")
T = TypeVar("T")

# Never swallowed, whatever the policy says: the user or the interpreter asked to stop.
_NEVER_CAUGHT = (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError, StopIteration)

_FFMPEG_MISSING = (
    "could not load libtorchcodec",
    "libavutil",
    "libavcodec",
    "libavformat",
    "libswscale",
    "ffmpeg is not installed",
    "could not find ffmpeg",
)
_TRANSIENT_ERRNOS = {
    errno.EAGAIN,
    errno.EINTR,
    errno.EBUSY,
    errno.ETIMEDOUT,
    errno.ESTALE,
    errno.ECONNRESET,
    errno.ENETDOWN,
    errno.ENETUNREACH,
    # Resource exhaustion and I/O errors of the machine, not of the file: a worker that ran
    # out of descriptors (EMFILE), a host out of memory, a flaky disk or network mount (EIO).
    # Retried, and when they persist skipped as io_transient, which the ledger never records:
    # calling the file bad would skip it in every later run.
    errno.EMFILE,
    errno.ENFILE,
    errno.ENOMEM,
    errno.EIO,
}
# The same conditions as torchcodec / FFmpeg report them: a RuntimeError whose message ends
# with the C library's strerror text (torchcodec wraps every FFmpeg failure in RuntimeError).
_TRANSIENT_MESSAGES = (
    "too many open files",  # EMFILE, and ENFILE's "too many open files in system"
    "cannot allocate memory",  # ENOMEM
    "input/output error",  # EIO
    "resource temporarily unavailable",  # EAGAIN
)
# A path that cannot lead to a file: a symlink loop (ELOOP), a file used as a folder
# (ENOTDIR), a name longer than the filesystem allows. Like a dangling symlink: "missing".
_PATH_ERRNOS = {errno.ELOOP, errno.ENOTDIR, errno.ENAMETOOLONG}
# (lower-case message fragment, reason) for torchcodec / FFmpeg messages, checked in order.
_MESSAGE_REASONS = (
    ("no such file", "missing"),
    ("too many levels of symbolic links", "missing"),
    ("does not exist", "missing"),
    ("permission denied", "permission_denied"),
    ("is a directory", "not_a_file"),
    ("no valid stream", "no_video_stream"),
    ("no video stream", "no_video_stream"),
    ("best video stream is unknown", "no_video_stream"),
    ("not a video stream", "no_video_stream"),
    ("could not open input file", "unreadable"),
    ("failed to open input buffer", "unreadable"),  # the same, for a file object (wan_data's)
    ("invalid data found", "decode_error"),
    ("end of file", "decode_error"),
    ("no more frames", "decode_error"),
    ("out of bounds", "decode_error"),
    ("invalid", "decode_error"),
)


class Action(enum.Enum):
    """What the pipeline does with an exception."""

    FATAL = "fatal"
    RETRY = "retry"
    SKIP = "skip"
    WARN = "warn"


@dataclass(frozen=True)
class Decision:
    """What :meth:`ErrorPolicy.classify` makes of one exception: the ``action`` and the skip
    ``reason`` it is recorded under (``decode_error``, ``transient``...; the exception class
    name for a fatal error)."""

    action: Action
    reason: str


@dataclass
class ErrorPolicy:
    """Classify exceptions and run stage functions under retry-with-backoff.

    Args:
        max_attempts: attempts for a transient error, the first included (design: <= 3).
        backoff_seconds: wait before the second attempt; doubled for each further one.
        max_backoff_seconds: cap on one wait.
        extra_rules: user rules checked first: ``(exception type, message fragment or "",
            Action, reason)``; lets a trainer declare e.g. a site-specific network error
            transient without subclassing.
        sleep: injectable for tests.
    """

    max_attempts: int = 3
    backoff_seconds: float = 0.05
    max_backoff_seconds: float = 2.0
    extra_rules: tuple[tuple[type[BaseException], str, Action, str], ...] = ()
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = []
        if self.max_attempts < 1:
            problems.append(format_error("max_attempts", self.max_attempts, "must be >= 1"))
        if self.backoff_seconds < 0:
            problems.append(format_error("backoff_seconds", self.backoff_seconds, "must be >= 0"))
        if problems:
            raise ConfigError(problems)

    def classify(self, exc: BaseException) -> Decision:
        """Decide what ``exc`` means. Pure: no logging, no side effects."""
        message = str(exc).lower()
        for exc_type, fragment, action, reason in self.extra_rules:
            if isinstance(exc, exc_type) and fragment.lower() in message:
                return Decision(action, reason)
        if isinstance(exc, (ConfigError, FatalError, PipelineHealthError)):
            return Decision(Action.FATAL, type(exc).__name__)
        if isinstance(exc, SampleError):
            return Decision(Action.SKIP, exc.reason)
        if isinstance(exc, TransientError):
            return Decision(Action.RETRY, "transient")
        if any(f in message for f in _FFMPEG_MISSING) and isinstance(
            exc, (OSError, RuntimeError, ImportError)
        ):
            return Decision(Action.FATAL, "ffmpeg_missing")
        if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
            return Decision(Action.FATAL, "out_of_memory")
        if _is_decompression_bomb(exc):
            return Decision(Action.SKIP, "too_large")
        if isinstance(exc, FileNotFoundError) or (
            isinstance(exc, OSError) and exc.errno in _PATH_ERRNOS
        ):
            return Decision(Action.SKIP, "missing")
        if isinstance(exc, PermissionError):
            return Decision(Action.SKIP, "permission_denied")
        if isinstance(exc, IsADirectoryError):
            return Decision(Action.SKIP, "not_a_file")
        if isinstance(exc, TimeoutError):
            return Decision(Action.RETRY, "timeout")
        if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
            return Decision(Action.RETRY, "io_transient")
        if isinstance(exc, (RuntimeError, OSError)) and any(
            f in message for f in _TRANSIENT_MESSAGES
        ):
            return Decision(Action.RETRY, "io_transient")
        if isinstance(exc, (RuntimeError, ValueError, IndexError, OSError)):
            return Decision(Action.SKIP, damage_reason(exc))
        # A bug (TypeError, AttributeError...) in a stage: skip the sample, and let the circuit
        # breaker stop the run if it hits most samples.
        return Decision(Action.SKIP, "unexpected_error")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.max_backoff_seconds, self.backoff_seconds * (2 ** (attempt - 1)))

    def call(
        self, fn: Callable[[], T], *, stage: str, key: str, path: str
    ) -> tuple[T | None, BaseException | None, Decision | None, int]:
        """Run ``fn`` with retries.

        Returns:
            ``(result, None, None, attempts)`` on success, or ``(None, exc, decision,
            attempts)`` for a skip. Fatal errors and the never-caught exceptions propagate,
            fatal ones wrapped in :class:`FatalError` naming the stage and file.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn(), None, None, attempt
            except _NEVER_CAUGHT:
                raise
            except BaseException as exc:
                decision = self.classify(exc)
                if decision.action is Action.FATAL:
                    if isinstance(exc, (ConfigError, FatalError, PipelineHealthError)):
                        raise
                    raise FatalError(_fatal_message(exc, decision, stage, path)) from exc
                if decision.action is Action.RETRY and attempt < self.max_attempts:
                    wait = self.backoff(attempt)
                    logger.info(
                        "retrying stage=%s key=%s after %s (attempt %d/%d, waiting %.2fs): %s",
                        stage,
                        key,
                        type(exc).__name__,
                        attempt,
                        self.max_attempts,
                        wait,
                        exc,
                    )
                    self.sleep(wait)
                    continue
                if decision.action is Action.WARN:
                    logger.warning("stage=%s key=%s file=%s: %s", stage, key, path, exc)
                logger.debug("stage=%s key=%s skipped after", stage, key, exc_info=exc)
                release_frames(exc)
                if decision.action is Action.RETRY:  # attempts exhausted: now it is a skip
                    decision = Decision(Action.SKIP, decision.reason)
                return None, exc, decision, attempt


def damage_reason(exc: BaseException) -> str:
    """The skip reason of a damaged file's error, read from its message alone.

    What :meth:`ErrorPolicy.classify` gives a ``RuntimeError`` / ``ValueError`` / ``IndexError``
    / ``OSError`` once no machine fault matched (``unreadable`` for an input FFmpeg cannot
    open, ``decode_error`` for damaged data...); the probe also uses it for an error whose
    errno text it has proved to be the file's (:mod:`wan_data.media.ffmpeg_errno`).
    """
    message = str(exc).lower()
    for fragment, reason in _MESSAGE_REASONS:
        if fragment in message:
            return reason
    return "decode_error" if isinstance(exc, RuntimeError) else "invalid_data"


def _is_decompression_bomb(exc: BaseException) -> bool:
    """Pillow's ``DecompressionBombError`` (an image whose header declares so many pixels that
    decoding it could exhaust memory): the file is too large, not a wan_data bug. Matched by
    class name so the policy does not import Pillow."""
    return any(t.__name__ == "DecompressionBombError" for t in type(exc).__mro__)


def release_frames(exc: BaseException) -> None:
    """Drop the local variables of every frame in ``exc``'s traceback (and its chain).

    A kept exception otherwise keeps every local of the frames it passed through alive, among
    them open video decoders with FFmpeg thread pools. Such a decoder left for the garbage
    collector in the main process is inherited by forked DataLoader workers, whose collector
    then destroys it and deadlocks on a condition variable whose threads were not forked.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__


def _fatal_message(exc: BaseException, decision: Decision, stage: str, path: str) -> str:
    if decision.reason == "ffmpeg_missing":
        hint = (
            "torchcodec needs FFmpeg 4-8 shared libraries: install them (Debian/Ubuntu: "
            "`apt-get install ffmpeg`; conda: `conda install ffmpeg`), or run ./run which does"
        )
        return format_error(
            "FFmpeg libraries", str(exc)[:300], "could not be loaded", hint, path=path, stage=stage
        )
    if decision.reason == "out_of_memory":
        return format_error(
            "device memory",
            str(exc)[:300],
            "ran out after all fallbacks",
            "lower encode_batch_size or resolution",
            path=path,
            stage=stage,
        )
    return format_error(type(exc).__name__, str(exc)[:300], "is fatal", path=path, stage=stage)
