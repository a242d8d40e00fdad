"""Turning a batch plan into batches: decode each member, replace failures, collate.

The plan (``plan.py``) says which samples form which batch before anything is decoded. Here each
member is decoded; a member that fails is replaced by the next candidate of the same bucket in a
seeded order, so batches stay full and homogeneous and every rank yields its planned number of
batches. Whether a sample fails is a property of the file, so the replacement chosen depends
only on (seed, epoch, batch position): the same with any number of workers and after a resume.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from wan_data.errors import PipelineHealthError, format_error
from wan_data.failures.mechanism import StageContext
from wan_data.items import Batch, Bucket, Clip, Failed, PlanSample
from wan_data.media.sampling import sample_rng
from wan_data.planning.clips import DecodeOptions
from wan_data.planning.plan import EpochPlan, PlannedBatch, fallback_buckets, replacement_candidates
from wan_data.stages.base import MapStage, Stage, compose
from wan_data.stages.collate import BatchBuffers, collate
from wan_data.stages.decode import Decode

__all__ = ["MemberReader", "PlanSample", "ReadStage", "build_batches", "pixel_reader"]

logger = logging.getLogger("wan_data")


@dataclass(frozen=True)
class MemberReader:
    """How a planned member becomes a batch item: the stages it runs through, and the collate.

    Pixel batches read every member through the decode stage and then the dataset's clip
    stages (:func:`pixel_reader`); cached batches through the cache-read stage. Either way the
    member goes through the one failure mechanism, so its breaker, counters and watchdog are
    those of any other stage.

    Attributes:
        stages: ``PlanSample → item`` stages, composed in order (one item out per sample).
        collate: stacks a list of items into the public batch.
    """

    stages: tuple[Stage[Any, Any], ...]
    collate: Callable[[list[Any]], Batch]

    @classmethod
    def from_function(
        cls,
        stage: str,
        read: Callable[[PlanSample, int], Any],
        collate: Callable[[list[Any]], Batch],
    ) -> MemberReader:
        """A reader whose one stage, named ``stage``, calls ``read(sample, epoch)``."""
        return cls((ReadStage(stage, read),), collate)


class ReadStage(MapStage[PlanSample, Any]):
    """``PlanSample → item`` by a function of the sample and the context's epoch (the cache
    read of the train pass)."""

    accepts = PlanSample

    def __init__(self, name: str, read: Callable[[PlanSample, int], Any]) -> None:
        self.name = name
        self.read = read

    def process_in(self, item: PlanSample, context: StageContext) -> list[Any]:
        return [self.read(item, context.epoch)]


def pixel_reader(
    options: DecodeOptions, clip_stages: Sequence[Stage[Clip, Clip]] = ()
) -> MemberReader:
    """Members decoded from their source files (then the clip stages), batched as pixels."""
    # A pool per reader (one pass): the float batch of pixels is the largest tensor the
    # pipeline makes (79 MB for two 33x240x416 clips), and a fresh one is faulted in page by page.
    buffers = BatchBuffers()
    return MemberReader(
        (Decode(options), *clip_stages), functools.partial(collate, buffers=buffers)
    )


def build_batches(
    batches: Sequence[PlannedBatch],
    plan: EpochPlan,
    samples: Sequence[PlanSample],
    *,
    options: DecodeOptions,
    context: StageContext,
    batch_size: int,
    reader: MemberReader | None = None,
) -> Iterator[tuple[PlannedBatch, Batch]]:
    """Read and collate the given planned batches, in order, replacing failed members.

    Every member goes through ``reader``'s stages under ``context`` (its policy, breakers,
    counters and watchdog).
    """
    member_reader = reader if reader is not None else pixel_reader(options)
    for batch in batches:
        clips, replaced, bucket = _fill(
            batch, plan, samples, options, context, batch_size, member_reader
        )
        out = member_reader.collate(clips)
        out["position"] = batch.position
        out["epoch"] = plan.epoch
        out["replaced"] = replaced
        out["padding"] = batch.padding
        context.metrics.batches += 1
        context.metrics.samples += len(clips)
        for clip in clips:
            if isinstance(clip, Clip):
                context.metrics.frames_served += clip.bucket.frames
                context.metrics.frames_repeated += clip.repeated_frames
        if bucket != batch.bucket:
            logger.warning(
                "batch %d of epoch %d: bucket %s exhausted, filled from %s instead",
                batch.position,
                plan.epoch,
                batch.bucket,
                bucket,
            )
        yield batch, out


def _decode(
    index: int,
    samples: Sequence[PlanSample],
    context: StageContext,
    reader: MemberReader,
) -> Any:
    """One member through the reader's stages: the item, or ``Failed`` (recorded)."""
    outs = list(compose([samples[index]], reader.stages, context))
    # Exhausted, not next(): a stage records its outcome in its breaker after yielding it.
    if len(outs) != 1:
        raise RuntimeError(
            format_error(
                "items a member reader's stages yield per sample",
                len(outs),
                "must be exactly 1",
                "a clip stage must map each clip to one clip (use Filter-like skips, not drops)",
            )
        )
    out = outs[0]
    if isinstance(out, Failed):
        context.metrics.record_failed(out, epoch=context.epoch)
    return out


