"""The option checks shared by WanVideoDataset and wan-data scan."""

from __future__ import annotations

from typing import Any

import pytest

from wan_data import WanVideoDataset
from wan_data.config.options import check_sample_options
from wan_data.errors import ConfigError
from wan_data.tools.scan import scan_dataset

GOOD: dict[str, Any] = {
    "fps": 16,
    "sampling": "head",
    "clips_per_video": 1,
    "crop": "center",
    "missing_caption": "empty",
    "max_aspect": 4.0,
    "max_pixels": 4096 * 4096,
    "seed": 0,
}


def test_valid_options_have_no_problems() -> None:
    assert check_sample_options(**GOOD) == []
    assert check_sample_options(**{**GOOD, "fps": None}) == []


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("fps", 0),
        ("fps", True),
        ("sampling", "sometimes"),
        ("clips_per_video", -1),
        ("crop", "left"),
        ("missing_caption", "guess"),
        ("max_aspect", 0.5),
        ("max_pixels", 0),
        ("seed", "0"),
    ],
)
def test_each_bad_option_is_named(name: str, bad: object) -> None:
    problems = check_sample_options(**{**GOOD, name: bad})
    assert len(problems) == 1 and name in problems[0] and repr(bad) in problems[0]


def test_every_problem_is_gathered() -> None:
    bad = {**GOOD, "fps": -1, "crop": "left", "seed": 1.5}
    assert len(check_sample_options(**bad)) == 3


def test_dataset_and_scan_refuse_the_same_options(tmp_path: Any) -> None:
    """Both report the shared problems, so a scan never accepts what training refuses."""
    bad = {"fps": -1, "crop": "left", "missing_caption": "guess", "max_aspect": 0.5}
    with pytest.raises(ConfigError) as from_dataset:
        WanVideoDataset(tmp_path, **bad)
    with pytest.raises(ConfigError) as from_scan:
        scan_dataset(tmp_path, progress=False, **bad)
    for name in bad:
        assert any(name in p for p in from_dataset.value.problems)
        assert any(name in p for p in from_scan.value.problems)


def test_resolve_shape_applies_the_preset_then_the_defaults() -> None:
    from wan_data.config.options import DEFAULT_FRAMES, resolve_shape

    unset = object()
    ti2v = resolve_shape(
        "wan2.2-ti2v-5b", frames=None, fps=unset, resolution=None, step=None, unset=unset
    )
    assert (ti2v.frames, ti2v.fps, ti2v.step) == ([121], 24.0, 32) and not ti2v.problems
    assert ti2v.resolution == ((1280, 704),)
    mine = resolve_shape("wan2.1", frames=17, fps=None, resolution=(64, 64), step=16, unset=unset)
    assert (mine.frames, mine.fps, mine.resolution) == ([17], None, (64, 64))  # None: native fps
    plain = resolve_shape(None, frames=None, fps=unset, resolution=None, step=None, unset=unset)
    assert plain.frames == list(DEFAULT_FRAMES) and plain.preset is None
    bad = resolve_shape("wan9", frames=None, fps=unset, resolution=None, step=None, unset=unset)
    assert len(bad.problems) == 1 and "wan9" in bad.problems[0]
