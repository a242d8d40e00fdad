"""Pure functions for frame selection: which frames of a video make a clip.

Frames are chosen by presentation time at a target fps (``get_frames_played_at``), never by
"every n-th frame" from the header's average fps, because that is wrong for variable frame rate
sources. All randomness comes from :func:`sample_rng`, seeded by (seed, epoch, key) with a stable
hash, so what a file produces depends on nothing else: not the worker it lands on, not the other
files in the dataset.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence

from .errors import format_error

__all__ = [
    "SAMPLING_MODES",
    "available_frames",
    "check_frame_buckets",
    "choose_frame_bucket",
    "clip_starts",
    "frame_timestamps",
    "sample_rng",
]

SAMPLING_MODES = ("head", "random", "uniform", "chunks")
_EPS = 1e-6


def sample_rng(seed: int, epoch: int, key: str, purpose: str = "") -> random.Random:
    """A generator seeded by (seed, epoch, key, purpose) through SHA-256.

    Python's ``hash()`` is salted per process, so it would give each DataLoader worker a
    different stream; SHA-256 gives every process the same one.
    """
    digest = hashlib.sha256(f"{seed}\x00{epoch}\x00{key}\x00{purpose}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def check_frame_buckets(frames: object) -> list[str]:
    """Configuration problems of a frame-bucket list (empty when valid).

    Wan's VAE compresses time 4x causally, so clips must have 4k+1 frames; diffusers silently
    drops the extra frames of any other count, which is why anything else is refused here.
    """
    if isinstance(frames, int):
        frames = [frames]
    if not isinstance(frames, Sequence) or isinstance(frames, str) or not frames:
        return [
            format_error(
                "frames",
                frames,
                "must be a non-empty list of 4k+1 counts",
                "e.g. frames=[17, 33, 81]",
            )
        ]
    problems = []
    for f in frames:
        if not isinstance(f, int) or isinstance(f, bool) or f < 1 or (f - 1) % 4:
            near = ""
            if isinstance(f, int) and f > 1:
                lo = (f - 1) // 4 * 4 + 1
                near = f"nearest valid counts: {lo} or {lo + 4}"
            problems.append(
                format_error(
                    "frame bucket",
                    f,
                    "must be a 4k+1 count (1, 5, 9, ..., 49, 81, 121)",
                    near or "Wan's VAE compresses time 4x and needs 4k+1 frames",
                )
            )
    # Compared with ==, not through a set: an unhashable entry (a nested list) is a problem to
    # report, not a TypeError to crash on.
    seen: list[object] = []
    for f in frames:
        if f in seen:
            problems.append(format_error("frames", list(frames), "must not repeat a count"))
            break
        seen.append(f)
    return problems


def available_frames(duration_seconds: float, fps: float) -> int:
    """How many frames at ``fps`` fit in ``duration_seconds``: times begin + i/fps < end."""
    if duration_seconds <= 0 or fps <= 0:
        return 0
    return max(0, math.ceil(duration_seconds * fps - _EPS))


def choose_frame_bucket(num_available: int, frames: Sequence[int]) -> int | None:
    """The largest frame bucket a video can fill, or ``None`` when it is too short for all."""
    fitting = [f for f in frames if f <= num_available]
    return max(fitting) if fitting else None


def clip_starts(
    num_available: int,
    clip_frames: int,
    *,
    mode: str,
    clips: int = 1,
    rng: random.Random | None = None,
) -> list[int]:
    """Start indices (in target-fps frame units) of the clips taken from one video.

    Args:
        num_available: frames available at the target fps.
        clip_frames: frames per clip (the chosen bucket).
        mode: ``head`` (from the start), ``random`` (one window, uniformly placed),
            ``uniform`` (``clips`` windows spread evenly over the video) or ``chunks``
            (consecutive non-overlapping windows, at most ``clips`` of them when ``clips`` > 0).
        clips: windows per video for ``uniform``; cap for ``chunks`` (0 = no cap).
        rng: required for ``random``.
    """
    if clip_frames < 1 or num_available < clip_frames:
        return []
    slack = num_available - clip_frames
    if mode == "head":
        return [0]
    if mode == "random":
        if rng is None:
            raise ValueError(format_error("rng", None, "is required for mode 'random'"))
        return [rng.randint(0, slack)]
    if mode == "uniform":
        n = max(1, clips)
        if n == 1:
            return [slack // 2]
        return sorted({round(i * slack / (n - 1)) for i in range(n)})
    if mode == "chunks":
        count = num_available // clip_frames
        if clips > 0:
            count = min(count, clips)
        return [i * clip_frames for i in range(count)]
    raise ValueError(format_error("sampling mode", mode, f"must be one of {SAMPLING_MODES}"))


def frame_timestamps(begin_seconds: float, start: int, count: int, fps: float) -> list[float]:
    """Presentation times of ``count`` frames at ``fps`` starting at frame ``start``.

    Each time is nudged a microsecond past the grid point so that float rounding of
    ``i / fps`` never lands a hair before the frame boundary and picks the previous frame.
    """
    return [begin_seconds + (start + i) / fps + _EPS for i in range(count)]
