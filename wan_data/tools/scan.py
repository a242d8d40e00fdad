"""Dataset doctor: what training would make of every file, found before training starts.

``scan_dataset`` runs the construction of :class:`~wan_data.WanVideoDataset` itself
(:func:`~wan_data.planning.construction.construct`: collect, probe in threads, the user's
index stages, bucket assignment) on the same :class:`~wan_data.config.DatasetConfig`, so a
file the scan calls good is a file training plans a sample for, in the same bucket, and a file
it calls bad is one training skips, for the same reason, by construction.

It does not construct a ``WanVideoDataset`` because the scan wants three things the dataset
does not: a progress bar over the probe (a large dataset takes minutes to probe), the metadata
of files rejected by validation (a ``too_short`` file's duration explains the verdict), and
every bad file even when they are the majority: the dataset's circuit breaker would stop at the
first window with more than half of the files failing, so the scan turns it off and instead
reports whether training would trip it.

This module holds the scan itself; the report it returns is in :mod:`wan_data.tools.scan_report`
and its text table in :mod:`wan_data.tools.scan_table` (both re-exported here).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from wan_data.config.dataset_config import DatasetConfig
from wan_data.config.fields import AUTO
from wan_data.config.resolve import resolve
from wan_data.errors import PipelineHealthError
from wan_data.failures.breaker import BreakerConfig, CircuitBreaker
from wan_data.failures.mechanism import StageContext
from wan_data.failures.policy import release_frames
from wan_data.index.metadata_cache import MetadataCache
from wan_data.items import Failed, PlanSample, Probed, Source, VideoMetadata
from wan_data.media.sampling import frames_available, split_unused_frames
from wan_data.media.source_files import open_source
from wan_data.planning.clips import DecodeOptions
from wan_data.planning.construction import construct, decode_options
from wan_data.sources.concepts import RootsLike, option_json
from wan_data.stages.base import Stage
from wan_data.tools.scan_report import FIXED_WINDOW_MODES as _FIXED_WINDOW_MODES
from wan_data.tools.scan_report import SCAN_VERSION, BucketCount, ScanReport, ScanRow
from wan_data.tools.scan_table import format_scan_table

__all__ = [
    "SCAN_VERSION",
    "BucketCount",
    "ScanReport",
    "ScanRow",
    "format_scan_table",
    "frames_available",
    "scan_dataset",
    "split_unused_frames",
]

logger = logging.getLogger("wan_data")


# WanVideoDataset's defaults when neither a preset nor the option is given.

# A content average this far from the header's rate means irregular frame spacing: a constant
# rate file agrees to rounding (29.97 vs 30000/1001), a variable one differs by whole frames.
_VFR_TOLERANCE = 0.01


def scan_dataset(
    roots: RootsLike,
    config: DatasetConfig | None = None,
    *,
    index_stages: Sequence[Stage[Probed, Probed]] = (),
    strict: bool | None = None,
    threads: int | None = None,
    check_vfr: bool = True,
    progress: bool = True,
    **options: Any,
) -> ScanReport:
    """Tell, file by file, what ``WanVideoDataset(roots, config, **options)`` would do.

    The scan builds the dataset's sample list with the dataset's own construction
    (:func:`~wan_data.planning.construction.construct`: collect, probe, the index stages,
    buckets) from the same :class:`~wan_data.config.DatasetConfig`, so its verdicts are
    training's by construction. Three things differ, on purpose: the circuit breaker is off
    (every verdict is wanted; whether training's would trip is simulated and reported), the
    ledger is not consulted (every file is judged afresh, with its real reason), and the
    metadata of rejected files is kept (a ``too_short`` file's duration explains the verdict).

    Args:
        roots: folders, ``.jsonl``/``.csv`` metadata files or :class:`Concept` objects.
        config: the dataset's configuration; ``**options`` (the dataset's keywords, e.g.
            ``preset=``, ``frames=``, ``metadata_cache=``) are applied over it.
        index_stages: the dataset's index stages (a user's filters): the scan reports what
            they drop, under their names.
        strict: the dataset's ``integrity_check``: also decode every video fully with
            FFmpeg's error detection and call files with concealed decode errors bad
            (``corrupt_frames``). Off by default: the scan is then a metadata-speed check.
        threads: probe threads (``probe_threads``; ``None``: the cores), also used for the
            VFR check.
        check_vfr: read each good video's header frame rate to flag variable frame rates
            (one header read per video, no scan: the probe does not keep the header's rate).
        progress: a tqdm bar on stderr while probing.

    Raises:
        ConfigError: every configuration problem at once (as the dataset raises them).
    """
    started = time.perf_counter()
    given = dict(options)
    if strict is not None:
        given["integrity_check"] = strict
    elif "integrity_check" not in given and (
        config is None or config.filters.integrity_check is AUTO
    ):
        given["integrity_check"] = False  # a metadata-speed check unless asked for

    if threads is not None:
        given["probe_threads"] = threads
    resolved = resolve(
        roots, config, options=given, stages={"index_stages": index_stages}, use_ledger=False
    )
    config = resolved.config
    buckets = config.shape.bucket_set()
    # Every verdict is wanted, so the scan's own breaker stays off; training's is simulated.
    context = StageContext(policy=config.errors.policy, breaker_config=BreakerConfig(enabled=False))
    bar: Any = None

    def start_bar(sources: Sequence[Source]) -> None:
        nonlocal bar
        bar = _progress_bar(len(sources), enabled=progress)

    def advance(_: Probed | Failed) -> None:
        # One outcome per source, in input order: counting outcomes (not submitted sources,
        # which run ahead in threads) makes the bar reach 100 % when probing is done.
        if bar is not None:
            bar.update(1)

    try:
        built = construct(
            resolved.concepts,
            config,
            context=context,
            buckets=buckets,
            index_stages=index_stages,
            on_sources=start_bar,
            on_outcome=advance,
        )
    finally:
        if bar is not None:
            bar.close()
    workers = config.workers.probe_threads or (os.cpu_count() or 1)
    probed = [o for o in built.outcomes if isinstance(o, Probed)]
    decode = decode_options(config, buckets, resolved.concepts)
    header_fps = _header_rates(probed, workers) if check_vfr else {}
    rows = _rows(
        built.sources,
        built.failures,
        probed,
        built.samples,
        built.metadata_cache,
        decode,
        header_fps,
        check_vfr,
    )
    breaker = None
    if config.errors.breaker_threshold is not None:
        breaker = _simulate_breaker(built.outcomes, built.failures, config.errors.breaker_config())
    report = ScanReport(
        roots=[os.fspath(c.root) for c in resolved.concepts],
        options={
            "preset": config.preset,
            "frames": list(config.shape.frames),
            "fps": config.shape.fps,
            "resolutions": [list(t) for t in buckets.targets],
            "step": config.shape.step,
            "max_aspect": config.shape.max_aspect,
            "no_upscale": config.shape.no_upscale,
            "sampling": config.sampling.sampling,
            "clips_per_video": config.sampling.clips_per_video,
            "stride": config.sampling.stride,
            "frame_stride": config.sampling.frame_stride,
            "crop": config.sampling.crop,
            "seed": config.seed,
            "missing_caption": config.sources.missing_caption,
            "max_pixels": config.filters.max_pixels,
            "max_duration_seconds": config.filters.max_duration_seconds,
            "min_source_fps": config.filters.min_source_fps,
            "strict": config.integrity_enabled,
            "index_stages": [s.name for s in index_stages],
            **(
                {
                    "concepts": {
                        c.name: {k: option_json(v) for k, v in c.options.items()}
                        for c in resolved.concepts
                        if c.options
                    }
                }
                if any(c.options for c in resolved.concepts)
                else {}
            ),
        },
        rows=rows,
        buckets=_bucket_counts(built.samples),
        breaker=breaker,
        seconds=time.perf_counter() - started,
        samples=built.samples,
        decode_options=decode,
    )
    logger.info(
        "scan: %d file(s), %d good, %d bad, %d sample(s) in %d bucket(s), %.1f s",
        len(rows),
        len(report.good),
        len(report.bad),
        len(built.samples),
        len(report.buckets),
        report.seconds,
    )
    return report


def _progress_bar(total: int, *, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="wan-data scan: probe", unit="file", file=sys.stderr)


def _header_rates(probed: Sequence[Probed], threads: int) -> dict[str, float | None]:
    paths = sorted({p.path for p in probed if p.metadata.media_type == "video"})
    if not paths:
        return {}
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="wan_data_scan") as pool:
        return dict(zip(paths, pool.map(_header_fps, paths), strict=True))


def _header_fps(path: str) -> float | None:
    """The container's declared average frame rate (header only: no scan, no decoding).

    The file is opened as a regular file only (:func:`~wan_data.media.source_files.open_source`)
    and torchcodec reads the open file: a source swapped for a FIFO since the probe would block
    FFmpeg's open of the path forever; here it is refused and its rate unknown.
    """
    from torchcodec.decoders import VideoDecoder

    try:
        with open_source(path, stage="scan") as fh:
            rate = VideoDecoder(fh, seek_mode="approximate", num_ffmpeg_threads=1).metadata
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
        own_options = options.for_source(p.source)  # the concept's own options, if any
        counts_unused = own_options.sampling in _FIXED_WINDOW_MODES
        largest = max(own_options.frames)
        available = frames_available(meta, own_options.fps, own_options.frame_stride)
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
