"""Per-source options: the configuration each concept's sources are planned with.

A :class:`~wan_data.sources.concepts.Concept` may set some of the dataset's options for its own
sources (``Concept(options={"frames": (81,), "fps": 16})``, the names of
:data:`~wan_data.sources.concepts.PER_SOURCE_OPTIONS`). Each is applied to the dataset's
configuration with :meth:`DatasetConfig.replace`, so a concept's options are checked, and
preset-resolved, by exactly the rules the dataset's own are, and every problem of every
concept is reported at construction in one error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from wan_data.config.dataset_config import DatasetConfig
from wan_data.errors import ConfigError
from wan_data.sources.concepts import PER_SOURCE_OPTIONS, Concept

__all__ = ["concept_configs"]


def concept_configs(
    config: DatasetConfig, concepts: Sequence[Concept]
) -> tuple[dict[str, DatasetConfig], list[str]]:
    """``(configs, problems)``: the configuration of every concept that sets options of its
    own, by concept name, and the problems of those options (each prefixed with the concept).

    Concepts without options are left out: their sources use ``config`` itself.
    """
    configs: dict[str, DatasetConfig] = {}
    problems: list[str] = []
    for index, concept in enumerate(concepts):
        options = concept.options
        if not isinstance(options, Mapping) or not options:
            continue
        known = {k: v for k, v in dict(options).items() if k in PER_SOURCE_OPTIONS}
        if not known:
            continue
        try:
            configs[concept.name or ""] = config.replace(**known)
        except ConfigError as exc:
            label = f"concepts[{index}] ({concept.name}).options"
            problems.extend(f"{label}: {problem}" for problem in exc.problems)
    return configs, problems
