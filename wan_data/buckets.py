"""Pure functions for spatial bucketing: bucket sets, nearest-aspect choice, resize and crop.

A bucket set keeps the pixel area of the target resolution while varying the aspect ratio, so a
portrait clip is trained at the same cost as a landscape one instead of being cropped to a
landscape box. Sides are multiples of ``step`` (16 for Wan 2.1 / 2.2-A14B: 8x VAE times 2x2
patches; 32 for TI2V-5B).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from .errors import format_error
from .items import CropBox

__all__ = [
    "check_resolution",
    "cover_size",
    "crop_offsets",
    "make_buckets",
    "nearest_bucket",
    "source_crop_box",
]


def check_resolution(resolution: object, step: int) -> list[str]:
    """Configuration problems of a ``(width, height)`` target (empty when valid)."""
    if not isinstance(step, int) or step < 1:
        return [format_error("step", step, "must be a positive int", "16 for Wan2.1/2.2-A14B")]
    if (
        not isinstance(resolution, Sequence)
        or len(resolution) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in resolution)
    ):
        return [
            format_error(
                "resolution",
                resolution,
                "must be (width, height) ints",
                "e.g. resolution=(832, 480)",
            )
        ]
    problems = []
    for name, v in zip(("width", "height"), resolution, strict=True):
        if v < step or v % step:
            problems.append(
                format_error(
                    f"resolution {name}",
                    v,
                    f"must be a positive multiple of {step}",
                    f"try {max(step, round(v / step) * step)}",
                )
            )
    return problems


def make_buckets(
    resolution: tuple[int, int], *, step: int = 16, max_aspect: float = 4.0
) -> tuple[tuple[int, int], ...]:
    """Area-preserving ``(width, height)`` buckets with sides multiples of ``step``.

    For every width on the step grid, the height is the largest multiple of ``step`` that keeps
    the area within the target's, so no bucket costs more than the target resolution. Aspects
    outside ``[1/max_aspect, max_aspect]`` are left out. The target itself is always included.

    Returns:
        Buckets sorted by aspect ratio (width / height), without duplicates.
    """
    target_w, target_h = resolution
    area = target_w * target_h
    found = {(target_w, target_h)}
    w = step
    while w * step <= area:
        h = (area // w) // step * step
        if h >= step and 1 / max_aspect <= w / h <= max_aspect:
            found.add((w, h))
        w += step
    # Of buckets with one aspect-rounding, keep the largest area per height (a wider width at the
    # same height with area <= target is strictly better).
    best: dict[int, tuple[int, int]] = {}
    for bw, bh in found:
        if bh not in best or bw > best[bh][0]:
            best[bh] = (bw, bh)
    return tuple(sorted(best.values(), key=lambda b: (b[0] / b[1], b[0])))


def nearest_bucket(width: int, height: int, buckets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The bucket nearest the source aspect in log ratio (ties: the larger area, then wider)."""
    if width <= 0 or height <= 0:
        raise ValueError(format_error("source size", (width, height), "must be positive"))
    if not buckets:
        raise ValueError(format_error("buckets", buckets, "must not be empty"))
    target = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - target), -b[0] * b[1], -b[0]))


def cover_size(src_w: int, src_h: int, dst_w: int, dst_h: int) -> tuple[int, int]:
    """The smallest aspect-preserving size of the source that covers ``dst`` in both sides.

    Rounding may lose the aspect by under a pixel; sides are clamped to at least ``dst`` so the
    following crop always fits.
    """
    if src_w <= 0 or src_h <= 0 or dst_w <= 0 or dst_h <= 0:
        raise ValueError(
            format_error("cover_size sizes", (src_w, src_h, dst_w, dst_h), "must all be positive")
        )
    scale = max(dst_w / src_w, dst_h / src_h)
    return max(dst_w, round(src_w * scale)), max(dst_h, round(src_h * scale))


def crop_offsets(
    resized_w: int,
    resized_h: int,
    dst_w: int,
    dst_h: int,
    *,
    mode: str = "center",
    rng: random.Random | None = None,
) -> tuple[int, int]:
    """Top-left corner of the ``dst`` crop inside the resized frame (``center`` or ``random``)."""
    slack_x, slack_y = resized_w - dst_w, resized_h - dst_h
    if slack_x < 0 or slack_y < 0:
        raise ValueError(
            format_error("crop", (dst_w, dst_h), f"must fit in {(resized_w, resized_h)}")
        )
    if mode == "center":
        return slack_x // 2, slack_y // 2
    if mode == "random":
        if rng is None:
            raise ValueError(format_error("rng", None, "is required for crop mode 'random'"))
        return rng.randint(0, slack_x), rng.randint(0, slack_y)
    raise ValueError(format_error("crop mode", mode, "must be 'center' or 'random'"))


def source_crop_box(
    x: int, y: int, dst_w: int, dst_h: int, resized_w: int, resized_h: int, src_w: int, src_h: int
) -> CropBox:
    """The crop expressed in source pixel coordinates (what ``batch["crops"]`` reports)."""
    sx, sy = src_w / resized_w, src_h / resized_h
    return CropBox(x=x * sx, y=y * sy, width=dst_w * sx, height=dst_h * sy)
