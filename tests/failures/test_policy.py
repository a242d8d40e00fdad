"""policy.py: what every exception means, and running a stage function under retries."""

from __future__ import annotations

import errno

import pytest

from wan_data.errors import (
    ConfigError,
    FatalError,
    PipelineHealthError,
    SampleError,
    TransientError,
)
from wan_data.failures.policy import Action, Decision, ErrorPolicy


class OutOfMemoryError(RuntimeError):
    """Stands in for torch.cuda.OutOfMemoryError (matched by class name)."""


class SiteNetworkError(Exception):
    """A site-specific exception a trainer wants retried."""


_OPEN = "SingleStreamDecoder, SingleStreamDecoder.cpp:41, Could not open input file: "

CLASSIFICATION = [
    # torchcodec: corrupt, empty or moov-less files.
    (
        RuntimeError(_OPEN + "/x.mp4 Invalid data found when processing input"),
        Action.SKIP,
        "unreadable",
    ),
    (RuntimeError(_OPEN + "/x Is a directory"), Action.SKIP, "not_a_file"),
    (RuntimeError(_OPEN + "/x.mp4 No such file or directory"), Action.SKIP, "missing"),
    (RuntimeError(_OPEN + "/x.mp4 Permission denied"), Action.SKIP, "permission_denied"),
    # torchcodec: audio-only file.
    (
        ValueError(
            "The best video stream is unknown and there is no specified stream. "
            "Please specify a stream index."
        ),
        Action.SKIP,
        "no_video_stream",
    ),
    # torchcodec: a bad packet in the middle of a file. "decode_error" or "unreadable" (the
    # "Invalid data found" fragment): what matters is that it is a per-sample skip.
    (
        RuntimeError(
            "decode_av_frame, SingleStreamDecoder.cpp:1493, Could not push packet to decoder: "
            "Invalid data found when processing input"
        ),
        Action.SKIP,
        ("decode_error", "unreadable"),
    ),
    # torchcodec: a truncated tail.
    (IndexError("Invalid frame index=60"), Action.SKIP, "decode_error"),
    (RuntimeError("Requested next frame while there are no more frames"), Action.SKIP, None),
    (RuntimeError("something FFmpeg never said before"), Action.SKIP, "decode_error"),
    (ValueError("weird value"), Action.SKIP, "invalid_data"),
    # Transient.
    (OSError(errno.EAGAIN, "Resource temporarily unavailable"), Action.RETRY, "io_transient"),
    (OSError(errno.ESTALE, "Stale file handle"), Action.RETRY, "io_transient"),
    (TimeoutError("read timed out"), Action.RETRY, "timeout"),
    (TransientError("busy"), Action.RETRY, "transient"),
    # File system.
    (
        FileNotFoundError(errno.ENOENT, "No such file or directory", "/x.mp4"),
        Action.SKIP,
        "missing",
    ),
    (PermissionError(errno.EACCES, "Permission denied", "/x.mp4"), Action.SKIP, None),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/x"), Action.SKIP, "not_a_file"),
    # Fatal.
    (
        OSError("libavutil.so.57: cannot open shared object file: No such file or directory"),
        Action.FATAL,
        "ffmpeg_missing",
    ),
    (
        RuntimeError("Could not load libtorchcodec. Likely causes: FFmpeg is not installed"),
        Action.FATAL,
        "ffmpeg_missing",
    ),
    (ImportError("libavcodec.so.59: cannot open shared object file"), Action.FATAL, None),
    (ConfigError(["bad option."]), Action.FATAL, "ConfigError"),
    (FatalError("no ffmpeg."), Action.FATAL, "FatalError"),
    (PipelineHealthError("too many failures."), Action.FATAL, "PipelineHealthError"),
    (OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), Action.FATAL, None),
    # Our own sample errors keep their reason.
    (SampleError("too short.", reason="too_short"), Action.SKIP, "too_short"),
    # A bug in a stage: skip the sample; the breaker catches it if it is systemic.
    (TypeError("'NoneType' object is not subscriptable"), Action.SKIP, "unexpected_error"),
    (AttributeError("no attribute"), Action.SKIP, "unexpected_error"),
]


@pytest.mark.parametrize(
    ("exc", "action", "reason"),
    CLASSIFICATION,
    ids=[f"{type(e).__name__}-{i}" for i, (e, _, _) in enumerate(CLASSIFICATION)],
)
def test_classify(exc: BaseException, action: Action, reason: str | tuple[str, ...] | None) -> None:
    decision = ErrorPolicy().classify(exc)
    assert decision.action is action
    if isinstance(reason, tuple):
        assert decision.reason in reason
    elif reason is not None:
        assert decision.reason == reason


