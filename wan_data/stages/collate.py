"""Batch assembly: drop failures, stack the rest, explain shape mismatches.

This is the second line of defence: stages already drop :class:`Failed` before batching, but a
``collate`` used with a plain DataLoader must never turn one bad sample into a crash.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch.utils.data import get_worker_info

from wan_data.errors import ConfigError, format_error
from wan_data.failures.mechanism import StageContext
from wan_data.items import Batch, CachedClip, Clip, Failed
from wan_data.stages.base import Stage

__all__ = [
    "BatchBuffers",
    "BatchClips",
    "batch_clips",
    "collate",
    "empty_batch",
    "make_batch",
    "pixels_to_float",
]

logger = logging.getLogger("wan_data")


def empty_batch(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An uninitialised batch tensor, in shared memory when made inside a DataLoader worker.

    A worker sends tensors to the main process through shared memory; a tensor that is not
    already there is copied into it on the way out (80 MB per batch of two 33x240x416 clips).
    Writing the batch straight into shared memory saves that copy, as torch's own
    ``default_collate`` does.
    """
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    numel = 1
    for n in shape:
        numel *= n
    itemsize = torch.empty((), dtype=dtype).element_size()
    storage = torch.UntypedStorage._new_shared(numel * itemsize)
    return torch.empty(0, dtype=dtype).set_(storage).view(shape)


# torch's count of the references to a storage (tensors and views of it, its Python object):
# private, so reuse is simply off where a torch build lacks it.
_storage_use_count = getattr(torch._C, "_storage_Use_Count", None)


def _references(held: list[torch.Tensor], i: int) -> tuple[int, int, int]:
    """Who refers to ``held[i]``: its Python references, its storage's Python references, and
    torch's use count of the storage (raised by every view, numpy array or exported buffer)."""
    tensor = held[i]
    storage = tensor.untyped_storage()
    assert _storage_use_count is not None
    return sys.getrefcount(tensor), sys.getrefcount(storage), _storage_use_count(storage._cdata)


