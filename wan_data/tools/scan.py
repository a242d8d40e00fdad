"""Dataset doctor: what training would make of every file, found before training starts.

``scan_dataset`` runs the construction stages of :class:`~wan_data.WanVideoDataset` (collect,
probe in threads, bucket assignment through ``build_samples``) with the same functions and the
same option defaults, so a file the scan calls good is a file training plans a sample for, in
the same bucket, and a file it calls bad is one training skips, for the same reason.

It does not construct a ``WanVideoDataset`` because the scan needs three things the dataset
does not expose: a progress bar over the probe (a large dataset takes minutes to probe), the
metadata of files rejected by validation (a ``too_short`` file's duration explains the verdict),
and every bad file even when they are the majority: the dataset's circuit breaker would stop at
the first window with more than half of the files failing, so the scan turns it off and instead
reports whether training would trip it. ``tests/test_scan.py`` checks that scan and dataset
agree file by file, which is what keeps the two from drifting apart.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from wan_data.config.options import check_sample_options, resolve_shape
from wan_data.errors import ConfigError, PipelineHealthError, format_error
from wan_data.failures.breaker import BreakerConfig, CircuitBreaker
from wan_data.failures.mechanism import StageContext
from wan_data.failures.policy import ErrorPolicy, release_frames
from wan_data.index.metadata_cache import MetadataCache
from wan_data.items import Failed, Probed, Source, VideoMetadata
from wan_data.media.buckets import BucketSet, make_bucket_set
from wan_data.media.integrity import FfmpegNotFoundError, find_ffmpeg
from wan_data.media.sampling import check_frame_buckets, frames_available, split_unused_frames
from wan_data.planning.batches import PlanSample, build_samples
from wan_data.stages.collect import RootsLike, check_concepts, collect, concepts_from
from wan_data.stages.decode import DecodeOptions
from wan_data.stages.probe import ProbeLimits, probe

__all__ = [
    "UNSET",
    "BucketCount",
    "ScanReport",
    "ScanRow",
    "format_scan_table",
    "frames_available",
    "scan_dataset",
    "split_unused_frames",
]

logger = logging.getLogger("wan_data")

SCAN_VERSION = 2
"""Version of the ``as_dict()`` layout; bumped when a key changes meaning.

2: ``frames_trimmed`` / ``frames_trimmed_total`` (which counted the tails ``head`` sampling
never reads as trimming) split into ``frames_trimmed_to_bucket`` and
``frames_unused_by_sampling``.
"""

# Sampling modes whose clips are consecutive windows from the start, the same every epoch: the
# frames they leave out are one tail, never trained on. ``random`` windows move every epoch
# and ``uniform`` ones spread over the video, so their unused frames are not counted.
_FIXED_WINDOW_MODES = ("head", "chunks")

# WanVideoDataset's defaults when neither a preset nor the option is given.

# A content average this far from the header's rate means irregular frame spacing: a constant
# rate file agrees to rounding (29.97 vs 30000/1001), a variable one differs by whole frames.
_VFR_TOLERANCE = 0.01


class _Unset:
    """Marks ``fps`` left to the preset: ``None`` already means "native frames"."""

    def __repr__(self) -> str:
        return "<preset default>"


UNSET: Any = _Unset()
"""Default of ``scan_dataset(fps=...)``: take the preset's fps (16 without a preset)."""

Resolution = tuple[int, int] | Sequence[tuple[int, int]]


