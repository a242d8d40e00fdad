"""The train pass's reads (``wan_data.latents.reading``): batch tensors reused only when free."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from batch_reuse import check_batches_reused_only_when_let_go
from media import make_video
from vae_fixtures import make_tiny_wan21_vae

from wan_data import WanVideoDataset

pytestmark = pytest.mark.integration

OPTIONS: dict[str, Any] = {
    "frames": [5],
    "fps": 8,
    "resolution": (64, 64),
    "batch_size": 2,
    "seed": 3,
    "device": "cpu",
    "latent_dtype": torch.float32,
}


def _prepared(root: Path, videos: int) -> WanVideoDataset:
    """A cached dataset of ``videos`` small clips in ``root`` (VAE and cache beside it)."""
    for i in range(videos):
        make_video(root / f"v{i}.mp4", width=64, height=64, fps=10 + 2 * i, num_frames=24)
    vae = make_tiny_wan21_vae(root.parent / f"{root.name}_vae")
    ds = WanVideoDataset(root, **OPTIONS, vae=vae, cache_dir=root.parent / f"{root.name}_cache")
    ds.prepare(num_workers=0, progress=False)
    return ds


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> WanVideoDataset:
    return _prepared(tmp_path_factory.mktemp("reading"), 8)


def test_latent_batches_are_reused_only_once_the_trainer_let_go(
    cached: WanVideoDataset,
) -> None:
    check_batches_reused_only_when_let_go(cached, "latents")


def test_the_report_counts_every_read_at_each_batch_a_corrupt_one_included(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The reader copies the cache's counters into the metrics once per batch and when a read
    fails, not after every read: at every batch the report has counted each read so far."""
    from wan_data.latents.store import LatentCache

    root = tmp_path_factory.mktemp("counted")
    ds = _prepared(root, 6)
    cache = LatentCache(root.parent / f"{root.name}_cache")
    victim = cache.path_for(sorted(cache.keys())[0])
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0xFF  # a latent byte: the checksum fails, the member is replaced
    victim.write_bytes(bytes(data))

    served = 0
    for batch in ds.loader(num_workers=0):
        served += len(batch["keys"])
        stats = ds.report()["cache"]
        assert stats["hits"] == served
    stats = ds.report()["cache"]
    assert (stats["hits"], stats["corruption_count"], stats["misses"]) == (served, 1, 1)
    assert served == len(ds) * OPTIONS["batch_size"]
