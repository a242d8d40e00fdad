"""The train pass's reads: planned clips' latents from the cache, verified, into their batch.

Every member is read straight into its slot of the batch tensor (no stack copy), its checksum
computed where the bytes landed; a corrupt entry is quarantined and becomes a skip (the batch
takes a replacement), an entry never written ends the run with the command that fills the
cache, and a source changed under a running dataset is skipped as stale. The cache pass that
writes these entries is :mod:`~wan_data.latents.prepare`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import torch

from wan_data.conditioning.text_cache import chosen_caption, read_text
from wan_data.errors import ConfigError, SampleError, format_error
from wan_data.items import Batch, CachedClip, CropBox, PlanSample
from wan_data.latents.entry import CacheEntry
from wan_data.latents.spec import CacheSpec, sample_key
from wan_data.latents.store import LatentCache
from wan_data.planning.clips import DecodeOptions, caption_for
from wan_data.stages.collate import BatchBuffers, make_batch

__all__ = ["CacheIncompleteError", "LatentBatcher", "collate_latents", "read_cached"]


class CacheIncompleteError(ConfigError):
    """The train pass met a clip that was never cached: the cache pass must run first."""


def read_cached(
    sample: PlanSample,
    epoch: int,
    options: DecodeOptions,
    spec: CacheSpec,
    cache: LatentCache,
    *,
    into: Callable[[tuple[int, ...], torch.dtype], torch.Tensor] | None = None,
) -> CachedClip:
    """Read one planned clip's latents; corrupt entries are quarantined and become a skip.

    ``into`` places the latents (see :meth:`LatentCache.lookup`); :class:`LatentBatcher` uses it
    to read each member straight into its slot of the batch.

    The entry must have its bucket's latent shape (:meth:`CacheSpec.latent_shape`): a valid
    checksum proves the bytes are the ones written, not that they were written for this bucket.

    Raises:
        CacheIncompleteError: the entry was never written (the cache pass has not covered it).
        SampleError: ``cache_corrupt`` when the entry failed verification or has another shape
            (it is quarantined and re-encoded by the next cache pass; the caller replaces the
            sample meanwhile); ``stale_cache`` when the source changed after the dataset was
            planned (its key moved; the old entry is never served).
    """
    variant = spec.variant(epoch)
    key, _ = sample_key(sample, variant, options, spec)
    shape = spec.latent_shape(sample.bucket)
    entry = _read_entry(
        cache, key, "cache entry", sample, variant, spec, into=into, expect_shape=shape
    )
    extras = {
        name: _read_entry(cache, derived, f"{name} entry", sample, variant, spec).latents
        for name, derived in spec.conditions.keys(key).items()
    }
    meta = entry.metadata
    times = tuple(float(t) for t in json.loads(meta.get("frame_times", "[]")))
    crop = CropBox(*[float(v) for v in json.loads(meta.get("crop", "[0, 0, 0, 0]"))])
    caption = caption_for(sample.probed, options, epoch)
    text_embed = None
    if spec.text is not None:
        caption = chosen_caption(sample, options, epoch, spec.text)
        text_embed = read_text(cache, caption, spec.text, sample.path)
    return CachedClip(
        key=f"{sample.key}",
        source=sample.probed.source,
        latents=entry.latents,
        frame_times=times,
        crop=crop,
        bucket=sample.bucket,
        caption=caption,
        text_embed=text_embed,
        cond_latents=extras.get("cond"),
        clip_embeds=extras.get("clip"),
    )


def _read_entry(
    cache: LatentCache,
    key: str,
    what: str,
    sample: PlanSample,
    variant: int,
    spec: CacheSpec,
    *,
    into: Callable[[tuple[int, ...], torch.dtype], torch.Tensor] | None = None,
    expect_shape: tuple[int, ...] | None = None,
) -> CacheEntry:
    """One verified entry of ``sample`` (its latents, or a condition derived from them).

    Raises:
        CacheIncompleteError: never written (with the command that fills the cache).
        SampleError: ``cache_corrupt`` when it failed verification (quarantined);
            ``stale_cache`` when the source changed under the running dataset.
    """
    entry, status = cache.lookup(key, into=into, expect_shape=expect_shape)
    if status == "missing":
        changed = spec.changed_since_planned(sample.path)
        if changed is not None:
            # Touched or rewritten while training: its key moved with its mtime, so a miss
            # here is this one file's problem (skip it, like a deleted file), not a cache
            # that was never filled (which ends the run with the command to fill it).
            raise SampleError(
                format_error(
                    f"{what} of file",
                    sample.path,
                    f"is stale: the file changed at {changed} after this dataset was planned, "
                    "so its cached latents no longer match it and are not served",
                    "the sample is replaced meanwhile; run the cache pass again to encode the "
                    "new version",
                    path=sample.path,
                    stage="cache",
                ),
                reason="stale_cache",
            )
        if any(cache.quarantine_dir.glob(f"{key}.*")):
            raise SampleError(
                format_error(
                    f"{what} of file",
                    sample.path,
                    "was quarantined after failing verification",
                    "it is re-encoded by the next cache pass; the sample is replaced meanwhile",
                    stage="cache",
                ),
                reason="cache_corrupt",
            )
        raise CacheIncompleteError(
            format_error(
                f"{what} of file",
                sample.path,
                f"is missing (clip {sample.clip_index}, variant {variant}, key {key[:12]}...)",
                "fill the cache first: "
                + (
                    spec.command_hint
                    or "ds.prepare() or `wan-data cache ROOT --vae ... --cache-dir ...`"
                )
                + ", or pass prepare='auto'",
                stage="cache",
            )
        )
    if entry is None:
        raise SampleError(
            format_error(
                f"{what} of file",
                sample.path,
                "failed verification and was "
                + (
                    "skipped (read-only cache: left in place)" if cache.read_only else "quarantined"
                ),
                "it is re-encoded by the next cache pass; the sample is replaced meanwhile",
                stage="cache",
            ),
            reason="cache_corrupt",
        )
    return entry


class LatentBatcher:
    """Reads planned members' latents straight into their batch tensor, then hands it out.

    Stacking separately read latents copies every byte once more: for Wan-sized entries (4 MB)
    that copy costs as much as the read itself. Members are read in batch order, so member ``i``
    of a batch goes into slot ``i`` of a preallocated ``(batch_size, z, T, h, w)`` tensor (in
    shared memory inside a DataLoader worker, which is where the batch must end up; in the main
    process a batch tensor the trainer has let go of takes the next batch, see
    :class:`~wan_data.stages.collate.BatchBuffers`). A member
    that fails leaves its slot to the next candidate; when the slots do not line up with the
    batch's clips (another bucket's shape mid-batch, a fallback batch), :meth:`collate` stacks as
    usual. Pass :meth:`read` and :meth:`collate` as a
    :class:`~wan_data.planning.batches.MemberReader`.
    """

    def __init__(
        self, options: DecodeOptions, spec: CacheSpec, cache: LatentCache, batch_size: int
    ) -> None:
        self.options = options
        self.spec = spec
        self.cache = cache
        self.batch_size = max(1, batch_size)
        self._arena: torch.Tensor | None = None
        self._used = 0
        self.buffers = BatchBuffers()

    def _slot(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        arena = self._arena
        if (
            arena is None
            or tuple(arena.shape[1:]) != shape
            or arena.dtype != dtype
            or self._used >= arena.shape[0]
        ):
            arena = self._arena = self.buffers.empty((self.batch_size, *shape), dtype)
            self._used = 0
        return arena[self._used]

    def read(self, sample: PlanSample, epoch: int) -> CachedClip:
        """One member's latents, read and verified straight into the next slot of the batch tensor.

        Raises what :func:`read_cached` raises.
        """
        clip = read_cached(sample, epoch, self.options, self.spec, self.cache, into=self._slot)
        self._used += 1  # only once verified: a failed read leaves its slot to the next one
        return clip

    def collate(self, clips: Sequence[CachedClip]) -> Batch:
        """The batch of ``clips``: the slot tensor itself when the clips fill its slots in order,
        else their latents stacked.
        """
        arena, self._arena, self._used = self._arena, None, 0
        n = len(clips)
        latents = None
        if arena is not None and 0 < n <= arena.shape[0]:
            base = arena.data_ptr()
            step = arena[0].numel() * arena.element_size()
            if all(c.latents.data_ptr() == base + i * step for i, c in enumerate(clips)):
                latents = arena if n == arena.shape[0] else arena[:n]
        text = self.spec.text
        conditions = self.spec.conditions
        return collate_latents(
            clips,
            latents=latents,
            text_length=text.max_length if text is not None else None,
            conditions=conditions.mode if conditions.cached else None,
        )


def collate_latents(
    clips: Sequence[CachedClip],
    *,
    latents: torch.Tensor | None = None,
    text_length: int | None = None,
    conditions: str | None = None,
) -> Batch:
    """The train-pass batch: ``latents`` (B, z, T, h, w) plus the same fields as pixel batches,
    and ``text_embeds``/``text_lens`` padded to ``text_length`` when the dataset caches text.

    ``latents``: the clips' latents already in one tensor (see :class:`LatentBatcher`).
    """
    stacked = latents if latents is not None else torch.stack([c.latents for c in clips])
    return make_batch(clips, latents=stacked, text_length=text_length, conditions=conditions)
