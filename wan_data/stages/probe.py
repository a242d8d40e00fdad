"""Probe and validate stage: open each file once, read its metadata, reject what cannot work.

Video metadata comes from torchcodec's ``seek_mode="exact"`` scan (demuxing only, no decoding):
frame counts and durations from the content, not the header, because headers lie for truncated,
badly muxed and variable-frame-rate files. Images are probed with Pillow: size from the header,
then one full decode, which is cheap for an image and the only way to find one cut short.
Every source is opened as a regular file only (a FIFO would block forever) and handed to the
decoder as an open file object, not a path.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from wan_data.errors import SampleError, format_error
from wan_data.failures.mechanism import StageContext, map_stage
from wan_data.failures.policy import ErrorPolicy, release_frames
from wan_data.index.metadata_cache import MetadataCache, Verdict
from wan_data.items import Failed, Probed, Source, ValidationResult, VideoMetadata
from wan_data.media.ffmpeg_errno import ffmpeg_errno, file_fault
from wan_data.media.integrity import check_integrity, integrity_error
from wan_data.media.sampling import frames_available
from wan_data.media.source_files import SourceFile, open_source
from wan_data.stages.base import Stage

__all__ = ["ProbeLimits", "probe", "probe_metadata", "validate_file", "validate_metadata"]

logger = logging.getLogger("wan_data")

# What probing one source gives: its metadata and, with the integrity check, its verdict.
ProbeResult = tuple[VideoMetadata, "Verdict | None"]

# A content frame count this far under the header's is a truncated file, not muxing noise.
_TRUNCATION_TOLERANCE = 0.9
# The policy ``validate_file`` runs the stage under (stateless: one instance serves every call).
_VALIDATION_POLICY = ErrorPolicy()


@dataclass(frozen=True)
class ProbeLimits:
    """What a file must satisfy to enter the pipeline.

    Args:
        min_frames: frames needed at ``fps`` (the smallest frame bucket); shorter videos are
            skipped as ``too_short`` here, before any decoding.
        fps: target fps used to count available frames; ``None`` counts native frames.
        max_pixels: width x height above which a file is ``too_large`` (decoding an 8K video
            to train at 480p wastes minutes per clip and gigabytes of RAM).
        min_side: smallest accepted width or height (``too_small``).
        max_duration_seconds: longest accepted video (``too_long``); ``None`` for no limit.
        min_source_fps: lowest accepted average frame rate of a video (``low_fps``): a source
            slower than the target fps repeats frames (a 2-frames-in-500-s file is a frozen
            clip); ``None`` for no limit.
        integrity: decode every video fully once with FFmpeg's error detection
            (:func:`~wan_data.media.integrity.check_integrity`) and skip those with decode errors as
            ``corrupt_frames``: FFmpeg conceals damaged frames, so without it a flipped bit in
            an I-frame is served as smeared pixels. The verdict is remembered in the metadata
            cache per file version, so it runs once per file.
    """

    min_frames: int = 1
    fps: float | None = 16.0
    max_pixels: int = 4096 * 4096
    min_side: int = 8
    max_duration_seconds: float | None = None
    min_source_fps: float | None = None
    integrity: bool = False
    # With fps=None, every frame_stride-th native frame is a target frame.
    frame_stride: int = 1
    # The limits of each concept with options of its own (its frames or fps), by name.
    by_concept: tuple[tuple[str, ProbeLimits], ...] = ()

    def for_concept(self, name: str) -> ProbeLimits:
        """The limits a source of concept ``name`` is checked against (idempotent)."""
        for concept, limits in self.by_concept:
            if concept == name:
                return limits
        return self


def probe_metadata(source: Source) -> VideoMetadata:
    """Read the metadata of one file; raises what torchcodec / Pillow raise for bad files.

    The file is opened once, as a regular file (:func:`~wan_data.media.source_files.open_source`:
    a FIFO swapped in since collection would block the probe forever), and the open file is
    what torchcodec and Pillow read, so a name that is not valid UTF-8 works too.
    """
    fh = open_source(source.path, stage="probe")
    try:
        if source.media_type == "image":
            return _probe_image(source.path, fh)
        return _probe_video(source.path, fh)
    finally:
        fh.close()


def _open_probe_decoder(path: str, fh: SourceFile) -> Any:
    """torchcodec's exact-mode decoder of ``fh``, or a ``no_video_stream`` skip.

    A container without a video stream (an mp4 holding no track at all) fails exact mode's
    scan with "Could not seek file to pts=0", which says nothing about streams; the cheap
    approximate mode (header only) then tells whether there is a video stream at all.
    """
    from torchcodec.decoders import VideoDecoder

    try:
        return VideoDecoder(fh, seek_mode="exact", num_ffmpeg_threads=1)
    except RuntimeError as exc:
        if "could not seek" not in str(exc).lower() or not _lacks_video_stream(fh):
            raise
        raise SampleError(
            format_error(
                "file",
                path,
                "has no video stream (no track at all, or audio or data only)",
                _HINTS["no_video_stream"],
                stage="probe",
            ),
            reason="no_video_stream",
        ) from exc


def _lacks_video_stream(fh: SourceFile) -> bool:
    """Whether torchcodec's header-only open says the container has no video stream."""
    from torchcodec.decoders import VideoDecoder

    fh.seek(0)
    try:
        VideoDecoder(fh, seek_mode="approximate", num_ffmpeg_threads=1)
    except (RuntimeError, ValueError) as exc:
        found = any(f in str(exc).lower() for f in _NO_STREAM_MESSAGES)
        release_frames(exc)
        return found
    return False


