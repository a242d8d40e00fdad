"""The training integrations of docs/integrations.md: torchrun DDP and Hugging Face accelerate.

Each example runs as a user runs it, two gloo ranks on the CPU, over the examples' generated
dataset (10 samples in three buckets), with ``batch_size=4`` and ``small_buckets="partial"``:
3 planned batches per epoch, so one rank also gets a ``padding`` copy every epoch and every
sample is in exactly one non-padding batch. From the ranks' JSON the tests check that the ranks
saw disjoint samples covering each epoch, took the same number of steps (DDP would hang
otherwise) and resumed mid-epoch exactly. A fast in-process test pins why the accelerate
example does not pass our loader through ``accelerator.prepare``.

The plain single-process loop is covered elsewhere: tests/test_examples.py::test_quickstart
(``ds.loader()`` over the same dataset) and tests/test_train_tiny_wan.py (a training loop with
exact resume).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from media import make_example_data

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
EPOCHS = 3
RESUME_AT = 3  # epoch 1, batch 1 of 2 on each rank: mid-epoch
# 3 planned batches per epoch (buckets of 4, 3 and 3 samples, batch 4, partial kept), so a
# padding copy on rank 1 every epoch.
OPTIONS = ["--batch-size", "4", "--small-buckets", "partial", "--epochs", str(EPOCHS)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_example_data(tmp_path_factory.mktemp("integrations") / "data")


def launch(command: list[str], out: Path) -> list[dict[str, Any]]:
    """Run a 2-rank launch; returns each rank's JSON (rank order)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=REPO, timeout=240, check=False
    )
    assert done.returncode == 0, f"exited {done.returncode}:\n{done.stdout}\n{done.stderr[-6000:]}"
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(2)]


