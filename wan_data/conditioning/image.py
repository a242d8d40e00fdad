"""Image-to-video conditioning for Wan: the VAE condition, its mask, and the TI2V first frame.

The Wan 2.1 I2V / FLF2V and Wan 2.2 I2V-A14B transformers take 36 input channels: 16 noisy
latent channels, then a 4-channel mask saying which pixel frames are given, then the 16-channel
normalised VAE latent of a clip that holds the given frame(s) and zeros elsewhere. The functions
here rebuild that condition exactly as ``diffusers.WanImageToVideoPipeline.prepare_latents``
does (diffusers 0.42.1), so a cache built from the training clip's own first frame is what the
pipeline would feed at inference:

- :func:`condition_video` — ``[frame0, zeros x (F-1)]`` (FLF2V: ``[frame0, zeros x (F-2), last]``)
  in the [-1, 1] pixel space of the clip;
- :func:`condition_mask` — ``(4, F_lat, h, w)``: ones on latent frame 0 (FLF2V also ``[0,0,0,1]``
  on the last latent frame), zeros elsewhere;
- :func:`encode_condition` — the normalised ``mode()`` latent of that video through a
  :class:`~wan_data.latents.encoder.VaeEncoder`. It needs its own VAE pass: the Wan VAE is
  causal, so only latent frame 0 equals the clip's own latent, and the encoded zero frames are
  not zero;
- :func:`ti2v_condition` — Wan 2.2 TI2V-5B has no mask channels and no extra encode: its
  condition is latent frame 0 of the clip itself.

The transformer input is ``cat([noisy, condition_mask (stacked per batch), encode_condition], 1)``.
The pure functions need no model and are tested on their own.
"""

from __future__ import annotations

from typing import Protocol

import torch

from wan_data.errors import format_error

__all__ = [
    "LatentEncoder",
    "condition_mask",
    "condition_video",
    "encode_condition",
    "pixels_to_unit_range",
    "ti2v_condition",
]

_RANGE_SLACK = 1e-3  # as VaeEncoder: float pixels may overshoot [-1, 1] by rounding only


class LatentEncoder(Protocol):
    """What :func:`encode_condition` needs: :class:`~wan_data.latents.encoder.VaeEncoder`."""

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, F, H, W)`` pixels in [-1, 1] -> normalised ``mode()`` latents."""
        ...


def _check_clip(pixels: torch.Tensor, name: str) -> None:
    if not isinstance(pixels, torch.Tensor):
        raise ValueError(format_error(name, type(pixels).__name__, "must be a torch.Tensor"))
    if pixels.ndim != 5 or pixels.shape[0] < 1 or pixels.shape[1] != 3 or pixels.shape[2] < 1:
        raise ValueError(
            format_error(
                f"{name} shape",
                list(pixels.shape),
                "must be (B, 3, F, H, W) with B >= 1 and F >= 1",
                "an image is a clip with F = 1",
            )
        )
    if pixels.dtype != torch.uint8 and not pixels.is_floating_point():
        raise ValueError(
            format_error(f"{name} dtype", str(pixels.dtype), "must be uint8 or floating point")
        )


def pixels_to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] the way diffusers' ``VideoProcessor.preprocess`` does.

    The pipeline turns a PIL image into ``x / 255`` (float32) and then ``2 * x - 1``; doing the
    same two steps here keeps the condition bit-identical to the pipeline's. Float input is
    returned unchanged (it is already in [-1, 1]).
    """
    if pixels.dtype == torch.uint8:
        return pixels.to(torch.float32).div(255.0).mul(2.0).sub(1.0)
    return pixels


