"""(g) torchrun DDP: every rank trains a tiny model on its own shard of each epoch's plan.

    python -m torch.distributed.run --standalone --nproc_per_node 2 examples/train_ddp.py \\
        [DATA] [--epochs 3] [--resume-at K] [--out DIR] [--num-workers 1]

``WanVideoDataset`` shards by itself: created after ``init_process_group``, it reads the rank and
world size from ``torch.distributed`` and plans every epoch identically on every rank, then
rank ``r`` takes batches ``r, r + world, ...`` and every rank gets the same number of batches
(copies flagged ``padding`` fill the last round), so DDP's gradient all-reduce never waits on a
rank that ran out. So: no ``DistributedSampler``, and ``DataLoader(ds, batch_size=None)`` (here
``ds.loader()``, which also records progress for ``state_dict()``).

The model is a small 3-D convolution trained to predict the noise added to the (pooled) pixel
batches: real gradients through DDP in seconds on a CPU (gloo; nccl with one GPU per rank).
Without ``DATA``, rank 0 generates the examples' dataset into a temporary folder and tells the
other ranks where (one node only: on several nodes pass a folder every node sees).

``--resume-at K`` saves a checkpoint at step K on every rank (the dataset's ``state_dict()``, the
model and the optimizer; the noise is seeded by seed, rank and step), rebuilds dataset, model
and optimizer from scratch, loads it and trains to the end, checking that the batches and losses
after K are the uninterrupted run's. ``--out DIR`` writes ``rank<r>.json``: what each rank saw, for
tests/test_integrations.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from example_data import TINY, make_example_data
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from wan_data import WanVideoDataset

# --------------------------------------------------------------------------- shared pieces
# (examples/train_accelerate.py imports these: only the distributed wrapping differs.)


class TinyDenoiser(nn.Module):
    """Predicts the noise added to a clip: two 3-D convolutions on pixels pooled 4x in space.

    Any bucket shape goes through (the batches of one epoch come in several), and a step
    costs milliseconds, so the run's time is the data pipeline's and DDP's."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(3, width, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv3d(width, 3, kernel_size=3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def denoising_loss(
    model: nn.Module, batch: dict[str, Any], generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Per-member MSE of the predicted noise, times ``batch["loss_weights"]`` (docs/training.md:
    how a Wan trainer uses the same keys on latents)."""
    pixels = batch["pixels"].to(device, non_blocking=True)  # (B, 3, F, H, W) in [-1, 1]
    x0 = nn.functional.avg_pool3d(pixels, kernel_size=(1, 4, 4))
    noise = torch.randn(x0.shape, generator=generator).to(device)
    sigma = torch.rand(x0.shape[0], generator=generator).to(device).view(-1, 1, 1, 1, 1)
    pred = model(x0 + sigma * noise)
    per_member = ((pred - noise) ** 2).mean(dim=(1, 2, 3, 4))
    return (per_member * batch["loss_weights"].to(device)).mean()


def make_dataset(root: Path, args: argparse.Namespace) -> WanVideoDataset:
    """The dataset of every rank: the same options and seed everywhere (the plan is a pure
    function of them, so ranks agree on it without talking). Create it after
    ``init_process_group``: that is when it can read the rank and world size."""
    options: dict[str, Any] = {
        **TINY,
        "batch_size": args.batch_size,
        "small_buckets": args.small_buckets,
        "seed": args.seed,
    }
    return WanVideoDataset(root, **options)


def check_same_dataset(ds: WanVideoDataset) -> None:
    """Fail fast unless every rank built the same sample list.

    Each rank builds its own (collect and probe, or the sample index): a file that appeared,
    changed or failed to open on one rank only would give that rank another plan, so samples
    would overlap or go missing, or batch counts would differ and DDP would hang. ``ds.loader()``
    checks this itself before the first batch (one ``all_gather_object`` of the fingerprint and
    counts); calling it here, before the model is built, fails before any other work."""
    ds.check_ranks_once()  # raises wan_data.RankMismatchError on every rank alike


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The noise of one step of one rank, from (seed, rank, step) alone: a resumed run draws
    the same noise without saving a generator (accelerate's ``save_state`` keeps the main
    process's custom objects only, so a per-rank generator state would not survive it)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + rank) * 1_000_003 + step)


def batch_record(batch: dict[str, Any], step: int, loss: float, root: Path) -> dict[str, Any]:
    """What the test checks of one step: which planned batch it was, and its members."""
    return {
        "step": step,
        "epoch": int(batch["epoch"]),
        "position": int(batch["position"]),
        "padding": bool(batch["padding"]),
        "keys": list(batch["keys"]),
        "paths": [os.path.relpath(p, root) for p in batch["paths"]],
        "shape": list(batch["pixels"].shape),
        "loss": loss,
    }


def make_parser(description: str) -> argparse.ArgumentParser:
    """The options both examples take (train_accelerate.py adds its own)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "data",
        nargs="?",
        type=Path,
        help="a folder of videos every rank sees (default: a small generated dataset)",
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--resume-at", type=int, default=None, metavar="K")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--small-buckets", choices=("repeat", "drop", "partial"), default="repeat")
    parser.add_argument("--num-workers", type=int, default=1, help="DataLoader workers per rank")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write rank<r>.json here")
    parser.add_argument("--work", type=Path, default=None, help="checkpoint folder (shared)")
    return parser


