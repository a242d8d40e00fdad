"""items.py: every item validates itself, is frozen, and prints shapes instead of pixels."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch

from wan_data.items import (
    Bucket,
    Clip,
    CropBox,
    Failed,
    Probed,
    Source,
    ValidationResult,
    VideoMetadata,
)


def _source(**kw: object) -> Source:
    args: dict[str, object] = {"key": "c/a.mp4", "path": "/data/c/a.mp4", "media_type": "video"}
    args.update(kw)
    return Source(**args)  # type: ignore[arg-type]


def _meta(**kw: object) -> VideoMetadata:
    args: dict[str, object] = {
        "width": 832,
        "height": 480,
        "fps": 16.0,
        "duration": 3.0,
        "frame_count": 48,
        "format": "mp4",
        "codec": "h264",
    }
    args.update(kw)
    return VideoMetadata(**args)  # type: ignore[arg-type]


def _clip(frames: int = 5, width: int = 32, height: int = 16, **kw: object) -> Clip:
    args: dict[str, object] = {
        "key": "c/a.mp4#0",
        "source": _source(),
        "pixels": torch.zeros((frames, 3, height, width), dtype=torch.uint8),
        "frame_times": tuple(i / 16 for i in range(frames)),
        "bucket": Bucket(frames, width, height),
        "crop": CropBox(0.0, 0.0, 64.0, 32.0),
    }
    args.update(kw)
    return Clip(**args)  # type: ignore[arg-type]


def _failed(**kw: object) -> Failed:
    args: dict[str, object] = {
        "key": "c/a.mp4",
        "path": "/data/c/a.mp4",
        "stage": "decode",
        "reason": "decode_error",
        "error_type": "RuntimeError",
        "message": "decode of file ('/data/c/a.mp4') failed.",
    }
    args.update(kw)
    return Failed(**args)  # type: ignore[arg-type]


# --- Source ---------------------------------------------------------------------------------


def test_source_defaults() -> None:
    s = _source()
    assert (s.captions, s.concept, s.repeat) == ((), "", 0)


@pytest.mark.parametrize(
    ("kw", "field_name"),
    [
        ({"key": ""}, "Source.key"),
        ({"path": ""}, "Source.path"),
        ({"media_type": "audio"}, "Source.media_type"),
        ({"captions": ("ok", 3)}, "Source.captions"),
        ({"repeat": -1}, "Source.repeat"),
    ],
)
def test_source_rejects(kw: dict[str, object], field_name: str) -> None:
    with pytest.raises(ValueError, match=field_name.replace(".", r"\.")):
        _source(**kw)


# --- VideoMetadata --------------------------------------------------------------------------


def test_metadata_end_seconds() -> None:
    assert _meta(begin_seconds=0.5, duration=2.0).end_seconds == 2.5


@pytest.mark.parametrize(
    ("kw", "field_name"),
    [
        ({"width": -1}, "VideoMetadata.width"),
        ({"height": -2}, "VideoMetadata.height"),
        ({"frame_count": -1}, "VideoMetadata.frame_count"),
        ({"fps": -16.0}, "VideoMetadata.fps"),
        ({"fps": float("nan")}, "VideoMetadata.fps"),
        ({"duration": -0.1}, "VideoMetadata.duration"),
        ({"duration": float("nan")}, "VideoMetadata.duration"),
    ],
)
def test_metadata_rejects(kw: dict[str, object], field_name: str) -> None:
    with pytest.raises(ValueError, match=field_name.replace(".", r"\.")):
        _meta(**kw)


# --- ValidationResult -----------------------------------------------------------------------


def test_validation_result_rules() -> None:
    assert ValidationResult(is_valid=True, metadata=_meta()).is_valid
    assert ValidationResult(is_valid=False, error_message="bad", reason="unreadable").reason
    with pytest.raises(ValueError, match=r"ValidationResult\.error_message"):
        ValidationResult(is_valid=False)
    with pytest.raises(ValueError, match=r"ValidationResult\.metadata"):
        ValidationResult(is_valid=True)


# --- Probed ---------------------------------------------------------------------------------


def test_probed_key_and_path_come_from_source() -> None:
    p = Probed(source=_source(), metadata=_meta())
    assert (p.key, p.path) == ("c/a.mp4", "/data/c/a.mp4")


# --- Bucket ---------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 5, 17, 33, 49, 81, 121])
def test_bucket_accepts_4k_plus_1(frames: int) -> None:
    assert str(Bucket(frames, 832, 480)) == f"{frames}x832x480"


@pytest.mark.parametrize(
    ("args", "field_name"),
    [
        ((8, 832, 480), "Bucket.frames"),
        ((0, 832, 480), "Bucket.frames"),
        ((48, 832, 480), "Bucket.frames"),
        ((-3, 832, 480), "Bucket.frames"),
        ((17, 0, 480), "Bucket.width"),
        ((17, 832, -16), "Bucket.height"),
    ],
)
def test_bucket_rejects(args: tuple[int, int, int], field_name: str) -> None:
    with pytest.raises(ValueError, match=field_name.replace(".", r"\.")):
        Bucket(*args)


# --- CropBox --------------------------------------------------------------------------------


def test_cropbox_as_list() -> None:
    assert CropBox(1.5, 2.0, 30.0, 40.0).as_list() == [1.5, 2.0, 30.0, 40.0]


# --- Clip -----------------------------------------------------------------------------------


def test_clip_valid() -> None:
    clip = _clip()
    assert clip.pixels.shape == (5, 3, 16, 32)
    assert clip.clip_index == 0


@pytest.mark.parametrize(
    ("kw", "field_name"),
    [
        ({"pixels": torch.zeros((5, 3, 16, 32), dtype=torch.float32)}, "Clip.pixels.dtype"),
        ({"pixels": torch.zeros((4, 3, 16, 32), dtype=torch.uint8)}, "Clip.pixels.shape"),
        ({"pixels": torch.zeros((5, 16, 32, 3), dtype=torch.uint8)}, "Clip.pixels.shape"),
        ({"pixels": torch.zeros((5, 3, 32, 16), dtype=torch.uint8)}, "Clip.pixels.shape"),
        ({"frame_times": (0.0, 0.1)}, "len(Clip.frame_times)"),
        ({"pixels": [[0]]}, "Clip.pixels"),
    ],
)
def test_clip_rejects(kw: dict[str, object], field_name: str) -> None:
    with pytest.raises(ValueError) as info:
        _clip(**kw)
    assert field_name in str(info.value)


def test_clip_rejection_names_the_file() -> None:
    with pytest.raises(ValueError, match=r"/data/c/a\.mp4"):
        _clip(pixels=torch.zeros((4, 3, 16, 32), dtype=torch.uint8))


def test_clip_repr_shows_shape_not_contents() -> None:
    pixels = torch.full((5, 3, 16, 32), 123, dtype=torch.uint8)
    text = repr(_clip(pixels=pixels))
    assert "(5, 3, 16, 32)" in text
    assert "torch.uint8" in text
    assert "5x32x16" in text
    assert "123" not in text
    assert "tensor(" not in text
    assert len(text) < 200


def test_clip_pickles() -> None:
    clip = _clip(pixels=torch.arange(5 * 3 * 16 * 32).reshape(5, 3, 16, 32).to(torch.uint8))
    back = pickle.loads(pickle.dumps(clip))
    assert torch.equal(back.pixels, clip.pixels)
    assert (back.key, back.bucket, back.frame_times) == (clip.key, clip.bucket, clip.frame_times)


# --- Failed ---------------------------------------------------------------------------------


def test_failed_as_record() -> None:
    record = _failed(attempts=3).as_record()
    assert record == {
        "key": "c/a.mp4",
        "path": "/data/c/a.mp4",
        "stage": "decode",
        "reason": "decode_error",
        "error_type": "RuntimeError",
        "message": "decode of file ('/data/c/a.mp4') failed.",
        "attempts": 3,
    }


def test_failed_equality_is_by_value() -> None:
    assert _failed() == _failed()
    assert _failed() != _failed(reason="unreadable")


@pytest.mark.parametrize(
    ("kw", "field_name"),
    [
        ({"stage": ""}, "Failed.stage"),
        ({"reason": ""}, "Failed.reason"),
        ({"attempts": 0}, "Failed.attempts"),
    ],
)
def test_failed_rejects(kw: dict[str, object], field_name: str) -> None:
    with pytest.raises(ValueError, match=field_name.replace(".", r"\.")):
        _failed(**kw)


# --- frozen ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "attr"),
    [
        (_source(), "key"),
        (_meta(), "fps"),
        (Probed(source=_source(), metadata=_meta()), "warnings"),
        (Bucket(5, 32, 16), "frames"),
        (CropBox(0, 0, 1, 1), "x"),
        (_clip(), "pixels"),
        (_failed(), "reason"),
        (ValidationResult(is_valid=True, metadata=_meta()), "is_valid"),
    ],
)
def test_items_are_frozen(item: object, attr: str) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(item, attr, None)
