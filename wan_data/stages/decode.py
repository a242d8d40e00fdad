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

from wan_data.errors import SampleError, format_error
from wan_data.failures.mechanism import StageContext, clean_message, map_stage
from wan_data.failures.policy import ErrorPolicy, release_frames
from wan_data.items import Bucket, Clip, Failed, Probed
from wan_data.media.buckets import BucketSet, cover_size, crop_offsets, source_crop_box
from wan_data.media.sampling import (
    choose_frame_bucket,
    clip_starts,
    count_repeats,
    distinct_frames,
    expects_distinct_frames,
    frame_request_times,
    frame_time_problems,
    frames_available,
    sample_rng,
    sampling_period,
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
        n = frames_available(meta, options.fps)
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
            times = tuple(
                frame_request_times(
                    meta.begin_seconds,
                    start,
                    frames,
                    options.fps,
                    source_fps=meta.fps or None,
                    end_seconds=meta.end_seconds,
                )
            )
            indices = None
        plans.append(ClipPlan(clip_index, Bucket(frames, bw, bh), (rw, rh), offset, times, indices))
    return plans


# Containers on which torchcodec's seeking lands on the wrong frames (MPEG transport and
# program streams): their clips are decoded sequentially from the start (see _fetch_sequential).
SEQUENTIAL_CONTAINERS = frozenset({"ts", "m2ts", "mts", "m2t", "tsv", "tsa", "mpg", "mpeg", "vob"})
_CONTAINER_NAMES = {"ts": "MPEG-TS", "m2ts": "MPEG-TS (Blu-ray)", "mts": "MPEG-TS (AVCHD)"}


def container_name(path: str) -> str:
    """A human name of a file's container, for messages (``MPEG-TS (.ts)``)."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    return f"{_CONTAINER_NAMES.get(ext, ext.upper() or 'unknown')} (.{ext})"


def _open_decoder(path: str, resized: tuple[int, int], src: tuple[int, int], threads: int) -> Any:
    from torchcodec.decoders import VideoDecoder
    from torchcodec.transforms import Resize

    transforms = [] if resized == src else [Resize((resized[1], resized[0]))]
    return VideoDecoder(path, seek_mode="exact", num_ffmpeg_threads=threads, transforms=transforms)


@dataclass
class Fetched:
    """Decoded frames of one clip with the time of every frame and what was asked for."""

    data: torch.Tensor
    pts: list[float]
    durations: list[float]
    requests: list[float] | None  # times asked for (None when fetched by index)


def check_source_unchanged(decoder: Any, item: Probed) -> None:
    """Refuse a file whose stream no longer matches what the probe saw at construction.

    The plan (bucket, resize, crop, windows) was computed from the probed metadata; a file
    replaced since then (another resolution) would be squashed into the old plan.

    Raises:
        SampleError: ``source_changed``.
    """
    meta = item.metadata
    m = decoder.metadata
    size = (int(m.width or 0), int(m.height or 0))
    frames = int(m.num_frames or 0)
    change = None
    if size != (meta.width, meta.height):
        change = f"its video is now {size[0]}x{size[1]}, planned as {meta.width}x{meta.height}"
    elif frames != meta.frame_count:
        change = f"it now holds {frames} frames, planned as {meta.frame_count}"
    if change is not None:
        raise SampleError(
            format_error(
                "file",
                item.path,
                f"changed since the dataset was built: {change}",
                "the sample is skipped this run; the next construction probes the file again",
                stage="decode",
            ),
            reason="source_changed",
        )


def _fetch(decoder: Any, plan: ClipPlan, item: Probed, options: DecodeOptions) -> Fetched:
    """The planned frames through seeking, each checked against the time it was asked for."""
    if plan.indices is not None:
        batch = decoder.get_frames_at(list(plan.indices))
        return Fetched(
            batch.data,
            [float(t) for t in batch.pts_seconds.tolist()],
            [float(d) for d in batch.duration_seconds.tolist()],
            None,
        )
    assert plan.times is not None and options.fps is not None
    requests = list(plan.times)
    batch = decoder.get_frames_played_at(requests)
    pts = [float(t) for t in batch.pts_seconds.tolist()]
    durations = [float(d) for d in batch.duration_seconds.tolist()]
    data = batch.data
    meta = item.metadata
    if expects_distinct_frames(options.fps, meta.fps) and len(set(pts)) < len(pts):
        # The source is at least as fast as the target, yet a frame came twice: container
        # rounding stretched one frame past a target step. Take the next frame instead.
        def fetch(t: float) -> tuple[float, float, torch.Tensor]:
            frame = decoder.get_frame_played_at(t)
            return float(frame.pts_seconds), float(frame.duration_seconds), frame.data

        frames, asked = distinct_frames(
            list(zip(pts, durations, data, strict=True)),
            period=_period(item, options),
            end_seconds=meta.end_seconds,
            fetch=fetch,
        )
        pts = [f[0] for f in frames]
        durations = [f[1] for f in frames]
        data = torch.stack([f[2] for f in frames])
        for i, t in asked.items():
            requests[i] = t
    return Fetched(data, pts, durations, requests)


def _fetch_sequential(path: str, plan: ClipPlan, item: Probed, options: DecodeOptions) -> Fetched:
    """The planned frames by decoding in order from the start of the stream, without seeking.

    torchcodec seeks before every batched call, and on MPEG transport streams the seek lands
    GOPs away from the target (an MPEG-2 ``.ts`` at 16 fps gave frame 24 for frame 20, and
    never frames 0-11). Decoding sequentially with ``torchcodec._core.get_next_frame`` gives
    every frame in presentation order; each request takes the frame shown at its time
    (:func:`~wan_data.media.sampling.frame_shown_at`). It costs a decode up to the window's end.
    """
    from torchcodec import _core

    meta = item.metadata
    decoder = _open_decoder(
        path, plan.resized, (meta.width, meta.height), options.num_ffmpeg_threads
    )
    check_source_unchanged(decoder, item)
    native = plan.indices is not None
    wanted = list(plan.indices) if plan.indices is not None else list(plan.times or ())
    chosen: list[tuple[torch.Tensor, float, float] | None] = [None] * len(wanted)
    j = 0
    index = -1
    previous: tuple[torch.Tensor, float, float] | None = None
    try:
        while j < len(wanted):
            try:
                data, pts_t, dur_t = _core.get_next_frame(decoder._decoder)
            except IndexError:  # end of stream
                break
            index += 1
            frame = (data, float(pts_t), float(dur_t))
            if native:
                while j < len(wanted) and wanted[j] == index:
                    chosen[j] = frame
                    j += 1
                continue
            # Requests before this frame's time are served by the frame before it.
            while j < len(wanted) and wanted[j] < frame[1]:
                chosen[j] = previous
                j += 1
            previous = frame
        if not native:
            while j < len(wanted):  # at or after the last frame's time
                chosen[j] = previous
                j += 1
    finally:
        decoder = None  # free FFmpeg's threads now: see policy.release_frames
    missing = [i for i, c in enumerate(chosen) if c is None]
    if missing:
        raise SampleError(
            format_error(
                f"clip {plan.clip_index} of file",
                path,
                f"has no decodable frame for {len(missing)} of its {len(wanted)} planned "
                f"{'indices' if native else 'times'} (first: {wanted[missing[0]]:g}) in a "
                f"sequential decode of this {container_name(path)} file",
                "remux or re-encode it to mp4, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`",
                stage="decode",
            ),
            reason=_time_reason(path),
        )
    frames = [c for c in chosen if c is not None]
    return Fetched(
        torch.stack([f[0] for f in frames]),
        [f[1] for f in frames],
        [f[2] for f in frames],
        None if native else [float(t) for t in wanted],
    )


def _period(item: Probed, options: DecodeOptions) -> float:
    assert options.fps is not None
    return sampling_period(options.fps, item.metadata.fps or None, item.metadata.duration)


def _seekable_video(item: Probed) -> bool:
    """A video whose clips are fetched by seeking (the others: images, and containers that are
    decoded sequentially with a decoder of their own)."""
    ext = os.path.splitext(item.path)[1].lower().lstrip(".")
    return item.metadata.media_type == "video" and ext not in SEQUENTIAL_CONTAINERS


def _time_reason(path: str) -> str:
    """``unsupported_container`` for containers known to seek wrongly, else ``bad_timestamps``."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    return "unsupported_container" if ext in SEQUENTIAL_CONTAINERS else "bad_timestamps"


def wrong_frames(fetched: Fetched, item: Probed, options: DecodeOptions) -> list[int]:
    """Positions of ``fetched`` whose frame is not the one planned (empty when all are right).

    By time: the frame must be the one shown at the requested time
    (:func:`~wan_data.media.sampling.frame_time_problems`): never later than it (the signature of a
    seek that landed on the wrong GOP); earlier is a frame the file holds (a variable frame
    rate), as exact mode's index of every frame time says, whatever duration the container
    claims. By index: frames must come in strictly increasing time (a repeated time is a frame
    served twice).
    """
    if fetched.requests is None:
        return [i for i in range(1, len(fetched.pts)) if fetched.pts[i] <= fetched.pts[i - 1]]
    return frame_time_problems(
        fetched.requests,
        fetched.pts,
        fetched.durations,
        period=_period(item, options),
        allow_held=True,
    )


def _salvage(decoder: Any, plan: ClipPlan, frames: Sequence[int]) -> tuple[Fetched, int]:
    """After a batched call failed on a bad packet: the longest decodable prefix, frame by frame.

    Returns the decoded frames and the bucket they fill; raises the first error when the
    prefix fills no bucket. Frames are never duplicated or invented to fill a gap.
    """
    got: list[torch.Tensor] = []
    pts: list[float] = []
    durations: list[float] = []
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
        pts.append(float(frame.pts_seconds))
        durations.append(float(frame.duration_seconds))
    fill = choose_frame_bucket(len(got), [f for f in frames if f <= plan.bucket.frames])
    if first_error is not None:
        release_frames(first_error)  # it references this frame, and so the decoder
    if fill is None:
        assert first_error is not None
        raise first_error
    first_error = None
    requests = None if plan.times is None else [float(t) for t in plan.times[:fill]]
    return Fetched(torch.stack(got[:fill]), pts[:fill], durations[:fill], requests), fill


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
    if _seekable_video(item):
        decoder = _open_decoder(
            item.path, plans[0].resized, (meta.width, meta.height), options.num_ffmpeg_threads
        )
        check_source_unchanged(decoder, item)
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
    if _seekable_video(item):
        decoder = _open_decoder(
            item.path,
            plan.resized,
            (item.metadata.width, item.metadata.height),
            options.num_ffmpeg_threads,
        )
        check_source_unchanged(decoder, item)
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
        data, times = _decode_image(item.path, plan), [0.0]
        repeats = 0
    else:
        fetched = _fetch_video(item, plan, decoder, options)
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


def _fetch_video(item: Probed, plan: ClipPlan, decoder: Any, options: DecodeOptions) -> Fetched:
    """The planned frames of one clip, each verified to be the one planned.

    Seeking first (fast), except on containers that seek wrongly (:data:`SEQUENTIAL_CONTAINERS`);
    a frame that is not the one shown at its requested time (:func:`wrong_frames`) sends the
    clip to a sequential decode, whose frames are right by construction (each is the last
    decoded frame at or before its time).

    Raises:
        SampleError: ``unsupported_container`` (an MPEG-TS/PS file whose frames cannot be
            reached at their times) or ``bad_timestamps`` (frame times that go backwards, or
            times before the first decodable frame).
    """
    if decoder is None:  # a container decoded sequentially (see _seekable_video)
        fetched = _fetch_sequential(item.path, plan, item, options)
    else:
        try:
            fetched = _fetch(decoder, plan, item, options)
        except (RuntimeError, IndexError, ValueError) as exc:
            logger.info(
                "salvaging %s clip %d frame by frame after %s: %s",
                item.path,
                plan.clip_index,
                type(exc).__name__,
                exc,
            )
            fetched, _ = _salvage(decoder, plan, options.frames)
        bad = wrong_frames(fetched, item, options)
        if bad:
            logger.info(
                "%s clip %d: %d frame(s) are not the ones planned after seeking (first: "
                "asked %s, got %.4f s); decoding sequentially",
                item.path,
                plan.clip_index,
                len(bad),
                _asked(fetched, plan, bad[0]),
                fetched.pts[bad[0]],
            )
            fetched = _fetch_sequential(item.path, plan, item, options)
    if any(b < a for a, b in itertools.pairwise(fetched.pts)):
        raise SampleError(
            format_error(
                "frame times of file",
                item.path,
                f"go backwards ({', '.join(f'{t:.3f}' for t in fetched.pts[:6])}...): the "
                "sample table is damaged and frames come out of order",
                "re-mux or re-encode it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`",
                stage="decode",
            ),
            reason="bad_timestamps",
        )
    return fetched


def _asked(fetched: Fetched, plan: ClipPlan, i: int) -> str:
    if fetched.requests is not None:
        return f"the frame shown at {fetched.requests[i]:.4f} s"
    assert plan.indices is not None
    return f"frame {plan.indices[i]}"


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
