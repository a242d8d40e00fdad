"""Compact columns for the planner: each sample's bucket as a code, each bucket's samples as an
array.

The planner's input is "the bucket of sample ``i``" and its output carries "every sample of a
bucket" (the replacement pools). Held as Python lists, a million samples are a million list
slots and a million int objects, walked by the interpreter at every epoch start: measured, epoch
planning grew 13.6x for 10x the samples from 100k to 1M (cache misses over scattered objects),
and every DataLoader worker received the pools pickled int by int. As numpy columns the grouping
is one stable radix sort and a pool pickles as a flat buffer:

- :class:`BucketColumn`: a read-only ``Sequence[Bucket]`` stored as ``codes`` (int32 per
  sample) into ``values`` (the distinct buckets). The sample index already stores buckets this
  way; building one from any sequence of buckets (:meth:`BucketColumn.of`) looks each object up
  by identity, since callers share a handful of ``Bucket`` objects among millions of samples.
- :class:`IndexPool`: a read-only ``Sequence[int]`` of ascending sample indices over an int64
  array, equal to any sequence with the same ints (``pool == (0, 1, 2)``), iterating Python ints.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np

from wan_data.errors import ConfigError, format_error
from wan_data.items import Bucket

__all__ = ["BucketColumn", "IndexPool", "bucket_order", "group_by_bucket"]

_BAD_ITEMS_SHOWN = 5  # non-Bucket entries named in the error; a million bad entries is one fault


def bucket_order(bucket: Bucket) -> tuple[int, int, int]:
    """The planner's bucket order: frames, then width, then height."""
    return (bucket.frames, bucket.width, bucket.height)


class BucketColumn(Sequence[Bucket]):
    """The bucket of every sample, as codes into the distinct buckets.

    Args:
        codes: one code per sample, ``0 <= code < len(values)``; copied to a read-only int32
            array.
        values: the distinct buckets the codes name.

    Raises:
        ConfigError: a code out of range, or a value that is not a ``Bucket``.
    """

    __slots__ = ("codes", "values")

    codes: np.ndarray
    values: tuple[Bucket, ...]

    def __init__(self, codes: Sequence[int] | np.ndarray, values: Sequence[Bucket]) -> None:
        array = np.array(codes, dtype=np.int32).reshape(-1)
        array.flags.writeable = False
        problems = [
            format_error(f"values[{i}]", v, "must be a wan_data.items.Bucket")
            for i, v in enumerate(values)
            if not isinstance(v, Bucket)
        ][:_BAD_ITEMS_SHOWN]
        if array.size and (int(array.min()) < 0 or int(array.max()) >= len(values)):
            problems.append(
                format_error(
                    "codes",
                    f"{int(array.min())}..{int(array.max())}",
                    f"must index values (0..{len(values) - 1})",
                )
            )
        if problems:
            raise ConfigError(problems)
        self.codes = array
        self.values = tuple(values)

    @classmethod
    def of(cls, buckets: Sequence[Bucket]) -> BucketColumn:
        """``buckets`` as a column (a column is returned as is).

        Distinct objects are found by identity at C speed (``map(id, ...)``); only they are
        hashed by value. Every object stays alive in ``buckets`` during the call, so no id is
        reused. Raises :class:`ConfigError` naming the first entries that are not a ``Bucket``.
        """
        if isinstance(buckets, BucketColumn):
            return buckets
        items = list(buckets)
        objects = dict(zip(map(id, items), items, strict=True))
        code_of_value: dict[Bucket, int] = {}
        code_of_id: dict[int, int] = {}
        bad_ids: set[int] = set()
        for object_id, obj in objects.items():
            if not isinstance(obj, Bucket):
                bad_ids.add(object_id)
                continue
            code_of_id[object_id] = code_of_value.setdefault(obj, len(code_of_value))
        if bad_ids:
            bad = [(i, v) for i, v in enumerate(items) if id(v) in bad_ids]
            problems = [
                format_error(f"buckets[{i}]", v, "must be a wan_data.items.Bucket")
                for i, v in bad[:_BAD_ITEMS_SHOWN]
            ]
            if len(bad) > _BAD_ITEMS_SHOWN:
                problems.append(
                    f"... and {len(bad) - _BAD_ITEMS_SHOWN} more entries that are not a Bucket"
                )
            raise ConfigError(problems)
        codes = np.fromiter(
            map(code_of_id.__getitem__, map(id, items)), dtype=np.int32, count=len(items)
        )
        return cls(codes, list(code_of_value))

    def __len__(self) -> int:
        return int(self.codes.size)

    @overload
    def __getitem__(self, index: int) -> Bucket: ...

    @overload
    def __getitem__(self, index: slice) -> BucketColumn: ...

    def __getitem__(self, index: int | slice) -> Bucket | BucketColumn:
        if isinstance(index, slice):
            return BucketColumn(self.codes[index], self.values)
        return self.values[int(self.codes[index])]

    def __iter__(self) -> Iterator[Bucket]:
        values = self.values
        return (values[c] for c in self.codes.tolist())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or len(other) != len(self):
            return False
        return all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # mutable-looking sequence semantics: unhashable

    def __repr__(self) -> str:
        return f"BucketColumn({len(self)} samples, {len(self.values)} buckets)"

    def __reduce__(self) -> tuple[Any, ...]:
        return (BucketColumn, (self.codes, self.values))


