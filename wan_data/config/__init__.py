"""Typed configuration: every option defined once, as a field of one group.

- ``groups.py``: one frozen dataclass per concern (sources, shape, sampling, filters, batching,
  errors, latents, reuse, observe, workers), each validating itself;
- ``dataset_config.py``: :class:`DatasetConfig`, the groups together, built from flat keywords
  or presets, with the defaults that depend on several groups resolved in one place;
- ``fields.py``: :func:`option`, a field carrying its help and command-line form, and ``AUTO``;
- ``values.py``: command-line text ↔ values;
- ``cli.py``: ``wan-data`` flags generated from the fields, and a config printed as a command.
"""

from wan_data.config.dataset_config import DatasetConfig, option_names
from wan_data.config.fields import AUTO, Auto
from wan_data.config.groups import (
    DEFAULT_FPS,
    DEFAULT_FRAMES,
    DEFAULT_RESOLUTION,
    DEFAULT_STEP,
    BatchingConfig,
    CaptionConfig,
    ConditioningConfig,
    ErrorsConfig,
    FiltersConfig,
    LatentsConfig,
    ObserveConfig,
    ReuseConfig,
    SamplingConfig,
    ShapeConfig,
    SourcesConfig,
    WorkersConfig,
)

__all__ = [
    "AUTO",
    "DEFAULT_FPS",
    "DEFAULT_FRAMES",
    "DEFAULT_RESOLUTION",
    "DEFAULT_STEP",
    "Auto",
    "BatchingConfig",
    "CaptionConfig",
    "ConditioningConfig",
    "DatasetConfig",
    "ErrorsConfig",
    "FiltersConfig",
    "LatentsConfig",
    "ObserveConfig",
    "ReuseConfig",
    "SamplingConfig",
    "ShapeConfig",
    "SourcesConfig",
    "WorkersConfig",
    "option_names",
]
