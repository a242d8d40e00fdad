"""DatasetConfig: flat keywords routed into groups, every problem in one error, AUTO defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from wan_data.config import (
    AUTO,
    BatchingConfig,
    DatasetConfig,
    FiltersConfig,
    LatentsConfig,
    ShapeConfig,
    option_names,
)
from wan_data.config.fields import spec_of
from wan_data.config.groups import GROUPS
from wan_data.errors import ConfigError


def test_flat_keywords_land_in_their_groups() -> None:
    config = DatasetConfig.build(
        frames=[33, 17], fps=24, batch_size=3, seed=7, vae="v", cache_dir="c"
    )
    assert config.shape.frames == (17, 33)  # sorted, a tuple
    assert config.shape.fps == 24.0 and isinstance(config.shape.fps, float)
    assert config.batching == BatchingConfig(batch_size=3)
    assert config.seed == 7
    assert config.latents.vae == "v" and config.latents.enabled


def test_a_single_resolution_becomes_one_tier() -> None:
    assert ShapeConfig(resolution=(256, 128)).resolution == ((256, 128),)
    assert ShapeConfig(resolution=[(64, 64), (128, 128)]).resolutions == ((64, 64), (128, 128))


def test_every_problem_of_every_group_is_raised_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        DatasetConfig.build(
            frams=[17], frames=[18], batch_size=0, sampling="sideways", vae="v", seed="x"
        )
    problems = info.value.problems
    text = "\n".join(problems)
    assert "frams" in text and "did you mean frames" in text
    assert "18" in text  # not 4k+1
    assert "batch_size" in text and "sampling" in text and "needs cache_dir" in text
    assert "seed" in text
    assert len(problems) >= 6


def test_a_group_checks_itself_on_construction() -> None:
    with pytest.raises(ConfigError, match="max_pixels"):
        FiltersConfig(max_pixels=0)
    with pytest.raises(ConfigError, match="vae"):
        LatentsConfig(vae="somewhere")
    with pytest.raises(ConfigError, match="fps"):
        ShapeConfig(fps=0)


def test_a_preset_fills_only_what_was_not_given() -> None:
    ti2v = DatasetConfig.build(preset="wan2.2-ti2v-5b", frames=[17])
    assert ti2v.shape.frames == (17,) and ti2v.shape.fps == 24.0 and ti2v.shape.step == 32
    assert ti2v.shape.resolution == ((1280, 704),)
    plain = DatasetConfig()
    assert plain.shape.frames == (17, 33, 49, 81) and plain.shape.fps == 16.0
    # Changing the preset later keeps the options the user chose.
    wan21 = ti2v.replace(preset="wan2.1")
    assert wan21.shape.frames == (17,) and wan21.shape.step == 16 and wan21.shape.fps == 16.0
    with pytest.raises(ConfigError, match="preset"):
        DatasetConfig.build(preset="wan9")


def test_flat_round_trips() -> None:
    config = DatasetConfig.build(
        preset="wan2.1", frames=[17, 33], batch_size=2, max_pixels=1000, alerts=None
    )
    again = DatasetConfig.build(**config.flat())
    assert again == config


def test_option_names_are_unique_and_declared_with_their_cli_form() -> None:
    names = option_names()
    assert len(names) == len(set(names))
    for group in GROUPS:
        for f in dataclasses.fields(group):  # type: ignore[arg-type]
            spec = spec_of(f)
            assert spec.help, f.name


def test_auto_defaults_depend_on_the_cache(tmp_path: Path) -> None:
    pixels = DatasetConfig()
    assert pixels.reuse.ledger is AUTO
    assert pixels.ledger_path is None and pixels.sample_index_folder is None
    assert not pixels.integrity_enabled and pixels.metadata_cache_path is None
    cached = DatasetConfig.build(vae="v", cache_dir=tmp_path)
    assert cached.integrity_enabled
    assert cached.ledger_path == tmp_path / "ledger.jsonl"
    assert cached.metadata_cache_path == tmp_path / "metadata.jsonl"
    assert cached.sample_index_folder == tmp_path / "samples"
    off = cached.replace(integrity_check=False, ledger=None, sample_index=None)
    assert off.metadata_cache_path is None and off.ledger_path is None
    assert off.sample_index_folder is None
    meta = DatasetConfig.build(metadata_cache=tmp_path / "m.jsonl")
    assert meta.sample_index_folder == Path(f"{tmp_path / 'm.jsonl'}.samples")


def test_dtypes_and_objects_are_kept_as_given() -> None:
    config = DatasetConfig.build(latent_dtype=torch.float32, breaker_threshold=None)
    assert config.latents.latent_dtype is torch.float32
    assert not config.errors.breaker_config().enabled


def test_conditioning_needs_a_cache_and_checks_its_encoders(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        DatasetConfig.build(text_encoder="umt5", text_dtype=torch.float16, caption_dropout=1.5)
    text = "\n".join(info.value.problems)
    assert "float16" in text and "overflows" in text
    assert "caption_dropout" in text
    with pytest.raises(ConfigError, match="needs a latent cache"):
        DatasetConfig.build(text_encoder="umt5")
    with pytest.raises(ConfigError, match="image_encoder"):
        DatasetConfig.build(vae="v", cache_dir=tmp_path, image_encoder="clip", conditioning="ti2v")
    with pytest.raises(ConfigError, match="needs text_encoder"):
        DatasetConfig.build(vae="v", cache_dir=tmp_path, caption_dropout=0.1)
    config = DatasetConfig.build(
        vae="v", cache_dir=tmp_path, text_encoder="umt5", conditioning="i2v", image_encoder="clip"
    )
    assert config.conditioning.enabled and config.conditioning.text_dtype == torch.bfloat16


def test_image_to_video_presets_set_their_conditioning(tmp_path: Path) -> None:
    assert DatasetConfig.build(preset="wan2.2-ti2v-5b").conditioning.conditioning == "ti2v"
    cached = {"vae": "v", "cache_dir": tmp_path}
    assert DatasetConfig.build(preset="wan2.1-i2v", **cached).conditioning.conditioning == "i2v"
    flf = DatasetConfig.build(preset="wan2.1-flf2v", **cached)
    assert flf.conditioning.conditioning == "flf2v" and flf.shape.frames == (81,)
    assert DatasetConfig.build(preset="wan2.1").conditioning.conditioning == "none"
    mine = DatasetConfig.build(preset="wan2.2-i2v-a14b", conditioning="none")
    assert mine.conditioning.conditioning == "none"  # what is given wins
    with pytest.raises(ConfigError, match="needs a latent cache"):
        DatasetConfig.build(preset="wan2.1-i2v")
