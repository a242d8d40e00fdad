"""(h) Hugging Face accelerate: the DDP example's loop with ``Accelerator``, our sharding kept.

    accelerate launch --multi_gpu --num_processes 2 examples/train_accelerate.py \\
        [DATA] [--epochs 3] [--resume-at K --work DIR] [--resume-from DIR] [--out DIR]

``--multi_gpu`` is accelerate's torchrun launcher, on CPUs too: its ``--cpu`` launcher starts a
single process unless MPI is set up. Without CUDA the script passes ``Accelerator(cpu=True)``,
which makes the run MULTI_CPU on gloo (``python -m torch.distributed.run --nproc_per_node 2``
works the same).

The rule: ``accelerator.prepare(model, optimizer)``, and **not** the DataLoader. The dataset
already shards by rank (created after ``Accelerator()``, which initialises the process group, it
reads the rank and world size from ``torch.distributed``) and already gives every rank the same
number of batches. What ``prepare`` would do to a loader over an ``IterableDataset``
(accelerate's ``prepare_data_loader``, checked in tests/test_integrations.py):

- by default (``dispatch_batches=None`` means ``True`` for an ``IterableDataset``) it becomes a
  ``DataLoaderDispatcher``: rank 0 alone iterates *its* shard, concatenates ``num_processes``
  batches and sends every rank a slice, so half the plan is never read (at 2 ranks) and batches
  of different buckets cannot be concatenated;
- with ``DataLoaderConfiguration(dispatch_batches=False)`` the dataset is wrapped in an
  ``IterableDatasetShard``, which shards a second time (each rank keeps a slice of what it was
  dealt) and needs an integer ``batch_size``: with ours (``None``, the dataset batches)
  iteration fails with a ``TypeError``;
- either way the prepared loader is a new ``DataLoader``, not ``ds.loader()``'s
  ``ProgressLoader``, so ``ds.state_dict()`` no longer knows where the trainer is.

``split_batches`` and ``even_batches`` only matter to a prepared loader: nothing to set.

Checkpoints go through accelerate: ``accelerator.register_for_checkpointing(ds)`` and
``save_state``/``load_state``. accelerate saves a registered object from the main process only,
and every rank loads that one file; that is right here, because every rank's
``ds.state_dict()`` holds the same epoch and position (ranks step together) and
``load_state_dict`` resumes each rank's own shard from it. ``--resume-at K --work DIR`` saves
the state at step K into ``DIR/state`` (and trains on); a second launch with ``--resume-from
DIR/state`` loads it and trains to the end, as a restarted job does. ``--prepare-loader
dispatch|shard`` shows the two failure modes above instead.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from example_data import make_example_data
from train_ddp import (
    TinyDenoiser,
    batch_record,
    check_same_dataset,
    denoising_loss,
    make_dataset,
    make_parser,
    shared_folder,
    step_generator,
)

from wan_data import WanVideoDataset


class Run:
    """One process's training state under accelerate, built from scratch."""

    def __init__(self, accelerator: Accelerator, root: Path, args: argparse.Namespace) -> None:
        self.accelerator = accelerator
        self.root = root
        self.args = args
        self.ds: WanVideoDataset = make_dataset(root, args)  # after Accelerator(): sharded
        check_same_dataset(self.ds)
        torch.manual_seed(args.seed)  # the same initial weights on every rank
        model = TinyDenoiser()
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
        # The model and the optimizer only; see the module docstring for the loader.
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        accelerator.register_for_checkpointing(self.ds)  # saved and restored by *_state()
        self.step = 0

    def batches(self) -> Generator[dict[str, Any], None, None]:
        """This rank's batches up to ``--epochs``, from where the dataset stands."""
        workers = self.args.num_workers
        loader: Any = self.ds.loader(
            num_workers=workers, persistent_workers=workers > 0, timeout=120 if workers else 0
        )
        if self.args.prepare_loader != "no":
            loader = self.accelerator.prepare(loader)  # what not to do: see the docstring
        for epoch in range(self.ds.next_epoch(), self.args.epochs):
            self.ds.set_epoch(epoch)
            yield from loader

    def save(self, folder: Path) -> None:
        """Model, optimizer, RNG states and (main process) the dataset's state, plus the step."""
        self.accelerator.save_state(folder)
        if self.accelerator.is_main_process:
            (folder / "step.json").write_text(json.dumps({"step": self.step}))

    def restore(self, folder: Path) -> dict[str, Any]:
        """Load a ``save`` folder; returns the dataset state it held."""
        self.accelerator.load_state(folder)  # calls self.ds.load_state_dict(rank 0's state)
        self.step = json.loads((folder / "step.json").read_text())["step"]
        state: dict[str, Any] = torch.load(folder / "custom_checkpoint_0.pkl", weights_only=False)
        return state

    def train(self, save_at: int | None, folder: Path | None) -> list[dict[str, Any]]:
        accelerator = self.accelerator
        records = []
        batches = self.batches()
        try:
            for batch in batches:
                noise = step_generator(self.args.seed, accelerator.process_index, self.step)
                loss = denoising_loss(self.model, batch, noise, accelerator.device)
                self.optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                self.optimizer.step()
                self.step += 1
                records.append(batch_record(batch, self.step, loss.item(), self.root))
                if self.step == save_at and folder is not None:
                    self.save(folder)
        finally:
            batches.close()
        return records


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--resume-from", type=Path, default=None, help="a --resume-at state")
    parser.add_argument(
        "--prepare-loader",
        choices=("no", "dispatch", "shard"),
        default="no",
        help="no: keep our sharding (right); dispatch: accelerate's default for an "
        "IterableDataset; shard: DataLoaderConfiguration(dispatch_batches=False)",
    )
    args = parser.parse_args(argv)
    # Only the demonstration modes prepare a loader; for them: None = accelerate's default.
    dispatch = False if args.prepare_loader == "shard" else None
    # cpu=True without CUDA: with it, a torchrun-style launch (LOCAL_RANK set) becomes MULTI_CPU
    # on gloo; without it accelerate finds no backend and each process trains alone.
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        dataloader_config=DataLoaderConfiguration(dispatch_batches=dispatch),
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    root, made = shared_folder(args.data, rank, make_example_data)
    work, made_work = shared_folder(args.work, rank, lambda folder: folder)
    try:
        result = _main(accelerator, args, root, work, rank, world)
        # Nobody removes a folder another rank still reads. Not in `finally`: after an error
        # the other ranks may be waiting in another collective, and a barrier would hang.
        accelerator.wait_for_everyone()
        return result
    finally:
        for folder in (made, made_work):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        accelerator.end_training()


