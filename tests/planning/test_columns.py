"""The planner's compact columns: bucket codes per sample, index pools per bucket."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from wan_data.errors import ConfigError
from wan_data.items import Bucket
from wan_data.planning.columns import BucketColumn, IndexPool, group_by_bucket
from wan_data.planning.plan import plan_epoch

A = Bucket(17, 64, 48)
B = Bucket(1, 64, 64)
C = Bucket(17, 48, 64)


def test_a_column_is_the_sequence_of_buckets_it_was_built_from() -> None:
    listed = [A, B, A, C, Bucket(17, 64, 48), B]  # an equal but distinct object is one code
    column = BucketColumn.of(listed)
    assert len(column) == 6 and list(column) == listed and column == listed
    assert column[3] == C and column[-1] == B and list(column[1:3]) == [B, A]
    assert len(column.values) == 3 and column.codes.dtype == np.int32
    assert not column.codes.flags.writeable
    assert BucketColumn.of(column) is column
    again = pickle.loads(pickle.dumps(column))
    assert again == column and again.values == column.values


def test_a_column_names_the_entries_that_are_not_buckets() -> None:
    with pytest.raises(ConfigError) as info:
        BucketColumn.of([A, "17x64x48", B, None, *([3] * 10)])
    text = str(info.value)
    assert "buckets[1] ('17x64x48') must be a wan_data.items.Bucket" in text
    assert "buckets[3] (None)" in text
    assert "... and 7 more entries that are not a Bucket" in text
    with pytest.raises(ConfigError, match=r"codes \('0\.\.5'\) must index values \(0\.\.1\)"):
        BucketColumn([0, 5], [A, B])
    with pytest.raises(ConfigError, match=r"values\[1\]"):
        BucketColumn([0], [A, (17, 64, 48)])  # type: ignore[list-item]


def test_grouping_is_ascending_per_bucket_in_bucket_order_and_merges_equal_values() -> None:
    column = BucketColumn([0, 1, 2, 0, 2, 1, 0], [A, B, Bucket(17, 64, 48)])  # code 2 == A
    groups = group_by_bucket(column)
    assert list(groups) == [B, A]  # (frames, width, height) order
    assert groups[B].tolist() == [1, 5]
    assert groups[A].tolist() == [0, 2, 3, 4, 6]
    assert group_by_bucket(BucketColumn([], [])) == {}


def test_an_index_pool_behaves_as_the_tuple_of_its_ints() -> None:
    pool = IndexPool([3, 5, 8])
    assert pool == (3, 5, 8) and (3, 5, 8) == pool and pool == [3, 5, 8]
    assert pool != (3, 5) and pool != (3, 5, 9) and pool != "abc"
    assert pool == IndexPool(np.array([3, 5, 8]))
    assert list(pool) == [3, 5, 8] and all(type(i) is int for i in pool)
    assert pool[1] == 5 and type(pool[1]) is int and pool[1:] == (5, 8)
    assert 5 in pool and 4 not in pool and "5" not in pool
    assert {A: pool} == {A: (3, 5, 8)}
    big = IndexPool(np.arange(100_000))
    assert len(pickle.dumps(big)) < 4 * 100_000 + 1_000  # one int32 buffer, not int objects
    assert pickle.loads(pickle.dumps(big)) == big
    assert pickle.loads(pickle.dumps(big)).array.dtype == np.int64


def test_the_plan_of_a_column_equals_the_plan_of_the_list() -> None:
    rng = np.random.default_rng(0)
    listed = [(A, B, C)[i] for i in rng.integers(0, 3, 200)]
    for kwargs in ({}, {"small_buckets": "partial"}, {"world_size": 3, "rank": 2}):
        a = plan_epoch(listed, batch_size=4, seed=1, epoch=2, **kwargs)  # type: ignore[arg-type]
        b = plan_epoch(BucketColumn.of(listed), batch_size=4, seed=1, epoch=2, **kwargs)  # type: ignore[arg-type]
        assert a.batches == b.batches and a.pools == b.pools and a.stats == b.stats
        assert all(type(m) is int for batch in a.batches for m in batch.members)
