"""The dataset's sample list: from the sample index when nothing changed, else constructed.

A cold start runs :func:`~wan_data.planning.construction.construct` (collect, probe, the index
stages, buckets), records the files that failed for reasons of their own in the ledger, and
saves a snapshot of the result in the sample index. A warm start validates the snapshot with
a ``stat`` per source and loads it as columns (see :mod:`wan_data.index.sample_index`). Both
give the same :class:`SampleList`, which is all the dataset plans over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wan_data.config.resolve import Resolved
from wan_data.failures.ledger import Ledger
from wan_data.failures.mechanism import StageContext
from wan_data.index.sample_index import load_index, save_index, setup_fingerprint
from wan_data.items import Bucket, Failed, PlanSample, Probed, Source
from wan_data.media.buckets import BucketSet
from wan_data.observe.metrics import write_snapshot
from wan_data.observe.report import static_bucket_stats
from wan_data.planning.clips import DecodeOptions
from wan_data.planning.columns import BucketColumn
from wan_data.planning.construction import Construction, construct, probe_limits
from wan_data.sources.captions import fallback_captions
from wan_data.stages.base import Stage
from wan_data.stages.probe import ProbeLimits

__all__ = ["SampleList", "load_or_construct", "samples_digest"]

logger = logging.getLogger("wan_data")


@dataclass
class SampleList:
    """What the dataset plans over, however it was obtained.

    Attributes:
        sources, probed, samples: as :class:`~wan_data.planning.construction.Construction`.
        buckets: each sample's bucket (the planner's only input besides the seed).
        static_stats: the epoch-independent part of ``bucket_report()``.
        digest: identity of the samples (keys, buckets, frame counts, durations).
        index_folder: the sample index folder (``None``: no index).
    """

    sources: Sequence[Source]
    probed: Sequence[Probed]
    samples: Sequence[PlanSample]
    buckets: Sequence[Bucket]
    static_stats: dict[str, Any]
    digest: str
    index_folder: Path | None


def samples_digest(samples: Sequence[PlanSample]) -> str:
    """SHA-256 of every sample's key, bucket, frame count and duration: it changes when the sample
    list would. Part of the resume fingerprint.
    """
    digest = hashlib.sha256()
    for sample in samples:
        meta = sample.probed.metadata
        row = f"{sample.key}|{sample.bucket}|{meta.frame_count}|{meta.duration}\n"
        digest.update(row.encode("utf-8", "surrogateescape"))  # keys of non-UTF-8 names
    return digest.hexdigest()


def _fingerprint(
    resolved: Resolved,
    buckets: BucketSet,
    decode: DecodeOptions,
    index_stages: Sequence[Stage[Probed, Probed]],
) -> str:
    """What construction's result depends on besides the files (see ``sample_index``)."""
    from wan_data import __version__

    config = resolved.config
    ledger = resolved.ledger
    return setup_fingerprint(
        {
            "version": __version__,
            "concepts": [c.identity() for c in resolved.concepts],
            # The caption tools change captions only, never which samples there are.
            "decode": decode.identity(captions=False),
            "buckets": [list(b) for b in buckets.all],
            "limits": _limits_identity(probe_limits(config, resolved.concepts)),
            "policy": repr(config.errors.policy),
            "breaker": dataclasses.asdict(config.errors.breaker_config()),
            "ledger": str(ledger.path) if ledger is not None else None,
            "missing_caption": config.sources.missing_caption,
            "caption_extension": config.sources.caption_extension,
            "allow_outside_root": config.sources.allow_outside_root,
            "max_pixels": config.filters.max_pixels,
            "max_duration_seconds": config.filters.max_duration_seconds,
            "max_aspect": config.shape.max_aspect,
            # The val split changes the sample list; left out when off so that snapshots made
            # before the split existed stay valid.
            **(
                {
                    "split": [
                        config.sources.split,
                        config.sources.val_fraction,
                        config.sources.val_count,
                        config.sources.split_seed,
                    ]
                }
                if config.sources.split != "all"
                else {}
            ),
            # A user's filter changes the sample list: its identity is part of the snapshot's.
            **({"index_stages": [s.identity() for s in index_stages]} if index_stages else {}),
        }
    )


def _limits_identity(limits: ProbeLimits) -> dict[str, object]:
    """The probe limits as fingerprinted: ``by_concept`` and ``frame_stride`` only when set
    (so the fingerprints of datasets without them stay as they were)."""
    out = dataclasses.asdict(limits)
    if not limits.by_concept:
        del out["by_concept"]
    if limits.frame_stride == 1:
        del out["frame_stride"]
    return out