def _probe_video(path: str, fh: SourceFile) -> VideoMetadata:
    decoder = _open_probe_decoder(path, fh)
    m = decoder.metadata
    decoder = None  # the metadata is all the probe needs: free FFmpeg's state now
    begin = float(m.begin_stream_seconds or 0.0)
    end = float(m.end_stream_seconds or begin)
    frames = int(m.num_frames or 0)
    header_frames = m.num_frames_from_header
    corrupted = False
    details = None
    if header_frames and frames < int(header_frames * _TRUNCATION_TOLERANCE):
        corrupted = True
        details = f"the content holds {frames} frames but the header declares {header_frames}"
    return VideoMetadata(
        width=int(m.width or 0),
        height=int(m.height or 0),
        fps=float(m.average_fps or 0.0),
        duration=max(0.0, end - begin),
        frame_count=frames,
        format=os.path.splitext(path)[1].lower().lstrip("."),
        codec=str(m.codec or ""),
        is_corrupted=corrupted,
        error_details=details,
        begin_seconds=begin,
        frame_count_from_header=int(header_frames) if header_frames is not None else None,
        media_type="video",
    )


def _probe_image(path: str, fh: SourceFile) -> VideoMetadata:
    """Size and format from the header, then a full decode: images are cheap to decode, and a
    truncated JPEG or PNG has an intact header, so a header-only probe would pass it to fail
    at every decode instead of once here (and be ledgered).

    An image whose header declares more pixels than Pillow's ``MAX_IMAGE_PIXELS`` is not
    decoded here (that is Pillow's own bound on a safe decode); beyond twice that Pillow
    refuses to open it (``DecompressionBombError``), which is ``too_large``, not a bug.
    """
    from PIL import Image

    try:
        img = Image.open(fh)
    except Image.DecompressionBombError as exc:
        raise SampleError(
            format_error(
                "image",
                path,
                f"declares too many pixels to decode safely ({exc})",
                _HINTS["too_large"],
                stage="probe",
            ),
            reason="too_large",
        ) from exc
    with img:
        fmt = (img.format or "").lower()
        w, h = img.size
        limit = Image.MAX_IMAGE_PIXELS
        try:
            # Width/height as displayed: a phone photo rotated by EXIF is trained the way it
            # looks. (Reading EXIF reads on through a PNG's chunks: it can meet the cut too.)
            orientation = img.getexif().get(0x0112, 1)
            if limit is None or w * h <= limit:
                img.load()
        except OSError as exc:
            _raise_if_truncated(path, exc)
            raise
        except SyntaxError as exc:
            # Pillow's PNG reader reports a damaged chunk as SyntaxError ("broken PNG file"):
            # the file's fault, not a wan_data bug (found by tests/faults/test_fuzz.py).
            raise SampleError(
                format_error(
                    "image",
                    path,
                    f"is damaged ({exc})",
                    "re-download or re-save the image, or remove it",
                    stage="probe",
                ),
                reason="invalid_data",
            ) from exc
        if orientation in (5, 6, 7, 8):
            w, h = h, w
    return VideoMetadata(
        width=w,
        height=h,
        fps=0.0,
        duration=0.0,
        frame_count=1,
        format=fmt,
        codec=fmt,
        media_type="image",
    )


