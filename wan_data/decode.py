"""Decode + sample + resize/crop stage: ``Probed`` -> ``Clip``.

One decoder open per video, with the resize done inside the decoder (torchcodec's ``Resize``
transform, about 4x cheaper than decoding full size and resizing in torch) and only the needed
frames requested, by presentation time. The crop is a tensor slice of the resized frames, placed
by a seeded generator (torchcodec's ``RandomCrop`` uses the global RNG, which would make samples
depend on the worker).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .buckets import BucketSet, cover_size, crop_offsets, source_crop_box
from .errors import SampleError, format_error
from .items import Bucket, Clip, Failed, Probed
from .pipeline import StageContext, clean_message, map_stage
from .policy import ErrorPolicy, release_frames
from .sampling import (
    available_frames,
    choose_frame_bucket,
    clip_starts,
    frame_timestamps,
    sample_rng,
)

__all__ = ["DecodeOptions", "decode", "plan_clips"]

logger = logging.getLogger("wan_data")


@dataclass(frozen=True)
class DecodeOptions:
    """Everything that decides which pixels a source turns into.

    Args:
        frames: frame buckets (4k+1 counts); a video takes the largest it can fill.
        fps: target frame rate for sampling by presentation time; ``None`` keeps native frames.
        buckets: spatial ``(width, height)`` buckets; a source goes to the nearest aspect.
        sampling: ``head``, ``random``, ``uniform`` or ``chunks`` (see ``sampling.clip_starts``).
        clips_per_video: windows per video for ``uniform``; cap for ``chunks`` (0 = all).
        crop: ``center`` or ``random`` (seeded by seed, epoch, key and clip index).
        seed: base seed of every random choice.
        num_ffmpeg_threads: decoder threads (0 lets FFmpeg choose).
    """

    frames: tuple[int, ...]
    fps: float | None
    buckets: tuple[tuple[int, int], ...] | BucketSet
    sampling: str = "head"
    clips_per_video: int = 1
    crop: str = "center"
    seed: int = 0
    num_ffmpeg_threads: int = 1
    no_upscale: bool = False


@dataclass(frozen=True)
class ClipPlan:
    """Where one clip comes from: pure data, computed before any frame is decoded."""

    clip_index: int
    bucket: Bucket
    resized: tuple[int, int]
    offset: tuple[int, int]
    times: tuple[float, ...] | None
    indices: tuple[int, ...] | None


def choose_bucket(width: int, height: int, options: DecodeOptions, path: str) -> tuple[int, int]:
    """The spatial bucket of a source (see ``BucketSet.choose``).

    Raises:
        SampleError: ``too_small`` when ``no_upscale`` is set and no bucket fits the source.
    """
    buckets = options.buckets
    if not isinstance(buckets, BucketSet):
        buckets = BucketSet(tiers=(tuple(buckets),), targets=(max(buckets, key=_area),), step=1)
    chosen = buckets.choose(width, height, no_upscale=options.no_upscale)
    if chosen is None:
        smallest = min(buckets.all, key=_area)
        raise SampleError(
            format_error(
                "source size",
                f"{width}x{height}",
                f"is smaller than every bucket (smallest {smallest[0]}x{smallest[1]}) and "
                "no_upscale is set",
                "use a lower resolution, or no_upscale=False to allow upscaling",
                path=path,
                stage="bucket",
            ),
            reason="too_small",
        )
    return chosen


def _area(size: tuple[int, int]) -> int:
    return size[0] * size[1]


def plan_clips(item: Probed, options: DecodeOptions, epoch: int) -> list[ClipPlan]:
    """The clips a probed source yields this epoch (pure: tests call it directly).

    Raises:
        SampleError: ``too_short`` when no frame bucket fits.
    """
    meta = item.metadata
    bw, bh = choose_bucket(meta.width, meta.height, options, item.path)
    rw, rh = cover_size(meta.width, meta.height, bw, bh)
    if meta.media_type == "image":
        starts, frames = [0], 1
        native = True
    else:
        native = options.fps is None
        fps = meta.fps if native else options.fps
        assert fps is not None
        n = meta.frame_count if native else available_frames(meta.duration, fps)
        chosen = choose_frame_bucket(n, options.frames)
        if chosen is None:
            raise SampleError(
                format_error(
                    "video length",
                    f"{meta.duration:.2f} s = {n} frames at {fps:g} fps",
                    f"is shorter than the smallest frame bucket ({min(options.frames)})",
                    "lower the smallest entry of frames or fps, or remove the file",
                    path=item.path,
                    stage="decode",
                ),
                reason="too_short",
            )
        frames = chosen
        rng = sample_rng(options.seed, epoch, item.key, "window")
        starts = clip_starts(
            n, frames, mode=options.sampling, clips=options.clips_per_video, rng=rng
        )
    plans = []
    for clip_index, start in enumerate(starts):
        crop_rng = sample_rng(options.seed, epoch, item.key, f"crop{clip_index}")
        offset = crop_offsets(rw, rh, bw, bh, mode=options.crop, rng=crop_rng)
        times: tuple[float, ...] | None
        indices: tuple[int, ...] | None
        if meta.media_type == "image":
            times, indices = (0.0,), None
        elif native:
            times, indices = None, tuple(range(start, start + frames))
        else:
            assert options.fps is not None
            times = tuple(frame_timestamps(meta.begin_seconds, start, frames, options.fps))
            indices = None
        plans.append(ClipPlan(clip_index, Bucket(frames, bw, bh), (rw, rh), offset, times, indices))
    return plans


def _open_decoder(path: str, resized: tuple[int, int], src: tuple[int, int], threads: int) -> Any:
    from torchcodec.decoders import VideoDecoder
    from torchcodec.transforms import Resize

    transforms = [] if resized == src else [Resize((resized[1], resized[0]))]
    return VideoDecoder(path, seek_mode="exact", num_ffmpeg_threads=threads, transforms=transforms)


def _fetch(decoder: Any, plan: ClipPlan) -> tuple[torch.Tensor, list[float]]:
    if plan.indices is not None:
        batch = decoder.get_frames_at(list(plan.indices))
    else:
        assert plan.times is not None
        batch = decoder.get_frames_played_at(list(plan.times))
    return batch.data, [float(t) for t in batch.pts_seconds.tolist()]


def _salvage(
    decoder: Any, plan: ClipPlan, frames: Sequence[int]
) -> tuple[torch.Tensor, list[float], int]:
    """After a batched call failed on a bad packet: the longest decodable prefix, frame by frame.

    Returns the decoded frames, their times and the bucket they fill; raises the first error
    when the prefix fills no bucket. Frames are never duplicated or invented to fill a gap.
    """
    got: list[torch.Tensor] = []
    times: list[float] = []
    first_error: Exception | None = None
    positions = plan.indices if plan.indices is not None else plan.times
    assert positions is not None
    for pos in positions:
        try:
            frame = (
                decoder.get_frame_at(int(pos))
                if plan.indices is not None
                else decoder.get_frame_played_at(float(pos))
            )
        except (RuntimeError, IndexError, ValueError) as exc:
            first_error = exc
            break
        got.append(frame.data)
        times.append(float(frame.pts_seconds))
    fill = choose_frame_bucket(len(got), [f for f in frames if f <= plan.bucket.frames])
    if first_error is not None:
        release_frames(first_error)  # it references this frame, and so the decoder
    if fill is None:
        assert first_error is not None
        raise first_error
    first_error = None
    return torch.stack(got[:fill]), times[:fill], fill


def _decode_image(path: str, plan: ClipPlan) -> torch.Tensor:
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img.load()
        rgb = ImageOps.exif_transpose(img).convert("RGB")
    rw, rh = plan.resized
    if rgb.size != (rw, rh):
        rgb = rgb.resize((rw, rh), Image.Resampling.BILINEAR)
    array = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0)


def _crop(frames: torch.Tensor, plan: ClipPlan, width: int, height: int) -> torch.Tensor:
    # A view: collate reads it once into the float batch, so a copy here would be wasted.
    x, y = plan.offset
    return frames[..., y : y + height, x : x + width]


def decode_one(
    item: Probed, options: DecodeOptions, epoch: int, policy: ErrorPolicy | None = None
) -> list[Clip | Failed]:
    """Every clip of one source.

    When some clips of a multi-clip source fail and others decode, the failed ones become
    ``Failed`` (classified by ``policy``) and the rest survive; when all fail, the first error
    is raised so the stage's policy handles it like any single-clip failure.
    """
    plans = plan_clips(item, options, epoch)
    meta = item.metadata
    caption = caption_for(item, options, epoch)
    decoder = None
    if meta.media_type == "video":
        decoder = _open_decoder(
            item.path, plans[0].resized, (meta.width, meta.height), options.num_ffmpeg_threads
        )
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
    out: list[Clip | Failed] = list(clips)
    for plan, error in errors:
        reason = (policy or ErrorPolicy()).classify(error).reason
        out.append(
            Failed(
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
        )
    errors.clear()  # the exceptions reference this frame: break the cycle now
    return out


def caption_for(item: Probed, options: DecodeOptions, epoch: int) -> str:
    """The caption of a source for an epoch (seeded choice among its candidates)."""
    if not item.source.captions:
        return ""
    return sample_rng(options.seed, epoch, item.key, "caption").choice(item.source.captions)


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
    plans = plan_clips(item, options, epoch)
    plan = plans[clip_index]
    decoder = None
    if item.metadata.media_type == "video":
        decoder = _open_decoder(
            item.path,
            plan.resized,
            (item.metadata.width, item.metadata.height),
            options.num_ffmpeg_threads,
        )
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
    if decoder is None:
        data, times = _decode_image(item.path, plan), [0.0]
    else:
        try:
            data, times = _fetch(decoder, plan)
        except (RuntimeError, IndexError, ValueError) as exc:
            logger.info(
                "salvaging %s clip %d frame by frame after %s: %s",
                item.path,
                plan.clip_index,
                type(exc).__name__,
                exc,
            )
            data, times, fill = _salvage(decoder, plan, options.frames)
            bucket = Bucket(fill, bucket.width, bucket.height)
    if any(b < a for a, b in itertools.pairwise(times)):
        raise SampleError(
            format_error(
                "frame times of file",
                item.path,
                f"go backwards ({', '.join(f'{t:.3f}' for t in times[:6])}...): the sample "
                "table is damaged and frames come out of order",
                "re-mux or re-encode it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`",
                stage="decode",
            ),
            reason="bad_timestamps",
        )
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
    )


def default_ffmpeg_threads(num_workers: int) -> int:
    """Decoder threads per worker: the cores divided among workers, at least one."""
    return max(1, (os.cpu_count() or 1) // max(1, num_workers))


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
