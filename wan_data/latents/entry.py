"""The entry file format: encoding, parsing and verifying one cached latent's bytes.

An entry is a safetensors file holding one ``latents`` tensor and str->str metadata, including
the key it was stored under and an xxh3-128 checksum over every byte of the file. This module
holds the pure side of the cache: :func:`encode_entry` (which refuses non-finite latents),
:func:`decode_entry` and :func:`read_entry` (which parse the safetensors layout as plain data,
never with a deserialiser that can run code, and raise :class:`CacheCorruptionError` on any
doubt), and the checksum itself.

Split out of :mod:`wan_data.latents.store` so the format (what a file must contain to be
trusted) can be read and tested apart from where files live and how they are written.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import xxhash
from safetensors.torch import save as _st_save

from wan_data.errors import SampleError, format_error
from wan_data.latents.keys import CACHE_FORMAT_VERSION, _check_key

__all__ = [
    "CHECKSUM_ALGORITHM",
    "RESERVED_METADATA",
    "TENSOR_NAME",
    "CacheCorruptionError",
    "CacheEntry",
    "decode_entry",
    "encode_entry",
    "entry_checksum",
    "read_entry",
]

TENSOR_NAME = "latents"

# Fields the cache writes itself; a caller's metadata may not shadow them (a caller-supplied
# "key" or "checksum" would make the file lie about itself).
RESERVED_METADATA = frozenset({"checksum", "format", "key", "dtype", "shape"})

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}
# safetensors dtype tags of the dtypes above (the file format's own spelling).
_ST_DTYPES: dict[str, torch.dtype] = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
}
CHECKSUM_ALGORITHM = "xxh3_128"


class CacheCorruptionError(ValueError):
    """An entry's bytes fail verification; ``reason`` says which check failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class CacheEntry:
    """A verified entry as read back from the cache.

    Attributes:
        key: the cache key it was stored under (and which the file itself names).
        latents: the stored tensor, normally ``(z, T, h, w)``, in its stored dtype.
        metadata: the caller's metadata (caption, path, frame_times, crop, bucket, ...) plus the
            fields the cache writes: ``checksum``, ``format``, ``key``, ``dtype``, ``shape`` and
            ``created_at`` (unless the caller gave one).
    """

    key: str
    latents: torch.Tensor
    metadata: dict[str, str]

    def __repr__(self) -> str:
        return (
            f"CacheEntry(key={self.key[:12]}..., latents={tuple(self.latents.shape)} "
            f"{_dtype_name(self.latents.dtype)}, metadata={sorted(self.metadata)})"
        )


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


_CHECKSUM_DIGITS = 32
_CHECKSUM_PLACEHOLDER = f"{CHECKSUM_ALGORITHM}:{'0' * _CHECKSUM_DIGITS}"
_CHECKSUM_FIELD = b'"checksum":"'
_CHECKSUM_RE = re.compile(rf"{CHECKSUM_ALGORITHM}:[0-9a-f]{{{_CHECKSUM_DIGITS}}}")
_ITEMSIZE = {dtype: torch.empty((), dtype=dtype).element_size() for dtype in _DTYPES.values()}


def entry_checksum(data: bytes | bytearray | memoryview) -> str:
    """xxh3-128 of a whole entry file with the checksum's own digits read as zeros.

    The checksum covers every byte of the file (header, metadata, dtype, shape, offsets, padding
    and tensor bytes) except the digits that hold it, in one pass over the bytes as stored, so
    verifying needs no re-serialisation: a flipped byte anywhere, in a caption or a crop box as
    much as in the latents, is a mismatch. xxh3, not sha256, because every read verifies it:
    sha256 runs at ~1.7 GB/s here, seven times the cost of reading an entry from the page cache,
    xxh3 at ~29 GB/s. It guards against corruption (torn writes, bit rot, stray writes), not
    against someone forging entries; keys, which name content, stay sha256. Pure.

    Returns:
        ``"xxh3_128:<32 hex digits>"``: the algorithm is part of the value, so a future change is
        detected as a mismatch rather than misread.

    Raises:
        CacheCorruptionError: the header has no well-formed checksum field.
    """
    view = memoryview(data)
    return _checksum_of(view, view[len(view) :])


