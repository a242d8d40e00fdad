"""The wan-data command line: help, version, and the demo (the README's main job)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
