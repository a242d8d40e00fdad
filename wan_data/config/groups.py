"""The configuration groups: one frozen dataclass per concern, each validating itself.

Every option of :class:`~wan_data.WanVideoDataset` is one field of one group, declared once
with its default, its check and its command-line form (:func:`~wan_data.config.fields.option`),
and read by the dataset, ``scan_dataset`` and ``wan-data`` alike. A group raises
:class:`~wan_data.errors.ConfigError` listing *all* its problems on construction;
:class:`~wan_data.config.DatasetConfig` gathers the problems of every group into one error, so
one edit of a launch script fixes them all.

- ``clips.py``: what decides the clips (sources, shape, sampling, filters, batching);
- ``runtime.py``: how the run goes (errors, latents, reuse, observe, workers);
- ``conditioning.py``: what a batch carries besides latents (text embeddings, I2V conditions);
- ``captions.py``: the caption tools (prefix, suffix, tag shuffle and dropout);
- ``base.py``: :class:`ConfigGroup`, the base that normalises and checks.

Groups never refer to each other (a source can override one group without the others);
what depends on several groups is resolved by ``DatasetConfig``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from wan_data.config.base import ConfigGroup
from wan_data.config.captions import CaptionConfig
from wan_data.config.clips import (
    DEFAULT_FPS,
    DEFAULT_FRAMES,
    DEFAULT_RESOLUTION,
    DEFAULT_STEP,
    BatchingConfig,
    FiltersConfig,
    SamplingConfig,
    ShapeConfig,
    SourcesConfig,
)
from wan_data.config.conditioning import ConditioningConfig
from wan_data.config.runtime import (
    ErrorsConfig,
    LatentsConfig,
    ObserveConfig,
    ReuseConfig,
    WorkersConfig,
)

__all__ = [
    "DEFAULT_FPS",
    "DEFAULT_FRAMES",
    "DEFAULT_RESOLUTION",
    "DEFAULT_STEP",
    "GROUPS",
    "BatchingConfig",
    "CaptionConfig",
    "ConditioningConfig",
    "ConfigGroup",
    "ErrorsConfig",
    "FiltersConfig",
    "LatentsConfig",
    "ObserveConfig",
    "ReuseConfig",
    "SamplingConfig",
    "ShapeConfig",
    "SourcesConfig",
    "WorkersConfig",
    "group_fields",
]

GROUPS: tuple[type[ConfigGroup], ...] = (
    SourcesConfig,
    ShapeConfig,
    SamplingConfig,
    FiltersConfig,
    BatchingConfig,
    ErrorsConfig,
    LatentsConfig,
    ConditioningConfig,
    CaptionConfig,
    ReuseConfig,
    ObserveConfig,
    WorkersConfig,
)


def group_fields(group: type[ConfigGroup]) -> tuple[dataclasses.Field[Any], ...]:
    """The options of a config group, in declaration order (each declared with
    :func:`~wan_data.config.fields.option`: default, help and flag)."""
    return dataclasses.fields(group)  # type: ignore[arg-type]
