"""Scan pictures: deterministic sizes, real decoding, and no crash on files that fail to decode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from media import make_video
from PIL import Image

import wan_data.tools.plots as plots
from wan_data import ConfigError
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
