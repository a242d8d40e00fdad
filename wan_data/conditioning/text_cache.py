"""The text-embedding cache: one UMT5 embedding per distinct caption, beside the latents.

Every candidate line of every caption is encoded once, in the cache pass, in the calling
process (never in a forked worker), and stored unpadded, ``(L, D)``, in the same atomic,
checksummed, quarantining store as the latents (:class:`~wan_data.latents.store.LatentCache`).
The key is content-addressed: the *cleaned* caption (exactly diffusers' Wan prompt cleaning, so
two spellings that clean alike share one entry) and the encoder's identity (config, weights,
tokenizer, dtype, length). A changed caption or encoder is a new key; the old entry is merely
orphaned (``wan-data cache --prune`` removes it).

The train pass reads the embedding of the caption the epoch chose (``caption_for``), or of the
empty caption for the samples caption dropout picks, and pads the batch exactly as diffusers
does (``(B, max_length, D)``, zero rows after each caption's length, plus ``text_lens``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from wan_data.errors import SampleError, format_error
from wan_data.failures.mechanism import StageContext
from wan_data.items import Encoded, Failed, PlanSample
from wan_data.latents.keys import CACHE_FORMAT_VERSION, canonical_json
from wan_data.latents.store import LatentCache
from wan_data.media.sampling import sample_rng
from wan_data.planning.clips import DecodeOptions, caption_for
from wan_data.sources.caption_tools import NO_CAPTION_TOOLS, CaptionTools, apply_fixed_tools
from wan_data.stages.base import MapStage

__all__ = [
    "EncodeText",
    "TextJob",
    "TextSpec",
    "chosen_caption",
    "prepare_text",
    "read_text",
    "sample_captions",
    "text_key",
    "text_keys",
]

logger = logging.getLogger("wan_data")


@dataclass(frozen=True)
class TextSpec:
    """What the train pass needs to address the text cache (picklable: no model).

    Attributes:
        encoder: the text encoder's identity (``TextEncoderInfo.identity``).
        max_length: tokens per caption; batches are padded to it.
        dropout: fraction of samples that take the empty caption's embedding.
        seed: the dataset's seed (the dropout draw is ``sample_rng(seed, epoch, key)``).
        command_hint: how to fill a missing entry.
        captions: the caption tools; their prefix and suffix are part of every encoded caption
            (the random tools cannot be pre-encoded: ``DatasetConfig`` refuses them here).
    """

    encoder: str
    max_length: int = 512
    dropout: float = 0.0
    seed: int = 0
    command_hint: str = ""
    captions: CaptionTools = NO_CAPTION_TOOLS
    # The caption tools of each concept that sets its own (a trigger word per concept), by name.
    concept_captions: tuple[tuple[str, CaptionTools], ...] = ()

    def tools_for(self, concept: str) -> CaptionTools:
        """The caption tools of a source of ``concept``: its own, else the dataset's."""
        for name, tools in self.concept_captions:
            if name == concept:
                return tools
        return self.captions


