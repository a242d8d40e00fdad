"""Image-to-video conditions in the cache end to end: prepare() caches the condition latents
and CLIP embeddings of every clip variant, batches carry cond_latents/cond_mask/clip_embeds
equal to encoding the same clip's first frame, and a tiny I2V transformer takes a batch as is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from conditioning_fixtures import build_tiny_i2v_transformer, make_tiny_clip, make_tiny_text_encoder
from media import make_video
from vae_fixtures import make_tiny_wan21_vae

from wan_data import WanVideoDataset
from wan_data.conditioning.clip import ClipImageEncoder
from wan_data.conditioning.image import condition_mask, encode_condition
from wan_data.latents.encoder import VaeEncoder
from wan_data.latents.store import LatentCache

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("i2v_data")
    for i, size in enumerate(((64, 64), (96, 64), (64, 64))):
        make_video(root / f"v{i}.mp4", width=size[0], height=size[1], fps=8, num_frames=14)
        (root / f"v{i}.txt").write_text(["a red fox", "the sky", "a dog runs"][i])
    models = tmp_path_factory.mktemp("i2v_models")
    return {
        "data": root,
        "vae": make_tiny_wan21_vae(models / "vae"),
        "clip": make_tiny_clip(models / "clip"),
        "text": make_tiny_text_encoder(models / "umt5"),
    }


def _options(parts: dict[str, Path], **extra: Any) -> dict[str, Any]:
    return {
        "frames": [5],
        "fps": 8,
        "resolution": (64, 64),
        "batch_size": 2,
        "seed": 2,
        "crop": "random",
        "device": "cpu",
        "latent_dtype": torch.float32,
        **extra,
    }


@pytest.mark.parametrize("mode", ["i2v", "flf2v"])
def test_batches_carry_the_conditions_of_their_own_clips(
    parts: dict[str, Path], tmp_path: Path, mode: str
) -> None:
    cached = {
        "vae": parts["vae"],
        "cache_dir": tmp_path / "cache",
        "conditioning": mode,
        "image_encoder": parts["clip"],
        "text_encoder": parts["text"],
        "text_dtype": torch.float32,
    }
    ds = WanVideoDataset(parts["data"], **_options(parts, **cached))
    ds.prepare(num_workers=0, progress=False)
    assert ds.cache_complete() and LatentCache(tmp_path / "cache").prune(ds.cache_keys()) == 0
    pixels_ds = WanVideoDataset(parts["data"], **_options(parts))
    vae = VaeEncoder(parts["vae"], device="cpu", latent_dtype=torch.float32)
    clip = ClipImageEncoder(parts["clip"], device="cpu")
    last = mode == "flf2v"
    transformer = build_tiny_i2v_transformer(pos_embed_seq_len=514 if last else None)
    for batch, pixels in zip(
        ds.loader(num_workers=0), pixels_ds.loader(num_workers=0), strict=True
    ):
        assert batch["keys"] == pixels["keys"]
        b, _, t, h, w = batch["latents"].shape
        expected = encode_condition(vae, pixels["pixels"], last_frame=last)
        torch.testing.assert_close(batch["cond_latents"], expected, atol=1e-6, rtol=0)
        mask = condition_mask(5, h, w, last_frame=last).expand(b, -1, -1, -1, -1)
        assert torch.equal(batch["cond_mask"], mask)
        first = clip.encode(pixels["pixels"][:, :, 0])
        if last:
            from wan_data.conditioning.clip import flf2v_image_embeds

            first = flf2v_image_embeds(first, clip.encode(pixels["pixels"][:, :, -1]))
        # Encoded one clip per call in the cache pass, two here: batched matmuls round apart.
        torch.testing.assert_close(batch["clip_embeds"], first, atol=1e-5, rtol=0)
        noisy = torch.randn(b, 16, t, h, w, generator=torch.Generator().manual_seed(0))
        image = batch["clip_embeds"]
        if last:  # diffusers' FLF2V transformer regroups (2B, 257, D) itself
            image = image.reshape(-1, 257, image.shape[-1])
        with torch.no_grad():
            out = transformer(
                hidden_states=torch.cat([noisy, batch["cond_mask"], batch["cond_latents"]], 1),
                timestep=torch.full((b,), 500),
                encoder_hidden_states=batch["text_embeds"],
                encoder_hidden_states_image=image,
                return_dict=False,
            )[0]
        assert out.shape == (b, 16, t, h, w) and torch.isfinite(out).all()


def test_enabling_conditions_on_a_latent_cache_encodes_them(
    parts: dict[str, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    plain = WanVideoDataset(parts["data"], **_options(parts, vae=parts["vae"], cache_dir=cache))
    plain.prepare(num_workers=0, progress=False)
    i2v = WanVideoDataset(
        parts["data"], **_options(parts, vae=parts["vae"], cache_dir=cache, conditioning="i2v")
    )
    assert not i2v.cache_complete()  # the latents are there, the conditions are not
    assert i2v.prepare(num_workers=0, progress=False)["encoded"] == len(i2v.samples)
    batch = next(iter(i2v.loader(num_workers=0)))
    assert "cond_latents" in batch and "clip_embeds" not in batch
