"""The cache pass from several processes at once on one cache folder.

Two ranks of a gloo process group split the work and encode each clip once; two processes that
know nothing of each other split it through claims and leave a complete, valid cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from media import make_video
from vae_fixtures import make_tiny_wan21_vae

from wan_data import WanVideoDataset
from wan_data.latents.prepare import sample_key
from wan_data.latents.store import LatentCache

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]
DEADLINE_S = 300

OPTIONS: dict[str, Any] = {
    "frames": [5, 9],
    "fps": 8,
    "resolution": (64, 64),
    "batch_size": 2,
    "seed": 1,
    "sampling": "random",
    "crop": "random",
    "variations": 2,
    "device": "cpu",
    "latent_dtype": torch.float32,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 short videos (two aspects, 24..38 frames): every (clip, variant) has its own key."""
    root = tmp_path_factory.mktemp("mp") / "data"
    for i in range(8):
        width, height = (96, 64) if i % 2 else (64, 64)
        make_video(root / f"v{i}.mp4", width=width, height=height, fps=16, num_frames=24 + 2 * i)
    return root


@pytest.fixture(scope="module")
def vae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_wan21_vae(tmp_path_factory.mktemp("mp_vae") / "vae")


def dataset(root: Path, vae: Path, cache_dir: Path) -> WanVideoDataset:
    return WanVideoDataset(root, **OPTIONS, vae=vae, cache_dir=cache_dir)


def all_keys(ds: WanVideoDataset) -> list[str]:
    """The key of every (sample, variant) task, in prepare_cache's task order."""
    spec = ds.cache_spec
    assert spec is not None
    return [
        sample_key(s, v, ds._decode, spec)[0] for s in ds.samples for v in range(spec.variations)
    ]


def child_env() -> dict[str, str]:
    path = os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path.rstrip(os.pathsep)}