def _raise_if_truncated(path: str, exc: OSError) -> None:
    """A ``truncated`` skip for Pillow's report of a cut-short image, which is an ``OSError``
    without ``errno`` ("image file is truncated"); an ``OSError`` with one (EIO, EMFILE) is
    the machine's, and is left to the policy."""
    if exc.errno is None and "truncated" in str(exc).lower():
        raise SampleError(
            format_error(
                "image",
                path,
                f"is cut short: its header is intact but decoding it fails ({exc})",
                _HINTS["truncated"],
                stage="probe",
            ),
            reason="truncated",
        ) from exc


def validate_metadata(meta: VideoMetadata, limits: ProbeLimits) -> tuple[str, str] | None:
    """The first rule ``meta`` breaks as ``(reason, rule text)``, or ``None`` when it is usable."""
    if meta.is_corrupted:
        return "truncated", f"is damaged: {meta.error_details}"
    if meta.width < limits.min_side or meta.height < limits.min_side:
        return "too_small", f"is below the minimum side of {limits.min_side} px"
    if meta.width * meta.height > limits.max_pixels:
        return "too_large", f"exceeds max_pixels={limits.max_pixels}"
    if meta.media_type == "image":
        return None
    if meta.frame_count <= 0:
        return "no_frames", "holds no decodable video frame"
    if limits.max_duration_seconds is not None and meta.duration > limits.max_duration_seconds:
        return "too_long", f"exceeds max_duration_seconds={limits.max_duration_seconds}"
    if limits.min_source_fps is not None and meta.fps < limits.min_source_fps:
        return "low_fps", (
            f"plays at {meta.fps:.3g} fps, below min_source_fps={limits.min_source_fps:g} "
            "(its frames would be repeated to reach the target rate)"
        )
    available = frames_available(meta, limits.fps, limits.frame_stride)
    unit = "native frames" if limits.fps is None else f"frames at {limits.fps:g} fps"
    if available < limits.min_frames:
        return "too_short", (
            f"gives {available} {unit} ({meta.duration:.2f} s), fewer than the smallest "
            f"frame bucket ({limits.min_frames})"
        )
    return None


def validate_file(source: Source, limits: ProbeLimits) -> ValidationResult:
    """Probe and validate one file, the verdict as a value (the spec's ``ValidationResult``).

    A convenience for checking single files (nothing in the pipeline calls it): it runs the
    :func:`probe` stage itself on ``source``, under a default :class:`ErrorPolicy`, so its
    verdict, ``reason`` and ``error_message`` are the ones the stage records for the file (a
    broken rule, a file that cannot be opened, and with ``limits.integrity`` concealed decode
    errors) and cannot drift from them; a transient error is retried and a skip logged as the
    stage does. ``metadata`` is also set for a file that opened but broke a rule (a
    ``too_short`` file's duration explains the verdict).

    Raises:
        FatalError: when the environment rather than the file fails (FFmpeg's libraries
            missing): the stage stops the run there too.
    """
    started = time.perf_counter()
    probed = MetadataCache()  # in memory: keeps the metadata of a file that broke a rule
    (out,) = probe([source], policy=_VALIDATION_POLICY, limits=limits, cache=probed)
    elapsed = time.perf_counter() - started
    if isinstance(out, Failed):
        return ValidationResult(
            is_valid=False,
            error_message=out.message,
            metadata=probed.get(source.path),
            processing_time=elapsed,
            reason=out.reason,
        )
    assert isinstance(out, Probed)
    return ValidationResult(
        True, metadata=out.metadata, processing_time=elapsed, warnings=out.warnings
    )


