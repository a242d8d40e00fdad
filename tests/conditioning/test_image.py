"""Image-to-video conditioning equals diffusers' ``WanImageToVideoPipeline`` on tiny models.

The references are the pipeline's own ``prepare_latents`` (VAE condition + mask), its
``encode_image`` (CLIP tokens) and its ``expand_timesteps`` branch (TI2V-5B), each fed the first
frame the way ``__call__`` feeds it: a PIL image, run through ``video_processor.preprocess`` for
the VAE. The models are random and tiny (conditioning.md §4) and loaded from disk through
``from_pretrained``, by our code and by the reference independently.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")

from conditioning_fixtures import (
    CLIP_HIDDEN,
    build_tiny_i2v_transformer,
    make_i2v_reference_pipeline,
    make_tiny_clip,
    make_tiny_wan_i2v_repo,
)
from vae_fixtures import make_tiny_wan22_vae, make_tiny_wan_repo

from wan_data.conditioning.clip import (
    ClipImageEncoder,
    flf2v_image_embeds,
    frames_to_pil,
    resolve_clip_path,
)
from wan_data.conditioning.image import (
    condition_mask,
    condition_video,
    encode_condition,
    ti2v_condition,
)
from wan_data.errors import ConfigError, FatalError
from wan_data.latents.encoder import VaeEncoder

F, H, W = 9, 32, 48  # F_lat 3; latent 4 x 6 (Wan 2.1, factor 8), 2 x 3 (Wan 2.2, factor 16)
ATOL = 1e-6


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("i2v")
    return {
        "repo": make_tiny_wan_i2v_repo(root / "repo"),
        "clip": make_tiny_clip(root / "clip"),
        "clip2": make_tiny_clip(root / "clip2", seed=1),
        "vae22": make_tiny_wan22_vae(root / "vae22"),
    }


@pytest.fixture(scope="module")
def pipe(models: dict[str, Path]) -> Any:
    repo = models["repo"]
    return make_i2v_reference_pipeline(
        repo / "vae", repo / "image_encoder", repo / "image_processor"
    )


@pytest.fixture(scope="module")
def vae21(models: dict[str, Path]) -> VaeEncoder:
    return VaeEncoder(models["repo"], latent_dtype=torch.float32)


@pytest.fixture(scope="module")
def clip(models: dict[str, Path]) -> ClipImageEncoder:
    return ClipImageEncoder(models["repo"], device="cpu")


def _clips(batch: int = 2, frames: int = F, height: int = H, width: int = W) -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    shape = (batch, 3, frames, height, width)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


def _reference_condition(pipe: Any, pixels: torch.Tensor, b: int, last: bool) -> torch.Tensor:
    """``prepare_latents``' condition of sample ``b``, its frames fed as ``__call__`` does."""
    first, last_image = frames_to_pil(pixels[:, :, 0])[b], frames_to_pil(pixels[:, :, -1])[b]
    _, _, frames, height, width = pixels.shape
    image = pipe.video_processor.preprocess(first, height=height, width=width)
    image = image.to("cpu", torch.float32)
    if last:
        last_image = pipe.video_processor.preprocess(last_image, height=height, width=width)
    with torch.no_grad():
        _, condition = pipe.prepare_latents(
            image,
            1,
            num_channels_latents=16,
            height=height,
            width=width,
            num_frames=frames,
            dtype=torch.float32,
            device="cpu",
            generator=torch.Generator().manual_seed(0),
            latents=None,
            last_image=last_image.to("cpu", torch.float32) if last else None,
        )
    return condition[0]


# --------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize("frames", [1, 5, 9, 81])
@pytest.mark.parametrize("last", [False, True])
def test_condition_mask_values(frames: int, last: bool) -> None:
    if last and frames == 1:
        with pytest.raises(ValueError, match="num_frames"):
            condition_mask(frames, 2, 3, last_frame=True)
        return
    mask = condition_mask(frames, 2, 3, last_frame=last)
    f_lat = (frames - 1) // 4 + 1
    assert mask.shape == (4, f_lat, 2, 3) and mask.dtype == torch.float32
    expected = torch.zeros(4, f_lat)
    expected[:, 0] = 1
    if last:
        expected[:, -1] = torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert torch.equal(mask, expected[:, :, None, None].expand(4, f_lat, 2, 3))


def test_condition_mask_rejects_bad_sizes() -> None:
    for args in ((8, 2, 3), (0, 2, 3), (9, 0, 3)):
        with pytest.raises(ValueError, match="must be"):
            condition_mask(*args)


