"""The option checks shared by WanVideoDataset and wan-data scan."""

from __future__ import annotations

from typing import Any

import pytest

from wan_data import WanVideoDataset
from wan_data.errors import ConfigError
from wan_data.options import check_sample_options
from wan_data.scan import scan_dataset

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
