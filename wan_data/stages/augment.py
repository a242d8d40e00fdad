"""Pixel augmentations: clip stages that are off unless a user adds them.

Both are :class:`~wan_data.stages.base.MapStage` objects for ``clip_stages=``::

    WanVideoDataset("data/", clip_stages=[RandomFlip(p=0.5), ColorJitter(brightness=0.1)])

They draw their randomness once per clip from
:func:`~wan_data.media.sampling.sample_rng` ``(seed, epoch, clip.key, purpose)``, never from
the global RNG: a clip gets the same augmentation in every worker, rank and run, and every
frame of a clip gets the same one (a flip or a colour shift that changed from frame to frame
would be motion the model learns). In the latent cache pass the context's epoch is the cached
variant, so each cached variant holds its own draw; their ``identity()`` covers every option
and the seed, so changing one changes the cache keys.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from wan_data.errors import ConfigError, format_error
from wan_data.failures.mechanism import StageContext
from wan_data.items import Clip
from wan_data.media.sampling import sample_rng
from wan_data.stages.base import MapStage

__all__ = ["ColorJitter", "RandomFlip"]


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
