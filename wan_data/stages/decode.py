"""Decode stage: ``Probed`` -> ``Clip``, one clip per planned window of a source.

This module assembles clips; it does not talk to FFmpeg itself. The plan (bucket, window, crop,
caption) is pure data from :mod:`wan_data.planning.clips`; the frames come, verified, from
:mod:`wan_data.media.frames` (one decoder open per source; frames decoded at the source size
and resized to ``plan.resized`` after verification by :func:`~wan_data.media.frames.resize_frames`,
OpenCV's exact area mean at integer factors and torchvision's antialiased bicubic otherwise:
1.4-1.6x cheaper than torchcodec's decoder-side ``Resize``, see docs/performance.md). What is
left here is the stage: decode every clip of a source, crop it (a
tensor slice placed by a seeded generator: torchcodec's ``RandomCrop`` uses the global RNG,
which would make samples depend on the worker), and hand failures to
:func:`~wan_data.failures.mechanism.map_stage`.

The planning and frame-access names are re-exported so that ``from wan_data.stages.decode
import DecodeOptions, plan_clips`` keeps working; tests that replace the frame-access internals
(``_fetch``, ``_salvage``) patch :mod:`wan_data.media.frames`, where they are looked up.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from wan_data.errors import SampleError, format_error
from wan_data.failures.mechanism import StageContext, clean_message, map_stage
from wan_data.failures.policy import Action, ErrorPolicy, release_frames
from wan_data.items import Bucket, Clip, Failed, PlanSample, Probed
from wan_data.media.buckets import source_crop_box
from wan_data.media.frames import (
    SEQUENTIAL_CONTAINERS,
    Fetched,
    check_source_unchanged,
    container_name,
    decode_image,
    fetch_clip,
    open_seekable,
    wrong_frames,
)
from wan_data.media.sampling import count_repeats
from wan_data.planning.clips import ClipPlan, DecodeOptions, caption_for, choose_bucket, plan_clips
from wan_data.stages.base import MapStage

__all__ = [
    "SEQUENTIAL_CONTAINERS",
    "ClipPlan",
    "DecodeOptions",
    "Fetched",
    "caption_for",
    "check_source_unchanged",
    "choose_bucket",
    "container_name",
    "decode",
    "decode_one",
    "decode_sample",
    "default_ffmpeg_threads",
    "plan_clips",
    "wrong_frames",
]


def _crop(frames: torch.Tensor, plan: ClipPlan, width: int, height: int) -> torch.Tensor:
    # A view: collate reads it once into the float batch, so a copy here would be wasted.
    x, y = plan.offset
    return frames[..., y : y + height, x : x + width]


def decode_one(
    item: Probed, options: DecodeOptions, epoch: int, policy: ErrorPolicy | None = None
) -> list[Clip | Failed]:
    """Every clip of one source.

    Rule violations (``too_short``, ``source_changed``, ``bad_timestamps``...) are raised as
    :class:`~wan_data.errors.SampleError` for the stage's ``map_stage`` to turn into ``Failed``;
    so is a decoder error of a single-clip source, and the first one when every clip fails. The
    one ``Failed`` built here is the partial failure ``map_stage`` lets its function return:
    when some clips of a multi-clip source fail in the decoder and others decode, the failed
    ones become ``Failed`` (reason from ``policy``) next to the surviving clips, which a raise
    would lose. An error ``policy`` calls fatal is raised even then, so the stage stops the run.
    """
    options = options.for_source(item.source)  # the source's concept may override some
    plans = plan_clips(item, options, epoch)
    caption = caption_for(item, options, epoch)
    decoder = open_seekable(item, plans[0], options.num_ffmpeg_threads)
    clips: list[Clip] = []
    errors: list[tuple[ClipPlan, Exception]] = []
    try:
        for plan in plans:
            try:
                clips.append(_decode_clip(item, plan, decoder, options, caption))
            except (RuntimeError, IndexError, ValueError) as exc:
                if len(plans) == 1:
                    raise
                release_frames(exc)
                errors.append((plan, exc))
    finally:
        # Free the decoder (and its FFmpeg threads) now, not whenever the garbage collector
        # runs: see policy.release_frames for why a lingering decoder is dangerous.
        decoder = None
    if errors and not clips:
        raise errors[0][1]
    policy = policy if policy is not None else ErrorPolicy()
    out: list[Clip | Failed] = list(clips)
    for plan, error in errors:
        decision = policy.classify(error)
        if decision.action is Action.FATAL:
            errors.clear()
            raise error  # not one bad clip but the environment: the stage's policy stops
        out.append(_clip_failed(item, plan, error, decision.reason))
    errors.clear()  # the exceptions reference this frame: break the cycle now
    return out


def _clip_failed(item: Probed, plan: ClipPlan, error: Exception, reason: str) -> Failed:
    """The skip of one clip of a source whose other clips decoded."""
    return Failed(
        key=f"{item.key}#{plan.clip_index}",
        path=item.path,
        stage="decode",
        reason=reason,
        error_type=type(error).__name__,
        message=format_error(
            f"clip {plan.clip_index} of file",
            item.path,
            f"failed to decode with {type(error).__name__}: {clean_message(error)[:300]}",
            "the other clips of this file are kept",
            stage="decode",
        ),
    )


def decode_sample(
    item: Probed, clip_index: int, bucket: Bucket, options: DecodeOptions, epoch: int
) -> Clip:
    """One planned clip of a source, exactly in its planned bucket.

    A batch plan fixed the bucket before decoding, so a salvaged clip with fewer frames cannot
    join its batch: it is a failure here, and the caller replaces the sample.

    Raises:
        SampleError: ``decode_error`` when only a shorter prefix decodes; whatever the decoder
            raises otherwise (classified by the caller's policy).
    """
    options = options.for_source(item.source)  # the source's concept may override some
    plans = plan_clips(item, options, epoch)
    plan = plans[clip_index]
    decoder = open_seekable(item, plan, options.num_ffmpeg_threads)
    try:
        clip = _decode_clip(item, plan, decoder, options, caption_for(item, options, epoch))
    finally:
        decoder = None  # free FFmpeg's threads now: see policy.release_frames
    if clip.bucket != bucket:
        raise SampleError(
            format_error(
                f"clip {clip_index} of file",
                item.path,
                f"decodes only {clip.bucket.frames} of the {bucket.frames} frames its batch "
                "needs (a damaged packet)",
                "the sample is replaced by another of its bucket; re-encode the file to keep it",
                stage="decode",
            ),
            reason="decode_error",
        )
    return clip


def _decode_clip(
    item: Probed, plan: ClipPlan, decoder: Any, options: DecodeOptions, caption: str
) -> Clip:
    meta = item.metadata
    bucket = plan.bucket
    if meta.media_type == "image":
        data, times = decode_image(item.path, plan), [0.0]
        repeats = 0
    else:
        fetched = fetch_clip(item, plan, decoder, options)
        if len(fetched.pts) != bucket.frames:
            bucket = Bucket(len(fetched.pts), bucket.width, bucket.height)
        data, times = fetched.data, fetched.pts
        repeats = count_repeats(times)
    rw, rh = plan.resized
    return Clip(
        key=f"{item.key}#{plan.clip_index}",
        source=item.source,
        pixels=_crop(data, plan, bucket.width, bucket.height),
        frame_times=tuple(times),
        bucket=bucket,
        crop=source_crop_box(
            plan.offset[0],
            plan.offset[1],
            bucket.width,
            bucket.height,
            rw,
            rh,
            meta.width,
            meta.height,
        ),
        caption=caption,
        clip_index=plan.clip_index,
        repeated_frames=repeats,
    )


def default_ffmpeg_threads(num_workers: int) -> int:
    """Decoder threads per worker: the cores divided among workers, at least one."""
    return max(1, (os.cpu_count() or 1) // max(1, num_workers))


class Decode(MapStage[PlanSample, Clip]):
    """Stage ``decode``: ``PlanSample → Clip``, exactly in the sample's planned bucket.

    The epoch (which window, crop and caption a sample takes) comes from the context, so one
    ``Decode`` serves every epoch. Training reads every batch member through this stage (then
    the dataset's clip stages), the cache pass decodes through it before encoding, and a
    hand-built pipeline composes it after :class:`~wan_data.stages.bucket.Bucket`.
    """

    name = "decode"
    accepts = PlanSample
    # 2: frames resized by resize_frames (OpenCV area / torchvision bicubic) instead of
    # torchcodec's decoder-side Resize: other pixels, so results cached by v1 are not served.
    version = 2

    def __init__(self, options: DecodeOptions) -> None:
        self.options = options

    def process_in(self, item: PlanSample, context: StageContext) -> list[Clip]:
        return [
            decode_sample(item.probed, item.clip_index, item.bucket, self.options, context.epoch)
        ]

    def identity(self) -> str:
        options = {k: v for k, v in vars(self.options).items() if k != "num_ffmpeg_threads"}
        return f"decode:v{self.version}:{sorted(options.items(), key=str)!r}"


def decode(
    items: Iterable[Probed | Failed],
    *,
    policy: ErrorPolicy,
    options: DecodeOptions,
    context: StageContext | None = None,
    epoch: int = 0,
) -> Iterator[Clip | Failed]:
    """Stage: ``Probed`` -> one ``Clip`` per sampled window (or ``Failed``)."""

    def one(item: Probed) -> list[Clip | Failed]:
        return decode_one(item, options, epoch, policy)

    yield from map_stage(items, one, stage="decode", accepts=Probed, policy=policy, context=context)