def _checksum_of(head: memoryview, body: memoryview) -> str:
    """:func:`entry_checksum` of a file held in two pieces: ``head`` (at least the 8-byte length
    and the JSON header) and ``body`` (the rest), so a tensor read straight into its place in a
    batch is verified where it lies."""
    digits = _checksum_digits_at(head)
    digest = xxhash.xxh3_128(head[:digits])
    digest.update(b"0" * _CHECKSUM_DIGITS)
    digest.update(head[digits + _CHECKSUM_DIGITS :])
    digest.update(body)
    return f"{CHECKSUM_ALGORITHM}:{digest.hexdigest()}"


def _checksum_digits_at(view: memoryview) -> int:
    """Offset of the checksum's hex digits in the file's JSON header.

    The field's opening quote cannot occur unescaped inside another JSON string, so the first
    ``"checksum":"`` in the header is the field itself.
    """
    header_len = int.from_bytes(view[:8], "little") if len(view) >= 8 else 0
    header = view[8 : 8 + header_len].tobytes()
    at = header.find(_CHECKSUM_FIELD)
    value_at = at + len(_CHECKSUM_FIELD)
    value = header[value_at : value_at + len(_CHECKSUM_PLACEHOLDER)]
    if at < 0 or not _CHECKSUM_RE.fullmatch(value.decode("ascii", "replace")):
        raise CacheCorruptionError("header has no well-formed checksum field")
    return 8 + value_at + len(CHECKSUM_ALGORITHM) + 1


def encode_entry(key: str, latents: torch.Tensor, metadata: Mapping[str, str]) -> bytes:
    """The safetensors bytes of one entry.

    Non-finite latents are refused here, the only way entries are made: together with the
    checksum verified on every read, that is what lets :meth:`LatentCache.get` skip a second
    finiteness pass (which would cost 40 % of the read).

    Args:
        key: the cache key, stored in the file so a file under the wrong name is detected.
        latents: a floating tensor (float32/float16/bfloat16/float64), any shape.
        metadata: caller fields, str to str; must not use the reserved names.

    Raises:
        SampleError: ``reason="non_finite_latents"`` when the tensor holds NaN or inf (the VAE
            failed on this clip; storing it would poison every later epoch).
    """
    _check_key(key)
    if not isinstance(latents, torch.Tensor) or latents.dtype not in _DTYPES.values():
        shown = latents.dtype if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(
            format_error("latents dtype", str(shown), f"must be one of {sorted(_DTYPES)}")
        )
    bad = sorted(k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str))
    if bad:
        raise ValueError(format_error("metadata", bad, "keys and values must be str"))
    clash = sorted(RESERVED_METADATA.intersection(metadata))
    if clash:
        raise ValueError(
            format_error("metadata keys", clash, "are reserved for the cache", "rename them")
        )
    tensor = latents.detach().to("cpu").contiguous()
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        non_finite = int(finite.numel() - int(finite.sum()))
        raise SampleError(
            format_error(
                "latents",
                f"{non_finite} of {finite.numel()} values NaN/inf",
                "must be finite to be cached",
                "check the clip and encode in float32",
                path=metadata.get("path"),
                stage="cache_write",
            ),
            reason="non_finite_latents",
        )
    meta = dict(metadata)
    meta.setdefault("created_at", f"{time.time():.6f}")
    meta.update(
        format=str(CACHE_FORMAT_VERSION),
        key=key,
        dtype=_dtype_name(tensor.dtype),
        shape=json.dumps(list(tensor.shape)),
    )
    meta["checksum"] = _CHECKSUM_PLACEHOLDER
    data = bytearray(_st_save({TENSOR_NAME: tensor}, metadata=meta))
    checksum = entry_checksum(data).encode("ascii")
    digits = _checksum_digits_at(memoryview(data))
    data[digits : digits + _CHECKSUM_DIGITS] = checksum[-_CHECKSUM_DIGITS:]
    return bytes(data)


