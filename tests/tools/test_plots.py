"""Scan pictures: deterministic sizes, real decoding, and no crash on files that fail to decode."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from media import make_video
from PIL import Image, ImageChops

import wan_data.tools.plots as plots
from wan_data import ConfigError
from wan_data.failures.mechanism import StageContext
from wan_data.items import Clip
from wan_data.stages import ColorJitter, CropJitter, MapStage, RandomFlip
from wan_data.tools.cli import main
from wan_data.tools.plots import (
    bucket_histogram,
    bucket_histogram_size,
    contact_sheet,
    contact_sheet_size,
    thumbnail_width,
)
from wan_data.tools.scan import BucketCount, ScanReport, scan_dataset


def hand_made_report(buckets: list[BucketCount]) -> ScanReport:
    return ScanReport(roots=[], options={"crop": "center"}, rows=[], buckets=buckets)


def test_histogram_size_is_a_function_of_the_bucket_count(tmp_path: Path) -> None:
    assert bucket_histogram_size(6) == (720, 44 + 6 * 20 + 20)
    assert bucket_histogram_size(0) == bucket_histogram_size(1)  # room for "no samples"
    assert bucket_histogram_size(3, width=400, row_height=30) == (400, 44 + 90 + 20)
    buckets = [
        BucketCount(832, 480, 81, 10, 10),
        BucketCount(480, 832, 81, 4, 4),
        BucketCount(832, 480, 33, 1, 1),
    ]
    path = tmp_path / "h" / "buckets.png"  # folders are created
    size = bucket_histogram(hand_made_report(buckets), path)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == size == bucket_histogram_size(3)
    empty = tmp_path / "empty.png"
    assert bucket_histogram(hand_made_report([]), empty) == bucket_histogram_size(0)


def test_contact_sheet_size_arithmetic() -> None:
    # cell = 4 thumbs of 64 px + 3 gaps of 2 = 262; row = 2 * 10 + 3 * 262 + 2 * 12 = 830
    # height = 2 * 10 + title 26 + (label 20 + thumbs 64 + name 18 + gap 10) + footer 22
    assert contact_sheet_size([(64, 64, 17)]) == (830, 180)
    # an image bucket needs one thumbnail per cell; the cell keeps room for a file name (120)
    assert contact_sheet_size([(64, 64, 1)]) == (560, 180)
    assert contact_sheet_size([]) == (560, 180)
    # the widest row sets the width: 128x64 at 32 px is 64 px per thumbnail
    two = contact_sheet_size([(64, 64, 17), (128, 64, 17)], thumb_height=32)
    assert two == (2 * 10 + 3 * (4 * 64 + 6) + 2 * 12, 2 * 10 + 26 + 2 * (20 + 32 + 18 + 10) + 22)
    assert thumbnail_width(1280, 720, 64) == 114 and thumbnail_width(16, 4096, 8) == 1
    # an augmented sheet has one more line (14 px) per row, for the augmentation labels
    assert contact_sheet_size([(64, 64, 17)], augmented=True) == (830, 194)
    assert contact_sheet_size([], augmented=True) == (560, 194)


@pytest.fixture
def two_videos(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for name in ("a.mp4", "b.mp4"):
        make_video(root / name, width=96, height=64, fps=16, num_frames=20)
    return root


def test_contact_sheet_decodes_through_decode_sample_with_the_scan_options(
    two_videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = scan_dataset(two_videos, frames=[5, 17], resolution=(64, 64), progress=False)
    calls: list[Any] = []
    real = plots.decode_sample

    def spy(*args: Any) -> Any:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(plots, "decode_sample", spy)
    sheet = contact_sheet(report, tmp_path / "sheet.png", frames_per_sample=3, thumb_height=40)
    assert len(calls) == 2 and sheet.failed == ()
    for probed, clip_index, bucket, options, epoch in calls:
        assert options is report.decode_options and epoch == 0
        assert any(
            s.probed is probed and s.clip_index == clip_index and s.bucket == bucket
            for s in report.samples
        )
    expected = contact_sheet_size(sheet.buckets, frames_per_sample=3, thumb_height=40)
    with Image.open(sheet.path) as image:
        assert image.size == sheet.size == expected
    assert sorted(name for _, name in sheet.shown) == ["a.mp4", "b.mp4"]


def test_a_file_that_fails_to_decode_is_skipped_and_noted(two_videos: Path, tmp_path: Path) -> None:
    report = scan_dataset(two_videos, frames=[17], resolution=(64, 64), progress=False)
    assert len(report.good) == 2
    (two_videos / "b.mp4").write_bytes(b"overwritten after the scan")
    sheet = contact_sheet(report, tmp_path / "sheet.png", per_bucket=2)
    assert [Path(p).name for p, _ in sheet.failed] == ["b.mp4"]
    assert [name for _, name in sheet.shown] == ["a.mp4"]
    with Image.open(sheet.path) as image:
        assert image.size == contact_sheet_size(sheet.buckets, per_bucket=2)


def test_contact_sheet_of_an_empty_scan_and_bad_arguments(tmp_path: Path) -> None:
    empty = scan_dataset(tmp_path, progress=False)
    sheet = contact_sheet(empty, tmp_path / "empty.png")
    assert sheet.size == contact_sheet_size([]) and sheet.shown == ()
    with pytest.raises(ConfigError, match="per_bucket"):
        contact_sheet(empty, tmp_path / "x.png", per_bucket=0)
    with pytest.raises(ConfigError, match="decode_options"):
        contact_sheet(hand_made_report([]), tmp_path / "x.png")


# -- augmentations on the contact sheet ---------------------------------------------------------

# The first thumbnail of the first row: x, y of its top-left corner on the sheet (margin 10,
# title 26, row label 20).
FIRST_THUMB = (10, 10 + 26 + 20)


def _thumb(path: str, width: int, height: int) -> Image.Image:
    x, y = FIRST_THUMB
    with Image.open(path) as image:
        return image.convert("RGB").crop((x, y, x + width, y + height))


def _same(a: Image.Image, b: Image.Image) -> bool:
    return ImageChops.difference(a, b).getbbox() is None


def _stages() -> list[Any]:
    return [CropJitter((0.5, 0.7), seed=1), RandomFlip(p=1.0), ColorJitter(brightness=0.5)]


def test_an_augmented_sheet_shows_and_labels_the_augmented_frames(
    two_videos: Path, tmp_path: Path
) -> None:
    report = scan_dataset(two_videos, frames=[17], resolution=(64, 64), progress=False)
    plain = contact_sheet(report, tmp_path / "plain.png", thumb_height=40)
    one = contact_sheet(report, tmp_path / "one.png", thumb_height=40, augmentations=_stages())
    two = contact_sheet(report, tmp_path / "two.png", thumb_height=40, augmentations=_stages())
    assert plain.failed == one.failed == () and plain.shown == one.shown == two.shown
    assert plain.applied == () and plain.augmentations == ()
    assert one.size == contact_sheet_size(one.buckets, thumb_height=40, augmented=True)
    assert one.augmentations == tuple(repr(s) for s in _stages())
    # Deterministic: seeded per clip, so the same scan and stages draw the same sheet.
    assert one.applied == two.applied and len(one.applied) == 2
    with Image.open(one.path) as a, Image.open(two.path) as b:
        assert _same(a.convert("RGB"), b.convert("RGB"))
    for (_, name), label in zip(one.shown, one.applied, strict=True):
        key = next(s.key for s in report.samples if Path(s.path).name == name)
        scale = _stages()[0].draw(key, 0)[0]
        brightness = _stages()[2].factors(key, 0)["brightness"]
        assert label == f"crop {scale:.2f}, flip, color b{brightness:.2f}"
    # The thumbnails themselves differ from the plain sheet's.
    width = thumbnail_width(one.buckets[0][0], one.buckets[0][1], 40)
    assert not _same(_thumb(plain.path, width, 40), _thumb(one.path, width, 40))


def test_a_flip_on_the_sheet_mirrors_the_thumbnails(two_videos: Path, tmp_path: Path) -> None:
    report = scan_dataset(two_videos, frames=[5], resolution=(64, 64), progress=False)
    width, height = report.buckets[0].width, report.buckets[0].height
    plain = contact_sheet(report, tmp_path / "plain.png", thumb_height=height, frames_per_sample=1)
    flipped = contact_sheet(
        report,
        tmp_path / "flip.png",
        thumb_height=height,
        frames_per_sample=1,
        augmentations=[RandomFlip(p=1.0)],
    )
    assert flipped.applied == ("flip", "flip") and flipped.shown == plain.shown
    # At thumbnail size = bucket size the resize is exact, so the flip shows as a mirror.
    assert thumbnail_width(width, height, height) == width
    a, b = _thumb(plain.path, width, height), _thumb(flipped.path, width, height)
    assert not _same(a, b)
    assert _same(a.transpose(Image.Transpose.FLIP_LEFT_RIGHT), b)
    nothing = contact_sheet(
        report, tmp_path / "none.png", frames_per_sample=1, augmentations=[RandomFlip(p=0.0)]
    )
    assert nothing.applied == ("unchanged", "unchanged")


class _FailsOnB(MapStage[Clip, Clip]):
    name = "fails_on_b"
    accepts = Clip

    def process_in(self, item: Clip, context: StageContext) -> list[Clip]:
        if "b.mp4" in item.key:
            raise ValueError("this augmentation refuses b.mp4")
        return [item]


def test_a_sample_an_augmentation_fails_is_skipped_and_noted(
    two_videos: Path, tmp_path: Path
) -> None:
    report = scan_dataset(two_videos, frames=[17], resolution=(64, 64), progress=False)
    sheet = contact_sheet(report, tmp_path / "sheet.png", augmentations=[_FailsOnB()])
    assert [Path(p).name for p, _ in sheet.failed] == ["b.mp4"]
    assert "fails_on_b" in sheet.failed[0][1]
    assert [name for _, name in sheet.shown] == ["a.mp4"] and sheet.applied == ("fails_on_b",)


def test_the_scan_cli_takes_sheet_augmentations(
    two_videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["scan", str(two_videos), "--frames", "17", "--resolution", "64x64", "--no-progress"]
    plain, augmented = tmp_path / "plain", tmp_path / "augmented"
    assert main([*args, "--plots", str(plain)]) == 0
    spec = "crop_jitter:min_scale=0.5:max_scale=0.7, flip:p=1, color_jitter"
    assert main([*args, "--plots", str(augmented), "--sheet-augment", spec]) == 0
    report = scan_dataset(two_videos, frames=[17], resolution=(64, 64), progress=False)
    buckets = [(b.width, b.height, b.frames) for b in report.buckets]
    with Image.open(augmented / "contact_sheet.png") as image:
        assert image.size == contact_sheet_size(buckets, augmented=True)
    with Image.open(plain / "contact_sheet.png") as image:
        assert image.size == contact_sheet_size(buckets)
    thumb = thumbnail_width(buckets[0][0], buckets[0][1], 64)
    a = _thumb(str(plain / "contact_sheet.png"), thumb, 64)
    b = _thumb(str(augmented / "contact_sheet.png"), thumb, 64)
    assert not _same(a, b)
    capsys.readouterr()
    # A bad spec is a configuration error (exit 2, every problem named), found before the scan.
    assert main([*args, "--plots", str(tmp_path / "x"), "--sheet-augment", "flop,flip:p=2"]) == 2
    err = capsys.readouterr().err
    assert "'flop'" in err and "RandomFlip.p" in err and "2 configuration problems" in err
    assert not (tmp_path / "x").exists()


def test_augmentations_from_spec_builds_the_named_stages() -> None:
    from wan_data.stages.augment import augmentations_from_spec

    stages = augmentations_from_spec("crop_jitter:min_scale=0.9:seed=4, flip:p=1,color_jitter")
    assert [repr(s) for s in stages] == [
        "CropJitter(scale=(0.9, 1.0), seed=4)",
        "RandomFlip(p=1.0, seed=0)",
        "ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, seed=0)",
    ]
    assert augmentations_from_spec("") == [] and augmentations_from_spec(" , ") == []
    with pytest.raises(ConfigError) as info:
        augmentations_from_spec("flip,flip,blur,color_jitter:hue=x:gamma=1,crop_jitter:seed=1.5")
    problems = "\n".join(info.value.problems)
    assert len(info.value.problems) == 5, problems
    for text in ("given twice", "'blur'", "color_jitter:hue ('x')", "'gamma=1'", "must be an int"):
        assert text in problems, text


def test_augmented_thumbnails_come_from_the_stages_output(two_videos: Path, tmp_path: Path) -> None:
    """The sheet draws what the stages return, not the decoded clip: blacken every frame."""

    class _Black(MapStage[Clip, Clip]):
        name = "black"
        accepts = Clip

        def process_in(self, item: Clip, context: StageContext) -> list[Clip]:
            return [dataclasses.replace(item, pixels=torch.zeros_like(item.pixels))]

    report = scan_dataset(two_videos, frames=[5], resolution=(64, 64), progress=False)
    sheet = contact_sheet(report, tmp_path / "s.png", frames_per_sample=1, augmentations=[_Black()])
    assert sheet.applied == ("black", "black")
    width = thumbnail_width(sheet.buckets[0][0], sheet.buckets[0][1], 64)
    assert _thumb(sheet.path, width, 64).getextrema() == ((0, 0), (0, 0), (0, 0))
