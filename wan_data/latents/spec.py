"""How a dataset addresses its latent cache: :class:`CacheSpec`, :func:`sample_key`, and the
VAE identity the train pass reads from the VAE's files.

Split out of :mod:`wan_data.latents.prepare` (which re-exports these names) so the cache pass
and the train-pass reader share one small module of addressing rules: a key computed anywhere
else than :func:`sample_key` would be a cache nobody finds. :meth:`CacheSpec.latent_shape` adds
the shape an entry of a bucket must have, which the reader checks before trusting an entry.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from wan_data.conditioning.condition_cache import ConditionSpec
from wan_data.conditioning.text_cache import TextSpec
from wan_data.errors import ConfigError, format_error
from wan_data.items import Bucket, PlanSample
from wan_data.latents.keys import cache_key_for, config_digest, source_identity
from wan_data.latents.latent_math import latent_shape_for
from wan_data.latents.vae import VaeInfo
from wan_data.media.frames import RESAMPLER_VERSION
from wan_data.planning.clips import DecodeOptions, plan_clips

__all__ = ["CacheSpec", "sample_key", "vae_info_from_files"]


@dataclass(frozen=True)
class CacheSpec:
    """What workers need to address the cache (picklable: no model, no open files)."""

    root: str
    vae: dict[str, object]
    dtypes: dict[str, str]
    normalisation: dict[str, object]
    variations: int = 1
    content_hash: bool = False
    command_hint: str = ""
    # Identities of the clip stages the pixels went through before encoding: a changed
    # transform is another latent, so another key.
    transforms: tuple[str, ...] = ()
    # Whether one of those stages draws per epoch (``Stage.varies_by_epoch``): the cache pass
    # runs variant v at epoch v, so each variant is other pixels even when the clip's window
    # and crop cannot vary, and the variant is part of the key.
    transforms_vary: bool = False
    # The text-embedding cache (None: batches carry no text_embeds).
    text: TextSpec | None = None
    # The I2V conditions cached beside each clip (default: none).
    conditions: ConditionSpec = field(default_factory=ConditionSpec)
    # When the dataset was planned (ns since the epoch): a source whose status changed after
    # it (ctime: touched, rewritten, replaced) changed under a running train pass, so its
    # missing entry means "stale", not "never cached". Not part of any key.
    planned_at_ns: int = field(default_factory=time.time_ns, compare=False)

    @classmethod
    def from_info(
        cls,
        root: str,
        info: VaeInfo,
        latent_dtype: torch.dtype,
        *,
        variations: int = 1,
        content_hash: bool = False,
        command_hint: str = "",
        transforms: tuple[str, ...] = (),
        transforms_vary: bool = False,
        text: TextSpec | None = None,
        conditions: ConditionSpec | None = None,
    ) -> CacheSpec:
        """The spec of a cache under ``root`` for the VAE described by ``info`` (its files'
        hashes, latent shape factors and normalisation; see :func:`vae_info_from_files`), with
        latents stored as ``latent_dtype``."""
        return cls(
            root=root,
            vae={
                "config_hash": info.config_hash,
                "weights_hash": info.weights_hash,
                "z_dim": info.z_dim,
                "spatial_factor": info.spatial_factor,
                "temporal_factor": info.temporal_factor,
            },
            dtypes={"vae": info.dtype, "latent": str(latent_dtype).replace("torch.", "")},
            normalisation={"mean": list(info.latents_mean), "std": list(info.latents_std)},
            variations=variations,
            content_hash=content_hash,
            command_hint=command_hint,
            transforms=transforms,
            transforms_vary=transforms_vary,
            text=text,
            conditions=conditions if conditions is not None else ConditionSpec(),
        )

    def latent_shape(self, bucket: Bucket) -> tuple[int, int, int, int]:
        """The ``(z, T, h, w)`` latents of every clip of ``bucket`` (its entries must match)."""
        vae = self.vae
        return latent_shape_for(
            bucket.frames,
            bucket.height,
            bucket.width,
            z_dim=int(vae["z_dim"]),  # type: ignore[call-overload]
            temporal_factor=int(vae["temporal_factor"]),  # type: ignore[call-overload]
            spatial_factor=int(vae["spatial_factor"]),  # type: ignore[call-overload]
        )

    def changed_since_planned(self, path: str) -> str | None:
        """When ``path`` changed after the dataset was planned (its ctime, local time), or None.

        The status-change time, not the mtime: ``touch``, a rewrite and a replacing rename all
        set it to now, and unlike the mtime nobody can set it back. The train pass asks only
        after a miss, to tell a source changed under it from a cache never filled.
        """
        try:
            st = os.stat(path)
        except OSError:
            return None
        if st.st_ctime_ns <= self.planned_at_ns:
            return None
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.st_ctime_ns / 1e9))

    def variant(self, epoch: int) -> int:
        """Epoch ``e`` trains on cached variant ``e mod variations``."""
        return epoch % self.variations

    @functools.cached_property
    def config(self) -> str:
        """:func:`~wan_data.latents.store.config_digest` of this spec (computed once)."""
        return config_digest(vae=self.vae, dtypes=self.dtypes, normalisation=self.normalisation)


def sample_key(
    sample: PlanSample, variant: int, options: DecodeOptions, spec: CacheSpec
) -> tuple[str, dict[str, object]]:
    """The cache key of one planned clip in one variant, and the clip description it hashes."""
    options = options.for_source(sample.probed.source)  # fps may be the concept's own
    plan = plan_clips(sample.probed, options, variant)[sample.clip_index]
    clip: dict[str, object] = {
        "clip_index": sample.clip_index,
        "times": list(plan.times) if plan.times is not None else None,
        "indices": list(plan.indices) if plan.indices is not None else None,
        "fps": options.fps,
        "bucket": [plan.bucket.frames, plan.bucket.width, plan.bucket.height],
        "resized": list(plan.resized),
        "offset": list(plan.offset),
        # The same plan resized by another resampler is other pixels: a cache filled before
        # the resampler changed is re-encoded, never served as this one's.
        "resampler": RESAMPLER_VERSION,
    }
    if spec.transforms:  # absent otherwise, so caches made before clip stages keep their keys
        clip["transforms"] = list(spec.transforms)
    if spec.transforms_vary:
        # A stage drawing per epoch ran at epoch ``variant``: that draw is part of the pixels.
        # Absent otherwise, so caches without such stages keep their keys.
        clip["variant"] = variant
    key = cache_key_for(
        spec.config,
        source=source_identity(sample.path, content_hash=spec.content_hash),
        clip=clip,
    )
    return key, clip


def vae_info_from_files(
    vae: str | os.PathLike[str], *, subfolder: str | None = None, dtype: torch.dtype = torch.float32
) -> VaeInfo:
    """The VAE's identity from its config and weight files, without building the model.

    The train pass needs cache keys, hence the VAE identity, but must not load a VAE; diffusers'
    ``extract_init_dict`` fills the config's defaults exactly as ``from_pretrained`` does, so the
    identity equals the one the cache pass computed from the loaded model.
    """
    from diffusers import AutoencoderKLWan
    from diffusers.configuration_utils import FrozenDict

    from wan_data.latents.vae_identity import _describe
    from wan_data.latents.vae_loading import resolve_vae_path

    path, sub = resolve_vae_path(vae, subfolder=subfolder)
    folder = Path(os.path.expanduser(path))
    if not folder.is_dir():
        raise ConfigError(
            format_error(
                "vae",
                str(vae),
                "is not a local folder, and the train pass computes cache keys from local files",
                "download the VAE once and pass its folder",
            )
        )
    config = AutoencoderKLWan.load_config(str(folder), subfolder=sub)
    init, _, _ = AutoencoderKLWan.extract_init_dict(config)
    return _describe(SimpleNamespace(config=FrozenDict(init)), path, sub, True, dtype)
