"""A deterministic train/validation split of the sources, by source key.

Each source is put on one side by a hash of ``(split_seed, key)``, where the key is the
source's key without its ``@<repeat>`` suffix, so every repeat of one file lands on the same
side. With ``val_fraction`` the decision is per source (``sha256 → uniform in [0, 1) <
fraction``): adding or removing other files never moves a source to the other side. With
``val_count`` the ``N`` sources with the smallest hash values are held out: a new file with a
smaller value displaces one, which then moves from val to train (never from train to val).

The stage ``split`` runs right after collect, before the probe, so the files of the other side
are never opened. Each dropped source becomes a ``Failed`` with ``reason="other_split"`` (one
of the breaker's filter reasons: holding out 90% of a dataset on purpose never stops a run),
logged at DEBUG level with one INFO summary per construction. See docs/collect.md.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Sequence

from wan_data.errors import format_error
from wan_data.failures.mechanism import StageContext, map_stage
from wan_data.items import Failed, Source
from wan_data.stages.base import Stage

__all__ = [
    "OTHER_SPLIT_REASON",
    "SPLIT_MODES",
    "STAGE",
    "SplitSources",
    "base_key",
    "split_value",
    "val_keys",
]

logger = logging.getLogger("wan_data")

SPLIT_MODES = ("all", "train", "val")
"""``all``: every source; ``train``: the sources not held out; ``val``: the held-out ones."""

STAGE = "split"

OTHER_SPLIT_REASON = "other_split"
"""The reason of a source dropped because it belongs to the other side of the split."""


def base_key(source: Source) -> str:
    """The source's key without its ``@<repeat>`` suffix (the key of repeat 0)."""
    suffix = f"@{source.repeat}"
    if source.repeat > 0 and source.key.endswith(suffix):
        return source.key[: -len(suffix)]
    return source.key


def split_value(key: str, seed: int) -> float:
    """A uniform value in ``[0, 1)`` fixed by ``(seed, key)`` alone (sha256)."""
    text = f"wan_data.split\0{seed}\0{key}".encode("utf-8", "surrogateescape")  # non-UTF-8 names
    digest = hashlib.sha256(text).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def val_keys(
    keys: Iterable[str], *, fraction: float = 0.0, count: int = 0, seed: int = 0
) -> set[str]:
    """The keys (without ``@<repeat>``) held out for validation.

    Args:
        keys: the base keys of every source (duplicates are ignored).
        fraction: hold out each key whose :func:`split_value` is below it (stable per key).
        count: hold out the ``count`` keys with the smallest values (ties broken by key);
            all of them when there are fewer.
        seed: the split seed.
    """
    unique = set(keys)
    if fraction > 0:
        return {k for k in unique if split_value(k, seed) < fraction}
    if count > 0:
        ranked = sorted(unique, key=lambda k: (split_value(k, seed), k))
        return set(ranked[:count])
    return set()


class SplitSources(Stage[Source, Source]):
    """Stage ``split``: ``Source → Source`` on the chosen side, ``Failed(reason="other_split")``
    for the others.

    Args:
        split: ``"all"`` (pass everything), ``"train"`` or ``"val"``.
        held_out: the base keys of the validation side (see :func:`val_keys`).
    """

    name = STAGE

    def __init__(self, split: str, held_out: Iterable[str]) -> None:
        if split not in SPLIT_MODES:
            raise ValueError(
                format_error("split", split, f"must be one of {', '.join(map(repr, SPLIT_MODES))}")
            )
        self.split = split
        self.held_out = frozenset(held_out)

    @classmethod
    def for_sources(
        cls,
        sources: Sequence[Source],
        *,
        split: str,
        fraction: float = 0.0,
        count: int = 0,
        seed: int = 0,
    ) -> SplitSources:
        """The stage for ``sources`` (``count`` ranks these sources, so it needs them all).

        A split that leaves the chosen side empty is logged as a warning (``val_count`` at
        least the number of sources empties the train split): it is rarely what was meant, and
        would otherwise show only as a dataset with no batches.
        """
        keys = {base_key(s) for s in sources} if split != "all" else set()
        held = val_keys(keys, fraction=fraction, count=count, seed=seed)
        empty = (split == "train" and len(held) == len(keys)) or (split == "val" and not held)
        if keys and empty:
            setting, value = ("val_fraction", fraction) if fraction > 0 else ("val_count", count)
            logger.warning(
                format_error(
                    f"{split} split of {len(keys)} source(s) by {setting}",
                    value,
                    "is empty: "
                    + ("every source is held out" if split == "train" else "no source is held out"),
                    "lower val_count or val_fraction"
                    if split == "train"
                    else "raise val_fraction or val_count",
                    stage=STAGE,
                )
            )
        return cls(split, held)

    def keeps(self, source: Source) -> bool:
        """Whether ``source`` is on the chosen side (every repeat of a file is on the same side:
        the split is by :func:`base_key`)."""
        if self.split == "all":
            return True
        return (base_key(source) in self.held_out) == (self.split == "val")

    def __call__(
        self, items: Iterable[Source | Failed], context: StageContext | None = None
    ) -> Iterator[Source | Failed]:
        ctx = context if context is not None else StageContext()
        dropped = 0

        def one(source: Source) -> list[Source | Failed]:
            nonlocal dropped
            if self.keeps(source):
                return [source]
            dropped += 1
            return [self._failure(source)]

        try:
            yield from map_stage(
                items,
                one,
                stage=STAGE,
                accepts=Source,
                context=ctx,
                quiet_reasons=(OTHER_SPLIT_REASON,),
            )
        finally:
            if dropped:
                logger.info(
                    "split=%s: %d source(s) of the other split skipped as %s",
                    self.split,
                    dropped,
                    OTHER_SPLIT_REASON,
                )

    def _failure(self, source: Source) -> Failed:
        rule = (
            "is held out for the val split"
            if self.split == "train"
            else "belongs to the train split, not the val split"
        )
        return Failed(
            key=source.key,
            path=source.path,
            stage=STAGE,
            reason=OTHER_SPLIT_REASON,
            error_type="SampleError",
            message=format_error(
                "source",
                source.key,
                rule,
                "pass split='all' to use every source",
                path=source.path,
                stage=STAGE,
            ),
        )

    def identity(self) -> str:
        return f"split:v{self.version}:{self.split}:{sorted(self.held_out)!r}"