def shared_folder(
    given: Path | None, rank: int, make: Callable[[Path], Path]
) -> tuple[Path, Path | None]:
    """``given``, or a temporary folder rank 0 fills with ``make(folder)`` and broadcasts
    (every rank must read the same files: the plan hashes their paths). Returns the folder
    and what to remove at the end (rank 0's temporary folder)."""
    if given is not None:
        return given, None
    made: list[str | None] = [None]
    if rank == 0:
        made = [str(make(Path(tempfile.mkdtemp(prefix="wan_data_ddp_"))))]
    dist.broadcast_object_list(made, src=0)
    folder = Path(str(made[0]))
    return folder, (folder if rank == 0 else None)


# --------------------------------------------------------------------------- the DDP run


def setup_distributed() -> torch.device:
    """``init_process_group`` from torchrun's environment: nccl with one GPU per rank when
    there are enough, else gloo on the CPU. The timeout turns a hang (a rank that stopped
    calling the all-reduce) into an error."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and torch.cuda.device_count() >= local_world
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=120))
    return torch.device("cuda", local_rank) if cuda else torch.device("cpu")


@dataclass
class Run:
    """One rank's training state, built from scratch; ``restore`` loads a checkpoint into it."""

    root: Path
    args: argparse.Namespace
    device: torch.device
    ds: WanVideoDataset = field(init=False)
    model: DistributedDataParallel = field(init=False)
    optimizer: torch.optim.Optimizer = field(init=False)
    step: int = 0

    def __post_init__(self) -> None:
        self.ds = make_dataset(self.root, self.args)  # after init_process_group: sharded
        check_same_dataset(self.ds)
        torch.manual_seed(self.args.seed)  # the same initial weights on every rank
        module = TinyDenoiser().to(self.device)
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.model = DistributedDataParallel(module, device_ids=ids)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.args.lr)

    def save(self, path: Path) -> None:
        """This rank's checkpoint. Every rank saves its own data state; they hold the same
        epoch and position (ranks take the same number of steps) and differ only in rank."""
        torch.save(
            {
                "data": self.ds.state_dict(),  # after the last batch this rank trained on
                "model": self.model.module.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "step": self.step,
            },
            path,
        )

    def restore(self, path: Path) -> dict[str, Any]:
        checkpoint: dict[str, Any] = torch.load(path, weights_only=False)
        self.ds.load_state_dict(checkpoint["data"])
        self.model.module.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.step = checkpoint["step"]
        return checkpoint

    def batches(self) -> Generator[dict[str, Any], None, None]:
        """This rank's batches up to ``--epochs``, from where the dataset stands (epoch 0, or
        the restored resume point)."""
        workers = self.args.num_workers
        loader = self.ds.loader(
            num_workers=workers,
            persistent_workers=workers > 0,  # they see set_epoch (shared memory)
            pin_memory=self.device.type == "cuda",
            timeout=120 if workers else 0,
        )
        for epoch in range(self.ds.next_epoch(), self.args.epochs):
            self.ds.set_epoch(epoch)  # a restored dataset keeps its resume point for it
            yield from loader

    def train(self, save_at: int | None, checkpoint: Path | None) -> list[dict[str, Any]]:
        records = []
        batches = self.batches()
        try:
            for batch in batches:
                noise = step_generator(self.args.seed, dist.get_rank(), self.step)
                loss = denoising_loss(self.model, batch, noise, self.device)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()  # DDP all-reduces the gradients here: every rank must come
                self.optimizer.step()
                self.step += 1
                records.append(batch_record(batch, self.step, loss.item(), self.root))
                if self.step == save_at and checkpoint is not None:
                    self.save(checkpoint)
        finally:
            batches.close()  # stops the persistent workers now
        return records


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = make_parser(__doc__.splitlines()[0]).parse_args(argv)
    device = setup_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    root, made = shared_folder(args.data, rank, make_example_data)
    work, made_work = shared_folder(args.work, rank, lambda folder: folder)
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = _main(args, root, work, device, rank, world)
        # Nobody removes a folder another rank still reads. Not in `finally`: after an error
        # the other ranks may be waiting in another collective, and a barrier would hang.
        dist.barrier()
        return result
    finally:
        for folder in (made, made_work):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        dist.destroy_process_group()


