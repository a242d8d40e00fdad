"""wan-data flags generated from the configuration fields, and configs printed as commands."""

from __future__ import annotations

import argparse
import shlex

import pytest

from wan_data.config import DatasetConfig
from wan_data.config.cli import add_config_arguments, command_line, config_from_args
from wan_data.errors import ConfigError


def _parse(command: str, words: list[str]) -> DatasetConfig:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, command)
    return config_from_args(parser.parse_args(words), command)


def test_cache_takes_every_option_that_changes_what_is_cached() -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, "cache")
    flags = {a for action in parser._actions for a in action.option_strings}
    for flag in (
        "--no-upscale",
        "--step",
        "--clips-per-video",
        "--max-aspect",
        "--missing-caption",
        "--caption-extension",
        "--frames",
        "--fps",
        "--resolution",
        "--vae",
        "--cache-dir",
        "--variations",
        "--min-source-fps",
        "--no-integrity-check",
        "--seed",
        "--preset",
    ):
        assert flag in flags, flag


def test_scan_takes_the_construction_options_only() -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, "scan")
    flags = {a for action in parser._actions for a in action.option_strings}
    assert {"--frames", "--strict", "--threads", "--metadata-cache", "--no-upscale"} <= flags
    assert "--vae" not in flags and "--variations" not in flags


def test_absent_flags_keep_the_preset() -> None:
    config = _parse("cache", ["--preset", "wan2.2-ti2v-5b", "--frames", "17"])
    assert config.shape.frames == (17,) and config.shape.fps == 24.0 and config.shape.step == 32
    assert config.preset == "wan2.2-ti2v-5b"


def test_native_fps_and_none_limits() -> None:
    config = _parse(
        "scan", ["--fps", "native", "--max-duration-seconds", "none", "--breaker-threshold", "none"]
    )
    assert config.shape.fps is None and config.filters.max_duration_seconds is None
    assert config.errors.breaker_threshold is None


def test_bad_values_are_gathered_with_every_other_problem() -> None:
    with pytest.raises(ConfigError) as info:
        _parse("scan", ["--resolution", "wide", "--fps", "fast", "--frames", "18"])
    text = "\n".join(info.value.problems)
    assert "--resolution ('wide')" in text and "WIDTHxHEIGHT" in text
    assert "--fps ('fast') must be a number" in text
    assert "18" in text  # not 4k+1: found by the config, reported in the same error
    assert len(info.value.problems) == 3


def test_the_command_line_rebuilds_the_config() -> None:
    config = DatasetConfig.build(
        frames=[17, 33],
        fps=None,
        resolution=[(256, 256), (512, 512)],
        no_upscale=True,
        batch_size=2,
        clips_per_video=3,
        max_aspect=2.0,
        caption_extension=".caption",
        vae="/models/vae",
        cache_dir="/tmp/cache dir",
        integrity_check=False,
        seed=3,
    )
    line = command_line(config, "cache", ["data/"])
    assert line.startswith("wan-data cache data/ ")
    assert "'/tmp/cache dir'" in line
    words = shlex.split(line)[3:]
    assert _parse("cache", words) == config


def test_defaults_print_nothing() -> None:
    assert command_line(DatasetConfig(), "cache", ["d"]) == "wan-data cache d"
