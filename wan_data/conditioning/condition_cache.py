"""The image-to-video conditions in the cache, beside each clip's latents.

A condition belongs to one clip variant (its window and crop: the first frame is the clip's own
frame 0), so its entries are keyed from the clip's latent key: ``derived_key(key, "cond",
mode)`` for the condition latents (:func:`~wan_data.conditioning.image.encode_condition`, a VAE
pass of its own) and ``derived_key(key, "clip", identity)`` for the CLIP image embedding (Wan
2.1 only). A changed clip, VAE, mode or CLIP encoder gives new keys; the old entries are only
orphans. The mask is not cached: it is a pure function of the shape
(:func:`~wan_data.conditioning.image.condition_mask`), built when the batch is.

TI2V-5B needs nothing here: its condition is latent frame 0 of the clip itself
(:func:`~wan_data.conditioning.image.ti2v_condition`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from wan_data.latents.keys import CACHE_FORMAT_VERSION, canonical_json

__all__ = ["ConditionSpec", "clip_identity_from_files", "derived_key"]


@dataclass(frozen=True)
class ConditionSpec:
    """Which conditions the cache holds per clip (picklable: no model).

    Attributes:
        mode: ``"i2v"`` or ``"flf2v"`` (condition latents and mask), or ``"none"``/``"ti2v"``
            (nothing cached: TI2V's condition is the clip's own latent frame 0).
        clip: the CLIP image encoder's identity (:func:`clip_identity_from_files`), or
            ``None`` without CLIP embeddings (Wan 2.2 models).
    """

    mode: str = "none"
    clip: str | None = None

    @property
    def cached(self) -> bool:
        """Whether the mode puts anything in the cache: ``i2v`` and ``flf2v`` do (the condition
        latents, and the CLIP embedding with ``clip``; the mask is built with the batch);
        ``none`` and ``ti2v`` do not."""
        return self.mode in ("i2v", "flf2v")

    @property
    def last_frame(self) -> bool:
        """Whether the condition holds the clip's last frame as well as its first (``flf2v``)."""
        return self.mode == "flf2v"

    def keys(self, key: str) -> dict[str, str]:
        """The derived entries of the clip cached under ``key``, by name."""
        out: dict[str, str] = {}
        if self.cached:
            out["cond"] = derived_key(key, "cond", self.mode)
            if self.clip is not None:
                out["clip"] = derived_key(key, "clip", f"{self.mode}:{self.clip}")
        return out


def derived_key(key: str, kind: str, identity: str) -> str:
    """The key of an entry derived from the clip cached under ``key`` (pure)."""
    payload = {"clip_key": key, "kind": kind, "of": identity, "version": CACHE_FORMAT_VERSION}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def clip_identity_from_files(path: str | os.PathLike[str], dtype: torch.dtype) -> str:
    """The CLIP encoder's identity from its files, without loading it (the train pass needs
    keys, not the model): its config (without loader fields), its weights' fingerprint, its
    processor settings, the dtype and the recipe (which output, which input conversion)."""
    from wan_data.conditioning.clip import _RECIPE, _VOLATILE_KEYS, resolve_clip_path
    from wan_data.latents.vae_identity import weights_fingerprint

    where, encoder_sub, processor_sub = resolve_clip_path(path)
    root = Path(os.path.expanduser(where))
    encoder = root / (encoder_sub or "")
    processor = root / (processor_sub or "")
    config = json.loads((encoder / "config.json").read_text(encoding="utf-8"))
    settings = {
        k: v for k, v in config.items() if k not in _VOLATILE_KEYS and not k.startswith("_")
    }
    preprocessor = json.loads((processor / "preprocessor_config.json").read_text(encoding="utf-8"))
    payload = {
        "config": settings,
        "weights": weights_fingerprint(encoder),
        "processor": preprocessor,
        "dtype": str(dtype).removeprefix("torch."),
        "recipe": _RECIPE,
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()
