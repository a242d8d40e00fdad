"""Property cache: the latent cache returns what was stored or nothing, under any key change.

Feature: wan-training-pipeline-fixes, Property cache

- for any finite tensor (0-4 dims of 0..4 elements each; float32, bfloat16, float16) and any
  caller metadata, ``put`` then ``get`` returns a bit-identical tensor of the same dtype and shape
  and the caller's metadata unchanged;
- for any single-byte change anywhere in an entry file, ``get`` returns ``None`` (and the file is
  quarantined) or, if the change cannot alter what the file means (JSON padding turned into other
  whitespace), exactly the original tensor and metadata; never a different tensor;
- ``cache_key`` changes when any single field of any section changes to a value with a different
  canonical form, when a field is added or removed, or when the version changes; and it does
  not change when equal values are spelled differently (dict order, tuple/list, 16 vs 16.0).
"""

from __future__ import annotations

import copy
import math
import random
import tempfile
from pathlib import Path
from typing import Any

import torch
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from wan_data.latents.store import (
    CACHE_FORMAT_VERSION,
    RESERVED_METADATA,
    LatentCache,
    cache_key,
    canonical_json,
)

PROPERTY = "Feature: wan-training-pipeline-fixes, Property cache"
KEY = "0123456789abcdef" * 4

# --------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------

_ELEMENTS = {
    torch.float32: st.floats(allow_nan=False, allow_infinity=False, width=32),
    torch.float16: st.floats(allow_nan=False, allow_infinity=False, width=16),
    # float32 values up to 2**126 stay finite when rounded to bfloat16 (max ~3.39e38).
    torch.bfloat16: st.floats(min_value=-(2.0**126), max_value=2.0**126, width=32),
}


@st.composite
def finite_tensors(draw: st.DrawFn) -> torch.Tensor:
    """A finite tensor of 0-4 dims (sizes 0..4) in float32, bfloat16 or float16."""
    dtype = draw(st.sampled_from(list(_ELEMENTS)))
    shape = draw(st.lists(st.integers(0, 4), max_size=4))
    n = math.prod(shape)
    values = draw(st.lists(_ELEMENTS[dtype], min_size=n, max_size=n))
    tensor = torch.tensor(values, dtype=torch.float32).reshape(shape).to(dtype)
    assert bool(torch.isfinite(tensor).all())
    return tensor


metadata_dicts = st.dictionaries(
    keys=st.text(min_size=1, max_size=12).filter(lambda k: k not in RESERVED_METADATA),
    values=st.text(max_size=40),
    max_size=5,
)


def bits(t: torch.Tensor) -> bytes:
    """Bitwise identity (torch.equal calls -0.0 == 0.0 and cannot see a sign flip)."""
    return bytes(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


# --------------------------------------------------------------------------------------------
# round trip and byte flips
# --------------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(latents=finite_tensors(), metadata=metadata_dicts)
def test_put_then_get_returns_the_identical_tensor_and_metadata(
    latents: torch.Tensor, metadata: dict[str, str]
) -> None:
    """Feature: wan-training-pipeline-fixes, Property cache: round trip.

    Any finite tensor and metadata come back bit-identical, dtype and shape included.
    """
    with tempfile.TemporaryDirectory() as tmp:
        cache = LatentCache(tmp)
        cache.put(KEY, latents, metadata)
        entry = LatentCache(tmp, create=False).get(KEY)  # a fresh reader, as another process
        assert entry is not None
        assert entry.latents.dtype == latents.dtype
        assert entry.latents.shape == latents.shape
        assert bits(entry.latents) == bits(latents)
        assert {k: v for k, v in entry.metadata.items() if k in metadata} == metadata
        assert set(entry.metadata) - set(metadata) <= RESERVED_METADATA | {"created_at"}
        assert entry.metadata["key"] == KEY


@settings(max_examples=200, deadline=None)
@given(
    latents=finite_tensors(),
    metadata=metadata_dicts,
    region=st.sampled_from(["length", "header", "data", "anywhere"]),
    data=st.data(),
)
def test_any_single_byte_flip_never_yields_a_wrong_tensor(
    latents: torch.Tensor, metadata: dict[str, str], region: str, data: st.DataObject
) -> None:
    """Feature: wan-training-pipeline-fixes, Property cache: single-byte flips are caught.

    After changing any one byte of an entry file, ``get`` returns ``None`` and the file is in
    quarantine, or (a change that does not alter the meaning, e.g. padding whitespace) exactly
    the original tensor and metadata.
    """
    with tempfile.TemporaryDirectory() as tmp:
        cache = LatentCache(tmp)
        path = cache.put(KEY, latents, metadata)
        raw = path.read_bytes()
        original = cache.get(KEY)
        assert original is not None
        header_end = 8 + int.from_bytes(raw[:8], "little")
        low, high = {
            "length": (0, 7),
            "header": (8, header_end - 1),
            "data": (header_end, len(raw) - 1),
            "anywhere": (0, len(raw) - 1),
        }[region]
        if high < low:  # an empty tensor has no data region
            low, high = 0, len(raw) - 1
        pos = data.draw(st.integers(low, high), label="pos")
        mask = data.draw(st.integers(1, 255), label="xor")
        note(f"flip byte {pos} of {len(raw)} (header ends at {header_end}) with {mask:#04x}")
        path.write_bytes(raw[:pos] + bytes([raw[pos] ^ mask]) + raw[pos + 1 :])

        entry = cache.get(KEY)
        if entry is None:
            event("flip detected")
            assert not path.exists()
            assert len(list((Path(tmp) / "quarantine").glob("*.reason.txt"))) == 1
            assert cache.stats().corruption_count == 1
        else:
            event("flip harmless (padding)")
            assert header_end - 8 <= pos < header_end  # only the header's trailing padding
            assert entry.latents.dtype == latents.dtype
            assert bits(entry.latents) == bits(latents)
            assert entry.metadata == original.metadata


# --------------------------------------------------------------------------------------------
# cache_key
# --------------------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
sections = st.dictionaries(st.text(min_size=1, max_size=8), values, max_size=4)
SECTIONS = ("source", "clip", "vae", "dtypes", "normalisation")


@st.composite
def key_inputs(draw: st.DrawFn) -> dict[str, Any]:
    """Arbitrary key inputs (``dtypes`` is str -> str, the other sections any JSON-like dict)."""
    inputs: dict[str, Any] = {name: draw(sections) for name in SECTIONS if name != "dtypes"}
    inputs["dtypes"] = draw(st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8)))
    return inputs


