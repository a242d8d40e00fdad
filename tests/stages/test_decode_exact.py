"""decode.py: the exact source frames, on every container and rate (issue "Exact frames").

Every video here is made by ``media.make_indexed_video``: frame ``n`` shows ``n`` in binary, so
each test reads back *which* source frame was served, not just that something was.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
from pathlib import Path

import pytest
from media import INDEX_HEIGHT, INDEX_WIDTH, _has_encoder, frame_index, make_indexed_video

from wan_data.failures.mechanism import StageContext
from wan_data.failures.policy import ErrorPolicy
from wan_data.items import Clip, Failed, Probed, Source
from wan_data.media.sampling import TOLERANCE_FRACTION, available_frames
from wan_data.stages.decode import SEQUENTIAL_CONTAINERS, DecodeOptions, decode
from wan_data.stages.probe import probe_metadata

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")

BUCKET = ((INDEX_WIDTH, INDEX_HEIGHT),)


def _probed(path: Path) -> Probed:
    source = Source(key=path.name, path=str(path), media_type="video")
    return Probed(source=source, metadata=probe_metadata(source))


def _decode(item: Probed, options: DecodeOptions) -> list[Clip | Failed]:
    return list(decode([item], policy=ErrorPolicy(), options=options, context=StageContext()))


def _served(item: Probed, options: DecodeOptions) -> list[list[int]]:
    out = _decode(item, options)
    assert all(isinstance(o, Clip) for o in out), out
    return [[frame_index(f) for f in o.pixels] for o in out if isinstance(o, Clip)]


def _shown(i: int, fps: float, source_fps: float, count: int) -> int:
    """The source frame on screen at grid point ``i``: time ``i / fps`` plus the quarter-frame
    tolerance, the last grid point at the very end showing the last frame."""
    period = min(1 / fps, 1 / source_fps)
    return min(count - 1, math.floor((i / fps + period * TOLERANCE_FRACTION) * source_fps))


# --- 1. millisecond time bases: every frame once when the rates match --------------------------


@pytest.mark.parametrize(
    ("suffix", "codec", "rate"),
    [
        (".webm", "libvpx-vp9", 16.0),
        (".mkv", "libx264", 24.0),
        (".mkv", "libx264", 16.0),
        (".webm", "libvpx-vp9", 30.0),
        (".mp4", "libx264", 16.0),
    ],
)
def test_matching_rates_serve_every_source_frame_exactly_once(
    tmp_path: Path, suffix: str, codec: str, rate: float
) -> None:
    if not _has_encoder(codec):
        pytest.skip(f"ffmpeg lacks {codec}")
    path = tmp_path / f"clip{suffix}"
    make_indexed_video(path, fps=rate, num_frames=int(rate * 3), codec=codec)
    item = _probed(path)
    frames = int(rate * 3) // 4 * 4 + 1 - 4  # the largest 4k+1 that fits, minus one step
    options = DecodeOptions(frames=(frames,), fps=rate, buckets=BUCKET, sampling="chunks")
    clips = _served(item, options)
    assert clips and clips[0] == list(range(frames))
    for clip in clips:
        assert clip == list(range(clip[0], clip[0] + frames))


@pytest.mark.parametrize(
    ("suffix", "codec", "rate", "target"),
    [
        (".webm", "libvpx-vp9", 30.0, 16.0),
        (".mkv", "libx264", 24.0, 16.0),
        (".webm", "libvpx-vp9", 24.0, 24.0),
        (".mkv", "libx264", 25.0, 24.0),
        (".mkv", "libx264", 30.0, 24.0),
    ],
)
def test_faster_sources_never_repeat_a_frame(
    tmp_path: Path, suffix: str, codec: str, rate: float, target: float
) -> None:
    if not _has_encoder(codec):
        pytest.skip(f"ffmpeg lacks {codec}")
    count = int(rate * 3)
    path = tmp_path / f"clip{suffix}"
    make_indexed_video(path, fps=rate, num_frames=count, codec=codec)
    item = _probed(path)
    options = DecodeOptions(
        frames=(17,), fps=target, buckets=BUCKET, sampling="chunks", clips_per_video=0
    )
    for clip in _served(item, options):
        assert all(b > a for a, b in itertools.pairwise(clip)), clip
        gaps = {b - a for a, b in itertools.pairwise(clip)}
        assert gaps <= {math.floor(rate / target), math.ceil(rate / target)}, (clip, gaps)


# --- 2. a 5.0 s clip fills 81 frames at 16 fps ----------------------------------------------


@pytest.mark.parametrize("rate", [24.0, 25.0, 30.0])
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_five_second_clips_fill_81_frames(tmp_path: Path, rate: float, suffix: str) -> None:
    count = int(rate * 5)
    path = tmp_path / f"five{suffix}"
    make_indexed_video(path, fps=rate, num_frames=count)
    item = _probed(path)
    assert available_frames(item.metadata.duration, 16.0, source_fps=item.metadata.fps) == 81
    (clip,) = _served(item, DecodeOptions(frames=(49, 81), fps=16.0, buckets=BUCKET))
    assert len(clip) == 81
    assert clip[0] == 0 and clip[-1] == count - 1  # the last frame shown is the source's last
    assert clip == [_shown(i, 16.0, rate, count) for i in range(81)]
    assert len(set(clip)) == 81


def test_a_clip_one_frame_short_of_five_seconds_does_not_fill_81(tmp_path: Path) -> None:
    path = tmp_path / "short.mp4"
    make_indexed_video(path, fps=24.0, num_frames=119)  # 4.958 s
    item = _probed(path)
    assert available_frames(item.metadata.duration, 16.0, source_fps=24.0) == 80
    (clip,) = _served(item, DecodeOptions(frames=(49, 81), fps=16.0, buckets=BUCKET))
    assert len(clip) == 49


# --- 3. MPEG transport streams: right frames or a skip that names the container --------------


@pytest.mark.parametrize("codec", ["libx264", "mpeg2video"])
@pytest.mark.parametrize("rate", [8.0, 16.0, 24.0, 25.0, 30.0])
def test_mpeg_ts_serves_the_frames_shown_at_their_times(
    tmp_path: Path, codec: str, rate: float
) -> None:
    # MPEG-2 in .ts is where torchcodec's seeking fails worst: an 8 fps file was served as one
    # frame four times, a 16 fps one as frame 24 for frame 20 and never frames 0-11.
    if not _has_encoder(codec):
        pytest.skip(f"ffmpeg lacks {codec}")
    count = int(rate * 4)
    path = tmp_path / f"clip_{codec}.ts"
    make_indexed_video(path, fps=rate, num_frames=count, codec=codec, extra=["-g", "12"])
    item = _probed(path)
    assert item.metadata.begin_seconds > 1.0  # MPEG-TS starts at ~1.4 s
    options = DecodeOptions(
        frames=(17,), fps=16.0, buckets=BUCKET, sampling="chunks", clips_per_video=0
    )
    clips = _served(item, options)
    assert len(clips) == available_frames(item.metadata.duration, 16.0, source_fps=rate) // 17
    for n, clip in enumerate(clips):
        start = n * 17
        assert clip == [_shown(start + i, 16.0, rate, count) for i in range(17)], (n, clip)
        if rate >= 16.0:
            assert len(set(clip)) == 17  # consecutive frames of a changing pattern differ


def test_ts_family_is_decoded_sequentially() -> None:
    assert {"ts", "m2ts", "mts"} <= SEQUENTIAL_CONTAINERS


def test_unreachable_ts_frames_are_skipped_with_the_container_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "clip.ts"
    make_indexed_video(path, fps=16.0, num_frames=64, extra=["-g", "12"])
    item = _probed(path)
    # A stream whose first frames never decode (what seeking into the first GOP of an MPEG-2
    # transport stream gives): the planned times before the first frame cannot be served.
    from dataclasses import replace

    early = replace(item.metadata, begin_seconds=item.metadata.begin_seconds - 1.0)
    early = replace(early, duration=early.duration + 1.0)
    out = _decode(Probed(item.source, early), DecodeOptions(frames=(17,), fps=16.0, buckets=BUCKET))
    (failed,) = out
    assert isinstance(failed, Failed)
    assert failed.reason == "unsupported_container"
    assert "MPEG-TS (.ts)" in failed.message and str(path) in failed.message


# --- 5. a source replaced after construction -------------------------------------------------


def test_a_replaced_source_is_skipped_not_squashed(tmp_path: Path) -> None:
    path = tmp_path / "swap.mp4"
    make_indexed_video(path, fps=16.0, num_frames=48)
    item = _probed(path)
    other = tmp_path / "other.mp4"
    from media import make_video

    make_video(other, width=96, height=64, fps=16.0, num_frames=48)
    os.replace(other, path)
    (failed,) = _decode(item, DecodeOptions(frames=(17,), fps=16.0, buckets=BUCKET))
    assert isinstance(failed, Failed) and failed.reason == "source_changed"
    assert "96x64" in failed.message and "64x32" in failed.message


# --- 6. low frame rates: repeats are counted ------------------------------------------------


def test_a_slow_source_reports_its_repeated_frames(tmp_path: Path) -> None:
    path = tmp_path / "slow.mp4"
    make_indexed_video(path, fps=10.0, num_frames=30)
    item = _probed(path)
    out = _decode(item, DecodeOptions(frames=(33,), fps=16.0, buckets=BUCKET))
    (clip,) = out
    assert isinstance(clip, Clip)
    served = [frame_index(f) for f in clip.pixels]
    assert served == [_shown(i, 16.0, 10.0, 30) for i in range(33)]
    repeats = sum(1 for a, b in itertools.pairwise(served) if a == b)
    assert clip.repeated_frames == repeats == 33 - len(set(served))
    assert 0.3 < clip.repeated_frames / 33 < 0.45  # 1 - 10 / 16 = 0.375


def test_a_fast_source_reports_no_repeats(tmp_path: Path) -> None:
    path = tmp_path / "fast.mkv"
    make_indexed_video(path, fps=24.0, num_frames=72)
    (clip,) = _decode(_probed(path), DecodeOptions(frames=(33,), fps=16.0, buckets=BUCKET))
    assert isinstance(clip, Clip) and clip.repeated_frames == 0


def test_a_source_replaced_by_another_length_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "swap.mp4"
    make_indexed_video(path, fps=16.0, num_frames=48)
    item = _probed(path)
    other = tmp_path / "other.mp4"
    make_indexed_video(other, fps=16.0, num_frames=40)
    os.replace(other, path)
    (failed,) = _decode(item, DecodeOptions(frames=(17,), fps=16.0, buckets=BUCKET))
    assert isinstance(failed, Failed) and failed.reason == "source_changed"
    assert "now holds 40 frames, planned as 48" in failed.message


def test_a_variable_frame_rate_file_is_served_by_seeking_without_a_fallback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # mpdecimate drops still frames: the file holds some frames for 0.2 s while torchcodec
    # reports every duration as 1/30 s. Held frames are right; no sequential decode is needed.
    path = tmp_path / "vfr.mp4"
    from media import _ffmpeg

    _ffmpeg(
        *("-f", "lavfi", "-i", "testsrc2=size=160x90:rate=30:duration=6"),
        *("-vf", "mpdecimate=hi=64*200:lo=64*100:frac=0.1", "-fps_mode", "vfr"),
        *("-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)),
    )
    item = _probed(path)
    caplog.set_level("INFO", logger="wan_data")
    (clip,) = _decode(item, DecodeOptions(frames=(17,), fps=16.0, buckets=((160, 90),)))
    assert isinstance(clip, Clip)
    assert "decoding sequentially" not in caplog.text
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(str(path))
    all_pts = decoder.get_frames_at(list(range(decoder.metadata.num_frames))).pts_seconds.tolist()
    requests = [i / 16 + TOLERANCE_FRACTION / 16 for i in range(17)]
    expected = [max(p for p in all_pts if p <= t) for t in requests]
    assert list(clip.frame_times) == pytest.approx(expected, abs=1e-6)
