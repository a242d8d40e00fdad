"""Opt-in integrity check: a full FFmpeg decode that fails on errors FFmpeg would conceal.

FFmpeg's decoders conceal bitstream errors: a flipped bit in an H.264 I-frame decodes through
torchcodec without an exception or a flag, and the smeared frames are served to training. This
module decodes the first video stream once with the ``ffmpeg`` CLI (an argument list, never a
shell) and reports every error line, so the caller can skip the file before it reaches a batch.

It catches what the decoders notice: syntax errors, concealed macroblocks, frames flagged
corrupt, demuxer damage, embedded checksums. Damage that still parses goes through. Share of
single-byte damage detected (``benchmarks/bench_integrity.py --detection 30``, 320x240, key
packet / any packet): H.264 100% / 77%, MPEG-4 part 2 63% / 93%, HEVC 20% / 3% (100% with
picture-hash SEI), VP9 3% / 13%.

Images (png, jpg, ...) are not checked: the caller skips them; the rates above are for video.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from subprocess import DEVNULL, PIPE
from typing import Protocol

from wan_data.errors import ConfigError, FatalError, SampleError, TransientError, format_error
from wan_data.media.source_files import check_regular, require_regular

__all__ = [
    "DEFAULT_ERR_DETECT",
    "FfmpegNotFoundError",
    "IntegrityResult",
    "IntegrityTimeoutError",
    "check_integrity",
    "find_ffmpeg",
    "integrity_command",
    "integrity_error",
    "parse_ffmpeg_errors",
]

logger = logging.getLogger("wan_data")

# crccheck: verify embedded checksums (HEVC picture hash: catches what parsing cannot);
# bitstream/buffer: report spec deviations and bad lengths; explode: decoders return an error
# instead of concealing and going on, so -xerror ends the run there. None of them changed a
# verdict on clean files (test corpus, ../shared/media).
DEFAULT_ERR_DETECT = "crccheck+bitstream+buffer+explode"
MAX_ERRORS = 5
_MAX_LINE = 300
_POINTER = re.compile(r"\[([^\]@]+?) @ (?:0x)?[0-9a-fA-F]+\]")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NOISE = re.compile(r"^(Last message repeated \d+ times?|Conversion failed!)$")
_INSTALL_HINT = (
    "install it (Debian/Ubuntu: apt-get install ffmpeg; conda: conda install ffmpeg), pass its "
    "path, or turn the integrity check off"
)
_REPAIR_HINT = "re-encode it (ffmpeg -i IN -c:v libx264 -crf 18 OUT.mp4) or remove it"


class FfmpegNotFoundError(FatalError):
    """The ``ffmpeg`` binary is missing: fatal, because skipping cannot fix it and every file
    would otherwise be dropped as "corrupt" by a check that never ran."""


class IntegrityTimeoutError(TransientError, TimeoutError):
    """The check ran past its timeout and was killed.

    Transient (the policy retries, then skips), not ``ok=False``: a timeout says nothing about
    the file's bytes. It happens on a stalled network mount or an overloaded machine, and calling
    good data corrupt there would drop it with a wrong "re-encode" hint.
    """


@dataclass(frozen=True)
class IntegrityResult:
    """Outcome of :func:`check_integrity`.

    Attributes:
        ok: the decode finished with exit status 0 and no error line.
        errors: the first :data:`MAX_ERRORS` cleaned error lines; empty when ``ok``.
        seconds: wall time of the ffmpeg run.
        ffmpeg_version: e.g. ``"5.1.9-0+deb12u1"``: a verdict is traced to the decoder that made
            it; ``"unknown"`` if ``ffmpeg -version`` could not be parsed.
        returncode: ffmpeg's exit status (negative: killed by that signal).
    """

    ok: bool
    errors: tuple[str, ...]
    seconds: float
    ffmpeg_version: str
    returncode: int = 0


def find_ffmpeg(ffmpeg: str | None = None) -> str:
    """Resolve ``ffmpeg`` (a name on ``PATH`` or a path) to an executable, or raise fatally.

    Call it at construction to fail in seconds rather than on the first file.

    Raises:
        FfmpegNotFoundError: nothing executable under that name.
    """
    name = ffmpeg or "ffmpeg"
    found = shutil.which(name)
    if found is None:
        rule = "was not found or is not executable; the integrity check needs the ffmpeg CLI"
        raise FfmpegNotFoundError(format_error("ffmpeg binary", name, rule, _INSTALL_HINT))
    return found


@functools.lru_cache(maxsize=8)
def _version(binary: str) -> str:
    """``ffmpeg -version``'s version token, once per binary (each ffmpeg start costs ~50 ms)."""
    try:
        done = subprocess.run([binary, "-version"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    words = done.stdout.decode("utf-8", errors="replace").split()
    return words[2] if len(words) > 2 and words[1] == "version" else "unknown"


def integrity_command(
    path: str, *, ffmpeg: str = "ffmpeg", threads: int = 1, err_detect: str = DEFAULT_ERR_DETECT
) -> list[str]:
    """The argument list :func:`check_integrity` runs; public so logs and docs can show it.

    ``-v error`` keeps only error lines (decoders log concealment at that level); ``-xerror``
    exits at the first decode error or frame flagged corrupt, so bad files cost little;
    ``-threads`` goes before ``-i`` to bound the *decoder*, since callers run checks in parallel.
    ``file:`` and ``-protocol_whitelist file`` stop a name like ``concat:a|b`` or a playlist from
    reaching another protocol. ``-map 0:v:0 -f null -`` decodes the first video stream only.
    """
    quiet = ["-nostdin", "-hide_banner", "-nostats", "-v", "error", "-xerror"]
    decoder = ["-threads", str(threads), "-err_detect", err_detect, "-protocol_whitelist", "file"]
    source = ["-i", "file:" + os.path.abspath(path), "-map", "0:v:0"]
    return [ffmpeg, *quiet, *decoder, *source, "-f", "null", "-"]


def parse_ffmpeg_errors(stderr: str, limit: int = MAX_ERRORS) -> tuple[str, ...]:
    """Turn ffmpeg's stderr into at most ``limit`` distinct, stable error lines.

    Drops blank lines and noise ("Last message repeated", "Conversion failed!"), rewrites
    ``[h264 @ 0x55d0c8a1b2c0]`` to ``[h264]`` so the same damage gives the same text in every
    run (the probe decoder and the main decoder otherwise print each error twice, at different
    addresses), removes duplicates and truncates very long lines.
    """
    out: list[str] = []
    for raw in re.split(r"[\r\n]+", stderr):
        line = _POINTER.sub(r"[\1]", _ANSI.sub("", raw)).strip()
        if not line or _NOISE.match(line) or line in out:
            continue
        out.append(line[:_MAX_LINE])
        if len(out) >= limit:
            break
    return tuple(out)


def _check_readable(path: str) -> None:
    """Raise the ``OSError`` the policy maps to its own skip reason, instead of letting ffmpeg
    turn a missing, unreadable or directory path into a "corrupt" verdict, and refuse anything
    but a regular file: ffmpeg opening a FIFO blocks until the timeout (600 s by default).
    ``O_NONBLOCK`` keeps a FIFO swapped in after the ``stat`` from blocking the ``open``."""
    check_regular(path, stage="integrity")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        require_regular(path, os.fstat(fd).st_mode, "integrity")  # swapped since the stat?
    finally:
        os.close(fd)


def _exit_reason(code: int) -> str:
    if code >= 0:
        return f"ffmpeg exited with status {code} without an error message"
    name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
    return f"ffmpeg was killed by {name} without an error message"


def check_integrity(
    path: str,
    *,
    timeout_seconds: float | None = 600.0,
    ffmpeg: str | None = None,
    threads: int = 1,
    err_detect: str = DEFAULT_ERR_DETECT,
) -> IntegrityResult:
    """Decode the first video stream of ``path`` fully and report any decode error.

    A non-zero exit status without an error line is still ``ok=False`` with a synthesized line
    (``ffmpeg exited with status N ...``): under ``-xerror`` a decoder error can end the run
    silently, and a file the decoder cannot get through (or crashes on) is not verified.

    Args:
        path: a video file (images are not checked; the caller skips them).
        timeout_seconds: kill ffmpeg after this long; ``None`` waits forever. The default is a
            hang guard, not a budget (a 4 s 480p clip takes 0.1-0.8 s on one thread); raise it
            for sources of many minutes at 1080p or more.
        ffmpeg: binary name or path; ``None`` looks up ``ffmpeg`` on ``PATH``.
        threads: decoder threads (default 1: callers run several checks in parallel).
        err_detect: FFmpeg ``-err_detect`` flags; drop ``crccheck`` for HEVC from x265 3.5 with
            ``--hash`` and default ``rskip``, whose chroma hashes mismatch on clean files.

    Raises:
        FfmpegNotFoundError: no ffmpeg binary (fatal).
        IntegrityTimeoutError: ran past ``timeout_seconds``; ffmpeg was killed and reaped.
        OSError: ``path`` is missing, unreadable or a directory; raised before ffmpeg runs so
            the policy skips it as ``missing``/``permission_denied``/``not_a_file``, not as
            corrupt.
        SampleError: ``not_a_file``: ``path`` is a FIFO, socket or device (ffmpeg would block
            on a FIFO until the timeout).
    """
    if threads < 0:
        raise ConfigError(format_error("threads", threads, "must be >= 0 (0: FFmpeg decides)"))
    binary = find_ffmpeg(ffmpeg)
    _check_readable(path)
    command = integrity_command(path, ffmpeg=binary, threads=threads, err_detect=err_detect)
    env = {**os.environ, "AV_LOG_FORCE_NOCOLOR": "1"}
    started = time.perf_counter()
    try:
        # run() kills and waits for the child on a timeout or any other exception: no zombie.
        done = subprocess.run(
            command, stdin=DEVNULL, stdout=DEVNULL, stderr=PIPE, env=env, timeout=timeout_seconds
        )
    except subprocess.TimeoutExpired as exc:
        rule = "ran past its timeout and ffmpeg was killed"
        hint = "check the storage is responsive, or raise timeout_seconds for long files"
        raise IntegrityTimeoutError(
            format_error(
                "integrity check", f"{timeout_seconds} s", rule, hint, path=path, stage="integrity"
            )
        ) from exc
    except OSError as exc:
        if exc.filename == binary:  # removed or made unexecutable after find_ffmpeg
            raise FfmpegNotFoundError(
                format_error("ffmpeg binary", binary, f"could not be run ({exc})", "reinstall it")
            ) from exc
        raise
    seconds = time.perf_counter() - started
    errors = parse_ffmpeg_errors(done.stderr.decode("utf-8", errors="replace"))
    if done.returncode != 0 and not errors:
        errors = (_exit_reason(done.returncode),)
    result = IntegrityResult(
        ok=done.returncode == 0 and not errors,
        errors=errors,
        seconds=seconds,
        ffmpeg_version=_version(binary),
        returncode=done.returncode,
    )
    logger.debug("integrity %s: ok=%s in %.3fs %s", path, result.ok, seconds, errors[:1] or "")
    return result


class HasErrors(Protocol):
    """An integrity outcome: a fresh :class:`IntegrityResult` or a remembered verdict."""

    @property
    def errors(self) -> tuple[str, ...]: ...


def integrity_error(path: str, result: HasErrors) -> SampleError:
    """The :class:`SampleError` (reason ``corrupt_frames``) the caller raises for a failed check."""
    first = result.errors[0] if result.errors else "no error line"
    return SampleError(
        format_error(
            "file",
            path,
            f"has decode errors that FFmpeg would conceal (first: {first})",
            _REPAIR_HINT,
            stage="integrity",
        ),
        reason="corrupt_frames",
    )
