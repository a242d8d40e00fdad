"""Frame access: the planned frames of one clip out of FFmpeg (torchcodec) or Pillow, verified.

Everything that touches a decoder lives here, apart from the decode stage
(:mod:`wan_data.stages.decode`), which only assembles clips from what this returns: seeking is
fast but not always right, so getting frames is a small protocol of its own. Frames are
requested by presentation time (or index, at native fps) with seeking; each is checked to be the
one shown at its requested time (:func:`wrong_frames`); a batched call that fails on a bad
packet is salvaged frame by frame (:func:`_salvage`); wrong seeks and containers known to seek
wrongly (:data:`SEQUENTIAL_CONTAINERS`) are decoded sequentially from the start
(:func:`_fetch_sequential`); a file replaced since it was probed is refused
(:func:`check_source_unchanged`). Frames come out of the decoder at the source size and are
resized here as they arrive (:func:`resize_frames`), not by a decoder-side transform. Rule
violations raise :class:`~wan_data.errors.SampleError`
with their reason; the stage's :func:`~wan_data.failures.mechanism.map_stage` turns them into
``Failed``.

Tests replace ``_fetch`` and ``_salvage`` in this module; :func:`fetch_clip` looks them up here
at call time.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from wan_data.errors import SampleError, format_error
from wan_data.failures.policy import release_frames
from wan_data.items import Probed
from wan_data.media.sampling import (
    choose_frame_bucket,
    distinct_frames,
    expects_distinct_frames,
    frame_time_problems,
    sampling_period,
)
from wan_data.media.source_files import open_source
from wan_data.planning.clips import ClipPlan, DecodeOptions

__all__ = [
    "RESAMPLER_VERSION",
    "SEQUENTIAL_CONTAINERS",
    "Fetched",
    "check_source_unchanged",
    "container_name",
    "decode_image",
    "fetch_clip",
    "open_decoder",
    "open_seekable",
    "resize_frames",
    "wrong_frames",
]

# The resampler's version: part of every latent cache key, so latents encoded from another
# resampler's pixels are never served as these (2: OpenCV area / torchvision bicubic with
# antialias after a full-size decode; 1, absent from keys: FFmpeg's swscale Resize).
RESAMPLER_VERSION = 2

logger = logging.getLogger("wan_data")

# Containers on which torchcodec's seeking lands on the wrong frames (MPEG transport and
# program streams): their clips are decoded sequentially from the start (see _fetch_sequential).
SEQUENTIAL_CONTAINERS = frozenset({"ts", "m2ts", "mts", "m2t", "tsv", "tsa", "mpg", "mpeg", "vob"})
_CONTAINER_NAMES = {"ts": "MPEG-TS", "m2ts": "MPEG-TS (Blu-ray)", "mts": "MPEG-TS (AVCHD)"}


def container_name(path: str) -> str:
    """A human name of a file's container, for messages (``MPEG-TS (.ts)``)."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    return f"{_CONTAINER_NAMES.get(ext, ext.upper() or 'unknown')} (.{ext})"


def open_decoder(
    path: str,
    resized: tuple[int, int] | None = None,
    src: tuple[int, int] | None = None,
    threads: int = 1,
) -> Any:
    """A torchcodec decoder in exact seek mode that yields frames at the source size.

    Frames are resized after they are fetched and verified (:func:`resize_frames`, called by
    :func:`fetch_clip`), not inside FFmpeg: torchcodec's ``Resize`` transform cost about as much
    as the decode itself (docs/performance.md, "Pixel stream vs bare torchcodec"). ``resized``
    and ``src`` are accepted for callers of the former signature and ignored.

    It reads an open file object (:func:`~wan_data.media.source_files.open_source`), not the
    path: the file is checked to still be a regular file (a FIFO swapped in since construction
    would block FFmpeg's open forever), and a name that is not valid UTF-8 works. The decoder
    keeps the file object; it is closed when the decoder is dropped.

    Raises:
        SampleError: ``not_a_file`` (a FIFO, socket or device).
        OSError: the file cannot be opened (the policy decides).
    """
    from torchcodec.decoders import VideoDecoder

    del resized, src  # frames are resized by resize_frames, after verification
    fh = open_source(path, stage="decode")
    try:
        return VideoDecoder(fh, seek_mode="exact", num_ffmpeg_threads=threads)
    except BaseException:
        fh.close()
        raise


