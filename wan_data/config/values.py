"""Command-line text ↔ option values, one pair per kind of value.

Each ``parse_*`` reads what a user types after a flag; each ``show_*`` writes a value back as
the words that parse to it, so that ``parse(show(v)) == v`` and a configuration can be printed
as the exact command that rebuilds it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "DTYPES",
    "parse_dtype",
    "parse_fps",
    "parse_optional_float",
    "parse_optional_int",
    "parse_size",
    "show_dtype",
    "show_fps",
    "show_optional",
    "show_sizes",
    "show_words",
]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def parse_fps(text: str) -> float | None:
    """``16``, ``23.976`` or ``native`` (keep the source's own frames: ``None``)."""
    if text.strip().lower() == "native":
        return None
    return _positive_float(text)


def show_fps(value: float | None) -> list[str]:
    """``fps`` as typed: ``native`` for ``None``, else the number (``16``, ``23.976``)."""
    return ["native" if value is None else _number(value)]


def parse_optional_float(text: str) -> float | None:
    """A positive number, or ``none`` for no limit."""
    if text.strip().lower() == "none":
        return None
    return _positive_float(text)


def parse_optional_int(text: str) -> int | None:
    """A non-negative int, or ``none``/``auto`` to leave it to the machine."""
    if text.strip().lower() in ("none", "auto"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be an int (or 'none')") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def show_optional(value: object) -> list[str]:
    """An optional number as typed: ``none`` for ``None``, else the number."""
    return ["none" if value is None else _number(value)]


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` such as ``832x480``."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError("must be WIDTHxHEIGHT, e.g. 832x480") from None
    return width, height


def show_sizes(value: Sequence[Sequence[int]]) -> list[str]:
    """``(width, height)`` pairs as ``WxH`` words (``832x480 480x832``)."""
    return [f"{int(w)}x{int(h)}" for w, h in value]


def parse_frame_batch_size(text: str) -> tuple[int, int]:
    """``FRAMES:SIZE`` such as ``81:1``."""
    try:
        frames, size = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError("must be FRAMES:SIZE, e.g. 81:1") from None
    return frames, size


def show_frame_batch_sizes(value: Sequence[Sequence[int]]) -> list[str]:
    return [f"{int(f)}:{int(b)}" for f, b in value]


def parse_dtype(text: str) -> torch.dtype:
    """``float32``, ``bfloat16`` or ``float16`` (the keys of :data:`DTYPES`); anything else is an
    argparse error naming them."""
    try:
        return DTYPES[text]
    except KeyError:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(DTYPES)}") from None


def show_dtype(value: torch.dtype) -> list[str]:
    """A dtype as typed: its :data:`DTYPES` name (``bfloat16``), else torch's name without
    ``torch.``."""
    for name, dtype in DTYPES.items():
        if dtype == value:
            return [name]
    return [str(value).removeprefix("torch.")]


def show_words(value: Sequence[Any]) -> list[str]:
    """A list option (``--frames 17 33``)."""
    return [_number(v) for v in value]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
