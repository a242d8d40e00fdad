"""The wan-data command line: help, version, and the demo (the README's main job)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wan_data.cli import format_report, main


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


@pytest.mark.timeout(300)
def test_demo_streams_batches_and_reports_the_broken_files(tmp_path: Path) -> None:
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
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stderr
    assert "batch 0: pixels" in result.stdout
    for name in ("empty.mp4", "random_bytes.mp4", "notes.mp4", "truncated.mp4"):
        assert name in result.stdout
    report = json.loads(out.read_text())
    for i in range(4):  # every good video is in some batch
        assert f"clip_{i:03d}.mp4" in result.stdout
    assert report["samples"] == 2 * report["batches"]  # full batches of 2
    assert sorted(Path(r["path"]).name for r in report["skipped"]) == [
        "empty.mp4",
        "notes.mp4",
        "random_bytes.mp4",
        "truncated.mp4",
    ]


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


@pytest.mark.timeout(300)
def test_cache_command_fills_verifies_and_prunes(tmp_path: Path) -> None:
    from media import make_video
    from vae_fixtures import make_tiny_wan21_vae

    from wan_data.latent_cache import LatentCache

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
