"""Property 7: metrics accuracy — counts equal the injected failures, for any worker count.

Feature: wan-training-pipeline-fixes, Property 7: metrics accuracy

A folder is assembled from a pool of tiny good videos and broken files (empty, garbage, text,
truncated before the index, damaged header, too short) built once; ``WanVideoDataset`` is
iterated through a ``DataLoader`` with 0, 1 or 2 fork workers, and ``report()`` must give the
ground truth: per-stage in/out/failed counts and reasons, one skip record per broken file, every
good video in some full batch, one decode per batch slot; and the same report (timings aside) as
with ``num_workers=0``.
"""

from __future__ import annotations

import collections
import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prop_helpers import BROKEN_FILES, GOOD_VIDEOS, MediaPool, fast_policy, link_or_copy
from torch.utils.data import DataLoader

from wan_data.dataset import WanVideoDataset
from wan_data.items import Failed, Probed, Source
from wan_data.stages.probe import ProbeLimits, probe

PROPERTY = "Feature: wan-training-pipeline-fixes, Property 7: metrics accuracy"
GOOD = [v.name for v in GOOD_VIDEOS]
BROKEN = sorted(BROKEN_FILES)
FRAMES = [5]
FPS = 8.0
_counter = itertools.count()


@pytest.fixture(scope="module")
def ground_truth(media_pool: MediaPool) -> dict[str, str | None]:
    """Probe every pool file alone once: None for a good file, else the reason it fails."""
    truth: dict[str, str | None] = {}
    limits = ProbeLimits(min_frames=min(FRAMES), fps=FPS)
    for name, path in media_pool.all_files().items():
        source = Source(key=name, path=str(path), media_type="video")
        (out,) = probe([source], policy=fast_policy(), limits=limits)
        truth[name] = None if isinstance(out, Probed) else out.reason
        assert isinstance(out, (Probed, Failed))
    assert truth == {**dict.fromkeys(GOOD), **BROKEN_FILES}, truth
    return truth


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("metrics_folders")


def _normalised(report: dict[str, Any]) -> dict[str, Any]:
    """The report without timings and batch counts (those depend on the worker split)."""
    stages = {
        name: {k: s[k] for k in ("in", "out", "failed", "failed_by_reason", "failed_by_error_type")}
        for name, s in report["stages"].items()
    }
    skipped = sorted(
        (tuple(sorted((k, str(v)) for k, v in r.items())) for r in report["skipped"]),
    )
    return {
        "stages": stages,
        "skipped": skipped,
        "samples": report["samples"],
        "dropped_in_collate": report["dropped_in_collate"],
        "sources": report["sources"],
    }


def _run(folder: Path, batch_size: int, workers: int) -> tuple[dict[str, Any], list[dict]]:
    dataset = WanVideoDataset(
        folder,
        frames=FRAMES,
        fps=FPS,
        resolution=(32, 32),
        batch_size=batch_size,
        breaker_threshold=None,
        policy=fast_policy(),
        num_ffmpeg_threads=1,
    )
    batches = list(DataLoader(dataset, batch_size=None, num_workers=workers))
    return dataset.report(), batches


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    picks=st.lists(st.sampled_from(GOOD + BROKEN), max_size=12),
    workers=st.sampled_from([0, 1, 2]),
    batch_size=st.integers(1, 3),
)
def test_report_counts_equal_ground_truth_for_any_worker_count(
    media_pool: MediaPool,
    ground_truth: dict[str, str | None],
    folders: Path,
    picks: list[str],
    workers: int,
    batch_size: int,
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 7: metrics accuracy"""
    folder = folders / f"example_{next(_counter)}"
    folder.mkdir()
    files = media_pool.all_files()
    chosen: dict[str, str] = {}
    for i, name in enumerate(picks):
        target = folder / f"{i:02d}_{name}"
        link_or_copy(files[name], target)
        chosen[str(target)] = name
    good = sum(1 for name in chosen.values() if ground_truth[name] is None)
    broken = collections.Counter(
        ground_truth[name] for name in chosen.values() if ground_truth[name] is not None
    )
    total = len(chosen)

    report, batches = _run(folder, batch_size, workers)

    stages = report["stages"]
    assert (stages["collect"]["in"], stages["collect"]["out"], stages["collect"]["failed"]) == (
        total,
        total,
        0,
    )
    probe_stats = stages.get("probe", {"in": 0, "out": 0, "failed": 0, "failed_by_reason": {}})
    assert (probe_stats["in"], probe_stats["out"], probe_stats["failed"]) == (
        total,
        good,
        broken.total(),
    )
    assert probe_stats["failed_by_reason"] == dict(sorted(broken.items()))
    bucket_stats = stages.get("bucket", {"in": 0, "out": 0, "failed": 0})
    assert (bucket_stats["in"], bucket_stats["out"], bucket_stats["failed"]) == (good, good, 0)
    # Every planned batch slot is decoded once (slots exceed the good files when a bucket's
    # remainder is filled by repeats: small_buckets="repeat").
    slots = sum(len(b["keys"]) for b in batches)
    decode_stats = stages.get("decode", {"in": 0, "out": 0, "failed": 0})
    assert (decode_stats["in"], decode_stats["out"], decode_stats["failed"]) == (slots, slots, 0)

    skipped = report["skipped"]
    assert len(skipped) == broken.total()
    assert collections.Counter(r["reason"] for r in skipped) == broken
    assert {r["path"] for r in skipped} == {
        p for p, name in chosen.items() if ground_truth[name] is not None
    }
    assert all(r["stage"] == "probe" for r in skipped)

    assert report["samples"] == slots
    assert {p for b in batches for p in b["paths"]} == {
        p for p, name in chosen.items() if ground_truth[name] is None
    }
    assert report["batches"] == len(batches)
    assert all(len(b["keys"]) == batch_size for b in batches)
    assert report["sources"] == total

    if workers:
        reference, _ = _run(folder, batch_size, 0)
        assert _normalised(report) == _normalised(reference), "depends on num_workers"