def _warnings(meta: VideoMetadata) -> tuple[str, ...]:
    out = []
    if (
        meta.frame_count_from_header is not None
        and meta.frame_count != meta.frame_count_from_header
    ):
        out.append(
            f"frame count from content ({meta.frame_count}) differs from the header "
            f"({meta.frame_count_from_header}); using the content"
        )
    return tuple(out)


_HINTS = {
    "truncated": "the file was cut short (interrupted download or copy); re-download it",
    "too_small": "use a larger source or lower min_side",
    "too_large": "downscale it first (ffmpeg -vf scale=-2:1080) or raise max_pixels",
    "no_frames": "the video stream is empty; re-encode or remove the file",
    "too_long": "split it or raise max_duration_seconds",
    "too_short": "lower the smallest entry of frames, lower fps, or remove the file",
    "low_fps": "lower min_source_fps to accept it, or interpolate it to a higher rate first",
    "no_video_stream": "the file has no video stream (audio only, or an empty container); "
    "remove it",
}
# What torchcodec's header-only open says of a container without a video stream.
_NO_STREAM_MESSAGES = ("best video stream is unknown", "no valid stream", "no video stream")


def probe(
    items: Iterable[Source | Failed],
    *,
    policy: ErrorPolicy,
    context: StageContext | None = None,
    limits: ProbeLimits | None = None,
    threads: int = 1,
    cache: MetadataCache | None = None,
) -> Iterator[Probed | Failed]:
    """Stage: ``Source`` -> ``Probed`` (valid files) or ``Failed`` (with the reason).

    Args:
        items: sources (and upstream failures, passed through).
        policy: decides skip / retry / fatal.
        context: counters and breakers.
        limits: validation rules.
        threads: probes run ahead in this many threads (torchcodec releases the GIL while
            scanning: 1.8x on two cores); results are still consumed in input order, so the
            output order and every count are the same as with one thread.
        cache: metadata of unchanged files (same size and mtime) is taken from here, and
            each path is probed once even when listed under several keys (concept repeats);
            ``None`` probes every source.
    """
    lim = limits if limits is not None else ProbeLimits()
    ahead = _Prefetcher(threads, cache, lim if lim.integrity else None)
    tries = _ErrnoTries(policy.max_attempts)

    def one(source: Source) -> list[Probed]:
        try:
            meta, verdict = ahead.take(source)
        except RuntimeError as exc:
            fault = tries.file_fault(source, exc)
            if fault is not None:
                raise fault from exc
            raise
        broken = validate_metadata(meta, lim.for_concept(source.concept))
        if broken is not None:
            reason, rule = broken
            raise SampleError(
                format_error("file", source.path, rule, _HINTS.get(reason, ""), stage="probe"),
                reason=reason,
            )
        if verdict is not None and not verdict.ok:
            raise integrity_error(source.path, verdict)
        return [Probed(source=source, metadata=meta, warnings=_warnings(meta))]

    yield from map_stage(
        ahead.feed(items), one, stage="probe", accepts=Source, policy=policy, context=context
    )


class _ErrnoTries:
    """FFmpeg's EIO/ENOMEM at probe: the machine's fault until proved the file's.

    The policy retries such an error as a machine fault (``io_transient``). This counts the
    attempts at one source (a retry calls the stage function again with the same item) and
    the errno text of each; when the last attempt the policy makes fails with the same text
    as every one before, :func:`~wan_data.media.ffmpeg_errno.file_fault` asks the machine (a
    full re-read of the file, an allocation) whether the file is to blame.
    """

    def __init__(self, max_attempts: int) -> None:
        self.max_attempts = max_attempts
        self.source: Source | None = None
        self.errnos: list[str | None] = []

    def file_fault(self, source: Source, exc: RuntimeError) -> SampleError | None:
        if source is not self.source:
            self.source, self.errnos = source, []
        self.errnos.append(ffmpeg_errno(exc))
        if len(self.errnos) < self.max_attempts or self.errnos[0] is None:
            return None
        if any(name != self.errnos[0] for name in self.errnos):
            return None
        return file_fault(source.path, exc, stage="probe", attempts=len(self.errnos))


