"""probe.py: metadata from the content, validation limits, the probe stage, validate_file."""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path

import pytest
from media import Corpus, MediaSpec

from wan_data.errors import SampleError
from wan_data.failures.mechanism import StageContext
from wan_data.failures.policy import ErrorPolicy
from wan_data.items import Failed, Probed, Source, ValidationResult, VideoMetadata
from wan_data.stages.probe import (
    ProbeLimits,
    probe,
    probe_metadata,
    validate_file,
    validate_metadata,
)
from wan_data.testing import check_stage_contract

LIMITS_16 = ProbeLimits(min_frames=17, fps=16.0)


def _source(corpus: Corpus, spec: MediaSpec) -> Source:
    captions = tuple(spec.caption.splitlines()) if spec.caption else ()
    media_type = "image" if spec.kind == "image" else "video"
    return Source(
        key=spec.name, path=str(corpus.path(spec.name)), media_type=media_type, captions=captions
    )


def _probe_one(source: Source, limits: ProbeLimits = LIMITS_16) -> Probed | Failed:
    out = list(probe([source], policy=ErrorPolicy(), limits=limits))
    assert len(out) == 1, out
    assert isinstance(out[0], (Probed, Failed))
    return out[0]


def _probed(corpus: Corpus, name: str, limits: ProbeLimits = LIMITS_16) -> Probed:
    item = _probe_one(_source(corpus, corpus.spec(name)), limits)
    assert isinstance(item, Probed), item
    return item


def _failed(corpus: Corpus, name: str, limits: ProbeLimits) -> Failed:
    item = _probe_one(_source(corpus, corpus.spec(name)), limits)
    assert isinstance(item, Failed), item
    return item


# --------------------------------------------------------------------------- good videos


def test_good_videos_probe_to_their_declared_metadata(corpus: Corpus) -> None:
    specs = corpus.by_kind("good")
    assert len(specs) == 7
    for spec in specs:
        item = _probed(corpus, spec.name)
        meta = item.metadata
        assert item.source.path == str(corpus.path(spec.name))
        assert (meta.width, meta.height) == (spec.width, spec.height), spec.name
        assert meta.frame_count == spec.num_frames, spec.name
        assert meta.codec == spec.codec, spec.name
        assert meta.format == Path(spec.name).suffix.lstrip("."), spec.name
        assert meta.media_type == "video"
        assert not meta.is_corrupted and meta.error_details is None, spec.name
        assert meta.begin_seconds == pytest.approx(0.0, abs=1e-6), spec.name
        assert meta.frame_count_from_header in (None, spec.num_frames), spec.name
        assert item.warnings == (), spec.name
        if not spec.vfr:
            assert spec.fps is not None and spec.duration is not None
            assert meta.fps == pytest.approx(spec.fps, rel=1e-3), spec.name
            assert meta.duration == pytest.approx(spec.duration, abs=1e-3), spec.name
            assert meta.end_seconds == pytest.approx(spec.duration, abs=1e-3), spec.name


def test_rotated_video_reports_its_displayed_size(corpus: Corpus) -> None:
    # Coded 160x90 with a 90-degree display matrix: trained the way it is shown.
    meta = _probed(corpus, "good/h264_rotated.mp4").metadata
    assert (meta.width, meta.height) == (90, 160)
    assert meta.frame_count == 54
    assert meta.fps == pytest.approx(24.0)


def test_vfr_video_reports_the_content_average_fps_not_the_header(corpus: Corpus) -> None:
    # 24 frames at 1/24 s, 12 at 1/12 s, 24 at 1/24 s: 60 frames over exactly 3 s. The header
    # claims 24 fps; the content average is 60 / 3 = 20 fps.
    meta = _probed(corpus, "good/h264_vfr.mp4").metadata
    assert meta.frame_count == 60
    assert meta.duration == pytest.approx(3.0, abs=1e-3)
    assert meta.fps == pytest.approx(20.0, rel=1e-3)
    assert meta.fps != pytest.approx(24.0, rel=0.05)


# --------------------------------------------------------------------------- images