def _main(
    accelerator: Accelerator,
    args: argparse.Namespace,
    root: Path,
    work: Path,
    rank: int,
    world: int,
) -> dict[str, Any]:
    started = time.perf_counter()
    run = Run(accelerator, root, args)
    print(
        f"rank {rank}/{world} on {accelerator.device} ({accelerator.distributed_type}): "
        f"{len(run.ds.samples)} sample(s), {len(run.ds)} batch(es) per epoch on this rank"
    )
    result: dict[str, Any] = {
        "rank": rank,
        "world_size": world,
        "distributed_type": str(accelerator.distributed_type),
        "batches_per_epoch": len(run.ds),
        "samples": sorted(s.key for s in run.ds.samples),
    }
    if args.resume_from is not None:
        state = run.restore(args.resume_from)
        result["resumed_from"] = {
            "step": run.step,
            **{k: state[k] for k in ("epoch", "position", "rank", "world_size", "seed")},
        }
        print(
            f"rank {rank}: resumed at step {run.step} (epoch {state['epoch']}, batch "
            f"{state['position']}; the state rank {state['rank']} saved)"
        )
    records = run.train(args.resume_at, work / "state")
    counts = accelerator.gather(torch.tensor([len(records)], device=accelerator.device))
    result["steps"] = records
    result["steps_per_rank"] = [int(n) for n in counts]
    print(f"rank {rank}: {len(records)} step(s), steps on every rank {result['steps_per_rank']}")
    result["seconds"] = time.perf_counter() - started
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"rank{rank}.json").write_text(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