# The machine's faults, not the file's (issue 13): retried, then skipped as io_transient, which
# the ledger never records. torchcodec wraps them in RuntimeError with the C strerror text.
MACHINE_FAULTS = [
    OSError(errno.EMFILE, "Too many open files"),
    OSError(errno.ENFILE, "Too many open files in system"),
    OSError(errno.ENOMEM, "Cannot allocate memory"),
    OSError(errno.EIO, "Input/output error"),
    RuntimeError(_OPEN + "/x.mp4 Too many open files"),
    RuntimeError(_OPEN + "/x.mp4 Cannot allocate memory"),
    RuntimeError("decode_av_frame, Could not receive frame from decoder: Input/output error"),
]


@pytest.mark.parametrize("exc", MACHINE_FAULTS, ids=[str(e)[-28:] for e in MACHINE_FAULTS])
def test_machine_faults_are_transient(exc: BaseException) -> None:
    assert ErrorPolicy().classify(exc) == Decision(Action.RETRY, "io_transient")


def test_machine_fault_is_retried_then_skipped_as_io_transient() -> None:
    calls = []

    def fn() -> None:
        calls.append(1)
        raise RuntimeError(_OPEN + "/x.mp4 Too many open files")

    policy = ErrorPolicy(max_attempts=3, sleep=lambda _: None)
    result, exc, decision, attempts = policy.call(fn, stage="probe", key="k", path="/x.mp4")
    assert result is None and isinstance(exc, RuntimeError)
    assert decision == Decision(Action.SKIP, "io_transient") and attempts == len(calls) == 3


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ELOOP, "Too many levels of symbolic links", "/x.mp4"),
        OSError(errno.ENOTDIR, "Not a directory", "/x.mp4/y"),
        OSError(errno.ENAMETOOLONG, "File name too long", "/x"),
        RuntimeError(_OPEN + "/x.mp4 Too many levels of symbolic links"),
    ],
    ids=["ELOOP", "ENOTDIR", "ENAMETOOLONG", "torchcodec-ELOOP"],
)
def test_paths_that_lead_nowhere_are_missing(exc: BaseException) -> None:
    assert ErrorPolicy().classify(exc) == Decision(Action.SKIP, "missing")


def test_decompression_bomb_is_too_large() -> None:
    from PIL import Image

    bomb = Image.DecompressionBombError("Image size (900000000 pixels) exceeds limit")
    assert ErrorPolicy().classify(bomb) == Decision(Action.SKIP, "too_large")


def test_file_object_open_failure_is_unreadable() -> None:
    # What torchcodec says when it reads a file object (as wan_data passes) that is not media.
    exc = RuntimeError("Failed to open input buffer: Invalid data found when processing input")
    assert ErrorPolicy().classify(exc) == Decision(Action.SKIP, "unreadable")


def test_classify_specific_reasons() -> None:
    policy = ErrorPolicy()
    assert policy.classify(PermissionError(errno.EACCES, "x")).reason == "permission_denied"
    assert policy.classify(OutOfMemoryError("x")).reason == "out_of_memory"
    assert policy.classify(ImportError("libavcodec.so")).reason == "ffmpeg_missing"
    # An ImportError that is not about FFmpeg is not fatal-by-ffmpeg.
    assert policy.classify(ImportError("no module named foo")) == Decision(
        Action.SKIP, "unexpected_error"
    )


def test_extra_rules_take_precedence() -> None:
    policy = ErrorPolicy(
        extra_rules=(
            (SiteNetworkError, "", Action.RETRY, "site_network"),
            (RuntimeError, "Invalid data found", Action.WARN, "tolerated"),
            (TypeError, "", Action.FATAL, "strict_bug"),
        )
    )
    assert policy.classify(SiteNetworkError("reset")) == Decision(Action.RETRY, "site_network")
    assert policy.classify(RuntimeError(_OPEN + "x Invalid data found")) == Decision(
        Action.WARN, "tolerated"
    )
    assert policy.classify(TypeError("bug")) == Decision(Action.FATAL, "strict_bug")
    # The fragment must match for the rule to apply.
    assert policy.classify(RuntimeError(_OPEN + "x Is a directory")).reason == "not_a_file"
    # Without the rules, the defaults apply.
    assert ErrorPolicy().classify(SiteNetworkError("reset")).reason == "unexpected_error"


# --- call() ---------------------------------------------------------------------------------


class _Flaky:
    """Raises ``errors`` one by one, then returns ``value``."""

    def __init__(self, errors: list[BaseException], value: object = "ok") -> None:
        self.errors = list(errors)
        self.value = value
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.value


def _policy(**kw: object) -> tuple[ErrorPolicy, list[float]]:
    waits: list[float] = []
    return ErrorPolicy(sleep=waits.append, **kw), waits  # type: ignore[arg-type]


def _call(policy: ErrorPolicy, fn: _Flaky) -> tuple[object, object, object, int]:
    return policy.call(fn, stage="decode", key="c/a.mp4", path="/data/a.mp4")