def decode_entry(
    key: str, data: bytes | bytearray | memoryview, *, check_finite: bool = True
) -> CacheEntry:
    """Parse and verify one entry's bytes; raise :class:`CacheCorruptionError` on any doubt.

    Checks, in order of cost: header length and JSON, format version, stored key, the single
    ``latents`` tensor's dtype, shape and byte range against the file size and the metadata, the
    checksum and (``check_finite``) finiteness. Pure.

    The safetensors layout is parsed here rather than by the safetensors loader because that
    copies the tensor bytes once more; here the tensor is a view of ``data`` when it is writable
    (as :meth:`LatentCache.get` reads), so a read costs one copy out of the page cache. The file
    is plain data: nothing in it is executed or deserialised as objects. Files are still written
    by ``safetensors`` and readable by it.

    Args:
        key: the key the caller looked up (the file must name the same one).
        data: the whole file.
        check_finite: also reject NaN/inf values. :meth:`LatentCache.get` skips this: finiteness
            is checked when an entry is written (:func:`encode_entry`), and the checksum proves
            that the bytes are still the ones written, so a second full pass on every read (40 %
            of its cost) buys nothing.
    """
    view = memoryview(data)
    start = _header_end(view[:8], len(view))
    meta, shape, dtype = _parse_header(key, view[8:start], len(view) - start)
    numel = math.prod(shape)
    if numel == 0:
        latents = torch.empty(shape, dtype=dtype)
    else:
        buffer = view if not view.readonly else memoryview(bytearray(view))
        latents = torch.frombuffer(buffer, dtype=dtype, count=numel, offset=start).view(shape)
    return _verified(key, meta, latents, view[:start], view[start:], check_finite)


_MAX_HEADER_BYTES = 100_000_000
"""safetensors' own bound: a header claiming more is refused before it is read into memory (this
cache writes headers of a few KiB)."""


def _header_end(first8: memoryview, size: int) -> int:
    """Offset of the tensor bytes (8 + header length), checked against the file size."""
    if size < 8 or len(first8) < 8:
        raise CacheCorruptionError(f"truncated: {size} bytes, less than the 8-byte header")
    header_len = int.from_bytes(first8[:8], "little")
    if header_len > _MAX_HEADER_BYTES:
        raise CacheCorruptionError(
            f"header length {header_len} is over the {_MAX_HEADER_BYTES}-byte limit (not read)"
        )
    if header_len > size - 8:
        raise CacheCorruptionError(
            f"truncated or corrupt header length: {header_len} > {size - 8} bytes available"
        )
    return 8 + header_len


