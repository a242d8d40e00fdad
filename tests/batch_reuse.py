"""One check of ``BatchBuffers`` through a dataset, shared by the pixel and the latent paths.

A batch tensor may be reused only once the trainer let go of it: whatever a trainer keeps (the
batch, or a view of it) must stay intact while later batches are read, and a trainer that drops
each batch must see the pool take a tensor again.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from wan_data import WanVideoDataset


def _pass(ds: WanVideoDataset) -> list[dict[str, Any]]:
    ds.set_epoch(0)  # the same epoch each time (a new pass would be the next one)
    return list(ds.loader(num_workers=0))


def check_batches_reused_only_when_let_go(ds: WanVideoDataset, key: str) -> None:
    """Run the three trainers (keeping batches, keeping views, dropping batches) over one epoch
    of ``ds`` (``num_workers=0``) and check ``batch[key]`` in each against a cloned pass."""
    expected = [b[key].clone() for b in _pass(ds)]
    assert len(expected) >= 3
    # The checks compare batches: they only bite if consecutive batches differ.
    assert all(not torch.equal(a, b) for a, b in itertools.pairwise(expected))

    kept = _pass(ds)  # every batch still held when the next one is read
    assert len({b[key].data_ptr() for b in kept}) == len(kept)
    for got, want in zip(kept, expected, strict=True):
        assert torch.equal(got[key], want)
    del kept

    ds.set_epoch(0)
    firsts = [batch[key][0] for batch in ds.loader(num_workers=0)]  # a view of each kept
    for got, want in zip(firsts, expected, strict=True):
        assert torch.equal(got, want[0])
    del firsts

    ds.set_epoch(0)
    addresses = []
    for batch, want in zip(ds.loader(num_workers=0), expected, strict=True):
        assert torch.equal(batch[key], want)
        addresses.append(batch[key].data_ptr())
        del batch
    assert len(set(addresses)) < len(addresses)  # the pool took at least one tensor again
