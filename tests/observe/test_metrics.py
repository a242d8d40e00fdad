"""metrics.py: per-process counters, atomic snapshots, and the merge across workers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from wan_data.items import Failed
from wan_data.observe.metrics import (
    Metrics,
    StageStats,
    YieldCounter,
    latest_memory,
    merge_reports,
    scalars,
)


def _failed(key: str, path: str, stage: str = "decode", reason: str = "decode_error") -> Failed:
    return Failed(
        key=key,
        path=path,
        stage=stage,
        reason=reason,
        error_type="RuntimeError",
        message=f"decode of file ('{path}') failed.",
    )


def _metrics(
    in_: int, out: int, failed: int, seconds: float, reason: str = "unreadable"
) -> Metrics:
    m = Metrics()
    s = m.stage("probe")
    s.items_in, s.items_out, s.failed, s.seconds = in_, out, failed, seconds
    s.by_reason[reason] += failed
    s.by_error_type["RuntimeError"] += failed
    return m


def test_stage_is_created_once() -> None:
    m = Metrics()
    assert m.stage("probe") is m.stage("probe")
    assert list(m.stages) == ["probe"]


def test_stage_stats_as_dict() -> None:
    s = StageStats(items_in=3, items_out=2, failed=1, seconds=0.1234567)
    s.by_reason.update({"zzz": 1, "aaa": 2})
    s.by_error_type["RuntimeError"] = 1
    d = s.as_dict()
    assert d == {
        "in": 3,
        "out": 2,
        "failed": 1,
        "bypassed": 0,
        "warned": 0,
        "seconds": 0.123457,
        "failed_by_reason": {"aaa": 2, "zzz": 1},
        "failed_by_error_type": {"RuntimeError": 1},
    }
    assert list(d["failed_by_reason"]) == ["aaa", "zzz"]


def test_record_failed_with_epoch() -> None:
    m = Metrics()
    m.record_failed(_failed("k", "/a.mp4"), epoch=2)
    m.record_failed(_failed("j", "/b.mp4"))
    assert m.skipped[0]["epoch"] == 2
    assert m.skipped[0]["path"] == "/a.mp4"
    assert "epoch" not in m.skipped[1]


def test_write_is_atomic_and_valid_json(tmp_path: Path) -> None:
    m = _metrics(5, 4, 1, 0.5)
    m.record_failed(_failed("k", "/a.mp4"), epoch=0)
    m.warnings["none_item_dropped"] += 2
    m.batches, m.samples = 3, 12
    target = tmp_path / "worker-0.json"
    target.write_text("old, half written {")
    m.write(target)
    data = json.loads(target.read_text())
    expected = json.loads(json.dumps(m.snapshot()))
    assert data.pop("time") <= expected.pop("time")
    assert data == expected
    assert data["pid"] == os.getpid()
    assert data["stages"]["probe"]["in"] == 5
    assert data["skipped"][0]["key"] == "k"
    assert data["warnings"] == {"none_item_dropped": 2}
    assert (data["batches"], data["samples"], data["dropped_in_collate"]) == (3, 12, 0)
    # Rewriting replaces the file; no temporary files are left behind.
    m.batches = 4
    m.write(target)
    assert json.loads(target.read_text())["batches"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["worker-0.json"]


def test_write_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    m = Metrics()
    m.warnings["x"] += 1
    target = tmp_path / "a_dir_not_a_file"
    target.mkdir()
    with pytest.raises(OSError):
        m.write(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_dir_not_a_file"]
    assert list(target.iterdir()) == []


def test_merge_sums_counts_and_concatenates_skips() -> None:
    a = _metrics(10, 8, 2, 2.0, reason="unreadable")
    a.record_failed(_failed("z", "/z.mp4"), epoch=0)
    a.warnings["w"] += 1
    a.batches, a.samples = 2, 8
    b = _metrics(6, 5, 1, 0.5, reason="missing")
    b.stage("decode").items_in = 5
    b.record_failed(_failed("a", "/a.mp4"), epoch=0)
    b.warnings["w"] += 2
    b.batches, b.samples, b.dropped_in_collate = 1, 4, 1
    merged = merge_reports([a.snapshot(), b.snapshot()])
    probe = merged["stages"]["probe"]
    assert (probe["in"], probe["out"], probe["failed"]) == (16, 13, 3)
    assert probe["seconds"] == 2.5
    assert probe["items_per_second"] == pytest.approx(5.2)
    assert probe["failed_by_reason"] == {"missing": 1, "unreadable": 2}
    assert probe["failed_by_error_type"] == {"RuntimeError": 3}
    assert merged["stages"]["decode"]["in"] == 5
    assert merged["stages"]["decode"]["items_per_second"] is None  # no time measured
    assert [r["path"] for r in merged["skipped"]] == ["/a.mp4", "/z.mp4"]
    assert merged["warnings"] == {"w": 3}
    assert (merged["batches"], merged["samples"], merged["dropped_in_collate"]) == (3, 12, 1)
    json.dumps(merged)  # the report is JSON-serialisable


def test_merge_is_order_independent() -> None:
    a = _metrics(10, 8, 2, 2.0)
    a.record_failed(_failed("z", "/z.mp4"))
    b = _metrics(6, 5, 1, 0.5)
    b.record_failed(_failed("a", "/a.mp4"))
    assert merge_reports([a.snapshot(), b.snapshot()]) == merge_reports(
        [b.snapshot(), a.snapshot()]
    )


def test_merge_of_one_equals_its_own_counts() -> None:
    a = _metrics(10, 8, 2, 2.0)
    merged = merge_reports([a.snapshot()])
    probe = merged["stages"]["probe"]
    snap = a.snapshot()["stages"]["probe"]
    assert {k: probe[k] for k in snap} == snap


def test_merge_empty_is_zeros() -> None:
    assert merge_reports([]) == {
        "cache": None,
        "memory": None,
        "stages": {},
        "skipped": [],
        "warnings": {},
        "batches": 0,
        "samples": 0,
        "dropped_in_collate": 0,
        "frames_served": 0,
        "frames_repeated": 0,
        "repeated_frames_fraction": 0.0,
        "batches_produced": 0,
        "samples_produced": 0,
        "batches_yielded": 0,
        "samples_yielded": 0,
    }


def test_merge_tolerates_missing_keys() -> None:
    merged = merge_reports([{}, {"stages": {"probe": {"in": 2}}}])
    assert merged["stages"]["probe"]["in"] == 2
    assert merged["stages"]["probe"]["failed"] == 0
    assert merged["batches"] == 0


def test_merge_combines_cache_counters_of_workers() -> None:
    a = {
        "cache": {
            "hits": 3,
            "misses": 1,
            "corruption_count": 1,
            "total_items": 10,
            "cache_size_mb": 1.5,
            "access_seconds": 0.4,
            "hit_rate": 0.75,
        }
    }
    b = {
        "cache": {
            "hits": 5,
            "misses": 0,
            "total_items": 12,
            "cache_size_mb": 1.0,
            "access_seconds": 0.1,
        }
    }
    merged = merge_reports([a, b, {}])["cache"]
    assert (merged["hits"], merged["misses"], merged["corruption_count"]) == (8, 1, 1)
    assert merged["total_items"] == 12 and merged["cache_size_mb"] == 1.5
    assert merged["hit_rate"] == 8 / 9
    assert merged["avg_access_time"] == pytest.approx(0.5 / 9)


def test_memory_merges_the_latest_snapshot_of_each_process() -> None:
    """A persistent worker writes a part per epoch: only its latest memory counts, once."""
    parts = [
        {"host": "h", "pid": 1, "time": 1.0, "memory": {"rss_bytes": 100, "peak_rss_bytes": 100}},
        {"host": "h", "pid": 1, "time": 2.0, "memory": {"rss_bytes": 150, "peak_rss_bytes": 160}},
        {"host": "h", "pid": 2, "time": 1.5, "memory": {"rss_bytes": 10, "peak_rss_bytes": 10}},
        {"host": "g", "pid": 1, "time": 0.5, "memory": {"rss_bytes": 1, "peak_rss_bytes": 1}},
        {"host": "h", "pid": 3, "time": 3.0, "memory": None},
    ]
    memory = merge_reports(parts)["memory"]
    assert memory["processes"] == 3
    assert memory["rss_bytes_total"] == 161
    assert memory["rss_bytes_max"] == 150
    assert memory["peak_rss_bytes"] == 160
    assert latest_memory(parts[:1] + parts[1:2]) == [parts[1]["memory"]]


def test_scalars_flattens_a_report_into_numbers() -> None:
    m = _metrics(5, 4, 1, 0.5)
    m.record_failed(_failed("k", "/a.mp4"), epoch=0)
    m.batches, m.samples = 3, 12
    report = merge_reports([m.snapshot()])
    report["memory"] = {"rss_bytes_total": 2048, "processes": 1, "gpu_total_bytes": None}
    flat = scalars(report, prefix="data")
    assert flat["data/stages/probe/in"] == 5.0
    assert flat["data/stages/probe/out"] == 4.0
    assert flat["data/stages/probe/failed"] == 1.0
    assert flat["data/batches"] == 3.0 and flat["data/samples"] == 12.0
    assert flat["data/skipped"] == 1.0
    assert flat["data/memory/rss_bytes_total"] == 2048.0
    assert "data/memory/gpu_total_bytes" not in flat  # None is not a number
    assert all(isinstance(v, float) for v in flat.values())


def _produced(
    host: str, pid: int, batches: int, samples: int, *, in_worker: bool
) -> dict[str, Any]:
    """A process's part that produced ``batches`` (in a DataLoader worker or not)."""
    part = Metrics(batches=batches, samples=samples).snapshot()
    part.update(host=host, pid=pid, in_worker=in_worker)
    return part