def _fill(
    batch: PlannedBatch,
    plan: EpochPlan,
    samples: Sequence[PlanSample],
    options: DecodeOptions,
    context: StageContext,
    batch_size: int,
    reader: MemberReader,
) -> tuple[list[Any], int, Bucket]:
    clips: list[Any] = []
    unfilled = 0
    replaced = 0
    used = set(batch.members)
    candidates = replacement_candidates(plan, batch, seed=options.seed)
    for member in batch.members:
        clip = _decode(member, samples, context, reader)
        while isinstance(clip, Failed):
            nxt = next((c for c in candidates if c not in used), None)
            if nxt is None:
                break
            used.add(nxt)
            replaced += 1
            clip = _decode(nxt, samples, context, reader)
        if isinstance(clip, Failed):
            unfilled += 1
        else:
            clips.append(clip)
    if not clips:
        return _fallback(batch, plan, samples, options, context, batch_size, replaced, reader)
    # The bucket has no unused sample left: repeat the batch's good clips, as small_buckets
    # "repeat" does, rather than shrink the batch or change its bucket.
    clips.extend(clips[i % len(clips)] for i in range(unfilled))
    return clips, replaced + unfilled, batch.bucket


def _fallback(
    batch: PlannedBatch,
    plan: EpochPlan,
    samples: Sequence[PlanSample],
    options: DecodeOptions,
    context: StageContext,
    batch_size: int,
    replaced: int,
    reader: MemberReader,
) -> tuple[list[Any], int, Bucket]:
    """Every candidate of the batch's bucket failed: build the whole batch from another bucket.

    The batch count per rank must not change (DDP would hang), and a batch must not mix
    buckets, so a whole batch of another bucket (tried in a seeded order) takes its place.
    """
    size = len(batch.members) if batch.members else batch_size
    for bucket in fallback_buckets(plan, batch, seed=options.seed):
        pool = list(plan.pools[bucket])
        sample_rng(options.seed, plan.epoch, f"fallback:{batch.position}:{bucket}", "plan").shuffle(
            pool
        )
        clips: list[Any] = []
        for index in pool:
            clip = _decode(index, samples, context, reader)
            if not isinstance(clip, Failed):
                clips.append(clip)
                if len(clips) == size:
                    break
        if clips:  # a bucket smaller than the batch is filled by repeats, as the plan does
            clips.extend(clips[i % len(clips)] for i in range(size - len(clips)))
            return clips, replaced + size, bucket
    raise PipelineHealthError(
        format_error(
            f"batch {batch.position} of epoch {plan.epoch}",
            str(batch.bucket),
            "cannot be filled: every sample of its bucket and of every other bucket failed to "
            "decode",
            "see report()['skipped'] for the causes",
            stage="batch",
        )
    )
