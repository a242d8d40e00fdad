"""Users compose: their own stages at the dataset's named points keep the plan and resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from media import make_video

from wan_data import ConfigError, PipelineHealthError, WanVideoDataset
from wan_data.items import Clip, Probed
from wan_data.stages import Filter, Map
from wan_data.tools.scan import scan_dataset

pytestmark = pytest.mark.integration

OPTIONS: dict[str, Any] = {
    "frames": [17],
    "fps": 16,
    "resolution": (32, 32),
    "batch_size": 2,
    "seed": 3,
    "sampling": "random",
    "crop": "random",
}


def long_enough(item: Probed) -> bool:
    return item.metadata.duration >= 2.0


def invert(clip: Clip) -> Clip:
    return dataclasses.replace(clip, pixels=255 - clip.pixels)


MIN_DURATION = Filter(long_enough, name="min_duration", why="shorter than 2 s")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compose")
    for i in range(6):  # 1.5 s: fills 17 frames, but the filter drops them
        make_video(root / f"short_{i}.mp4", width=48, height=32, fps=16, num_frames=24)
    for i in range(7):  # 2.5 s
        make_video(root / f"long_{i}.mp4", width=48, height=32, fps=16, num_frames=40)
    return root


def _keys(batches: list[dict[str, Any]]) -> list[list[str]]:
    return [list(b["keys"]) for b in batches]


def test_an_index_filter_keeps_planned_full_batches_and_exact_resume(data: Path) -> None:
    ds = WanVideoDataset(data, **OPTIONS, index_stages=[MIN_DURATION])
    assert len(ds.samples) == 7 and all("long_" in s.path for s in ds.samples)
    epoch = list(ds.loader(num_workers=2))
    assert len(epoch) == len(ds) == 4  # 7 samples, batch 2, the last batch filled by a repeat
    for batch in epoch:
        assert len(batch["paths"]) == 2  # full
        assert len(set(batch["buckets"])) == 1  # bucket-homogeneous
        assert all("long_" in p for p in batch["paths"])
    skipped = [r for r in ds.report()["skipped"] if r["stage"] == "min_duration"]
    assert len(skipped) == 6 and {r["reason"] for r in skipped} == {"filtered"}
    assert "shorter than 2 s" in skipped[0]["message"]

    # Exact resume: stop after two batches, resume in a new process's dataset.
    ds.set_epoch(5)
    reference = list(ds.loader(num_workers=0))
    ds.set_epoch(5)
    it = iter(ds.loader(num_workers=0))
    next(it), next(it)
    state = ds.state_dict()
    again = WanVideoDataset(data, **OPTIONS, index_stages=[MIN_DURATION])
    again.load_state_dict(state)
    rest = list(again.loader(num_workers=2))
    assert _keys(rest) == _keys(reference[2:])
    for mine, theirs in zip(rest, reference[2:], strict=True):
        assert torch.equal(mine["pixels"], theirs["pixels"])


def test_another_filter_is_another_dataset(data: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    filtered = WanVideoDataset(data, **OPTIONS, index_stages=[MIN_DURATION], sample_index=index)
    state = {**filtered.state_dict(last_batch={"epoch": 0, "position": 0})}
    # Warm start from the snapshot of another stage list: never loaded for this one.
    plain = WanVideoDataset(data, **OPTIONS, sample_index=index)
    assert len(plain.samples) == 13
    with pytest.raises(ConfigError, match="fingerprint"):
        plain.load_state_dict(state)
    warm = WanVideoDataset(data, **OPTIONS, index_stages=[MIN_DURATION], sample_index=index)
    assert [s.key for s in warm.samples] == [s.key for s in filtered.samples]


def test_a_clip_stage_transforms_every_member(data: Path) -> None:
    plain = WanVideoDataset(data, **OPTIONS)
    inverted = WanVideoDataset(data, **OPTIONS, clip_stages=[Map(invert, name="invert")])
    for a, b in zip(plain.loader(num_workers=0), inverted.loader(num_workers=2), strict=True):
        assert a["keys"] == b["keys"]
        torch.testing.assert_close(b["pixels"], -a["pixels"])
    assert inverted.report()["stages"]["invert"]["out"] > 0


def test_stages_that_are_not_stages_are_configuration_errors(data: Path) -> None:
    with pytest.raises(ConfigError) as info:
        WanVideoDataset(data, **OPTIONS, index_stages=[long_enough], clip_stages="invert")  # type: ignore[list-item,arg-type]
    text = str(info.value)
    assert "index_stages[0]" in text and "wan_data.stages.Filter" in text
    assert "clip_stages" in text


def test_the_scan_reports_what_an_index_stage_drops(data: Path) -> None:
    report = scan_dataset(data, **OPTIONS, index_stages=[MIN_DURATION], progress=False)
    bad = {Path(r.path).name: r for r in report.bad}
    assert set(bad) == {f"short_{i}.mp4" for i in range(6)}
    assert {r.reason for r in bad.values()} == {"filtered"}
    assert {r.stage for r in bad.values()} == {"min_duration"}
    assert report.options["index_stages"] == ["min_duration"]


@pytest.mark.timeout(300)
def test_the_breaker_stops_a_run_whose_files_break_after_construction(tmp_path: Path) -> None:
    """Training reads members through the decode stage: its breaker sees every outcome."""
    root = tmp_path / "data"
    for i in range(24):
        make_video(root / f"v{i:02d}.mp4", width=32, height=32, fps=16, num_frames=20)
    ds = WanVideoDataset(root, **{**OPTIONS, "frames": [5], "batch_size": 1}, breaker_min_items=10)
    for i in range(20):  # replaced after construction: every read is refused (source_changed)
        (root / f"v{i:02d}.mp4").write_bytes(b"garbage " * (i + 3))
    with pytest.raises(PipelineHealthError, match="decode"):
        list(ds.loader(num_workers=0))
