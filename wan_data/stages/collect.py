"""The first pipeline stage: find media files and their captions.

Collect turns the user's roots (folders walked recursively, or ``.jsonl`` / ``.csv`` metadata
files) into :class:`~wan_data.items.Source` items. It never opens a media file: everything that
can go wrong with one file (a dangling link, a path escaping its root, a folder named like a
video, a bad metadata line) becomes a :class:`~wan_data.items.Failed` item, so one bad entry in a
million costs a line in the report instead of the run. Problems with the configuration itself
(a root that does not exist, a CSV without a path column) are gathered into one
:class:`~wan_data.errors.ConfigError` before anything is yielded, so one edit fixes them all.

Order is deterministic (concepts in the given order, files sorted by relative POSIX path,
metadata entries in file order) because keys, caches and seeded sampling all depend on it.

Parsing the metadata files themselves lives in :mod:`wan_data.sources.metadata_files`; this module
turns their records into entries (paths checked, keys made unique).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import logging
import os
import posixpath
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TypeVar

from wan_data.errors import ConfigError, format_error
from wan_data.failures.mechanism import StageContext, failure_hint
from wan_data.failures.policy import ErrorPolicy
from wan_data.items import Failed, MediaType, Source
from wan_data.observe.metrics import StageStats
from wan_data.sources.metadata_files import (
    CAPTION_KEYS,
    PATH_KEYS,
    BadLine,
    csv_header,
    find_column,
    parse_csv,
    parse_jsonl,
    split_caption,
)

__all__ = [
    "CAPTION_KEYS",
    "IMAGE_EXTENSIONS",
    "METADATA_EXTENSIONS",
    "MISSING_CAPTION_MODES",
    "PATH_KEYS",
    "VIDEO_EXTENSIONS",
    "Concept",
    "RootsLike",
    "check_concepts",
    "collect",
    "concepts_from",
    "fallback_captions",
]

logger = logging.getLogger("wan_data")
T = TypeVar("T")

STAGE = "collect"

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".mp4",
        ".mov",
        ".m4v",
        ".mkv",
        ".webm",
        ".avi",
        ".mpg",
        ".mpeg",
        ".ts",
        ".mts",
        ".m2ts",
        ".flv",
        ".wmv",
        ".3gp",
        ".ogv",
        ".gif",
    }
)
"""Lower-case extensions (with the dot) collected as videos."""

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
"""Lower-case extensions (with the dot) collected as images (one-frame clips)."""

METADATA_EXTENSIONS: frozenset[str] = frozenset({".jsonl", ".csv"})
"""Extensions of a root that is a metadata file instead of a folder."""

MISSING_CAPTION_MODES: tuple[str, ...] = ("empty", "filename", "skip", "error")
"""Values of ``collect(missing_caption=...)``."""

_ROOT_HINT = "pass a folder of videos/images or a .jsonl/.csv metadata file"
_OUTSIDE_HINT = (
    "move the file under its root, or pass allow_outside_root=True if following links out of "
    "the root is intended"
)
_SIDECAR_OUTSIDE_HINT = (
    "it was not read and its media file is skipped; move the caption under the root (or "
    "replace the link with a copy), or pass allow_outside_root=True if following links out of "
    "the root is intended"
)


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


# --------------------------------------------------------------------------------------------
# Concepts and their checks
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------


@dataclass
class _Entry:
    """One candidate found by a walk or a metadata file, before its captions are resolved."""

    key: str
    path: str
    media_type: MediaType | None = None
    failure: Failed | None = None
    sidecar: str | None = None  # caption file to read, when one exists
    captions: tuple[str, ...] = ()  # from the metadata file
    origin: str = ""  # for messages: where the entry came from (metadata file:line)


@dataclass
class _Run:
    """What every helper of one collect() call shares."""

    policy: ErrorPolicy
    context: StageContext
    stats: StageStats
    missing_caption: str
    caption_extension: str
    allow_outside_root: bool
    visited: list[str] | None = None


def collect(
    roots: RootsLike,
    *,
    policy: ErrorPolicy,
    context: StageContext | None = None,
    missing_caption: str = "empty",
    caption_extension: str = ".txt",
    allow_outside_root: bool = False,
    visited: list[str] | None = None,
) -> Iterator[Source | Failed]:
    """Find the media files of ``roots`` and their caption candidates.

    The configuration is checked when this is called (not when iteration starts), so a bad root
    raises at the call site. Sources of a concept with ``repeats=n`` are yielded ``n`` times in
    a row, keyed ``<key>``, ``<key>@1`` ... ``<key>@{n-1}``; failures are yielded once.

    Args:
        roots: folders, metadata files or :class:`Concept` objects (see :func:`concepts_from`).
        policy: decides skip / retry / fatal for I/O errors (transient ones on network
            filesystems are retried).
        context: counters (``context.metrics.stage("collect")`` and ``warnings``); a private one
            when omitted.
        missing_caption: what to do with a file that has no caption: ``"empty"`` (no
            candidates), ``"filename"`` (its stem, ``_`` and ``-`` as spaces), ``"skip"``
            (``Failed(reason="missing_caption")``) or ``"error"`` (raise one
            :class:`ConfigError` listing every such file, before anything is yielded).
        caption_extension: extension of the sidecar caption file next to each media file.
        allow_outside_root: accept files whose real path (after symlinks) is outside the real
            path of their root. Without it, such a file, and a media file whose caption sidecar
            would be read from such a path, is ``Failed(reason="outside_root")``: links must
            not carry files from elsewhere (a sidecar linked to ``/etc/passwd``) into the data.
        visited: when given, every folder the walk lists and every metadata file read is
            appended to it (what a snapshot of this result depends on; see ``sample_index``).

    Raises:
        ConfigError: on a bad configuration (at call time) or, with ``missing_caption="error"``,
            when files lack captions (on first iteration).
    """
    problems = check_concepts(roots)
    if missing_caption not in MISSING_CAPTION_MODES:
        problems.append(
            format_error(
                "missing_caption",
                missing_caption,
                f"must be one of {', '.join(MISSING_CAPTION_MODES)}",
            )
        )
    if (
        not isinstance(caption_extension, str)
        or len(caption_extension) < 2
        or not caption_extension.startswith(".")
        or "/" in caption_extension
        or caption_extension.lower() in VIDEO_EXTENSIONS | IMAGE_EXTENSIONS
    ):
        problems.append(
            format_error(
                "caption_extension",
                caption_extension,
                "must be a non-media extension starting with '.'",
                "the default is '.txt'",
            )
        )
    if problems:
        raise ConfigError(problems)
    concepts = concepts_from(roots)
    ctx = context if context is not None else StageContext()
    run = _Run(
        policy=policy,
        context=ctx,
        stats=ctx.metrics.stage(STAGE),
        missing_caption=missing_caption,
        caption_extension=caption_extension,
        allow_outside_root=allow_outside_root,
        visited=visited,
    )
    return _collect(concepts, run)


def _collect(concepts: list[Concept], run: _Run) -> Iterator[Source | Failed]:
    if run.missing_caption == "error":
        # Every file must be looked at before the first yield, or the error would come after
        # part of the data had already been handed out.
        resolved = [
            (c, e, _resolve(e, c, run)) for c in concepts for e in _timed(_entries(c, run), run)
        ]
        missing = [r for _, _, r in resolved if isinstance(r, str)]
        if missing:
            raise ConfigError(missing)
        for concept, entry, result in resolved:
            yield from _emit(concept, entry, result, run)
        return
    for concept in concepts:
        for entry in _timed(_entries(concept, run), run):
            started = time.perf_counter()
            result = _resolve(entry, concept, run)
            run.stats.seconds += time.perf_counter() - started
            yield from _emit(concept, entry, result, run)


def _timed(entries: Iterator[_Entry], run: _Run) -> Iterator[_Entry]:
    """Count the time spent producing entries, but not the time the consumer holds them."""
    while True:
        started = time.perf_counter()
        try:
            entry = next(entries)
        except StopIteration:
            run.stats.seconds += time.perf_counter() - started
            return
        run.stats.seconds += time.perf_counter() - started
        yield entry


def _entries(concept: Concept, run: _Run) -> Iterator[_Entry]:
    root = os.fspath(concept.root)
    if os.path.isdir(root):
        entries = _walk(concept, run)
        logger.info("collect: concept %r: %d entries under %s", concept.name, len(entries), root)
        yield from entries
    else:
        yield from _metadata_entries(concept, run)


def _emit(
    concept: Concept, entry: _Entry, result: Failed | tuple[str, ...] | str, run: _Run
) -> Iterator[Source | Failed]:
    stats = run.stats
    stats.items_in += 1
    if isinstance(result, Failed):
        stats.failed += 1
        stats.by_reason[result.reason] += 1
        stats.by_error_type[result.error_type] += 1
        logger.warning("skipped %s at stage=collect: %s", result.path, result.message)
        yield result
        return
    assert entry.media_type is not None and not isinstance(result, str)
    repeats = concept.repeats
    for r in range(repeats):
        source = Source(
            key=entry.key if r == 0 else f"{entry.key}@{r}",
            path=entry.path,
            media_type=entry.media_type,
            captions=result,
            concept=concept.name or "",
            repeat=r,
        )
        stats.items_out += 1
        logger.debug("stage=collect out=Source key=%s captions=%d", source.key, len(result))
        yield source


# --------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------


def _filename_caption(path: str) -> tuple[str, ...]:
    stem = PurePath(path).stem
    words = stem.replace("_", " ").replace("-", " ").split()
    return (" ".join(words),) if words else ()


def fallback_captions(
    path: str, concept_caption: str | None, missing_caption: str
) -> tuple[str, ...] | None:
    """The captions of a file whose sidecar is absent or empty: the concept's caption, else
    what ``missing_caption`` says (``None`` for ``"skip"`` and ``"error"``: no captions)."""
    if concept_caption is not None and split_caption(concept_caption):
        return split_caption(concept_caption)
    if missing_caption == "empty":
        return ()
    if missing_caption == "filename":
        return _filename_caption(path)
    return None


def _resolve(entry: _Entry, concept: Concept, run: _Run) -> Failed | tuple[str, ...] | str:
    """Caption candidates of ``entry``; a Failed to skip it; a message string in error mode."""
    if entry.failure is not None:
        return entry.failure
    if entry.captions:
        return entry.captions
    if entry.sidecar is not None:
        captions = _read_sidecar(entry, run)
        if isinstance(captions, Failed) or captions:
            return captions
    fallback = fallback_captions(entry.path, concept.caption, run.missing_caption)
    if fallback is not None:
        return fallback
    mode = run.missing_caption
    sidecar = os.path.splitext(entry.path)[0] + run.caption_extension
    where = "no metadata caption, " if entry.origin else ""
    message = format_error(
        "caption of",
        entry.path,
        f"is missing ({where}no non-empty {sidecar} and no concept caption)",
        "write the caption file, set Concept(caption=...), or pass missing_caption='empty' or "
        "'filename'",
        path=entry.path,
        stage=STAGE,
    )
    if mode == "error":
        return message
    return Failed(
        key=entry.key,
        path=entry.path,
        stage=STAGE,
        reason="missing_caption",
        error_type="SampleError",
        message=message,
    )


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _read_sidecar(entry: _Entry, run: _Run) -> tuple[str, ...] | Failed:
    assert entry.sidecar is not None
    sidecar = entry.sidecar
    data, failed = _guarded(
        run,
        lambda: _read_bytes(sidecar),
        key=entry.key,
        path=entry.path,
        what="caption file",
        value=sidecar,
    )
    if failed is not None:
        return failed
    assert data is not None
    return split_caption(_decode(data, sidecar, "caption_decode_errors", run))


def _decode(data: bytes, path: str, counter: str, run: _Run) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        run.context.metrics.warnings[counter] += 1
        logger.warning(
            "%s",
            format_error(
                "text file",
                path,
                f"is not valid UTF-8 ({exc.reason} at byte {exc.start})",
                "the bad bytes were replaced with U+FFFD; re-save the file as UTF-8",
                path=path,
                stage=STAGE,
            ),
        )
        return data.decode("utf-8-sig", errors="replace")


# --------------------------------------------------------------------------------------------
# Folder roots
# --------------------------------------------------------------------------------------------


def _media_type(name: str) -> MediaType | None:
    ext = os.path.splitext(name)[1].lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    return None


def _inside(real: str, root_real: str) -> bool:
    if real == root_real:
        return True
    prefix = root_real if root_real.endswith(os.sep) else root_real + os.sep
    return real.startswith(prefix)


def _failed(
    key: str, path: str, reason: str, error_type: str, message: str, attempts: int = 1
) -> Failed:
    return Failed(
        key=key,
        path=path,
        stage=STAGE,
        reason=reason,
        error_type=error_type,
        message=message,
        attempts=attempts,
    )


def _guarded(
    run: _Run, fn: Callable[[], T], *, key: str, path: str, what: str, value: str
) -> tuple[T | None, Failed | None]:
    """Run one I/O call under the policy: retried when transient, a Failed when skipped."""
    result, exc, decision, attempts = run.policy.call(fn, stage=STAGE, key=key, path=path)
    if exc is None:
        return result, None
    assert decision is not None
    message = format_error(
        what,
        value,
        f"could not be read ({type(exc).__name__}: {str(exc)[:300]})",
        failure_hint(decision.reason),
        path=path,
        stage=STAGE,
    )
    return None, _failed(key, path, decision.reason, type(exc).__name__, message, attempts)


def _outside_failure(key: str, path: str, real: str, root_real: str) -> Failed:
    message = format_error(
        "real path",
        real,
        f"lies outside the root {root_real!r}",
        _OUTSIDE_HINT,
        path=path,
        stage=STAGE,
    )
    return _failed(key, path, "outside_root", "ValueError", message)


def _sidecar_outside_failure(
    key: str, path: str, sidecar: str, real: str, root_real: str
) -> Failed:
    """The skip of media file ``path`` whose caption ``sidecar`` resolves outside the root.

    The media file is skipped rather than collected without its caption: reading the sidecar
    would put whatever the link points at (``/etc/passwd``, another tenant's data) into a
    caption, and silently dropping it would train on a caption the user did not write.
    """
    message = format_error(
        "caption file",
        sidecar,
        f"resolves to {real!r}, outside the root {root_real!r}",
        _SIDECAR_OUTSIDE_HINT,
        path=path,
        stage=STAGE,
    )
    return _failed(key, path, "outside_root", "ValueError", message)


def _walk(concept: Concept, run: _Run) -> list[_Entry]:
    """Every media file and failure under a folder root, sorted by relative POSIX path.

    Sorting the complete list (rather than each folder's listing) is what makes the order a pure
    function of the relative paths, independent of filesystem listing order.
    """
    root_abs = os.path.abspath(os.fspath(concept.root))
    root_real = os.path.realpath(root_abs)
    name = concept.name or ""
    found: list[tuple[str, _Entry]] = []
    # (relative posix dir, absolute dir, real dir, real paths of the dirs above, for loops)
    stack: list[tuple[str, str, str, frozenset[str]]] = [
        ("", root_abs, root_real, frozenset({root_real}))
    ]
    while stack:
        rel_dir, abs_dir, real_dir, ancestors = stack.pop()
        dir_key = f"{name}/{rel_dir}"
        if run.visited is not None:
            run.visited.append(abs_dir)
        listing, failed = _guarded(
            run,
            functools.partial(_list_dir, abs_dir),
            key=dir_key,
            path=abs_dir,
            what="folder",
            value=abs_dir,
        )
        if failed is not None:
            found.append((rel_dir, _Entry(key=dir_key, path=abs_dir, failure=failed)))
            continue
        assert listing is not None
        visible = [e for e in listing if not e.name.startswith(".")]
        by_name = {e.name: e for e in visible}
        media_stems = {os.path.splitext(e.name)[0] for e in visible if _media_type(e.name)}
        for entry in visible:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            abs_path = os.path.join(abs_dir, entry.name)
            key = f"{name}/{rel}"
            media_type = _media_type(entry.name)
            kind, real, failure = _classify_entry(entry, abs_path, real_dir, key, media_type, run)
            if failure is not None:
                found.append((rel, _Entry(key=key, path=abs_path, failure=failure)))
                continue
            if kind == "dir":
                if not run.allow_outside_root and not _inside(real, root_real):
                    failure = _outside_failure(key, abs_path, real, root_real)
                    found.append((rel, _Entry(key=key, path=abs_path, failure=failure)))
                    continue
                if media_type is not None:
                    message = format_error(
                        "media path",
                        abs_path,
                        "is a directory, not a file",
                        "its contents are collected anyway; rename the folder so its name does "
                        "not end in a media extension",
                        path=abs_path,
                        stage=STAGE,
                    )
                    failure = _failed(key, abs_path, "not_a_file", "IsADirectoryError", message)
                    found.append((rel, _Entry(key=key, path=abs_path, failure=failure)))
                if real in ancestors:
                    run.context.metrics.warnings["symlink_loop"] += 1
                    logger.warning(
                        "%s",
                        format_error(
                            "folder link",
                            abs_path,
                            f"loops back to {real!r}",
                            "not followed; remove the link",
                            path=abs_path,
                            stage=STAGE,
                        ),
                    )
                    continue
                stack.append((rel, abs_path, real, ancestors | {real}))
                continue
            if media_type is None:
                stem, ext = os.path.splitext(entry.name)
                is_sidecar = ext == run.caption_extension and stem in media_stems
                if not is_sidecar:
                    run.context.metrics.warnings["ignored_non_media"] += 1
                continue
            if kind == "special":
                message = format_error(
                    "media path",
                    abs_path,
                    "is a special file (fifo, socket or device), not a regular file",
                    failure_hint("not_a_file"),
                    path=abs_path,
                    stage=STAGE,
                )
                failure = _failed(key, abs_path, "not_a_file", "OSError", message)
                found.append((rel, _Entry(key=key, path=abs_path, failure=failure)))
                continue
            if not run.allow_outside_root and not _inside(real, root_real):
                failure = _outside_failure(key, abs_path, real, root_real)
                found.append((rel, _Entry(key=key, path=abs_path, failure=failure)))
                continue
            caption_name = os.path.splitext(entry.name)[0] + run.caption_extension
            caption_entry = by_name.get(caption_name)
            sidecar = None
            if caption_entry is not None and _is_regular_file(caption_entry):
                sidecar = os.path.join(abs_dir, caption_name)
                # A plain file in a folder inside the root is inside; only a link can lead out
                # (itself, or through a linked folder in its target), so only links cost a
                # realpath.
                if not run.allow_outside_root and _is_link(caption_entry):
                    caption_real = os.path.realpath(sidecar)
                    if not _inside(caption_real, root_real):
                        failure = _sidecar_outside_failure(
                            key, abs_path, sidecar, caption_real, root_real
                        )
                        found.append((rel, _Entry(key=key, path=abs_path, failure=failure)))
                        continue
            found.append(
                (rel, _Entry(key=key, path=abs_path, media_type=media_type, sidecar=sidecar))
            )
    found.sort(key=lambda pair: pair[0])
    return [entry for _, entry in found]


def _list_dir(path: str) -> list[os.DirEntry[str]]:
    with os.scandir(path) as it:
        return sorted(it, key=lambda e: e.name)


def _is_regular_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _is_link(entry: os.DirEntry[str]) -> bool:
    """Whether ``entry`` is a symlink; ``True`` when that cannot be told, so it is resolved."""
    try:
        return entry.is_symlink()
    except OSError:
        return True


def _classify_entry(
    entry: os.DirEntry[str],
    abs_path: str,
    real_dir: str,
    key: str,
    media_type: MediaType | None,
    run: _Run,
) -> tuple[str, str, Failed | None]:
    """``(kind, real path, failure)`` of one listing entry; kind is file, dir, special or ''.

    Only symlinks cost a ``stat`` and a ``realpath``: for everything else the listing's file
    type and the parent's real path are enough, which matters on folders of a million files.
    """
    try:
        is_link = entry.is_symlink()
        if not is_link:
            if entry.is_dir(follow_symlinks=False):
                return "dir", os.path.join(real_dir, entry.name), None
            if entry.is_file(follow_symlinks=False):
                return "file", os.path.join(real_dir, entry.name), None
            return "special", os.path.join(real_dir, entry.name), None
    except OSError:
        is_link = False  # fall through to a full stat, whose error is reported below
    st, failed = _guarded(
        run, lambda: os.stat(abs_path), key=key, path=abs_path, what="file", value=abs_path
    )
    if failed is not None:
        has_ext = bool(os.path.splitext(entry.name)[1])
        if media_type is None and has_ext:
            # A broken link named like a document is no loss (the caller counts it as ignored);
            # one named like media, or with no extension at all (a linked folder, maybe a whole
            # wrong mount), is reported.
            return "", "", None
        if failed.reason == "missing" and is_link:
            target = _readlink(abs_path)
            message = format_error(
                "symlink target",
                target,
                "does not exist",
                failure_hint("missing"),
                path=abs_path,
                stage=STAGE,
            )
            failed = dataclasses.replace(failed, message=message, error_type="FileNotFoundError")
        return "", "", failed
    assert st is not None
    real = os.path.realpath(abs_path) if is_link else os.path.join(real_dir, entry.name)
    if stat.S_ISDIR(st.st_mode):
        return "dir", real, None
    if stat.S_ISREG(st.st_mode):
        return "file", real, None
    return "special", real, None


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


# --------------------------------------------------------------------------------------------
# Metadata-file roots
# --------------------------------------------------------------------------------------------


def _bad_utf8_warner(path: str, run: _Run) -> Callable[[int], None]:
    """Count and log each line of metadata file ``path`` that is not valid UTF-8."""

    def warn(number: int) -> None:
        run.context.metrics.warnings["metadata_decode_errors"] += 1
        logger.warning(
            "%s",
            format_error(
                "metadata line",
                f"{path}:{number}",
                "is not valid UTF-8",
                "the bad bytes were replaced with U+FFFD; re-save the file as UTF-8",
                stage=STAGE,
            ),
        )

    return warn


def _metadata_entries(concept: Concept, run: _Run) -> Iterator[_Entry]:
    meta = os.path.abspath(os.fspath(concept.root))
    base = os.path.dirname(meta)
    root_real = os.path.realpath(base)
    if run.visited is not None:
        run.visited.append(meta)
    parse = parse_jsonl if meta.lower().endswith(".jsonl") else parse_csv
    count = 0
    seen: dict[str, int] = {}
    records, failed = _guarded(
        run,
        lambda: parse(meta, _bad_utf8_warner(meta, run)),
        key=f"{concept.name}/",
        path=meta,
        what="metadata file",
        value=meta,
    )
    if failed is not None:
        yield _Entry(key=failed.key, path=meta, failure=failed)
        return
    assert records is not None
    for number, record in records:
        count += 1
        origin = f"{meta}:{number}"
        if isinstance(record, BadLine):
            message = format_error(
                "metadata line",
                record.text[:200],
                record.rule,
                f"fix or remove the line; each entry needs a '{PATH_KEYS[0]}' (or "
                f"{', '.join(repr(k) for k in PATH_KEYS[1:])}) and may have a caption",
                path=origin,
                stage=STAGE,
            )
            failure = _failed(
                f"{concept.name}:{number}", origin, "bad_metadata_line", record.error_type, message
            )
            yield _Entry(key=failure.key, path=origin, failure=failure)
            continue
        written, captions = record.path, record.captions
        key_path = posixpath.normpath(PurePath(written).as_posix())
        key = f"{concept.name}/{key_path}"
        occurrence = seen.get(key, 0) + 1
        seen[key] = occurrence
        if occurrence > 1:
            run.context.metrics.warnings["duplicate_metadata_entries"] += 1
            key = f"{key}~{occurrence}"
        abs_path = os.path.abspath(os.path.join(base, written))
        yield _metadata_entry(key, abs_path, written, captions, origin, root_real, run)
    logger.info("collect: concept %r: %d lines read from %s", concept.name, count, meta)


def _metadata_entry(
    key: str,
    abs_path: str,
    written: str,
    captions: tuple[str, ...],
    origin: str,
    root_real: str,
    run: _Run,
) -> _Entry:
    media_type = _media_type(abs_path)
    if media_type is None:
        ext = os.path.splitext(abs_path)[1]
        message = format_error(
            "extension of listed file",
            ext,
            "is not a supported video or image extension",
            f"list only media files ({' '.join(sorted(VIDEO_EXTENSIONS | IMAGE_EXTENSIONS))}); "
            f"listed at {origin}",
            path=abs_path,
            stage=STAGE,
        )
        failure = _failed(key, abs_path, "unsupported_extension", "ValueError", message)
        return _Entry(key=key, path=abs_path, failure=failure)
    st, failed = _guarded(
        run, lambda: os.stat(abs_path), key=key, path=abs_path, what="listed file", value=written
    )
    if failed is not None:
        if failed.reason == "missing":
            message = format_error(
                "listed file",
                written,
                f"does not exist (listed at {origin})",
                failure_hint("missing"),
                path=abs_path,
                stage=STAGE,
            )
            failed = dataclasses.replace(failed, message=message, error_type="FileNotFoundError")
        return _Entry(key=key, path=abs_path, failure=failed)
    assert st is not None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a special file"
        message = format_error(
            "listed file",
            written,
            f"is {kind}, not a regular file (listed at {origin})",
            failure_hint("not_a_file"),
            path=abs_path,
            stage=STAGE,
        )
        error_type = "IsADirectoryError" if stat.S_ISDIR(st.st_mode) else "OSError"
        failure = _failed(key, abs_path, "not_a_file", error_type, message)
        return _Entry(key=key, path=abs_path, failure=failure)
    real = os.path.realpath(abs_path)
    if not run.allow_outside_root and not _inside(real, root_real):
        return _Entry(
            key=key, path=abs_path, failure=_outside_failure(key, abs_path, real, root_real)
        )
    candidate = os.path.splitext(abs_path)[0] + run.caption_extension
    sidecar = candidate if os.path.isfile(candidate) else None
    if sidecar is not None and not run.allow_outside_root:
        # The sidecar's folder is the media path's folder as written, which may be a link that
        # leads out while the media file links back in: resolve the sidecar itself.
        caption_real = os.path.realpath(sidecar)
        if not _inside(caption_real, root_real):
            if not captions:  # the sidecar would be read: skip the file, as for media
                failure = _sidecar_outside_failure(key, abs_path, sidecar, caption_real, root_real)
                return _Entry(key=key, path=abs_path, failure=failure)
            sidecar = None  # the metadata caption wins; never keep a way to read it
    return _Entry(
        key=key,
        path=abs_path,
        media_type=media_type,
        sidecar=sidecar,
        captions=captions,
        origin=origin,
    )
