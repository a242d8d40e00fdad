"""What the user's roots are: :class:`Concept` objects, their normalisation and their checks.

A root is a folder (walked recursively) or a ``.jsonl`` / ``.csv`` metadata file, optionally
wrapped in a :class:`Concept` that gives it a name, a repeat count and a default caption. This
module turns whatever the user passed into named concepts and lists every configuration problem
of them at once (a missing root, a typo in a CSV header, duplicate names), so one edit fixes
them all at construction instead of an empty dataset being discovered hours into a run. It does
no walking: finding the files of a concept is :mod:`wan_data.sources.walk` and
:mod:`wan_data.sources.metadata_entries`.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from wan_data.errors import ConfigError, format_error
from wan_data.sources.extensions import METADATA_EXTENSIONS
from wan_data.sources.metadata_files import PATH_KEYS, csv_header, find_column

__all__ = [
    "PER_SOURCE_OPTIONS",
    "Concept",
    "RootsLike",
    "check_concepts",
    "concepts_from",
    "option_json",
]

_ROOT_HINT = "pass a folder of videos/images or a .jsonl/.csv metadata file"


# The options a concept may set for its own sources (``Concept.options``): what decides which
# frames, pixels and caption a source turns into. Everything else (batching, the cache, the
# error policy, the filters) is one per dataset.
PER_SOURCE_OPTIONS = (
    "frames",
    "fps",
    "resolution",
    "step",
    "max_aspect",
    "no_upscale",
    "sampling",
    "clips_per_video",
    "crop",
    "stride",
    "frame_stride",
    "caption_prefix",
    "caption_suffix",
    "shuffle_tags",
    "keep_tokens",
    "tag_dropout",
)


@dataclass(frozen=True)
class Concept:
    """A root folder (or a metadata file) with options of its own.

    Concepts exist so a small, important subset (a character, a style) can be sampled more often
    than the bulk of the data without copying files, weighted in the loss, batched differently,
    or cut into clips its own way, while every concept still shares one epoch plan (a batch
    holds one shape, from any concepts).

    Attributes:
        root: a directory (walked recursively) or a ``.jsonl`` / ``.csv`` metadata file.
        repeats: how many times each source is yielded per epoch. An integer part ``n`` yields
            every source ``n`` times with distinct keys (repeat index ``0 .. n-1``), so later
            stages pick different windows and captions for each copy; a fractional part ``f``
            adds one more copy of a seeded ``f`` share of the sources, drawn again every
            epoch (``0.5``: half the sources each epoch; ``2.5``: two copies of each, and a
            third of half of them).
        name: prefix of every key; defaults to the folder's name (a metadata file: its stem).
            Must be unique: colliding default names get ``-2``, ``-3``... in order.
        caption: caption for files of this concept that have none of their own.
        samples_per_epoch: draw exactly this many of the concept's samples every epoch
            (seeded; without repeats while it has that many, cycling through them again when
            it has fewer), whatever its size: OneTrainer's "samples" balancing. Excludes
            ``repeats``.
        loss_weight: carried per member into the batch (``loss_weights``, shape ``(B,)``), for
            the trainer to weight each member's loss.
        batch_size: batch size of this concept's samples (e.g. images at 8, long videos at 1);
            ``None``: the dataset's (``batch_size`` / ``frame_batch_sizes``). A batch never mixes
            batch sizes.
        options: dataset options this concept sets for its own sources, by their flat names
            (one of :data:`PER_SOURCE_OPTIONS`: ``frames``, ``fps``, ``resolution``,
            ``sampling``, ``caption_prefix``...). They are checked at construction like the
            dataset's own.
    """

    root: str | Path
    repeats: float = 1
    name: str | None = None
    caption: str | None = None
    samples_per_epoch: int | None = None
    loss_weight: float = 1.0
    batch_size: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        """Whether the concept's share of an epoch is drawn per epoch (fractional repeats or
        ``samples_per_epoch``) rather than fixed by its sources."""
        return self.samples_per_epoch is not None or (
            _is_number(self.repeats) and self.repeats != math.floor(self.repeats)
        )

    @property
    def copies(self) -> int:
        """How many copies of each source collect yields: ``ceil(repeats)`` (the last one of
        a fractional repeat is kept for a seeded share of the sources each epoch)."""
        return max(1, math.ceil(self.repeats))

    def identity(self) -> list[object]:
        """What the concept contributes to fingerprints (sample index, resume state); the
        fields added after the first four only when set, so earlier fingerprints still match."""
        out: list[object] = [
            os.path.abspath(os.fspath(self.root)),
            self.name,
            self.repeats,
            self.caption,
        ]
        extra = {
            "samples_per_epoch": self.samples_per_epoch,
            "loss_weight": self.loss_weight if self.loss_weight != 1.0 else None,
            "batch_size": self.batch_size,
            "options": {k: option_json(v) for k, v in sorted(self.options.items())}
            if self.options
            else None,
        }
        extra = {k: v for k, v in extra.items() if v is not None}
        if extra:
            out.append(extra)
        return out


def option_json(value: object) -> object:
    """An option value as JSON (tuples as lists, anything else as its repr)."""
    if isinstance(value, (tuple, list)):
        return [option_json(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


RootsLike = str | os.PathLike[str] | Concept | Sequence[str | os.PathLike[str] | Concept]
"""What ``roots`` may be: one path or concept, or a sequence mixing them."""


def _root_items(roots: object) -> list[object]:
    if isinstance(roots, (str, os.PathLike, Concept)):
        return [roots]
    if isinstance(roots, (bytes, bytearray)) or not isinstance(roots, Iterable):
        raise ConfigError(
            format_error(
                "roots",
                type(roots).__name__,
                "must be a path, a Concept or a list of them",
                _ROOT_HINT,
            )
        )
    return list(roots)


def _is_metadata_path(root: str) -> bool:
    return os.path.splitext(root)[1].lower() in METADATA_EXTENSIONS and not os.path.isdir(root)


def _default_name(root: str | os.PathLike[str]) -> str:
    absolute = os.path.abspath(os.fspath(root))
    name = PurePath(absolute).stem if _is_metadata_path(absolute) else PurePath(absolute).name
    return name or "root"


def concepts_from(roots: RootsLike) -> list[Concept]:
    """Normalise ``roots`` into concepts with unique names.

    Explicit names are kept as given (duplicates among them are reported by
    :func:`check_concepts`, not silently renamed, because the user chose them); default names are
    made unique against every other name by appending ``-2``, ``-3``... in order, so two folders
    both called ``clips`` still get distinct, stable keys.

    Raises:
        ConfigError: when ``roots`` or one of its items is not a path or a :class:`Concept`.
    """
    items = _root_items(roots)
    problems = []
    concepts: list[Concept] = []
    for index, item in enumerate(items):
        if isinstance(item, Concept):
            concepts.append(item)
        elif isinstance(item, (str, os.PathLike)) and isinstance(os.fspath(item), str):
            concepts.append(
                Concept(root=item if isinstance(item, (str, Path)) else os.fspath(item))
            )
        else:
            problems.append(
                format_error(
                    f"roots[{index}]",
                    type(item).__name__,
                    "must be a path (str or Path) or a Concept",
                    _ROOT_HINT,
                )
            )
    if problems:
        raise ConfigError(problems)
    used = {c.name for c in concepts if c.name is not None}
    named: list[Concept] = []
    for concept in concepts:
        if concept.name is not None:
            named.append(concept)
            continue
        base = _default_name(concept.root)
        name, suffix = base, 1
        while name in used:
            suffix += 1
            name = f"{base}-{suffix}"
        used.add(name)
        named.append(dataclasses.replace(concept, name=name))
    return named


def check_concepts(concepts: RootsLike) -> list[str]:
    """Every configuration problem of ``concepts``, each a formatted message.

    Checked up front, and all at once, so a wrong path or a typo in a CSV header costs one edit
    at construction rather than an empty or half-empty dataset discovered hours into a run.

    Args:
        concepts: anything :func:`concepts_from` accepts.

    Returns:
        The problems; an empty list when the configuration is usable.
    """
    try:
        normalised = concepts_from(concepts)
    except ConfigError as exc:
        return list(exc.problems)
    if not normalised:
        return [format_error("roots", "[]", "must name at least one root", _ROOT_HINT)]
    problems: list[str] = []
    seen: dict[str, int] = {}
    for index, concept in enumerate(normalised):
        label = f"concepts[{index}]"
        problems.extend(_check_one(concept, label))
        name = concept.name
        if isinstance(name, str):
            if name in seen:
                problems.append(
                    format_error(
                        f"{label}.name",
                        name,
                        f"is already used by concepts[{seen[name]}]",
                        "give every concept a distinct name (it prefixes every key)",
                    )
                )
            else:
                seen[name] = index
    return problems


def _check_one(concept: Concept, label: str) -> list[str]:
    problems: list[str] = []
    problems.extend(_check_balance(concept, label))
    name = concept.name
    if not isinstance(name, str) or not name or "/" in name:
        problems.append(
            format_error(
                f"{label}.name",
                name if isinstance(name, str) else type(name).__name__,
                "must be a non-empty str without '/'",
                "it prefixes every key of the concept",
            )
        )
    if concept.caption is not None and not isinstance(concept.caption, str):
        problems.append(
            format_error(
                f"{label}.caption", type(concept.caption).__name__, "must be a str or None"
            )
        )
    root = concept.root
    if not isinstance(root, (str, os.PathLike)) or not isinstance(os.fspath(root), str):
        problems.append(
            format_error(f"{label}.root", type(root).__name__, "must be a str or Path", _ROOT_HINT)
        )
        return problems
    path = os.fspath(root)
    if not os.path.exists(path):
        problems.append(format_error("root", path, "does not exist", _ROOT_HINT))
    elif os.path.isdir(path):
        if not os.access(path, os.R_OK | os.X_OK):
            problems.append(
                format_error("root", path, "is not readable", "make the folder readable")
            )
    elif not os.path.isfile(path) or os.path.splitext(path)[1].lower() not in METADATA_EXTENSIONS:
        problems.append(
            format_error("root", path, "is neither a directory nor a .jsonl/.csv file", _ROOT_HINT)
        )
    elif os.path.splitext(path)[1].lower() == ".csv":
        problem = _check_csv_header(path)
        if problem:
            problems.append(problem)
    elif not os.access(path, os.R_OK):
        problems.append(
            format_error("metadata file", path, "is not readable", "make the file readable")
        )
    return problems


def _check_csv_header(path: str) -> str | None:
    try:
        header, _ = csv_header(path)
    except OSError as exc:
        return format_error(
            "metadata file",
            path,
            f"could not be read ({type(exc).__name__}: {exc})",
            "make the file readable",
        )
    except csv.Error as exc:
        return format_error(
            "header of metadata file", path, f"could not be parsed ({exc})", "fix the CSV header"
        )
    if header is None:
        return format_error(
            "metadata file",
            path,
            "is empty",
            f"a CSV needs a header row with a path column ({', '.join(PATH_KEYS)})",
        )
    if find_column(header, PATH_KEYS) is None:
        return format_error(
            "header of metadata file",
            ",".join(header),
            f"has no path column (one of {', '.join(PATH_KEYS)})",
            "name the column holding the media paths 'path'",
            path=path,
        )
    return None


def _check_balance(concept: Concept, label: str) -> list[str]:
    """Problems of the repeats, balancing, loss weight, batch size and options of a concept."""
    problems: list[str] = []
    repeats = concept.repeats
    if not _is_number(repeats) or not math.isfinite(repeats) or repeats <= 0:
        problems.append(
            format_error(
                f"{label}.repeats",
                repeats,
                "must be a finite number > 0",
                "use 1 to sample the concept once per epoch, 2.5 for two and a half times",
            )
        )
    spe = concept.samples_per_epoch
    if spe is not None:
        if isinstance(spe, bool) or not isinstance(spe, int) or spe < 1:
            problems.append(
                format_error(f"{label}.samples_per_epoch", spe, "must be an int >= 1 or None")
            )
        elif repeats != 1:
            problems.append(
                format_error(
                    f"{label}.samples_per_epoch",
                    spe,
                    f"cannot be combined with repeats={repeats}",
                    "set one of them: samples_per_epoch fixes the concept's share of an epoch",
                )
            )
    weight = concept.loss_weight
    if not _is_number(weight) or not math.isfinite(weight) or weight < 0:
        problems.append(
            format_error(f"{label}.loss_weight", weight, "must be a finite number >= 0")
        )
    size = concept.batch_size
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        problems.append(format_error(f"{label}.batch_size", size, "must be an int >= 1 or None"))
    options = concept.options
    if not isinstance(options, Mapping):
        problems.append(
            format_error(
                f"{label}.options",
                type(options).__name__,
                "must be a mapping of option names to values",
                'e.g. options={"frames": (81,), "fps": 16}',
            )
        )
        return problems
    for name in options:
        if name not in PER_SOURCE_OPTIONS:
            problems.append(
                format_error(
                    f"{label}.options",
                    name,
                    "is not an option a concept can set for its own sources",
                    f"per-source options: {', '.join(PER_SOURCE_OPTIONS)}; set the others "
                    "on the dataset",
                )
            )
    return problems
