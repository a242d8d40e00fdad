"""Cache keys: the content + config address of a cached latent.

Keying by file name is how caches serve stale latents after a source or config change (design
§5). A key here hashes everything that changes the tensor (source identity, frame selection,
bucket and crop, VAE identity, dtypes, normalisation, format version), so any change makes a new
key and the old entry is merely orphaned. Everything in this module is pure except
:func:`source_identity`, which stats (and optionally reads) the source file.

Split out of :mod:`wan_data.latents.store` so that the train pass, which only needs keys, and
the entry format, which records the format version, do not depend on the store itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

from wan_data.errors import format_error
from wan_data.media.source_files import open_source

__all__ = [
    "CACHE_FORMAT_VERSION",
    "cache_key",
    "cache_key_for",
    "canonical_json",
    "config_digest",
    "source_identity",
]

CACHE_FORMAT_VERSION = 2  # bump when the file layout or the meaning of a stored field changes
# 2: xxh3-128 entry checksums (1: sha256), key = sha256 of source + clip + config digest.

_KEY_RE = re.compile(r"[0-9a-f]{64}")
_HASH_CHUNK = 1 << 20


def source_identity(path: str, *, content_hash: bool = False) -> dict[str, object]:
    """Identity of a source file for :func:`cache_key`.

    Size and ``mtime_ns`` catch the usual edits (re-export, trim, replace) for the price of one
    ``stat``; ``content_hash`` adds the sha256 of the bytes for filesystems whose mtimes are not
    trustworthy (copies that preserve mtime, some network mounts), at the price of reading the file.

    Args:
        path: the source file.
        content_hash: also hash the file's bytes.

    Returns:
        ``{"path": abspath, "size": ..., "mtime_ns": ...}`` plus ``"sha256"`` when asked.

    Raises:
        OSError: the file cannot be ``stat``-ed or opened.
        SampleError: ``not_a_file`` when hashing a path that holds a FIFO, socket or device
            (opened through :func:`~wan_data.media.source_files.open_source`, so a source
            swapped for a FIFO is refused instead of blocking the read forever).
    """
    st = os.stat(path)
    identity: dict[str, object] = {
        "path": os.path.abspath(path),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }
    if content_hash:
        digest = hashlib.sha256()
        with open_source(path, stage="cache") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
        identity["sha256"] = digest.hexdigest()
    return identity


def _canonical(value: object, where: str) -> Any:
    """Normalise ``value`` to JSON types with one spelling per value.

    Integral floats become ints (``16.0`` and ``16`` are the same fps and must give the same key:
    a spurious miss costs a re-encode); other floats keep their exact ``repr`` through ``json``.
    Bools stay bools. Tuples become lists. Objects with ``tolist`` (tensors, numpy arrays: a VAE
    config's ``latents_mean`` may be one) become lists.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(format_error(where, value, "must be finite to be part of a cache key"))
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(format_error(f"{where} key", k, "must be a str"))
            out[k] = _canonical(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        if all(type(v) is float for v in value):  # frame times, means: the common, hot case
            if all(math.isfinite(v) for v in value):
                return [int(v) if v.is_integer() else v for v in value]
        elif all(type(v) is int or type(v) is str for v in value):
            return list(value)
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return _canonical(tolist(), where)
    raise ValueError(
        format_error(
            where,
            type(value).__name__,
            "must be None, bool, int, float, str, or a list/dict of them",
            "convert it to one of those before building the cache key",
        )
    )


def canonical_json(value: object) -> str:
    """The one JSON spelling of ``value``: sorted keys, no whitespace, exact floats.

    Pure; equal values (after :func:`_canonical` normalisation) give equal strings and different
    values different strings, which is what makes :func:`cache_key` injective up to sha256.
    """
    return json.dumps(
        _canonical(value, "value"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )


def cache_key(
    *,
    source: dict[str, object],
    clip: dict[str, object],
    vae: dict[str, object],
    dtypes: dict[str, str],
    normalisation: dict[str, object],
    version: int = CACHE_FORMAT_VERSION,
) -> str:
    """Content + config address of one cached latent: sha256 hex of everything that shapes it.

    Keying by file name is how the field serves stale latents after a source or config change
    (design §5). Every input that changes the tensor is part of the key, so any change makes a new
    key and the old entry is merely orphaned. Pure.

    Args:
        source: :func:`source_identity` of the file.
        clip: frame selection (frame times or indices, fps, frame count), bucket (frames, width,
            height) and crop box.
        vae: VAE identity (config hash, weights hash, z_dim, temporal and spatial factors).
        dtypes: ``{"vae": ..., "latent": ...}``.
        normalisation: latents mean and std applied before storing.
        version: cache format version.

    Returns:
        64 lowercase hex characters.
    """
    digest = config_digest(vae=vae, dtypes=dtypes, normalisation=normalisation, version=version)
    return cache_key_for(digest, source=source, clip=clip)


def config_digest(
    *,
    vae: dict[str, object],
    dtypes: dict[str, str],
    normalisation: dict[str, object],
    version: int = CACHE_FORMAT_VERSION,
) -> str:
    """The part of :func:`cache_key` shared by every entry of one configuration. Pure.

    Hashed once per dataset instead of once per read: canonicalising the VAE's 16 or 48 mean and
    std values for every key was a fifth of a cached read.
    """
    payload = {"dtypes": dtypes, "normalisation": normalisation, "vae": vae, "version": version}
    return hashlib.sha256(canonical_json(payload).encode("ascii")).hexdigest()


def cache_key_for(config: str, *, source: dict[str, object], clip: dict[str, object]) -> str:
    """:func:`cache_key` given the :func:`config_digest` of the configuration. Pure."""
    payload = {"clip": clip, "config": config, "source": source}
    return hashlib.sha256(canonical_json(payload).encode("ascii")).hexdigest()


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise ValueError(
            format_error(
                "cache key",
                key,
                "must be 64 lowercase hex characters",
                "build it with wan_data.latents.store.cache_key",
            )
        )
