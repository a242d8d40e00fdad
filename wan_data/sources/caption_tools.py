"""Caption tools: a trigger-word prefix, a suffix, per-epoch tag shuffling and tag dropout.

They rewrite the caption ``caption_for`` chose for an epoch, and nothing else: no pixel, latent
cache key or sample depends on them. Two kinds:

- *fixed* tools (``caption_prefix``, ``caption_suffix``) give the same text in every epoch, so
  :func:`apply_fixed_tools` is applied both where the epoch's caption is chosen and where the
  text cache lists the captions to encode (``text_keys``): the cache holds the prefixed texts;
- *random* tools (``shuffle_tags``, ``tag_dropout``) draw per epoch from
  ``sample_rng(seed, epoch, key, "caption_tags")`` (never the global generator), so every worker
  and every run gives a sample the same caption in the same epoch. Their outputs are too many to
  pre-encode, which is why ``DatasetConfig`` refuses them with a text encoder.

A caption's *tags* are its comma-separated parts, stripped, empty ones dropped. The first
``keep_tokens`` tags stay in place; the others are shuffled (``shuffle_tags``) and each is then
dropped with probability ``tag_dropout``. The prefix always leads and the suffix always ends the
caption; neither is shuffled, dropped or counted in ``keep_tokens``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "NO_CAPTION_TOOLS",
    "TAG_SEPARATOR",
    "CaptionTools",
    "apply_caption_tools",
    "apply_fixed_tools",
    "join_fixed",
    "split_tags",
]

TAG_SEPARATOR = ", "
"""What shuffled tags are joined with, and what joins a prefix or suffix given without one."""


@dataclass(frozen=True)
class CaptionTools:
    """The caption tools of a dataset (``CaptionConfig.tools()``); the defaults change nothing.

    Attributes:
        caption_prefix: text put before every caption (a trigger word).
        caption_suffix: text put after every caption.
        shuffle_tags: shuffle the comma-separated tags per epoch (seeded).
        keep_tokens: the first N tags stay in place (never shuffled or dropped).
        tag_dropout: probability that each other tag is dropped, per epoch (seeded).
    """

    caption_prefix: str = ""
    caption_suffix: str = ""
    shuffle_tags: bool = False
    keep_tokens: int = 0
    tag_dropout: float = 0.0

    @property
    def random(self) -> bool:
        """Whether the caption may differ between epochs (shuffle or dropout is on)."""
        return self.shuffle_tags or self.tag_dropout > 0

    @property
    def enabled(self) -> bool:
        """Whether any tool changes a caption."""
        return bool(self.caption_prefix or self.caption_suffix) or self.random


NO_CAPTION_TOOLS = CaptionTools()


def split_tags(caption: str) -> list[str]:
    """The comma-separated tags of ``caption``, stripped, empty ones dropped."""
    return [tag.strip() for tag in caption.split(",") if tag.strip()]


def join_fixed(prefix: str, body: str, suffix: str) -> str:
    """``prefix``, ``body`` and ``suffix`` joined, skipping empty parts.

    A prefix that ends with ``,`` or whitespace (``"sks "``, ``"sks,"``) and a suffix that
    starts with one is joined as given; otherwise the join is ``", "``. A prefix or suffix alone
    (empty body) is returned stripped of that separator.
    """
    text = body
    if prefix:
        if not text:
            text = prefix.rstrip(", \t\n")
        elif prefix[-1] in ", \t\n":
            text = prefix + text
        else:
            text = prefix + TAG_SEPARATOR + text
    if suffix:
        if not text:
            text = suffix.lstrip(", \t\n")
        elif suffix[0] in ", \t\n":
            text = text + suffix
        else:
            text = text + TAG_SEPARATOR + suffix
    return text


def apply_fixed_tools(caption: str, tools: CaptionTools) -> str:
    """``caption`` with the prefix and suffix: the same text in every epoch.

    The text cache encodes exactly these texts (``text_keys``), and ``caption_for`` returns
    them when no random tool is on, so the two always agree.
    """
    return join_fixed(tools.caption_prefix, caption, tools.caption_suffix)


def shuffle_and_drop(tags: list[str], tools: CaptionTools, rng: random.Random) -> list[str]:
    """The kept tags in place, then the others shuffled and thinned, drawn from ``rng``."""
    keep = max(0, tools.keep_tokens)
    kept, rest = tags[:keep], tags[keep:]
    if tools.shuffle_tags:
        rng.shuffle(rest)
    if tools.tag_dropout > 0:
        rest = [tag for tag in rest if rng.random() >= tools.tag_dropout]
    return kept + rest


def apply_caption_tools(caption: str, tools: CaptionTools, rng: Callable[[], random.Random]) -> str:
    """``caption`` after every tool; ``rng`` makes the epoch's generator, called only when a
    random tool is on (so the default tools cost nothing and draw nothing).

    With a random tool on, the caption is rebuilt from its tags joined by ``", "``; otherwise
    it is kept as written. An empty caption stays empty (apart from the prefix and suffix).
    """
    if tools.random:
        caption = TAG_SEPARATOR.join(shuffle_and_drop(split_tags(caption), tools, rng()))
    return apply_fixed_tools(caption, tools)
