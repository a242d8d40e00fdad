"""The walk of a folder root: every media file under it, as entries sorted by relative path.

The walk decides what each name in a folder is from the listing alone wherever it can (a
``stat`` and a ``realpath`` only for symlinks, which matters on folders of a million files), and
applies the rules that need the tree: hidden names are skipped, a folder link that loops back is
not followed, a file or folder link leading out of the root is ``outside_root``, a folder named
like a video is reported and still walked, and a caption sidecar that resolves outside the root
skips its media file. Order is a pure function of the relative paths, because keys, caches and
seeded sampling depend on it. Reading the captions is left to resolution (the collect stage),
so it runs per entry under the error mechanism.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import stat

from wan_data.errors import format_error
from wan_data.failures.mechanism import failure_hint
from wan_data.items import Failed, MediaType
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
from wan_data.sources.extensions import media_type

__all__ = ["walk"]

logger = logging.getLogger("wan_data")


def walk(concept: Concept, run: CollectRun) -> list[Entry]:
    """Every media file and failure under a folder root, sorted by relative POSIX path.

    Sorting the complete list (rather than each folder's listing) is what makes the order a pure
    function of the relative paths, independent of filesystem listing order. Folders listed are
    appended to ``run.visited``; ignored files and loops are counted in the context's warnings.
    """
    root_abs = os.path.abspath(os.fspath(concept.root))
    root_real = os.path.realpath(root_abs)
    name = concept.name or ""
    found: list[tuple[str, Entry]] = []

    def skip(rel: str, key: str, path: str, failure: Failed) -> None:
        found.append((rel, Entry(key=key, path=path, concept=concept, failure=failure)))

    # (relative posix dir, absolute dir, real dir, real paths of the dirs above, for loops)
    stack: list[tuple[str, str, str, frozenset[str]]] = [
        ("", root_abs, root_real, frozenset({root_real}))
    ]
    while stack:
        rel_dir, abs_dir, real_dir, ancestors = stack.pop()
        dir_key = f"{name}/{rel_dir}"
        if run.visited is not None:
            run.visited.append(abs_dir)
        listing, unlisted = discover_io(
            run,
            functools.partial(_list_dir, abs_dir),
            key=dir_key,
            path=abs_dir,
            what="folder",
            value=abs_dir,
        )
        if unlisted is not None:
            skip(rel_dir, dir_key, abs_dir, unlisted)
            continue
        assert listing is not None
        visible = [e for e in listing if not e.name.startswith(".")]
        by_name = {e.name: e for e in visible}
        media_stems = {os.path.splitext(e.name)[0] for e in visible if media_type(e.name)}
        for entry in visible:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            abs_path = os.path.join(abs_dir, entry.name)
            key = f"{name}/{rel}"
            media = media_type(entry.name)
            kind, real, failure = _classify_entry(entry, abs_path, real_dir, key, media, run)
            if failure is not None:
                skip(rel, key, abs_path, failure)
                continue
            if kind == "dir":
                if not run.allow_outside_root and not inside(real, root_real):
                    skip(rel, key, abs_path, outside_failure(key, abs_path, real, root_real))
                    continue
                if media is not None:
                    message = format_error(
                        "media path",
                        abs_path,
                        "is a directory, not a file",
                        "its contents are collected anyway; rename the folder so its name does "
                        "not end in a media extension",
                        path=abs_path,
                        stage=STAGE,
                    )
                    skip(
                        rel,
                        key,
                        abs_path,
                        failed(key, abs_path, "not_a_file", "IsADirectoryError", message),
                    )
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
            if media is None:
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
                skip(rel, key, abs_path, failed(key, abs_path, "not_a_file", "OSError", message))
                continue
            if not run.allow_outside_root and not inside(real, root_real):
                skip(rel, key, abs_path, outside_failure(key, abs_path, real, root_real))
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
                    if not inside(caption_real, root_real):
                        failure = sidecar_outside_failure(
                            key, abs_path, sidecar, caption_real, root_real
                        )
                        skip(rel, key, abs_path, failure)
                        continue
            source = Entry(
                key=key, path=abs_path, concept=concept, media_type=media, sidecar=sidecar
            )
            found.append((rel, source))
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
    media: MediaType | None,
    run: CollectRun,
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
    st, unreadable = discover_io(
        run, lambda: os.stat(abs_path), key=key, path=abs_path, what="file", value=abs_path
    )
    if unreadable is not None:
        has_ext = bool(os.path.splitext(entry.name)[1])
        if media is None and has_ext:
            # A broken link named like a document is no loss (the caller counts it as ignored);
            # one named like media, or with no extension at all (a linked folder, maybe a whole
            # wrong mount), is reported.
            return "", "", None
        if unreadable.reason == "missing" and is_link:
            target = _readlink(abs_path)
            message = format_error(
                "symlink target",
                target,
                "does not exist",
                failure_hint("missing"),
                path=abs_path,
                stage=STAGE,
            )
            unreadable = dataclasses.replace(
                unreadable, message=message, error_type="FileNotFoundError"
            )
        return "", "", unreadable
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