def test_condition_video_layout() -> None:
    pixels = _clips().float() / 127.5 - 1
    video = condition_video(pixels)
    assert torch.equal(video[:, :, 0], pixels[:, :, 0]) and not video[:, :, 1:].any()
    flf = condition_video(pixels, last_frame=True)
    assert torch.equal(flf[:, :, 0], pixels[:, :, 0]) and torch.equal(
        flf[:, :, -1], pixels[:, :, -1]
    )
    assert not flf[:, :, 1:-1].any() and flf.shape == pixels.shape
    with pytest.raises(ValueError, match="floating point"):
        condition_video(_clips())


def test_ti2v_condition_is_frame_zero_view() -> None:
    latents = torch.randn(2, 48, 3, 2, 3)
    assert torch.equal(ti2v_condition(latents), latents[:, :, :1])
    assert ti2v_condition(latents[0]).shape == (48, 1, 2, 3)
    with pytest.raises(ValueError, match="latents shape"):
        ti2v_condition(torch.randn(3, 2, 3))


# --------------------------------------------------------------------------- against diffusers


@pytest.mark.parametrize("last", [False, True], ids=["i2v", "flf2v"])
def test_condition_equals_prepare_latents(pipe: Any, vae21: VaeEncoder, last: bool) -> None:
    pixels = _clips()
    latents = encode_condition(vae21, pixels, last_frame=last)
    assert latents.shape == (2, 16, 3, 4, 6) and latents.dtype == torch.float32
    mask = condition_mask(F, 4, 6, temporal_factor=vae21.info.temporal_factor, last_frame=last)
    ours = torch.cat([mask.expand(2, -1, -1, -1, -1), latents], dim=1)
    for b in range(2):
        reference = _reference_condition(pipe, pixels, b, last)
        assert torch.equal(ours[b, :4], reference[:4])
        diff = (ours[b, 4:] - reference[4:]).abs().max().item()
        assert diff <= ATOL, f"sample {b}: max abs diff {diff:.3g}"
    # Not the clip's own latent beyond frame 0: the condition needs its own VAE pass.
    own = vae21.encode(pixels)
    assert torch.allclose(own[:, :, 0], latents[:, :, 0], atol=1e-5)
    assert not torch.allclose(own[:, :, 1:], latents[:, :, 1:], atol=1e-2)


def test_condition_float_input_equals_uint8(vae21: VaeEncoder) -> None:
    pixels = _clips(batch=1)
    assert torch.equal(
        encode_condition(vae21, pixels), encode_condition(vae21, pixels.float() / 127.5 - 1)
    )


def test_ti2v_condition_equals_first_frame_latent(models: dict[str, Path]) -> None:
    vae = VaeEncoder(models["vae22"], latent_dtype=torch.float32)
    pixels = _clips(batch=1)
    cond = ti2v_condition(vae.encode(pixels))
    assert cond.shape == (1, 48, 1, 2, 3)
    alone = vae.encode(pixels[:, :, :1])
    assert (cond - alone).abs().max().item() <= ATOL
    pipe = make_i2v_reference_pipeline(models["vae22"], expand_timesteps=True)
    image = pipe.video_processor.preprocess(frames_to_pil(pixels[:, :, 0])[0], height=H, width=W)
    with torch.no_grad():
        _, reference, first_frame_mask = pipe.prepare_latents(
            image, 1, 48, H, W, F, torch.float32, "cpu", torch.Generator().manual_seed(0)
        )
    assert (cond - reference).abs().max().item() <= ATOL
    assert first_frame_mask[0, 0, :, 0, 0].tolist() == [0.0, 1.0, 1.0]


def test_clip_equals_encode_image(pipe: Any, clip: ClipImageEncoder) -> None:
    pixels = _clips()
    embeds = clip.encode(pixels[:, :, 0])
    assert embeds.shape == (2, 257, CLIP_HIDDEN) and embeds.dtype == torch.float32
    images = frames_to_pil(pixels[:, :, 0])
    for b in range(2):
        with torch.no_grad():
            reference = pipe.encode_image(images[b], device="cpu")
        assert torch.equal(embeds[b : b + 1], reference)
    # Float frames in [-1, 1] quantise back to the same PIL image.
    assert torch.equal(clip.encode(pixels[:, :, 0].float() / 127.5 - 1), embeds)
    # FLF2V: two images per sample.
    last = clip.encode(pixels[:, :, -1])
    with torch.no_grad():
        reference = pipe.encode_image([images[0], frames_to_pil(pixels[:, :, -1])[0]], "cpu")
    pair = flf2v_image_embeds(embeds, last)
    assert pair.shape == (2, 514, CLIP_HIDDEN)
    assert torch.equal(pair[:1], reference.reshape(1, 514, CLIP_HIDDEN))


