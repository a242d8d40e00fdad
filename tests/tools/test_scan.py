"""wan-data scan: every file's verdict equals what WanVideoDataset does with it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from bounded import finishes
from media import Corpus, make_video
from PIL import Image

from wan_data import ConfigError, WanVideoDataset
from wan_data.media.sampling import available_frames
from wan_data.tools.cli import main
from wan_data.tools.plots import bucket_histogram_size, contact_sheet_size
from wan_data.tools.scan import ScanReport, format_scan_table, scan_dataset

OPTIONS: dict[str, Any] = {"frames": [17, 33], "fps": 16, "resolution": (64, 64)}


@pytest.fixture(scope="module")
def report(corpus: Corpus) -> ScanReport:
    return scan_dataset(corpus.root, **OPTIONS, threads=2, progress=False)


def rows_by_name(report: ScanReport, corpus: Corpus) -> dict[str, Any]:
    return {str(Path(r.path).relative_to(corpus.root)): r for r in report.rows}


def test_every_broken_file_is_bad_with_its_expected_reason(
    report: ScanReport, corpus: Corpus
) -> None:
    rows = rows_by_name(report, corpus)
    for spec in corpus.by_kind("broken"):
        row = rows[spec.name]
        assert row.status == "bad" and row.reason == spec.expected_reason, (spec.name, row)
        assert row.message and row.stage and row.bucket is None and row.clips == 0
    short = rows[corpus.by_kind("short")[0].name]
    assert short.status == "bad" and short.reason == "too_short"
    # It opened before failing validation: its metadata explains the verdict.
    assert short.duration_seconds == pytest.approx(0.5) and short.width == 96
    assert rows["damaged/truncated_after_index.mp4"].reason == "truncated"
    # Damage inside an intact index is invisible to metadata: good here, found when decoded.
    assert rows["damaged/corrupt_middle.mp4"].status == "good"


def test_every_good_file_is_good_with_a_bucket(report: ScanReport, corpus: Corpus) -> None:
    rows = rows_by_name(report, corpus)
    for spec in corpus.by_kind("good", "image"):
        row = rows[spec.name]
        assert row.status == "good" and row.reason is None, (spec.name, row)
        assert (row.width, row.height) == (spec.width, spec.height)
        assert row.bucket is not None and row.clips == 1
        width, height, frames = row.bucket
        assert width % 16 == 0 and height % 16 == 0
        assert frames == (1 if spec.kind == "image" else 33)
        assert row.has_caption == (spec.caption is not None)
    assert rows["good/h264_landscape.mp4"].num_frames == 54
    assert rows["good/h264_landscape.mp4"].fps == pytest.approx(24.0)
    assert rows["images/landscape.png"].fps is None
    assert not {s.name for s in corpus.by_kind("ignored")} & set(rows)


def test_counts_are_consistent(report: ScanReport, corpus: Corpus) -> None:
    totals = report.totals()
    assert totals["good"] + totals["bad"] == totals["files"] == len(report.rows)
    assert sum(totals["bad_by_reason"].values()) == totals["bad"]
    assert totals["good_videos"] + totals["good_images"] == totals["good"]
    assert totals["samples"] == len(report.samples) == sum(r.clips for r in report.rows)
    assert sum(b.files for b in report.buckets) == totals["good"]
    expected_files = len(corpus.by_kind("good", "image", "broken", "short", "damaged"))
    assert totals["files"] == expected_files
    assert report.breaker is None  # a third of the corpus is bad: training would run


def test_vfr_captions_trimming_and_summaries(report: ScanReport, corpus: Corpus) -> None:
    assert report.vfr_files == [str(corpus.path("good/h264_vfr.mp4"))]
    uncaptioned = {
        str(corpus.path(s.name))
        for s in corpus.by_kind("good", "image", "damaged")
        if s.caption is None
    }
    assert set(report.missing_captions) == uncaptioned - {
        str(corpus.path("damaged/truncated_after_index.mp4"))
    }
    landscape = rows_by_name(report, corpus)["good/h264_landscape.mp4"]
    # 2.25 s of a 24 fps source, counted at 16 fps as the clip planner counts it. Its clip
    # already has the largest bucket (33): the frames after it are head sampling's, not a
    # rounding loss.
    available = available_frames(2.25, 16, source_fps=24.0)
    assert available >= 36
    assert (
        landscape.frames_available,
        landscape.frames_trimmed_to_bucket,
        landscape.frames_unused_by_sampling,
    ) == (available, 0, available - 33)
    summary = report.summary()
    assert summary["fps"]["min"] == pytest.approx(20.0)  # the VFR clip's average
    assert summary["duration_seconds"]["max"] == pytest.approx(3.0)
    assert summary["resolution"]["count"] == report.totals()["good"]


def test_json_round_trip_equals_as_dict(report: ScanReport) -> None:
    data = report.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["totals"]["files"] == len(data["files"])
    assert {b["width"] for b in data["buckets"]} and data["options"]["frames"] == [17, 33]


@pytest.mark.parametrize(
    "options",
    [
        OPTIONS,
        {
            "frames": [5, 9],
            "fps": None,
            "resolution": [(64, 64), (128, 128)],
            "sampling": "chunks",
            "clips_per_video": 0,
            "no_upscale": True,
        },
        {},  # the defaults must stay WanVideoDataset's
    ],
    ids=["head", "native-chunks-no-upscale", "defaults"],
)
def test_scan_agrees_with_the_dataset(corpus: Corpus, options: dict[str, Any]) -> None:
    scanned = scan_dataset(corpus.root, **options, threads=2, progress=False)
    ds = WanVideoDataset(corpus.root, **options, probe_threads=2)
    per_key: dict[str, list[tuple[int, int, int]]] = {}
    for s in ds.samples:
        per_key.setdefault(s.key.split("#")[0], []).append(
            (s.bucket.width, s.bucket.height, s.bucket.frames)
        )
    good = {r.key: r for r in scanned.good}
    assert set(good) == set(per_key)
    for key, buckets in per_key.items():
        assert {good[key].bucket} == set(buckets) and good[key].clips == len(buckets)
    skipped = {(r["path"], r["reason"]) for r in ds.report()["skipped"]}
    assert {(r.path, r.reason) for r in scanned.bad} == skipped
    buckets = ds.bucket_report()
    assert scanned.frames_trimmed_to_bucket == buckets["frames_trimmed_to_bucket"]
    assert scanned.frames_unused_by_sampling == buckets["frames_unused_by_sampling"]
    assert [(s.key, s.bucket) for s in scanned.samples] == [(s.key, s.bucket) for s in ds.samples]


def test_table_lists_sections_and_bad_files(report: ScanReport, corpus: Corpus) -> None:
    text = format_scan_table(report)
    for spec in corpus.by_kind("broken"):
        assert spec.name in text and str(spec.expected_reason) in text
    for section in ("verdict", "good files", "buckets:", "4k+1 trimming", "variable frame rate"):
        assert section in text
    assert "good/h264_vfr.mp4" in text
    trimmed = format_scan_table(report, max_rows=2)
    assert f"and {len(report.bad) - 2} more file(s)" in trimmed
    assert len(trimmed.splitlines()) < len(text.splitlines())


def test_an_empty_folder_scans_to_an_empty_report(tmp_path: Path) -> None:
    empty = scan_dataset(tmp_path, progress=False)
    assert empty.rows == [] and empty.buckets == [] and empty.samples == []
    data = empty.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["totals"]["files"] == 0 and data["summary"]["fps"]["median"] is None
    assert "0 file(s)" in format_scan_table(empty)


def test_config_problems_are_reported_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        scan_dataset(tmp_path / "missing", frames=[18], resolution=(830, 480), fps=-1)
    assert len(info.value.problems) == 4


def test_scan_reports_when_training_would_trip_the_breaker(tmp_path: Path) -> None:
    for i in range(24):
        (tmp_path / f"junk_{i:02d}.mp4").write_bytes(b"not a video" * (i + 1))
    make_video(tmp_path / "ok.mp4", width=64, height=64, fps=16, num_frames=20)
    scanned = scan_dataset(tmp_path, frames=[17], resolution=(64, 64), progress=False)
    assert len(scanned.bad) == 24 and len(scanned.good) == 1  # every verdict, none cut short
    assert scanned.breaker is not None and "circuit-breaker" in scanned.breaker
    assert "training would stop here" in format_scan_table(scanned)
    assert (
        scan_dataset(tmp_path, frames=[17], breaker_threshold=None, progress=False).breaker is None
    )


def test_cli_prints_the_table_and_writes_json_and_plots(
    corpus: Corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, plots = tmp_path / "scan.json", tmp_path / "plots"
    args = ["scan", str(corpus.root), "--frames", "17", "33", "--fps", "16"]
    args += ["--resolution", "64x64", "--threads", "2", "--no-progress"]
    args += ["--json", str(out), "--plots", str(plots), "--sheet-samples", "2"]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    data = json.loads(out.read_text())
    bad = data["totals"]["bad"]
    assert bad > 0 and f"{bad} bad file(s) of {data['totals']['files']}" in stdout
    for spec in corpus.by_kind("broken"):
        assert spec.name in stdout
    expected = scan_dataset(corpus.root, **OPTIONS, progress=False).as_dict()
    assert {**data, "seconds": 0} == {**expected, "seconds": 0}
    with Image.open(plots / "buckets.png") as image:
        assert image.format == "PNG"
        assert image.size == bucket_histogram_size(len(data["buckets"]))
    shown = [(b["width"], b["height"], b["frames"]) for b in data["buckets"][:12]]
    with Image.open(plots / "contact_sheet.png") as image:
        assert image.size == contact_sheet_size(shown, per_bucket=2)


def test_cli_config_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["scan", str(tmp_path / "nope"), "--frames", "18", "--fps", "fast"])
    assert code == 2
    err = capsys.readouterr().err
    assert "configuration problem" in err and "18" in err and "'fast'" in err
    with pytest.raises(SystemExit) as info:  # argparse: usage errors exit 2 as well
        main(["scan", str(tmp_path), "--max-rows", "0"])
    assert info.value.code == 2


@pytest.fixture(scope="module")
def lengths(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Videos at 16 fps of 20, 40, 70, 100 and 170 frames (and an image, which loses none)."""
    root = tmp_path_factory.mktemp("lengths")
    for frames in (20, 40, 70, 100, 170):
        make_video(root / f"v{frames:03d}.mp4", width=64, height=64, fps=16, num_frames=frames)
    Image.new("RGB", (64, 64), (120, 30, 200)).save(root / "still.png")
    return root


