"""Captions of a source: its sidecar file, the text decoding, and the fallbacks when it has none.

A media file's caption candidates come from the first of: its metadata line, its sidecar file
(``clip.txt`` next to ``clip.mp4``, one candidate per non-blank line), its concept's caption,
and what ``missing_caption`` says. The fallbacks are a function of their own
(:func:`fallback_captions`) because the dataset applies them again at sample time, when a warm
start re-reads a sidecar that has since been emptied. Reading raises on I/O errors: the collect
stage reads sidecars inside its error mechanism, which decides skip or retry; a sidecar that is
not valid UTF-8 is read anyway, with the bad bytes replaced, and counted.
"""

from __future__ import annotations

import logging
from pathlib import PurePath

from wan_data.errors import SampleError, format_error
from wan_data.failures.mechanism import StageContext
from wan_data.sources.entries import STAGE
from wan_data.sources.metadata_files import split_caption

__all__ = [
    "MAX_SIDECAR_BYTES",
    "MISSING_CAPTION_MODES",
    "decode_text",
    "fallback_captions",
    "read_sidecar",
]

logger = logging.getLogger("wan_data")

MISSING_CAPTION_MODES: tuple[str, ...] = ("empty", "filename", "skip", "error")
"""Values of ``collect(missing_caption=...)``."""

MAX_SIDECAR_BYTES = 1 << 20
"""The most a caption sidecar may hold (1 MiB, ~150k words): a larger one is not a caption (a
misnamed file, a hostile one) and is refused rather than read into memory and served."""


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


def _filename_caption(path: str) -> tuple[str, ...]:
    stem = PurePath(path).stem
    words = stem.replace("_", " ").replace("-", " ").split()
    return (" ".join(words),) if words else ()


def read_sidecar(path: str, context: StageContext) -> tuple[str, ...]:
    """Caption candidates of sidecar file ``path``: one per non-blank line, stripped.

    Raises:
        OSError: when the file cannot be read.
        SampleError: ``too_large`` when it holds more than :data:`MAX_SIDECAR_BYTES`.
    """
    return split_caption(decode_text(_read_bytes(path), path, "caption_decode_errors", context))


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        data = fh.read(MAX_SIDECAR_BYTES + 1)
    if len(data) > MAX_SIDECAR_BYTES:
        raise SampleError(
            format_error(
                "caption file",
                path,
                f"holds more than {MAX_SIDECAR_BYTES} bytes, more than any caption",
                "a sidecar holds caption candidates, one per line; replace or remove it",
                path=path,
                stage=STAGE,
            ),
            reason="too_large",
        )
    return data


def decode_text(data: bytes, path: str, counter: str, context: StageContext) -> str:
    """``data`` (a UTF-8 file, BOM optional) as text; bad bytes become U+FFFD.

    A file that is not valid UTF-8 is counted in ``context.metrics.warnings[counter]`` and
    logged once, naming the file and the first bad byte.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        context.metrics.warnings[counter] += 1
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
