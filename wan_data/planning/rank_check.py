"""Every rank must plan the same epoch: a check, once, before the first batch.

Each rank builds its own sample list (collect and probe, or the sample index). A file that
appeared, changed or failed to open on one rank only (a shared folder still syncing between
nodes, a mount missing on one of them) gives that rank another plan: samples overlap or go
missing and, when the batch counts differ, the rank with fewer batches leaves the epoch while
the others wait in their next all-reduce, and DDP hangs with no error. One
``all_gather_object`` of (fingerprint, samples, batches) before the first batch turns that hang
into an error on every rank, naming what differs.

It runs in the main process (collectives are not available in DataLoader workers): from
``ds.loader()`` and from iterating the dataset with ``num_workers=0``; a plain multi-worker
``DataLoader`` should call :func:`check_ranks_agree` itself after construction. It only runs
when ``torch.distributed`` is initialised with the dataset's world size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from wan_data.errors import format_error

if TYPE_CHECKING:
    from wan_data.dataset import WanVideoDataset

__all__ = ["RankMismatchError", "check_ranks_agree"]


class RankMismatchError(RuntimeError):
    """The ranks built different sample lists or plans (raised on every rank alike)."""


def check_ranks_agree(ds: WanVideoDataset) -> bool:
    """Compare this rank's sample list and plan with every other rank's (a collective).

    Returns ``False`` when there is nothing to compare (no process group, or the dataset's
    world size is not the group's), ``True`` when every rank agrees.

    Raises:
        RankMismatchError: on every rank, when any rank's fingerprint (options and sample
            list), sample count or batch count differs.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return False
    rank, world = ds.rank_and_world_size()
    if world < 2 or dist.get_world_size() != world:
        return False
    mine: dict[str, Any] = {
        "rank": rank,
        "fingerprint": ds.fingerprint,
        "samples": len(ds.samples),
        "batches": len(ds.plan().batches),
    }
    every: list[Any] = [None] * world
    dist.all_gather_object(every, mine)
    keys = ("fingerprint", "samples", "batches")
    if all(all(other[k] == every[0][k] for k in keys) for other in every):
        return True
    rows = ", ".join(
        f"rank {r['rank']}: {r['samples']} samples, {r['batches']} batches, "
        f"fingerprint {str(r['fingerprint'])[:12]}"
        for r in every
    )
    raise RankMismatchError(
        format_error(
            "the ranks' sample lists",
            rows,
            "must be the same on every rank (one plan, split by rank)",
            "Every rank must see the same files with the same options and seed: build the "
            "sample index once before launching (wan-data scan or cache with the same options) "
            "and make sure a shared folder has finished syncing on every node "
            "(docs/integrations.md)",
            stage="plan",
        )
    )
