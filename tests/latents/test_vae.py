"""VAE loading and encoding against tiny Wan VAEs saved to disk (no downloads).

Every model here goes through ``AutoencoderKLWan.from_pretrained``, the path users take. The
reference latents are computed independently of wan_data: a separately loaded model, its
``latent_dist.mode()``, and the statistics read straight from config.json.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from vae_fixtures import make_tiny_wan21_vae, make_tiny_wan22_vae, make_tiny_wan_repo

from wan_data.errors import ConfigError, FatalError, SampleError
from wan_data.latents.vae import (
    VaeEncoder,
    VaeInfo,
    denormalise,
    is_out_of_memory,
    latent_shape,
    load_vae,
    normalise,
    resolve_vae_path,
    weights_fingerprint,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def vaes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vaes")
    return {
        "wan21": make_tiny_wan21_vae(root / "wan21"),
        "wan22": make_tiny_wan22_vae(root / "wan22"),
        "repo": make_tiny_wan_repo(root / "repo"),
    }


def clips(count: int, frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, frames, height, width, generator=gen) * 2 - 1


def reference(folder: Path, pixels: torch.Tensor) -> torch.Tensor:
    """normalise(vae.encode(x).latent_dist.mode()) computed without wan_data."""
    from diffusers import AutoencoderKLWan

    model = AutoencoderKLWan.from_pretrained(folder).eval()
    config = json.loads((folder / "config.json").read_text())
    mean = torch.tensor(config["latents_mean"]).view(1, -1, 1, 1, 1)
    std = torch.tensor(config["latents_std"]).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        mode = model.encode(pixels).latent_dist.mode()
    return (mode - mean) / std


def fp32_encoder(folder: Path, **kwargs: Any) -> VaeEncoder:
    return VaeEncoder(folder, latent_dtype=torch.float32, **kwargs)


class OutOfMemoryError(RuntimeError):
    """Stands in for torch.cuda.OutOfMemoryError, which only a GPU raises for real."""


def inject_oom(encoder: VaeEncoder, fails: Callable[[torch.Tensor, Any], bool]) -> list[int]:
    """Make the model's encode raise OutOfMemoryError when ``fails(x, model)``; log chunk sizes."""
    model = encoder.model
    real = model.encode
    sizes: list[int] = []

    def encode(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        sizes.append(x.shape[0])
        if fails(x, model):
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        return real(x, *args, **kwargs)

    model.encode = encode
    return sizes


# --------------------------------------------------------------------------- loading


def test_load_from_vae_folder(vaes: dict[str, Path]) -> None:
    model, info = load_vae(vaes["wan21"])
    assert type(model).__name__ == "AutoencoderKLWan"
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert (info.z_dim, info.spatial_factor, info.temporal_factor) == (16, 8, 4)
    assert info.dtype == "float32"
    config = json.loads((vaes["wan21"] / "config.json").read_text())
    assert list(info.latents_mean) == pytest.approx(config["latents_mean"])
    assert list(info.latents_std) == pytest.approx(config["latents_std"])
    _, info22 = load_vae(vaes["wan22"], dtype=torch.bfloat16)
    assert (info22.z_dim, info22.spatial_factor, info22.dtype) == (48, 16, "bfloat16")


def test_full_repo_vae_subfolder_is_detected(vaes: dict[str, Path]) -> None:
    assert resolve_vae_path(vaes["repo"]) == (str(vaes["repo"]), "vae")
    assert resolve_vae_path(vaes["wan21"]) == (str(vaes["wan21"]), None)
    model, info = load_vae(vaes["repo"])
    _, direct = load_vae(vaes["wan21"])
    # Same seed, same architecture: the repo's vae/ is the same VAE, so the same identity.
    assert info == direct
    assert model.config.z_dim == 16


def test_explicit_subfolder(vaes: dict[str, Path], tmp_path: Path) -> None:
    shutil.copytree(vaes["wan22"], tmp_path / "weights" / "my_vae")
    (tmp_path / "weights" / "vae").mkdir()  # a decoy without a config
    assert resolve_vae_path(tmp_path / "weights", subfolder="my_vae") == (
        str(tmp_path / "weights"),
        "my_vae",
    )
    _, info = load_vae(tmp_path / "weights", subfolder="my_vae")
    assert info.z_dim == 48
    with pytest.raises(ConfigError, match="my_other"):
        resolve_vae_path(tmp_path / "weights", subfolder="my_other")


def test_bad_folders_raise_config_error_naming_them(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError) as info:
        load_vae(empty)
    assert str(empty) in str(info.value)
    assert "config.json" in str(info.value) and "vae" in str(info.value)

    other = tmp_path / "sd_vae"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(ConfigError, match="AutoencoderKL'"):
        VaeEncoder(other)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable JSON"):
        resolve_vae_path(broken)

    missing = tmp_path / "does" / "not" / "exist"
    with pytest.raises(ConfigError, match="does not exist"):
        load_vae(missing)

    a_file = tmp_path / "Wan2.1_VAE.pth"
    a_file.write_bytes(b"\0")
    with pytest.raises(ConfigError, match="is a file"):
        load_vae(a_file)


def test_config_without_weights_raises_config_error(vaes: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "no_weights"
    folder.mkdir()
    shutil.copy(vaes["wan21"] / "config.json", folder / "config.json")
    with pytest.raises(ConfigError) as info:
        load_vae(folder)
    assert str(folder) in str(info.value) and "could not be loaded" in str(info.value)


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks`:UserWarning")
def test_unknown_hub_id_offline_raises_config_error() -> None:
    hub_id = "wan-data-tests/no-such-wan-vae"
    assert resolve_vae_path(hub_id) == (hub_id, "vae")
    assert resolve_vae_path(hub_id, subfolder="") == (hub_id, None)
    with pytest.raises(ConfigError) as info:
        load_vae(hub_id)
    message = str(info.value)
    assert hub_id in message and "cannot be downloaded" in message and "local folder" in message


def test_bad_encoder_options_are_gathered(vaes: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        VaeEncoder(
            tmp_path / "missing",
            device="no-such-device",
            latent_dtype=torch.int8,
            encode_batch_size=0,
        )
    assert len(info.value.problems) == 4
    VaeEncoder(vaes["wan21"])  # good options construct without loading anything


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_device_without_cuda_is_fatal(vaes: dict[str, Path]) -> None:
    with pytest.raises(FatalError, match="CUDA"):
        VaeEncoder(vaes["wan21"], device="cuda").encode(clips(1, 1, 16, 16))


# --------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("name", ["wan21", "wan22"])
def test_encode_matches_diffusers_and_latent_shape(vaes: dict[str, Path], name: str) -> None:
    encoder = fp32_encoder(vaes[name])
    z_dim, factor = (16, 8) if name == "wan21" else (48, 16)
    assert (encoder.info.z_dim, encoder.info.spatial_factor) == (z_dim, factor)
    for frames in (1, 5, 9):
        for height, width in ((64, 64), (32, 48)):
            pixels = clips(2, frames, height, width, seed=frames)
            latents = encoder.encode(pixels)
            expected_shape = latent_shape(frames, height, width, encoder.info)
            assert expected_shape == (
                z_dim,
                (frames - 1) // 4 + 1,
                height // factor,
                width // factor,
            )
            assert tuple(latents.shape) == (2, *expected_shape)
            assert latents.dtype == torch.float32 and latents.device.type == "cpu"
            torch.testing.assert_close(latents, reference(vaes[name], pixels), atol=1e-5, rtol=0)


def test_encoder_is_causal(vaes: dict[str, Path]) -> None:
    encoder = fp32_encoder(vaes["wan21"])
    pixels = clips(1, 9, 32, 32, seed=3)
    whole = encoder.encode(pixels)
    first = encoder.encode(pixels[:, :, :1])
    torch.testing.assert_close(whole[:, :, :1], first, atol=1e-4, rtol=0)
    # ...and frame 0 is all that latent frame 0 sees: later frames do not leak backwards.
    changed = pixels.clone()
    changed[:, :, 1:] = -changed[:, :, 1:]
    torch.testing.assert_close(encoder.encode(changed)[:, :, :1], first, atol=1e-4, rtol=0)


def test_normalisation_uses_the_config_statistics(vaes: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "restat"
    shutil.copytree(vaes["wan21"], folder)
    config = json.loads((folder / "config.json").read_text())
    old_mean = torch.tensor(config["latents_mean"]).view(1, -1, 1, 1, 1)
    old_std = torch.tensor(config["latents_std"]).view(1, -1, 1, 1, 1)
    new_mean = torch.linspace(-1.0, 1.0, 16)
    new_std = torch.linspace(0.25, 3.0, 16)
    config["latents_mean"], config["latents_std"] = new_mean.tolist(), new_std.tolist()
    (folder / "config.json").write_text(json.dumps(config))

    pixels = clips(1, 5, 32, 32, seed=5)
    before = fp32_encoder(vaes["wan21"])
    after = fp32_encoder(folder)
    old = before.encode(pixels)
    new = after.encode(pixels)
    raw = old * old_std + old_mean  # undo the old statistics
    expected = (raw - new_mean.view(1, -1, 1, 1, 1)) / new_std.view(1, -1, 1, 1, 1)
    torch.testing.assert_close(new, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(new, old, atol=1e-3)
    torch.testing.assert_close(denormalise(new, after.info), raw, atol=1e-5, rtol=1e-5)
    # The statistics are part of the config: the cache key must change, the weights' must not.
    assert after.info.config_hash != before.info.config_hash
    assert after.info.weights_hash == before.info.weights_hash


def test_chunking_gives_the_same_latents(vaes: dict[str, Path]) -> None:
    pixels = clips(5, 5, 32, 32, seed=7)
    whole = fp32_encoder(vaes["wan21"], encode_batch_size=5).encode(pixels)
    for size in (1, 2, 3):
        chunked = fp32_encoder(vaes["wan21"], encode_batch_size=size).encode(pixels)
        torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)
    each = fp32_encoder(vaes["wan21"], encode_batch_size=2).encode_each(pixels)
    assert all(isinstance(e, torch.Tensor) for e in each)
    torch.testing.assert_close(torch.stack(each), whole, atol=1e-5, rtol=0)  # type: ignore[arg-type]
    # Each latent owns its storage: saving one must not save its neighbours too.
    assert each[0].untyped_storage().nbytes() == each[0].numel() * 4  # type: ignore[union-attr]


def test_bf16_latents_and_uint8_input(vaes: dict[str, Path]) -> None:
    gen = torch.Generator().manual_seed(11)
    u8 = torch.randint(0, 256, (2, 3, 5, 32, 32), dtype=torch.uint8, generator=gen)
    as_float = u8.to(torch.float32) / 127.5 - 1
    fp32 = fp32_encoder(vaes["wan21"])
    torch.testing.assert_close(fp32.encode(u8), fp32.encode(as_float), atol=0, rtol=0)
    bf16 = VaeEncoder(vaes["wan21"]).encode(u8)  # latent_dtype defaults to bfloat16
    assert bf16.dtype == torch.bfloat16
    torch.testing.assert_close(bf16.float(), fp32.encode(as_float), atol=3e-2, rtol=1e-2)
    assert torch.equal(u8, u8.clone())  # input untouched


def test_input_validation_names_value_and_rule(vaes: dict[str, Path]) -> None:
    encoder = fp32_encoder(vaes["wan21"])
    with pytest.raises(ValueError, match=r"frame count \(8\).*4k\+1"):
        encoder.encode(clips(1, 8, 32, 32))
    with pytest.raises(ValueError, match=r"pixel height \(60\).*multiple of 8"):
        encoder.encode(clips(1, 5, 60, 32))
    with pytest.raises(ValueError, match=r"pixels shape \(\[1, 4, 5, 32, 32\]\)"):
        encoder.encode(torch.zeros(1, 4, 5, 32, 32))
    with pytest.raises(ValueError, match=r"pixels shape \(\[3, 5, 32, 32\]\)"):
        encoder.encode(torch.zeros(3, 5, 32, 32))
    with pytest.raises(ValueError, match=r"float pixels range \(\[0.0, 255.0\]\).*\[-1, 1\]"):
        encoder.encode(torch.full((1, 3, 1, 32, 32), 255.0).index_fill_(4, torch.tensor([0]), 0))
    with pytest.raises(ValueError, match="finite"):
        encoder.encode(torch.full((1, 3, 1, 32, 32), float("nan")))
    with pytest.raises(ValueError, match="uint8 or floating"):
        encoder.encode(torch.zeros(1, 3, 1, 32, 32, dtype=torch.int32))
    wan22 = fp32_encoder(vaes["wan22"])
    with pytest.raises(ValueError, match=r"pixel width \(40\).*multiple of 16"):
        wan22.encode(clips(1, 1, 32, 40))


def test_tiling_option(vaes: dict[str, Path]) -> None:
    encoder = fp32_encoder(vaes["wan21"], tiling=True)
    assert encoder.model.use_tiling
    pixels = clips(1, 1, 320, 288)  # larger than a 256-px tile: really tiled
    tiled = encoder.encode(pixels)
    untiled = fp32_encoder(vaes["wan21"]).encode(pixels)
    assert tiled.shape == untiled.shape == (1, 16, 1, 40, 36)
    assert torch.isfinite(tiled).all()
    assert (tiled - untiled).abs().max() > 1e-4  # tiling changes latents slightly


# --------------------------------------------------------------------------- out of memory


def test_is_out_of_memory() -> None:
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("Invalid data found"))


def test_oom_halves_the_chunk_down_to_one(
    vaes: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    pixels = clips(4, 5, 32, 32, seed=13)
    encoder = fp32_encoder(vaes["wan21"], encode_batch_size=4)
    sizes = inject_oom(encoder, lambda x, _: x.shape[0] > 1)
    with caplog.at_level(logging.WARNING, logger="wan_data"):
        latents = encoder.encode(pixels)
    torch.testing.assert_close(latents, reference(vaes["wan21"], pixels), atol=1e-5, rtol=0)
    assert sizes == [4, 2, 1, 1, 1, 1]
    messages = [r.getMessage() for r in caplog.records]
    assert any("4 clips" in m and "retrying with 2 clips" in m for m in messages)
    assert any("2 clips" in m and "retrying with 1 clips" in m for m in messages)
    assert any("OutOfMemoryError" in m for m in messages)
    assert encoder.fallbacks == {"chunk_halved": 2, "tiled": 0, "out_of_memory": 0}
    # The working chunk size is remembered for this clip shape: no second round of OOMs.
    sizes.clear()
    caplog.clear()
    encoder.encode(pixels)
    assert sizes == [1, 1, 1, 1] and not caplog.records


def test_oom_alone_falls_back_to_tiling_for_that_clip(
    vaes: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    pixels = clips(2, 5, 32, 32, seed=17)
    encoder = fp32_encoder(vaes["wan21"], encode_batch_size=2)
    sizes = inject_oom(encoder, lambda x, model: not model.use_tiling)
    with caplog.at_level(logging.WARNING, logger="wan_data"):
        latents = encoder.encode(pixels)
    # 32 px is smaller than a tile, so tiled latents equal the untiled reference here.
    torch.testing.assert_close(latents, reference(vaes["wan21"], pixels), atol=1e-5, rtol=0)
    assert sizes == [2, 1, 1, 1, 1]  # pair, clip 0 untiled, tiled, clip 1 untiled, tiled
    assert not encoder.model.use_tiling  # tiling was for the failing clip only
    tiled = [r.getMessage() for r in caplog.records if "with tiling" in r.getMessage()]
    assert len(tiled) == 2 and "clip 0 of 2" in tiled[0] and "clip 1 of 2" in tiled[1]
    assert encoder.fallbacks == {"chunk_halved": 1, "tiled": 2, "out_of_memory": 0}


def test_oom_after_all_fallbacks_skips_only_that_clip(
    vaes: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    pixels = clips(3, 5, 32, 32, seed=19)
    pixels[1, 0, 0, 0, 0] = 1.0  # marks the clip that never fits
    pixels[[0, 2], 0, 0, 0, 0] = 0.0
    encoder = fp32_encoder(vaes["wan21"], encode_batch_size=3)
    inject_oom(encoder, lambda x, _: bool((x[:, 0, 0, 0, 0] == 1.0).any()))
    with caplog.at_level(logging.WARNING, logger="wan_data"):
        results = encoder.encode_each(pixels)
    assert isinstance(results[1], SampleError)
    assert results[1].reason == "out_of_memory"
    assert "clip 1 of 3" in str(results[1]) and "stage=vae_encode" in str(results[1])
    expected = reference(vaes["wan21"], pixels)
    for index in (0, 2):
        result = results[index]
        assert isinstance(result, torch.Tensor)
        torch.testing.assert_close(result, expected[index], atol=1e-5, rtol=0)
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "retrying with 1 clips" in messages
    assert "with tiling" in messages and "skipping it" in messages
    assert encoder.fallbacks["out_of_memory"] == 1
    with pytest.raises(SampleError, match="clip 0 of 1") as info:
        encoder.encode(pixels[1:2])
    assert info.value.reason == "out_of_memory"


def test_oom_with_tiling_already_on_gives_up_directly(vaes: dict[str, Path]) -> None:
    encoder = fp32_encoder(vaes["wan21"], tiling=True)
    sizes = inject_oom(encoder, lambda x, _: True)
    (result,) = encoder.encode_each(clips(1, 1, 32, 32))
    assert isinstance(result, SampleError) and result.reason == "out_of_memory"
    assert sizes == [1] and encoder.model.use_tiling


def test_other_errors_propagate(vaes: dict[str, Path]) -> None:
    encoder = fp32_encoder(vaes["wan21"])
    model = encoder.model

    def broken(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")

    model.encode = broken
    with pytest.raises(RuntimeError, match="CUDNN_STATUS_INTERNAL_ERROR"):
        encoder.encode(clips(2, 1, 32, 32))
    assert encoder.fallbacks == {"chunk_halved": 0, "tiled": 0, "out_of_memory": 0}


# --------------------------------------------------------------------------- processes


def test_loading_in_a_dataloader_worker_is_fatal(
    vaes: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Worker:
        id = 2
        num_workers = 4

    encoder = VaeEncoder(vaes["wan21"])  # constructing is fine anywhere: nothing is loaded
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: Worker())
    with pytest.raises(FatalError, match="DataLoader worker 2 of 4"):
        _ = encoder.info
    with pytest.raises(FatalError, match="main process"):
        load_vae(vaes["wan21"])
    monkeypatch.undo()
    encoder.encode(clips(1, 1, 16, 16))  # loads in the main process
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: Worker())
    with pytest.raises(FatalError, match="DataLoader worker"):
        encoder.encode(clips(1, 1, 16, 16))  # e.g. a loaded encoder inherited through fork


def test_pickling_drops_the_model(vaes: dict[str, Path]) -> None:
    encoder = fp32_encoder(vaes["wan21"])
    first = encoder.encode(clips(1, 1, 16, 16))
    copy = pickle.loads(pickle.dumps(encoder))
    assert copy._model is None and "loaded=False" in repr(copy)
    torch.testing.assert_close(copy.encode(clips(1, 1, 16, 16)), first)


# --------------------------------------------------------------------------- identity


def test_info_hashes_track_weights_and_config(vaes: dict[str, Path], tmp_path: Path) -> None:
    _, first = load_vae(vaes["wan21"])
    _, again = load_vae(vaes["wan21"])
    assert first == again
    assert len(first.config_hash) == 64 and len(first.weights_hash) == 64
    # The same VAE saved elsewhere has the same identity: paths are not part of it.
    _, elsewhere = load_vae(make_tiny_wan21_vae(tmp_path / "same"))
    assert (elsewhere.config_hash, elsewhere.weights_hash) == (
        first.config_hash,
        first.weights_hash,
    )
    # Other weights, same architecture.
    _, reseeded = load_vae(make_tiny_wan21_vae(tmp_path / "other", seed=1))
    assert reseeded.weights_hash != first.weights_hash
    # Changed config (one architecture flag nobody reads at encode time is enough).
    changed = tmp_path / "changed"
    shutil.copytree(vaes["wan21"], changed)
    config = json.loads((changed / "config.json").read_text())
    config["dropout"] = 0.1
    (changed / "config.json").write_text(json.dumps(config))
    _, edited = load_vae(changed)
    assert edited.config_hash != first.config_hash
    assert edited.weights_hash == first.weights_hash
    _, bf16 = load_vae(vaes["wan21"], dtype=torch.bfloat16)
    assert bf16.dtype == "bfloat16" and bf16.config_hash == first.config_hash


def test_large_weights_get_the_sampled_fingerprint(vaes: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "big"
    shutil.copytree(vaes["wan21"], folder)
    full = weights_fingerprint(folder)
    sampled = weights_fingerprint(folder, full_hash_limit=0)
    assert full != sampled
    weights = folder / "diffusion_pytorch_model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert weights_fingerprint(folder) == full  # content hash ignores mtime
    assert weights_fingerprint(folder, full_hash_limit=0) != sampled  # the sampled one does not
    with pytest.raises(ConfigError, match="holds no"):
        weights_fingerprint(tmp_path)


# --------------------------------------------------------------------------- pure math


def make_info(z_dim: int = 4, spatial: int = 8) -> VaeInfo:
    return VaeInfo(
        z_dim=z_dim,
        spatial_factor=spatial,
        temporal_factor=4,
        latents_mean=tuple(0.1 * i for i in range(z_dim)),
        latents_std=tuple(1.0 + i for i in range(z_dim)),
        config_hash="c",
        weights_hash="w",
        dtype="float32",
    )


def test_latent_shape_rules() -> None:
    info = make_info(16, 8)
    assert latent_shape(81, 480, 832, info) == (16, 21, 60, 104)
    assert latent_shape(1, 8, 8, info) == (16, 1, 1, 1)
    assert latent_shape(121, 704, 1280, make_info(48, 16)) == (48, 31, 44, 80)
    for frames in (0, 2, 8, 80):
        with pytest.raises(ValueError, match=rf"frame count \({frames}\)"):
            latent_shape(frames, 64, 64, info)
    with pytest.raises(ValueError, match=r"pixel width \(100\).*multiple of 8"):
        latent_shape(5, 64, 100, info)


def test_normalise_broadcasts_and_inverts() -> None:
    info = make_info()
    latents = torch.randn(2, 4, 3, 2, 2)
    out = normalise(latents, info)
    torch.testing.assert_close(out[:, 2], (latents[:, 2] - 0.2) / 3.0)
    torch.testing.assert_close(normalise(latents[0], info), out[0])  # unbatched
    torch.testing.assert_close(denormalise(out, info), latents)
    assert normalise(latents.bfloat16(), info).dtype == torch.float32
    with pytest.raises(ValueError, match="latents shape"):
        normalise(torch.zeros(2, 5, 1, 1, 1), info)
    with pytest.raises(ValueError, match="latents_std"):
        VaeInfo(2, 8, 4, (0.0, 0.0), (1.0, 0.0), "c", "w", "float32")


# --------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["wan21", "wan22"])
def test_cuda_encode_matches_cpu(vaes: dict[str, Path], name: str) -> None:
    pixels = clips(2, 9, 64, 64, seed=23)
    cpu = fp32_encoder(vaes[name]).encode(pixels)
    encoder = fp32_encoder(vaes[name], device="cuda", encode_batch_size=2)
    cuda = encoder.encode(pixels)
    assert cuda.device.type == "cpu" and cuda.shape == cpu.shape
    # cuDNN may use TF32 for convolutions: compare with a TF32-sized tolerance.
    torch.testing.assert_close(cuda, cpu, atol=2e-2, rtol=2e-2)
    assert next(encoder.model.parameters()).device.type == "cuda"