class BatchBuffers:
    """Batch tensors handed out again once nothing outside holds them (main process only).

    A fresh batch tensor can cost its page faults: one above glibc's largest mmap threshold
    (32 MB; the float pixel batch of two 33x240x416 clips is 79 MB) is mapped anew for every
    step, faulted in page by page while the clips are written into it, and unmapped when the
    trainer drops it. Reusing it made the pixel stream 4 % faster here (paired rounds). Smaller
    batches (4 Wan-sized latents: 17 MB) come from memory glibc itself reuses once the
    threshold has risen, so there the pool measured the same as fresh tensors. The trainer
    usually lets go of batch ``n`` before asking for ``n + 1``, so its tensor can take the
    next batch.

    A tensor is reused only when nothing but this pool refers to it: not the tensor object
    (the trainer's ``batch`` dict), its storage object, nor any view, numpy array or exported
    buffer of its memory (torch's use count of the storage). The counts a pooled tensor has
    when nobody else holds it are measured once, through the same code path, so no Python or
    torch version's counting is assumed. Inside a DataLoader worker, batches go to the main
    process through shared memory and are never reused here (:func:`empty_batch`).

    ``keep`` bounds the pool: the trainer holding one batch while the next is read needs two,
    which is also the peak without a pool.
    """

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._held: list[torch.Tensor] = []
        self.reused = 0
        self._alone: tuple[int, int, int] | None = None
        if _storage_use_count is not None and get_worker_info() is None:
            self._alone = _references([torch.empty(1)], 0)

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised ``shape`` ``dtype`` tensor: a pooled one nobody holds, or a new one."""
        if self._alone is None or get_worker_info() is not None:
            return empty_batch(shape, dtype)
        held = self._held
        for i in range(len(held)):
            tensor = held[i]
            if tensor.dtype != dtype or tuple(tensor.shape) != shape:
                continue
            del tensor  # not counted as a reference
            if _references(held, i) == self._alone:
                self.reused += 1
                held.append(held.pop(i))
                return held[-1]
        fresh = torch.empty(shape, dtype=dtype)
        held.append(fresh)
        if len(held) > self.keep:
            del held[0]
        return fresh

    def clear(self) -> None:
        """Let go of every pooled tensor (the memory returns when nobody else holds it)."""
        self._held.clear()


def pixels_to_float(
    frames: torch.Tensor | Sequence[torch.Tensor], buffers: BatchBuffers | None = None
) -> torch.Tensor:
    """uint8 clips (F, 3, H, W) -> float32 (B, 3, F, H, W) in [-1, 1].

    Accepts a stacked (B, F, 3, H, W) tensor or a sequence of clips (possibly non-contiguous
    crop views). Each (clip, channel) plane is cast straight into its place in the output (no
    uint8 stack, no permuted copy), then scaled in place with vectorised kernels: 7.7 ms per
    33 x 240 x 416 clip on one thread, against 12.3 ms for a casting ``torch.mul`` per plane.
    """
    clips = list(frames.unbind(0)) if isinstance(frames, torch.Tensor) else list(frames)
    f, c, h, w = clips[0].shape
    shape = (len(clips), c, f, h, w)
    out = buffers.empty(shape, torch.float32) if buffers is not None else empty_batch(shape)
    for i, clip in enumerate(clips):
        for channel in range(c):
            out[i, channel].copy_(clip[:, channel])
    return out.mul_(2.0 / 255.0).sub_(1.0)


def collate(items: Sequence[Clip | Failed | None], buffers: BatchBuffers | None = None) -> Batch:
    """Stack clips into the public batch dict, dropping ``Failed`` and ``None``.

    Returns:
        ``pixels`` float32 (B, 3, F, H, W) in [-1, 1], ``captions``, ``paths``, ``keys``,
        ``frame_times`` (seconds), ``crops`` (x, y, w, h in source pixels), ``buckets``,
        ``repeated_fraction`` (per sample, the share of frames repeating the one before: a
        source slower than the target fps) and
        ``dropped`` (how many inputs were dropped). An all-failed input gives an empty batch
        (B = 0) instead of an exception.

    ``buffers``: where the float pixel batch comes from (a pool reusing the tensors a trainer
    has let go of, see :class:`BatchBuffers`); a new tensor each call by default.

    Raises:
        ValueError: clips of different shapes, naming every sample and its shape.
    """
    clips = [c for c in items if isinstance(c, Clip)]
    dropped = len(items) - len(clips)
    if dropped:
        logger.debug("collate dropped %d failed/None item(s) of %d", dropped, len(items))
    if not clips:
        return make_batch(
            [], pixels=torch.empty((0, 3, 0, 0, 0), dtype=torch.float32), dropped=dropped
        )
    shapes = {tuple(c.pixels.shape) for c in clips}
    if len(shapes) > 1:
        listing = "; ".join(f"{c.key} ({c.source.path}) {tuple(c.pixels.shape)}" for c in clips)
        raise ValueError(
            format_error(
                "clip shapes in one batch",
                sorted(shapes),
                "must all be equal",
                f"batch clips of one bucket only (WanVideoDataset does); samples: {listing}",
                stage="collate",
            )
        )
    pixels = pixels_to_float([c.pixels for c in clips], buffers)
    return make_batch(clips, pixels=pixels, dropped=dropped)


def make_batch(
    members: Sequence[Clip | CachedClip],
    *,
    pixels: torch.Tensor | None = None,
    latents: torch.Tensor | None = None,
    dropped: int = 0,
    text_length: int | None = None,
    conditions: str | None = None,
) -> Batch:
    """The public batch of ``members``: the one place a :class:`~wan_data.items.Batch` is
    built, for pixel and latent batches alike (the planner adds ``position``, ``epoch``,
    ``replaced`` and ``padding``).

    Args:
        members: the clips (decoded or read from the cache), in batch order.
        pixels, latents: the stacked data; exactly one of them.
        dropped: inputs dropped on the way (failures, ``None``).
        text_length: pad the members' text embeddings to this many tokens
            (``text_embeds``, ``text_lens``); ``None``: the batch carries no text.
        conditions: ``"i2v"`` or ``"flf2v"``: add the members' cached conditions
            (``cond_latents``, ``cond_mask``, ``clip_embeds``); ``None``: none.
    """
    if (pixels is None) == (latents is None):
        raise ValueError(
            format_error("make_batch data", "pixels and latents", "exactly one is required")
        )
    batch: Batch = {}
    if pixels is not None:
        batch["pixels"] = pixels
    if latents is not None:
        batch["latents"] = latents
    batch["captions"] = [c.caption for c in members]
    batch["paths"] = [c.source.path for c in members]
    batch["keys"] = [c.key for c in members]
    batch["frame_times"] = [list(c.frame_times) for c in members]
    batch["crops"] = [c.crop.as_list() for c in members]
    batch["buckets"] = [str(c.bucket) for c in members]
    batch["concepts"] = [c.source.concept for c in members]
    batch["loss_weights"] = torch.tensor(
        [float(c.source.loss_weight) for c in members], dtype=torch.float32
    )
    if pixels is not None:
        batch["repeated_fraction"] = [
            c.repeated_frames / c.bucket.frames for c in members if isinstance(c, Clip)
        ]
    if text_length is not None:
        from wan_data.conditioning.text import pad_text_embeds

        texts = [c.text_embed for c in members if isinstance(c, CachedClip)]
        if len(texts) != len(members) or any(e is None for e in texts):
            raise ValueError(
                format_error(
                    "text embeddings of a batch",
                    f"{sum(e is not None for e in texts)} of {len(members)}",
                    "must be present for every member",
                    "a wan_data bug: the cache read attaches one to every member",
                )
            )
        batch["text_embeds"], batch["text_lens"] = pad_text_embeds(
            [e for e in texts if e is not None], max_length=text_length
        )
    if conditions is not None:
        _add_conditions(batch, members, last_frame=conditions == "flf2v")
    batch["dropped"] = dropped
    return batch


def _add_conditions(
    batch: Batch, members: Sequence[Clip | CachedClip], *, last_frame: bool
) -> None:
    """``cond_latents``, ``cond_mask`` (built here: a pure function of the shape) and, when
    cached, ``clip_embeds`` of the members."""
    from wan_data.conditioning.image import condition_mask

    conds = [c.cond_latents for c in members if isinstance(c, CachedClip)]
    if len(conds) != len(members) or any(c is None for c in conds):
        raise ValueError(
            format_error(
                "condition latents of a batch",
                f"{sum(c is not None for c in conds)} of {len(members)}",
                "must be present for every member",
                "a wan_data bug: the cache read attaches one to every member",
            )
        )
    stacked = torch.stack([c for c in conds if c is not None])
    batch["cond_latents"] = stacked
    frames = members[0].bucket.frames
    mask = condition_mask(
        frames, stacked.shape[-2], stacked.shape[-1], last_frame=last_frame, dtype=stacked.dtype
    )
    batch["cond_mask"] = mask.unsqueeze(0).expand(len(members), -1, -1, -1, -1).contiguous()
    clips = [c.clip_embeds for c in members if isinstance(c, CachedClip)]
    if clips and all(c is not None for c in clips):
        batch["clip_embeds"] = torch.stack([c for c in clips if c is not None])


def batch_clips(
    items: Iterable[Clip | Failed | None],
    *,
    batch_size: int,
    drop_last: bool = False,
    context: StageContext | None = None,
) -> Iterator[Batch]:
    """Group clips by bucket and yield full batches; leftovers at the end as partial batches.

    Failures are recorded (when a context is given) and dropped here, so they never reach a
    batch and never shrink one: a batch is only emitted once ``batch_size`` good clips of its
    bucket have arrived.

    Raises:
        ConfigError: ``batch_size`` is not an int >= 1 (on the first ``next``).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        # Otherwise no group ever reaches the size and every bucket comes out as one batch.
        raise ConfigError(format_error("batch_size", batch_size, "must be an int >= 1"))
    ctx = context if context is not None else StageContext()
    pending: dict[tuple[int, int, int], list[Clip]] = {}
    for item in items:
        if isinstance(item, Failed):
            ctx.metrics.record_failed(item, epoch=ctx.epoch)
            continue
        if not isinstance(item, Clip):
            ctx.metrics.dropped_in_collate += 1
            continue
        shape = (item.bucket.frames, item.bucket.width, item.bucket.height)
        group = pending.setdefault(shape, [])
        group.append(item)
        if len(group) == batch_size:
            del pending[shape]
            yield _emit(group, ctx)
    for shape in sorted(pending):
        group = pending[shape]
        if drop_last:
            ctx.metrics.warnings["dropped_partial_batch_samples"] += len(group)
            logger.info(
                "dropped %d sample(s) of partial batch %s (drop_last=True)", len(group), shape
            )
            continue
        yield _emit(group, ctx)


def _emit(group: list[Clip], ctx: StageContext) -> Batch:
    batch = collate(group)
    ctx.metrics.batches += 1
    ctx.metrics.samples += len(group)
    return batch


class BatchClips(Stage[Clip, Batch]):
    """Stage ``batch``, the sink of a hand-built pixel pipeline: ``Clip → Batch`` of one bucket.

    Unlike the other stages it does not pass failures on: a batch cannot hold one, so each
    ``Failed`` is recorded in the context's report and dropped here (see :func:`batch_clips`).
    For planned batches (equal counts on every rank, replacement of failed members, exact
    resume), use the planner: :class:`~wan_data.WanVideoDataset` or
    :func:`~wan_data.planning.batches.build_batches`.
    """

    name = "batch"

    def __init__(self, batch_size: int, *, drop_last: bool = False) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(format_error("batch_size", batch_size, "must be an int >= 1"))
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __call__(
        self, items: Iterable[Clip | Failed], context: StageContext | None = None
    ) -> Iterator[Batch]:
        return batch_clips(
            items, batch_size=self.batch_size, drop_last=self.drop_last, context=context
        )
