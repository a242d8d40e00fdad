"""From what a caller typed to a checked configuration: roots, config, keywords, stages.

``WanVideoDataset(...)`` and ``scan_dataset(...)`` both start here, so a problem is reported the
same way by both, and all problems at once: unknown or invalid options, unusable roots, stages
that are not stages, a missing ``ffmpeg`` for the integrity check, an unwritable ledger.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wan_data.config.dataset_config import DatasetConfig
from wan_data.config.fields import AUTO
from wan_data.config.per_source import concept_configs
from wan_data.errors import ConfigError, format_error
from wan_data.failures.ledger import Ledger
from wan_data.media.integrity import FfmpegNotFoundError, find_ffmpeg
from wan_data.sources.concepts import Concept, RootsLike, check_concepts, concepts_from

__all__ = ["Resolved", "resolve"]

logger = logging.getLogger("wan_data")


def _read_only(folder: os.PathLike[str] | str) -> bool:
    """Whether ``folder`` exists and refuses writes (a read-only mount, or no permission)."""
    return os.path.isdir(folder) and not os.access(folder, os.W_OK)


@dataclass(frozen=True)
class Resolved:
    """A checked configuration with the roots as concepts and the ledger opened."""

    config: DatasetConfig
    concepts: list[Concept]
    ledger: Ledger | None


def resolve(
    roots: RootsLike,
    config: DatasetConfig | None = None,
    *,
    options: Mapping[str, Any] | None = None,
    stages: Mapping[str, Sequence[object]] | None = None,
    use_ledger: bool = True,
) -> Resolved:
    """Check everything; raise one :class:`~wan_data.errors.ConfigError` with every problem.

    Args:
        roots: folders, metadata files or concepts.
        config: the base configuration (default: :class:`DatasetConfig`'s defaults).
        options: flat keywords applied over ``config`` (``preset=`` included).
        stages: user stages by parameter name (``{"index_stages": [...]}``); each must be a
            :class:`~wan_data.stages.Stage`.
        use_ledger: open the configured ledger (the scan judges every file afresh).
    """
    from wan_data.stages.base import Stage

    problems: list[str] = []
    concepts: list[Concept] = []
    try:
        concepts = concepts_from(roots)
        problems += check_concepts(concepts)
    except (TypeError, ValueError) as exc:
        problems.append(str(exc))
    resolved: DatasetConfig | None = None
    base = config if config is not None else DatasetConfig()
    if not isinstance(base, DatasetConfig):
        problems.append(
            format_error(
                "config",
                type(base).__name__,
                "must be a wan_data.config.DatasetConfig",
                "build one with DatasetConfig.build(...) or pass options as keywords",
            )
        )
    else:
        try:
            resolved = base.replace(**(options or {}))
        except ConfigError as exc:
            problems += list(exc.problems)
    for name, given in (stages or {}).items():
        if isinstance(given, (str, bytes)) or not isinstance(given, Sequence):
            problems.append(format_error(name, repr(given), "must be a list of stages"))
            continue
        for i, stage in enumerate(given):
            if not isinstance(stage, Stage):
                problems.append(
                    format_error(
                        f"{name}[{i}]",
                        repr(stage)[:80],
                        "must be a wan_data.stages.Stage",
                        "wrap a function with wan_data.stages.Filter(fn, name=...) or "
                        "Map(fn, name=...)",
                    )
                )
    ledger: Ledger | None = None
    if resolved is not None:
        # Each concept's own options, checked by the dataset's rules (see per_source.py).
        problems += concept_configs(resolved, concepts)[1]
        if resolved.integrity_enabled:
            try:
                find_ffmpeg()
            except FfmpegNotFoundError as exc:
                problems.append(str(exc))
        path = resolved.ledger_path
        if use_ledger and path is not None:
            try:
                ledger = Ledger(path)
            except ConfigError as exc:
                if resolved.reuse.ledger is AUTO and _read_only(path.parent):
                    # The default ledger lives in the cache folder: a shared read-only cache
                    # mount must still train, with the ledger read but not written.
                    logger.warning(
                        "ledger %s: its folder is read-only; known-bad files are still "
                        "skipped, new ones are not recorded (pass ledger= a writable path to "
                        "record them)",
                        path,
                    )
                    ledger = Ledger(path, read_only=True)
                else:
                    problems += list(exc.problems)
    if problems:
        raise ConfigError(problems)
    assert resolved is not None
    return Resolved(resolved, concepts, ledger)
