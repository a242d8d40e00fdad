"""Entry point of one rank in the 2-process distributed test (importable by spawned children)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch.distributed as dist

from wan_data import WanVideoDataset


def _counts(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "batches": report["batches"],
        "samples": report["samples"],
        "skipped": sorted((r["path"], r["stage"]) for r in report["skipped"]),
        "decode_in": report["stages"].get("decode", {}).get("in", 0),
        "probe_in": report["stages"].get("probe", {}).get("in", 0),
        "processes": report["memory"]["processes"],
    }


def rank_main(rank: int, world: int, root: str, out_dir: str, init_file: str, workers: int) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ds = WanVideoDataset(
            root,
            frames=[5, 17],
            fps=16,
            resolution=(32, 32),
            batch_size=2,
            seed=3,
            breaker_threshold=None,
        )
        batches = list(ds.loader(num_workers=workers, timeout=120 if workers else 0))
        record = {
            "rank": dist.get_rank(),
            "len": len(ds),
            "positions": [b["position"] for b in batches],
            "keys": [b["keys"] for b in batches],
            "padding": [bool(b["padding"]) for b in batches],
            "sizes": [len(b["keys"]) for b in batches],
            "samples": sorted(s.key for s in ds.samples),
            "local": _counts(ds.report()),
            "all": _counts(ds.report(all_ranks=True)),
        }
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        dist.destroy_process_group()


def mismatch_main(rank: int, world: int, roots: list[str], out_dir: str, init_file: str) -> None:
    """One rank of the rank-agreement test: each rank reads its own root (rank 1's has one file
    more, as a shared folder still syncing would) and records what its first batch raised."""
    from wan_data import RankMismatchError

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ds = WanVideoDataset(
            roots[rank],
            frames=[5],
            fps=8,
            resolution=(32, 32),
            batch_size=1,
            seed=0,
            report_dir=str(Path(out_dir) / f"reports{rank}"),
        )
        result: dict[str, Any] = {"samples": len(ds.samples)}
        try:
            next(iter(ds.loader(num_workers=0)))
            result["error"] = None
        except RankMismatchError as exc:
            result["error"] = str(exc)
        # The check passed or failed on both ranks alike: a second collective still pairs up.
        dist.barrier()
        (Path(out_dir) / f"mismatch{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()
