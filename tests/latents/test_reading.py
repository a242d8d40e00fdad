"""The train pass's reads (``wan_data.latents.reading``): batch tensors reused only when free."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
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


def _pass(ds: WanVideoDataset) -> list[dict[str, Any]]:
    ds.set_epoch(0)
    return list(ds.loader(num_workers=0))


def test_a_trainer_keeping_every_batch_gets_each_one_intact(cached: WanVideoDataset) -> None:
    kept = _pass(cached)  # every batch still held when the next one is read
    assert len(kept) == 4
    assert len({b["latents"].data_ptr() for b in kept}) == len(kept)
    expected = [b["latents"].clone() for b in _pass(cached)]
    for got, want in zip(kept, expected, strict=True):
        assert torch.equal(got["latents"], want)


def test_a_trainer_letting_go_of_each_batch_has_its_tensor_reused(
    cached: WanVideoDataset,
) -> None:
    expected = [b["latents"].clone() for b in _pass(cached)]
    cached.set_epoch(0)
    addresses = []
    for batch, want in zip(cached.loader(num_workers=0), expected, strict=True):
        assert torch.equal(batch["latents"], want)
        addresses.append(batch["latents"].data_ptr())
        del batch
    assert len(set(addresses)) < len(addresses)  # the pool took at least one again


def test_a_view_kept_by_the_trainer_is_never_overwritten(cached: WanVideoDataset) -> None:
    expected = [b["latents"][0].clone() for b in _pass(cached)]
    cached.set_epoch(0)
    firsts = [batch["latents"][0] for batch in cached.loader(num_workers=0)]
    for got, want in zip(firsts, expected, strict=True):
        assert torch.equal(got, want)


def test_batches_differ(cached: WanVideoDataset) -> None:
    """The checks above compare batches: they only bite if batches hold different latents."""
    batches = [b["latents"] for b in _pass(cached)]
    assert all(not torch.equal(a, b) for a, b in itertools.pairwise(batches))