def _main(
    args: argparse.Namespace, root: Path, work: Path, device: torch.device, rank: int, world: int
) -> dict[str, Any]:
    started = time.perf_counter()
    run = Run(root, args, device)
    print(
        f"rank {rank}/{world} on {device}: {len(run.ds.samples)} sample(s), "
        f"{len(run.ds)} batch(es) per epoch on this rank"
    )
    checkpoint = work / f"checkpoint-rank{rank}.pt"
    records = run.train(args.resume_at, checkpoint)
    steps = torch.tensor([len(records)], device=device)
    every = [torch.zeros_like(steps) for _ in range(world)]
    dist.all_gather(every, steps)
    result: dict[str, Any] = {
        "rank": rank,
        "world_size": world,
        "batches_per_epoch": len(run.ds),
        "samples": sorted(s.key for s in run.ds.samples),
        "steps": records,
        "steps_per_rank": [int(n) for n in every],
    }
    padding = sum(r["padding"] for r in records)
    print(
        f"rank {rank}: {len(records)} step(s) ({padding} padding), steps on every rank "
        f"{result['steps_per_rank']}, loss {records[0]['loss']:.4f} -> {records[-1]['loss']:.4f}"
    )
    if args.resume_at is not None:
        # Nothing survives but the checkpoint file: a fresh dataset, model and optimizer.
        del run
        resumed = Run(root, args, device)
        state = resumed.restore(checkpoint)["data"]
        again = resumed.train(None, None)
        after = [r for r in records if r["step"] > args.resume_at]
        same_batches = [(r["epoch"], r["position"], r["keys"]) for r in again] == [
            (r["epoch"], r["position"], r["keys"]) for r in after
        ]
        same_losses = [r["loss"] for r in again] == [r["loss"] for r in after]
        print(
            f"rank {rank}: resumed at step {args.resume_at} (epoch {state['epoch']}, batch "
            f"{state['position']}): {len(again)} step(s), same batches {same_batches}, "
            f"same losses {same_losses}"
        )
        result["resume"] = {
            "state": {k: state[k] for k in ("epoch", "position", "rank", "world_size", "seed")},
            "fingerprint": state["fingerprint"],
            "steps": again,
            "same_batches": same_batches,
            "same_losses": same_losses,
        }
    result["seconds"] = time.perf_counter() - started
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"rank{rank}.json").write_text(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