def condition_video(pixels: torch.Tensor, *, last_frame: bool = False) -> torch.Tensor:
    """The pixel clip the I2V condition is encoded from: frame 0, then zeros (then the last frame).

    Exactly ``video_condition`` in ``WanImageToVideoPipeline.prepare_latents``: ``cat([frame0,
    zeros x (F-1)], dim=2)``, or with ``last_frame`` (FLF2V) ``cat([frame0, zeros x (F-2),
    last], dim=2)``. The zeros are mid-grey in [-1, 1] space, which is why the input must be float:
    uint8 has no value for 0.0 (use :func:`pixels_to_unit_range` first, or
    :func:`encode_condition`, which converts only the frames it keeps).

    Args:
        pixels: ``(B, 3, F, H, W)`` float in [-1, 1]; only its first (and last) frame is read.
        last_frame: keep the clip's last frame too (first-last-frame-to-video).

    Returns:
        ``(B, 3, F, H, W)`` in ``pixels``' dtype and device.

    Raises:
        ValueError: not a float clip, or ``last_frame`` with fewer than 2 frames.
    """
    _check_clip(pixels, "pixels")
    if not pixels.is_floating_point():
        raise ValueError(
            format_error(
                "pixels dtype",
                str(pixels.dtype),
                "must be floating point in [-1, 1] (the zero frames are 0.0, mid-grey)",
                "convert with pixels_to_unit_range(pixels), or call encode_condition",
            )
        )
    frames = pixels.shape[2]
    if last_frame and frames < 2:
        raise ValueError(
            format_error("frame count", frames, "must be >= 2 with last_frame=True (FLF2V)")
        )
    return _assemble(pixels[:, :, :1], pixels[:, :, -1:] if last_frame else None, frames)


def _assemble(first: torch.Tensor, last: torch.Tensor | None, frames: int) -> torch.Tensor:
    """``[first, zeros, (last)]`` along time, ``frames`` long, in ``first``'s dtype and device."""
    batch, channels, _, height, width = first.shape
    gap = frames - (1 if last is None else 2)
    parts = [first, first.new_zeros(batch, channels, gap, height, width)]
    return torch.cat(parts if last is None else [*parts, last], dim=2)


