"""Pixel augmentations: clip stages that are off unless a user adds them.

All three are :class:`~wan_data.stages.base.MapStage` objects for ``clip_stages=``::

    WanVideoDataset(
        "data/",
        clip_stages=[CropJitter(scale=(0.9, 1.0)), RandomFlip(p=0.5), ColorJitter(brightness=0.1)],
    )

They draw their randomness once per clip from
:func:`~wan_data.media.sampling.sample_rng` ``(seed, epoch, clip.key, purpose)``, never from
the global RNG: a clip gets the same augmentation in every worker, rank and run, and every
frame of a clip gets the same one (a flip or a colour shift that changed from frame to frame
would be motion the model learns). In the latent cache pass the context's epoch is the cached
variant, so each cached variant holds its own draw: they set ``varies_by_epoch = True``, which
gives every variant of a clip its own cache key (even when its window and crop cannot vary).
Their ``identity()`` covers every option and the seed, so changing one changes the cache keys.

Each stage also has ``describe(key, epoch)``: a short label of the draw a clip gets (``""``
when it is left unchanged), which the scan's contact sheet prints under an augmented
thumbnail so a reader sees what was done to it.

Put :class:`CropJitter` before :class:`RandomFlip`: the crop jitter updates ``Clip.crop`` to
the source box it shows, assuming the frame is not mirrored (a flip never changes the crop).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from wan_data.errors import ConfigError, format_error
from wan_data.failures.mechanism import StageContext
from wan_data.items import Clip, CropBox
from wan_data.media.sampling import sample_rng
from wan_data.stages.base import MapStage

__all__ = ["ColorJitter", "CropJitter", "RandomFlip", "augmentations_from_spec"]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_seed(seed: object) -> list[str]:
    if isinstance(seed, int) and not isinstance(seed, bool):
        return []
    return [format_error("seed", seed, "must be an int", "e.g. seed=0")]


class RandomFlip(MapStage[Clip, Clip]):
    """Flip every frame of a clip horizontally, with probability ``p`` (one draw per clip).

    Only the pixels change: ``Clip.crop`` stays the crop box in source pixels of the
    *unflipped* frame, so it still says which part of the source file the clip shows.

    Args:
        p: probability that a clip is flipped, in [0, 1].
        seed: seeds the per-clip draw (with the epoch and the clip's key).

    Raises:
        ConfigError: ``p`` outside [0, 1] or not a number, or ``seed`` not an int.
    """

    name = "flip"
    accepts = Clip
    varies_by_epoch = True  # one draw per clip and epoch: each cached variant is keyed apart

    def __init__(self, p: float = 0.5, *, seed: int = 0) -> None:
        problems = _check_seed(seed)
        if not _is_number(p) or not 0.0 <= p <= 1.0:
            problems.append(
                format_error("RandomFlip.p", p, "must be a number in [0, 1]", "e.g. p=0.5")
            )
        if problems:
            raise ConfigError(problems)
        self.p = float(p)
        self.seed = seed

    def flips(self, key: str, epoch: int) -> bool:
        """Whether the clip ``key`` is flipped in ``epoch``."""
        return sample_rng(self.seed, epoch, key, "flip").random() < self.p

    def describe(self, key: str, epoch: int) -> str:
        """A label of the draw for clip ``key`` in ``epoch``: ``"flip"`` or ``""``."""
        return "flip" if self.flips(key, epoch) else ""

    def process_in(self, item: Clip, context: StageContext) -> Sequence[Clip]:
        if not self.flips(item.key, context.epoch):
            return [item]
        return [dataclasses.replace(item, pixels=item.pixels.flip(-1).contiguous())]

    def __repr__(self) -> str:
        return f"RandomFlip(p={self.p}, seed={self.seed})"


class ColorJitter(MapStage[Clip, Clip]):
    """Shift brightness, contrast, saturation and hue, one draw of factors per clip.

    The factors are drawn uniformly from ``[max(0, 1 - brightness), 1 + brightness]`` (the
    same for contrast and saturation) and the hue shift from ``[-hue, hue]``, once per clip,
    and applied to all of its frames in that fixed order with torchvision's
    ``adjust_brightness``, ``adjust_contrast``, ``adjust_saturation`` and ``adjust_hue`` on
    the uint8 pixels; the output stays uint8. An option left at 0 is not applied at all, so
    ``ColorJitter()`` returns every clip unchanged.

    Args:
        brightness: how far the brightness factor may move from 1 (>= 0).
        contrast: how far the contrast factor may move from 1 (>= 0).
        saturation: how far the saturation factor may move from 1 (>= 0).
        hue: the largest hue shift, in [0, 0.5] (a fraction of the colour wheel).
        seed: seeds the per-clip draw (with the epoch and the clip's key).

    Raises:
        ConfigError: every option out of range, all at once.
    """

    name = "color_jitter"
    accepts = Clip
    varies_by_epoch = True  # one draw per clip and epoch: each cached variant is keyed apart

    def __init__(
        self,
        brightness: float = 0.0,
        contrast: float = 0.0,
        saturation: float = 0.0,
        hue: float = 0.0,
        *,
        seed: int = 0,
    ) -> None:
        problems = _check_seed(seed)
        for what, value in (
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
        ):
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                problems.append(
                    format_error(
                        f"ColorJitter.{what}",
                        value,
                        "must be a finite number >= 0",
                        f"e.g. {what}=0.2 (0 turns it off)",
                    )
                )
        if not _is_number(hue) or not 0.0 <= hue <= 0.5:
            problems.append(
                format_error(
                    "ColorJitter.hue", hue, "must be a number in [0, 0.5]", "e.g. hue=0.05"
                )
            )
        if problems:
            raise ConfigError(problems)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.saturation = float(saturation)
        self.hue = float(hue)
        self.seed = seed

    def factors(self, key: str, epoch: int) -> dict[str, float]:
        """The factors drawn for clip ``key`` in ``epoch`` (only the options that are on)."""
        rng = sample_rng(self.seed, epoch, key, "color_jitter")
        drawn: dict[str, float] = {}
        for what in ("brightness", "contrast", "saturation"):
            spread = getattr(self, what)
            if spread > 0:
                drawn[what] = rng.uniform(max(0.0, 1.0 - spread), 1.0 + spread)
        if self.hue > 0:
            drawn["hue"] = rng.uniform(-self.hue, self.hue)
        return drawn

    def describe(self, key: str, epoch: int) -> str:
        """A label of the factors drawn for clip ``key`` in ``epoch`` (``""`` when none)."""
        short = {"brightness": "b", "contrast": "c", "saturation": "s", "hue": "h"}
        drawn = self.factors(key, epoch)
        if not drawn:
            return ""
        return "color " + " ".join(
            f"{short[k]}{v:+.2f}" if k == "hue" else f"{short[k]}{v:.2f}" for k, v in drawn.items()
        )

    def process_in(self, item: Clip, context: StageContext) -> Sequence[Clip]:
        drawn = self.factors(item.key, context.epoch)
        if not drawn:
            return [item]
        from torchvision.transforms.v2 import functional as tvf  # imported when used

        adjust = {
            "brightness": tvf.adjust_brightness,
            "contrast": tvf.adjust_contrast,
            "saturation": tvf.adjust_saturation,
            "hue": tvf.adjust_hue,
        }
        pixels = item.pixels
        for what, factor in drawn.items():  # brightness, contrast, saturation, hue
            pixels = adjust[what](pixels, factor)
        return [dataclasses.replace(item, pixels=pixels.contiguous())]

    def __repr__(self) -> str:
        return (
            f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
            f"saturation={self.saturation}, hue={self.hue}, seed={self.seed})"
        )


def _check_scale(scale: object) -> tuple[list[str], tuple[float, float]]:
    """Problems with a ``(min, max)`` side scale, and the pair as floats when it has none."""
    hint = "e.g. scale=(0.9, 1.0): each side keeps 90% to 100% of the frame"
    if (
        not isinstance(scale, (tuple, list))
        or len(scale) != 2
        or not all(_is_number(v) and math.isfinite(v) for v in scale)
    ):
        rule = "must be a pair (min, max) of finite numbers"
        return [format_error("CropJitter.scale", scale, rule, hint)], (1.0, 1.0)
    low, high = float(scale[0]), float(scale[1])
    if not 0.0 < low <= high <= 1.0:
        rule = "must satisfy 0 < min <= max <= 1 (a crop can zoom in, never out)"
        return [format_error("CropJitter.scale", scale, rule, hint)], (1.0, 1.0)
    return [], (low, high)


class CropJitter(MapStage[Clip, Clip]):
    """Zoom into a random sub-rectangle of a clip, the same one for every frame.

    One draw per clip gives a side scale ``s`` uniform in ``scale`` and a position: the box is
    ``round(s * W) x round(s * H)`` bucket pixels (at least 1, at most the frame), placed
    uniformly inside the frame, so both sides shrink by the same factor and the aspect is kept
    to within a pixel. Every frame is cut to that box and resized back to the bucket size with
    torchvision's antialiased bilinear ``resize``: ``Clip.pixels`` keeps its shape
    ``(F, 3, H, W)`` and its dtype uint8, so batching and the bucket are untouched. A box equal
    to the frame (``s`` close enough to 1) returns the clip unchanged.

    The same box for every frame matters for the same reason as one flip per clip: a box that
    moved between frames would be camera motion the model learns.

    ``Clip.crop`` is updated to the source-pixel box the output shows. Decode maps bucket
    pixels linearly onto ``Clip.crop`` (resize-to-cover, then crop), so a box ``(x, y, w, h)``
    in bucket pixels is ``(crop.x + x * crop.width / W, crop.y + y * crop.height / H,
    w * crop.width / W, h * crop.height / H)`` in source pixels. That assumes the frame is
    not mirrored: put ``CropJitter`` before :class:`RandomFlip` (after a flip the reported box
    would be the mirror image, within the old crop, of the one shown).

    Args:
        scale: ``(min, max)`` of the side scale, ``0 < min <= max <= 1``; ``(1.0, 1.0)`` turns
            the stage off. Area shrinks by ``s ** 2``.
        seed: seeds the per-clip draw (with the epoch and the clip's key).

    Raises:
        ConfigError: ``scale`` not such a pair, or ``seed`` not an int, all at once.
    """

    name = "crop_jitter"
    accepts = Clip
    varies_by_epoch = True  # one draw per clip and epoch: each cached variant is keyed apart

    def __init__(self, scale: tuple[float, float] = (0.9, 1.0), *, seed: int = 0) -> None:
        problems = _check_seed(seed)
        scale_problems, pair = _check_scale(scale)
        problems += scale_problems
        if problems:
            raise ConfigError(problems)
        self.scale = pair
        self.seed = seed

    def draw(self, key: str, epoch: int) -> tuple[float, float, float]:
        """The draw for clip ``key`` in ``epoch``: ``(side scale, x fraction, y fraction)``.

        The fractions place the box within the slack the frame leaves (0 = left/top edge,
        1 = right/bottom edge); independent of the frame size, so one draw serves any bucket.
        """
        rng = sample_rng(self.seed, epoch, key, "crop_jitter")
        low, high = self.scale
        return rng.uniform(low, high), rng.random(), rng.random()

    def box(self, key: str, epoch: int, width: int, height: int) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` in bucket pixels of the box clip ``key`` shows in ``epoch``."""
        scale, fx, fy = self.draw(key, epoch)
        w = min(width, max(1, round(scale * width)))
        h = min(height, max(1, round(scale * height)))
        return round(fx * (width - w)), round(fy * (height - h)), w, h

    def describe(self, key: str, epoch: int) -> str:
        """A label of the draw for clip ``key`` in ``epoch``: ``"crop 0.93"`` (the side scale)."""
        scale = self.draw(key, epoch)[0]
        return "" if scale == 1.0 else f"crop {scale:.2f}"

    def process_in(self, item: Clip, context: StageContext) -> Sequence[Clip]:
        width, height = item.bucket.width, item.bucket.height
        x, y, w, h = self.box(item.key, context.epoch, width, height)
        if (w, h) == (width, height):
            return [item]
        from torchvision.transforms.v2 import functional as tvf  # imported when used

        cut = item.pixels[..., y : y + h, x : x + w]
        pixels = tvf.resize(cut, [height, width], antialias=True)
        sx, sy = item.crop.width / width, item.crop.height / height
        crop = CropBox(item.crop.x + x * sx, item.crop.y + y * sy, w * sx, h * sy)
        # ``replace`` re-runs Clip's checks: a wrong shape or dtype fails here, named.
        return [dataclasses.replace(item, pixels=pixels.contiguous(), crop=crop)]

    def __repr__(self) -> str:
        return f"CropJitter(scale={self.scale}, seed={self.seed})"


# Options of each augmentation in a spec string, with the defaults a bare name gets. The
# defaults are mild versions of each: enough to see on a contact sheet, not a recommendation.
_SPEC_DEFAULTS: dict[str, dict[str, float]] = {
    "crop_jitter": {"min_scale": 0.8, "max_scale": 1.0, "seed": 0},
    "flip": {"p": 0.5, "seed": 0},
    "color_jitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.02, "seed": 0},
}


def _spec_stage(name: str, values: dict[str, float]) -> MapStage[Clip, Clip]:
    seed = int(values["seed"])
    if name == "flip":
        return RandomFlip(p=values["p"], seed=seed)
    if name == "crop_jitter":
        return CropJitter((values["min_scale"], values["max_scale"]), seed=seed)
    return ColorJitter(
        values["brightness"], values["contrast"], values["saturation"], values["hue"], seed=seed
    )


def augmentations_from_spec(spec: str) -> list[MapStage[Clip, Clip]]:
    """The augmentation stages a short text names, in its order (for command lines).

    ``spec`` is a comma-separated list of ``name`` or ``name:key=value:key=value`` with names
    ``crop_jitter`` (keys ``min_scale`` 0.8, ``max_scale`` 1.0), ``flip`` (``p`` 0.5) and
    ``color_jitter`` (``brightness``, ``contrast``, ``saturation`` 0.2, ``hue`` 0.02); every
    one also takes ``seed`` (0). For example ``"crop_jitter:min_scale=0.9,flip:p=1"``. An empty
    spec names none. A command line cannot hold Python objects, hence the text form; the
    stages built are the same classes ``clip_stages=`` takes.

    Raises:
        ConfigError: an unknown name or key, a value that is not a number, a name given twice,
            or options a stage refuses, all at once.
    """
    problems: list[str] = []
    stages: list[MapStage[Clip, Clip]] = []
    seen: set[str] = set()
    names = ", ".join(_SPEC_DEFAULTS)
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, *pairs = (word.strip() for word in part.split(":"))
        if name not in _SPEC_DEFAULTS:
            problems.append(
                format_error("augmentation", name, f"is not one of {names}", "e.g. flip:p=0.5")
            )
            continue
        if name in seen:
            problems.append(format_error("augmentation", name, "is given twice", "name it once"))
            continue
        seen.add(name)
        values = dict(_SPEC_DEFAULTS[name])
        count = len(problems)
        for pair in pairs:
            key, sep, text = (s.strip() for s in pair.partition("="))
            if not sep or key not in values:
                keys = ", ".join(values)
                rule = f"must be key=value with a key of {name}: {keys}"
                problems.append(format_error(f"{name} option", pair, rule))
                continue
            try:
                values[key] = int(text) if key == "seed" else float(text)
            except ValueError:
                kind = "an int" if key == "seed" else "a number"
                problems.append(format_error(f"{name}:{key}", text, f"must be {kind}"))
        if len(problems) > count:
            continue
        try:
            stages.append(_spec_stage(name, values))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return stages
