"""Import the dataset configs users bring from musubi-tuner, OneTrainer and diffusion-pipe.

``import_musubi("dataset.toml")``, ``import_onetrainer("concepts.json")`` and
``import_diffusion_pipe("dataset.toml")`` return an
:class:`ImportResult`: the :class:`~wan_data.sources.concepts.Concept` list and dataset options
that mean what the peer's file meant, a runnable Python snippet and the ``wan-data`` command
saying the same, and every peer setting that was not carried over with where it was and why
(no equivalent, the semantics differ, or a decision only the user can make). Nothing is
dropped silently: a user switching trainers must be able to see exactly what changed. The
peers' names for our options are in :mod:`wan_data.config.peers`; ``docs/migrating.md`` shows
the mapping.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from wan_data.config.importing.diffusion_pipe import import_diffusion_pipe
from wan_data.config.importing.musubi import import_musubi
from wan_data.config.importing.onetrainer import import_onetrainer
from wan_data.config.importing.result import (
    MANUAL,
    NO_EQUIVALENT,
    REASONS,
    SEMANTICS_DIFFER,
    ImportResult,
    StageSpec,
    UnmappedOption,
)

__all__ = [
    "IMPORTERS",
    "MANUAL",
    "NO_EQUIVALENT",
    "REASONS",
    "SEMANTICS_DIFFER",
    "ImportResult",
    "StageSpec",
    "UnmappedOption",
    "import_config",
    "import_diffusion_pipe",
    "import_musubi",
    "import_onetrainer",
]

IMPORTERS: dict[str, Callable[..., ImportResult]] = {
    "musubi": import_musubi,
    "onetrainer": import_onetrainer,
    "diffusion-pipe": import_diffusion_pipe,
}
"""The importer of each peer format, by the name ``wan-data import`` takes."""


def import_config(peer: str, path: str | os.PathLike[str], **options: Any) -> ImportResult:
    """Import ``path`` written for ``peer`` (a key of :data:`IMPORTERS`).

    Raises:
        ConfigError: an unknown peer, or every problem of the file.
    """
    from wan_data.errors import ConfigError, format_error

    importer = IMPORTERS.get(peer)
    if importer is None:
        raise ConfigError(format_error("peer", peer, f"must be one of {', '.join(IMPORTERS)}"))
    return importer(path, **options)
