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

import dataclasses
from dataclasses import dataclass

from wan_data.errors import SampleError, format_error
from wan_data.items import Bucket, Probed, Source
from wan_data.media.buckets import BucketSet, cover_size, crop_offsets
from wan_data.media.sampling import (
    choose_frame_bucket,
    clip_starts,
    frame_request_times,
    frames_available,
    sample_rng,
)
from wan_data.sources.caption_tools import NO_CAPTION_TOOLS, CaptionTools, apply_caption_tools

__all__ = [
    "ClipPlan",
    "DecodeOptions",
    "bucket_list",
    "caption_for",
    "choose_bucket",
    "plan_clips",
]


@dataclass(frozen=True)
class DecodeOptions:
    """Everything that decides which pixels a source turns into.

    Args:
        frames: frame buckets (4k+1 counts); a video takes the largest it can fill.
        fps: target frame rate for sampling by presentation time; ``None`` keeps native frames.
        buckets: spatial ``(width, height)`` buckets; a source goes to the nearest aspect.
        sampling: ``head``, ``full`` (= ``head``), ``middle``, ``random``, ``uniform``,
            ``chunks``, ``slide`` or ``overlapping`` (see ``sampling.clip_starts``).
        clips_per_video: windows per video for ``uniform`` and ``overlapping`` (0: the fewest
            that cover the video); cap for ``chunks`` and ``slide`` (0 = all).
        stride: target frames between ``slide`` windows (``None``: the window length).
        frame_stride: with ``fps=None``, take every n-th source frame (ignored with an fps:
            lower the fps instead).
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
    stride: int | None = None
    frame_stride: int = 1
    seed: int = 0
    num_ffmpeg_threads: int = 1
    no_upscale: bool = False
    # Caption tools (prefix, suffix, tag shuffle and dropout): they change the caption only, so
    # the sample index's fingerprint and the latent cache keys leave them out.
    captions: CaptionTools = NO_CAPTION_TOOLS
    # Per-source options: the options of each concept that overrides some (see
    # ``Concept.options``), by concept name; a source of any other concept uses these.
    by_concept: tuple[tuple[str, DecodeOptions], ...] = ()

    def for_concept(self, name: str) -> DecodeOptions:
        """The options a source of concept ``name`` is planned with: its own when the concept
        overrides any, else these. Idempotent (a concept's options have no ``by_concept``),
        so every function that takes options may resolve them again."""
        for concept, options in self.by_concept:
            if concept == name:
                return options
        return self

    def for_source(self, source: Source) -> DecodeOptions:
        """:meth:`for_concept` of the source's concept."""
        return self.for_concept(source.concept) if self.by_concept else self

    def identity(self, *, captions: bool) -> dict[str, object]:
        """The options fingerprints cover: what decides a source's samples (and, with
        ``captions``, their captions), without the buckets (covered separately) and the thread
        count. Options added later are left out at their defaults, so the fingerprints of
        earlier versions still match (a resume state or a sample index is not refused, or
        rebuilt, for an option nobody set)."""
        out: dict[str, object] = {
            k: v
            for k, v in self.__dict__.items()
            if k not in ("buckets", "num_ffmpeg_threads", "captions", "by_concept")
        }
        for name, default in (("stride", None), ("frame_stride", 1)):
            if out[name] == default:
                del out[name]
        if captions and self.captions != NO_CAPTION_TOOLS:
            out["captions"] = dataclasses.asdict(self.captions)
        if self.by_concept:
            # A concept's own buckets are part of its identity: the dataset-level buckets are
            # covered by the caller, a concept's are not.
            out["by_concept"] = {
                name: {**options.identity(captions=captions), "buckets": bucket_list(options)}
                for name, options in self.by_concept
            }
        return out


def bucket_list(options: DecodeOptions) -> list[list[int]]:
    """The spatial buckets of ``options`` as JSON lists (for fingerprints)."""
    buckets = options.buckets
    sizes = buckets.all if isinstance(buckets, BucketSet) else tuple(buckets)
    return [list(b) for b in sizes]


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
    options = options.for_source(item.source)
    meta = item.metadata
    bw, bh = choose_bucket(meta.width, meta.height, options, item.path)
    rw, rh = cover_size(meta.width, meta.height, bw, bh)
    if meta.media_type == "image":
        starts, frames = [0], 1
        native, step = True, 1
    else:
        native = options.fps is None
        fps = meta.fps if native else options.fps
        assert fps is not None
        # Native rate with a frame stride: target frame i is source frame i * frame_stride.
        step = options.frame_stride if native else 1
        n = frames_available(meta, options.fps, step)
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
        # Seeded only where a draw is made (the generator costs a sha256 and a Mersenne
        # Twister seeding, and this runs for every cached read); the draws are unchanged.
        rng = (
            sample_rng(options.seed, epoch, item.key, "window")
            if options.sampling == "random"
            else None
        )
        starts = clip_starts(
            n,
            frames,
            mode=options.sampling,
            clips=options.clips_per_video,
            rng=rng,
            stride=options.stride,
        )
    plans = []
    for clip_index, start in enumerate(starts):
        crop_rng = (
            sample_rng(options.seed, epoch, item.key, f"crop{clip_index}")
            if options.crop == "random"
            else None
        )
        offset = crop_offsets(rw, rh, bw, bh, mode=options.crop, rng=crop_rng)
        times: tuple[float, ...] | None
        indices: tuple[int, ...] | None
        if meta.media_type == "image":
            times, indices = (0.0,), None
        elif native:
            times, indices = None, tuple(range(start * step, (start + frames) * step, step))
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
    """The caption of a source for an epoch: a seeded choice among its candidates (``""``
    without one), then the caption tools of ``options.captions`` (prefix and suffix; tag
    shuffle and dropout seeded by seed, epoch and key, see :mod:`wan_data.sources.caption_tools`).
    """
    options = options.for_source(item.source)
    captions = item.source.captions
    if len(captions) > 1:
        chosen = sample_rng(options.seed, epoch, item.key, "caption").choice(captions)
    else:  # one candidate or none: no draw to make (the generator is not worth seeding)
        chosen = captions[0] if captions else ""
    tools = options.captions
    if not tools.enabled:
        return chosen
    return apply_caption_tools(
        chosen, tools, lambda: sample_rng(options.seed, epoch, item.key, "caption_tags")
    )
