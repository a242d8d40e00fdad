"""Fixtures of the property tests: media pools built once per session, one torch thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from prop_helpers import MediaPool, build_media_pool


@pytest.fixture(scope="session")
def media_pool(tmp_path_factory: pytest.TempPathFactory) -> MediaPool:
    """Six tiny good videos and six broken files, built once for every property."""
    return build_media_pool(tmp_path_factory.mktemp("property_media"))


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Run each property module with one intra-op thread, as DataLoader workers do.

    On a 2-core machine torch's default 2 threads make the tiny crops of these tests several
    times slower (thread hand-off dominates 32x32 clips), which would blow the time budget.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