def test_images_probe_through_pillow(corpus: Corpus) -> None:
    specs = corpus.by_kind("image")
    assert len(specs) == 4
    formats = {".png": "png", ".jpg": "jpeg", ".webp": "webp", ".bmp": "bmp"}
    for spec in specs:
        meta = _probed(corpus, spec.name).metadata
        assert (meta.width, meta.height) == (spec.width, spec.height), spec.name
        assert meta.frame_count == 1
        assert meta.media_type == "image"
        assert meta.fps == 0.0 and meta.duration == 0.0
        assert meta.format == formats[Path(spec.name).suffix], spec.name
        assert not meta.is_corrupted


def _exif_jpeg(path: Path, size: tuple[int, int], orientation: int) -> Path:
    from PIL import Image

    image = Image.new("RGB", size, (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif.tobytes(), quality=95)
    return path


@pytest.mark.parametrize(
    ("orientation", "displayed"),
    [(1, (80, 48)), (3, (80, 48)), (6, (48, 80)), (8, (48, 80)), (5, (48, 80))],
)
def test_exif_rotated_jpeg_reports_its_displayed_size(
    tmp_path: Path, orientation: int, displayed: tuple[int, int]
) -> None:
    path = _exif_jpeg(tmp_path / f"phone_{orientation}.jpg", (80, 48), orientation)
    source = Source(key="phone.jpg", path=str(path), media_type="image")
    meta = probe_metadata(source)
    assert (meta.width, meta.height) == displayed
    assert meta.media_type == "image" and meta.frame_count == 1
    item = _probe_one(source)
    assert isinstance(item, Probed)
    assert (item.metadata.width, item.metadata.height) == displayed


# --------------------------------------------------------------------------- broken files


def test_every_broken_file_fails_with_its_expected_reason(corpus: Corpus) -> None:
    specs = corpus.by_kind("broken")
    assert {s.expected_reason for s in specs} == {
        "unreadable",
        "no_video_stream",
        "not_a_file",
        "missing",
    }
    context = StageContext()
    sources = [_source(corpus, spec) for spec in specs]
    out = list(probe(iter(sources), policy=ErrorPolicy(), context=context, limits=LIMITS_16))
    assert len(out) == len(specs)
    for spec, item in zip(specs, out, strict=True):
        assert isinstance(item, Failed), spec.name
        path = str(corpus.path(spec.name))
        assert (item.key, item.path, item.stage) == (spec.name, path, "probe"), spec.name
        assert item.reason == spec.expected_reason, (spec.name, item.reason, item.message)
        assert item.attempts == 1, f"{spec.name}: a broken file is not worth a retry"
        assert path in item.message, item.message
        assert ".cpp:" not in item.message, item.message
        assert "This should never happen" not in item.message, item.message
    stats = context.metrics.stages["probe"]
    assert (stats.items_in, stats.items_out, stats.failed) == (len(specs), 0, len(specs))
    assert sum(stats.by_reason.values()) == len(specs)
    assert stats.by_reason["no_video_stream"] == 1


@pytest.mark.parametrize(
    ("name", "error_type"),
    [
        ("broken/empty.mp4", "RuntimeError"),
        ("broken/garbage.mp4", "RuntimeError"),
        ("broken/bad_header.mp4", "RuntimeError"),
        ("broken/notes.mp4", "RuntimeError"),
        ("broken/truncated_before_index.mp4", "RuntimeError"),
        ("broken/audio_only.mp4", "ValueError"),
        ("broken/folder.mp4", "IsADirectoryError"),
        ("broken/dangling.mp4", "FileNotFoundError"),
    ],
)
def test_broken_file_error_types(corpus: Corpus, name: str, error_type: str) -> None:
    failed = _failed(corpus, name, LIMITS_16)
    assert failed.error_type == error_type
    assert failed.reason == corpus.spec(name).expected_reason


def test_truncated_after_index_is_rejected_as_truncated(corpus: Corpus) -> None:
    name = "damaged/truncated_after_index.mp4"
    failed = _failed(corpus, name, LIMITS_16)
    assert failed.reason == "truncated"
    assert failed.error_type == "SampleError"
    assert str(corpus.path(name)) in failed.message
    assert "72" in failed.message  # what the header declares
    meta = probe_metadata(_source(corpus, corpus.spec(name)))
    assert meta.is_corrupted
    assert meta.frame_count_from_header == 72
    assert 0 < meta.frame_count < 72 * 0.9


def test_corrupt_middle_passes_probe_with_an_intact_index(corpus: Corpus) -> None:
    # The probe only demuxes: damage inside the data is the decode stage's problem.
    meta = _probed(corpus, "damaged/corrupt_middle.mp4").metadata
    assert (meta.width, meta.height, meta.frame_count) == (160, 90, 72)
    assert not meta.is_corrupted


def test_probe_metadata_raises_for_missing_and_directory_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"gone\.mp4"):
        probe_metadata(Source(key="gone", path=str(tmp_path / "gone.mp4"), media_type="video"))
    with pytest.raises(IsADirectoryError):
        probe_metadata(Source(key="dir", path=str(tmp_path), media_type="video"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("media_type", ["video", "image"])
def test_probe_metadata_refuses_a_fifo_without_blocking(tmp_path: Path, media_type: str) -> None:
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(SampleError, match="FIFO") as info:
        probe_metadata(Source(key="p", path=str(fifo), media_type=media_type))  # type: ignore[arg-type]
    assert info.value.reason == "not_a_file" and "stage=probe" in str(info.value)


def test_probe_metadata_symlink_loop_raises_eloop(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").symlink_to("b.mp4")
    (tmp_path / "b.mp4").symlink_to("a.mp4")
    with pytest.raises(OSError) as info:
        probe_metadata(Source(key="a", path=str(tmp_path / "a.mp4"), media_type="video"))
    assert info.value.errno == errno.ELOOP


def test_truncated_images_fail_at_probe_as_truncated(corpus: Corpus, tmp_path: Path) -> None:
    for spec in corpus.by_kind("image"):
        if not spec.name.endswith((".png", ".jpg")):
            continue
        data = corpus.path(spec.name).read_bytes()
        cut = tmp_path / Path(spec.name).name
        cut.write_bytes(data[: len(data) * 2 // 3])
        with pytest.raises(SampleError) as info:
            probe_metadata(Source(key="c", path=str(cut), media_type="image"))
        assert info.value.reason == "truncated", spec.name
        assert str(cut) in str(info.value)


def test_image_larger_than_pillows_bound_is_too_large(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "big.png"
    Image.new("1", (200, 100)).save(path)
    limits = ProbeLimits(min_frames=1, max_pixels=10**9)
    source = Source(key="b", path=str(path), media_type="image")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)  # bomb error above 2x: 10 000 px
        (out,) = probe([source], policy=ErrorPolicy(), limits=limits)
    assert isinstance(out, Failed) and out.reason == "too_large"
    assert "pixels" in out.message and str(path) in out.message


def test_image_between_pillows_bounds_is_not_decoded(tmp_path: Path) -> None:
    # Above MAX_IMAGE_PIXELS (Pillow warns) but under twice it: the header is read, the
    # pixels are not decoded at probe (that is Pillow's own bound on a safe decode).
    from PIL import Image

    path = tmp_path / "big.png"
    Image.new("L", (100, 80)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])  # cut: a decode would fail
    with pytest.MonkeyPatch.context() as patch, pytest.warns(Image.DecompressionBombWarning):
        patch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)
        meta = probe_metadata(Source(key="b", path=str(path), media_type="image"))
    assert (meta.width, meta.height) == (100, 80)


# --------------------------------------------------------------------------- limits


def test_short_video_is_too_short_with_file_fps_and_smallest_bucket(corpus: Corpus) -> None:
    name = "short/h264_half_second.mp4"
    failed = _failed(corpus, name, ProbeLimits(min_frames=17, fps=16.0))
    assert failed.reason == "too_short"
    assert failed.error_type == "SampleError"
    assert str(corpus.path(name)) in failed.message
    assert "16 fps" in failed.message
    assert "(17)" in failed.message  # the smallest frame bucket
    # 0.5 s of a 24 fps source: grid points 0..8 at 16 fps, the last at the very end
    assert "9 frames" in failed.message
    # Counting native frames instead: 12 < 17.
    native = _failed(corpus, name, ProbeLimits(min_frames=17, fps=None))
    assert native.reason == "too_short"
    assert "12 native frames" in native.message
    # 0.5 s gives 9 frames at 16 fps: enough for a 9-frame bucket, not for a 13-frame one.
    assert _probed(corpus, name, ProbeLimits(min_frames=9, fps=16.0)).metadata.frame_count == 12
    assert _failed(corpus, name, ProbeLimits(min_frames=13, fps=16.0)).reason == "too_short"


def test_max_pixels_boundary(corpus: Corpus) -> None:
    name = "good/h264_landscape.mp4"  # 160 x 90 = 14400 pixels
    failed = _failed(corpus, name, ProbeLimits(max_pixels=14399))
    assert failed.reason == "too_large"
    assert "14399" in failed.message and str(corpus.path(name)) in failed.message
    assert _probed(corpus, name, ProbeLimits(max_pixels=14400)).metadata.width == 160
    # Images obey it too.
    image = "images/landscape.png"  # 160 x 120
    assert _failed(corpus, image, ProbeLimits(max_pixels=160 * 120 - 1)).reason == "too_large"


def test_min_side_boundary(corpus: Corpus) -> None:
    name = "good/h264_landscape.mp4"  # shortest side 90
    failed = _failed(corpus, name, ProbeLimits(min_side=91))
    assert failed.reason == "too_small"
    assert "91" in failed.message
    assert _probed(corpus, name, ProbeLimits(min_side=90)).metadata.height == 90
    assert _failed(corpus, "images/small.bmp", ProbeLimits(min_side=49)).reason == "too_small"


def test_max_duration_boundary(corpus: Corpus) -> None:
    name = "good/h264_landscape.mp4"  # 54 frames at 24 fps = 2.25 s
    failed = _failed(corpus, name, ProbeLimits(max_duration_seconds=2.2))
    assert failed.reason == "too_long"
    assert "2.2" in failed.message
    assert _probed(corpus, name, ProbeLimits(max_duration_seconds=2.25)).metadata.frame_count == 54
    # Images have no duration to exceed.
    assert _probed(corpus, "images/landscape.png", ProbeLimits(max_duration_seconds=0.1))


def _meta(**overrides: object) -> VideoMetadata:
    base = VideoMetadata(
        width=160, height=90, fps=24.0, duration=2.0, frame_count=48, format="mp4", codec="h264"
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def test_validate_metadata_rules_and_their_order() -> None:
    limits = ProbeLimits(min_frames=17, fps=16.0, max_pixels=160 * 90, min_side=8)
    assert validate_metadata(_meta(), limits) is None
    corrupted = _meta(is_corrupted=True, error_details="cut", width=2)
    assert validate_metadata(corrupted, limits) == ("truncated", "is damaged: cut")
    assert validate_metadata(_meta(width=4), limits)[0] == "too_small"  # type: ignore[index]
    assert validate_metadata(_meta(width=161), limits)[0] == "too_large"  # type: ignore[index]
    assert validate_metadata(_meta(frame_count=0), limits)[0] == "no_frames"  # type: ignore[index]
    # 1.0 s of a 16 fps source gives exactly 16 frames at 16 fps: one short of 17; 1.0625 s
    # gives 17. The same 1.0 s of a 24 fps source fills 17 (its last frame ends the clip).
    at_16 = _meta(duration=1.0, fps=16.0, frame_count=16)
    assert validate_metadata(at_16, limits)[0] == "too_short"  # type: ignore[index]
    assert validate_metadata(_meta(duration=1.0625, fps=16.0, frame_count=17), limits) is None
    assert validate_metadata(_meta(duration=1.0, frame_count=24), limits) is None
    native = ProbeLimits(min_frames=17, fps=None, max_pixels=160 * 90)
    assert validate_metadata(_meta(frame_count=16), native)[0] == "too_short"  # type: ignore[index]
    assert validate_metadata(_meta(frame_count=17, duration=0.1), native) is None
    image = _meta(media_type="image", frame_count=1, fps=0.0, duration=0.0)
    assert validate_metadata(image, limits) is None
    slow = ProbeLimits(min_frames=17, fps=16.0, max_pixels=160 * 90, min_source_fps=12.0)
    low = validate_metadata(_meta(fps=10.0, duration=3.0, frame_count=30), slow)
    assert low is not None and low[0] == "low_fps" and "min_source_fps=12" in low[1]
    assert validate_metadata(_meta(fps=12.0, duration=3.0, frame_count=36), slow) is None
    assert validate_metadata(image, slow) is None  # images have no frame rate
    # 5.0 s of 24 fps fills 81 frames at 16 fps: the probe counts as the planner does.
    five = _meta(fps=24.0, duration=5.0, frame_count=120)
    assert (
        validate_metadata(five, ProbeLimits(min_frames=81, fps=16.0, max_pixels=160 * 90)) is None
    )


# --------------------------------------------------------------------------- validate_file


def test_validate_file_on_good_and_short_files(corpus: Corpus) -> None:
    for spec in corpus.by_kind("good", "image"):
        result = validate_file(_source(corpus, spec), LIMITS_16)
        assert isinstance(result, ValidationResult)
        assert result.is_valid, (spec.name, result.error_message)
        assert result.error_message is None and result.reason is None
        assert result.metadata is not None
        assert (result.metadata.width, result.metadata.height) == (spec.width, spec.height)
        assert result.processing_time > 0
    short = corpus.spec("short/h264_half_second.mp4")
    result = validate_file(_source(corpus, short), LIMITS_16)
    assert not result.is_valid
    assert result.reason == "too_short"
    assert result.metadata is not None and result.metadata.frame_count == 12
    assert result.error_message is not None
    assert str(corpus.path(short.name)) in result.error_message
    assert "16 fps" in result.error_message and "(17)" in result.error_message
    assert result.processing_time > 0


def test_validate_file_never_raises_on_broken_files(corpus: Corpus) -> None:
    specs = corpus.by_kind("broken", "damaged")
    for spec in specs:
        result = validate_file(_source(corpus, spec), LIMITS_16)
        assert isinstance(result, ValidationResult), spec.name
        if spec.name == "damaged/corrupt_middle.mp4":
            assert result.is_valid
            continue
        assert not result.is_valid, spec.name
        assert result.processing_time > 0
        assert result.error_message, spec.name
        assert str(corpus.path(spec.name)) in result.error_message, result.error_message
        assert ".cpp:" not in result.error_message, result.error_message
        expected = spec.expected_reason or "truncated"
        assert result.reason == expected, (spec.name, result.reason, result.error_message)
        if spec.kind == "broken":
            assert result.metadata is None
        else:
            assert result.metadata is not None and result.metadata.is_corrupted


def test_validate_file_agrees_with_the_probe_stage(corpus: Corpus) -> None:
    specs = [*corpus.by_kind("broken"), corpus.spec("short/h264_half_second.mp4")]
    for spec in specs:
        source = _source(corpus, spec)
        failed = _probe_one(source)
        assert isinstance(failed, Failed)
        assert validate_file(source, LIMITS_16).reason == failed.reason, spec.name


# --------------------------------------------------------------------------- real files


def test_real_world_files_probe_without_error(shared_media: Path) -> None:
    expected = {
        "av1_video.mkv": ("av1", 125, 25.0, [(640, 360)]),
        "h265_video.mp4": ("hevc", 10, 10.0, [(128, 128)]),
        # Two video streams: either is acceptable, but the numbers must be one stream's.
        "nasa_13013.mp4": ("h264", 390, 30000 / 1001, [(480, 270), (320, 180)]),
    }
    sources = [
        Source(key=name, path=str(shared_media / name), media_type="video") for name in expected
    ]
    out = list(probe(sources, policy=ErrorPolicy(), limits=ProbeLimits()))
    assert [type(o) for o in out] == [Probed] * 3, out
    for item in out:
        assert isinstance(item, Probed)
        codec, frames, fps, sizes = expected[item.key]
        meta = item.metadata
        assert meta.codec == codec, item.key
        assert meta.frame_count == frames, item.key
        assert meta.fps == pytest.approx(fps, rel=1e-3), item.key
        assert (meta.width, meta.height) in sizes, item.key
        assert meta.duration == pytest.approx(frames / fps, rel=0.01), item.key
        result = validate_file(item.source, ProbeLimits())
        assert result.is_valid and result.metadata == meta


# --------------------------------------------------------------------------- contract


def test_probe_honours_the_stage_contract(corpus: Corpus) -> None:
    names = [
        "good/h264_landscape.mp4",
        "images/portrait.jpg",
        "broken/garbage.mp4",
        "short/h264_half_second.mp4",
    ]
    sources = [_source(corpus, corpus.spec(n)) for n in names]
    check_stage_contract(probe, sources, limits=LIMITS_16)
