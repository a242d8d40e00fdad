"""The options of a :class:`~wan_data.dataset.WanVideoDataset`, read from its configuration.

Read-only properties by the names users pass as keywords (``ds.frames``, ``ds.batch_size``,
``ds.cache_dir``...), so code written against the keyword arguments keeps working; the single
source of truth is ``ds.config`` (a :class:`~wan_data.config.DatasetConfig`). Kept apart from
``dataset.py`` so the dataset module reads as construction, iteration and the cache pass.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wan_data.config import DatasetConfig
    from wan_data.media.buckets import BucketSet

__all__ = ["DatasetOptions"]


class DatasetOptions:
    """The option properties of the dataset (a mixin: ``config`` and ``bucket_set`` are set by
    the dataset's constructor)."""

    config: DatasetConfig
    bucket_set: BucketSet

    @property
    def preset(self) -> str | None:
        """The preset the shape options came from (``None``: none)."""
        return self.config.preset

    @property
    def frames(self) -> tuple[int, ...]:
        """The frame buckets (counts of 4k+1 frames)."""
        return self.config.shape.frames

    @property
    def fps(self) -> float | None:
        """Sampling rate in frames per second (``None``: the source's native frames)."""
        return self.config.shape.fps

    @property
    def resolutions(self) -> tuple[tuple[int, int], ...]:
        """The ``(width, height)`` bucket tiers."""
        return self.config.shape.resolution

    @property
    def resolution(self) -> tuple[int, int]:
        """The first ``(width, height)`` tier."""
        return self.config.shape.resolution[0]

    @property
    def step(self) -> int:
        """The side multiple of every bucket, in pixels."""
        return self.config.shape.step

    @property
    def buckets(self) -> tuple[tuple[int, int], ...]:
        """Every spatial bucket ``(width, height)`` of every tier, sorted by aspect then area."""
        return self.bucket_set.all

    @property
    def batch_size(self) -> int:
        """Samples per batch."""
        return self.config.batching.batch_size

    @property
    def small_buckets(self) -> str:
        """What happens to a bucket's last partial batch: ``repeat``, ``drop`` or ``partial``."""
        return self.config.batching.small_buckets

    @property
    def seed(self) -> int:
        """The base of every random choice (plan, windows, crops, augmentations)."""
        return self.config.seed

    @property
    def num_ffmpeg_threads(self) -> int | None:
        """FFmpeg threads per decoder (``None``: FFmpeg's choice)."""
        return self.config.workers.num_ffmpeg_threads

    @property
    def metrics_callback(self) -> Any:
        """Called with ``report()`` every ``metrics_every`` batches (``None``: none)."""
        return self.config.observe.metrics_callback

    @property
    def metrics_every(self) -> int:
        """Batches between two metrics callbacks."""
        return self.config.observe.metrics_every

    @property
    def vae(self) -> str | os.PathLike[str] | None:
        """The Wan VAE the cache is encoded with (``None``: pixel batches)."""
        return self.config.latents.vae

    @property
    def cache_dir(self) -> str | None:
        """The latent cache folder as a string (``None``: no cache)."""
        cache_dir = self.config.latents.cache_dir
        return os.fspath(cache_dir) if cache_dir is not None else None

    @property
    def prepare_mode(self) -> str:
        """What a missing cache entry does: ``error`` (names the command that fills it) or ``auto``
        (``loader()`` fills the cache first).
        """
        return self.config.latents.prepare
