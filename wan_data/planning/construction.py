"""Construction: sources → probed metadata → samples with buckets, the one path for all.

``WanVideoDataset`` (on a cold start) and ``scan_dataset`` both call :func:`construct`, with
the same :class:`~wan_data.config.DatasetConfig` and the same stages, so the scan's verdict on
a file *is* training's, by construction, not by a test comparing two implementations. What
differs is only what the caller does around it: the dataset keeps its circuit breaker on and
records known-bad files in the ledger; the scan turns the breaker off (it wants every verdict)
and simulates it instead.

The stages, in order::

    Concept ─Collect─▶ Source ─SplitSources─▶ Source ─SkipKnownBad─▶ Source ─Probe─▶ Probed
        ─index stages (the user's filters)─▶ Probed ─Bucket─▶ PlanSample

``SplitSources`` (stage ``split``) keeps one side of the train/val split when
``config.sources.split`` is not ``"all"``: the sources of the other side become
``Failed(reason="other_split")`` before anything opens them (see
:mod:`wan_data.sources.split`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from wan_data.config.dataset_config import DatasetConfig
from wan_data.config.per_source import concept_configs
from wan_data.failures.ledger import Ledger
from wan_data.failures.mechanism import StageContext
from wan_data.index.metadata_cache import MetadataCache
from wan_data.items import Failed, PlanSample, Probed, Source
from wan_data.media.buckets import BucketSet
from wan_data.sources.concepts import Concept
from wan_data.sources.split import SplitSources
from wan_data.stages.base import Stage, compose
from wan_data.stages.bucket import Bucket
from wan_data.stages.collect import Collect
from wan_data.stages.decode import DecodeOptions
from wan_data.stages.ledger import SkipKnownBad
from wan_data.stages.probe import Probe, ProbeLimits

__all__ = ["Construction", "construct", "decode_options", "probe_limits"]


def probe_limits(config: DatasetConfig, concepts: Sequence[Concept] = ()) -> ProbeLimits:
    """What a file must satisfy, from the filters and the shape (a concept's own frames and
    fps for its sources)."""
    limits = _limits(config)
    by_concept = tuple(
        (name, _limits(own)) for name, own in concept_configs(config, concepts)[0].items()
    )
    return dataclasses.replace(limits, by_concept=by_concept) if by_concept else limits


def _limits(config: DatasetConfig) -> ProbeLimits:
    return ProbeLimits(
        min_frames=min(config.shape.frames),
        fps=config.shape.fps,
        max_pixels=config.filters.max_pixels,
        max_duration_seconds=config.filters.max_duration_seconds,
        min_source_fps=config.filters.min_source_fps,
        integrity=config.integrity_enabled,
        frame_stride=config.sampling.frame_stride if config.shape.fps is None else 1,
    )


def decode_options(
    config: DatasetConfig, buckets: BucketSet, concepts: Sequence[Concept] = ()
) -> DecodeOptions:
    """Which pixels a source turns into, from the shape, the sampling and the seed (a
    concept's own options for its sources, see ``Concept.options``)."""
    options = _decode(config, buckets)
    by_concept = tuple(
        (name, _decode(own, own.shape.bucket_set()))
        for name, own in concept_configs(config, concepts)[0].items()
    )
    return dataclasses.replace(options, by_concept=by_concept) if by_concept else options


def _decode(config: DatasetConfig, buckets: BucketSet) -> DecodeOptions:
    return DecodeOptions(
        frames=config.shape.frames,
        fps=config.shape.fps,
        buckets=buckets,
        sampling=config.sampling.sampling,
        clips_per_video=config.sampling.clips_per_video,
        crop=config.sampling.crop,
        stride=config.sampling.stride,
        frame_stride=config.sampling.frame_stride,
        seed=config.seed,
        no_upscale=config.shape.no_upscale,
        captions=config.captions.tools(),
    )


@dataclass
class Construction:
    """What construction decided, for the dataset to plan over and the scan to report.

    Attributes:
        sources: every collected source, in collection order.
        probed: the sources that passed the probe and the index stages and yield at least
            one sample, in order.
        samples: every clip of every probed source, with its bucket.
        failures: every skip (collect, split, ledger, probe, index stages, bucket), in order.
        outcomes: after the probe and the index stages, each source's ``Probed`` or
            ``Failed``, in order (the scan's progress, metadata and breaker simulation).
        visited: folders the walk listed (the sample index validates their mtimes).
        metadata_cache: the probe's metadata cache (saved by :func:`construct`).
    """

    sources: list[Source] = field(default_factory=list)
    probed: list[Probed] = field(default_factory=list)
    samples: list[PlanSample] = field(default_factory=list)
    failures: list[Failed] = field(default_factory=list)
    outcomes: list[Probed | Failed] = field(default_factory=list)
    visited: list[str] = field(default_factory=list)
    metadata_cache: MetadataCache = field(default_factory=lambda: MetadataCache(None))


def construct(
    concepts: Sequence[Concept],
    config: DatasetConfig,
    *,
    context: StageContext,
    buckets: BucketSet,
    ledger: Ledger | None = None,
    index_stages: Sequence[Stage[Probed, Probed]] = (),
    on_sources: Callable[[Sequence[Source]], None] | None = None,
    on_outcome: Callable[[Probed | Failed], None] | None = None,
) -> Construction:
    """Collect, probe, filter and bucket every source of ``concepts``.

    Args:
        concepts: the roots, as :class:`~wan_data.sources.concepts.Concept` objects.
        config: the options (sources, shape, sampling, filters, workers, reuse).
        context: policy, counters and breakers of construction.
        buckets: the spatial buckets (``config.shape.bucket_set()``, built once by the caller).
        ledger: skip the files it knows to be bad (``None``: probe everything).
        index_stages: the user's stages over probed metadata, before buckets are assigned.
        on_sources: called with the collected sources before probing starts (progress).
        on_outcome: called with each source's outcome after the index stages (progress).

    Every skip is recorded in ``context.metrics`` and returned in ``failures``.
    """
    result = Construction(metadata_cache=MetadataCache(config.metadata_cache_path))
    sources = Collect(
        missing_caption=config.sources.missing_caption,
        caption_extension=config.sources.caption_extension,
        allow_outside_root=config.sources.allow_outside_root,
        visited=result.visited,
    )
    for item in sources(concepts, context):
        if isinstance(item, Source):
            result.sources.append(item)
        else:
            context.metrics.record_failed(item)
            result.failures.append(item)

    if on_sources is not None:
        on_sources(result.sources)

    def observe(stream: Iterator[Probed | Failed]) -> Iterator[Probed | Failed]:
        for outcome in stream:
            result.outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
            yield outcome

    threads = config.workers.probe_threads or (os.cpu_count() or 1)
    front: list[Stage[Source, Source]] = []
    chosen = config.sources
    if chosen.split != "all":
        # Right after collect: the other side's files are never probed (val_count ranks
        # every collected source, so the stage is built from all of them).
        front.append(
            SplitSources.for_sources(
                result.sources,
                split=chosen.split,
                fraction=chosen.val_fraction,
                count=chosen.val_count,
                seed=chosen.split_seed,
            )
        )
    if ledger is not None:
        front.append(SkipKnownBad(ledger, retry_failed=config.reuse.retry_failed))
    try:
        probed = compose(
            result.sources,
            [
                *front,
                Probe(probe_limits(config, concepts), threads=threads, cache=result.metadata_cache),
                *index_stages,
            ],
            context,
        )
        bucket = Bucket(decode_options(config, buckets, concepts))
        for planned in bucket(observe(probed), context):
            if isinstance(planned, Failed):
                context.metrics.record_failed(planned)
                result.failures.append(planned)
            else:
                result.samples.append(planned)
                if not result.probed or result.probed[-1] is not planned.probed:
                    result.probed.append(planned.probed)
    finally:
        result.metadata_cache.save()
    return result
