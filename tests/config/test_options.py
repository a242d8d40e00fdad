"""The option checks shared by WanVideoDataset and wan-data scan (one DatasetConfig)."""

from __future__ import annotations

from typing import Any

import pytest

from wan_data import WanVideoDataset
from wan_data.config import DatasetConfig
from wan_data.errors import ConfigError
from wan_data.tools.scan import scan_dataset


def _problems(**options: Any) -> list[str]:
    try:
        DatasetConfig.build(**options)
    except ConfigError as exc:
        return list(exc.problems)
    return []


def test_valid_options_have_no_problems() -> None:
    assert _problems(fps=16, sampling="head", crop="center", seed=0) == []
    assert _problems(fps=None) == []


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
    problems = _problems(**{name: bad})
    assert len(problems) == 1 and name in problems[0] and repr(bad) in problems[0]


def test_every_problem_is_gathered() -> None:
    assert len(_problems(fps=-1, crop="left", seed=1.5)) == 3


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
    assert sorted(from_dataset.value.problems) == sorted(from_scan.value.problems)