def _yielded(
    host: str, pid: int, batches: int, samples: int, workers: list[list[Any]]
) -> dict[str, Any]:
    """The part of a loader in process ``pid`` that handed ``batches`` to the trainer."""
    return {
        "kind": "yielded",
        "part": f"part-e0-r0-yielded-p{pid}-i0.json",
        "batches_yielded": batches,
        "samples_yielded": samples,
        "workers": workers,
        "host": host,
        "pid": pid,
        "time": 1.0,
    }


def test_a_snapshot_says_whether_it_was_taken_in_a_dataloader_worker() -> None:
    assert Metrics().snapshot()["in_worker"] is False  # pytest runs in no DataLoader worker


def test_merge_separates_batches_produced_by_workers_from_batches_yielded() -> None:
    """Two workers produced 5 batches (prefetch); the trainer received 2 of them."""
    parts = [
        _produced("h", 11, 3, 6, in_worker=True),
        _produced("h", 12, 2, 4, in_worker=True),
        _yielded("h", 10, 2, 4, [["h", 11], ["h", 12]]),
    ]
    merged = merge_reports(parts)
    assert (merged["batches_produced"], merged["samples_produced"]) == (5, 10)
    assert (merged["batches_yielded"], merged["samples_yielded"]) == (2, 4)
    assert (merged["batches"], merged["samples"]) == (5, 10)  # the old names: produced
    assert merge_reports(parts[::-1]) == merged


