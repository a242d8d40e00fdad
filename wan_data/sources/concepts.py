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
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from wan_data.errors import ConfigError, format_error
from wan_data.sources.extensions import METADATA_EXTENSIONS
from wan_data.sources.metadata_files import PATH_KEYS, csv_header, find_column

__all__ = ["Concept", "RootsLike", "check_concepts", "concepts_from"]

_ROOT_HINT = "pass a folder of videos/images or a .jsonl/.csv metadata file"


@dataclass(frozen=True)
class Concept:
    """A root folder (or a metadata file) with its own repeat count.

    Concepts exist so a small, important subset (a character, a style) can be sampled more often
    than the bulk of the data without copying files: each of its sources is yielded ``repeats``
    times with distinct keys, so later stages pick different windows and captions for each copy.

    Attributes:
        root: a directory (walked recursively) or a ``.jsonl`` / ``.csv`` metadata file.
        repeats: how many times each source is yielded (repeat index ``0 .. repeats-1``).
        name: prefix of every key; defaults to the folder's name (a metadata file: its stem).
            Must be unique: colliding default names get ``-2``, ``-3``... in order.
        caption: caption for files of this concept that have none of their own.
    """

    root: str | Path
    repeats: int = 1
    name: str | None = None
    caption: str | None = None


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
    repeats = concept.repeats
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        problems.append(
            format_error(
                f"{label}.repeats",
                repeats,
                "must be an int >= 1",
                "use 1 to sample the concept once per epoch",
            )
        )
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
