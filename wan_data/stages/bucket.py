"""Stage ``bucket``: every clip a probed source yields, with its bucket (no decoding).

Buckets and clip counts do not depend on the epoch (only windows and crops do), so this runs
once, at construction, and every epoch plans over the same list of samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from wan_data.failures.mechanism import StageContext, map_stage
from wan_data.failures.policy import ErrorPolicy
from wan_data.items import Failed, PlanSample, Probed
from wan_data.planning.clips import DecodeOptions, plan_clips
from wan_data.stages.base import MapStage

__all__ = ["Bucket", "build_samples"]


class Bucket(MapStage[Probed, PlanSample]):
    """``Probed → PlanSample`` (one per clip of the source)."""

    name = "bucket"
    accepts = Probed

    def __init__(self, options: DecodeOptions) -> None:
        self.options = options

    def process(self, item: Probed) -> list[PlanSample]:
        return [
            PlanSample(item, plan.clip_index, plan.bucket)
            for plan in plan_clips(item, self.options, epoch=0)
        ]


def build_samples(
    probed: Iterable[Probed | Failed],
    *,
    options: DecodeOptions,
    context: StageContext,
    policy: ErrorPolicy | None = None,
) -> Iterator[PlanSample | Failed]:
    """The ``bucket`` stage as a function (``Bucket(options)(probed, context)``)."""
    return map_stage(
        probed,
        Bucket(options).process,
        stage="bucket",
        accepts=Probed,
        policy=policy,
        context=context,
    )
