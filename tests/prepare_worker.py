"""One rank of the 2-process cache-pass tests (importable by spawned children).

Each rank builds the dataset after ``init_process_group`` (so it takes its rank from
``torch.distributed``), runs ``ds.prepare()`` on the shared cache folder and writes a JSON record:
its summary, the keys of the tasks it was dealt (computed as ``prepare_cache`` deals them) and the
keys it actually wrote (every ``LatentCache.put`` of this process is recorded).
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"

import torch
import torch.distributed as dist

from wan_data import WanVideoDataset
from wan_data.latents.prepare import sample_key
from wan_data.latents.store import LatentCache


def rank_main(
    rank: int,
    world: int,
    root: str,
    vae: str,
    cache_dir: str,
    out_dir: str,
    init_file: str,
    options: dict[str, Any],
) -> None:
    torch.set_num_threads(1)  # two ranks share two cores
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=180),
    )
    written: list[str] = []
    original_put = LatentCache.put

    def recording_put(
        self: LatentCache, key: str, latents: torch.Tensor, metadata: dict[str, str]
    ) -> Path:
        path = original_put(self, key, latents, metadata)
        written.append(key)
        return path

    LatentCache.put = recording_put  # type: ignore[method-assign]
    try:
        ds = WanVideoDataset(root, **options, vae=vae, cache_dir=cache_dir)
        spec = ds.cache_spec
        assert spec is not None
        own_rank, own_world = ds.rank_and_world_size()
        # The tasks prepare_cache deals to this rank: (sample, variant) pairs, strided by rank.
        tasks = [(i, v) for i in range(len(ds.samples)) for v in range(spec.variations)][
            own_rank::own_world
        ]
        task_keys = [sample_key(ds.samples[i], v, ds._decode, spec)[0] for i, v in tasks]
        dist.barrier()  # both ranks look at the empty cache at the same time
        summary = ds.prepare(num_workers=0, progress=False)
        dist.barrier()
        record = {
            "rank": own_rank,
            "world_size": own_world,
            "samples": [s.key for s in ds.samples],
            "task_keys": task_keys,
            "written": written,
            "summary": summary,
        }
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        LatentCache.put = original_put  # type: ignore[method-assign]
        dist.destroy_process_group()