def load_or_construct(
    resolved: Resolved,
    *,
    buckets: BucketSet,
    decode: DecodeOptions,
    index_stages: Sequence[Stage[Probed, Probed]],
    report_dir: Path,
    rank: int,
) -> SampleList:
    """The sample list: loaded from a valid snapshot, or constructed (and then saved).

    Writes the construction's report part (``part-setup-<pid>.json``) either way, records the
    construction's skips in the ledger (rank 0 only) and saves the snapshot (rank 0 only).
    """
    config = resolved.config
    folder = config.sample_index_folder
    index_path = (
        folder / f"{_fingerprint(resolved, buckets, decode, index_stages)}.npz"
        if folder is not None
        else None
    )
    part = report_dir / f"part-setup-{os.getpid()}.json"
    loaded = (
        load_index(index_path, index_path.stem)
        if index_path is not None and not config.reuse.retry_failed
        else None
    )
    if loaded is not None:
        write_snapshot(
            part, {**loaded.setup_part, "pid": os.getpid(), "host": socket.gethostname()}
        )
        logger.info(
            "WanVideoDataset: %d source(s), %d sample(s) from the sample index %s "
            "(nothing changed since it was saved)",
            len(loaded.sources),
            len(loaded.samples),
            index_path,
        )
        return SampleList(
            sources=loaded.sources,
            probed=loaded.probed,
            samples=loaded.samples,
            buckets=loaded.samples.buckets,
            static_stats=loaded.extra["static_stats"],
            digest=str(loaded.extra["samples_digest"]),
            index_folder=folder,
        )
    started_ns = time.time_ns()
    context = StageContext(
        policy=config.errors.policy, breaker_config=config.errors.breaker_config()
    )
    try:
        built = construct(
            resolved.concepts,
            config,
            context=context,
            buckets=buckets,
            ledger=resolved.ledger,
            index_stages=index_stages,
        )
        if rank == 0:
            _update_ledger(resolved.ledger, built.failures, built.probed)
    finally:
        context.metrics.setup = True
        context.metrics.write(part)
    result = SampleList(
        sources=built.sources,
        probed=built.probed,
        samples=built.samples,
        buckets=BucketColumn.of([s.bucket for s in built.samples]),
        static_stats=static_bucket_stats(built.samples, built.probed, decode),
        digest=samples_digest(built.samples),
        index_folder=folder,
    )
    cache = built.metadata_cache
    logger.info(
        "WanVideoDataset: %d source(s), %d sample(s) in %d bucket(s), %d skipped at setup; "
        "metadata cache %d hit(s), %d miss(es)",
        len(result.sources),
        len(result.samples),
        len(set(result.buckets)),
        len(context.metrics.skipped),
        cache.hits,
        cache.misses,
    )
    if index_path is not None and rank == 0:
        _save(index_path, resolved, built, result, context, started_ns)
    return result


def _save(
    index_path: Path,
    resolved: Resolved,
    built: Construction,
    result: SampleList,
    context: StageContext,
    started_ns: int,
) -> None:
    config = resolved.config
    skipped_paths = [str(r["path"]) for r in context.metrics.skipped if r.get("path")]
    ledger = [str(resolved.ledger.path)] if resolved.ledger is not None else []
    by_name = {c.name or "": c for c in reversed(resolved.concepts)}
    deferred = []
    for source in built.sources:
        concept = by_name.get(source.concept)
        fallback = (
            fallback_captions(source.path, concept.caption, config.sources.missing_caption)
            if concept is not None and os.path.isdir(concept.root)
            else None
        )
        deferred.append((fallback is not None, fallback or ()))
    saved = save_index(
        index_path,
        fingerprint=index_path.stem,
        sources=built.sources,
        probed=built.probed,
        samples=built.samples,
        setup_part=context.metrics.snapshot(),
        folders=built.visited,
        deferred=deferred,
        files=skipped_paths,
        appended=ledger,
        caption_extension=config.sources.caption_extension,
        extra={"static_stats": result.static_stats, "samples_digest": result.digest},
        started_ns=started_ns,
    )
    if saved:
        logger.info("sample index saved to %s", index_path)


def _update_ledger(
    ledger: Ledger | None, failures: Sequence[Failed], probed: Sequence[Probed]
) -> None:
    """Record this construction's skips of the file's own making; clear files that now work.

    Only after construction succeeded (a tripped breaker, e.g. a broken FFmpeg, must not
    mark a whole dataset bad) and only on rank 0 (every rank probes every source). Decode
    failures while iterating are not recorded: they concern one clip window, and dropping
    the whole file at the next construction would change the sample list under a resumed
    run.
    """
    if ledger is None:
        return
    recorded = sum(ledger.record(f) for f in failures)
    cleared = sum(ledger.resolve(p.path) for p in probed)
    if recorded or cleared:
        logger.info(
            "ledger %s: %d file(s) recorded as bad, %d cleared", ledger.path, recorded, cleared
        )