LENGTH_OPTIONS: dict[str, Any] = {"frames": [17, 33, 81], "fps": 16, "resolution": (64, 64)}


@pytest.mark.parametrize(
    ("sampling", "per_file", "totals"),
    [
        # frames available -> (trimmed to a bucket, unused by sampling); buckets 17, 33, 81:
        # 20 -> 17 (3, 0); 40 -> 33 (7, 0); 70 -> 33 (37, 0): a bucket up to 81 was allowed;
        # 100 -> 81 (0, 19); 170 -> 81 (0, 89): the one window already has the largest bucket.
        ("head", {20: (3, 0), 40: (7, 0), 70: (37, 0), 100: (0, 19), 170: (0, 89)}, (47, 108)),
        # chunks: 70 -> 2 x 33 (4, 0); 170 -> 2 x 81 (0, 8).
        ("chunks", {20: (3, 0), 40: (7, 0), 70: (4, 0), 100: (0, 19), 170: (0, 8)}, (14, 27)),
    ],
)
def test_frames_trimmed_to_a_bucket_and_unused_by_sampling_are_told_apart(
    lengths: Path,
    sampling: str,
    per_file: dict[int, tuple[int, int]],
    totals: tuple[int, int],
) -> None:
    options = {**LENGTH_OPTIONS, "sampling": sampling, "clips_per_video": 0}
    scanned = scan_dataset(lengths, **options, threads=2, progress=False)
    rows = {Path(r.path).name: r for r in scanned.rows}
    assert all(r.good for r in rows.values())
    for frames, expected in per_file.items():
        row = rows[f"v{frames:03d}.mp4"]
        assert row.frames_available == frames
        assert (row.frames_trimmed_to_bucket, row.frames_unused_by_sampling) == expected, frames
    assert (
        rows["still.png"].frames_trimmed_to_bucket,
        rows["still.png"].frames_unused_by_sampling,
    ) == (0, 0)
    trimmed, unused = totals
    assert (scanned.frames_trimmed_to_bucket, scanned.frames_unused_by_sampling) == totals
    data = scanned.as_dict()
    assert (data["frames_trimmed_to_bucket"], data["frames_unused_by_sampling"]) == totals
    text = format_scan_table(scanned)
    assert (
        f"frames lost to 4k+1 trimming (clip rounded down to a frame bucket): {trimmed} "
        f"({trimmed / 5:.1f} per good video)"
    ) in text
    assert (
        f"frames unused by {sampling} sampling (beyond the largest bucket): {unused} "
        f"({unused / 5:.1f} per good video)"
    ) in text
    buckets = WanVideoDataset(lengths, **options, probe_threads=2).bucket_report()
    assert (buckets["frames_trimmed_to_bucket"], buckets["frames_unused_by_sampling"]) == totals
    assert buckets["frames_trimmed_to_bucket_mean_per_video"] == round(trimmed / 5, 2)
    assert buckets["frames_unused_by_sampling_mean_per_video"] == round(unused / 5, 2)