def _opencv() -> Any:
    """``cv2``, set to one thread in every process that uses it, before its first resize.

    One thread because a DataLoader worker is meant to use one core (as torch sets itself
    there), and *in every process*, the main one included, because of fork: once OpenCV has
    started its thread pool in a process, a forked child that calls ``cv2.setNumThreads``
    deadlocks on the pool's threads, which do not exist in the child. Setting it in the main
    process before its first resize means no pool is ever started there, and a worker forked
    after an epoch with ``num_workers=0`` inherits one thread and never calls it (a measured
    hang before: the first ``num_workers=2`` epoch after a ``num_workers=0`` one).
    The integer-factor resizes it serves are a fraction of a millisecond per frame; the pool
    bought little there.
    """
    import cv2

    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)
    return cv2


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 frames ``(N, 3, H, W)`` resized to ``size`` = ``(width, height)``, antialiased.

    The cheapest resampler that is at least as close to an exact area average as FFmpeg's
    (swscale) resize was, by source/target ratio (measured in docs/performance.md and
    ``tests/media/test_resize_quality.py``):

    * an integer downscale factor on both sides (832x480 -> 416x240): OpenCV ``INTER_AREA``,
      which is then an exact block mean, about 0.5 ms per frame;
    * any other ratio: torchvision's uint8 bicubic with antialias (separable, vectorised;
      ~1-5 ms per frame). OpenCV's ``INTER_AREA`` is exact at these ratios too but 4-7x slower
      (its generic fractional-area path), so it is not used there.

    The result is a channels-last ``(N, 3, h, w)`` view (as torchcodec's own frames are); the
    input is returned unchanged when it already has the size. Nothing else of the geometry
    changes: the crop is still a slice of the resized frame (see
    :func:`~wan_data.stages.decode._crop`).
    """
    n, c, h, w = frames.shape
    rw, rh = size
    if (w, h) == (rw, rh) or n == 0:
        return frames
    if c == 3 and w % rw == 0 and h % rh == 0:
        cv2 = _opencv()
        src = frames.permute(0, 2, 3, 1)
        if not src.is_contiguous():
            src = src.contiguous()
        out = torch.empty((n, rh, rw, c), dtype=torch.uint8)
        src_np, out_np = src.numpy(), out.numpy()
        for i in range(n):
            cv2.resize(src_np[i], (rw, rh), dst=out_np[i], interpolation=cv2.INTER_AREA)
        return out.permute(0, 3, 1, 2)
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as tvf

    return tvf.resize(frames, [rh, rw], interpolation=InterpolationMode.BICUBIC, antialias=True)


def open_seekable(item: Probed, plan: ClipPlan, threads: int) -> Any:
    """The decoder a source's clips are fetched from by seeking, checked against the probe.

    ``None`` for images and for containers decoded sequentially (:func:`_fetch_sequential`
    opens a decoder of its own per clip). The caller drops its reference as soon as its clips
    are fetched (see :func:`~wan_data.failures.policy.release_frames` for why).

    Raises:
        SampleError: ``source_changed`` (see :func:`check_source_unchanged`).
    """
    if not _seekable_video(item):
        return None
    decoder = open_decoder(item.path, threads=threads)
    check_source_unchanged(decoder, item)
    return decoder


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


def fetch_clip(item: Probed, plan: ClipPlan, decoder: Any, options: DecodeOptions) -> Fetched:
    """The planned frames of one video clip, each verified to be the one planned, resized to
    ``plan.resized`` (:func:`resize_frames`) as they are decoded: a batched call in chunks of
    :data:`_CHUNK` frames, each resized at once, a sequential decode frame by frame when chosen;
    frames that come back at another size (a replaced ``_fetch`` in tests) are resized here.

    Seeking first (fast), except on containers that seek wrongly (:data:`SEQUENTIAL_CONTAINERS`,
    for which ``decoder`` is ``None``: see :func:`open_seekable`); a frame that is not the one
    shown at its requested time (:func:`wrong_frames`) sends the clip to a sequential decode,
    whose frames are right by construction (each is the last decoded frame at or before its
    time). A batched call that fails is salvaged frame by frame (:func:`_salvage`): the clip may
    then hold fewer frames than planned.

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
    fetched.data = resize_frames(fetched.data, plan.resized)
    return fetched


def _asked(fetched: Fetched, plan: ClipPlan, i: int) -> str:
    if fetched.requests is not None:
        return f"the frame shown at {fetched.requests[i]:.4f} s"
    assert plan.indices is not None
    return f"frame {plan.indices[i]}"


# Frames fetched per batched decoder call: each batch is resized as it arrives, so a clip is
# never held at the source size whole (81 frames of 1080p are 500 MB; 8 are 50 MB).
_CHUNK = 8


def _in_chunks(
    get: Any, positions: list[Any], plan: ClipPlan
) -> tuple[torch.Tensor, list[float], list[float]]:
    """``get`` (a batched decoder call) over ``positions`` in chunks of :data:`_CHUNK`, each
    resized to ``plan.resized`` at once: (frames, pts, durations). Consecutive chunks continue
    the decode where the last one stopped (no seek within a GOP), so this costs no more than
    one call (measured), and the same frames come out."""
    parts: list[torch.Tensor] = []
    pts: list[float] = []
    durations: list[float] = []
    for start in range(0, len(positions), _CHUNK):
        batch = get(positions[start : start + _CHUNK])
        parts.append(resize_frames(batch.data, plan.resized))
        pts.extend(float(t) for t in batch.pts_seconds.tolist())
        durations.extend(float(d) for d in batch.duration_seconds.tolist())
        batch = None  # drop the source-size frames before decoding the next chunk
    return (parts[0] if len(parts) == 1 else torch.cat(parts)), pts, durations


def _fetch(decoder: Any, plan: ClipPlan, item: Probed, options: DecodeOptions) -> Fetched:
    """The planned frames through seeking, each checked against the time it was asked for."""
    if plan.indices is not None:
        data, pts, durations = _in_chunks(decoder.get_frames_at, list(plan.indices), plan)
        return Fetched(data, pts, durations, None)
    assert plan.times is not None and options.fps is not None
    requests = list(plan.times)
    data, pts, durations = _in_chunks(decoder.get_frames_played_at, requests, plan)
    meta = item.metadata
    if expects_distinct_frames(options.fps, meta.fps) and len(set(pts)) < len(pts):
        # The source is at least as fast as the target, yet a frame came twice: container
        # rounding stretched one frame past a target step. Take the next frame instead.
        def fetch(t: float) -> tuple[float, float, torch.Tensor]:
            frame = decoder.get_frame_played_at(t)
            data = resize_frames(frame.data.unsqueeze(0), plan.resized)[0]
            return float(frame.pts_seconds), float(frame.duration_seconds), data

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

    decoder = open_decoder(path, threads=options.num_ffmpeg_threads)
    check_source_unchanged(decoder, item)
    native = plan.indices is not None
    wanted = list(plan.indices) if plan.indices is not None else list(plan.times or ())
    chosen: list[tuple[torch.Tensor, float, float] | None] = [None] * len(wanted)
    j = 0
    index = -1
    previous: tuple[torch.Tensor, float, float] | None = None
    shrunk = False  # whether `previous` is resized already

    def shrink(f: tuple[torch.Tensor, float, float]) -> tuple[torch.Tensor, float, float]:
        # A frame is resized once, when it is first chosen: no clip is held at the source size.
        return resize_frames(f[0].unsqueeze(0), plan.resized)[0], f[1], f[2]

    try:
        while j < len(wanted):
            try:
                data, pts_t, dur_t = _core.get_next_frame(decoder._decoder)
            except IndexError:  # end of stream
                break
            index += 1
            frame = (data, float(pts_t), float(dur_t))
            if native:
                if j < len(wanted) and wanted[j] == index:
                    frame = shrink(frame)
                while j < len(wanted) and wanted[j] == index:
                    chosen[j] = frame
                    j += 1
                continue
            # Requests before this frame's time are served by the frame before it.
            if j < len(wanted) and wanted[j] < frame[1] and previous is not None and not shrunk:
                previous, shrunk = shrink(previous), True
            while j < len(wanted) and wanted[j] < frame[1]:
                chosen[j] = previous
                j += 1
            previous, shrunk = frame, False
        if not native:
            if j < len(wanted) and previous is not None and not shrunk:
                previous = shrink(previous)
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
        got.append(resize_frames(frame.data.unsqueeze(0), plan.resized)[0])
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


def decode_image(path: str, plan: ClipPlan) -> torch.Tensor:
    """An image as a one-frame ``(1, 3, H, W)`` uint8 clip, EXIF-rotated and resized to plan.

    Resized by the same :func:`resize_frames` as video frames. Opened as a regular file only
    (see :func:`open_decoder`)."""
    from PIL import Image, ImageOps

    with open_source(path, stage="decode") as fh, Image.open(fh) as img:
        img.load()
        upright = ImageOps.exif_transpose(img)
        if upright.mode.startswith("I"):
            # 16-bit greyscale (a 16-bit PNG opens as "I;16" or "I"): Pillow's convert("RGB")
            # clips every value above 255 to white, so scale the 16-bit range to 8 bits first.
            deep = np.asarray(upright).astype(np.int64)
            upright = Image.fromarray(np.clip(deep >> 8, 0, 255).astype(np.uint8), "L")
        rgb = upright.convert("RGB")
    array = np.asarray(rgb, dtype=np.uint8)
    frame = torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0)
    return resize_frames(frame, plan.resized)
