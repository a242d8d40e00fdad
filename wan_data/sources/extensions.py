"""Which file names are media: the extension sets shared by discovery, configuration and scans.

Collect never opens a file to find out what it is (that is the probe's job, and costs a read per
file on a million-file tree), so a file is a video, an image or a metadata list by its
extension alone. Keeping the sets in one small module lets the walk, the metadata entries, the
concept checks and the ``caption_extension`` check agree without importing each other.
"""

from __future__ import annotations

import os

from wan_data.items import MediaType

__all__ = ["IMAGE_EXTENSIONS", "METADATA_EXTENSIONS", "VIDEO_EXTENSIONS", "media_type"]

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


def media_type(name: str) -> MediaType | None:
    """``"video"`` or ``"image"`` by the extension of ``name`` (any case); ``None`` otherwise."""
    ext = os.path.splitext(name)[1].lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    return None
