"""Shared fixtures: the generated media corpus, a tiny Wan VAE folder, offline hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from media import Corpus, build_corpus  # tests/ is on sys.path: it has no __init__.py

SHARED_MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """The generated corpus (good, short, image, broken, damaged, ignored), built once."""
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def shared_media() -> Path:
    """Real-world files from ../shared/media (read-only); skips when absent."""
    if not SHARED_MEDIA.is_dir():
        pytest.skip(f"real media folder {SHARED_MEDIA} not present")
    return SHARED_MEDIA
