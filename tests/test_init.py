"""The public surface: a sorted ``__all__`` whose every name imports."""

from __future__ import annotations

import wan_data


def _isort_style(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: CONSTANTS, then CamelCase classes, then everything else
    if name.isupper():
        return 0, name
    if name[:1].isupper():
        return 1, name
    return 2, name


def test_all_is_sorted_and_importable() -> None:
    names = list(wan_data.__all__)
    assert names == sorted(names, key=_isort_style)
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(wan_data, name) is not None, name


def test_version_matches_the_package_metadata() -> None:
    from pathlib import Path

    setup_cfg = (Path(wan_data.__file__).parents[1] / "setup.cfg").read_text()
    assert f"version = {wan_data.__version__}" in setup_cfg