def test_transformer_takes_the_condition_unchanged(
    pipe: Any, vae21: VaeEncoder, clip: ClipImageEncoder
) -> None:
    pixels = _clips()
    cond = encode_condition(vae21, pixels)
    mask = condition_mask(F, 4, 6).expand(2, -1, -1, -1, -1)
    text = pipe.encode_prompt(
        ["a red fox", "the sky"], do_classifier_free_guidance=False, max_sequence_length=512
    )[0]
    noisy = torch.randn(2, 16, 3, 4, 6, generator=torch.Generator().manual_seed(3))
    timestep = torch.tensor([500, 20])
    with torch.no_grad():
        transformer = build_tiny_i2v_transformer()
        out = transformer(
            hidden_states=torch.cat([noisy, mask, cond], dim=1),
            timestep=timestep,
            encoder_hidden_states=text,
            encoder_hidden_states_image=clip.encode(pixels[:, :, 0]),
            return_dict=False,
        )[0]
        assert out.shape == (2, 16, 3, 4, 6) and torch.isfinite(out).all()
        # FLF2V: the per-sample (514, D) embeds go in as (2B, 257, D).
        flf = build_tiny_i2v_transformer(pos_embed_seq_len=514)
        pair = flf2v_image_embeds(clip.encode(pixels[:, :, 0]), clip.encode(pixels[:, :, -1]))
        out = flf(
            hidden_states=torch.cat(
                [
                    noisy,
                    condition_mask(F, 4, 6, last_frame=True).expand(2, -1, -1, -1, -1),
                    encode_condition(vae21, pixels, last_frame=True),
                ],
                dim=1,
            ),
            timestep=timestep,
            encoder_hidden_states=text,
            encoder_hidden_states_image=pair.reshape(-1, 257, CLIP_HIDDEN),
            return_dict=False,
        )[0]
    assert out.shape == (2, 16, 3, 4, 6) and torch.isfinite(out).all()


# --------------------------------------------------------------------------- loading and identity


def test_clip_resolves_folder_and_repo(models: dict[str, Path]) -> None:
    repo = models["repo"]
    assert resolve_clip_path(repo) == (str(repo), "image_encoder", "image_processor")
    assert resolve_clip_path(models["clip"]) == (str(models["clip"]), None, None)
    assert resolve_clip_path("org/name") == ("org/name", "image_encoder", "image_processor")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_clip_path(repo / "missing")
    with pytest.raises(ConfigError, match="no image encoder"):
        resolve_clip_path(make_tiny_wan_repo(repo.parent / "wan22", wan22=True))
    (repo.parent / "noproc").mkdir()
    make_tiny_clip(repo.parent / "noproc")
    (repo.parent / "noproc" / "preprocessor_config.json").unlink()
    with pytest.raises(ConfigError, match=r"preprocessor_config\.json"):
        resolve_clip_path(repo.parent / "noproc")


def test_clip_identity(models: dict[str, Path], clip: ClipImageEncoder) -> None:
    same = ClipImageEncoder(models["clip"], device="cpu")  # same seed, other folder
    other = ClipImageEncoder(models["clip2"], device="cpu")
    assert same.info == clip.info
    assert other.info.weights_hash != clip.info.weights_hash
    assert other.info.config_hash == clip.info.config_hash
    assert (clip.info.num_tokens, clip.info.hidden_size, clip.info.dtype) == (257, 8, "float32")
    bf16 = ClipImageEncoder(models["clip"], device="cpu", dtype=torch.bfloat16)
    assert bf16.info.dtype == "bfloat16" and bf16.info.weights_hash == clip.info.weights_hash
    assert bf16.encode(_clips(batch=1)[:, :, 0]).dtype == torch.bfloat16


def test_clip_errors(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as excinfo:
        ClipImageEncoder(models["repo"] / "nowhere", device="nope", dtype=torch.int8)
    assert len(excinfo.value.problems) == 3
    encoder = ClipImageEncoder(models["clip"], device="cpu")
    for bad in (
        _clips()[:, :2, 0],
        torch.zeros(1, 3, 8, 8, dtype=torch.int32),
        torch.ones(1, 3, 8, 8) * 2,
    ):
        with pytest.raises(ValueError, match="frames"):
            encoder.encode(bad)
    with pytest.raises(ConfigError, match="could not be loaded"):
        _ = ClipImageEncoder("wan-data-tests/no-such-repo", device="cpu").info  # offline
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ConfigError, match=r"pip install wan_data\[text\]"):
        _ = encoder.info


def test_clip_refuses_workers_and_pickles_without_model(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = ClipImageEncoder(models["clip"], device="cpu")
    _ = encoder.model
    clone = pickle.loads(pickle.dumps(encoder))
    assert clone._model is None and clone.info == encoder.info

    class Worker:
        id, num_workers = 1, 4

    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: Worker())
    with pytest.raises(FatalError, match="DataLoader worker"):
        encoder.encode(_clips(batch=1)[:, :, 0])
