"""WanVideoDataset end to end: DataLoader workers, determinism, skips, report, configuration."""

from __future__ import annotations

import hashlib
import json
import os
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


# --------------------------------------------------------------------------------------------
# observability: ledger, memory, alerts, stall watchdog, metrics hook, JSON-lines log
# --------------------------------------------------------------------------------------------


def _small_dataset(root: Path, good: int = 4) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(good):
        make_video(root / f"good{i}.mp4", width=64, height=64, fps=16, num_frames=20)
    (root / "garbage.mp4").write_bytes(b"this is not a video" * 20)
    (root / "empty.mp4").write_bytes(b"")
    return root


SMALL: dict[str, Any] = {"frames": [5, 17], "fps": 16, "resolution": (32, 32), "batch_size": 2}


def test_ledger_skips_known_bad_files_until_they_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wan_data.stages.probe as probe_module

    root = _small_dataset(tmp_path / "data")
    ledger = tmp_path / "ledger.jsonl"
    first = WanVideoDataset(root, **SMALL, ledger=ledger)
    recorded = {json.loads(line)["path"] for line in ledger.read_text().splitlines()}
    assert recorded == {str(root / "garbage.mp4"), str(root / "empty.mp4")}
    assert {r["reason"] for r in first.report()["skipped"]} == {"unreadable"}

    probed: list[str] = []
    real = probe_module.probe_metadata

    def counting(source: Any) -> Any:
        probed.append(Path(source.path).name)
        return real(source)

    monkeypatch.setattr(probe_module, "probe_metadata", counting)
    second = WanVideoDataset(root, **SMALL, ledger=ledger, probe_threads=1)
    assert "garbage.mp4" not in probed and "empty.mp4" not in probed
    skipped = {Path(r["path"]).name: r for r in second.report()["skipped"]}
    assert {n: r["stage"] for n, r in skipped.items()} == {
        "garbage.mp4": "ledger",
        "empty.mp4": "ledger",
    }
    assert all(r["reason"] == "known_bad" for r in skipped.values())
    assert "retry_failed=True" in skipped["garbage.mp4"]["message"]
    assert len(second.samples) == len(first.samples)

    # A changed file is tried again; a fixed one leaves the ledger.
    (root / "garbage.mp4").write_bytes(b"still not a video, but longer" * 30)
    make_video(root / "empty.mp4", width=64, height=64, fps=16, num_frames=20)
    probed.clear()
    third = WanVideoDataset(root, **SMALL, ledger=ledger, probe_threads=1)
    assert {"garbage.mp4", "empty.mp4"} <= set(probed)
    assert len(third.samples) == len(first.samples) + 1
    fourth = WanVideoDataset(root, **SMALL, ledger=ledger, probe_threads=1)
    assert [Path(r["path"]).name for r in fourth.report()["skipped"]] == ["garbage.mp4"]
    assert fourth.report()["skipped"][0]["stage"] == "ledger"

    # retry_failed tries known-bad files again.
    probed.clear()
    WanVideoDataset(root, **SMALL, ledger=ledger, probe_threads=1, retry_failed=True)
    assert "garbage.mp4" in probed


def test_ledger_defaults_next_to_the_cache_and_can_be_disabled(tmp_path: Path) -> None:
    from vae_fixtures import make_tiny_wan21_vae

    root = _small_dataset(tmp_path / "data", good=1)
    vae = make_tiny_wan21_vae(tmp_path / "vae")
    ds = WanVideoDataset(root, **SMALL, vae=vae, cache_dir=tmp_path / "cache")
    assert ds.ledger is not None and ds.ledger.path == tmp_path / "cache" / "ledger.jsonl"
    assert len(ds.ledger) == 2
    off = WanVideoDataset(root, **SMALL, vae=vae, cache_dir=tmp_path / "c2", ledger=None)
    assert off.ledger is None and not (tmp_path / "c2" / "ledger.jsonl").exists()
    assert WanVideoDataset(root, **SMALL).ledger is None


