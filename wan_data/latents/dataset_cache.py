"""The latent cache as a dataset uses it: its spec, its encoder, its train-pass reader.

Kept out of ``dataset.py`` so the dataset stays a composition: it asks this module how its
configuration addresses the cache (:func:`cache_spec_for`), for the VAE of its cache pass
(:func:`make_encoder`) and for the stage that reads its batch members back
(:func:`latent_reader`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from wan_data.conditioning.condition_cache import ConditionSpec
from wan_data.conditioning.text_cache import TextSpec
from wan_data.config.cli import command_line
from wan_data.config.dataset_config import DatasetConfig
from wan_data.config.per_source import concept_configs
from wan_data.items import Batch, CachedClip, PlanSample
from wan_data.latents.prepare import CacheSpec, vae_info_from_files
from wan_data.latents.reading import LatentBatcher
from wan_data.latents.store import LatentCache
from wan_data.latents.vae import VaeEncoder
from wan_data.observe.metrics import Metrics
from wan_data.planning.batches import MemberReader
from wan_data.planning.clips import DecodeOptions
from wan_data.sources.concepts import Concept

__all__ = [
    "cache_spec_for",
    "latent_reader",
    "make_encoder",
    "make_image_encoder",
    "make_text_encoder",
]


def cache_spec_for(
    config: DatasetConfig,
    concepts: Sequence[Concept],
    *,
    clip_stages: Sequence[str] = (),
    python_stages: bool = False,
    clip_stages_vary: bool = False,
) -> CacheSpec | None:
    """How the train pass addresses the latent cache (``None`` without one).

    Args:
        config: the dataset's configuration (``latents`` and the options of the hint).
        concepts: the roots, for the "fill it with" command of a missing entry.
        clip_stages: identities of the clip stages the pixels go through before encoding:
            part of every cache key.
        python_stages: the dataset has stages of its own, which the command line cannot
            take: the hint then names ``ds.prepare()`` only.
        clip_stages_vary: one of the clip stages draws per epoch (``Stage.varies_by_epoch``):
            each cached variant is its own draw, so the variant is part of the key.

    The cache folder is created now, so an unwritable new one fails at construction; an
    existing one that refuses writes opens read-only (the train pass only reads; the cache pass
    then refuses to start).
    """
    latents = config.latents
    if latents.vae is None or latents.cache_dir is None:
        return None
    if python_stages:
        hint = "ds.prepare() (this dataset has Python stages the command line cannot take)"
    else:
        roots = [os.fspath(c.root) for c in concepts]
        hint = f"`{command_line(config, 'cache', roots)}` or ds.prepare()"
    text: TextSpec | None = None
    conditioning = config.conditioning
    if conditioning.text_encoder is not None:
        from wan_data.conditioning.text_identity import text_info_from_files

        info = text_info_from_files(
            conditioning.text_encoder,
            dtype=conditioning.text_dtype,
            max_length=conditioning.text_max_length,
        )
        text = TextSpec(
            encoder=info.identity,
            max_length=conditioning.text_max_length,
            dropout=conditioning.caption_dropout,
            seed=config.seed,
            command_hint=hint,
            captions=config.captions.tools(),
            concept_captions=tuple(
                (name, own.captions.tools())
                for name, own in concept_configs(config, concepts)[0].items()
            ),
        )
    clip = None
    if conditioning.image_encoder is not None:
        from wan_data.conditioning.condition_cache import clip_identity_from_files

        clip = clip_identity_from_files(conditioning.image_encoder, torch.float32)
    spec = CacheSpec.from_info(
        os.fspath(latents.cache_dir),
        vae_info_from_files(latents.vae, subfolder=latents.vae_subfolder, dtype=latents.vae_dtype),
        latents.latent_dtype,
        variations=latents.variations,
        content_hash=latents.content_hash,
        command_hint=hint,
        transforms=tuple(clip_stages),
        transforms_vary=clip_stages_vary,
        text=text,
        conditions=ConditionSpec(mode=conditioning.conditioning, clip=clip),
    )
    LatentCache(spec.root)
    return spec


def make_text_encoder(config: DatasetConfig) -> Any:
    """The UMT5 text encoder of the cache pass (loaded on its first use, in this process)."""
    from wan_data.conditioning.text import TextEncoder

    conditioning = config.conditioning
    assert conditioning.text_encoder is not None
    return TextEncoder(
        conditioning.text_encoder,
        device=config.latents.device,
        dtype=conditioning.text_dtype,
        max_length=conditioning.text_max_length,
        batch_size=conditioning.text_batch_size,
    )


def make_image_encoder(config: DatasetConfig) -> Any:
    """The CLIP image encoder of the cache pass, or ``None`` (Wan 2.2 models have none)."""
    conditioning = config.conditioning
    if conditioning.image_encoder is None or conditioning.conditioning not in ("i2v", "flf2v"):
        return None
    from wan_data.conditioning.clip import ClipImageEncoder

    return ClipImageEncoder(conditioning.image_encoder, device=config.latents.device)


def make_encoder(config: DatasetConfig) -> VaeEncoder:
    """The VAE of the cache pass, on ``latents.device`` (default: cuda when available)."""
    latents = config.latents
    assert latents.vae is not None
    return VaeEncoder(
        latents.vae,
        device=latents.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        vae_dtype=latents.vae_dtype,
        latent_dtype=latents.latent_dtype,
        encode_batch_size=latents.encode_batch_size,
        subfolder=latents.vae_subfolder,
    )


def latent_reader(
    spec: CacheSpec, options: DecodeOptions, batch_size: int, metrics: Metrics
) -> MemberReader:
    """Batch members read from the cache (verified, straight into their batch slot), with the
    cache's counters kept in ``metrics`` for the report.

    The counters are copied into ``metrics`` once per batch and whenever a read raises (a
    skipped member, the run's end), not after every read: the copy cost a tenth of the Python
    of a cached read.
    """
    cache = LatentCache(spec.root)
    batcher = LatentBatcher(options, spec, cache, batch_size)

    def read(sample: PlanSample, epoch: int) -> CachedClip:
        try:
            return batcher.read(sample, epoch)
        except BaseException:
            metrics.cache = cache.counters()
            raise

    def collate(clips: list[CachedClip]) -> Batch:
        metrics.cache = cache.counters()
        return batcher.collate(clips)

    return MemberReader.from_function("cache", read, collate)
