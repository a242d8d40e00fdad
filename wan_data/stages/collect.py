"""The first pipeline stage: find media files and their captions.

Collect turns the user's roots (folders walked recursively, or ``.jsonl`` / ``.csv`` metadata
files) into :class:`~wan_data.items.Source` items. It never opens a media file: everything that
can go wrong with one file (a dangling link, a path escaping its root, a folder named like a
video, a bad metadata line, an unreadable caption) becomes a :class:`~wan_data.items.Failed`
item, so one bad entry in a million costs a line in the report instead of the run. Problems with
the configuration itself (a root that does not exist, a CSV without a path column) are gathered
into one :class:`~wan_data.errors.ConfigError` before anything is yielded, so one edit fixes them
all.

The stage is two steps. Discovery (:mod:`wan_data.sources`) walks folders and reads metadata
files into entries; resolution (here) checks each entry and reads its captions, one entry at a
time inside :func:`~wan_data.failures.mechanism.map_stage`, so an exception there is decided by
the error policy and counted, logged and fed to the circuit breaker like in every other stage.
A skip discovery found is carried in its entry and returned through the same mechanism; the
I/O discovery itself needs (listing a folder, ``stat``-ing a link, reading a metadata file) is
decided by the same policy, for reasons given at :func:`~wan_data.sources.entries.discover_io`.

Order is deterministic (concepts in the given order, files sorted by relative POSIX path,
metadata entries in file order) because keys, caches and seeded sampling all depend on it.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import time
from collections.abc import Iterable, Iterator

from wan_data.errors import ConfigError, format_error
from wan_data.failures.mechanism import StageContext, map_stage
from wan_data.failures.policy import ErrorPolicy
from wan_data.items import Failed, Source
from wan_data.observe.metrics import StageStats
from wan_data.sources.captions import MISSING_CAPTION_MODES, fallback_captions, read_sidecar
from wan_data.sources.concepts import Concept, RootsLike, check_concepts, concepts_from
from wan_data.sources.entries import STAGE, CollectRun, Entry
from wan_data.sources.extensions import IMAGE_EXTENSIONS, METADATA_EXTENSIONS, VIDEO_EXTENSIONS
from wan_data.sources.metadata_entries import check_listed, metadata_entries
from wan_data.sources.metadata_files import CAPTION_KEYS, PATH_KEYS
from wan_data.sources.walk import walk
from wan_data.stages.base import Stage

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
        context: counters (``context.metrics.stage("collect")`` and ``warnings``) and the
            stage's circuit breaker; a private one when omitted.
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
    run = CollectRun(
        policy=policy,
        context=context if context is not None else StageContext(),
        missing_caption=missing_caption,
        caption_extension=caption_extension,
        allow_outside_root=allow_outside_root,
        visited=visited,
    )
    return _collect(concepts, run)


def _collect(concepts: list[Concept], run: CollectRun) -> Iterator[Source | Failed]:
    entries = _timed(_discover(concepts, run), run.context.metrics.stage(STAGE))
    if run.missing_caption == "error":
        yield from _all_or_error(entries, run)
        return
    yield from map_stage(
        entries,
        functools.partial(_resolve_one, run=run),
        stage=STAGE,
        accepts=Entry,
        policy=run.policy,
        context=run.context,
    )


def _discover(concepts: list[Concept], run: CollectRun) -> Iterator[Entry]:
    for concept in concepts:
        root = os.fspath(concept.root)
        if os.path.isdir(root):
            entries = walk(concept, run)
            logger.info(
                "collect: concept %r: %d entries under %s", concept.name, len(entries), root
            )
            yield from entries
        else:
            yield from metadata_entries(concept, run)


def _timed(entries: Iterator[Entry], stats: StageStats) -> Iterator[Entry]:
    """Count the time spent producing entries (``map_stage`` counts the time resolving them),
    but not the time the consumer holds them."""
    while True:
        started = time.perf_counter()
        try:
            entry = next(entries)
        except StopIteration:
            stats.seconds += time.perf_counter() - started
            return
        stats.seconds += time.perf_counter() - started
        yield entry


def _resolve_one(entry: Entry, run: CollectRun) -> list[Source | Failed]:
    """Every output of one entry: its sources (one per repeat) or its skip; may raise."""
    resolved = _resolve(entry, run)
    if isinstance(resolved, Failed):
        return [resolved]
    checked, captions = resolved
    assert not isinstance(captions, str)  # a message only with missing_caption="error"
    return list(_sources(checked, captions))


def _resolve(entry: Entry, run: CollectRun) -> Failed | tuple[Entry, tuple[str, ...] | str]:
    """``(checked entry, caption candidates)``, or a Failed to skip it; in error mode, a
    missing caption is a message string instead of candidates.

    Raises:
        OSError: when the listed file cannot be ``stat``-ed or the sidecar cannot be read.
    """
    if entry.failure is not None:
        return entry.failure
    if entry.written is not None:
        checked = check_listed(entry, run)
        if isinstance(checked, Failed):
            return checked
        entry = checked
    if entry.captions:
        return entry, entry.captions
    if entry.sidecar is not None:
        captions = read_sidecar(entry.sidecar, run.context)
        if captions:
            return entry, captions
    fallback = fallback_captions(entry.path, entry.concept.caption, run.missing_caption)
    if fallback is not None:
        return entry, fallback
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
    if run.missing_caption == "error":
        return entry, message
    return Failed(
        key=entry.key,
        path=entry.path,
        stage=STAGE,
        reason="missing_caption",
        error_type="SampleError",
        message=message,
    )


def _sources(entry: Entry, captions: tuple[str, ...]) -> Iterator[Source]:
    assert entry.media_type is not None
    # ceil(repeats) copies: with a fractional repeat the last copy is kept for a seeded share
    # of the sources each epoch (the plan's balancing, see wan_data/planning/balance.py).
    for r in range(entry.concept.copies):
        yield Source(
            key=entry.key if r == 0 else f"{entry.key}@{r}",
            path=entry.path,
            media_type=entry.media_type,
            captions=captions,
            concept=entry.concept.name or "",
            repeat=r,
            loss_weight=float(entry.concept.loss_weight),
        )


def _all_or_error(entries: Iterator[Entry], run: CollectRun) -> Iterator[Source | Failed]:
    """``missing_caption="error"``: resolve every entry, raise if any lacks a caption, then yield.

    Every file must be looked at before the first yield, or the error would come after part of
    the data had already been handed out. The entries are resolved inside ``map_stage`` (which
    counts them in, decides on exceptions and counts every skip) by a function that returns
    only skips; the sources are made, and counted out, once no file lacks a caption, so an
    error leaves the stage's ``out`` count at 0.
    """
    resolved: list[tuple[Entry, tuple[str, ...]] | Failed] = []
    missing: list[str] = []

    def check(entry: Entry) -> list[Failed]:
        result = _resolve(entry, run)
        if isinstance(result, Failed):
            return [result]
        checked, captions = result
        if isinstance(captions, str):
            missing.append(captions)
        else:
            resolved.append((checked, captions))
        return []

    # map_stage yields a skip right after resolving its entry, so appending it here keeps
    # the entries' order in ``resolved``.
    for failure in map_stage(
        entries, check, stage=STAGE, accepts=Entry, policy=run.policy, context=run.context
    ):
        resolved.append(failure)
    if missing:
        raise ConfigError(missing)
    stats = run.context.metrics.stage(STAGE)
    for item in resolved:
        if isinstance(item, Failed):
            yield item  # counted and logged by map_stage already
            continue
        for source in _sources(*item):
            stats.items_out += 1
            logger.debug("stage=%s out=Source key=%s", STAGE, source.key)
            yield source


def _no_work(item: object) -> list[Source | Failed]:  # pragma: no cover - accepts nothing
    raise TypeError(f"{type(item).__name__} reached a stage that accepts nothing")


class Collect(Stage[Concept, Source]):
    """Stage ``collect``: ``Concept → Source`` (one per media file, ``repeats`` times) or
    ``Failed``; see :func:`collect` for each option.

    The input items are the roots as :class:`~wan_data.sources.concepts.Concept` objects
    (``concepts_from(roots)`` turns folders and metadata files into them).
    """

    name = "collect"

    def __init__(
        self,
        *,
        missing_caption: str = "empty",
        caption_extension: str = ".txt",
        allow_outside_root: bool = False,
        visited: list[str] | None = None,
    ) -> None:
        self.missing_caption = missing_caption
        self.caption_extension = caption_extension
        self.allow_outside_root = allow_outside_root
        self._visited = visited  # an output, not an option: not part of identity()

    def __call__(
        self, items: Iterable[Concept | Failed], context: StageContext | None = None
    ) -> Iterator[Source | Failed]:
        ctx = context if context is not None else StageContext()
        concepts: list[Concept] = []
        passed: list[object] = []  # upstream failures, and what is not a Concept
        for item in items:
            if isinstance(item, Concept):
                concepts.append(item)
            else:
                passed.append(item)
        # A walk needs every root first (keys must be unique across them); anything that is
        # not a Concept becomes Failed(reason="invalid_item") through the one mechanism.
        return itertools.chain(
            map_stage(passed, _no_work, stage=self.name, accepts=(), context=ctx),
            collect(
                concepts,
                policy=ctx.policy,
                context=ctx,
                missing_caption=self.missing_caption,
                caption_extension=self.caption_extension,
                allow_outside_root=self.allow_outside_root,
                visited=self._visited,
            )
            if concepts
            else (),
        )
