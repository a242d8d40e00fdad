"""The conditioning group: what a batch carries besides the clip's latents.

A Wan trainer needs the caption's UMT5 text embedding for every model and, for the
image-to-video models, a first-frame condition (see docs/conditioning.md and
``shared/conditioning.md``). Each is cached beside the latents, so the group only says which
encoders to use and which condition the model takes; it needs a latent cache (``vae`` and
``cache_dir``), which ``DatasetConfig`` checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from wan_data.config.base import ConfigGroup, PathLike, _is_int, _is_number
from wan_data.config.fields import option
from wan_data.config.values import DTYPES, parse_dtype, show_dtype
from wan_data.errors import format_error

__all__ = ["CONDITIONING_MODES", "ConditioningConfig"]

# none: text only (Wan 2.1/2.2 T2V); i2v: mask + VAE latent of [frame 0, zeros] (Wan 2.1 I2V,
# Wan 2.2 I2V-A14B); flf2v: [frame 0, zeros, last frame] (Wan 2.1 FLF2V); ti2v: nothing extra,
# the condition is latent frame 0 of the clip itself (Wan 2.2 TI2V-5B).
CONDITIONING_MODES = ("none", "i2v", "flf2v", "ti2v")


@dataclass(frozen=True)
class ConditioningConfig(ConfigGroup):
    """Text embeddings and image-to-video conditions (see docs/conditioning.md)."""

    title: ClassVar[str] = "conditioning"
    paths: ClassVar[tuple[str, ...]] = ("text_encoder", "image_encoder")

    text_encoder: PathLike | None = option(
        None,
        help="UMT5 text encoder: a folder with the encoder and its tokenizer, or a Wan Diffusers "
        "repo (text_encoder/ and tokenizer/); batches then carry text_embeds and text_lens",
        commands=("cache",),
    )
    text_dtype: torch.dtype = option(
        torch.bfloat16,
        help="text encoder dtype (UMT5 overflows in float16)",
        commands=("cache",),
        parse=parse_dtype,
        show=show_dtype,
        choices=tuple(DTYPES),
    )
    text_max_length: int = option(
        512, help="tokens per caption (Wan's transformers take 512)", commands=("cache",), parse=int
    )
    text_batch_size: int = option(
        8, help="captions per text encoder call", commands=("cache",), parse=int
    )
    caption_dropout: float = option(
        0.0,
        help="fraction of samples trained with the empty caption's embedding (seeded)",
        commands=("cache",),
        parse=float,
    )
    conditioning: str = option(
        "none",
        help="image-to-video condition: none, i2v, flf2v (first and last frame) or ti2v",
        commands=("cache",),
        choices=CONDITIONING_MODES,
    )
    image_encoder: PathLike | None = option(
        None,
        help="CLIP vision encoder for Wan 2.1 I2V/FLF2V (a folder, or a Wan repo with "
        "image_encoder/ and image_processor/); batches then carry clip_embeds",
        commands=("cache",),
    )

    def problems(self) -> list[str]:
        problems = []
        if self.text_dtype == torch.float16:
            problems.append(
                format_error(
                    "text_dtype",
                    "float16",
                    "overflows in UMT5 (its activations exceed float16's range)",
                    "use torch.bfloat16 (the default) or torch.float32",
                )
            )
        elif not isinstance(self.text_dtype, torch.dtype):
            problems.append(format_error("text_dtype", self.text_dtype, "must be a torch.dtype"))
        if not _is_int(self.text_max_length) or self.text_max_length < 1:
            problems.append(
                format_error(
                    "text_max_length", self.text_max_length, "must be an int >= 1", "Wan uses 512"
                )
            )
        if not _is_int(self.text_batch_size) or self.text_batch_size < 1:
            problems.append(
                format_error("text_batch_size", self.text_batch_size, "must be an int >= 1")
            )
        if not _is_number(self.caption_dropout) or not 0.0 <= self.caption_dropout < 1.0:
            problems.append(
                format_error("caption_dropout", self.caption_dropout, "must be in [0, 1)")
            )
        elif self.caption_dropout > 0 and self.text_encoder is None:
            problems.append(
                format_error(
                    "caption_dropout",
                    self.caption_dropout,
                    "needs text_encoder (it substitutes the cached embedding of the empty caption)",
                    "pass text_encoder=, or caption_dropout=0",
                )
            )
        if self.conditioning not in CONDITIONING_MODES:
            problems.append(
                format_error(
                    "conditioning", self.conditioning, f"must be one of {CONDITIONING_MODES}"
                )
            )
        elif self.image_encoder is not None and self.conditioning not in ("i2v", "flf2v"):
            problems.append(
                format_error(
                    "image_encoder",
                    str(self.image_encoder),
                    f"is used by conditioning 'i2v' or 'flf2v' only, not {self.conditioning!r}",
                    "Wan 2.1 I2V takes CLIP image embeddings; Wan 2.2 models do not",
                )
            )
        return problems

    @property
    def enabled(self) -> bool:
        """Whether anything is cached besides latents (TI2V's condition is the clip's own
        latent frame 0: nothing to cache)."""
        return self.text_encoder is not None or self.conditioning in ("i2v", "flf2v")
