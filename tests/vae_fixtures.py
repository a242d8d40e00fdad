"""Tiny Wan VAEs for tests, saved to disk so tests load them through ``from_pretrained``.

They follow design.md §3: the real architecture at base_dim 3 (Wan2.1: 13,861 parameters; the
Wan2.2 TI2V-5B variant with patch_size 2 and residual blocks: 34,146), seeded weights, and
distinct non-trivial ``latents_mean``/``latents_std`` so a test notices when normalisation is
skipped or uses the wrong statistics. Building one takes milliseconds; encoding a
1x3x9x64x64 clip ~0.03 s on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

_COMMON: dict[str, Any] = {
    "base_dim": 3,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],
}
WAN21_KWARGS: dict[str, Any] = {**_COMMON, "z_dim": 16}
WAN22_KWARGS: dict[str, Any] = {
    **_COMMON,
    "z_dim": 48,
    "in_channels": 12,
    "out_channels": 12,
    "is_residual": True,
    "patch_size": 2,
    "scale_factor_spatial": 16,
}


def latent_stats(z_dim: int, seed: int) -> tuple[list[float], list[float]]:
    """Seeded per-channel mean in [-0.5, 0.5] and std in [0.5, 2]."""
    gen = torch.Generator().manual_seed(seed)
    mean = (torch.rand(z_dim, generator=gen) - 0.5).tolist()
    std = (0.5 + 1.5 * torch.rand(z_dim, generator=gen)).tolist()
    return [round(v, 6) for v in mean], [round(v, 6) for v in std]


def build_tiny_vae(kwargs: dict[str, Any], *, seed: int = 0) -> Any:
    """An in-memory tiny ``AutoencoderKLWan`` with seeded weights and statistics."""
    from diffusers import AutoencoderKLWan

    mean, std = latent_stats(kwargs["z_dim"], seed + 1000)
    torch.manual_seed(seed)
    return AutoencoderKLWan(**kwargs, latents_mean=mean, latents_std=std)


def _save(kwargs: dict[str, Any], path: str | Path, seed: int) -> Path:
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    build_tiny_vae(kwargs, seed=seed).save_pretrained(folder)
    return folder


def make_tiny_wan21_vae(path: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny Wan2.1-architecture VAE (z_dim 16, spatial factor 8) into ``path``."""
    return _save(WAN21_KWARGS, path, seed)


def make_tiny_wan22_vae(path: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny Wan2.2 TI2V-5B-architecture VAE (z_dim 48, spatial factor 16) into ``path``."""
    return _save(WAN22_KWARGS, path, seed)


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
