"""A small synthetic dataset and a tiny Wan VAE for the demo, the benchmarks and the tests.

The dataset needs nothing but torchcodec (no ffmpeg CLI, no downloads) and the VAE nothing but
diffusers (no weights to fetch), so ``wan-data demo`` runs the whole job, cache pass included,
on a fresh machine without network. The broken files cover the failure classes the pipeline
must survive.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "TINY_VAE_VARIANTS",
    "SyntheticFile",
    "build_tiny_wan_vae",
    "make_clip_tensor",
    "make_synthetic_dataset",
    "make_tiny_wan_vae",
    "tiny_latent_stats",
    "tiny_wan_vae_config",
]

_TINY_COMMON: dict[str, Any] = {
    "base_dim": 3,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],
}
_TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "wan2.1": {**_TINY_COMMON, "z_dim": 16},
    "wan2.2": {
        **_TINY_COMMON,
        "z_dim": 48,
        "in_channels": 12,
        "out_channels": 12,
        "is_residual": True,
        "patch_size": 2,
        "scale_factor_spatial": 16,
    },
}
TINY_VAE_VARIANTS = tuple(_TINY_CONFIGS)


@dataclass(frozen=True)
class SyntheticFile:
    """One file written by :func:`make_synthetic_dataset` and what a loader should make of it."""

    path: Path
    good: bool
    reason: str | None = None


def make_clip_tensor(
    num_frames: int, width: int, height: int, *, seed: int = 0, noise: int = 8
) -> torch.Tensor:
    """uint8 (F, 3, H, W) frames: a moving gradient with a bouncing square, plus light noise.

    Motion and noise make the encoder do realistic work (a static frame compresses to nothing
    and would flatter decode benchmarks).
    """
    g = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, height).view(1, height, 1)
    xs = torch.linspace(0, 1, width).view(1, 1, width)
    frames = torch.empty((num_frames, 3, height, width), dtype=torch.uint8)
    size = max(4, min(width, height) // 4)
    for i in range(num_frames):
        phase = i / max(1, num_frames)
        r = (xs + phase) % 1.0
        gch = (ys + 2 * phase) % 1.0
        b = ((xs + ys) / 2 + 3 * phase) % 1.0
        img = torch.cat(
            [r.expand(1, height, width), gch.expand(1, height, width), b.expand(1, height, width)]
        )
        frame = (img * 255).to(torch.uint8)
        x0 = int((width - size) * (0.5 + 0.5 * torch.sin(torch.tensor(phase * 6.28)).item()))
        y0 = int((height - size) * phase)
        frame[:, y0 : y0 + size, x0 : x0 + size] = 255
        if noise:
            frame = (
                (frame.int() + torch.randint(-noise, noise + 1, frame.shape, generator=g))
                .clamp(0, 255)
                .to(torch.uint8)
            )
        frames[i] = frame
    return frames


def _encode(path: Path, frames: torch.Tensor, fps: float, codec: str | None = None) -> None:
    from torchcodec.encoders import VideoEncoder

    path.parent.mkdir(parents=True, exist_ok=True)
    # x264's macroblock-tree rate control gives different bytes (and pixels) from run to run
    # through torchcodec's encoder; without it the same seed writes the same file. Encoders
    # other than x264 ignore the option.
    VideoEncoder(frames, frame_rate=fps).to_file(
        str(path), codec=codec, extra_options={"x264-params": "mbtree=0"}
    )


def make_synthetic_dataset(
    root: str | Path,
    *,
    num_videos: int = 8,
    seconds: float = 2.5,
    broken: bool = True,
    seed: int = 0,
    sizes: tuple[tuple[int, int], ...] = ((192, 108), (108, 192), (144, 144), (224, 96)),
    fps_choices: tuple[float, ...] = (24.0, 25.0, 30.0),
) -> list[SyntheticFile]:
    """Write videos of several shapes and frame rates (with captions) plus broken files.

    Args:
        root: output folder (created).
        num_videos: good videos to write.
        seconds: length of each good video.
        broken: also write an empty file, random bytes, a truncated video and a text file
            named ``.mp4``.
        seed: makes contents and choices reproducible.
        sizes: (width, height) cycled over the videos.
        fps_choices: frame rates cycled over the videos.
    """
    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    files: list[SyntheticFile] = []
    subjects = ["a red square", "a drifting gradient", "a bouncing block", "colour bands"]
    for i in range(num_videos):
        w, h = sizes[i % len(sizes)]
        fps = fps_choices[i % len(fps_choices)]
        n = max(1, round(seconds * fps))
        path = out / "videos" / f"clip_{i:03d}.mp4"
        _encode(path, make_clip_tensor(n, w, h, seed=seed + i), fps)
        subject = subjects[i % len(subjects)]
        path.with_suffix(".txt").write_text(f"{subject} moving\n{subject}, synthetic clip {i}\n")
        files.append(SyntheticFile(path, True))
    if broken:
        bad = out / "broken"
        bad.mkdir(exist_ok=True)
        (bad / "empty.mp4").write_bytes(b"")
        files.append(SyntheticFile(bad / "empty.mp4", False, "unreadable"))
        (bad / "random_bytes.mp4").write_bytes(rng.randbytes(8192))
        files.append(SyntheticFile(bad / "random_bytes.mp4", False, "unreadable"))
        (bad / "notes.mp4").write_text("not a video\n" * 50)
        files.append(SyntheticFile(bad / "notes.mp4", False, "unreadable"))
        whole = bad / "truncated.mp4"
        _encode(whole, make_clip_tensor(48, 128, 72, seed=seed + 99), 24.0)
        data = whole.read_bytes()
        whole.write_bytes(data[: len(data) // 2])  # moov atom at the end: the index is gone
        files.append(SyntheticFile(whole, False, "unreadable"))
    return files


def tiny_wan_vae_config(variant: str = "wan2.1") -> dict[str, Any]:
    """``AutoencoderKLWan`` arguments of the tiny VAE (a fresh copy, safe to modify).

    The real architecture at ``base_dim`` 3, so the code paths (causal temporal downsampling,
    Wan2.2's patchify and residual blocks) are those of the released VAEs while a clip encodes
    in milliseconds on a CPU. ``"wan2.1"``: z_dim 16, spatial factor 8, 13,861 parameters;
    ``"wan2.2"`` (the TI2V-5B layout): z_dim 48, patch size 2, spatial factor 16, 34,146.

    Raises:
        ValueError: an unknown variant.
    """
    if variant not in _TINY_CONFIGS:
        raise ValueError(
            f"tiny VAE variant must be one of {list(TINY_VAE_VARIANTS)}, got {variant!r}"
        )
    return copy.deepcopy(_TINY_CONFIGS[variant])


def tiny_latent_stats(z_dim: int, seed: int) -> tuple[list[float], list[float]]:
    """Seeded per-channel ``latents_mean`` in [-0.5, 0.5] and ``latents_std`` in [0.5, 2].

    Distinct, non-trivial statistics make a test notice when normalisation is skipped or uses
    the wrong channel's values (zeros and ones would hide both).
    """
    gen = torch.Generator().manual_seed(seed)
    mean = (torch.rand(z_dim, generator=gen) - 0.5).tolist()
    std = (0.5 + 1.5 * torch.rand(z_dim, generator=gen)).tolist()
    return [round(v, 6) for v in mean], [round(v, 6) for v in std]


def build_tiny_wan_vae(variant: str = "wan2.1", *, seed: int = 0) -> Any:
    """An in-memory tiny ``diffusers.AutoencoderKLWan`` with seeded weights and statistics.

    The weights are drawn from torch's global generator seeded with ``seed`` (so a seed gives
    the same model everywhere), inside ``fork_rng`` so the caller's random state is untouched.
    diffusers is imported here, not at module level: importing wan_data stays light.
    """
    from diffusers import AutoencoderKLWan

    config = tiny_wan_vae_config(variant)
    mean, std = tiny_latent_stats(config["z_dim"], seed + 1000)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKLWan(**config, latents_mean=mean, latents_std=std)


def make_tiny_wan_vae(path: str | Path, *, variant: str = "wan2.1", seed: int = 0) -> Path:
    """Save :func:`build_tiny_wan_vae` with ``save_pretrained`` into ``path``; returns it.

    A folder on disk, because that is what ``WanVideoDataset(vae=...)`` and ``wan-data cache
    --vae`` take: the demo and the tests load it through the same ``from_pretrained`` path as a
    real Wan VAE. Random weights: the latents are valid tensors of the right shapes, not a
    meaningful encoding.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    build_tiny_wan_vae(variant, seed=seed).save_pretrained(folder)
    return folder