class Probe(Stage[Source, Probed]):
    """Stage ``probe``: ``Source → Probed`` (metadata read and validated) or ``Failed``.

    Options are bound here; see :func:`probe` for what each means.
    """

    name = "probe"

    def __init__(
        self,
        limits: ProbeLimits | None = None,
        *,
        threads: int = 1,
        cache: MetadataCache | None = None,
    ) -> None:
        self.limits = limits if limits is not None else ProbeLimits()
        self.threads = threads
        self._cache = cache  # not part of identity(): a cache changes speed, never results

    def __call__(
        self, items: Iterable[Source | Failed], context: StageContext | None = None
    ) -> Iterator[Probed | Failed]:
        ctx = context if context is not None else StageContext()
        return probe(
            items,
            policy=ctx.policy,
            context=ctx,
            limits=self.limits,
            threads=self.threads,
            cache=self._cache,
        )

    def identity(self) -> str:
        return f"probe:v{self.version}:{self.limits!r}"


class _Prefetcher:
    """Probes sources a bounded distance ahead of the consumer, in a thread pool.

    The first attempt at a source uses the prefetched result (or re-raises its exception, so
    the policy classifies it as usual); a retry probes again in the calling thread.
    """

    def __init__(
        self, threads: int, cache: MetadataCache | None, integrity: ProbeLimits | None = None
    ) -> None:
        self.threads = max(1, threads)
        self.cache = cache
        self.integrity = integrity  # the limits, when files are also checked for decode errors
        self.pending: dict[str, Future[ProbeResult]] = {}
        self.ready: dict[str, ProbeResult] = {}

    def load(self, source: Source) -> ProbeResult:
        meta = self.cache.get(source.path) if self.cache is not None else None
        if meta is None:
            meta = probe_metadata(source)
            if self.cache is not None:
                self.cache.put(source.path, meta)
        return meta, self._verdict(source, meta)

    def _checked(self, meta: VideoMetadata, concept: str) -> bool:
        """Whether the integrity check applies: to videos the metadata rules (of the source's
        concept) accept (a file they reject is not decoded for nothing)."""
        limits = self.integrity
        return (
            limits is not None
            and meta.media_type == "video"
            and validate_metadata(meta, limits.for_concept(concept)) is None
        )

    def _verdict(self, source: Source, meta: VideoMetadata) -> Verdict | None:
        """The integrity verdict of a checked video (remembered per file version), else None."""
        if not self._checked(meta, source.concept):
            return None
        verdict = self.cache.get_integrity(source.path) if self.cache is not None else None
        if verdict is None:
            result = check_integrity(source.path)
            verdict = Verdict(result.ok, result.errors)
            if self.cache is not None:
                self.cache.put_integrity(source.path, verdict)
        return verdict

    def _cached(self, source: Source) -> ProbeResult | None:
        """What the cache answers in a stat, or None (then a thread probes)."""
        meta = self.cache.get(source.path) if self.cache is not None else None
        if meta is None:
            return None
        if not self._checked(meta, source.concept):
            return meta, None
        assert self.cache is not None
        verdict = self.cache.get_integrity(source.path)
        return (meta, verdict) if verdict is not None else None

    def take(self, source: Source) -> ProbeResult:
        ready = self.ready.pop(source.key, None)
        if ready is not None:
            return ready
        future = self.pending.pop(source.key, None)
        if future is None:
            return self.load(source)
        return future.result()

    def feed(self, items: Iterable[Source | Failed]) -> Iterator[Source | Failed]:
        if self.threads == 1:
            yield from items
            return
        window: collections.deque[Source | Failed] = collections.deque()
        with ThreadPoolExecutor(self.threads, thread_name_prefix="wan_data_probe") as pool:
            try:
                for item in items:
                    if isinstance(item, Source):
                        # A warm metadata cache answers in a stat: no thread round trip.
                        cached = self._cached(item)
                        if cached is not None:
                            self.ready[item.key] = cached
                        else:
                            self.pending[item.key] = pool.submit(self.load, item)
                    window.append(item)
                    if len(window) > 4 * self.threads:
                        yield window.popleft()
                while window:
                    yield window.popleft()
            finally:
                for future in self.pending.values():
                    future.cancel()
                self.pending.clear()
                self.ready.clear()