def run_two_ranks(root: Path, vae: Path, cache_dir: Path, out: Path) -> list[dict[str, Any]]:
    """Run ``prepare_worker.rank_main`` on 2 gloo ranks; their records, by rank. No hang."""
    import torch.multiprocessing as mp
    from prepare_worker import rank_main

    os.environ["HF_HUB_OFFLINE"] = "1"  # spawned children inherit it
    out.mkdir()
    context = mp.start_processes(
        rank_main,
        args=(2, str(root), str(vae), str(cache_dir), str(out), str(out / "init"), OPTIONS),
        nprocs=2,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not context.join(timeout=5):
            if time.monotonic() > deadline:
                raise TimeoutError(f"a rank hung in the cache pass for {DEADLINE_S} s")
    finally:
        for proc in context.processes:
            if proc.is_alive():
                proc.kill()
                proc.join(10)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def require(condition: bool, what: str) -> None:
    """A precondition: raises RuntimeError, so a broken setup is not mistaken for the subject."""
    if not condition:
        raise RuntimeError(f"precondition failed: {what}")


def temp_files(cache_dir: Path) -> list[Path]:
    return [p for p in cache_dir.rglob("*") if ".tmp" in p.name]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_rank_cache_pass_encodes_each_clip_exactly_once(
    data: Path, vae: Path, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    parent = dataset(data, vae, cache_dir)
    keys = all_keys(parent)
    distinct = set(keys)
    # Precondition of "each clip once": no two tasks share a key (see the shared-key test below).
    assert len(distinct) == len(keys) == 2 * len(parent.samples) == 16

    ranks = run_two_ranks(data, vae, cache_dir, tmp_path / "out")

    for r, record in enumerate(ranks):
        assert (record["rank"], record["world_size"]) == (r, 2)  # taken from torch.distributed
        assert record["samples"] == [s.key for s in parent.samples]  # same order on every rank
        assert record["summary"]["rank"] == r and record["summary"]["world_size"] == 2
        assert record["summary"]["already_cached"] == 0
        assert record["summary"]["skipped"] == 0
        # it wrote exactly the tasks it was dealt, each once
        assert sorted(record["written"]) == sorted(record["task_keys"])
    assert [len(r["task_keys"]) for r in ranks] == [8, 8]
    assert set(ranks[0]["task_keys"]).isdisjoint(ranks[1]["task_keys"])
    assert sum(r["summary"]["tasks"] for r in ranks) == len(keys)
    assert sum(r["summary"]["encoded"] for r in ranks) == len(distinct)
    written = [k for r in ranks for k in r["written"]]
    assert len(written) == len(set(written)), "a key was encoded by both ranks or twice"
    assert set(written) == distinct

    cache = LatentCache(cache_dir)
    assert cache.keys() == distinct
    assert cache.verify_all() == {"ok": len(distinct), "quarantined": 0}
    assert temp_files(cache_dir) == []

    again = dataset(data, vae, cache_dir)
    summary = again.prepare(num_workers=0, progress=False)
    assert summary["encoded"] == 0
    assert summary["already_cached"] == summary["tasks"] == len(keys)
    assert again.cache_complete() and again.cache_complete(epoch=1)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_rank_cache_pass_encodes_variants_with_one_key_once(vae: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_video(root / "a.mp4", width=64, height=64, fps=16, num_frames=26)
    make_video(root / "b.mp4", width=96, height=64, fps=16, num_frames=24)
    # 18 frames at 16 fps = exactly 9 frames at 8 fps, 64x64: no window or crop slack, so
    # both variants are the same clip with the same key
    make_video(root / "z_still.mp4", width=64, height=64, fps=16, num_frames=18)
    cache_dir = tmp_path / "cache"
    keys = all_keys(dataset(root, vae, cache_dir))
    require(len(keys) == 6 and len(set(keys)) == 5, f"one shared key among {keys}")

    ranks = run_two_ranks(root, vae, cache_dir, tmp_path / "out")

    verified = LatentCache(cache_dir).verify_all()
    require(verified == {"ok": 5, "quarantined": 0}, f"a valid cache anyway: {verified}")
    written = [k for r in ranks for k in r["written"]]
    assert set(written) == set(keys)
    assert len(written) == len(set(written)), "a key was encoded by both ranks"
    assert sum(r["summary"]["encoded"] for r in ranks) == len(set(keys))


CHILD = """
import json, os, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from wan_data import WanVideoDataset
root, vae, cache_dir, gate, name = sys.argv[1:6]
ds = WanVideoDataset(root, **json.loads(sys.argv[6]), latent_dtype=torch.float32,
                     vae=vae, cache_dir=cache_dir)
assert ds.rank_and_world_size() == (0, 1)
Path(gate, name + ".ready").touch()
deadline = time.monotonic() + 120
while len(list(Path(gate).glob("*.ready"))) < 2:  # start the two passes together
    assert time.monotonic() < deadline, "the other process never got ready"
    time.sleep(0.01)
summary = ds.prepare(num_workers=0, progress=False)
Path(gate, name + ".json").write_text(json.dumps(summary))
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_independent_processes_preparing_the_same_cache_leave_a_valid_cache(
    data: Path, vae: Path, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    keys = all_keys(dataset(data, vae, cache_dir))
    distinct = set(keys)
    gate = tmp_path / "gate"
    gate.mkdir()
    plain = json.dumps({k: v for k, v in OPTIONS.items() if k != "latent_dtype"})
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, *map(str, (data, vae, cache_dir, gate)), name, plain],
            env=child_env(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for name in ("first", "second")
    ]
    deadline = time.monotonic() + DEADLINE_S
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs.append(out.decode(errors="replace"))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(outputs)[-4000:]

    summaries = [json.loads((gate / f"{name}.json").read_text()) for name in ("first", "second")]
    for summary in summaries:
        assert (summary["rank"], summary["world_size"]) == (0, 1)
        assert summary["tasks"] == len(keys)
        done = summary["encoded"] + summary["encoded_elsewhere"] + summary["already_cached"]
        assert done == len(keys)
    # Both looked at the empty cache at once; their claims split the work (issue 13: each
    # used to encode (almost) every key), so every key was encoded once.
    assert sum(s["encoded"] for s in summaries) == len(distinct)

    # Concurrent O_APPENDs to the index: whole lines, one per write, nothing interleaved.
    lines = (cache_dir / "index.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    assert {row["key"] for row in rows} == distinct
    assert len(rows) == sum(s["encoded"] for s in summaries)

    assert temp_files(cache_dir) == []
    cache = LatentCache(cache_dir)
    assert cache.keys() == distinct
    assert cache.verify_all() == {"ok": len(distinct), "quarantined": 0}
    assert not any((cache_dir / "quarantine").iterdir())

    again = dataset(data, vae, cache_dir)
    summary = again.prepare(num_workers=0, progress=False)
    assert summary["encoded"] == 0 and summary["already_cached"] == len(keys)
    assert again.cache_complete() and again.cache_complete(epoch=1)
