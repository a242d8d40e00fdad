"""The base of the configuration groups: normalise, then raise every problem at once."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import ClassVar

from wan_data.errors import ConfigError, format_error

__all__ = ["ConfigGroup", "PathLike"]

PathLike = str | os.PathLike[str]


class ConfigGroup:
    """Base of the groups: normalise, then raise every problem at once."""

    title: ClassVar[str] = ""
    # Fields holding a path: kept as ``str`` whatever ``os.PathLike`` was given, so configs
    # compare equal and print the same however they were built (a CLI gives text).
    paths: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        self._normalise()
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    def _normalise(self) -> None:
        """Turn accepted spellings into the canonical value (a pair into a list of pairs...)."""
        for name in self.paths:
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                self._set(name, os.fspath(value))

    def problems(self) -> list[str]:
        """Every problem of this group's values (empty when valid)."""
        return []

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _optional_positive(name: str, value: object, hint: str = "") -> list[str]:
    if value is None or (_is_number(value) and value > 0):  # type: ignore[operator]
        return []
    return [format_error(name, value, "must be a positive number or None", hint)]


def _is_pair(value: object) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(_is_int(v) for v in value)
    )
