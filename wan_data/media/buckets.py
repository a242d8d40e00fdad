"""Pure functions for spatial bucketing: bucket sets, nearest-aspect choice, resize and crop.

A bucket set keeps the pixel area of the target resolution while varying the aspect ratio, so a
portrait clip is trained at the same cost as a landscape one instead of being cropped to a
landscape box. Sides are multiples of ``step`` (16 for Wan 2.1 / 2.2-A14B: 8x VAE times 2x2
patches; 32 for TI2V-5B).

Several target resolutions form a :class:`BucketSet` of *tiers*: a source goes to the largest
tier its pixel area reaches, so a 1080p clip trains at 720p while a 480p clip is not blown up to
720p. :data:`PRESETS` hold the official sizes, fps and frame counts of each Wan model.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from wan_data.errors import ConfigError, format_error
from wan_data.items import CropBox
from wan_data.media.sampling import check_frame_buckets

__all__ = [
    "PRESETS",
    "BucketSet",
    "Preset",
    "bucket_table",
    "check_resolution",
    "check_resolutions",
    "cover_size",
    "crop_offsets",
    "get_preset",
    "make_bucket_set",
    "make_buckets",
    "nearest_bucket",
    "source_crop_box",
]

Size = tuple[int, int]
"""A ``(width, height)`` pair in pixels."""


def _check_step(step: object) -> list[str]:
    if not isinstance(step, int) or step < 1:
        return [format_error("step", step, "must be a positive int", "16 for Wan2.1/2.2-A14B")]
    return []


def _is_pair(value: object) -> bool:
    """Whether ``value`` is shaped like one ``(width, height)`` of ints (bools excluded)."""
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str | bytes)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )


def _check_pair(resolution: object, step: int | None, label: str) -> list[str]:
    """Problems of one ``(width, height)``; ``label`` names it (``resolution[1]`` in a list).

    With ``step=None`` (the step itself is invalid) only the shape is checked.
    """
    if not _is_pair(resolution):
        return [
            format_error(
                label,
                resolution,
                "must be (width, height) ints",
                "e.g. resolution=(832, 480)",
            )
        ]
    assert isinstance(resolution, Sequence)
    problems = []
    for name, v in zip(("width", "height"), resolution, strict=True):
        if step is not None and (v < step or v % step):
            problems.append(
                format_error(
                    f"{label} {name}",
                    v,
                    f"must be a positive multiple of {step}",
                    f"try {max(step, round(v / step) * step)}",
                )
            )
    return problems


def check_resolution(resolution: object, step: int) -> list[str]:
    """Configuration problems of a ``(width, height)`` target (empty when valid)."""
    return _check_step(step) or _check_pair(resolution, step, "resolution")


def _is_sequence(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def check_resolutions(resolution: object, step: int) -> list[str]:
    """Configuration problems of one ``(width, height)`` or a non-empty list of them.

    Every problem is gathered (the step, each entry, each side, targets that share an area), so
    a config is fixed in one edit instead of one error per run. A sequence is read as a list of
    targets when any element is itself a sequence (``[(832, 480)]``), else as one target
    (``(832, 480)``); entries of a list are named ``resolution[i]`` in the messages. Two
    different targets with the same area are refused because tiers are chosen by area: the
    second would never be used (one target already yields every aspect at its area). An exact
    repeat is harmless and is not reported; :func:`make_bucket_set` drops it.

    Returns:
        The problems, each formatted with :func:`~wan_data.errors.format_error`; empty when valid.
    """
    problems = _check_step(step)
    checked_step = None if problems else step
    if not _is_sequence(resolution) or not resolution:
        return [
            *problems,
            format_error(
                "resolution",
                resolution,
                "must be (width, height) or a non-empty list of them",
                "e.g. resolution=[(832, 480), (1280, 720)]",
            ),
        ]
    assert isinstance(resolution, Sequence)
    if not any(_is_sequence(v) for v in resolution):
        return problems + _check_pair(resolution, checked_step, "resolution")
    seen: dict[int, tuple[int, Size]] = {}
    for i, entry in enumerate(resolution):
        label = f"resolution[{i}]"
        problems += _check_pair(entry, checked_step, label)
        if not _is_pair(entry):
            continue
        size = (int(entry[0]), int(entry[1]))
        area = size[0] * size[1]
        if area in seen and seen[area][1] != size:
            j, other = seen[area]
            problems.append(
                format_error(
                    label,
                    size,
                    f"has the same area ({area} px) as resolution[{j}] {other}",
                    "tiers are chosen by area: keep one, it already yields every aspect",
                )
            )
        seen.setdefault(area, (i, size))
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
    # Past sqrt(2 * area * max_aspect) every width is at least twice too wide (w / h >= w^2 /
    # area), so stopping there drops only candidates the aspect test would refuse, with a margin
    # that float rounding of w / h cannot cross. Without it a step-8 2048x2048 target loops
    # 500k times instead of about 1k.
    w_stop = math.sqrt(2.0 * area * max_aspect) if math.isfinite(max_aspect) else math.inf
    w = step
    while w * step <= area and w <= w_stop:
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


# --- tiers: several target resolutions --------------------------------------------------------


def _aspect_distance(a: Size, b: Size) -> float:
    """``|log(a_w / a_h) - log(b_w / b_h)|``, symmetric so mirrored buckets tie exactly."""
    return abs((math.log(a[0]) - math.log(a[1])) - (math.log(b[0]) - math.log(b[1])))


@dataclass(frozen=True)
class BucketSet:
    """Area-preserving aspect buckets for one or more target resolutions ("tiers").

    Build it with :func:`make_bucket_set`, which validates the targets; constructing one directly
    only checks that the fields agree.

    Attributes:
        tiers: one :func:`make_buckets` result per target, sorted by target area ascending.
        targets: the target ``(width, height)`` of each tier, in the same order.
        step: the side multiple every bucket respects.
    """

    tiers: tuple[tuple[Size, ...], ...]
    targets: tuple[Size, ...]
    step: int
    # choose() is pure in (width, height, no_upscale) and runs for every clip the train pass
    # reads (a minimum over every bucket of a tier: 16 us of a 4.2 MB cached read's ~0.5 ms of
    # Python); datasets hold few distinct source sizes. Bounded: cleared when full.
    _chosen: dict[tuple[int, int, bool], Size | None] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if not self.tiers or len(self.tiers) != len(self.targets):
            raise ValueError(
                format_error(
                    "bucket set",
                    f"{len(self.tiers)} tiers, {len(self.targets)} targets",
                    "needs one non-empty tier per target and at least one",
                    "build it with make_bucket_set",
                )
            )
        if any(not tier for tier in self.tiers):
            raise ValueError(format_error("bucket set tiers", self.tiers, "must not be empty"))

    @property
    def all(self) -> tuple[Size, ...]:
        """Every bucket of every tier, de-duplicated, sorted by (aspect, area)."""
        unique = {b for tier in self.tiers for b in tier}
        return tuple(sorted(unique, key=lambda b: (b[0] / b[1], b[0] * b[1])))

    def tier_index(self, width: int, height: int) -> int:
        """Index of the tier a ``width x height`` source trains in (when upscaling is allowed).

        The tier with the largest target area not above the source area, so a source is never
        shrunk to a tier below the one it can fill; sources smaller than every target go to the
        smallest tier (and are upscaled).

        Raises:
            ValueError: a side is not positive.
        """
        _check_source(width, height)
        area = width * height
        index = 0
        for i, (tw, th) in enumerate(self.targets):
            if tw * th <= area:
                index = i
        return index

    def choose(self, width: int, height: int, *, no_upscale: bool = False) -> Size | None:
        """The ``(W, H)`` bucket a ``width x height`` source is resized-to-cover and cropped to.

        ``no_upscale=False`` (default): the tier is :meth:`tier_index` (the largest target area
        not above ``width * height``, else the smallest tier); within it, the bucket nearest the
        source aspect in ``|log(w/h) - log(W/H)|``, ties to the larger area then the wider,
        which is exactly :func:`nearest_bucket` on that tier. With one target this equals
        ``nearest_bucket(width, height, make_buckets(target, ...))``. Never ``None``.

        ``no_upscale=True``: among the buckets of *all* tiers with ``W <= width`` and
        ``H <= height`` (so the cover resize scales by ``max(W/width, H/height) <= 1``, never
        up), the largest area; ties to the nearest log aspect, then the wider. Area comes first
        because the point of the option is keeping every pixel the source has; the crop may
        then lose more of the frame than the nearest aspect would. ``None`` when no bucket fits;
        the caller skips the sample as ``too_small``.

        Raises:
            ValueError: a side is not positive.
        """
        memo = (width, height, no_upscale)
        chosen = self._chosen.get(memo, _UNCHOSEN)
        if chosen is _UNCHOSEN:
            chosen = self._choose(width, height, no_upscale)
            if len(self._chosen) >= _CHOSEN_LIMIT:
                self._chosen.clear()
            self._chosen[memo] = chosen
        return cast("Size | None", chosen)

    def _choose(self, width: int, height: int, no_upscale: bool) -> Size | None:
        """:meth:`choose` without the memo."""
        _check_source(width, height)
        if not no_upscale:
            return nearest_bucket(width, height, self.tiers[self.tier_index(width, height)])
        fitting = [b for b in self.all if b[0] <= width and b[1] <= height]
        if not fitting:
            return None
        source = (width, height)
        return min(fitting, key=lambda b: (-b[0] * b[1], _aspect_distance(b, source), -b[0]))


_UNCHOSEN = object()  # not yet in BucketSet._chosen (None is a valid choice: nothing fits)
_CHOSEN_LIMIT = 4096


def _check_source(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ValueError(
            format_error("source size", (width, height), "must be positive", "probe the file")
        )


def make_bucket_set(
    resolution: Size | Sequence[Size], *, step: int = 16, max_aspect: float = 4.0
) -> BucketSet:
    """Buckets for one target ``(W, H)`` or several (one tier each, sorted by area).

    Args:
        resolution: ``(832, 480)`` or ``[(832, 480), (1280, 720)]``; sides multiples of
            ``step``, distinct targets with distinct areas (exact repeats are dropped).
        step: side multiple, 16 for Wan 2.1 / 2.2-A14B, 32 for TI2V-5B.
        max_aspect: widest aspect kept either way (4.0 keeps 1:4 to 4:1).

    Raises:
        ConfigError: every problem of ``resolution``, ``step`` and ``max_aspect`` at once
            (a ``ValueError``).
    """
    problems = check_resolutions(resolution, step)
    if (
        not isinstance(max_aspect, int | float)
        or isinstance(max_aspect, bool)
        or not max_aspect >= 1.0
    ):
        problems.append(
            format_error("max_aspect", max_aspect, "must be a number >= 1", "e.g. 4.0 for 1:4..4:1")
        )
    if problems:
        raise ConfigError(problems)
    listed: Sequence[object] = resolution
    pairs = listed if any(_is_sequence(v) for v in listed) else [listed]
    entries = [(int(p[0]), int(p[1])) for p in cast("list[Sequence[int]]", pairs)]
    targets = sorted(set(entries), key=lambda r: r[0] * r[1])
    tiers = tuple(make_buckets(t, step=step, max_aspect=max_aspect) for t in targets)
    return BucketSet(tiers=tiers, targets=tuple(targets), step=step)


def bucket_table(bucket_set: BucketSet) -> list[dict[str, object]]:
    """One row per bucket per tier, for docs and reports (tiers by area, buckets by aspect).

    Rows hold ``tier`` (``"832x480"``), ``width``, ``height``, ``aspect`` (``w/h`` to 3
    places), ``area`` and ``area_vs_target`` (the bucket's share of its tier's target area, to
    3 places), which is what a reader needs to judge the cost and the crop of each bucket.
    """
    rows: list[dict[str, object]] = []
    for (tw, th), tier in zip(bucket_set.targets, bucket_set.tiers, strict=True):
        for w, h in tier:
            rows.append(
                {
                    "tier": f"{tw}x{th}",
                    "width": w,
                    "height": h,
                    "aspect": round(w / h, 3),
                    "area": w * h,
                    "area_vs_target": round(w * h / (tw * th), 3),
                }
            )
    return rows


# --- model presets --------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """Official training shapes of one Wan model, checked on construction.

    Attributes:
        name: the key in :data:`PRESETS`.
        step: side multiple (VAE stride times the 2x2 patch: 16, or 32 for TI2V-5B).
        fps: native training frame rate (16, or 24 for TI2V-5B).
        resolutions: ``(width, height)`` targets, ascending area (one tier each).
        frames: default frame buckets, 4k+1 counts (the VAE compresses time 4x causally).
        max_aspect: widest aspect of the buckets either way.
    """

    name: str
    step: int
    fps: float
    resolutions: tuple[Size, ...]
    frames: tuple[int, ...]
    max_aspect: float = 4.0
    # The image-to-video condition the model takes: "none" (text to video), "i2v", "flf2v" or
    # "ti2v" (see wan_data/config/conditioning.py); a preset sets it unless it is given.
    conditioning: str = "none"

    def __post_init__(self) -> None:
        problems = check_resolutions(list(self.resolutions), self.step)
        areas = [r[0] * r[1] for r in self.resolutions if _is_pair(r)]
        if areas != sorted(areas):
            problems.append(
                format_error(
                    f"preset {self.name} resolutions",
                    self.resolutions,
                    "must be in ascending area",
                    "tiers are listed smallest first",
                )
            )
        problems += check_frame_buckets(list(self.frames))
        if not self.fps > 0:
            problems.append(format_error(f"preset {self.name} fps", self.fps, "must be positive"))
        if problems:
            raise ConfigError(problems)

    def bucket_set(self) -> BucketSet:
        """The preset's tiers: ``make_bucket_set(resolutions, step=step, max_aspect=...)``."""
        return make_bucket_set(list(self.resolutions), step=self.step, max_aspect=self.max_aspect)


