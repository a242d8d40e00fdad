"""Property: served frame times, for any constant source rate and any container time base.

For a source at a constant rate ``r`` at or above the target rate ``f``, stored in a container
whose time base rounds every frame time (Matroska's 1 ms, MP4's 1/15360 s, MPEG-TS's 1/90000 s,
or any base up to a quarter of a source frame), and for any window the planner may choose
(:func:`available_frames`): the frames the decoder serves — the frame shown at each request of
:func:`frame_request_times`, repeats replaced by :func:`distinct_frames` exactly as
``decode._fetch`` does — have strictly increasing times, consecutive gaps within one source
frame of ``1/f``, and each lies within one source frame of its grid point. When ``r == f`` every
source frame of the window is served exactly once.

The decoder is simulated by its contract (``get_frame_played_at(t)`` returns the last frame whose
stored time is at or before ``t``), so thousands of rate/time-base pairs run in seconds; the
media tests of tests/test_decode_exact.py check the same rule through torchcodec on real files.
"""

from __future__ import annotations

import itertools
import math

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from wan_data.media.sampling import (
    END_ROUNDING_SECONDS,
    TOLERANCE_FRACTION,
    available_frames,
    distinct_frames,
    expects_distinct_frames,
    frame_request_times,
    frame_shown_at,
    sampling_period,
)

TIME_BASES = (1 / 1000, 1 / 15360, 1 / 90000, 1 / 12800, 1 / 600)


def _container(rate: float, count: int, begin: float, base: float) -> tuple[list[float], float]:
    """Stored frame times of a constant-rate stream and its end, rounded to the time base."""
    pts = [round((begin + k / rate) / base) * base for k in range(count)]
    last = round(1 / rate / base) * base
    return pts, pts[-1] + last


@st.composite
def streams(draw: st.DrawFn) -> tuple[float, float, list[float], float, float]:
    target = draw(st.sampled_from([16.0, 24.0, 12.0, 30.0]) | st.floats(8.0, 60.0))
    same = draw(st.booleans())
    rate = target if same else draw(st.floats(target, 4 * target))
    base = draw(st.sampled_from(TIME_BASES) | st.floats(1e-6, 0.25 / rate))
    # Up to a quarter source frame (1 ms holds rates up to 250 fps): frame times and the
    # stream's start each round by up to half a base, so a coarser base can move a frame by
    # more than the request tolerance (TOLERANCE_FRACTION of a frame).
    assume(base <= 0.25 / rate)
    count = draw(st.integers(2, 240))
    begin = draw(st.sampled_from([0.0, 1.4]) | st.floats(0.0, 5.0))
    pts, end = _container(rate, count, begin, base)
    assume(all(b > a for a, b in itertools.pairwise(pts)))
    return target, rate, pts, end, base


@settings(max_examples=300, deadline=None)
@given(stream=streams(), data=st.data())
def test_served_frames_are_increasing_and_evenly_spaced(
    stream: tuple[float, float, list[float], float, float], data: st.DataObject
) -> None:
    target, rate, pts, end, base = stream
    begin = pts[0]
    duration = end - begin
    average = len(pts) / duration  # what the probe reports as the source's fps
    available = available_frames(duration, target, source_fps=average)
    assume(available >= 1)
    frames = data.draw(st.integers(1, available), label="frames")
    start = data.draw(st.integers(0, available - frames), label="start")
    requests = frame_request_times(
        begin, start, frames, target, source_fps=average, end_seconds=end
    )
    period = sampling_period(target, average, duration)

    def fetch(t: float) -> tuple[float, float, int]:
        k = frame_shown_at(pts, t)
        assert k >= 0, ("request before the first frame", t, begin)
        following = pts[k + 1] if k + 1 < len(pts) else end
        return pts[k], following - pts[k], k

    served = [fetch(t) for t in requests]
    if expects_distinct_frames(target, average):
        served, _ = distinct_frames(served, period=period, end_seconds=end, fetch=fetch)
    times = [s[0] for s in served]
    # One source frame, give or take the time base's rounding at both ends and the clip end's
    # rounding (END_ROUNDING_SECONDS: a 5.0 s Matroska clip may end at 4.999 s).
    source_frame = 1 / rate + 2 * base + END_ROUNDING_SECONDS
    # Each request sits TOLERANCE_FRACTION of a source frame past its grid point, so a served
    # frame starts within one frame before that; but a last request past the clip's end is
    # pulled back inside it (and still shows the frame on screen at its grid time), losing
    # the offset. Two neighbours can then differ by that fraction more than one frame
    # (found by Hypothesis: 74.5 fps into 24 fps, a clip ending 0.8 ms after the last grid
    # point, frames 25 and 27 served for grid times 1/3 s and 0.375 s).
    gap_tolerance = source_frame + TOLERANCE_FRACTION / rate
    assert all(b > a for a, b in itertools.pairwise(times)), times
    for a, b in itertools.pairwise(times):
        assert abs((b - a) - 1 / target) <= gap_tolerance + 1e-9, (a, b)
    for i, t in enumerate(times):
        grid = begin + (start + i) / target
        assert abs(t - grid) <= source_frame + 1e-9, (i, t, grid)
    if math.isclose(rate, target):
        indices = [s[2] for s in served]
        assert indices == list(range(indices[0], indices[0] + frames))
