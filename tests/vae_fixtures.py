"""Tiny Wan VAEs for tests, saved to disk so tests load them through ``from_pretrained``.

The builders live in :mod:`wan_data.tools.synthetic` (the demo needs them too); this module keeps
the
names the tests import. They follow design.md §3: the real architecture at base_dim 3 (Wan2.1:
13,861 parameters; the Wan2.2 TI2V-5B variant with patch_size 2 and residual blocks: 34,146),
seeded weights, and distinct non-trivial ``latents_mean``/``latents_std`` so a test notices
when normalisation is skipped or uses the wrong statistics. Building one takes milliseconds;
encoding a 1x3x9x64x64 clip ~0.03 s on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from wan_data.tools.synthetic import make_tiny_wan_vae, tiny_latent_stats, tiny_wan_vae_config

WAN21_KWARGS: dict[str, Any] = tiny_wan_vae_config("wan2.1")
WAN22_KWARGS: dict[str, Any] = tiny_wan_vae_config("wan2.2")
latent_stats = tiny_latent_stats


def build_tiny_vae(kwargs: dict[str, Any], *, seed: int = 0) -> Any:
    """An in-memory tiny ``AutoencoderKLWan`` from any config (a variant of the two above)."""
    from diffusers import AutoencoderKLWan

    mean, std = latent_stats(kwargs["z_dim"], seed + 1000)
    torch.manual_seed(seed)
    return AutoencoderKLWan(**kwargs, latents_mean=mean, latents_std=std)


def make_tiny_wan21_vae(path: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny Wan2.1-architecture VAE (z_dim 16, spatial factor 8) into ``path``."""
    return make_tiny_wan_vae(path, variant="wan2.1", seed=seed)


def make_tiny_wan22_vae(path: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny Wan2.2 TI2V-5B-architecture VAE (z_dim 48, spatial factor 16) into ``path``."""
    return make_tiny_wan_vae(path, variant="wan2.2", seed=seed)


def make_tiny_wan_repo(path: str | Path, *, seed: int = 0, wan22: bool = False) -> Path:
    """Write a full Wan Diffusers repo layout: ``path/model_index.json`` and ``path/vae/``."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    (make_tiny_wan22_vae if wan22 else make_tiny_wan21_vae)(root / "vae", seed=seed)
    index = {
        "_class_name": "WanPipeline",
        "_diffusers_version": "0.42.1",
        "vae": ["diffusers", "AutoencoderKLWan"],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return root