def torchrun(script: str, *args: str | Path | int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free port: tests running side by side do not collide
        "--nproc_per_node",
        "2",
        str(EXAMPLES / script),
        *map(str, args),
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def accelerate_launch(*args: str | Path | int) -> list[str]:
    """``accelerate launch`` with 2 processes on the CPU. Its ``--cpu`` launcher starts one
    process unless MPI is set up, so this is its torchrun launcher (``--multi_gpu``); the script
    passes ``Accelerator(cpu=True)`` without CUDA, which makes it MULTI_CPU on gloo."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        str(EXAMPLES / "train_accelerate.py"),
        *map(str, args),
    ]


def check_sharding(ranks: list[dict[str, Any]], epochs: range) -> None:
    """Disjoint ranks that cover every sample of each epoch, in equal step counts."""
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    samples = ranks[0]["samples"]
    assert len(samples) == 10 and ranks[1]["samples"] == samples  # every rank plans all
    per_epoch = ranks[0]["batches_per_epoch"]
    assert per_epoch == 2 and ranks[1]["batches_per_epoch"] == per_epoch
    steps = len(ranks[0]["steps"])
    assert steps == len(epochs) * per_epoch
    assert all(r["steps_per_rank"] == [steps, steps] for r in ranks)  # nobody waited
    for epoch in epochs:
        mine = [[s for s in r["steps"] if s["epoch"] == epoch] for r in ranks]
        assert all([s["position"] for s in m] == list(range(per_epoch)) for m in mine)
        real = [[k for s in m if not s["padding"] for k in s["keys"]] for m in mine]
        assert not set(real[0]) & set(real[1]), f"epoch {epoch}: a sample on both ranks"
        assert Counter(real[0] + real[1]) == Counter(samples), f"epoch {epoch}: not each once"
        assert sum(s["padding"] for m in mine for s in m) == 1  # 3 planned batches, 2 ranks
        assert all(s["shape"][0] == len(s["keys"]) for m in mine for s in m)
    losses = [s["loss"] for r in ranks for s in r["steps"]]
    assert all(0 < loss < 10 for loss in losses)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_torchrun_ddp_shards_equal_disjoint_batches_and_resumes(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = torchrun(
        "train_ddp.py", data, *OPTIONS, "--resume-at", RESUME_AT, "--out", out,
        "--work", tmp_path / "work",
    )  # fmt: skip
    ranks = launch(command, out)
    check_sharding(ranks, range(EPOCHS))
    states = [r["resume"]["state"] for r in ranks]
    # Mid-epoch, and the same point on every rank (they step together): only the rank differs.
    assert states[0] == {"epoch": 1, "position": 1, "rank": 0, "world_size": 2, "seed": 0}
    assert states[1] == {**states[0], "rank": 1}
    assert ranks[0]["resume"]["fingerprint"] == ranks[1]["resume"]["fingerprint"]
    for rank in ranks:
        resumed = rank["resume"]
        assert resumed["same_batches"] and resumed["same_losses"]
        assert [s["step"] for s in resumed["steps"]] == list(range(RESUME_AT + 1, 7))


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_accelerate_keeps_our_sharding_and_resumes_from_save_state(
    data: Path, tmp_path: Path
) -> None:
    pytest.importorskip("accelerate")
    first, work = tmp_path / "first", tmp_path / "work"
    ranks = launch(
        accelerate_launch(data, *OPTIONS, "--resume-at", RESUME_AT, "--work", work, "--out", first),
        first,
    )
    assert all(r["distributed_type"] == "DistributedType.MULTI_CPU" for r in ranks)
    check_sharding(ranks, range(EPOCHS))
    # A restarted job: a new launch loads the state saved at step 3 (accelerate saved rank 0's
    # dataset state; both ranks load it and go on with their own shards).
    second = tmp_path / "second"
    again = launch(
        accelerate_launch(data, *OPTIONS, "--resume-from", work / "state", "--out", second),
        second,
    )
    for before, after in zip(ranks, again, strict=True):
        assert after["resumed_from"] == {
            "step": RESUME_AT, "epoch": 1, "position": 1, "rank": 0, "world_size": 2, "seed": 0,
        }  # fmt: skip
        expected = [s for s in before["steps"] if s["step"] > RESUME_AT]
        assert after["steps"] == expected  # same batches, same members, bit-identical losses
        assert after["steps_per_rank"] == [len(expected)] * 2


def test_accelerate_prepare_would_shard_our_loader_again(data: Path) -> None:
    """Why train_accelerate.py prepares the model and optimizer only (docs/integrations.md):
    accelerate's ``prepare_data_loader`` on our loader, as rank 0 of 2, in one process."""
    pytest.importorskip("accelerate")
    from accelerate.data_loader import (
        DataLoaderDispatcher,
        IterableDatasetShard,
        prepare_data_loader,
    )

    from wan_data import WanVideoDataset
    from wan_data.loader import ProgressLoader

    ds = WanVideoDataset(
        data, frames=[17], fps=16, resolution=(64, 64), batch_size=2, rank=0, world_size=2
    )
    loader = ds.loader(num_workers=0)
    assert isinstance(loader, ProgressLoader) and loader.batch_size is None
    # Accelerator.prepare's default (device placement on, dispatch_batches=None) for an
    # IterableDataset: rank 0 reads and sends every rank a slice of what it read.
    dispatched = prepare_data_loader(loader, num_processes=2, process_index=0, put_on_device=True)
    assert isinstance(dispatched, DataLoaderDispatcher)
    # dispatch_batches=False: our (already sharded) dataset is sharded a second time, by a
    # wrapper that needs an integer batch size, and the loader is no longer ds.loader()'s.
    sharded = prepare_data_loader(
        loader, num_processes=2, process_index=0, dispatch_batches=False, put_on_device=False
    )
    assert isinstance(sharded.dataset, IterableDatasetShard)
    assert sharded.dataset.dataset is ds and not isinstance(sharded, ProgressLoader)
    with pytest.raises(TypeError, match="NoneType"):
        next(iter(sharded))
