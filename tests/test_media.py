"""Checks that the generated test media corpus is what tests/media.py claims."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from media import Corpus, MediaSpec, build_corpus, ffmpeg_available, make_image, make_video

torchcodec_decoders = pytest.importorskip("torchcodec.decoders")
VideoDecoder = torchcodec_decoders.VideoDecoder

pytestmark = pytest.mark.skipif(not ffmpeg_available(), reason="ffmpeg CLI not available")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def _sample_times(begin: float, count: int, fps: float = 16.0) -> list[float]:
    return [begin + i / fps for i in range(count)]


def test_layout(corpus: Corpus) -> None:
    names = [spec.name for spec in corpus.specs]
    assert len(names) == len(set(names))
    for spec in corpus.specs:
        path = corpus.path(spec.name)
        assert path.is_symlink() or path.exists(), spec.name
        caption = path.with_suffix(".txt")
        if spec.caption is None:
            assert not caption.exists(), spec.name
        else:
            assert caption.read_text(encoding="utf-8").splitlines() == spec.caption.splitlines()
    good = corpus.by_kind("good")
    assert any(spec.caption is None for spec in good)
    assert any(spec.caption is not None and "\n" in spec.caption for spec in good)
    assert {Path(spec.name).suffix for spec in good} >= {".mp4", ".mov", ".webm", ".avi"}
    assert {spec.codec for spec in good} >= {"h264", "vp9", "mpeg4"}
    assert sum(spec.vfr for spec in good) == 1
    with pytest.raises(KeyError):
        corpus.path("no/such/file.mp4")
    with pytest.raises(ValueError, match="unknown kinds"):
        corpus.by_kind("nonsense")


def test_good_and_short_videos_decode_as_declared(corpus: Corpus) -> None:
    for spec in corpus.by_kind("good", "short"):
        decoder = VideoDecoder(str(corpus.path(spec.name)), seek_mode="exact")
        meta = decoder.metadata
        assert (meta.width, meta.height) == (spec.width, spec.height), spec.name
        assert meta.codec == spec.codec, spec.name
        assert meta.num_frames == spec.num_frames, spec.name
        frames = decoder.get_frames_in_range(0, meta.num_frames)
        assert tuple(frames.data.shape) == (spec.num_frames, 3, spec.height, spec.width)
        assert frames.data.dtype == torch.uint8
        # Consecutive frames of the moving test pattern differ.
        assert not torch.equal(frames.data[0], frames.data[-1]), spec.name
        if not spec.vfr:
            assert spec.fps is not None and spec.num_frames is not None
            assert meta.average_fps == pytest.approx(spec.fps, rel=1e-3), spec.name
            assert meta.duration_seconds == pytest.approx(spec.num_frames / spec.fps, abs=1e-3)


def test_good_videos_have_33_frames_at_16_fps(corpus: Corpus) -> None:
    for spec in corpus.by_kind("good"):
        decoder = VideoDecoder(str(corpus.path(spec.name)))
        times = _sample_times(decoder.metadata.begin_stream_seconds, 33)
        assert times[-1] < decoder.metadata.end_stream_seconds, spec.name
        assert decoder.get_frames_played_at(seconds=times).data.shape[0] == 33


def test_short_videos_are_short(corpus: Corpus) -> None:
    shorts = corpus.by_kind("short")
    assert shorts
    for spec in shorts:
        meta = VideoDecoder(str(corpus.path(spec.name))).metadata
        assert meta.duration_seconds * 16 < 17, spec.name


def test_vfr_video_is_really_vfr(corpus: Corpus) -> None:
    (spec,) = [spec for spec in corpus.by_kind("good") if spec.vfr]
    decoder = VideoDecoder(str(corpus.path(spec.name)))
    pts = decoder.get_frames_in_range(0, decoder.metadata.num_frames).pts_seconds
    steps = torch.diff(pts)
    assert bool((steps > 0).all())
    assert float(steps.max() - steps.min()) > 0.01
    # The average over the content differs from the nominal (fastest) rate.
    assert decoder.metadata.average_fps < spec.fps


def test_rotated_video_is_rotated(corpus: Corpus) -> None:
    meta = VideoDecoder(str(corpus.path("good/h264_rotated.mp4"))).metadata
    assert meta.rotation is not None and abs(meta.rotation) == 90
    assert (meta.width, meta.height) == (90, 160)


def test_images_match_spec(corpus: Corpus) -> None:
    images = corpus.by_kind("image")
    assert {Path(spec.name).suffix for spec in images} == {".png", ".jpg", ".webp", ".bmp"}
    assert any(spec.height > spec.width for spec in images if spec.height and spec.width)
    for spec in images:
        meta = VideoDecoder(str(corpus.path(spec.name)), seek_mode="exact").metadata
        assert (meta.width, meta.height, meta.codec) == (spec.width, spec.height, spec.codec)


def test_broken_files_fail_to_open(corpus: Corpus) -> None:
    broken = corpus.by_kind("broken")
    reasons = {spec.expected_reason for spec in broken}
    assert reasons == {"unreadable", "no_video_stream", "not_a_file", "missing"}
    for spec in broken:
        with pytest.raises((RuntimeError, ValueError)):
            VideoDecoder(str(corpus.path(spec.name)))
    assert corpus.path("broken/folder.mp4").is_dir()
    assert corpus.path("broken/dangling.mp4").is_symlink()
    assert not corpus.path("broken/dangling.mp4").exists()


@pytest.mark.parametrize("seek_mode", ["exact", "approximate"])
def test_damaged_files_open_but_do_not_fully_decode(corpus: Corpus, seek_mode: str) -> None:
    damaged = corpus.by_kind("damaged")
    assert len(damaged) == 2
    for spec in damaged:
        decoder = VideoDecoder(str(corpus.path(spec.name)), seek_mode=seek_mode)
        assert (decoder.metadata.width, decoder.metadata.height) == (spec.width, spec.height)
        assert decoder.get_frame_at(0).data.shape == (3, spec.height, spec.width)
        with pytest.raises(RuntimeError):
            decoder.get_frames_in_range(0, decoder.metadata.num_frames)


def test_ignored_entries(corpus: Corpus) -> None:
    names = {spec.name for spec in corpus.by_kind("ignored")}
    assert names == {"good/.hidden.mp4", "good/._resource.mp4", "readme.md"}
    assert corpus.path("good/._resource.mp4").read_bytes()[:4] == bytes.fromhex("00051607")


def test_build_is_deterministic(corpus: Corpus, tmp_path: Path) -> None:
    again = build_corpus(tmp_path / "again")
    assert again.specs == corpus.specs
    for spec in corpus.specs:
        first, second = corpus.path(spec.name), again.path(spec.name)
        if first.is_file() and not first.is_symlink():
            assert first.read_bytes() == second.read_bytes(), spec.name


def test_helpers(tmp_path: Path) -> None:
    video = tmp_path / "sub" / "clip.mp4"
    make_video(video, width=64, height=48, fps=12.5, num_frames=10, extra=["-g", "1"])
    meta = VideoDecoder(str(video)).metadata
    assert (meta.num_frames, meta.width, meta.height) == (10, 64, 48)
    assert meta.average_fps == pytest.approx(12.5)
    image = tmp_path / "still.png"
    make_image(image, width=30, height=20)
    assert (VideoDecoder(str(image)).metadata.width, 20) == (30, 20)


def test_spec_duration() -> None:
    spec = MediaSpec("a.mp4", "good", 8, 8, 24.0, 48, "h264")
    assert spec.duration == pytest.approx(2.0)
    assert MediaSpec("b.png", "image", 8, 8, None, 1, "png").duration is None
