"""Pure functions for frame selection: which frames of a video make a clip.

Frames are chosen by presentation time at a target fps (``get_frames_played_at``), never by
"every n-th frame" from the header's average fps, because that is wrong for variable frame rate
sources. All randomness comes from :func:`sample_rng`, seeded by (seed, epoch, key) with a stable
hash, so what a file produces depends on nothing else: not the worker it lands on, not the other
files in the dataset.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import random
from collections.abc import Callable, Sequence
from typing import TypeVar

from wan_data.errors import format_error
from wan_data.items import VideoMetadata

__all__ = [
    "END_ROUNDING_SECONDS",
    "SAMPLING_MODES",
    "TOLERANCE_FRACTION",
    "available_frames",
    "check_frame_buckets",
    "choose_frame_bucket",
    "clip_starts",
    "count_repeats",
    "distinct_frames",
    "expected_repeated_fraction",
    "expects_distinct_frames",
    "frame_request_times",
    "frame_shown_at",
    "frame_time_problems",
    "frames_available",
    "next_frame_request",
    "sample_rng",
    "sampling_period",
    "split_unused_frames",
    "time_tolerance",
]

SAMPLING_MODES = ("head", "random", "uniform", "chunks", "middle", "slide", "overlapping", "full")
T = TypeVar("T")
# The coarsest time base in common use (Matroska/WebM): a clip's end may be stored this early.
END_ROUNDING_SECONDS = 1e-3
_EPS = 1e-6


def sample_rng(seed: int, epoch: int, key: str, purpose: str = "") -> random.Random:
    """A generator seeded by (seed, epoch, key, purpose) through SHA-256.

    Python's ``hash()`` is salted per process, so it would give each DataLoader worker a
    different stream; SHA-256 gives every process the same one.
    """
    raw = f"{seed}\x00{epoch}\x00{key}\x00{purpose}"
    try:
        # surrogateescape: a key from a file name that is not UTF-8 (os.listdir's escapes)
        text = raw.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # another lone surrogate (a str from JSON's "\\ud800"): any
        text = raw.encode("utf-8", "surrogatepass")  # key must seed, never fail the sample
    digest = hashlib.sha256(text).digest()
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


def sampling_period(fps: float, source_fps: float | None, duration_seconds: float) -> float:
    """The source frame period the sampler reasons in: ``min(1/source_fps, 1/fps, duration)``.

    Above the target rate a source frame is shorter than a target frame, so the tolerances are
    fractions of the source frame; below it (upsampling, where repeats are inevitable) they are
    fractions of the target frame. A clip shorter than one frame bounds both.
    """
    period = 1.0 / fps
    if source_fps is not None and source_fps > 0:
        period = min(period, 1.0 / source_fps)
    if duration_seconds > 0:
        period = min(period, duration_seconds)
    return period


# A request sits this fraction of a source frame past its grid point. About a quarter, but not
# exactly: with a quarter, grid points whose phase against the source is 3/4 (every fourth
# point of 25 -> 16 fps, 30 -> 24 fps, 30 -> 16 fps...) land exactly on a frame boundary, and
# container rounding then decides the frame. 25/96 is half-way between multiples of 1/48, so
# no grid point of any rate pair whose phases are multiples of 1/16 or 1/24 is ever on one.
TOLERANCE_FRACTION = 25 / 96


def time_tolerance(period: float) -> float:
    """How far a frame request is placed past its grid point: ~a quarter of a source frame.

    Containers store times in their own time base: Matroska/WebM round to 1 ms, so a frame at
    1/16 s is stored as 0.063 s and a request at 0.0625 s would still see the previous frame.
    A quarter frame (16 ms at 16 fps, 2 ms at 120 fps) is far above any time base rounding
    and far below the next frame (see :data:`TOLERANCE_FRACTION` for the exact value).
    """
    return period * TOLERANCE_FRACTION


def available_frames(
    duration_seconds: float, fps: float, *, source_fps: float | None = None
) -> int:
    """How many frames at ``fps`` a video of ``duration_seconds`` can give without a repeat.

    Grid point ``i`` (time ``i / fps`` from the start) counts when it lies inside the video,
    up to its very end within the container's rounding (:data:`END_ROUNDING_SECONDS`): 81
    frames at 16 fps span exactly 5.0 s from first to last, so a 5.0 s clip fills them (the last
    grid point shows the source's last frame). When the source is at least as fast as the
    target, the last grid point must also fall past the start of the source's last frame plus
    the tolerance, or it would show the same frame as the point before it (``source_fps=None``
    assumes a source at the target rate, the strictest case).

    Pure: the probe, the planner, the scan and the decoder all count with it.
    """
    if not duration_seconds > 0 or not fps > 0 or not math.isfinite(duration_seconds):
        return 0
    period = sampling_period(fps, source_fps, duration_seconds)
    tau = time_tolerance(period)
    # i / fps <= duration + rounding  and  i / fps < duration - period - tau + 1 / fps
    by_end = math.floor((duration_seconds + min(tau, END_ROUNDING_SECONDS)) * fps + _EPS)
    by_last = math.ceil((duration_seconds - period - tau) * fps + 1.0 - _EPS) - 1
    return max(0, min(by_end, by_last) + 1)


def frames_available(meta: VideoMetadata, fps: float | None, frame_stride: int = 1) -> int:
    """Target frames a source offers at ``fps``, counted as the clip planner counts them
    (``plan_clips``): native frames with ``fps=None`` (every ``frame_stride``-th one, which
    is ignored with an fps), one for an image."""
    if meta.media_type == "image":
        return 1
    if fps is None:
        n = meta.frame_count
        return (n - 1) // frame_stride + 1 if frame_stride > 1 and n > 0 else n
    return available_frames(meta.duration, fps, source_fps=meta.fps or None)


def split_unused_frames(
    available: int, clip_frames: Sequence[int], largest_bucket: int
) -> tuple[int, int]:
    """``(trimmed_to_bucket, unused_by_sampling)``: why the frames after a video's clips go
    unused, for sampling modes whose clips are consecutive windows from the start (``head``,
    ``chunks``), so that the unused frames are one tail after the last clip.

    The tail has two causes, told apart because they have different remedies:

    - **trimmed to a bucket**: the part of the tail a longer last clip would have covered had
      its length not been rounded down to a 4k+1 frame bucket, i.e. up to the largest bucket.
      This happens when the video is shorter than the largest bucket (a 40-frame video with
      buckets 17, 33, 81 trains 33 frames and loses 7); more bucket sizes recover it.
    - **unused by sampling**: the rest, beyond the reach of any allowed clip length: the last
      clip already has the largest bucket, and the mode takes no further window (``head``
      takes one; ``chunks`` has no whole chunk left, or reached ``clips_per_video``). Another
      mode or a larger bucket recovers it.

    Args:
        available: frames at the target fps (:func:`frames_available`).
        clip_frames: the frame count of each clip taken from the video, in order.
        largest_bucket: the largest frame bucket of the options.
    """
    tail = max(0, available - sum(clip_frames))
    last = clip_frames[-1] if clip_frames else largest_bucket
    trimmed = min(tail, max(0, largest_bucket - last))
    return trimmed, tail - trimmed


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
    stride: int | None = None,
) -> list[int]:
    """Start indices (in target-fps frame units) of the clips taken from one video.

    Every window lies inside ``[0, num_available)``, has ``clip_frames`` frames, and depends
    only on the arguments (``random`` on ``rng``, which :func:`sample_rng` seeds by seed, epoch
    and key), so every process plans the same windows.

    Args:
        num_available: frames available at the target fps.
        clip_frames: frames per clip (the chosen bucket).
        mode: ``head`` (from the start), ``full`` (an alias of ``head``: the bucket is already
            the largest the video fills), ``middle`` (one window, centred), ``random`` (one
            window, uniformly placed), ``uniform`` (``clips`` windows spread evenly over the
            video), ``chunks`` (consecutive non-overlapping windows, at most ``clips`` of them
            when ``clips`` > 0), ``slide`` (a window every ``stride`` frames from the start, at
            most ``clips`` of them when ``clips`` > 0) or ``overlapping`` (``clips`` windows,
            at least 2 when the video is longer than one window, the fewest that cover the
            video when ``clips`` is 0, the first starting at 0 and the last ending at the end).
        clips: windows per video for ``uniform`` and ``overlapping``; cap for ``chunks`` and
            ``slide`` (0 = no cap).
        rng: required for ``random``.
        stride: frames between the starts of ``slide`` windows (``None``: ``clip_frames``, so
            windows do not overlap).
    """
    if clip_frames < 1 or num_available < clip_frames:
        return []
    slack = num_available - clip_frames
    if mode in ("head", "full"):
        return [0]
    if mode == "middle":
        return [slack // 2]
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
    if mode == "slide":
        step = clip_frames if stride is None else stride
        if step < 1:
            raise ValueError(format_error("stride", stride, "must be an int >= 1 or None"))
        starts = range(0, slack + 1, step)
        return list(starts[:clips] if clips > 0 else starts)
    if mode == "overlapping":
        return _overlapping_starts(num_available, clip_frames, clips)
    raise ValueError(format_error("sampling mode", mode, f"must be one of {SAMPLING_MODES}"))


def _overlapping_starts(num_available: int, clip_frames: int, clips: int) -> list[int]:
    """``overlapping`` windows: evenly spread from 0 to ``slack``, so the first starts at the
    video's start and the last ends at its end (integer rounding: the same in every process)."""
    slack = num_available - clip_frames
    if slack == 0:
        return [0]
    count = clips if clips > 0 else -(-num_available // clip_frames)  # fewest that cover
    # At least two (one window cannot reach both ends), at most one per distinct start.
    count = min(max(count, 2), slack + 1)
    # round(i * slack / (count - 1)) with half-up integer rounding; the spacing is >= 1 frame,
    # so the starts are distinct and increasing.
    d = count - 1
    return [(2 * i * slack + d) // (2 * d) for i in range(count)]


def frame_request_times(
    begin_seconds: float,
    start: int,
    count: int,
    fps: float,
    *,
    source_fps: float | None,
    end_seconds: float,
) -> list[float]:
    """The times to ask the decoder for ("the frame shown at t") for ``count`` frames at ``fps``.

    Grid point ``i`` is ``begin + (start + i) / fps``; the request is placed a tolerance past it
    (:func:`time_tolerance`), so a frame whose stored time was rounded a hair late by the
    container (0.063 s for 1/16 s) is still the one shown, and clamped to a tolerance before the
    end, so a grid point at the very end (see :func:`available_frames`) shows the last frame.
    """
    duration = end_seconds - begin_seconds
    period = sampling_period(fps, source_fps, duration)
    tau = time_tolerance(period)
    last = end_seconds - tau
    return [min(begin_seconds + (start + i) / fps + tau, last) for i in range(count)]


def expects_distinct_frames(fps: float, source_fps: float | None) -> bool:
    """Whether a source at ``source_fps`` must give a distinct frame for every target frame.

    A source at least as fast as the target never needs to show one frame twice; a slower
    source must (a 10 fps clip at 16 fps repeats ~38 % of its frames: see
    :func:`repeated_fraction`).
    """
    return source_fps is not None and source_fps >= fps * (1.0 - 1e-3)


def frame_shown_at(pts_seconds: Sequence[float], t: float) -> int:
    """Index of the frame shown at ``t`` among frames with sorted ``pts_seconds`` (-1 before
    the first): what a decoder's "played at" lookup returns, for a sequential decode."""
    return bisect.bisect_right(pts_seconds, t) - 1


def next_frame_request(pts_seconds: float, duration_seconds: float, period: float) -> float:
    """A request time inside the frame after the one at ``pts_seconds`` (for removing a repeat
    that container rounding caused when the source is faster than the target)."""
    return pts_seconds + max(duration_seconds, 0.0) + time_tolerance(period)


def distinct_frames(
    frames: Sequence[tuple[float, float, T]],
    *,
    period: float,
    end_seconds: float,
    fetch: Callable[[float], tuple[float, float, T]],
) -> tuple[list[tuple[float, float, T]], dict[int, float]]:
    """Replace each frame that repeats its predecessor by the frame after that predecessor.

    For a source at least as fast as the target (:func:`expects_distinct_frames`): container
    rounding can stretch one frame just past a target step, so two requests see it. ``frames``
    are ``(pts, duration, payload)`` as decoded; ``fetch(t)`` decodes the frame shown at ``t``.
    Returns the frames and ``{position: new request time}`` for the replaced ones (a repeat
    whose next frame would start past ``end_seconds`` is kept: there is no frame to take).
    """
    out = list(frames)
    asked: dict[int, float] = {}
    for i in range(1, len(out)):
        if out[i][0] > out[i - 1][0]:
            continue
        t = next_frame_request(out[i - 1][0], out[i - 1][1], period)
        if t >= end_seconds:
            break
        out[i] = fetch(t)
        asked[i] = t
    return out, asked


def frame_time_problems(
    requests: Sequence[float],
    pts_seconds: Sequence[float],
    durations: Sequence[float],
    *,
    period: float,
    allow_held: bool = False,
) -> list[int]:
    """Positions whose decoded frame is not the one shown at the requested time.

    A frame at ``p`` lasting ``d`` is shown during ``[p, p + d)``; both ends get the time
    tolerance for container rounding, and a missing or zero duration counts as one source
    frame. Decoders seek wrongly on some containers (MPEG-TS), returning a frame seconds away
    with its own, correct time: this check is what refuses to serve it.

    With ``allow_held`` a frame that started before its request is accepted however long ago:
    torchcodec reports nominal durations (1/30 s for a frame a variable-frame-rate file holds
    for 0.23 s), so only a frame *later* than its request proves a wrong seek.
    """
    tau = time_tolerance(period)
    bad = []
    for i, (t, p, d) in enumerate(zip(requests, pts_seconds, durations, strict=True)):
        shown_for = d if d > 0 else period
        if p - tau > t or (not allow_held and t >= p + shown_for + tau):
            bad.append(i)
    return bad


def count_repeats(pts_seconds: Sequence[float]) -> int:
    """How many of a clip's frames repeat the frame before them."""
    return sum(1 for a, b in itertools.pairwise(pts_seconds) if b <= a)


def expected_repeated_fraction(fps: float | None, source_fps: float) -> float:
    """The share of frames a source slower than the target repeats (``1 - source/target``)."""
    if fps is None or source_fps <= 0 or source_fps >= fps:
        return 0.0
    return 1.0 - source_fps / fps
