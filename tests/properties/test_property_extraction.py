"""Properties of clip extraction: the windows every sampling mode takes from a video.

For any video length, any 4k+1 bucket it fills, any ``clips_per_video`` and ``stride``, and any
(seed, epoch, key): every window lies inside the available frames and has the bucket's length;
``overlapping`` covers the video (the first window starts at 0, the last ends at its end);
``slide`` windows are ``stride`` frames apart; and the windows are the same on every call (the
only randomness is :func:`sample_rng`, seeded by SHA-256, so also in every process). The
``plan_clips`` properties check the same through the planner, with ``frame_stride`` at native
rate.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from wan_data.config.clips import SamplingConfig
from wan_data.items import Probed, Source, VideoMetadata
from wan_data.media.sampling import SAMPLING_MODES, choose_frame_bucket, clip_starts, sample_rng
from wan_data.planning.clips import DecodeOptions, plan_clips

EXAMPLES = settings(max_examples=200, deadline=None)

buckets = st.integers(0, 40).map(lambda k: 4 * k + 1)
slack = st.integers(0, 400)
clips = st.integers(0, 12)
strides = st.none() | st.integers(1, 60)
keys = st.text(min_size=1, max_size=20)


def _starts(
    mode: str, available: int, frames: int, n: int, stride: int | None, key: str, epoch: int
) -> list[int]:
    rng = sample_rng(7, epoch, key, "window")
    return clip_starts(available, frames, mode=mode, clips=n, rng=rng, stride=stride)


@EXAMPLES
@given(st.sampled_from(SAMPLING_MODES), buckets, slack, clips, strides, keys, st.integers(0, 99))
def test_windows_inside_and_of_the_bucket_length(
    mode: str, frames: int, extra: int, n: int, stride: int | None, key: str, epoch: int
) -> None:
    available = frames + extra
    starts = _starts(mode, available, frames, n, stride, key, epoch)
    assert starts, "a video that fills the bucket yields at least one window"
    assert starts == sorted(set(starts))  # increasing, no window twice
    for start in starts:
        assert 0 <= start and start + frames <= available
    if mode in ("head", "full", "middle", "random"):
        assert len(starts) == 1


@EXAMPLES
@given(st.sampled_from(SAMPLING_MODES), buckets, slack, clips, strides, keys, st.integers(0, 99))
def test_deterministic(
    mode: str, frames: int, extra: int, n: int, stride: int | None, key: str, epoch: int
) -> None:
    available = frames + extra
    first = _starts(mode, available, frames, n, stride, key, epoch)
    assert first == _starts(mode, available, frames, n, stride, key, epoch)


@EXAMPLES
@given(buckets, slack, clips)
def test_overlapping_covers_the_video(frames: int, extra: int, n: int) -> None:
    available = frames + extra
    starts = clip_starts(available, frames, mode="overlapping", clips=n)
    assert starts[0] == 0
    assert starts[-1] + frames == available
    if extra > 0:
        assert len(starts) >= 2
        # Requested count, bounded by the distinct starts there are.
        wanted = n if n > 0 else -(-available // frames)
        assert len(starts) == min(max(wanted, 2), extra + 1)
    if n == 0 or n >= -(-available // frames):
        # Enough windows to cover: no gap, every frame lies in some window.
        assert all(b <= a + frames for a, b in itertools.pairwise(starts))


@EXAMPLES
@given(buckets, slack, clips, strides)
def test_slide_stride_spacing(frames: int, extra: int, n: int, stride: int | None) -> None:
    available = frames + extra
    starts = clip_starts(available, frames, mode="slide", clips=n, stride=stride)
    step = frames if stride is None else stride
    assert starts[0] == 0
    assert all(b - a == step for a, b in itertools.pairwise(starts))
    if n > 0:
        assert len(starts) <= n
    if n == 0 or len(starts) < n:
        assert starts[-1] + step + frames > available  # no further window fits


@EXAMPLES
@given(buckets, slack)
def test_full_is_head(frames: int, extra: int) -> None:
    available = frames + extra
    assert clip_starts(available, frames, mode="full") == clip_starts(
        available, frames, mode="head"
    )


def _video(frame_count: int, key: str) -> Probed:
    meta = VideoMetadata(
        width=64,
        height=48,
        fps=24.0,
        duration=frame_count / 24.0,
        frame_count=frame_count,
        format="mp4",
        codec="h264",
        media_type="video",
    )
    return Probed(
        source=Source(key=key, path="/nonexistent/" + key, media_type="video"), metadata=meta
    )


@EXAMPLES
@given(
    st.sampled_from(SAMPLING_MODES),
    st.integers(1, 600),
    st.integers(1, 6),
    clips,
    strides,
    keys,
    st.integers(0, 20),
)
def test_plan_native_frame_stride(
    mode: str, count: int, frame_stride: int, n: int, stride: int | None, key: str, epoch: int
) -> None:
    frame_buckets = (5, 17, 33, 81)
    options = DecodeOptions(
        frames=frame_buckets,
        fps=None,
        buckets=((64, 48),),
        sampling=mode,
        clips_per_video=n,
        stride=stride,
        frame_stride=frame_stride,
        seed=3,
    )
    available = (count - 1) // frame_stride + 1
    bucket = choose_frame_bucket(available, frame_buckets)
    if bucket is None:
        return  # too_short: covered by the decode tests
    item = _video(count, key)
    plans = plan_clips(item, options, epoch)
    assert plans == plan_clips(item, options, epoch)
    for plan in plans:
        assert plan.indices is not None and plan.bucket.frames == bucket
        assert len(plan.indices) == bucket
        assert plan.indices[0] % frame_stride == 0
        assert all(b - a == frame_stride for a, b in itertools.pairwise(plan.indices))
        assert 0 <= plan.indices[0] and plan.indices[-1] < count


def test_sampling_config_validates_the_new_options() -> None:
    import pytest

    from wan_data.errors import ConfigError

    assert SamplingConfig(sampling="slide", stride=4, frame_stride=2).stride == 4
    for bad in ({"stride": 0}, {"frame_stride": 0}, {"frame_stride": 1.5}, {"stride": "x"}):
        with pytest.raises(ConfigError):
            SamplingConfig(**bad)  # type: ignore[arg-type]
