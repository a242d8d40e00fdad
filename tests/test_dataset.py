"""WanVideoDataset end to end: DataLoader workers, determinism, skips, report, configuration."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from media import Corpus, make_video

from wan_data import ConfigError, PipelineHealthError, WanVideoDataset

pytestmark = pytest.mark.integration

OPTIONS: dict[str, Any] = {
    "frames": [17, 33],
    "fps": 16,
    "resolution": (64, 64),
    "batch_size": 2,
    "seed": 0,
}


def run_epoch(ds: WanVideoDataset, workers: int) -> list[dict[str, Any]]:
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=workers, timeout=120 if workers else 0
    )
    return list(loader)


def samples(batches: list[dict[str, Any]]) -> list[tuple[str, tuple[float, ...], str, str]]:
    """Every sample of an epoch as (key, frame times, pixel digest, caption), sorted."""
    out = []
    for b in batches:
        for i, key in enumerate(b["keys"]):
            digest = hashlib.sha256(b["pixels"][i].numpy().tobytes()).hexdigest()[:16]
            out.append((key, tuple(b["frame_times"][i]), digest, b["captions"][i]))
    return sorted(out)


@pytest.mark.timeout(300)
def test_two_workers_yield_every_good_source_and_skip_every_broken_one(corpus: Corpus) -> None:
    ds = WanVideoDataset(corpus.root, **OPTIONS)
    batches = run_epoch(ds, workers=2)
    paths = [Path(p) for b in batches for p in b["paths"]]
    good = {corpus.path(s.name) for s in corpus.by_kind("good", "image")}
    assert good <= set(paths), f"missing: {good - set(paths)}"
    broken = {corpus.path(s.name) for s in corpus.by_kind("broken", "short")}
    assert not broken & set(paths)
    assert not {p for p in paths if p.name.startswith(".")}

    report = ds.report()
    json.dumps(report)  # JSON-serialisable
    skipped = {Path(r["path"]): r for r in report["skipped"]}
    for spec in corpus.by_kind("broken"):
        record = skipped.get(corpus.path(spec.name))
        assert record is not None, f"{spec.name} not in report['skipped']"
        assert record["reason"] == spec.expected_reason, (spec.name, record)
        assert spec.name.split("/")[-1] in record["message"] or record["path"] in record["message"]
        for field in ("path", "stage", "reason", "error_type", "message", "attempts"):
            assert record[field], (field, record)
    short = corpus.by_kind("short")[0]
    assert skipped[corpus.path(short.name)]["reason"] == "too_short"
    # damaged files: a salvaged clip or a recorded skip, never both missing
    for spec in corpus.by_kind("damaged"):
        p = corpus.path(spec.name)
        assert (p in paths) or (p in skipped), spec.name

    stages = report["stages"]
    assert stages["probe"]["in"] == len(ds.sources)
    assert stages["bucket"]["out"] == len(ds.samples)
    assert stages["decode"]["out"] == len(paths) == report["samples"]
    assert report["batches"] == len(batches) == len(ds)
    assert [b["position"] for b in batches] == list(range(len(batches)))
    for b in batches:
        assert len(b["paths"]) == OPTIONS["batch_size"]  # small_buckets="repeat": always full
        px = b["pixels"]
        assert px.dtype == torch.float32 and px.dim() == 5 and px.shape[1] == 3
        assert (px.shape[2] - 1) % 4 == 0 and px.shape[3] % 16 == 0 and px.shape[4] % 16 == 0
        assert -1.0 <= float(px.min()) and float(px.max()) <= 1.0
        assert len(b["captions"]) == len(b["paths"]) == len(b["frame_times"]) == px.shape[0]
        assert all(len(t) == px.shape[2] for t in b["frame_times"])


@pytest.mark.timeout(600)
def test_same_samples_for_zero_one_and_two_workers(corpus: Corpus) -> None:
    options = {**OPTIONS, "sampling": "random", "crop": "random"}
    results = []
    for workers in (0, 1, 2):
        ds = WanVideoDataset(corpus.root, **options)
        ds.set_epoch(3)
        results.append(samples(run_epoch(ds, workers)))
    assert results[0] == results[1] == results[2]


@pytest.mark.timeout(600)
def test_batches_come_in_plan_order_for_any_worker_count(corpus: Corpus) -> None:
    runs = []
    for workers in (0, 1, 2, 3):
        batches = run_epoch(WanVideoDataset(corpus.root, **OPTIONS), workers)
        runs.append([(b["position"], b["keys"]) for b in batches])
    assert [p for p, _ in runs[0]] == list(range(len(runs[0])))
    assert runs[0] == runs[1] == runs[2] == runs[3]


@pytest.mark.timeout(300)
def test_epochs_and_seeds_change_random_choices(corpus: Corpus) -> None:
    options = {**OPTIONS, "sampling": "random", "crop": "random"}
    ds = WanVideoDataset(corpus.root, **options)
    epoch0 = samples(run_epoch(ds, 0))
    ds.set_epoch(1)
    epoch1 = samples(run_epoch(ds, 0))
    decodable = {s.key for s in ds.samples} - {"corpus0/damaged/corrupt_middle.mp4#0"}
    assert {s[0] for s in epoch0} == {s[0] for s in epoch1} == decodable
    assert epoch0 != epoch1  # other order, windows, crops
    again = WanVideoDataset(corpus.root, **options)
    again.set_epoch(1)
    assert samples(run_epoch(again, 0)) == epoch1


@pytest.mark.timeout(300)
def test_a_corrupt_file_does_not_change_what_other_files_produce(
    corpus: Corpus, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    root.mkdir()
    for spec in corpus.by_kind("good")[:4]:
        shutil.copy(corpus.path(spec.name), root / Path(spec.name).name)
    options = {**OPTIONS, "sampling": "random", "crop": "random"}
    before = samples(run_epoch(WanVideoDataset(root, **options), 0))
    (root / "aaa_corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    ds = WanVideoDataset(root, **options)
    after = samples(run_epoch(ds, 0))
    assert before == after
    assert [Path(r["path"]).name for r in ds.report()["skipped"]] == ["aaa_corrupt.mp4"]


@pytest.mark.timeout(300)
def test_report_counts_match_between_worker_counts(corpus: Corpus) -> None:
    reports = []
    for workers in (0, 2):
        ds = WanVideoDataset(corpus.root, **OPTIONS)
        run_epoch(ds, workers)
        reports.append(ds.report())

    def counts(r: dict[str, Any]) -> Any:
        stages = {
            k: (v["in"], v["out"], v["failed"], v["failed_by_reason"])
            for k, v in r["stages"].items()
        }
        skipped = sorted((s["path"], s["stage"], s["reason"]) for s in r["skipped"])
        return stages, skipped, r["samples"]

    assert counts(reports[0]) == counts(reports[1])


def test_report_accumulates_over_epochs_and_resets(corpus: Corpus, tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(corpus.path(corpus.by_kind("good")[0].name), root / "a.mp4")
    (root / "bad.mp4").write_bytes(b"junk")
    ds = WanVideoDataset(root, **OPTIONS)
    run_epoch(ds, 0)
    ds.set_epoch(1)
    run_epoch(ds, 0)
    report = ds.report()
    assert report["samples"] == 4  # one source, repeated to fill a batch of 2, two epochs
    assert report["batches"] == 2
    assert [(Path(r["path"]).name, r["stage"]) for r in report["skipped"]] == [("bad.mp4", "probe")]
    ds.reset_report()
    after = ds.report()
    assert after["samples"] == 0
    assert len(after["skipped"]) == 1  # found at setup: kept


def test_small_buckets_repeat_drop_or_partial(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    for i in range(3):  # three sources of one bucket, batch_size 2 -> one full + a remainder
        make_video(root / f"v{i}.mp4", width=64, height=64, fps=16, num_frames=40)
    sizes = {}
    for mode in ("repeat", "drop", "partial"):
        ds = WanVideoDataset(root, **OPTIONS, small_buckets=mode)
        sizes[mode] = sorted(len(b["paths"]) for b in run_epoch(ds, 0))
        plan = ds.report()["buckets"]["plan"]
        assert plan["repeated"] == (1 if mode == "repeat" else 0)
        assert plan["dropped"] == (1 if mode == "drop" else 0)
    assert sizes == {"repeat": [2, 2], "drop": [2], "partial": [1, 2]}


@pytest.mark.timeout(300)
def test_breaker_stops_a_run_where_most_files_fail(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    make_video(root / "good.mp4", width=32, height=32, fps=16, num_frames=20)
    for i in range(30):
        (root / f"bad_{i:02d}.mp4").write_bytes(b"not a video " * (i + 1))
    options = {**OPTIONS, "frames": [5], "resolution": (32, 32)}
    # Files are probed at construction, so a systemic fault stops the run before training.
    with pytest.raises(PipelineHealthError, match=r"unreadable") as info:
        WanVideoDataset(root, **options, breaker_min_items=10)
    assert "bad_" in str(info.value)
    ds = WanVideoDataset(root, **options, breaker_threshold=None)
    assert {Path(p).name for b in run_epoch(ds, 0) for p in b["paths"]} == {"good.mp4"}
    assert len(ds.report()["skipped"]) == 30


def test_configuration_errors_are_gathered_into_one_message(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        WanVideoDataset(
            tmp_path / "nope",
            frames=[16, 33],
            resolution=(100, 64),
            batch_size=0,
            fps=-1,
            sampling="sideways",
            crop="middle",
        )
    message = str(info.value)
    for needle in ("nope", "16", "100", "batch_size", "fps", "sampling", "crop"):
        assert needle in message, needle
    assert len(info.value.problems) >= 7


def test_dataset_pickles_and_reports_sources(corpus: Corpus) -> None:
    import pickle

    ds = WanVideoDataset(corpus.root, **OPTIONS)
    clone = pickle.loads(pickle.dumps(ds))
    assert [s.key for s in clone.sources] == [s.key for s in ds.sources]
    assert "sources" in repr(ds)
    setup_failures = {r["reason"] for r in ds.report()["skipped"]}
    # found while collecting and probing, before any iteration
    assert setup_failures == {
        "missing",
        "not_a_file",
        "unreadable",
        "no_video_stream",
        "truncated",
        "too_short",
    }


def test_rank_and_world_size_split_sources(corpus: Corpus) -> None:
    counts, keys = [], set()
    for rank in (0, 1):
        ds = WanVideoDataset(corpus.root, **OPTIONS, rank=rank, world_size=2)
        batches = run_epoch(ds, 0)
        counts.append(len(batches))
        keys |= {k for b in batches for k in b["keys"]}
        planned = {b.position: b for b in ds.plan().batches}
        for b in batches:
            members = [ds.samples[m].key for m in planned[b["position"]].members]
            assert b["keys"] == members or b["replaced"] > 0
    assert counts[0] == counts[1] > 0
    damaged = {"corpus0/damaged/corrupt_middle.mp4#0"}  # fails to decode 33 frames: replaced
    assert keys == {s.key for s in ds.samples} - damaged


def test_real_media_files(shared_media: Path, tmp_path: Path) -> None:
    root = tmp_path / "real"
    root.mkdir()
    for name in ("nasa_13013.mp4", "av1_video.mkv", "h265_video.mp4"):
        shutil.copy(shared_media / name, root / name)
    ds = WanVideoDataset(root, frames=[5, 17], fps=16, resolution=(64, 64), batch_size=1)
    names = sorted(Path(p).name for b in run_epoch(ds, 0) for p in b["paths"])
    assert names == ["av1_video.mkv", "h265_video.mp4", "nasa_13013.mp4"], ds.report()["skipped"]


def test_no_video_decoder_is_left_to_the_garbage_collector(corpus: Corpus) -> None:
    """Decoders kept alive in reference cycles (e.g. by exception tracebacks) hang forked
    workers whose collector frees their copies: the FFmpeg threads they wait for were not
    forked. Every decoder must be freed by reference counting, never by the collector."""
    import gc

    from torchcodec.decoders import VideoDecoder

    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        ds = WanVideoDataset(corpus.root, **{**OPTIONS, "frames": [17, 33, 49]})
        run_epoch(ds, 0)  # includes files that fail inside the decoder (corrupt_middle)
        gc.collect()
        leaked = [o for o in gc.garbage if isinstance(o, VideoDecoder)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert leaked == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_spawned_workers_give_the_same_samples_and_report(corpus: Corpus) -> None:
    """The dataset pickles into spawn-started workers (the default on macOS and Windows)."""
    ds = WanVideoDataset(corpus.root, **OPTIONS)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=2, multiprocessing_context="spawn", timeout=200
    )
    spawned = samples(list(loader))
    assert spawned == samples(run_epoch(WanVideoDataset(corpus.root, **OPTIONS), 0))
    assert ds.report()["samples"] == len(spawned)


@pytest.mark.timeout(300)
def test_set_epoch_reaches_persistent_workers(corpus: Corpus) -> None:
    options = {**OPTIONS, "sampling": "random", "crop": "random"}
    ds = WanVideoDataset(corpus.root, **options)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=2, persistent_workers=True, timeout=120
    )
    first = samples(list(loader))
    ds.set_epoch(1)
    second = samples(list(loader))  # the same worker processes, started at epoch 0
    fresh = WanVideoDataset(corpus.root, **options)
    fresh.set_epoch(1)
    assert second == samples(run_epoch(fresh, 0))
    assert first != second