def condition_mask(
    num_frames: int,
    latent_height: int,
    latent_width: int,
    *,
    temporal_factor: int = 4,
    last_frame: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The 4 mask channels of one sample's I2V condition, ``(temporal_factor, F_lat, h, w)``.

    Mirrors ``prepare_latents`` step by step (so it stays right if the frame rules change): a
    per-pixel-frame mask (1 for given frames: frame 0, and with ``last_frame`` frame F-1), frame 0
    repeated ``temporal_factor`` times so every latent frame covers ``temporal_factor`` pixel
    frames, viewed as ``(F_lat, 4, h, w)`` and transposed. The result is ``[1, 1, 1, 1]`` on latent
    frame 0, zeros elsewhere, and with ``last_frame`` ``[0, 0, 0, 1]`` on the last latent frame.
    A batch is ``condition_mask(...).expand(B, -1, -1, -1, -1)`` (every sample has the same mask).

    Args:
        num_frames: pixel frames F of the clip, ``temporal_factor * k + 1``.
        latent_height: h = H / spatial factor.
        latent_width: w = W / spatial factor.
        temporal_factor: the VAE's (``VaeInfo.temporal_factor``, 4 for every Wan VAE).
        last_frame: FLF2V: the clip's last frame is given too.
        dtype: of the result (the pipeline builds it in float32).

    Raises:
        ValueError: a frame count that is not ``temporal_factor * k + 1`` (``>= 5`` with
            ``last_frame``), or non-positive sizes.
    """
    t = temporal_factor
    problems = []
    if not isinstance(t, int) or t < 1:
        raise ValueError(format_error("temporal_factor", t, "must be an int >= 1"))
    if not isinstance(num_frames, int) or num_frames < 1 or (num_frames - 1) % t:
        problems.append(
            format_error(
                "num_frames", num_frames, f"must be {t}k+1 (1, {t + 1}, {2 * t + 1}, ..., 81)"
            )
        )
    elif last_frame and num_frames < t + 1:
        problems.append(
            format_error("num_frames", num_frames, f"must be >= {t + 1} with last_frame=True")
        )
    for name, value in (("latent_height", latent_height), ("latent_width", latent_width)):
        if not isinstance(value, int) or value < 1:
            problems.append(format_error(name, value, "must be an int >= 1"))
    if problems:
        raise ValueError("; ".join(problems))
    mask = torch.ones(1, num_frames, latent_height, latent_width, dtype=dtype)
    mask[:, 1 : num_frames - 1 if last_frame else num_frames] = 0
    first = torch.repeat_interleave(mask[:, :1], repeats=t, dim=1)
    mask = torch.cat([first, mask[:, 1:]], dim=1)  # (1, F + t - 1, h, w)
    mask = mask.view(-1, t, latent_height, latent_width)  # (F_lat, t, h, w)
    return mask.transpose(0, 1).contiguous()


def encode_condition(
    encoder: LatentEncoder, pixels: torch.Tensor, *, last_frame: bool = False
) -> torch.Tensor:
    """The normalised VAE latent of :func:`condition_video`, as ``prepare_latents`` computes it.

    The clip's frame 0 (and last frame) is converted to [-1, 1] like the pipeline converts a PIL
    image (:func:`pixels_to_unit_range`), the zero frames are added, and the result goes through
    ``encoder.encode`` (``latent_dist.mode()``, normalised with the VAE config's mean/std) in a
    VAE pass of its own. Use an fp32 VAE (the :class:`~wan_data.latents.encoder.VaeEncoder`
    default): a bf16 encode shifts the condition. The returned dtype is the encoder's
    ``latent_dtype`` (pass ``latent_dtype=torch.float32`` for an exact condition).

    Memory: the condition video is a full-length float clip (81 x 480 x 832 fp32 is ~390 MB per
    sample), built only from the frames it keeps, not from a float copy of the whole clip.

    Args:
        encoder: a ``VaeEncoder`` (anything with ``encode(pixels) -> latents``).
        pixels: the training clip ``(B, 3, F, H, W)``, uint8 or float in [-1, 1].
        last_frame: FLF2V (first-last-frame-to-video) condition.

    Returns:
        ``(B, z, F_lat, h, w)`` (z = 16 for the Wan 2.1 VAE).
    """
    _check_clip(pixels, "pixels")
    frames = pixels.shape[2]
    if last_frame and frames < 2:
        raise ValueError(
            format_error("frame count", frames, "must be >= 2 with last_frame=True (FLF2V)")
        )
    first = pixels[:, :, :1]
    last = pixels[:, :, -1:] if last_frame else None
    for frame in (first, last):
        if frame is not None and frame.is_floating_point():
            low, high = (float(v) for v in torch.aminmax(frame))
            if not (low >= -1 - _RANGE_SLACK and high <= 1 + _RANGE_SLACK):
                raise ValueError(
                    format_error(
                        "float pixels range",
                        [round(low, 4), round(high, 4)],
                        "must be within [-1, 1] (and finite)",
                        "pass uint8 pixels, or convert them with x / 127.5 - 1",
                    )
                )
    video = _assemble(
        pixels_to_unit_range(first),
        None if last is None else pixels_to_unit_range(last),
        frames,
    )
    return encoder.encode(video)


def ti2v_condition(latents: torch.Tensor) -> torch.Tensor:
    """The Wan 2.2 TI2V-5B image condition: latent frame 0 of the clip's own latents.

    The TI2V-5B VAE is causal, so latent frame 0 depends on pixel frame 0 alone and equals (to
    float rounding, ~1e-7) the ``mode()`` latent of that frame encoded by itself, which is what
    ``WanImageToVideoPipeline.prepare_latents`` (``expand_timesteps=True``) returns as its
    ``condition``: no extra VAE pass, no mask channels and no CLIP for this model.

    How a trainer uses it (what diffusers' inference loop does at every step): build ``x_t`` from
    the clip latents and noise as usual, then replace latent frame 0 of ``x_t`` with this clean
    latent (``x_t = (1 - m) * cond + m * x_t`` with ``m`` 0 on frame 0, 1 elsewhere); give the
    transformer per-token timesteps, 0 on frame-0 tokens and ``t`` elsewhere (diffusers:
    ``(m[0, 0][:, ::2, ::2] * t).flatten()`` for the 1x2x2 patch, shape ``(B, seq_len)``); and
    take the loss on latent frames >= 1 only.

    Args:
        latents: normalised clip latents ``(B, z, F_lat, h, w)`` or ``(z, F_lat, h, w)``.

    Returns:
        A view ``(B, z, 1, h, w)`` (or ``(z, 1, h, w)``); ``.clone()`` it to store it alone.
    """
    if not isinstance(latents, torch.Tensor) or latents.ndim not in (4, 5):
        shape = list(latents.shape) if isinstance(latents, torch.Tensor) else type(latents)
        raise ValueError(
            format_error("latents shape", shape, "must be (B, z, F_lat, h, w) or (z, F_lat, h, w)")
        )
    return latents[..., :1, :, :]
