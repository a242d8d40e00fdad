"""What discovery hands the collect stage: one :class:`Entry` per candidate file, and its rules.

Discovery (the folder walk, the lines of a metadata file) and resolution (captions, the checks of
a listed file) are split so that resolution can run per entry inside
:func:`~wan_data.failures.mechanism.map_stage`, the one place where exceptions become skips. An
entry is what lies between them: a candidate media file, or a failure discovery already found
(a dangling link, a folder named like a video, a bad metadata line), carried to the stage so it
is counted, logged and fed to the circuit breaker exactly like any other skip.

The rules every source obeys wherever it was found live here too: a file or caption whose real
path lies outside its root is skipped (``outside_root``), and discovery's own I/O runs under the
error policy through :func:`discover_io`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from wan_data.errors import format_error
from wan_data.failures.mechanism import StageContext, failure_hint
from wan_data.failures.policy import ErrorPolicy
from wan_data.items import Failed, MediaType
from wan_data.sources.concepts import Concept

__all__ = [
    "STAGE",
    "CollectRun",
    "Entry",
    "discover_io",
    "failed",
    "inside",
    "outside_failure",
    "sidecar_outside_failure",
]

T = TypeVar("T")

STAGE = "collect"
"""The stage every source and skip found here is attributed to."""

_OUTSIDE_HINT = (
    "move the file under its root, or pass allow_outside_root=True if following links out of "
    "the root is intended"
)
_SIDECAR_OUTSIDE_HINT = (
    "it was not read and its media file is skipped; move the caption under the root (or "
    "replace the link with a copy), or pass allow_outside_root=True if following links out of "
    "the root is intended"
)


@dataclass
class CollectRun:
    """The options and shared state of one ``collect()`` call, for discovery and resolution."""

    policy: ErrorPolicy
    context: StageContext
    missing_caption: str
    caption_extension: str
    allow_outside_root: bool
    visited: list[str] | None = None


@dataclass
class Entry:
    """One candidate found by a walk or a metadata file, before its captions are resolved.

    Attributes:
        key: the source's key (``<concept>/<relative path>``; ``<concept>:<line>`` for a bad
            metadata line).
        path: absolute path of the media file (``<metadata file>:<line>`` for a bad line).
        concept: the concept it belongs to (name, repeats, default caption).
        media_type: ``"video"`` or ``"image"``; ``None`` for a failure or an unchecked entry.
        failure: the skip discovery already decided; resolution only hands it on.
        sidecar: the caption file to read, when one exists.
        captions: the caption candidates of a metadata line.
        origin: ``<metadata file>:<line>`` of a listed entry, for messages.
        written: the path as a metadata file wrote it; set while the listed file has not been
            checked (extension, ``stat``, root) yet, which resolution does.
        root_real: real path of the folder a listed file must lie in.
    """

    key: str
    path: str
    concept: Concept
    media_type: MediaType | None = None
    failure: Failed | None = None
    sidecar: str | None = None
    captions: tuple[str, ...] = ()
    origin: str = ""
    written: str | None = None
    root_real: str = ""


def failed(
    key: str, path: str, reason: str, error_type: str, message: str, attempts: int = 1
) -> Failed:
    """A skip of the collect stage."""
    return Failed(
        key=key,
        path=path,
        stage=STAGE,
        reason=reason,
        error_type=error_type,
        message=message,
        attempts=attempts,
    )


def discover_io(
    run: CollectRun, fn: Callable[[], T], *, key: str, path: str, what: str, value: str
) -> tuple[T | None, Failed | None]:
    """Run one I/O call of discovery under the policy: retried when transient, a Failed when
    skipped (``what`` and ``value`` name the thing that could not be read).

    This is the one place collect still turns an exception into a skip itself, and only for
    I/O that happens before there is an entry to hand to ``map_stage``: listing a folder and
    ``stat``-ing a link (the walk must list and sort the whole tree before its first entry, and
    the ``stat`` decides whether a link is a folder to descend), and reading a metadata file.
    Running those inside ``map_stage`` would make every folder and metadata file an item of
    the stage and change its in/out counts. The decision is still the policy's, and the
    ``Failed`` built here is handed to ``map_stage`` in an entry, which counts it, logs it and
    feeds it to the breaker like any other skip.
    """
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
    return None, failed(key, path, decision.reason, type(exc).__name__, message, attempts)


def inside(real: str, root_real: str) -> bool:
    """Whether real path ``real`` is ``root_real`` or lies under it."""
    if real == root_real:
        return True
    prefix = root_real if root_real.endswith(os.sep) else root_real + os.sep
    return real.startswith(prefix)


def outside_failure(key: str, path: str, real: str, root_real: str) -> Failed:
    """The skip of ``path``, whose real path ``real`` lies outside the root ``root_real``."""
    message = format_error(
        "real path",
        real,
        f"lies outside the root {root_real!r}",
        _OUTSIDE_HINT,
        path=path,
        stage=STAGE,
    )
    return failed(key, path, "outside_root", "ValueError", message)


def sidecar_outside_failure(key: str, path: str, sidecar: str, real: str, root_real: str) -> Failed:
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
    return failed(key, path, "outside_root", "ValueError", message)
