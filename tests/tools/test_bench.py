"""``wan-data bench``: the table and the JSON are well formed; no timing is asserted.

The quick run (every measure at its smallest size) runs once for the module: it is what CI
checks, so a benchmark script or a measure that stops working shows up here as an ERROR row.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from wan_data.tools.bench import GROUPS, Measure, MeasureSpec, format_table, measure_names
from wan_data.tools.bench.measure import STATUSES
from wan_data.tools.bench.runner import Group, _run_group
from wan_data.tools.bench.scripts import BenchmarksUnavailable
from wan_data.tools.cli import main

MEASURES = [spec.name for group in GROUPS for spec in group.specs]
FIELDS = {
    "name",
    "description",
    "unit",
    "baseline_name",
    "target",
    "direction",
    "value",
    "baseline",
    "ratio",
    "status",
    "note",
    "details",
}


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    code, out, _ = _cli("bench", "--quick", "--json", str(path))
    assert code == 0
    return json.loads(path.read_text()), out


def test_quick_json_has_every_measure_with_its_fields(quick: tuple[dict[str, Any], str]) -> None:
    document, _ = quick
    assert document["schema_version"] == 1 and document["quick"] is True
    names = [m["name"] for m in document["measures"]]
    assert names == MEASURES
    for row in document["measures"]:
        assert set(row) == FIELDS, row["name"]
        assert row["status"] in STATUSES
        # SKIP is allowed (an optional package such as PyAV missing); a crash is not
        assert row["status"] != "ERROR", f"{row['name']}: {row['note']}"
        for key in ("value", "baseline", "ratio", "target"):
            assert row[key] is None or isinstance(row[key], (int, float))
        if row["status"] in ("PASS", "FAIL"):
            assert row["ratio"] is not None and row["target"] is not None
    assert sum(document["summary"].values()) == len(MEASURES)


def test_quick_json_carries_the_explaining_measures(quick: tuple[dict[str, Any], str]) -> None:
    """The rows that explain a ratio: the verified-read floor beside the cached train pass,
    and the one-process path on one torch thread (a worker's) beside the workers' scaling."""
    rows = {m["name"]: m for m in quick[0]["measures"]}
    cache = rows["cache.train_vs_bare_reads"]["details"]
    assert len(cache["runs_verified_reads"]) == len(cache["runs_bare"]) >= 1
    assert all(rate > 0 for rate in cache["runs_verified_reads"])
    assert cache["verified_reads_vs_bare"] > 0 and cache["pipeline_vs_verified_reads"] > 0
    workers = rows["pixels.workers2_vs_0"]["details"]
    assert workers["torch_threads_workers0"] >= 1
    assert workers["workers0_one_torch_thread_clips_per_s"] > 0
    assert workers["ratio_vs_one_torch_thread"] > 0
    scaling = workers["two_process_scaling"]
    assert set(scaling) == {"python_loop", "memory_copy"}
    assert all(0 < value <= 2.5 for value in scaling.values())


def test_quick_json_describes_the_machine(quick: tuple[dict[str, Any], str]) -> None:
    machine = quick[0]["machine"]
    assert machine["cpu_count"] >= 1 and machine["cpu_model"]
    assert machine["ram_gb"] is None or machine["ram_gb"] > 0
    assert machine["packages"]["torch"] and "torchcodec" in machine["packages"]
    assert "ffmpeg" in machine and "gpu" in machine


def test_quick_leaves_out_the_million_source_sizes(quick: tuple[dict[str, Any], str]) -> None:
    notes = " ".join(m["note"] for m in quick[0]["measures"])
    assert "1,000,000" not in notes and "100,000" not in notes


def test_quick_prints_the_table(quick: tuple[dict[str, Any], str]) -> None:
    _, out = quick
    header = next(line for line in out.splitlines() if line.startswith("measure "))
    for column in ("measure", "baseline", "value", "ratio", "target", "status"):
        assert column in header
    for name in MEASURES:
        assert name in out
    assert "JSON written to" in out


def test_only_runs_the_named_group(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    code, out, _ = _cli("bench", "--quick", "--only", "plan.growth_10x", "--json", str(path))
    assert code == 0
    assert [m["name"] for m in json.loads(path.read_text())["measures"]] == ["plan.growth_10x"]
    assert "pixels." not in out


def test_unknown_only_name_is_a_usage_error() -> None:
    code, _, err = _cli("bench", "--quick", "--only", "nonsense")
    assert code == 2 and "nonsense" in err
    assert "plan" in measure_names() and "plan.growth_10x" in measure_names()


SPEC = MeasureSpec("x.ratio", "a test measure", "clips/s", "bare", 0.9)
COST = MeasureSpec("x.cost", "a test cost", "s", "stat", 3.0, "<=")


def test_status_follows_the_target_and_its_direction() -> None:
    assert Measure.of(SPEC, 95.0, 100.0).status == "PASS"
    assert Measure.of(SPEC, 80.0, 100.0).status == "FAIL"
    assert Measure.of(SPEC, 80.0, 100.0, ratio=0.95).status == "PASS"  # the group's own ratio
    assert Measure.of(COST, 2.0, 1.0).status == "PASS"
    assert Measure.of(COST, 4.0, 1.0).status == "FAIL"
    assert Measure.of(SPEC, 1.0, 0.0).status == "ERROR"  # no ratio to judge
    info = MeasureSpec("x.info", "no target", "s", "none", None)
    assert Measure.of(info, 1.0, 2.0).status == "INFO"
    with pytest.raises(ValueError):
        MeasureSpec("x", "", "", "", 1.0, "==")


def test_median_ratio_is_the_median_of_the_rounds_ratios() -> None:
    from wan_data.tools.bench.measure import median_ratio

    # Per round, not the ratio of the medians (which would be 4 / 2 = 2.0 here).
    assert median_ratio([1.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == 2.0
    assert median_ratio([5.0, 2.0, 3.0], [0.0, 1.0, 1.0]) == 2.5  # a zero baseline is left out
    assert median_ratio([1.0], [0.0]) is None and median_ratio([], []) is None


def test_table_shows_missing_rows_with_their_reason() -> None:
    rows = [Measure.of(SPEC, 95.0, 100.0), Measure.missing(COST, "SKIP", "no PyAV here")]
    table = format_table(rows)
    assert "x.ratio" in table and "PASS" in table and "0.950" in table
    assert "SKIP" in table and "x.cost: no PyAV here" in table
    assert json.loads(json.dumps([r.as_dict() for r in rows]))[1]["ratio"] is None


def test_a_failing_group_still_lists_its_rows() -> None:
    def boom(_ctx: Any) -> list[Measure]:
        raise RuntimeError("decoder exploded")

    def gone(_ctx: Any) -> list[Measure]:
        raise BenchmarksUnavailable("benchmarks/ not found")

    ctx: Any = None
    rows = _run_group(Group("x", (SPEC, COST), boom), ctx)
    assert [(r.spec.name, r.status) for r in rows] == [("x.ratio", "ERROR"), ("x.cost", "ERROR")]
    assert "decoder exploded" in rows[0].note
    rows = _run_group(Group("x", (SPEC,), gone), ctx)
    assert rows[0].status == "SKIP" and "benchmarks/" in rows[0].note
    partial = _run_group(Group("x", (SPEC, COST), lambda _c: [Measure.of(SPEC, 1.0, 1.0)]), ctx)
    assert [r.status for r in partial] == ["PASS", "ERROR"]


# -- benchmarks/bench_gpu.py -------------------------------------------------------------------


def _bench_gpu() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_gpu_bench(tmp_path: Path, *argv: str) -> dict[str, Any]:
    path = tmp_path / "gpu.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = _bench_gpu().main(
            ["--tiny", "--clips", "2", "--workers", "1", *argv, "--json", str(path)]
        )
    assert code == 0
    return dict(json.loads(path.read_text()))


def test_bench_gpu_tiny_runs_every_measure_on_the_cpu(tmp_path: Path) -> None:
    result = _run_gpu_bench(tmp_path, "--device", "cpu", "--gpu-decode")
    encode = result["encode"]
    assert encode["clips"] == 2 and encode["clip_shape"] == [3, 9, 64, 96]
    for key in ("prepare_vs_bare_encode", "bf16_vs_fp32", "bf16_clips_per_s"):
        assert isinstance(encode[key], float) and encode[key] > 0
    assert encode["prepare_summary"]["encoded"] == 2
    assert 0 < encode["bf16_latent_relative_l2"] < 0.1  # bf16 is close, not equal
    peaks = result["peak_vram"]
    assert len(peaks) == 8  # 2 sizes x fp32/bf16 x untiled/tiled
    assert all(row["peak_gib"] is None and not row["out_of_memory"] for row in peaks)
    assert result["gpu_decode"] == {"skipped": "needs a CUDA device"}
    assert result["machine"]["cpu_count"] >= 1


def test_bench_gpu_without_a_decoder_still_measures_the_vae(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _bench_gpu()
    monkeypatch.setattr(module, "torchcodec_missing", lambda: "torchcodec unusable: test")
    path = tmp_path / "gpu.json"
    with contextlib.redirect_stdout(io.StringIO()):
        argv = ["--tiny", "--device", "cpu", "--clips", "1", "--no-peak", "--json", str(path)]
        assert module.main(argv) == 0
    encode = json.loads(path.read_text())["encode"]
    assert encode["prepare_vs_bare_encode"] is None
    assert encode["prepare_summary"] == {"skipped": "torchcodec unusable: test"}
    assert encode["bf16_vs_fp32"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bench_gpu_tiny_on_cuda_reads_peak_memory(tmp_path: Path) -> None:
    result = _run_gpu_bench(tmp_path, "--device", "cuda", "--gpu-decode")
    assert all(row["peak_gib"] is not None for row in result["peak_vram"])
    assert result["encode"]["prepare_vs_bare_encode"] is not None
    assert "cuda_clips_per_s" in result["gpu_decode"] or "error" in result["gpu_decode"]


# -- benchmarks/bench_cache.py: the source trees of the scale measures ---------------------------


def test_replicate_spreads_links_over_copies_below_the_per_inode_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trees of any size are built alike (links to a few inodes), never hitting the filesystem's
    links-per-inode limit (which made the 1M tree copies beside a 100k tree of links)."""
    import os

    from wan_data.tools.bench.scripts import benchmark_function

    replicate = benchmark_function("bench_cache", "replicate")
    monkeypatch.setitem(replicate.__globals__, "LINKS_PER_INODE", 3)
    files = []
    for name in ("a", "b"):
        (tmp_path / f"{name}.mp4").write_bytes(name.encode())
        (tmp_path / f"{name}.txt").write_text(f"caption {name}")
        files.append(tmp_path / f"{name}.mp4")
    root, how = replicate(files, tmp_path / "out", 13)
    videos = sorted((root / "videos").glob("*.mp4"))
    assert len(videos) == 13 and "hard links" in how
    assert [v.read_bytes() for v in videos[:4]] == [b"a", b"b", b"a", b"b"]
    assert all(
        v.with_suffix(".txt").read_text() == f"caption {v.read_bytes().decode()}" for v in videos
    )
    inodes = {os.stat(v).st_ino for v in videos}
    assert len(inodes) == 5  # 7 links of a over 3 inodes, 6 of b over 2
    assert max(os.stat(v).st_nlink for v in videos) <= 3 + 1  # the original counts once more


def test_verified_reads_reads_and_hashes_every_entry_whatever_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The floor beside the cached train pass: every file of every batch read whole into its
    row (rows as wide as the largest file, batches of any width) and hashed where it landed."""
    import xxhash

    from wan_data.tools.bench.scripts import benchmark_function

    verified_reads = benchmark_function("bench_cache", "verified_reads")
    paths = []
    for i, size in enumerate((100, 4096, 7, 5000, 1)):
        path = tmp_path / f"e{i}.safetensors"
        path.write_bytes(bytes((i + j) % 251 for j in range(size)))
        paths.append(str(path))
    hashed: list[bytes] = []

    class Recording:
        def __init__(self, data: memoryview) -> None:
            hashed.append(bytes(data))

        def digest(self) -> bytes:
            return b""

    monkeypatch.setattr(xxhash, "xxh3_128", Recording)
    clips, seconds = verified_reads([paths[:2], paths[2:4], paths[4:]])
    assert clips == 5 and seconds >= 0
    assert hashed == [Path(p).read_bytes() for p in paths]
