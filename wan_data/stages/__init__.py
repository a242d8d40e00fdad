"""The stages: options bound once, then ``items in → items | Failed out``.

Every stage has the same shape (see :mod:`wan_data.stages.base`)::

    stage = Probe(ProbeLimits(min_frames=17))   # options
    out = stage(items, context)                  # Iterator[Probed | Failed]

and they compose into a pipeline with one shared context (policy, counters, breakers,
watchdog, epoch)::

    from wan_data.stages import Bucket, Collect, Decode, Filter, Probe, compose

    context = StageContext()
    samples = compose(concepts_from("data/"),
                      [Collect(), Probe(limits), Filter(is_long, name="min_duration"),
                       Bucket(options)], context)

The stages, in pipeline order:

============== ===================== =======================================================
stage          items                 module
============== ===================== =======================================================
``Collect``    Concept → Source      :mod:`~wan_data.stages.collect` (sources/ does the walk)
``SkipKnownBad`` Source → Source     :mod:`~wan_data.stages.ledger`
``Probe``      Source → Probed       :mod:`~wan_data.stages.probe`
``Filter``     Probed → Probed       :mod:`~wan_data.stages.base` (a user's index stage)
``Bucket``     Probed → PlanSample   :mod:`~wan_data.stages.bucket`
``Decode``     PlanSample → Clip     :mod:`~wan_data.stages.decode`
``Map``        Clip → Clip           :mod:`~wan_data.stages.base` (a user's clip stage)
``CropJitter`` Clip → Clip           :mod:`~wan_data.stages.augment` (off unless added)
``RandomFlip`` Clip → Clip           :mod:`~wan_data.stages.augment` (off unless added)
``ColorJitter`` Clip → Clip          :mod:`~wan_data.stages.augment` (off unless added)
``BatchClips`` Clip → Batch          :mod:`~wan_data.stages.collate` (unplanned batches)
``Encode``     EncodeJob → Encoded   :mod:`wan_data.latents.encode` (the cache pass)
============== ===================== =======================================================

Planned batches (equal counts on every rank, failed members replaced, exact resume) come
from the planner: :class:`~wan_data.WanVideoDataset` runs these stages with a plan, and takes
a user's stages at two named points (``index_stages=`` after ``Probe``, ``clip_stages=``
after ``Decode``).
"""

from wan_data.failures.mechanism import StageContext, drop_failed
from wan_data.stages.augment import ColorJitter, CropJitter, RandomFlip
from wan_data.stages.base import Filter, Map, MapStage, Stage, compose
from wan_data.stages.bucket import Bucket
from wan_data.stages.collate import BatchClips
from wan_data.stages.collect import Collect
from wan_data.stages.decode import Decode
from wan_data.stages.ledger import SkipKnownBad
from wan_data.stages.probe import Probe, ProbeLimits

__all__ = [
    "BatchClips",
    "Bucket",
    "Collect",
    "ColorJitter",
    "CropJitter",
    "Decode",
    "Filter",
    "Map",
    "MapStage",
    "Probe",
    "ProbeLimits",
    "RandomFlip",
    "SkipKnownBad",
    "Stage",
    "StageContext",
    "compose",
    "drop_failed",
]