def test_call_success_first_try() -> None:
    policy, waits = _policy()
    fn = _Flaky([], value=[1, 2])
    assert _call(policy, fn) == ([1, 2], None, None, 1)
    assert fn.calls == 1
    assert waits == []


def test_call_retries_transient_then_succeeds() -> None:
    policy, waits = _policy()
    fn = _Flaky([TimeoutError("slow"), OSError(errno.EAGAIN, "again")], value="done")
    assert _call(policy, fn) == ("done", None, None, 3)
    assert fn.calls == 3
    assert waits == pytest.approx([0.05, 0.1])


def test_call_gives_up_after_max_attempts() -> None:
    policy, waits = _policy(max_attempts=4, backoff_seconds=0.05)
    error = TimeoutError("still slow")
    fn = _Flaky([error] * 10)
    result, exc, decision, attempts = _call(policy, fn)
    assert result is None
    assert exc is error
    assert isinstance(decision, Decision)
    assert decision.reason == "timeout"
    assert attempts == 4
    assert fn.calls == 4
    assert waits == pytest.approx([0.05, 0.1, 0.2])


def test_backoff_is_capped() -> None:
    policy = ErrorPolicy(backoff_seconds=1.0, max_backoff_seconds=3.0)
    assert [policy.backoff(a) for a in (1, 2, 3, 4)] == [1.0, 2.0, 3.0, 3.0]


def test_call_skip_is_not_retried() -> None:
    policy, waits = _policy()
    error = RuntimeError(_OPEN + "/a.mp4 Invalid data found when processing input")
    fn = _Flaky([error, error])
    result, exc, decision, attempts = _call(policy, fn)
    assert (result, exc, decision, attempts) == (
        None,
        error,
        Decision(Action.SKIP, "unreadable"),
        1,
    )
    assert fn.calls == 1
    assert waits == []


def test_call_warn_is_returned_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    policy = ErrorPolicy(extra_rules=((UserWarning, "", Action.WARN, "meh"),))
    fn = _Flaky([UserWarning("odd")])
    with caplog.at_level("WARNING", logger="wan_data"):
        _, exc, decision, attempts = _call(policy, fn)
    assert decision == Decision(Action.WARN, "meh")
    assert attempts == 1
    assert isinstance(exc, UserWarning)
    assert any("odd" in r.getMessage() and "/data/a.mp4" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, MemoryError, StopIteration, SystemExit])
def test_call_never_swallows(exc_type: type[BaseException]) -> None:
    policy, waits = _policy()
    # Even a user rule asking to skip it does not apply.
    policy.extra_rules = ((BaseException, "", Action.SKIP, "nope"),)
    error = exc_type()
    fn = _Flaky([error])
    with pytest.raises(exc_type) as info:
        _call(policy, fn)
    assert info.value is error
    assert fn.calls == 1
    assert waits == []


def test_call_wraps_fatal_errors_with_context() -> None:
    policy, _ = _policy()
    error = OSError("libavutil.so.57: cannot open shared object file")
    with pytest.raises(FatalError) as info:
        _call(policy, _Flaky([error]))
    assert info.value.__cause__ is error
    message = str(info.value)
    assert "stage=decode" in message
    assert "file=/data/a.mp4" in message
    assert "libavutil.so.57" in message
    assert "apt-get install ffmpeg" in message


def test_call_wraps_out_of_memory() -> None:
    policy, _ = _policy()
    error = OutOfMemoryError("CUDA out of memory")
    with pytest.raises(FatalError, match="ran out after all fallbacks") as info:
        _call(policy, _Flaky([error]))
    assert info.value.__cause__ is error
    assert "stage=decode" in str(info.value)


def test_call_wraps_user_fatal_rule() -> None:
    policy, _ = _policy(extra_rules=((TypeError, "", Action.FATAL, "strict"),))
    error = TypeError("bug")
    with pytest.raises(FatalError, match=r"TypeError \('bug'\) is fatal") as info:
        _call(policy, _Flaky([error]))
    assert info.value.__cause__ is error


@pytest.mark.parametrize(
    "error",
    [ConfigError(["bad."]), FatalError("no ffmpeg."), PipelineHealthError("systemic.")],
)
def test_call_reraises_own_fatal_errors_unwrapped(error: Exception) -> None:
    policy, _ = _policy()
    with pytest.raises(type(error)) as info:
        _call(policy, _Flaky([error]))
    assert info.value is error


def test_policy_validation() -> None:
    with pytest.raises(ConfigError) as info:
        ErrorPolicy(max_attempts=0, backoff_seconds=-1)
    assert len(info.value.problems) == 2
    assert "max_attempts (0)" in str(info.value)
    assert "backoff_seconds (-1)" in str(info.value)
    with pytest.raises(ConfigError, match="max_attempts"):
        ErrorPolicy(max_attempts=0)
