"""sampling.py: seeded randomness, frame-bucket rules and which frames make a clip."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import random
import subprocess
import sys

import pytest

import wan_data.media.sampling
from wan_data.items import VideoMetadata
from wan_data.media.sampling import (
    SAMPLING_MODES,
    TOLERANCE_FRACTION,
    available_frames,
    check_frame_buckets,
    choose_frame_bucket,
    clip_starts,
    count_repeats,
    expected_repeated_fraction,
    expects_distinct_frames,
    frame_request_times,
    frame_shown_at,
    frame_time_problems,
    frames_available,
    next_frame_request,
    sample_rng,
    sampling_period,
    split_unused_frames,
)

# --- sample_rng -----------------------------------------------------------------------------

# Computed once from SHA-256("42\x000\x00concept/a.mp4\x00"); must never change, or cached
# samples and resumed runs would silently pick other windows.
EXPECTED_FIRST = 0.5674006686570143


def test_sample_rng_hard_coded_value() -> None:
    assert sample_rng(42, 0, "concept/a.mp4").random() == EXPECTED_FIRST


def test_sample_rng_same_in_another_process() -> None:
    # A fresh interpreter with another hash salt. The package's __init__ (torch, torchcodec:
    # seconds) is bypassed by registering a bare package; sampling.py itself is the real one.
    package_dir = os.path.dirname(wan_data.media.sampling.__file__)
    code = (
        "import sys, types\n"
        "pkg = types.ModuleType('wan_data')\n"
        f"pkg.__path__ = [{package_dir!r}]\n"
        "sys.modules['wan_data'] = pkg\n"
        "from wan_data.media.sampling import sample_rng\n"
        "print(repr(sample_rng(42, 0, 'concept/a.mp4').random()))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert float(out.stdout.strip()) == EXPECTED_FIRST


def test_sample_rng_same_args_same_stream() -> None:
    a = sample_rng(7, 3, "k", "crop")
    b = sample_rng(7, 3, "k", "crop")
    assert [a.random() for _ in range(5)] == [b.random() for _ in range(5)]


@pytest.mark.parametrize(
    "other",
    [(8, 3, "k", "crop"), (7, 4, "k", "crop"), (7, 3, "k2", "crop"), (7, 3, "k", "caption")],
)
def test_sample_rng_differs_for_other_args(other: tuple[int, int, str, str]) -> None:
    assert sample_rng(7, 3, "k", "crop").random() != sample_rng(*other).random()


def test_sample_rng_fields_do_not_run_together() -> None:
    # A separator keeps (1, 23) and (12, 3) apart.
    assert sample_rng(1, 23, "k").random() != sample_rng(12, 3, "k").random()


# --- check_frame_buckets --------------------------------------------------------------------


def test_frame_buckets_valid() -> None:
    assert check_frame_buckets([1, 5, 17, 33, 81]) == []
    assert check_frame_buckets((49, 121)) == []
    assert check_frame_buckets(17) == []


@pytest.mark.parametrize("bad", [8, 0, -3, 16, 48, 2.0, True, None])
def test_frame_buckets_rejects_entry(bad: object) -> None:
    problems = check_frame_buckets([17, bad])
    assert len(problems) == 1
    assert f"frame bucket ({bad})" in problems[0]
    assert "4k+1" in problems[0]


def test_frame_buckets_suggests_neighbours() -> None:
    (problem,) = check_frame_buckets([16])
    assert "nearest valid counts: 13 or 17" in problem
    (problem,) = check_frame_buckets([48])
    assert "nearest valid counts: 45 or 49" in problem


@pytest.mark.parametrize("bad", ["17", [], (), None, {17: 1}, 17.0])
def test_frame_buckets_rejects_whole_value(bad: object) -> None:
    problems = check_frame_buckets(bad)
    assert len(problems) == 1
    assert "frames" in problems[0]


def test_frame_buckets_rejects_string_entry() -> None:
    (problem,) = check_frame_buckets(["17"])
    assert "frame bucket ('17')" in problem


def test_frame_buckets_rejects_duplicates() -> None:
    (problem,) = check_frame_buckets([17, 33, 17])
    assert problem == "frames ([17, 33, 17]) must not repeat a count."


def test_frame_buckets_lists_all_problems() -> None:
    problems = check_frame_buckets([8, 0, -3, 16, 17, 17])
    assert len(problems) == 5
    for fragment in ("(8)", "(0)", "(-3)", "(16)", "must not repeat"):
        assert sum(fragment in p for p in problems) == 1, fragment


def test_frame_buckets_unhashable_entry_is_a_problem_not_a_crash() -> None:
    (problem,) = check_frame_buckets([[17]])
    assert "frame bucket ([17])" in problem


# --- available_frames / choose_frame_bucket -------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "fps", "expected"),
    [
        (2.25, 16.0, 36),
        (2.0, 16.0, 32),  # exactly on a frame boundary: 32 frames, not 33
        (0.0, 16.0, 0),
        (2.0, 0.0, 0),
        (-1.0, 16.0, 0),
        (1 / 16, 16.0, 1),
        (0.01, 16.0, 1),
        (5.0625, 16.0, 81),
        (10.0, 24.0, 240),
        (3.0, 29.97, 90),
        # Float noise: 31 / 30 * 30 == 31.000000000000004, still 31 frames, not 32.
        (31 / 30, 30.0, 31),
        (0.28, 25.0, 7),
    ],
)
def test_available_frames(duration: float, fps: float, expected: int) -> None:
    assert available_frames(duration, fps) == expected


@pytest.mark.parametrize(
    ("frame_count", "frame_stride", "expected"),
    [
        # Every frame_stride-th native frame, the first included: ceil(n / stride).
        (12, 1, 12),
        (12, 2, 6),
        (12, 3, 4),
        (13, 3, 5),  # frames 0, 3, 6, 9, 12
        (12, 12, 1),
        (12, 50, 1),  # a stride past the end still takes the first frame
        (1, 4, 1),
        (0, 1, 0),
        (0, 3, 0),  # no frames: none at any stride
    ],
)
def test_frames_available_natively_counts_every_frame_stride_th_frame(
    frame_count: int, frame_stride: int, expected: int
) -> None:
    meta = VideoMetadata(
        width=64, height=64, fps=24.0, duration=frame_count / 24, frame_count=frame_count,
        format="mp4", codec="h264",
    )  # fmt: skip
    assert frames_available(meta, None, frame_stride) == expected


def test_frames_available_with_an_fps_or_for_an_image_ignores_the_stride() -> None:
    meta = VideoMetadata(
        width=64, height=64, fps=24.0, duration=1.0, frame_count=24, format="mp4", codec="h264"
    )
    assert frames_available(meta, None, 1) == frames_available(meta, None) == 24
    # With an fps the count is the time-based one, whatever the stride (1 s of a 24 fps
    # source fills 17 frames at 16 fps: its last frame ends the clip).
    timed = available_frames(1.0, 16.0, source_fps=24.0)
    assert frames_available(meta, 16.0, 3) == frames_available(meta, 16.0) == timed == 17
    image = dataclasses.replace(meta, media_type="image", fps=0.0, duration=0.0, frame_count=1)
    assert frames_available(image, None, 3) == frames_available(image, 16.0) == 1


@pytest.mark.parametrize(
    ("available", "expected"),
    [(100, 81), (81, 81), (80, 33), (33, 33), (17, 17), (16, 1), (1, 1), (0, None)],
)
def test_choose_frame_bucket(available: int, expected: int | None) -> None:
    assert choose_frame_bucket(available, [1, 17, 33, 81]) == expected


def test_choose_frame_bucket_without_images() -> None:
    assert choose_frame_bucket(16, [17, 33]) is None
    assert choose_frame_bucket(40, [33, 17]) == 33


# --- clip_starts ----------------------------------------------------------------------------


def test_head() -> None:
    assert clip_starts(100, 17, mode="head") == [0]
    assert clip_starts(17, 17, mode="head") == [0]


def test_too_short_or_empty_gives_no_clip() -> None:
    for mode in SAMPLING_MODES:
        assert clip_starts(16, 17, mode=mode, rng=random.Random(0)) == []
        assert clip_starts(10, 0, mode=mode, rng=random.Random(0)) == []


def test_random_within_slack_and_reproducible() -> None:
    starts = [clip_starts(100, 17, mode="random", rng=random.Random(s))[0] for s in range(300)]
    assert min(starts) >= 0
    assert max(starts) <= 83
    assert len(set(starts)) > 50  # actually spread, not a constant
    assert 0 in starts and 83 in starts  # both ends reachable
    again = [clip_starts(100, 17, mode="random", rng=random.Random(s))[0] for s in range(300)]
    assert starts == again


def test_random_exact_fit_is_zero() -> None:
    assert clip_starts(17, 17, mode="random", rng=random.Random(5)) == [0]


def test_random_needs_rng() -> None:
    with pytest.raises(ValueError, match="rng"):
        clip_starts(100, 17, mode="random")


def test_uniform_spread() -> None:
    assert clip_starts(100, 17, mode="uniform", clips=4) == [0, 28, 55, 83]
    assert clip_starts(100, 17, mode="uniform", clips=2) == [0, 83]


def test_uniform_one_clip_is_centred() -> None:
    assert clip_starts(100, 17, mode="uniform", clips=1) == [41]
    assert clip_starts(101, 17, mode="uniform", clips=1) == [42]
    assert clip_starts(100, 17, mode="uniform", clips=0) == [41]


def test_uniform_never_repeats_a_window() -> None:
    starts = clip_starts(20, 17, mode="uniform", clips=10)
    assert starts == [0, 1, 2, 3]


def test_chunks_consecutive_non_overlapping() -> None:
    assert clip_starts(100, 17, mode="chunks", clips=0) == [0, 17, 34, 51, 68]  # 0: no cap
    assert clip_starts(100, 17, mode="chunks", clips=2) == [0, 17]
    assert clip_starts(100, 17, mode="chunks") == [0]  # default cap: one clip
    assert clip_starts(100, 17, mode="chunks", clips=99) == [0, 17, 34, 51, 68]
    assert clip_starts(33, 33, mode="chunks", clips=0) == [0]
    starts = clip_starts(1000, 33, mode="chunks", clips=0)
    assert len(starts) == 30
    assert all(b - a == 33 for a, b in itertools.pairwise(starts))
    assert starts[-1] + 33 <= 1000


def test_unknown_mode() -> None:
    with pytest.raises(ValueError, match="sampling mode"):
        clip_starts(100, 17, mode="tail")


def test_full_is_head() -> None:
    # The bucket is already the largest the video fills, so the whole available length up to
    # that bucket from frame 0 is exactly what head takes.
    for n in (17, 40, 100, 1000):
        assert clip_starts(n, 17, mode="full") == clip_starts(n, 17, mode="head") == [0]


def test_middle_is_centred() -> None:
    assert clip_starts(100, 17, mode="middle") == [41]
    assert clip_starts(101, 17, mode="middle") == [42]
    assert clip_starts(17, 17, mode="middle") == [0]
    assert clip_starts(100, 17, mode="middle", clips=5) == [41]  # always one window


def test_slide_default_stride_is_the_window() -> None:
    assert clip_starts(100, 17, mode="slide", clips=0) == [0, 17, 34, 51, 68]
    assert clip_starts(100, 17, mode="slide", clips=0) == clip_starts(
        100, 17, mode="chunks", clips=0
    )


def test_slide_stride_and_cap() -> None:
    assert clip_starts(100, 17, mode="slide", clips=0, stride=20) == [0, 20, 40, 60, 80]
    assert clip_starts(100, 17, mode="slide", clips=0, stride=8)[-1] == 80  # 80 + 17 <= 100
    assert clip_starts(100, 17, mode="slide", clips=2, stride=8) == [0, 8]
    assert clip_starts(100, 17, mode="slide", stride=8) == [0]  # default cap: one clip
    assert clip_starts(17, 17, mode="slide", clips=0, stride=1) == [0]
    with pytest.raises(ValueError, match="stride"):
        clip_starts(100, 17, mode="slide", stride=0)


def test_overlapping_covers_from_start_to_end() -> None:
    assert clip_starts(100, 17, mode="overlapping", clips=1) == [0, 83]  # at least two
    assert clip_starts(100, 17, mode="overlapping", clips=3) == [0, 42, 83]
    # 0: the fewest windows that cover the video (diffusion-pipe's multiple_overlapping).
    assert clip_starts(100, 17, mode="overlapping", clips=0) == [0, 17, 33, 50, 66, 83]
    assert clip_starts(17, 17, mode="overlapping", clips=4) == [0]  # one window is the video
    assert clip_starts(19, 17, mode="overlapping", clips=9) == [0, 1, 2]  # distinct starts


def test_new_modes_are_listed() -> None:
    for mode in ("middle", "slide", "overlapping", "full"):
        assert mode in SAMPLING_MODES


# --- frame_request_times -------------------------------------------------------------------


def test_frame_request_times_sit_a_quarter_frame_past_the_grid() -> None:
    times = frame_request_times(0.5, 2, 5, 16.0, source_fps=16.0, end_seconds=10.0)
    assert len(times) == 5
    assert times[0] == pytest.approx(0.5 + 2 / 16 + TOLERANCE_FRACTION / 16)
    assert 0.25 < TOLERANCE_FRACTION < 0.27
    for a, b in itertools.pairwise(times):
        assert b - a == pytest.approx(1 / 16, abs=1e-9)


def test_frame_request_times_absorb_millisecond_rounding() -> None:
    # Matroska stores frame i of a 16 fps clip at round(i * 62.5 ms): 0.063 s for 1/16 s. A
    # request 1 us past the grid point (the old rule) saw frame i - 1 for every odd i.
    pts = [round(i / 16, 3) for i in range(80)]
    times = frame_request_times(0.0, 0, 80, 16.0, source_fps=16.0, end_seconds=5.0)
    assert [frame_shown_at(pts, t) for t in times] == list(range(80))


def test_frame_request_times_clamp_the_last_grid_point_into_the_last_frame() -> None:
    # 5.0 s at 24 fps into 81 frames at 16 fps: grid point 80 is 5.0 s, the very end.
    times = frame_request_times(0.0, 0, 81, 16.0, source_fps=24.0, end_seconds=5.0)
    pts = [i / 24 for i in range(120)]
    chosen = [frame_shown_at(pts, t) for t in times]
    assert chosen[-1] == 119 and chosen[-2] == 118
    assert times[-1] < 5.0


@pytest.mark.parametrize(("rate", "target"), [(25, 16), (30, 16), (30, 24), (60, 16), (24, 16)])
def test_no_request_lands_on_a_frame_boundary(rate: int, target: int) -> None:
    # Requests exactly on a boundary leave the frame to the container's rounding.
    times = frame_request_times(0.0, 0, 97, target, source_fps=rate, end_seconds=100.0)
    for t in times:
        phase = (t * rate) % 1.0
        assert min(phase, 1 - phase) > 0.005, (t, phase)


def test_frame_request_times_empty() -> None:
    assert frame_request_times(0.0, 0, 0, 16.0, source_fps=None, end_seconds=1.0) == []


@pytest.mark.parametrize(
    ("duration", "fps", "source_fps", "expected"),
    [
        (5.0, 16.0, 24.0, 81),  # 81 frames at 16 fps span exactly 5.0 s
        (5.0, 16.0, 25.0, 81),
        (5.0, 16.0, 30.0, 81),
        (4.999, 16.0, 24.0, 81),  # Matroska's rounding of the same 5.0 s
        (5.0, 16.0, 16.0, 80),  # 80 source frames at the target rate: 80, never a repeat
        (5.0625, 16.0, 16.0, 81),
        (5.0, 24.0, 24.0, 120),
        (3.0, 16.0, 10.0, 48),
        (0.0, 16.0, 24.0, 0),
        (float("nan"), 16.0, 24.0, 0),
    ],
)
def test_available_frames_with_source_rate(
    duration: float, fps: float, source_fps: float, expected: int
) -> None:
    assert available_frames(duration, fps, source_fps=source_fps) == expected


def test_sampling_period() -> None:
    assert sampling_period(16.0, 24.0, 5.0) == pytest.approx(1 / 24)
    assert sampling_period(16.0, 10.0, 5.0) == pytest.approx(1 / 16)
    assert sampling_period(16.0, None, 0.01) == pytest.approx(0.01)


def test_expects_distinct_frames() -> None:
    assert expects_distinct_frames(16.0, 16.0)
    assert expects_distinct_frames(16.0, 24.0)
    assert not expects_distinct_frames(16.0, 10.0)
    assert not expects_distinct_frames(16.0, None)


def test_frame_shown_at() -> None:
    pts = [0.0, 0.1, 0.2]
    assert frame_shown_at(pts, -0.01) == -1
    assert frame_shown_at(pts, 0.0) == 0
    assert frame_shown_at(pts, 0.15) == 1
    assert frame_shown_at(pts, 5.0) == 2


def test_next_frame_request_lands_inside_the_next_frame() -> None:
    t = next_frame_request(0.063, 0.0625, 0.0625)
    assert 0.125 < t < 0.1875


def test_frame_time_problems() -> None:
    period = 1 / 16
    requests = [0.0 + period / 4, 1 / 16 + period / 4, 2 / 16 + period / 4]
    assert frame_time_problems(requests, [0.0, 0.063, 0.125], [period] * 3, period=period) == []
    # An MPEG-TS seek that landed four frames late: frame 24 served for frame 20.
    assert frame_time_problems(requests, [0.0, 0.063, 1.5], [period] * 3, period=period) == [2]
    # A frame far before the request (its display ended long ago) is wrong too.
    assert frame_time_problems(requests, [0.0, 0.063, 0.0], [period] * 3, period=period) == [2]
    # A missing duration counts as one source frame.
    assert frame_time_problems(requests[:1], [0.0], [0.0], period=period) == []
    # A held frame (variable frame rate; the container's duration is nominal) is accepted only
    # when asked to; a frame later than its request never is.
    assert frame_time_problems(requests, [0.0, 0.0, 0.0], [period] * 3, period=period) == [2]
    held = frame_time_problems(
        requests, [0.0, 0.0, 0.0], [period] * 3, period=period, allow_held=True
    )
    assert held == []
    late = frame_time_problems(
        requests, [0.0, 0.063, 1.5], [period] * 3, period=period, allow_held=True
    )
    assert late == [2]


def test_repeated_fraction() -> None:
    assert count_repeats([]) == 0
    assert count_repeats([0.0, 0.1, 0.2]) == 0
    assert count_repeats([0.0, 0.0, 0.1, 0.1, 0.1]) == 3
    assert expected_repeated_fraction(16.0, 10.0) == pytest.approx(0.375)
    assert expected_repeated_fraction(16.0, 24.0) == 0.0
    assert expected_repeated_fraction(None, 10.0) == 0.0


@pytest.mark.parametrize(
    ("available", "clips", "largest", "expected"),
    [
        (40, [33], 81, (7, 0)),  # shorter than the largest bucket: rounded down to 33
        (40, [33], 33, (0, 7)),  # the clip is as long as allowed: head leaves the rest
        (100, [81], 81, (0, 19)),
        (170, [81], 81, (0, 89)),  # head: everything after its one window
        (170, [81, 81], 81, (0, 8)),  # chunks: the remainder
        (70, [33, 33], 81, (4, 0)),  # chunks: the last chunk could have been 37 long
        (33, [33], 81, (0, 0)),
        (0, [], 81, (0, 0)),
    ],
)
def test_split_unused_frames(
    available: int, clips: list[int], largest: int, expected: tuple[int, int]
) -> None:
    assert split_unused_frames(available, clips, largest) == expected


def test_sample_rng_seeds_from_any_key_and_keeps_escaped_file_names_stable() -> None:
    """A key holding any lone surrogate seeds a generator (never a failed sample), and a key from
    a non-UTF-8 file name (os.listdir's surrogateescape) keeps the stream it always had."""

    for key in ("\ud800#0", "a\udfffb", "plain"):
        assert sample_rng(0, 1, key).random() == sample_rng(0, 1, key).random()
    assert sample_rng(0, 1, "\ud800").random() != sample_rng(0, 1, "\ud801").random()
    escaped = b"caf\xe9.mp4".decode("utf-8", "surrogateescape")
    expected = hashlib.sha256(b"0\x001\x00caf\xe9.mp4\x00").digest()
    assert (
        sample_rng(0, 1, escaped).random()
        == random.Random(int.from_bytes(expected[:8], "big")).random()
    )
