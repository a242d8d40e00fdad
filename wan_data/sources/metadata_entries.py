"""Entries of a metadata-file root: its lines as keyed entries, and the checks of a listed file.

Parsing the text is :mod:`wan_data.sources.metadata_files`; this module turns the records into
what the collect stage works on. Discovery (:func:`metadata_entries`) only reads the file: a
malformed line becomes an entry carrying its ``bad_metadata_line`` skip, and keys are made
unique (a path listed twice gets ``~2``) so caches and the ledger never confuse two entries.
The per-entry checks of a listed file (:func:`check_listed`: its extension, that it exists and
is a regular file, that it and its caption sidecar lie under the metadata file's folder) run
later, one entry at a time inside the stage's error mechanism, because ``stat`` can raise.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import posixpath
import stat
from collections.abc import Callable, Iterator
from pathlib import PurePath

from wan_data.errors import format_error
from wan_data.failures.mechanism import failure_hint
from wan_data.items import Failed
from wan_data.sources.concepts import Concept
from wan_data.sources.entries import (
    STAGE,
    CollectRun,
    Entry,
    discover_io,
    failed,
    inside,
    outside_failure,
    sidecar_outside_failure,
)
from wan_data.sources.extensions import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, media_type
from wan_data.sources.metadata_files import PATH_KEYS, BadLine, parse_csv, parse_jsonl

__all__ = ["check_listed", "metadata_entries"]

logger = logging.getLogger("wan_data")


def metadata_entries(concept: Concept, run: CollectRun) -> Iterator[Entry]:
    """One entry per non-blank line of the metadata file ``concept.root``, in file order.

    Listed files are not touched here; see :func:`check_listed`. The file is appended to
    ``run.visited``; a file that cannot be read is one entry carrying its skip.
    """
    meta = os.path.abspath(os.fspath(concept.root))
    base = os.path.dirname(meta)
    root_real = os.path.realpath(base)
    if run.visited is not None:
        run.visited.append(meta)
    parse = parse_jsonl if meta.lower().endswith(".jsonl") else parse_csv
    count = 0
    seen: dict[str, int] = {}
    records, unreadable = discover_io(
        run,
        lambda: parse(meta, _bad_utf8_warner(meta, run)),
        key=f"{concept.name}/",
        path=meta,
        what="metadata file",
        value=meta,
    )
    if unreadable is not None:
        yield Entry(key=unreadable.key, path=meta, concept=concept, failure=unreadable)
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
            failure = failed(
                f"{concept.name}:{number}", origin, "bad_metadata_line", record.error_type, message
            )
            yield Entry(key=failure.key, path=origin, concept=concept, failure=failure)
            continue
        written = record.path
        key_path = posixpath.normpath(PurePath(written).as_posix())
        key = f"{concept.name}/{key_path}"
        occurrence = seen.get(key, 0) + 1
        seen[key] = occurrence
        if occurrence > 1:
            run.context.metrics.warnings["duplicate_metadata_entries"] += 1
            key = f"{key}~{occurrence}"
        yield Entry(
            key=key,
            path=os.path.abspath(os.path.join(base, written)),
            concept=concept,
            captions=record.captions,
            origin=origin,
            written=written,
            root_real=root_real,
        )
    logger.info("collect: concept %r: %d lines read from %s", concept.name, count, meta)


def check_listed(entry: Entry, run: CollectRun) -> Entry | Failed:
    """The listed file of ``entry`` checked: the entry with its media type and sidecar, or the
    skip of a rule it breaks (extension, not a regular file, outside the root).

    Raises:
        OSError: when the file cannot be ``stat``-ed (it does not exist, permission denied...);
            the caller runs this under the error mechanism, which decides.
    """
    assert entry.written is not None
    key, abs_path, written, origin = entry.key, entry.path, entry.written, entry.origin
    kind = media_type(abs_path)
    if kind is None:
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
        return failed(key, abs_path, "unsupported_extension", "ValueError", message)
    try:
        st = os.stat(abs_path)
    except OSError as exc:
        # Re-raised for the error mechanism to decide; the note keeps the listing's line in
        # the skip message (clean_message appends notes).
        exc.add_note(f"listed at {origin}")
        raise
    if not stat.S_ISREG(st.st_mode):
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "a special file"
        message = format_error(
            "listed file",
            written,
            f"is {what}, not a regular file (listed at {origin})",
            failure_hint("not_a_file"),
            path=abs_path,
            stage=STAGE,
        )
        error_type = "IsADirectoryError" if stat.S_ISDIR(st.st_mode) else "OSError"
        return failed(key, abs_path, "not_a_file", error_type, message)
    real = os.path.realpath(abs_path)
    if not run.allow_outside_root and not inside(real, entry.root_real):
        return outside_failure(key, abs_path, real, entry.root_real)
    candidate = os.path.splitext(abs_path)[0] + run.caption_extension
    sidecar = candidate if os.path.isfile(candidate) else None
    if sidecar is not None and not run.allow_outside_root:
        # The sidecar's folder is the media path's folder as written, which may be a link that
        # leads out while the media file links back in: resolve the sidecar itself.
        caption_real = os.path.realpath(sidecar)
        if not inside(caption_real, entry.root_real):
            if not entry.captions:  # the sidecar would be read: skip the file, as for media
                return sidecar_outside_failure(
                    key, abs_path, sidecar, caption_real, entry.root_real
                )
            sidecar = None  # the metadata caption wins; never keep a way to read it
    return dataclasses.replace(entry, media_type=kind, sidecar=sidecar, written=None)


def _bad_utf8_warner(path: str, run: CollectRun) -> Callable[[int], None]:
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