def test_report_has_memory_of_the_main_process_and_each_worker(tmp_path: Path) -> None:
    root = _small_dataset(tmp_path / "data")
    ds = WanVideoDataset(root, **SMALL)
    list(ds.loader(num_workers=2, timeout=120))
    memory = ds.report()["memory"]
    assert memory["processes"] == 3  # main + 2 workers (their latest snapshots)
    assert memory["rss_bytes_total"] > memory["rss_bytes_max"] > 10 * 2**20
    assert memory["available_bytes"] > 0 and memory["total_bytes"] >= memory["available_bytes"]
    ds.reset_report()
    list(ds.loader(num_workers=0))
    assert ds.report()["memory"]["processes"] == 1  # its own parts are not counted again


def _collect(into: list[Any]) -> Any:
    return into.append


def test_failure_rate_alert_fires_once_from_the_merged_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wan_data.stages.decode as decode_module
    from wan_data import AlertConfig
    from wan_data.errors import SampleError

    root = _small_dataset(tmp_path / "data", good=6)
    fired: list[Any] = []
    ds = WanVideoDataset(
        root,
        **SMALL,
        alerts=AlertConfig(failure_rate=0.3, failure_min_items=4, stall_seconds=None),
        on_alert=_collect(fired),
        metrics_every=1,
        breaker_threshold=None,
    )
    real = decode_module.decode_sample

    def flaky(probed: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(probed.path).name in ("good0.mp4", "good1.mp4", "good2.mp4"):
            raise SampleError(f"file ({probed.path}) injected failure", reason="decode_error")
        return real(probed, *args, **kwargs)

    monkeypatch.setattr(decode_module, "decode_sample", flaky)
    batches = list(ds.loader(num_workers=0))
    assert batches and all(len(b["keys"]) == 2 for b in batches)
    rates = [a for a in fired if a.kind == "failure_rate"]
    assert len(rates) == 1, fired  # edge-triggered: once, though checked after every batch
    assert rates[0].stage == "decode" and rates[0].value > 0.3

    quiet: list[Any] = []
    calm = WanVideoDataset(root, **SMALL, on_alert=_collect(quiet), metrics_every=1)
    monkeypatch.undo()
    list(calm.loader(num_workers=0))
    assert not [a for a in quiet if a.kind == "failure_rate"]


def test_stall_watchdog_names_the_stage_and_file_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import wan_data.stages.decode as decode_module
    from wan_data import AlertConfig

    root = _small_dataset(tmp_path / "data", good=2)
    fired: list[Any] = []
    ds = WanVideoDataset(
        root, **SMALL, alerts=AlertConfig(stall_seconds=0.2), on_alert=_collect(fired)
    )
    real = decode_module.decode_sample

    def slow(probed: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(probed.path).name == "good1.mp4":
            time.sleep(1.0)
        return real(probed, *args, **kwargs)

    monkeypatch.setattr(decode_module, "decode_sample", slow)
    list(ds.loader(num_workers=0))
    stalls = [a for a in fired if a.kind == "stall"]
    assert len(stalls) >= 1
    assert stalls[0].stage == "decode" and stalls[0].path.endswith("good1.mp4")
    assert "decode" in stalls[0].message and "good1.mp4" in stalls[0].message

    fired.clear()
    monkeypatch.undo()
    list(ds.loader(num_workers=0))
    assert not [a for a in fired if a.kind == "stall"]


def test_metrics_callback_receives_the_report_every_n_batches(tmp_path: Path) -> None:
    from wan_data import scalars

    root = _small_dataset(tmp_path / "data", good=6)
    reports: list[dict[str, Any]] = []
    ds = WanVideoDataset(
        root, **{**SMALL, "batch_size": 1}, metrics_callback=reports.append, metrics_every=2
    )
    n = len(ds)
    assert n >= 4
    list(ds.loader(num_workers=0))
    assert len(reports) == n // 2 + 1  # every 2nd batch, and once at the end
    assert reports[-1]["batches"] == n
    assert [r["batches"] for r in reports[:-1]] == [2 * (i + 1) for i in range(n // 2)]
    flat = scalars(reports[-1])
    assert flat["wan_data/batches"] == n and flat["wan_data/stages/decode/out"] == n

    def broken(report: dict[str, Any]) -> None:
        raise RuntimeError("tensorboard is down")

    noisy = WanVideoDataset(root, **SMALL, metrics_callback=broken, metrics_every=1)
    assert len(list(noisy.loader(num_workers=0))) == len(noisy)  # a failing hook never stops it


def test_metrics_off_writes_no_iteration_parts(tmp_path: Path) -> None:
    root = _small_dataset(tmp_path / "data", good=2)
    reports: list[Any] = []
    ds = WanVideoDataset(root, **SMALL, metrics=False, metrics_callback=reports.append)
    assert len(list(ds.loader(num_workers=0))) == len(ds)
    assert not list(ds.report_dir.glob("part-e*.json")) and not reports
    assert ds.alert_monitor is None


def _fail_good0(real: Any) -> Any:
    from wan_data.errors import SampleError

    def decode(probed: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(probed.path).name == "good0.mp4":
            raise SampleError(f"file ({probed.path}) injected failure", reason="decode_error")
        return real(probed, *args, **kwargs)

    return decode


def test_json_lines_log_records_skips_from_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    import wan_data.stages.decode as decode_module
    from wan_data.observe.logs import JsonLinesHandler, remove_jsonl

    root = _small_dataset(tmp_path / "data", good=3)
    log = tmp_path / "log.jsonl"
    monkeypatch.setattr(decode_module, "decode_sample", _fail_good0(decode_module.decode_sample))
    try:
        ds = WanVideoDataset(root, **SMALL, log_jsonl=log)
        loader = ds.loader(num_workers=2, timeout=120, multiprocessing_context="fork")
        list(loader)
    finally:
        for handler in list(logging.getLogger("wan_data").handlers):
            if isinstance(handler, JsonLinesHandler):
                remove_jsonl(handler)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    keys = {"time", "level", "stage", "key", "path", "reason", "error_type", "worker", "rank"}
    assert lines and all(keys <= set(line) for line in lines)
    setup = [ln for ln in lines if ln["path"] and ln["path"].endswith("garbage.mp4")]
    assert setup and setup[0]["stage"] == "probe" and setup[0]["worker"] is None
    assert setup[0]["reason"] == "unreadable" and setup[0]["level"] == "WARNING"
    in_workers = [ln for ln in lines if ln["stage"] == "decode"]
    assert in_workers, lines
    assert all(ln["worker"] in (0, 1) for ln in in_workers)
    assert all(ln["path"].endswith("good0.mp4") for ln in in_workers)
    assert {ln["error_type"] for ln in in_workers} == {"SampleError"}


def test_report_separates_batches_yielded_to_the_trainer_from_prefetched_ones(
    tmp_path: Path,
) -> None:
    """Workers run ahead of the trainer by their prefetch: what they produced is not what the
    trainer received. ``ds.loader()`` counts the latter where the trainer gets it."""
    import time

    root = _small_dataset(tmp_path / "data", good=12)
    ds = WanVideoDataset(root, **SMALL)
    assert len(ds) == 6  # 12 samples in batches of 2
    taken = []
    for batch in ds.loader(num_workers=2, prefetch_factor=2, timeout=120):
        taken.append(batch["position"])
        if len(taken) == 2:
            time.sleep(2.0)  # the workers fill their prefetch queues meanwhile
            break
    assert taken == [0, 1]
    report = ds.report()
    assert (report["batches_yielded"], report["samples_yielded"]) == (2, 4)
    assert report["batches_produced"] > 2  # prefetched, never received
    assert report["samples_produced"] == 2 * report["batches_produced"]
    assert (report["batches"], report["samples"]) == (
        report["batches_produced"],
        report["samples_produced"],
    )

    # A whole epoch: every produced batch reached the trainer, whatever the worker count.
    for workers in (2, 0):
        ds.reset_report()
        assert len(list(ds.loader(num_workers=workers, timeout=120 if workers else 0))) == 6
        full = ds.report()
        assert full["batches_yielded"] == full["batches_produced"] == 6, workers
        assert full["samples_yielded"] == full["samples_produced"] == 12, workers

    # A plain DataLoader with workers: nobody counted what the trainer received.
    ds.reset_report()
    assert len(run_epoch(ds, 2)) == 6
    plain = ds.report()
    assert plain["batches_produced"] == 6
    assert plain["batches_yielded"] is None and plain["samples_yielded"] is None
    # ... and without workers the dataset iterates in the trainer's process: produced is yielded.
    ds.reset_report()
    assert len(run_epoch(ds, 0)) == 6
    assert ds.report()["batches_yielded"] == 6


def test_low_frame_rate_sources_are_reported_and_can_be_skipped(tmp_path: Path) -> None:
    root = tmp_path / "rates"
    make_video(root / "slow.mp4", width=64, height=64, fps=10.0, num_frames=40)
    make_video(root / "fast.mp4", width=64, height=64, fps=24.0, num_frames=96)
    options: dict[str, Any] = {"frames": [33], "fps": 16, "resolution": (64, 64), "seed": 1}
    ds = WanVideoDataset(root, **options)
    report = ds.report()
    assert report["buckets"]["low_fps_sources"] == 1
    # One sample at 1 - 10/16 = 0.375, one at 0: the mean over video samples.
    assert report["buckets"]["repeated_frames_expected_fraction"] == pytest.approx(0.1875)
    by_path = {}
    for batch in ds.loader(num_workers=0):
        for path, share in zip(batch["paths"], batch["repeated_fraction"], strict=True):
            by_path[Path(path).name] = share
    assert by_path["fast.mp4"] == 0.0
    assert 0.3 < by_path["slow.mp4"] < 0.45
    served = ds.report()
    assert served["frames_served"] == 66
    assert served["repeated_frames_fraction"] == pytest.approx(
        by_path["slow.mp4"] * 33 / 66, abs=1e-4
    )
    strict = WanVideoDataset(root, **options, min_source_fps=12)
    assert [Path(s.path).name for s in strict.samples] == ["fast.mp4"]
    (skip,) = [s for s in strict.report()["skipped"] if s["reason"] == "low_fps"]
    assert skip["path"].endswith("slow.mp4") and "min_source_fps=12" in skip["message"]


def test_integrity_check_skips_concealed_damage_once_per_file_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FFmpeg conceals a flipped I-frame: only the integrity check sees it. The verdict is
    kept per file version (a second construction runs no ffmpeg), the file goes to the
    ledger as corrupt_frames, and the pixel stream does not check unless asked to."""
    from media import damage_bytes, key_picture_data

    import wan_data.stages.probe

    root = tmp_path / "data"
    clean = root / "clean.mp4"
    make_video(clean, width=64, height=64, fps=24, num_frames=48, extra=["-g", "1000"])
    damage_bytes(clean, root / "damaged.mp4", key_picture_data(clean, "h264"), 0.5)
    calls: list[str] = []
    real = wan_data.stages.probe.check_integrity

    def counting(path: str) -> Any:
        calls.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(wan_data.stages.probe, "check_integrity", counting)
    options: dict[str, Any] = {"frames": [17], "fps": 16, "resolution": (64, 64)}
    plain = WanVideoDataset(root, **options)
    assert sorted(Path(s.path).name for s in plain.samples) == ["clean.mp4", "damaged.mp4"]
    assert calls == []  # off for the pixel stream by default
    meta = tmp_path / "metadata.jsonl"
    ledger = tmp_path / "ledger.jsonl"
    kwargs = {**options, "metadata_cache": meta, "ledger": ledger, "sample_index": None}
    checked = WanVideoDataset(root, **kwargs, integrity_check=True)
    assert [Path(s.path).name for s in checked.samples] == ["clean.mp4"]
    assert sorted(calls) == ["clean.mp4", "damaged.mp4"]
    (skip,) = checked.report()["skipped"]
    assert skip["reason"] == "corrupt_frames" and skip["stage"] == "probe"
    assert skip["path"].endswith("damaged.mp4") and "[h264]" in skip["message"]
    assert "corrupt_frames" in ledger.read_text()
    calls.clear()
    again = WanVideoDataset(root, **kwargs, integrity_check=True, retry_failed=True)
    assert [Path(s.path).name for s in again.samples] == ["clean.mp4"]
    assert calls == []  # both verdicts came from the metadata cache
    clean.touch()  # a new file version is checked again
    os.utime(clean, ns=(clean.stat().st_mtime_ns + 10**9,) * 2)
    WanVideoDataset(root, **kwargs, integrity_check=True)
    assert calls == ["clean.mp4"]