class IndexPool(Sequence[int]):
    """Sample indices (ascending in a plan's pools) over a read-only int64 array.

    Behaves as the tuple of ints it replaces: equal to any sequence of the same ints, iterates
    and indexes Python ints, and pickles as one buffer (4-8 bytes per index, not a pickled int
    object each).
    """

    __slots__ = ("array",)

    array: np.ndarray

    def __init__(self, indices: Sequence[int] | np.ndarray) -> None:
        array = np.array(indices, dtype=np.int64).reshape(-1)
        array.flags.writeable = False
        self.array = array

    def __len__(self) -> int:
        return int(self.array.size)

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> IndexPool: ...

    def __getitem__(self, index: int | slice) -> int | IndexPool:
        if isinstance(index, slice):
            return IndexPool(self.array[index])
        return int(self.array[index])

    def __iter__(self) -> Iterator[int]:
        return iter(self.array.tolist())

    def __contains__(self, value: object) -> bool:
        return isinstance(value, (int, np.integer)) and bool(np.any(self.array == value))

    def tolist(self) -> list[int]:
        """The indices as a list of Python ints."""
        return list(self.array.tolist())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IndexPool):
            return bool(np.array_equal(self.array, other.array))
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return False
        return len(other) == len(self) and self.tolist() == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(map(str, self.array[:8].tolist()))
        more = ", ..." if len(self) > 8 else ""
        return f"IndexPool([{shown}{more}], {len(self)} indices)"

    def __reduce__(self) -> tuple[Any, ...]:
        # The smallest dtype that holds every index: a million-sample pool pickles in 4 MB.
        small = self.array.astype(np.int32) if len(self) and self.array.max() < 2**31 else None
        return (IndexPool, (small if small is not None else self.array,))


def group_by_bucket(column: BucketColumn) -> dict[Bucket, np.ndarray]:
    """Sample indices per bucket, ascending, in sorted bucket order (buckets with samples only).

    One stable sort of the codes renumbered in bucket order (numpy sorts int16 codes by radix):
    linear in the samples.
    """
    if not len(column):
        return {}
    # Equal buckets under two codes (a hand-built column) are one group.
    distinct = sorted(set(column.values), key=bucket_order)
    position = {bucket: i for i, bucket in enumerate(distinct)}
    rank_of = np.array([position[v] for v in column.values], dtype=np.int32)
    small = np.int16 if len(distinct) < 2**15 else np.int32
    ranks = rank_of[column.codes].astype(small)
    order = np.argsort(ranks, kind="stable")
    counts = np.bincount(ranks, minlength=len(distinct))
    out: dict[Bucket, np.ndarray] = {}
    start = 0
    for rank, count in enumerate(counts.tolist()):
        if count:
            out[distinct[rank]] = order[start : start + count]
            start += count
    return out