def test_merge_counts_main_process_iterations_as_yielded() -> None:
    """num_workers=0: the dataset iterates in the trainer's process, produced is yielded."""
    merged = merge_reports([_produced("h", 10, 4, 8, in_worker=False)])
    assert (merged["batches_yielded"], merged["samples_yielded"]) == (4, 8)


def test_merge_reports_yielded_unknown_when_a_worker_was_not_counted() -> None:
    """A plain DataLoader's workers: nobody counted what the trainer received."""
    counted = [_produced("h", 11, 3, 6, in_worker=True), _yielded("h", 10, 3, 6, [["h", 11]])]
    plain = _produced("h", 21, 4, 8, in_worker=True)
    merged = merge_reports([*counted, plain])
    assert merged["batches_produced"] == 7
    assert merged["batches_yielded"] is None and merged["samples_yielded"] is None
    # A worker on another host with the same pid is another process.
    other_host = _produced("g", 11, 1, 2, in_worker=True)
    assert merge_reports([*counted, other_host])["batches_yielded"] is None
    # A worker that produced nothing leaves nothing unknown.
    idle = _produced("h", 22, 0, 0, in_worker=True)
    assert merge_reports([*counted, idle])["batches_yielded"] == 3
    assert "wan_data/batches_yielded" not in scalars(merged)  # None is not a number


def test_merge_adds_yielded_counts_across_ranks() -> None:
    """report(all_ranks=True) merges every rank's parts: each rank's loader counts its own."""
    rank0 = [_produced("a", 11, 4, 8, in_worker=True), _yielded("a", 10, 3, 6, [["a", 11]])]
    rank1 = [_produced("b", 11, 5, 10, in_worker=True), _yielded("b", 10, 3, 6, [["b", 11]])]
    merged = merge_reports(rank0 + rank1)
    assert (merged["batches_produced"], merged["batches_yielded"]) == (9, 6)
    assert merged["samples_yielded"] == 12
    flat = scalars(merged)
    assert flat["wan_data/batches_yielded"] == 6.0 and flat["wan_data/batches_produced"] == 9.0


def test_yield_counter_snapshots_live_and_writes_its_part(tmp_path: Path) -> None:
    counter = YieldCounter(tmp_path, "part-e0-r0", [("h", 11)], write_every=3600.0)
    counter.record(2)
    counter.record(1)
    live = counter.snapshot()
    assert live["part"] == counter.name and counter.name.startswith("part-e0-r0-yielded-")
    assert (live["batches_yielded"], live["samples_yielded"]) == (2, 3)
    assert not counter.path.exists()  # not yet due: report() in this process reads it live
    counter.close()
    part = json.loads(counter.path.read_text())
    merged = merge_reports([part, _produced("h", 11, 4, 8, in_worker=True)])
    assert (merged["batches_yielded"], merged["samples_yielded"]) == (2, 3)
    assert merged["batches_produced"] == 4