def test_moving_windows_count_no_unused_frames(lengths: Path) -> None:
    """``random`` windows move every epoch: nothing is one tail lost for good, so neither
    count is given (``None``, not a 0 that would read as "nothing lost")."""
    options = {**LENGTH_OPTIONS, "sampling": "random"}
    scanned = scan_dataset(lengths, **options, threads=2, progress=False)
    assert scanned.frames_trimmed_to_bucket is None and scanned.frames_unused_by_sampling is None
    assert all(r.frames_unused_by_sampling is None for r in scanned.rows if r.media_type == "video")
    assert "not counted for random sampling" in format_scan_table(scanned)
    buckets = WanVideoDataset(lengths, **options, probe_threads=2).bucket_report()
    assert buckets["frames_trimmed_to_bucket"] is None
    assert buckets["frames_unused_by_sampling"] is None


def test_strict_scan_finds_concealed_damage_and_low_frame_rates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from media import damage_bytes, key_picture_data

    root = tmp_path / "data"
    clean = root / "clean.mp4"
    make_video(clean, width=64, height=64, fps=24, num_frames=48, extra=["-g", "1000"])
    damage_bytes(clean, root / "damaged.mp4", key_picture_data(clean, "h264"), 0.5)
    make_video(root / "slow.mp4", width=64, height=64, fps=10.0, num_frames=30)
    options: dict[str, Any] = {"frames": [17], "fps": 16, "resolution": (64, 64)}
    fast = scan_dataset(root, **options, progress=False)
    assert fast.bad == []  # a metadata-speed scan cannot see concealed damage
    assert [Path(p).name for p in fast.low_fps_files] == ["slow.mp4"]
    assert [Path(p).name for p in fast.as_dict()["low_fps"]] == ["slow.mp4"]
    strict = scan_dataset(root, **options, strict=True, min_source_fps=12, progress=False)
    verdicts = {Path(r.path).name: r.reason for r in strict.bad}
    assert verdicts == {"damaged.mp4": "corrupt_frames", "slow.mp4": "low_fps"}
    args = ["scan", str(root), "--frames", "17", "--fps", "16", "--resolution", "64x64"]
    assert main([*args, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "low frame rate (frames repeated to reach the target fps): 1" in out
    assert main([*args, "--no-progress", "--strict"]) == 0  # bad files are findings
    out = capsys.readouterr().out
    assert "corrupt_frames" in out and "damaged.mp4" in out


@pytest.mark.parametrize(("frame_stride", "kept"), [(1, True), (2, True), (3, False)])
def test_native_rate_frame_stride_decides_what_is_too_short(
    tmp_path: Path, frame_stride: int, kept: bool
) -> None:
    """With ``fps=None`` a 12-frame video offers every ``frame_stride``-th frame: 6 at stride
    2 (a 5-frame clip fits), 4 at stride 3 (too short); the dataset's probe agrees."""
    make_video(tmp_path / "v.mp4", width=64, height=64, fps=16, num_frames=12)
    options: dict[str, Any] = {
        "frames": [5],
        "fps": None,
        "frame_stride": frame_stride,
        "resolution": (64, 64),
    }
    scanned = scan_dataset(tmp_path, **options, threads=1, progress=False)
    (row,) = scanned.rows
    assert scanned.options["frame_stride"] == frame_stride
    assert scanned.options["stride"] is None and scanned.options["fps"] is None
    assert json.loads(json.dumps(scanned.as_dict()))["options"]["frame_stride"] == frame_stride
    if kept:
        assert row.good and row.bucket == (64, 64, 5) and row.clips == 1
        assert row.frames_available == (12 - 1) // frame_stride + 1
    else:
        assert not row.good and row.reason == "too_short" and row.stage == "probe"
        assert "gives 4 native frames" in (row.message or "")
    assert len(WanVideoDataset(tmp_path, **options, probe_threads=1).samples) == int(kept)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_source_replaced_by_a_fifo_before_the_header_read_does_not_block_the_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The VFR check reads each good video's header once more after the probe; a source
    swapped for a FIFO in between used to block FFmpeg's open of the path forever. Now it is
    opened as a regular file only: refused at once, its header rate unknown."""
    import wan_data.tools.scan as scan_module

    video = tmp_path / "v.mp4"
    make_video(video, width=64, height=64, fps=16, num_frames=20)
    real = scan_module._header_rates

    def swapped(probed: Any, threads: int) -> Any:
        video.unlink()
        os.mkfifo(video)
        return real(probed, threads)

    monkeypatch.setattr(scan_module, "_header_rates", swapped)
    scanned = finishes(
        lambda: scan_dataset(tmp_path, **OPTIONS, threads=1, progress=False),
        20.0,
        "the scan blocked on the FIFO",
    )
    assert isinstance(scanned, ScanReport), scanned
    (row,) = scanned.rows
    assert row.good and row.vfr is None  # probed before the swap; the header rate unknown
