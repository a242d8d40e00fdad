"""What changed between a saved resume state and this dataset, said in words.

A state is refused when its fingerprint (options + samples) differs from the dataset's. "The
fingerprint differs" leaves the user to guess; the state therefore also carries the options the
fingerprint covers and its number of sources (a few hundred bytes, whatever the dataset size),
and ``state_dict()`` writes a sketch of the sources beside the sample index, named by the
fingerprint: two sorted arrays of 32-bit hashes, one of each source key and one of each key with
its content (buckets, frame count, duration). Comparing the saved sketch with the dataset's as
multisets gives the number of sources added, removed and changed exactly (up to a 32-bit hash
collision), at 8 bytes a source. Without a sample index folder (or once the sketch file is
gone) the message falls back to the counts.
"""

from __future__ import annotations

import collections
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

__all__ = ["describe_changes", "save_sketch", "sketch_path", "source_sketch"]

logger = logging.getLogger("wan_data")

_SHOWN = 6  # differing options named in a message


def _hashes(values: list[str]) -> np.ndarray:
    return np.sort(np.array([xxhash.xxh32_intdigest(v) for v in values], dtype=np.uint32))


def source_sketch(contents: Mapping[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted 32-bit hashes of the source keys, and of each key with its content."""
    return _hashes(list(contents)), _hashes([f"{k}\x00{v}" for k, v in contents.items()])


def sketch_path(folder: str | os.PathLike[str], fingerprint: str) -> Path:
    """Where the sketch of the dataset with ``fingerprint`` is kept."""
    return Path(folder) / f"state-{fingerprint}.sources.npz"


def save_sketch(
    folder: str | os.PathLike[str], fingerprint: str, contents: Mapping[str, str]
) -> None:
    """Write the sketch atomically unless it exists; an unwritable folder only loses detail
    in a later refusal message, so it is logged, never raised."""
    path = sketch_path(folder, fingerprint)
    if path.exists():
        return
    keys, everything = source_sketch(contents)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".sketch-", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, keys=keys, contents=everything)
        os.replace(tmp, path)
    except OSError as exc:
        logger.info("source sketch %s not written (%s): a refused state will say less", path, exc)


def _load_sketch(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            return np.asarray(data["keys"]), np.asarray(data["contents"])
    except (OSError, ValueError, KeyError):
        return None


def _multiset_difference(a: np.ndarray, b: np.ndarray) -> int:
    """How many elements of ``a`` are not matched by an element of ``b``."""
    ca = collections.Counter(a.tolist())
    cb = collections.Counter(b.tolist())
    return sum((ca - cb).values())


def _flatten(options: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"decode": {"crop": "center"}}`` as ``{"decode.crop": "center"}``: one name per option."""
    flat: dict[str, Any] = {}
    for name, value in options.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def describe_changes(
    state: Mapping[str, Any],
    options: Mapping[str, Any],
    contents: Mapping[str, str],
    folder: str | os.PathLike[str] | None,
) -> list[str]:
    """Sentences saying what differs between a saved state and the dataset now.

    Empty when the state carries nothing to compare (a state saved by an older version).
    """
    out: list[str] = []
    saved_options = state.get("options")
    if isinstance(saved_options, Mapping):
        old, new = _flatten(saved_options), _flatten(options)
        differing = [
            f"{name} {old.get(name)!r} -> {new.get(name)!r}"
            for name in sorted(set(old) | set(new))
            if old.get(name) != new.get(name)
        ]
        if differing:
            more = len(differing) - _SHOWN
            out.append(
                "options changed: "
                + ", ".join(differing[:_SHOWN])
                + (f" and {more} more" if more > 0 else "")
            )
    count = state.get("sources")
    if not isinstance(count, int):
        return out
    saved = None
    if folder is not None and isinstance(state.get("fingerprint"), str):
        saved = _load_sketch(sketch_path(folder, str(state["fingerprint"])))
    if saved is not None:
        new_keys, new_all = source_sketch(contents)
        added = _multiset_difference(new_keys, saved[0])
        removed = _multiset_difference(saved[0], new_keys)
        # A changed source has the same key but other contents.
        changed = _multiset_difference(new_all, saved[1]) - added
        if added or removed or changed:
            out.append(
                f"sources: {added} added, {removed} removed, {changed} changed "
                f"({count} then, {len(contents)} now)"
            )
    elif count != len(contents):
        out.append(f"sources: {count} then, {len(contents)} now")
    elif not out:
        out.append(
            f"sources: {count} then and now, so some of them changed (no sketch of the saved "
            "sources to compare: it is kept beside the sample index)"
        )
    return out