@dataclass(frozen=True)
class ScanRow:
    """The verdict on one source, with what the probe learned about it.

    Attributes:
        path: the file.
        key: the source key (a concept with ``repeats=n`` lists a file under n keys, because
            training samples it n times).
        status: ``"good"`` (training plans samples for it) or ``"bad"`` (training skips it).
        media_type: ``"video"``, ``"image"``, or ``None`` when collect rejected the entry.
        stage, reason, error_type, message: why a bad file is skipped, exactly as
            ``WanVideoDataset.report()["skipped"]`` records it; ``None`` for good files.
        width, height, fps, duration_seconds, num_frames: probed metadata (displayed size;
            content frame count; fps and duration ``None`` for images). Also filled for files
            that opened but failed validation (``too_short``, ``truncated``...).
        vfr: irregular frame spacing (``None``: not a good video, or not checked).
        has_caption: whether collect found at least one caption candidate.
        bucket: ``(width, height, frames)`` every clip of the file is trained at.
        clips: samples per epoch from this source.
        frames_available: frames at the target fps (native frames with ``fps=None``).
        frames_trimmed_to_bucket: frames after the last clip that a clip of up to the largest
            frame bucket would have covered: what rounding the clip length down to a 4k+1
            frame bucket costs (a 40-frame video with buckets 17, 33, 81 trains 33: 7).
        frames_unused_by_sampling: frames after the last clip that no allowed clip length
            reaches: the sampling mode leaves them out (``head``: everything after its one
            window of the largest bucket; ``chunks``: the remainder after the last whole
            chunk). The two add up to the frames no clip uses; see
            :func:`split_unused_frames`. Both ``None`` for ``random``/``uniform`` sampling,
            whose windows are not consecutive from the start (``random`` ones move every
            epoch), so what they leave out is not one tail lost for good.
        warnings: the probe's warnings (a header/content frame-count mismatch...).
    """

    path: str
    key: str
    status: str
    media_type: str | None = None
    stage: str | None = None
    reason: str | None = None
    error_type: str | None = None
    message: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration_seconds: float | None = None
    num_frames: int | None = None
    vfr: bool | None = None
    has_caption: bool | None = None
    bucket: tuple[int, int, int] | None = None
    clips: int = 0
    frames_available: int | None = None
    frames_trimmed_to_bucket: int | None = None
    frames_unused_by_sampling: int | None = None
    warnings: tuple[str, ...] = ()

    @property
    def good(self) -> bool:
        return self.status == "good"

    def as_dict(self) -> dict[str, Any]:
        """JSON-native values only (lists, not tuples), so a JSON round trip is the identity."""
        out = dataclasses.asdict(self)
        out["bucket"] = (
            None
            if self.bucket is None
            else {"width": self.bucket[0], "height": self.bucket[1], "frames": self.bucket[2]}
        )
        out["warnings"] = list(self.warnings)
        return out