_WAN_480_720 = ((832, 480), (1280, 720))

PRESETS: dict[str, Preset] = {
    "wan2.1": Preset("wan2.1", 16, 16.0, _WAN_480_720, (81,)),
    "wan2.2-a14b": Preset("wan2.2-a14b", 16, 16.0, _WAN_480_720, (81,)),
    "wan2.2-ti2v-5b": Preset("wan2.2-ti2v-5b", 32, 24.0, ((1280, 704),), (121,), 4.0, "ti2v"),
    "wan2.1-i2v": Preset("wan2.1-i2v", 16, 16.0, _WAN_480_720, (81,), 4.0, "i2v"),
    "wan2.1-flf2v": Preset("wan2.1-flf2v", 16, 16.0, _WAN_480_720, (81,), 4.0, "flf2v"),
    "wan2.2-i2v-a14b": Preset("wan2.2-i2v-a14b", 16, 16.0, _WAN_480_720, (81,), 4.0, "i2v"),
}
"""Official shapes per model (design.md section 3): 480p/720p at 81 frames, 16 fps, step 16 for
Wan 2.1 (T2V, I2V 480P/720P, FLF2V) and 2.2-A14B (T2V, I2V); 1280x704 at 121 frames, 24 fps,
step 32 for TI2V-5B. The image-to-video presets also set ``conditioning`` (Wan 2.1 I2V and
FLF2V also take CLIP image embeddings: pass ``image_encoder``)."""


def get_preset(name: str) -> Preset:
    """The preset called ``name``.

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(
            format_error(
                "preset",
                name,
                "is not a known preset",
                f"valid names: {', '.join(sorted(PRESETS))}",
            )
        ) from None
