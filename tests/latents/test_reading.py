"""The train pass's reads (``wan_data.latents.reading``): batch tensors reused only when free."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> WanVideoDataset:
    root = tmp_path_factory.mktemp("reading")
    for i in range(8):
        make_video(root / f"v{i}.mp4", width=64, height=64, fps=10 + 2 * i, num_frames=24)
    vae = make_tiny_wan21_vae(root.parent / f"{root.name}_vae")
    ds = WanVideoDataset(root, **OPTIONS, vae=vae, cache_dir=root.parent / f"{root.name}_cache")
    ds.prepare(num_workers=0, progress=False)
    return ds


def test_latent_batches_are_reused_only_once_the_trainer_let_go(
    cached: WanVideoDataset,
) -> None:
    check_batches_reused_only_when_let_go(cached, "latents")