@dataclass(frozen=True)
class BucketCount:
    """How many samples (and distinct sources) training puts in one bucket per epoch."""

    width: int
    height: int
    frames: int
    samples: int
    files: int

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height}, {self.frames} frames"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ScanReport:
    """Everything ``wan-data scan`` found; ``as_dict()`` is its JSON form.

    Totals and summaries are computed from ``rows`` on demand, so they can never disagree with
    the per-file verdicts. ``samples`` and ``decode_options`` are kept (not serialised) so that
    :func:`wan_data.tools.plots.contact_sheet` decodes exactly the clips training would.

    Attributes:
        roots: the scanned roots as given.
        options: the resolved training options the verdicts hold for.
        rows: one :class:`ScanRow` per source, sorted by path.
        buckets: samples per bucket, most samples first.
        breaker: the circuit-breaker message training would stop with, ``None`` when it would
            not trip.
        seconds: wall time of the scan.
    """

    roots: list[str]
    options: dict[str, Any]
    rows: list[ScanRow]
    buckets: list[BucketCount]
    breaker: str | None = None
    seconds: float = 0.0
    samples: list[PlanSample] = field(default_factory=list, repr=False, compare=False)
    decode_options: DecodeOptions | None = field(default=None, repr=False, compare=False)

    @property
    def good(self) -> list[ScanRow]:
        return [r for r in self.rows if r.good]

    @property
    def bad(self) -> list[ScanRow]:
        return [r for r in self.rows if not r.good]

    @property
    def bad_by_reason(self) -> dict[str, int]:
        counts = Counter(str(r.reason) for r in self.bad)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def vfr_files(self) -> list[str]:
        return [r.path for r in self.good if r.vfr]

    @property
    def low_fps_files(self) -> list[str]:
        """Good videos slower than the target fps: training repeats some of their frames
        (``min_source_fps`` skips them instead)."""
        target = self.options.get("fps")
        if not target:
            return []
        return [
            r.path
            for r in self.good
            if r.media_type == "video" and r.fps is not None and r.fps < float(target) * 0.999
        ]

    @property
    def missing_captions(self) -> list[str]:
        """Good files that train with an empty caption (bad files never train)."""
        return [r.path for r in self.good if r.has_caption is False]

    @property
    def counts_unused_frames(self) -> bool:
        """Whether the sampling mode takes consecutive windows from the start (``head``,
        ``chunks``), so that the frames it leaves out are one tail, lost for good, and counted."""
        return self.options.get("sampling") in _FIXED_WINDOW_MODES

    @property
    def frames_trimmed_to_bucket(self) -> int | None:
        """Sum over the files; equals ``ds.bucket_report()["frames_trimmed_to_bucket"]``."""
        if not self.counts_unused_frames:
            return None
        return sum(r.frames_trimmed_to_bucket or 0 for r in self.rows)

    @property
    def frames_unused_by_sampling(self) -> int | None:
        """Sum over the files; equals ``ds.bucket_report()["frames_unused_by_sampling"]``."""
        if not self.counts_unused_frames:
            return None
        return sum(r.frames_unused_by_sampling or 0 for r in self.rows)

    def totals(self) -> dict[str, Any]:
        good = self.good
        return {
            "files": len(self.rows),
            "good": len(good),
            "bad": len(self.rows) - len(good),
            "good_videos": sum(r.media_type == "video" for r in good),
            "good_images": sum(r.media_type == "image" for r in good),
            "samples": sum(b.samples for b in self.buckets),
            "bad_by_reason": self.bad_by_reason,
        }

    def summary(self) -> dict[str, Any]:
        """Min / median / max of the good files: duration and fps of videos, size of all."""
        good = self.good
        videos = [r for r in good if r.media_type == "video"]
        sized = sorted(
            (r for r in good if r.width and r.height),
            key=lambda r: ((r.width or 0) * (r.height or 0), r.width or 0),
        )
        resolution: dict[str, Any] = {"count": len(sized)}
        if sized:
            for name, row in (
                ("min", sized[0]),
                ("median", sized[(len(sized) - 1) // 2]),
                ("max", sized[-1]),
            ):
                resolution[name] = f"{row.width}x{row.height}"
        return {
            "duration_seconds": _stats(r.duration_seconds for r in videos),
            "fps": _stats(r.fps for r in videos),
            "width": _stats(r.width for r in good),
            "height": _stats(r.height for r in good),
            "resolution": resolution,
        }

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``wan-data scan --json``); ``json.loads(json.dumps(d)) == d``."""
        return {
            "version": SCAN_VERSION,
            "roots": list(self.roots),
            "options": dict(self.options),
            "totals": self.totals(),
            "summary": self.summary(),
            "buckets": [b.as_dict() for b in self.buckets],
            "frames_trimmed_to_bucket": self.frames_trimmed_to_bucket,
            "frames_unused_by_sampling": self.frames_unused_by_sampling,
            "vfr": self.vfr_files,
            "low_fps": self.low_fps_files,
            "missing_captions": self.missing_captions,
            "breaker": self.breaker,
            "seconds": round(self.seconds, 3),
            "files": [r.as_dict() for r in self.rows],
        }


def _stats(values: Iterable[float | int | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    if not present:
        return {"count": 0, "min": None, "median": None, "max": None}
    return {
        "count": len(present),
        "min": min(present),
        "median": round(float(statistics.median(present)), 3),
        "max": max(present),
    }


def scan_dataset(
    roots: RootsLike,
    *,
    preset: str | None = None,
    frames: Sequence[int] | int | None = None,
    fps: float | None = UNSET,
    resolution: Resolution | None = None,
    step: int | None = None,
    max_aspect: float = 4.0,
    no_upscale: bool = False,
    sampling: str = "head",
    clips_per_video: int = 1,
    crop: str = "center",
    seed: int = 0,
    missing_caption: str = "empty",
    caption_extension: str = ".txt",
    allow_outside_root: bool = False,
    max_pixels: int = 4096 * 4096,
    max_duration_seconds: float | None = None,
    min_source_fps: float | None = None,
    strict: bool = False,
    policy: ErrorPolicy | None = None,
    breaker_threshold: float | None = 0.5,
    breaker_min_items: int = 20,
    threads: int | None = None,
    metadata_cache: str | os.PathLike[str] | None = None,
    check_vfr: bool = True,
    progress: bool = True,
) -> ScanReport:
    """Tell, file by file, what ``WanVideoDataset(roots, **same options)`` would do.

    Options mean what they mean for :class:`~wan_data.WanVideoDataset` (same names, same
    defaults, the preset filling ``frames``, ``fps``, ``resolution`` and ``step``). Only the
    options that change verdicts or buckets are taken; ``crop`` and ``seed`` only matter for
    the contact sheet.

    Args:
        roots: folders, ``.jsonl``/``.csv`` metadata files or :class:`Concept` objects.
        breaker_threshold, breaker_min_items: the training run's circuit breaker, simulated
            over the verdicts (the scan itself never stops early); ``None`` disables it.
        threads: probe threads (``None``: the cores), also used for the VFR check.
        metadata_cache: the dataset's metadata cache file; a scan fills it, so training
            started afterwards with the same file probes nothing.
        strict: also decode every video fully with FFmpeg's error detection (the dataset's
            ``integrity_check``) and call files with concealed decode errors bad
            (``corrupt_frames``); without it the scan is a metadata-speed check and cannot see
            damaged frames. Verdicts are kept in ``metadata_cache`` when given.
        check_vfr: read each good video's header frame rate to flag variable frame rates
            (one header read per video, no scan: the probe does not keep the header's rate).
        progress: a tqdm bar on stderr while probing.

    Raises:
        ConfigError: every configuration problem at once (as the dataset raises them).
    """
    started = time.perf_counter()
    shape = resolve_shape(
        preset, frames=frames, fps=fps, resolution=resolution, step=step, unset=UNSET
    )
    problems: list[str] = list(shape.problems)
    frame_list, fps, resolution, step = shape.frames, shape.fps, shape.resolution, shape.step
    problems += check_concepts(roots)
    problems += check_frame_buckets(frame_list)
    bucket_set: BucketSet | None = None
    try:
        bucket_set = make_bucket_set(resolution, step=step, max_aspect=max_aspect)
    except ConfigError as exc:
        problems += list(exc.problems)
    problems += _check_options(
        fps=fps,
        sampling=sampling,
        clips_per_video=clips_per_video,
        crop=crop,
        seed=seed,
        missing_caption=missing_caption,
        max_pixels=max_pixels,
        max_aspect=max_aspect,
        threads=threads,
    )
    breaker_config: BreakerConfig | None = None
    if breaker_threshold is not None:
        try:
            breaker_config = BreakerConfig(
                threshold=breaker_threshold,
                min_items=breaker_min_items,
                window=max(100, breaker_min_items),
            )
        except ConfigError as exc:
            problems += list(exc.problems)
    if strict:
        try:
            find_ffmpeg()
        except FfmpegNotFoundError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(problems)
    assert bucket_set is not None
    concepts = concepts_from(roots)
    frames_sorted = tuple(sorted(frame_list))
    limits = ProbeLimits(
        min_frames=min(frames_sorted),
        fps=fps,
        max_pixels=max_pixels,
        max_duration_seconds=max_duration_seconds,
        min_source_fps=min_source_fps,
        integrity=strict,
    )
    options = DecodeOptions(
        frames=frames_sorted,
        fps=fps,
        buckets=bucket_set,
        sampling=sampling,
        clips_per_video=clips_per_video,
        crop=crop,
        seed=seed,
        no_upscale=no_upscale,
    )
    policy = policy if policy is not None else ErrorPolicy()
    workers = threads if threads is not None else (os.cpu_count() or 1)
    # Every verdict is wanted, so the scan's own breaker stays off; training's is simulated.
    context = StageContext(breaker_config=BreakerConfig(enabled=False))

    sources: list[Source] = []
    failures: list[Failed] = []
    for item in collect(
        concepts,
        policy=policy,
        context=context,
        missing_caption=missing_caption,
        caption_extension=caption_extension,
        allow_outside_root=allow_outside_root,
    ):
        if isinstance(item, Source):
            sources.append(item)
        else:
            failures.append(item)

    cache = MetadataCache(metadata_cache)
    probed: list[Probed] = []
    probe_order: list[Probed | Failed] = []
    samples: list[PlanSample] = []
    bar = _progress_bar(len(sources), enabled=progress)

    def watch(stream: Iterable[Probed | Failed]) -> Iterator[Probed | Failed]:
        # Probe yields one result per source, in input order: counting results (not submitted
        # sources, which run ahead in threads) makes the bar reach 100 % when probing is done.
        for item in stream:
            probe_order.append(item)
            if isinstance(item, Probed):
                probed.append(item)
            if bar is not None:
                bar.update(1)
            yield item

    try:
        stream = probe(
            sources, policy=policy, context=context, limits=limits, threads=workers, cache=cache
        )
        for planned in build_samples(
            watch(stream), options=options, policy=policy, context=context
        ):
            if isinstance(planned, Failed):
                failures.append(planned)
            else:
                samples.append(planned)
    finally:
        if bar is not None:
            bar.close()
        cache.save()

    header_fps = _header_rates(probed, workers) if check_vfr else {}
    rows = _rows(sources, failures, probed, samples, cache, options, header_fps, check_vfr)
    breaker = None
    if breaker_config is not None:
        breaker = _simulate_breaker(probe_order, failures, breaker_config)
    report = ScanReport(
        roots=[os.fspath(c.root) for c in concepts],
        options={
            "preset": preset,
            "frames": list(frames_sorted),
            "fps": fps,
            "resolutions": [list(t) for t in bucket_set.targets],
            "step": step,
            "max_aspect": max_aspect,
            "no_upscale": no_upscale,
            "sampling": sampling,
            "clips_per_video": clips_per_video,
            "crop": crop,
            "seed": seed,
            "missing_caption": missing_caption,
            "max_pixels": max_pixels,
            "max_duration_seconds": max_duration_seconds,
            "min_source_fps": min_source_fps,
            "strict": strict,
        },
        rows=rows,
        buckets=_bucket_counts(samples),
        breaker=breaker,
        seconds=time.perf_counter() - started,
        samples=samples,
        decode_options=options,
    )
    logger.info(
        "scan: %d file(s), %d good, %d bad, %d sample(s) in %d bucket(s), %.1f s",
        len(rows),
        len(report.good),
        len(report.bad),
        len(samples),
        len(report.buckets),
        report.seconds,
    )
    return report


def _progress_bar(total: int, *, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="wan-data scan: probe", unit="file", file=sys.stderr)


def _check_options(**o: Any) -> list[str]:
    """The checks ``WanVideoDataset`` makes of the options the scan shares with it."""
    problems = check_sample_options(
        **{k: o[k] for k in ("fps", "sampling", "clips_per_video", "crop", "missing_caption")},
        **{k: o[k] for k in ("max_aspect", "max_pixels", "seed")},
    )
    t = o["threads"]
    if t is not None and (not isinstance(t, int) or isinstance(t, bool) or t < 1):
        problems.append(format_error("threads", t, "must be an int >= 1 or None"))
    return problems


def _header_rates(probed: Sequence[Probed], threads: int) -> dict[str, float | None]:
    paths = sorted({p.path for p in probed if p.metadata.media_type == "video"})
    if not paths:
        return {}
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="wan_data_scan") as pool:
        return dict(zip(paths, pool.map(_header_fps, paths), strict=True))


def _header_fps(path: str) -> float | None:
    """The container's declared average frame rate (header only: no scan, no decoding)."""
    from torchcodec.decoders import VideoDecoder

    try:
        rate = VideoDecoder(path, seek_mode="approximate", num_ffmpeg_threads=1).metadata
        value = rate.average_fps_from_header
    except Exception as exc:  # a header that opened for the probe but not now: unknown
        logger.debug("scan: header frame rate of %s unreadable: %s", path, exc)
        release_frames(exc)  # its traceback holds the decoder: free FFmpeg's threads now
        return None
    return float(value) if value else None


def _is_vfr(meta: VideoMetadata, header: float | None) -> bool | None:
    if header is None or meta.fps <= 0:
        return None
    return abs(meta.fps - header) > _VFR_TOLERANCE * header


def _rows(
    sources: Sequence[Source],
    failures: Sequence[Failed],
    probed: Sequence[Probed],
    samples: Sequence[PlanSample],
    cache: MetadataCache,
    options: DecodeOptions,
    header_fps: dict[str, float | None],
    check_vfr: bool,
) -> list[ScanRow]:
    by_key = {s.key: s for s in sources}
    failed = {f.key: f for f in failures}
    good = {p.key: p for p in probed if p.key not in failed}
    clips: dict[str, list[PlanSample]] = {}
    for sample in samples:
        clips.setdefault(sample.probed.key, []).append(sample)
    counts_unused = options.sampling in _FIXED_WINDOW_MODES
    largest = max(options.frames)
    rows: list[ScanRow] = []
    for key, item in failed.items():
        source = by_key.get(key)
        # Files that opened but broke a rule (too_short, truncated...) were probed: their
        # metadata is in the cache the probe filled, so it costs a stat, not a re-probe.
        meta = cache.get(item.path) if source is not None else None
        rows.append(
            ScanRow(
                path=item.path,
                key=key,
                status="bad",
                media_type=source.media_type if source is not None else None,
                stage=item.stage,
                reason=item.reason,
                error_type=item.error_type,
                message=item.message,
                has_caption=bool(source.captions) if source is not None else None,
                **_meta_fields(meta),
            )
        )
    for key, p in good.items():
        meta = p.metadata
        own = clips.get(key, [])
        available = frames_available(meta, options.fps)
        trimmed: int | None = None
        unused: int | None = None
        if meta.media_type == "image":
            trimmed = unused = 0
        elif counts_unused:
            trimmed, unused = split_unused_frames(
                available, [s.bucket.frames for s in own], largest
            )
        bucket = own[0].bucket if own else None
        rows.append(
            ScanRow(
                path=p.path,
                key=key,
                status="good",
                media_type=meta.media_type,
                vfr=(
                    _is_vfr(meta, header_fps.get(p.path))
                    if check_vfr and meta.media_type == "video"
                    else None
                ),
                has_caption=bool(p.source.captions),
                bucket=(bucket.width, bucket.height, bucket.frames) if bucket else None,
                clips=len(own),
                frames_available=available,
                frames_trimmed_to_bucket=trimmed,
                frames_unused_by_sampling=unused,
                warnings=tuple(p.warnings),
                **_meta_fields(meta),
            )
        )
    rows.sort(key=lambda r: (r.path, r.key))
    return rows


def _meta_fields(meta: VideoMetadata | None) -> dict[str, Any]:
    if meta is None:
        return {}
    video = meta.media_type == "video"
    return {
        "width": meta.width,
        "height": meta.height,
        "fps": round(meta.fps, 3) if video else None,
        "duration_seconds": round(meta.duration, 3) if video else None,
        "num_frames": meta.frame_count,
    }


def _bucket_counts(samples: Sequence[PlanSample]) -> list[BucketCount]:
    per_bucket: dict[tuple[int, int, int], list[PlanSample]] = {}
    for s in samples:
        per_bucket.setdefault((s.bucket.width, s.bucket.height, s.bucket.frames), []).append(s)
    counts = [
        BucketCount(w, h, f, len(group), len({s.probed.key for s in group}))
        for (w, h, f), group in per_bucket.items()
    ]
    counts.sort(key=lambda b: (-b.samples, b.width / b.height, b.width * b.height, b.frames))
    return counts


def _simulate_breaker(
    probe_order: Sequence[Probed | Failed],
    failures: Sequence[Failed],
    config: BreakerConfig,
) -> str | None:
    """The message training's breaker would stop with, replaying the outcomes in stage order.

    Training probes and buckets lazily in one stream, each stage with its own breaker; the
    probe stage sees each source's outcome, the bucket stage each probed file's.
    """
    bucket_failed = {f.key: f for f in failures if f.stage == "bucket"}
    probe_breaker = CircuitBreaker("probe", config=config)
    bucket_breaker = CircuitBreaker("bucket", config=config)
    try:
        for item in probe_order:
            if isinstance(item, Failed):
                probe_breaker.record_failure(item)
                continue
            probe_breaker.record_success()
            if item.key in bucket_failed:
                bucket_breaker.record_failure(bucket_failed[item.key])
            else:
                bucket_breaker.record_success()
    except PipelineHealthError as exc:
        return str(exc)
    return None


# -- the text table ------------------------------------------------------------------------------


def format_scan_table(report: ScanReport, max_rows: int = 20) -> str:
    """A plain-text summary for the terminal and for docs; long lists stop after ``max_rows``.

    Sections: the verdict counts (good, then bad by reason), min/median/max of the good files,
    the bucket table, frames lost to 4k+1 trimming and frames the sampling mode leaves unused,
    variable-frame-rate files, files missing captions, and the bad files with their reasons.
    The JSON (``as_dict``) has everything.
    """
    opts = report.options
    totals = report.totals()
    lines: list[str] = []
    fps = "native fps" if opts["fps"] is None else f"{opts['fps']:g} fps"
    res = ", ".join(f"{w}x{h}" for w, h in opts["resolutions"])
    preset = f"preset {opts['preset']}, " if opts["preset"] else ""
    lines.append(
        f"scanned {', '.join(report.roots)}: {totals['files']} file(s), {totals['good']} good, "
        f"{totals['bad']} bad, {report.seconds:.1f} s"
    )
    lines.append(
        f"options: {preset}frames {opts['frames']} at {fps}, resolution {res}, step "
        f"{opts['step']}, sampling {opts['sampling']}"
    )
    lines.append("")
    lines.append(f"{'verdict':<24}{'files':>7}")
    lines.append(f"{'good':<24}{totals['good']:>7}")
    lines.append(f"{'  videos / images':<24}{totals['good_videos']:>7} / {totals['good_images']}")
    for reason, count in totals["bad_by_reason"].items():
        lines.append(f"{'bad: ' + reason:<24}{count:>7}")
    lines.append("")

    summary = report.summary()
    lines.append(f"{'good files':<18}{'min':>10}{'median':>10}{'max':>10}{'count':>7}")
    for label, key, fmt in (
        ("duration (s)", "duration_seconds", "{:.2f}"),
        ("fps", "fps", "{:.3g}"),
        ("width", "width", "{:d}"),
        ("height", "height", "{:d}"),
    ):
        s = summary[key]
        cells = ["-" if s[k] is None else _fmt(fmt, s[k]) for k in ("min", "median", "max")]
        lines.append(f"{label:<18}{cells[0]:>10}{cells[1]:>10}{cells[2]:>10}{s['count']:>7}")
    r = summary["resolution"]
    if r["count"]:
        lines.append(
            f"{'size (by area)':<18}{r['min']:>10}{r['median']:>10}{r['max']:>10}{r['count']:>7}"
        )
    lines.append("")

    lines.append(
        f"buckets: {totals['samples']} sample(s) per epoch in {len(report.buckets)} bucket(s)"
    )
    if report.buckets:
        top = max(b.samples for b in report.buckets)
        lines.append(f"  {'width x height':<16}{'frames':>7}{'samples':>9}{'files':>7}")
        for b in report.buckets[:max_rows]:
            bar = "#" * max(1, round(24 * b.samples / top))
            size = f"{b.width}x{b.height}"
            lines.append(f"  {size:<16}{b.frames:>7}{b.samples:>9}{b.files:>7}  {bar}")
        _more(lines, len(report.buckets), max_rows, "bucket(s)")
    good_videos = totals["good_videos"]
    trimmed, unused = report.frames_trimmed_to_bucket, report.frames_unused_by_sampling
    if trimmed is None or unused is None:
        lines.append(
            f"frames lost to 4k+1 trimming / unused by sampling: not counted for "
            f"{opts['sampling']} sampling (only head and chunks keep their windows in place)"
        )
    else:
        for label, count in (
            ("frames lost to 4k+1 trimming (clip rounded down to a frame bucket)", trimmed),
            (f"frames unused by {opts['sampling']} sampling (beyond the largest bucket)", unused),
        ):
            per_video = count / good_videos if good_videos else 0.0
            lines.append(f"{label}: {count} ({per_video:.1f} per good video)")
    lines.append("")

    for title, paths in (
        ("variable frame rate", report.vfr_files),
        ("low frame rate (frames repeated to reach the target fps)", report.low_fps_files),
        ("missing captions (train with an empty caption)", report.missing_captions),
    ):
        lines.append(f"{title}: {len(paths)}")
        for path in paths[:max_rows]:
            lines.append(f"  {_short(path, report.roots)}")
        _more(lines, len(paths), max_rows, "file(s)")
    bad = report.bad
    lines.append(f"bad files (training skips them): {len(bad)}")
    for row in bad[:max_rows]:
        lines.append(f"  {row.reason:<16}{_short(row.path, report.roots)}")
        why = _why(row)
        if why:
            lines.append(f"  {'':<16}  {why}")
    _more(lines, len(bad), max_rows, "file(s)")
    if report.breaker:
        lines.append("")
        lines.append("training would stop here (circuit breaker):")
        lines.extend(f"  {line}" for line in report.breaker.splitlines())
    return "\n".join(lines)


def _fmt(fmt: str, value: float | int) -> str:
    if fmt == "{:d}":
        return str(round(value))
    return fmt.format(value)


def _more(lines: list[str], total: int, shown: int, what: str) -> None:
    if total > shown:
        lines.append(f"  ... and {total - shown} more {what} (full list: --json)")


def _short(path: str, roots: Sequence[str]) -> str:
    """The path relative to the root it was found under (the reader knows the roots)."""
    for root in roots:
        base = root if os.path.isdir(root) else os.path.dirname(root)
        base = os.path.abspath(base)
        if path.startswith(base + os.sep):
            return path[len(base) + 1 :]
    return path


def _why(row: ScanRow, width: int = 110) -> str:
    """The rule part of a skip message: without the file name and the stage/file suffix."""
    text = row.message or ""
    if text.endswith("]") and " [" in text:
        text = text[: text.rindex(" [")]
    text = re.sub(r"^(\w+ of )?file \('[^']*'\) ", "", text)
    text = text.replace(row.path, os.path.basename(row.path))
    return text if len(text) <= width else text[: width - 3] + "..."