def text_key(caption: str, spec: TextSpec) -> str:
    """The cache key of ``caption``'s embedding: the cleaned text and the encoder's identity."""
    from wan_data.conditioning.text import clean_caption

    payload = {
        "kind": "text",
        "caption": clean_caption(caption),
        "encoder": spec.encoder,
        "max_length": spec.max_length,
        "version": CACHE_FORMAT_VERSION,
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def sample_captions(sample: PlanSample, tools: CaptionTools = NO_CAPTION_TOOLS) -> tuple[str, ...]:
    """Every caption a sample may train with: each candidate line (one is chosen per epoch),
    or the empty caption for a source without one, with the caption prefix and suffix of
    ``tools`` (``apply_fixed_tools``, exactly as ``caption_for`` applies them)."""
    captions = tuple(sample.probed.source.captions) or ("",)
    if not tools.enabled:
        return captions
    return tuple(apply_fixed_tools(caption, tools) for caption in captions)


def text_keys(samples: Iterable[PlanSample], spec: TextSpec) -> dict[str, str]:
    """Key → one raw caption, for every caption of ``samples`` and the empty caption (the
    caption dropout's substitute and the negative prompt), in a fixed order."""
    keys: dict[str, str] = {text_key("", spec): ""}
    seen: set[str] = set()
    for sample in samples:
        for caption in sample_captions(sample, spec.tools_for(sample.probed.source.concept)):
            if caption in seen:
                continue
            seen.add(caption)
            keys.setdefault(text_key(caption, spec), caption)
    return keys


def chosen_caption(sample: PlanSample, options: DecodeOptions, epoch: int, spec: TextSpec) -> str:
    """The caption ``sample`` trains with in ``epoch``: the epoch's seeded choice among its
    candidates, or ``""`` when caption dropout draws it (seeded by seed, epoch and key, so the
    same in every worker and run)."""
    if spec.dropout > 0:
        draw = sample_rng(spec.seed, epoch, sample.key, "caption_dropout").random()
        if draw < spec.dropout:
            return ""
    return caption_for(sample.probed, options, epoch)


def read_text(cache: LatentCache, caption: str, spec: TextSpec, path: str) -> torch.Tensor:
    """The cached ``(L, D)`` embedding of ``caption`` (verified).

    Raises:
        CacheIncompleteError: never encoded (the cache pass has not covered this caption).
        SampleError: ``cache_corrupt`` when the entry failed verification (quarantined; the
            sample is replaced and the next cache pass encodes the caption again).
    """
    from wan_data.latents.reading import CacheIncompleteError

    key = text_key(caption, spec)
    entry, status = cache.lookup(key)
    shown = caption if len(caption) <= 60 else caption[:57] + "..."
    if status == "missing":
        raise CacheIncompleteError(
            format_error(
                "text embedding of caption",
                shown,
                f"is missing (key {key[:12]}..., for {path})",
                "fill the cache first: "
                + (spec.command_hint or "ds.prepare() or `wan-data cache ... --text-encoder ...`")
                + ", or pass prepare='auto'",
                stage="cache",
            )
        )
    if entry is None:
        raise SampleError(
            format_error(
                "text embedding of caption",
                shown,
                "failed verification and was quarantined",
                "it is encoded again by the next cache pass; the sample is replaced meanwhile",
                path=path,
                stage="cache",
            ),
            reason="cache_corrupt",
        )
    return entry.latents


@dataclass(frozen=True)
class TextJob:
    """Captions on their way into the text encoder (one encoder call)."""

    keys: tuple[str, ...]
    captions: tuple[str, ...]

    @property
    def key(self) -> str:
        """The first caption's key, plus ``(+N)`` for the N others: one name for the job in a
        skip record or a log line."""
        return self.keys[0] if len(self.keys) == 1 else f"{self.keys[0]} (+{len(self.keys) - 1})"

    @property
    def path(self) -> str:
        """What a skip record shows in place of a file: ``caption '<first 40 characters>'`` of the
        first caption (a caption has no path of its own)."""
        first = self.captions[0]
        return f"caption {first[:40]!r}"


class EncodeText(MapStage[TextJob, Encoded]):
    """Stage ``encode_text``: ``TextJob → Encoded`` per caption, under the error policy (a
    tokenizer or encoder error skips the job's captions with a record, not the cache pass)."""

    name = "encode_text"
    accepts = TextJob

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder

    def process(self, item: TextJob) -> list[Encoded]:
        embeds = self._encoder.encode(list(item.captions))
        return [
            Encoded(
                key=key,
                path=f"caption {caption[:40]!r}",
                latents=embed.contiguous(),
                entry={"kind": "text", "caption": caption},
            )
            for key, caption, embed in zip(item.keys, item.captions, embeds, strict=True)
        ]

    def identity(self) -> str:
        return f"encode_text:v{self.version}"


def prepare_text(
    samples: Sequence[PlanSample],
    *,
    spec: TextSpec,
    encoder: Any,
    cache: LatentCache,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 8,
    context: StageContext | None = None,
) -> dict[str, Any]:
    """Encode every caption of ``samples`` that the cache lacks (this rank's share).

    Distinct captions are dealt to ranks by their index in a fixed order, so under
    ``torchrun`` each is encoded once, by one rank, into the shared cache. Encoding runs
    through the :class:`EncodeText` stage (``context``: its policy, breaker and counters).

    Args:
        encoder: a :class:`~wan_data.conditioning.text.TextEncoder` (``encode(captions)``
            returns each caption's unpadded ``(L, D)`` embedding).

    Returns:
        ``{"captions", "already_cached", "encoded", "skipped"}`` for this rank.
    """
    ctx = context if context is not None else StageContext()
    keys = list(text_keys(samples, spec).items())[rank::world_size]
    missing = [(key, caption) for key, caption in keys if not cache.contains(key)]
    size = max(1, batch_size)
    jobs = (
        TextJob(tuple(k for k, _ in chunk), tuple(c for _, c in chunk))
        for chunk in (missing[i : i + size] for i in range(0, len(missing), size))
    )
    encoded = skipped = 0
    for out in EncodeText(encoder)(jobs, ctx):
        if isinstance(out, Failed):
            ctx.metrics.record_failed(out)
            skipped += 1
            continue
        cache.put(out.key, out.latents, out.entry)
        encoded += 1
    summary = {
        "captions": len(keys),
        "already_cached": len(keys) - len(missing),
        "encoded": encoded,
        "skipped": skipped,
    }
    logger.info("text pass: %s", summary)
    return summary
