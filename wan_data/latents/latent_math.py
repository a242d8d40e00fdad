"""Latent arithmetic that needs only a VAE's :class:`~wan_data.latents.vae_identity.VaeInfo`.

The diffusion model is trained on normalised latents, ``(mode - latents_mean) / latents_std``
per channel, and the VAE does not normalise, so the cache stores :func:`normalise`'s output and
previews undo it with :func:`denormalise`. :func:`latent_shape` is the clip -> latent shape rule
(``F = 4k+1`` frames, sides multiples of the spatial factor) that cache planning and the
encoder's input checks share. Pure functions, apart from the model, so they are usable (and
tested) without loading a VAE.
"""

from __future__ import annotations

import torch

from wan_data.errors import format_error
from wan_data.latents.vae_identity import VaeInfo

__all__ = ["denormalise", "latent_shape", "latent_shape_for", "normalise"]


def _stats(latents: torch.Tensor, info: VaeInfo) -> tuple[torch.Tensor, torch.Tensor]:
    if latents.ndim not in (4, 5) or latents.shape[-4] != info.z_dim:
        raise ValueError(
            format_error(
                "latents shape",
                list(latents.shape),
                f"must be (B, {info.z_dim}, T, h, w) or ({info.z_dim}, T, h, w)",
            )
        )
    shape = (info.z_dim, 1, 1, 1)
    mean = torch.tensor(info.latents_mean, dtype=torch.float32, device=latents.device)
    std = torch.tensor(info.latents_std, dtype=torch.float32, device=latents.device)
    return mean.reshape(shape), std.reshape(shape)


def normalise(latents: torch.Tensor, info: VaeInfo) -> torch.Tensor:
    """``(latents - latents_mean) / latents_std`` per channel, computed in float32.

    The diffusion model is trained on normalised latents and the VAE does not normalise, so this
    is what the cache stores. Accepts ``(B, z, T, h, w)`` or ``(z, T, h, w)``; returns float32
    (normalising in bf16 would add rounding before the cast to the storage dtype).
    """
    mean, std = _stats(latents, info)
    return (latents.to(torch.float32) - mean) / std


def denormalise(latents: torch.Tensor, info: VaeInfo) -> torch.Tensor:
    """Inverse of :func:`normalise`, for decoding cached latents back to pixels (previews)."""
    mean, std = _stats(latents, info)
    return latents.to(torch.float32) * std + mean


def latent_shape(frames: int, height: int, width: int, info: VaeInfo) -> tuple[int, int, int, int]:
    """``(z, (F-1)//4+1, H/s, W/s)``: the latent shape of one clip, for cache planning.

    Raises:
        ValueError: ``frames`` is not ``4k+1`` (the diffusers VAE silently drops extra frames:
            F=8 encodes like F=5), or ``height``/``width`` are not positive multiples of the
            spatial factor.
    """
    t = info.temporal_factor
    problems = []
    if frames < 1 or (frames - 1) % t:
        problems.append(
            format_error(
                "frame count",
                frames,
                f"must be {t}k+1 (1, {t + 1}, {2 * t + 1}, ..., 81) for the Wan VAE",
                f"the VAE silently drops extra frames; sample exactly {t}k+1 frames",
            )
        )
    s = info.spatial_factor
    for name, value in (("height", height), ("width", width)):
        if value < 1 or value % s:
            problems.append(
                format_error(
                    f"pixel {name}",
                    value,
                    f"must be a positive multiple of {s} (the VAE's spatial factor)",
                    "choose a bucket whose sides are multiples of it",
                )
            )
    if problems:
        raise ValueError("; ".join(problems))
    return latent_shape_for(
        frames, height, width, z_dim=info.z_dim, temporal_factor=t, spatial_factor=s
    )


def latent_shape_for(
    frames: int, height: int, width: int, *, z_dim: int, temporal_factor: int, spatial_factor: int
) -> tuple[int, int, int, int]:
    """``(z, (F-1)//t+1, H/s, W/s)`` from the VAE's factors alone, unchecked.

    The train pass knows the VAE only by its identity (a dict in the cache spec), not a
    :class:`VaeInfo`, and checks every entry it reads against this shape.
    """
    return (
        z_dim,
        (frames - 1) // temporal_factor + 1,
        height // spatial_factor,
        width // spatial_factor,
    )
