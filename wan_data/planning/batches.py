"""Turning a batch plan into batches: decode each member, replace failures, collate.

The plan (``plan.py``) says which samples form which batch before anything is decoded. Here each
member is decoded; a member that fails is replaced by the next candidate of the same bucket in a
seeded order, so batches stay full and homogeneous and every rank yields its planned number of
batches. Whether a sample fails is a property of the file, so the replacement chosen depends
only on (seed, epoch, batch position): the same with any number of workers and after a resume.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from wan_data.errors import PipelineHealthError, format_error
from wan_data.failures.mechanism import StageContext, map_stage
from wan_data.failures.policy import ErrorPolicy
from wan_data.items import Bucket, Clip, Failed, Probed
from wan_data.media.sampling import sample_rng
from wan_data.planning.plan import EpochPlan, PlannedBatch, fallback_buckets, replacement_candidates
from wan_data.stages.collate import collate
from wan_data.stages.decode import DecodeOptions, decode_sample

__all__ = ["MemberReader", "PlanSample", "build_batches", "build_samples", "pixel_reader"]

logger = logging.getLogger("wan_data")


@dataclass(frozen=True)
class PlanSample:
    """One clip of the epoch-independent sample list: which source, which window, which bucket."""

    probed: Probed
    clip_index: int
    bucket: Bucket

    @property
    def key(self) -> str:
        return f"{self.probed.key}#{self.clip_index}"

    @property
    def path(self) -> str:
        return self.probed.path


def build_samples(
    probed: Iterable[Probed | Failed],
    *,
    options: DecodeOptions,
    policy: ErrorPolicy,
    context: StageContext,
) -> Iterator[PlanSample | Failed]:
    """Stage ``bucket``: every clip a source yields, with its bucket (no decoding).

    Buckets and clip counts do not depend on the epoch (only windows and crops do), so this runs
    once, at construction, and every epoch plans over the same list.
    """
    from wan_data.stages.decode import plan_clips

    def one(item: Probed) -> list[PlanSample]:
        return [
            PlanSample(item, plan.clip_index, plan.bucket)
            for plan in plan_clips(item, options, epoch=0)
        ]

    yield from map_stage(
        probed, one, stage="bucket", accepts=Probed, policy=policy, context=context
    )


@dataclass(frozen=True)
class MemberReader:
    """How a planned member becomes a batch item: decode pixels, or read cached latents.

    Attributes:
        stage: the stage name in counters and skips (``decode`` or ``cache``).
        read: ``read(sample, epoch)`` returns the item or raises (the policy decides).
        collate: stacks a list of items into the public batch dict.
    """

    stage: str
    read: Callable[[PlanSample, int], Any]
    collate: Callable[[list[Any]], dict[str, Any]]


def pixel_reader(options: DecodeOptions) -> MemberReader:
    """Members decoded from their source files into uint8 clips, batched as float pixels."""

    def read(sample: PlanSample, epoch: int) -> Clip:
        return decode_sample(sample.probed, sample.clip_index, sample.bucket, options, epoch)

    return MemberReader("decode", read, collate)


def build_batches(
    batches: Sequence[PlannedBatch],
    plan: EpochPlan,
    samples: Sequence[PlanSample],
    *,
    options: DecodeOptions,
    policy: ErrorPolicy,
    context: StageContext,
    batch_size: int,
    reader: MemberReader | None = None,
) -> Iterator[tuple[PlannedBatch, dict[str, Any]]]:
    """Read and collate the given planned batches, in order, replacing failed members."""
    member_reader = reader if reader is not None else pixel_reader(options)
    for batch in batches:
        clips, replaced, bucket = _fill(
            batch, plan, samples, options, policy, context, batch_size, member_reader
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
    policy: ErrorPolicy,
    context: StageContext,
    reader: MemberReader,
) -> Any:
    sample = samples[index]

    def one(s: PlanSample) -> list[Any]:
        return [reader.read(s, context.epoch)]

    out = next(
        map_stage(
            [sample], one, stage=reader.stage, accepts=PlanSample, policy=policy, context=context
        )
    )
    if isinstance(out, Failed):
        context.metrics.record_failed(out, epoch=context.epoch)
    return out


def _fill(
    batch: PlannedBatch,
    plan: EpochPlan,
    samples: Sequence[PlanSample],
    options: DecodeOptions,
    policy: ErrorPolicy,
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
        clip = _decode(member, samples, policy, context, reader)
        while isinstance(clip, Failed):
            nxt = next((c for c in candidates if c not in used), None)
            if nxt is None:
                break
            used.add(nxt)
            replaced += 1
            clip = _decode(nxt, samples, policy, context, reader)
        if isinstance(clip, Failed):
            unfilled += 1
        else:
            clips.append(clip)
    if not clips:
        return _fallback(
            batch, plan, samples, options, policy, context, batch_size, replaced, reader
        )
    # The bucket has no unused sample left: repeat the batch's good clips, as small_buckets
    # "repeat" does, rather than shrink the batch or change its bucket.
    clips.extend(clips[i % len(clips)] for i in range(unfilled))
    return clips, replaced + unfilled, batch.bucket


def _fallback(
    batch: PlannedBatch,
    plan: EpochPlan,
    samples: Sequence[PlanSample],
    options: DecodeOptions,
    policy: ErrorPolicy,
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
            clip = _decode(index, samples, policy, context, reader)
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
