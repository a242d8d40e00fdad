"""The captions group: tools that rewrite the caption an epoch chose (see docs/collect.md).

A trigger-word prefix, a suffix, per-epoch tag shuffling with ``keep_tokens``, and tag dropout,
as musubi-tuner, kohya sd-scripts and OneTrainer offer them. They change the caption only: no
sample, pixel or latent cache key depends on them (:mod:`wan_data.sources.caption_tools`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from wan_data.config.base import ConfigGroup, _is_int, _is_number
from wan_data.config.fields import option
from wan_data.errors import format_error
from wan_data.sources.caption_tools import CaptionTools

__all__ = ["CaptionConfig"]


@dataclass(frozen=True)
class CaptionConfig(ConfigGroup):
    """Caption prefix and suffix, tag shuffling and tag dropout (see docs/collect.md)."""

    title: ClassVar[str] = "captions"

    caption_prefix: str = option(
        "",
        help="text put before every caption (a trigger word), joined with ', ' unless it ends "
        "with ',' or a space",
        commands=("cache",),
    )
    caption_suffix: str = option(
        "",
        help="text put after every caption, joined with ', ' unless it starts with ',' or a space",
        commands=("cache",),
    )
    shuffle_tags: bool = option(
        False,
        help="shuffle the comma-separated tags of the caption every epoch (seeded)",
        commands=("cache",),
    )
    keep_tokens: int = option(
        0,
        help="the first N tags stay in place (never shuffled or dropped)",
        commands=("cache",),
        parse=int,
    )
    tag_dropout: float = option(
        0.0,
        help="probability that each other tag is dropped, every epoch (seeded)",
        commands=("cache",),
        parse=float,
    )

    def problems(self) -> list[str]:
        problems = []
        for name in ("caption_prefix", "caption_suffix"):
            if not isinstance(getattr(self, name), str):
                problems.append(format_error(name, getattr(self, name), "must be a string"))
        if not isinstance(self.shuffle_tags, bool):
            problems.append(format_error("shuffle_tags", self.shuffle_tags, "must be a bool"))
        if not _is_int(self.keep_tokens) or self.keep_tokens < 0:
            problems.append(format_error("keep_tokens", self.keep_tokens, "must be an int >= 0"))
        if not _is_number(self.tag_dropout) or not 0.0 <= self.tag_dropout <= 1.0:
            problems.append(
                format_error("tag_dropout", self.tag_dropout, "must be a number in [0, 1]")
            )
        return problems

    @property
    def random(self) -> bool:
        """Whether the caption may differ between epochs (tag shuffle or dropout is on)."""
        return bool(self.shuffle_tags) or (_is_number(self.tag_dropout) and self.tag_dropout > 0)

    def tools(self) -> CaptionTools:
        """The tools as the caption path takes them (``DecodeOptions.captions``)."""
        return CaptionTools(
            caption_prefix=self.caption_prefix,
            caption_suffix=self.caption_suffix,
            shuffle_tags=self.shuffle_tags,
            keep_tokens=self.keep_tokens,
            tag_dropout=float(self.tag_dropout),
        )