def _parse_header(
    key: str, header_bytes: memoryview, data_bytes: int
) -> tuple[dict[str, str], list[int], torch.dtype]:
    """The metadata, tensor shape and dtype of an entry, from its JSON header.

    ``data_bytes`` is the number of bytes after the header: the tensor must fill exactly that.
    """
    start = 8 + len(header_bytes)
    try:
        header = json.loads(header_bytes.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CacheCorruptionError(f"unparsable header: {exc}") from None
    except RecursionError:
        # A hostile or garbage header nested deeper than the parser's stack (e.g. 100k nested
        # lists): as corrupt as any other unparsable header, and must not crash a reader.
        raise CacheCorruptionError(
            "unparsable header: JSON nested too deeply (not a header this cache writes)"
        ) from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise CacheCorruptionError("header has no str->str __metadata__")
    missing = sorted(RESERVED_METADATA.difference(meta))
    if missing:
        raise CacheCorruptionError(f"metadata lacks {missing}")
    if meta["format"] != str(CACHE_FORMAT_VERSION):
        raise CacheCorruptionError(
            f"format {meta['format']!r}, expected {CACHE_FORMAT_VERSION} (another version wrote it)"
        )
    if meta["key"] != key:
        raise CacheCorruptionError(f"file holds key {meta['key'][:80]!r}, not {key}")
    tensors = sorted(k for k in header if k != "__metadata__")
    if tensors != [TENSOR_NAME]:
        raise CacheCorruptionError(f"tensors {tensors}, expected ['{TENSOR_NAME}']")
    info = header[TENSOR_NAME]
    if not isinstance(info, dict):
        raise CacheCorruptionError(f"tensor entry is {type(info).__name__}, not an object")
    dtype = _ST_DTYPES.get(str(info.get("dtype")))
    shape = info.get("shape")
    offsets = info.get("data_offsets")
    if dtype is None:
        raise CacheCorruptionError(f"tensor dtype {info.get('dtype')!r} is not one of {_DTYPES}")
    if not (
        isinstance(shape, list)
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise CacheCorruptionError(f"tensor shape {shape!r} is not a list of sizes")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise CacheCorruptionError(f"tensor data_offsets {offsets!r} are not two integers")
    itemsize = _ITEMSIZE[dtype]
    begin, end = offsets
    if begin != 0 or end != data_bytes or end - begin != math.prod(shape) * itemsize:
        raise CacheCorruptionError(
            f"tensor bytes {offsets} do not match its shape {shape} x {itemsize} bytes and the "
            f"{data_bytes} data bytes in the file (truncated or extended)"
        )
    if start % itemsize:
        raise CacheCorruptionError(f"tensor data starts at unaligned offset {start}")
    if _dtype_name(dtype) != meta["dtype"]:
        raise CacheCorruptionError(
            f"dtype {_dtype_name(dtype)} does not match metadata {meta['dtype']!r}"
        )
    if json.dumps(shape) != meta["shape"]:
        raise CacheCorruptionError(f"shape {shape} does not match metadata {meta['shape']!r}")
    return meta, shape, dtype


def _verified(
    key: str,
    meta: dict[str, str],
    latents: torch.Tensor,
    head: memoryview,
    body: memoryview,
    check_finite: bool,
) -> CacheEntry:
    if _checksum_of(head, body) != meta["checksum"]:
        raise CacheCorruptionError("checksum mismatch (bytes changed since the write)")
    if check_finite and not _all_finite(latents):
        raise CacheCorruptionError("non-finite values (NaN/inf) in latents")
    return CacheEntry(key=key, latents=latents, metadata=meta)


def _bytes_of(t: torch.Tensor) -> memoryview:
    """A writable byte view of a contiguous tensor's memory (no copy)."""
    flat = t.reshape(-1)
    if flat.numel() == 0:
        return memoryview(bytearray())
    return memoryview(flat.view(torch.uint8).numpy())  # type: ignore[arg-type]


def read_entry(
    fh: Any,
    size: int,
    key: str,
    *,
    into: Callable[[tuple[int, ...], torch.dtype], torch.Tensor] | None = None,
    check_finite: bool = False,
    expect_shape: tuple[int, ...] | None = None,
) -> CacheEntry:
    """Read and verify one entry from an open binary file of ``size`` bytes.

    The header is read first; the tensor bytes then go straight into ``into(shape, dtype)`` (a
    contiguous tensor, typically one slot of a preallocated batch, so the batch needs no stack
    copy afterwards) or a new uninitialised tensor. The checksum is computed over the bytes where
    they landed. Raises :class:`CacheCorruptionError` like :func:`decode_entry`.

    ``expect_shape``: the latent shape the reader's bucket implies. A checksum only proves the
    bytes are the ones written, not that they were written for this bucket (a file copied or
    written by another tool under this key); a shape that differs is refused before any tensor
    byte is read, so it never reaches a batch.
    """
    first8 = fh.read(8)
    start = _header_end(memoryview(first8), size)
    head = bytearray(first8)
    head += fh.read(start - 8)
    if len(head) != start:
        raise CacheCorruptionError(f"truncated: the header ends after {len(head)} bytes")
    head_view = memoryview(head)
    meta, shape, dtype = _parse_header(key, head_view[8:], size - start)
    if expect_shape is not None and tuple(shape) != tuple(expect_shape):
        raise CacheCorruptionError(
            f"latent shape {tuple(shape)} differs from {tuple(expect_shape)}, the shape of its "
            "bucket (written for another bucket or by another tool)"
        )
    out = into(tuple(shape), dtype) if into is not None else torch.empty(shape, dtype=dtype)
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype or not out.is_contiguous():
        raise ValueError(
            format_error(
                "read_entry destination",
                f"{tuple(out.shape)} {out.dtype}",
                f"must be a contiguous {tuple(shape)} {dtype} tensor",
                stage="cache",
            )
        )
    body = _bytes_of(out)
    got = 0
    while got < len(body):
        n = fh.readinto(body[got:])
        if not n:
            raise CacheCorruptionError(
                f"truncated: {start + got} of {size} bytes (the file shrank while being read)"
            )
        got += n
    if fh.read(1):
        raise CacheCorruptionError("extended: the file grew while being read")
    return _verified(key, meta, out, head_view, body, check_finite)


def _all_finite(latents: torch.Tensor) -> bool:
    """Exact finiteness with a fast path: a float32 sum is finite when every value is (NaN and
    inf propagate); only when it is not (an overflow of huge finite values, or a real NaN) does
    the elementwise check, ~25x slower on bfloat16, run."""
    if latents.numel() == 0:
        return True
    if math.isfinite(float(latents.sum(dtype=torch.float32))):
        return True
    return bool(torch.isfinite(latents).all())
