"""Clip planning: which frames, bucket, resize and crop a probed source yields, before decoding.

This is pure data computed from the probed metadata and the options, kept apart from the decoder
(:mod:`wan_data.media.frames`) and the decode stage (:mod:`wan_data.stages.decode`) because three
callers need the plan without decoding anything: the ``bucket`` stage at construction
(:func:`wan_data.planning.batches.build_samples`, which the scan runs too) and the latent cache,
whose keys hash a clip's plan. One plan function for all of them is what keeps a sample in the
same bucket, window and crop whichever path reads it. Every random choice (window, crop,
caption) is seeded by (seed, epoch, key), so a plan depends on nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from wan_data.errors import SampleError, format_error
from wan_data.items import Bucket, Probed
from wan_data.media.buckets import BucketSet, cover_size, crop_offsets
from wan_data.media.sampling import (
    choose_frame_bucket,
    clip_starts,
    frame_request_times,
    frames_available,
    sample_rng,
)

__all__ = ["ClipPlan", "DecodeOptions", "caption_for", "choose_bucket", "plan_clips"]


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


def caption_for(item: Probed, options: DecodeOptions, epoch: int) -> str:
    """The caption of a source for an epoch (seeded choice among its candidates)."""
    if not item.source.captions:
        return ""
    return sample_rng(options.seed, epoch, item.key, "caption").choice(item.source.captions)
