"""The wan-data command line: help, version, the demo (the README's main job) and cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wan_data.tools.cli import format_report, main


def test_help_lists_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "wan-data" in out and "demo" in out


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "usage" in capsys.readouterr().out


def test_python_dash_m_runs_the_same_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wan_data", "--version"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    assert result.stdout.startswith("wan_data ")


BROKEN = ["empty.mp4", "notes.mp4", "random_bytes.mp4", "truncated.mp4"]


@pytest.mark.timeout(300)
def test_demo_runs_scan_prepare_an_epoch_and_reports_the_broken_files(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wan_data",
            "demo",
            "--videos",
            "4",
            "--json",
            str(out),
            "--out",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=280,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert len(text.splitlines()) < 80, text
    # 1. the scan table: verdicts, buckets and every bad file with its reason
    assert "== 1. scan" in text and "bad: unreadable               4" in text
    assert "buckets: 4 sample(s) per epoch in 4 bucket(s)" in text
    for name in BROKEN:
        assert f"unreadable      broken/{name}" in text
    # 2. the cache pass
    assert "cache pass: 4 clip(s) encoded, 0 already cached, 0 skipped" in text
    # 3. the epoch: latents (B, z=16, T=(33-1)/4+1, h, w) for every good video
    assert "batch 0: latents (2, 16, 9, " in text
    assert "epoch 0: 4 batch(es), 8 sample(s), 4 latents shape(s)" in text
    for i in range(4):
        assert f"clip_{i:03d}.mp4" in text
    # 4. the report: every broken file with its stage and reason, and the cache
    report_part = text[text.index("== 4. report") :]
    for name in BROKEN:
        assert f"broken/{name}  [probe] unreadable (RuntimeError)" in report_part
    assert "cache: 4 entries" in report_part and "8 hit(s), 0 miss(es)" in report_part
    report = json.loads(out.read_text())
    assert report["batches"] == 4 and report["samples"] == 8  # full batches of 2
    assert sorted(Path(r["path"]).name for r in report["skipped"]) == BROKEN
    assert {r["reason"] for r in report["skipped"]} == {"unreadable"}
    assert report["prepare"]["encoded"] == 4
    assert report["scan"]["bad"] == 4 and report["scan"]["good"] == 4
    assert report["cache"]["total_items"] == 4


@pytest.mark.timeout(300)
def test_demo_rerun_in_the_same_folder_reuses_dataset_and_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    args = ["demo", "--videos", "2", "--batch-size", "1", "--out", str(work)]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "cache pass: 2 clip(s) encoded, 0 already cached" in first
    assert main([*args, "--json", str(tmp_path / "r.json")]) == 0
    second = capsys.readouterr().out
    assert "2 videos, 4 broken files (reused)" in second
    assert "cache pass: 0 clip(s) encoded, 2 already cached" in second
    assert "epoch 0: 2 batch(es), 2 sample(s)" in second
    report = json.loads((tmp_path / "r.json").read_text())
    # Known-bad files are still skipped and listed (by the ledger this time, or by the probe).
    assert sorted(Path(r["path"]).name for r in report["skipped"]) == BROKEN
    assert report["cache"]["total_items"] == 2  # nothing re-encoded under a new key


@pytest.mark.timeout(300)
def test_demo_pixels_streams_pixel_batches_without_a_vae(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    json_path = tmp_path / "r.json"
    assert (
        main(["demo", "--pixels", "--videos", "3", "--out", str(work), "--json", str(json_path)])
        == 0
    )
    text = capsys.readouterr().out
    assert "--pixels" in text and "cache pass" not in text
    assert "batch 0: pixels (2, 3, 33, " in text and "float32" in text
    assert "epoch 0: " in text and "pixels shape(s)" in text
    assert not (work / "tiny_vae").exists() and not (work / "latent_cache").exists()
    for name in BROKEN:
        assert f"broken/{name}  [probe] unreadable" in text
    report = json.loads(json_path.read_text())
    assert report["cache"] is None and "prepare" not in report
    assert sorted(Path(r["path"]).name for r in report["skipped"]) == BROKEN
    assert report["samples"] == 2 * report["batches"]


def test_format_report_lists_stages_and_skips() -> None:
    report = {
        "stages": {"probe": {"in": 3, "out": 2, "failed": 1, "seconds": 0.5}},
        "batches": 1,
        "samples": 2,
        "skipped": [
            {
                "path": "/d/x.mp4",
                "stage": "probe",
                "reason": "unreadable",
                "error_type": "RuntimeError",
            }
        ],
    }
    text = format_report(report)
    assert "probe" in text and "/d/x.mp4" in text and "unreadable" in text
    assert "samples: 2" in text
    assert "cache:" not in text  # a pixel dataset has no cache


def test_format_report_orders_stages_shortens_paths_and_shows_the_cache() -> None:
    stage = {"in": 1, "out": 1, "failed": 0, "seconds": 0.0}
    report = {
        "stages": {"decode": stage, "custom": stage, "collect": stage, "probe": stage},
        "batches": 0,
        "samples": 0,
        "skipped": [
            {"path": "/data/sub/x.mp4", "stage": "probe", "reason": "r", "error_type": "E"},
            {"path": "/elsewhere/y.mp4", "stage": "decode", "reason": "r", "error_type": "E"},
        ],
        "cache": {
            "total_items": 3,
            "cache_size_mb": 0.25,
            "hits": 5,
            "misses": 1,
            "corruption_count": 0,
            "quarantined": 0,
        },
    }
    lines = format_report(report, relative_to="/data").splitlines()
    assert [line.split()[0] for line in lines[1:5]] == ["collect", "probe", "decode", "custom"]
    assert "  sub/x.mp4  [probe] r (E)" in lines
    assert "  /elsewhere/y.mp4  [decode] r (E)" in lines
    assert lines[-1].startswith("cache: 3 entries, 0.25 MB; 5 hit(s), 1 miss(es)")


@pytest.mark.timeout(300)
def test_cache_command_fills_verifies_and_prunes(tmp_path: Path) -> None:
    from media import make_video
    from vae_fixtures import make_tiny_wan21_vae

    from wan_data.latents.store import LatentCache

    data = tmp_path / "data"
    data.mkdir()
    for name, (w, h) in {"a.mp4": (64, 64), "b.mp4": (96, 64)}.items():
        make_video(data / name, width=w, height=h, fps=16, num_frames=20)
    (data / "bad.mp4").write_bytes(b"junk")
    vae = make_tiny_wan21_vae(tmp_path / "vae")
    cache = tmp_path / "cache"
    base = [
        sys.executable,
        "-m",
        "wan_data",
        "cache",
        str(data),
        "--vae",
        str(vae),
        "--cache-dir",
        str(cache),
        "--frames",
        "5",
        "--fps",
        "8",
        "--resolution",
        "64x64",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--no-progress",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.run(
        [*base, "--json", str(tmp_path / "s.json")],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
    )
    assert first.returncode == 0, first.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["encoded"] == 2 and summary["already_cached"] == 0
    assert "bad.mp4" in first.stdout
    # an orphan: an entry no clip of this dataset uses
    orphan = LatentCache(cache)
    orphan.put("f" * 64, torch.zeros(16, 2, 8, 8), {"path": "gone.mp4"})
    second = subprocess.run(
        [*base, "--verify", "--prune"], capture_output=True, text=True, timeout=280, env=env
    )
    assert second.returncode == 0, second.stderr
    assert "0 encoded, 2 already cached" in second.stdout
    assert "pruned: 1" in second.stdout
    keys = LatentCache(cache).keys()
    assert "f" * 64 not in keys and len(keys) == 2