@settings(max_examples=300, deadline=None)
@given(inputs=key_inputs(), data=st.data())
def test_cache_key_changes_with_any_single_field(
    inputs: dict[str, Any], data: st.DataObject
) -> None:
    """Feature: wan-training-pipeline-fixes, Property cache: cache_key is injective per field.

    Setting one field (existing or new) of one section to a value with another canonical form,
    removing one field, or changing the version, always changes the key.
    """
    base = cache_key(**inputs)
    section = data.draw(st.sampled_from(SECTIONS), label="section")
    existing = sorted(inputs[section])
    field = data.draw(
        st.sampled_from(existing) | st.text(min_size=1, max_size=8)
        if existing
        else st.text(min_size=1, max_size=8),
        label="field",
    )
    new_value = data.draw(st.text(max_size=8) if section == "dtypes" else values, label="value")
    old = inputs[section].get(field, _ABSENT)
    changed = copy.deepcopy(inputs)
    changed[section][field] = new_value
    if old is _ABSENT or canonical_json(old) != canonical_json(new_value):
        assert cache_key(**changed) != base
    else:
        assert cache_key(**changed) == base  # same canonical value: same key, no spurious miss
    if existing:
        removed = copy.deepcopy(inputs)
        del removed[section][existing[0]]
        assert cache_key(**removed) != base
    bump = data.draw(st.sampled_from([-2, -1, 1, 2, 7]), label="version delta")
    assert cache_key(**inputs, version=CACHE_FORMAT_VERSION + bump) != base


class _Absent:
    pass


_ABSENT = _Absent()


def _respell(value: Any, rnd: random.Random) -> Any:
    """The same value written differently: dict order, list/tuple, int/float where exact."""
    if isinstance(value, dict):
        items = [(k, _respell(v, rnd)) for k, v in value.items()]
        rnd.shuffle(items)
        return dict(items)
    if isinstance(value, list):
        out = [_respell(v, rnd) for v in value]
        return tuple(out) if rnd.random() < 0.5 else out
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and abs(value) < 2**53 and rnd.random() < 0.5:
        return float(value)
    if isinstance(value, float) and value.is_integer() and rnd.random() < 0.5:
        return int(value)
    return value


@settings(max_examples=100, deadline=None)
@given(inputs=key_inputs(), rnd=st.randoms(use_true_random=False))
def test_cache_key_ignores_spelling(inputs: dict[str, Any], rnd: random.Random) -> None:
    """Feature: wan-training-pipeline-fixes, Property cache: equal values give equal keys.

    Reordered dicts, tuples for lists and 16.0 for 16 are the same configuration: a different key
    would re-encode the whole dataset for nothing.
    """
    respelled = {name: _respell(section, rnd) for name, section in inputs.items()}
    assert cache_key(**respelled) == cache_key(**inputs)
