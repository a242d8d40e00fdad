"""Property: for any valid configuration, ``command_line`` prints flags that rebuild it exactly.

This is what makes the cache's "fill it with" hint trustworthy: a hint that dropped one option
(``--fps``, ``--resolution``...) would fill a different cache than the dataset reads.
"""

from __future__ import annotations

import argparse
import shlex

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from wan_data.config import DatasetConfig
from wan_data.config.cli import add_config_arguments, command_line, config_from_args
from wan_data.errors import ConfigError

frames = st.lists(st.sampled_from([1, 5, 17, 33, 49, 81]), min_size=1, max_size=3, unique=True)
sizes = st.lists(
    st.sampled_from([(64, 64), (128, 64), (256, 256), (832, 480)]),
    min_size=1,
    max_size=2,
    unique_by=lambda s: s[0] * s[1],
)
options = st.fixed_dictionaries(
    {},
    optional={
        "preset": st.sampled_from(["wan2.1", "wan2.2-a14b", "wan2.2-ti2v-5b"]),
        "frames": frames,
        "fps": st.one_of(st.none(), st.sampled_from([8.0, 16.0, 23.976, 30.0])),
        "resolution": sizes,
        "max_aspect": st.sampled_from([1.0, 2.5, 4.0]),
        "no_upscale": st.booleans(),
        "sampling": st.sampled_from(["head", "random", "uniform", "chunks"]),
        "clips_per_video": st.integers(0, 4),
        "crop": st.sampled_from(["center", "random"]),
        "seed": st.integers(0, 2**31),
        "missing_caption": st.sampled_from(["empty", "filename", "skip", "error"]),
        "caption_extension": st.sampled_from([".txt", ".caption", ".md"]),
        "allow_outside_root": st.booleans(),
        "max_pixels": st.integers(1, 10**8),
        "max_duration_seconds": st.one_of(st.none(), st.floats(0.5, 600)),
        "min_source_fps": st.one_of(st.none(), st.floats(1, 60)),
        "integrity_check": st.booleans(),
        "batch_size": st.integers(1, 16),
        "small_buckets": st.sampled_from(["repeat", "drop", "partial"]),
        "breaker_threshold": st.one_of(st.none(), st.floats(0.01, 1.0)),
        "breaker_min_items": st.integers(1, 200),
        "probe_threads": st.one_of(st.none(), st.integers(1, 64)),
        "variations": st.integers(1, 5),
        "encode_batch_size": st.integers(1, 8),
        "content_hash": st.booleans(),
        "retry_failed": st.booleans(),
        "device": st.sampled_from(["cpu", "cuda:1"]),
        "cache_dir": st.sampled_from(["/tmp/c", "/data/my cache"]),
        "text_encoder": st.sampled_from(["/models/umt5", "/models/Wan2.1-T2V-14B-Diffusers"]),
        "text_max_length": st.sampled_from([226, 512]),
        "caption_dropout": st.sampled_from([0.0, 0.1, 0.25]),
        "conditioning": st.sampled_from(["none", "i2v", "flf2v", "ti2v"]),
        "image_encoder": st.sampled_from(["/models/clip"]),
    },
)


@settings(max_examples=150, deadline=None)
@given(options)
def test_the_printed_command_rebuilds_any_config(chosen: dict[str, object]) -> None:
    if "cache_dir" in chosen:
        chosen = {**chosen, "vae": "/models/vae"}
    if "preset" in chosen and "resolution" in chosen:
        step = 32 if chosen["preset"] == "wan2.2-ti2v-5b" else 16
        chosen = {
            **chosen,
            "resolution": [
                (w // step * step or step, h // step * step or step)
                for w, h in chosen["resolution"]
            ],
        }  # type: ignore[union-attr]
    try:
        config = DatasetConfig.build(**chosen)  # type: ignore[arg-type]
    except ConfigError:
        assume(False)  # an invalid combination (e.g. same-area tiers after rounding)
        return
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, "cache")
    words = shlex.split(command_line(config, "cache"))[2:]
    rebuilt = config_from_args(parser.parse_args(words), "cache")
    assert rebuilt.flat() | {"preset": None} == config.flat() | {"preset": None}
