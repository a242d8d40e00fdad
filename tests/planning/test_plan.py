"""plan.py: the epoch batch plan (bucket-homogeneous, constant-size, equal per rank)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pickle
from collections import Counter

import numpy as np
import pytest

from wan_data.errors import ConfigError
from wan_data.items import Bucket
from wan_data.media.sampling import sample_rng
from wan_data.planning.plan import (
    SMALL_BUCKET_MODES,
    EpochPlan,
    PlannedBatch,
    check_plan_options,
    fallback_buckets,
    plan_epoch,
    replacement_candidates,
    shard_batches,
)

A = Bucket(5, 64, 64)
B = Bucket(9, 32, 32)
C = Bucket(1, 48, 16)

# 10 samples of A then 3 of B (indices 0..9 are A, 10..12 are B).
TEN_THREE = [A] * 10 + [B] * 3


def ranks(buckets: list[Bucket], world_size: int, **kw: object) -> list[EpochPlan]:
    options: dict = {"batch_size": 4, "seed": 7, "epoch": 0, **kw}
    return [
        plan_epoch(buckets, rank=r, world_size=world_size, **options) for r in range(world_size)
    ]


def permutation(seed: int, epoch: int, key: str, purpose: str, n: int) -> list[int]:
    """The spec's seeded permutation: numpy PCG64 seeded by SHA-256 of the inputs."""
    digest = hashlib.sha256(f"{seed}\x00{epoch}\x00{key}\x00{purpose}".encode()).digest()
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "big")))
    return [int(i) for i in rng.permutation(n)]


def reference(
    buckets: list[Bucket], batch_size: int, seed: int, epoch: int, world_size: int, mode: str
) -> list[list[tuple[Bucket, tuple[int, ...], int, bool]]]:
    """The algorithm as the spec states it, written independently of plan.py."""
    groups: dict[Bucket, list[int]] = {}
    for i, b in enumerate(buckets):
        groups.setdefault(b, []).append(i)
    drafts = []
    for b in sorted(groups, key=lambda b: (b.frames, b.width, b.height)):
        key = f"bucket:{b.frames}x{b.width}x{b.height}"
        order = [groups[b][i] for i in permutation(seed, epoch, key, "plan", len(groups[b]))]
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        for chunk in chunks:
            if len(chunk) == batch_size or mode == "partial":
                drafts.append((b, tuple(chunk), 0))
            elif mode == "repeat":
                need = batch_size - len(chunk)
                others = order[: len(order) - len(chunk)] or chunk
                picks = sample_rng(seed, epoch, key, "repeat").sample(
                    others, min(need, len(others))
                )
                drafts.append(
                    (b, tuple(chunk) + tuple(picks[i % len(picks)] for i in range(need)), need)
                )
    drafts = [drafts[i] for i in permutation(seed, epoch, "", "batches", len(drafts))]
    flagged = [(*d, False) for d in drafts]
    while drafts and len(flagged) % world_size:
        flagged.append((*drafts[(len(flagged) - len(drafts)) % len(drafts)], True))
    return [flagged[r::world_size] for r in range(world_size)]


def as_tuples(plan: EpochPlan) -> list[tuple[Bucket, tuple[int, ...], int, bool]]:
    return [(b.bucket, b.members, b.repeats, b.padding) for b in plan.batches]


# --- the concrete 10 + 3 case -----------------------------------------------------------------


def test_repeat_ten_three_batch4_world2() -> None:
    plans = ranks(TEN_THREE, 2)
    assert [len(p.batches) for p in plans] == [2, 2]
    batches = [b for p in plans for b in p.batches]
    assert all(len(b.members) == 4 for b in batches)
    assert not any(b.padding for b in batches)
    assert [b.position for b in plans[0].batches] == [0, 1]
    assert [b.position for b in plans[1].batches] == [0, 1]
    # A: two full batches and one of 2 + 2 repeats; B: 3 + 1 repeat.
    assert sorted((str(b.bucket), b.repeats) for b in batches) == [
        ("5x64x64", 0),
        ("5x64x64", 0),
        ("5x64x64", 2),
        ("9x32x32", 1),
    ]
    for b in batches:
        assert {TEN_THREE[m] for m in b.members} == {b.bucket}
    own = Counter(m for b in batches for m in b.members[: len(b.members) - b.repeats])
    assert own == Counter(range(13))  # every sample exactly once outside the repeat slots
    stats = plans[0].stats
    assert stats["batches"] == 4 and stats["repeated"] == 3 and stats["padding_batches"] == 0
    assert stats["buckets"] == {
        "5x64x64": {"samples": 10, "batches": 3, "repeated": 2, "dropped": 0},
        "9x32x32": {"samples": 3, "batches": 1, "repeated": 1, "dropped": 0},
    }
    assert plans[0].stats == plans[1].stats and plans[0].pools == plans[1].pools
    assert plans[0].pools == {A: tuple(range(10)), B: (10, 11, 12)}


@pytest.mark.parametrize("mode", SMALL_BUCKET_MODES)
@pytest.mark.parametrize("world_size", [1, 2, 3, 5, 11])
@pytest.mark.parametrize("seed", [0, 7])
def test_matches_reference_algorithm(mode: str, world_size: int, seed: int) -> None:
    buckets = TEN_THREE + [C] * 6 + [A] * 3
    expected = reference(buckets, 4, seed, 3, world_size, mode)
    for r, plan in enumerate(ranks(buckets, world_size, seed=seed, epoch=3, small_buckets=mode)):
        assert as_tuples(plan) == expected[r]


def test_repeat_fillers_come_from_outside_the_short_batch() -> None:
    plan = plan_epoch(TEN_THREE, batch_size=4, seed=1, epoch=0)
    short = next(b for b in plan.batches if b.bucket == A and b.repeats)
    assert short.repeats == 2
    assert len(set(short.members)) == 4  # A has full batches, so the fillers are new samples


def test_bucket_smaller_than_batch_repeats_evenly() -> None:
    plan = plan_epoch([B] * 3, batch_size=8, seed=3, epoch=1)
    (batch,) = plan.batches
    assert batch.repeats == 5 and len(batch.members) == 8
    counts = Counter(batch.members)
    assert set(counts) == {0, 1, 2}
    assert sorted(counts.values()) == [2, 3, 3]


def test_repeat_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="wan_data"):
        plan_epoch(TEN_THREE, batch_size=4, seed=1, epoch=0)
    text = caplog.text
    assert "3 repeated sample(s)" in text and "5x64x64 2" in text and "9x32x32 1" in text


def test_full_buckets_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="wan_data"):
        plan_epoch([A] * 8, batch_size=4, seed=1, epoch=0)
    assert caplog.records == []


def test_drop_mode(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="wan_data"):
        plans = ranks(TEN_THREE, 2, small_buckets="drop")
    batches = [b for p in plans for b in p.batches]
    assert [len(p.batches) for p in plans] == [1, 1]
    assert all(b.bucket == A and len(b.members) == 4 and b.repeats == 0 for b in batches)
    assert len({m for b in batches for m in b.members}) == 8
    stats = plans[0].stats
    assert stats["dropped"] == 5 and stats["batches"] == 2
    assert stats["buckets"]["9x32x32"] == {  # type: ignore[index]
        "samples": 3,
        "batches": 0,
        "repeated": 0,
        "dropped": 3,
    }
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "9x32x32" in warnings[0].getMessage()
    assert "dropped 5 sample(s)" in caplog.text


def test_partial_mode() -> None:
    plans = ranks(TEN_THREE, 2, small_buckets="partial")
    sizes = sorted(len(b.members) for p in plans for b in p.batches)
    assert sizes == [2, 3, 4, 4]
    assert all(b.repeats == 0 for p in plans for b in p.batches)
    assert sorted(m for p in plans for b in p.batches for m in b.members) == list(range(13))
    assert plans[0].stats["partial_batches"] == 2


# --- padding ---------------------------------------------------------------------------------


def test_padding_equalises_ranks() -> None:
    plans = ranks(TEN_THREE, 3)  # 4 batches over 3 ranks -> 2 copies
    assert [len(p.batches) for p in plans] == [2, 2, 2]
    assert plans[0].stats["padding_batches"] == 2
    assert plans[0].stats["batches_per_rank"] == 2
    real = {
        (b.bucket, b.members): r for r, p in enumerate(plans) for b in p.batches if not b.padding
    }
    pads = [(r, b) for r, p in enumerate(plans) for b in p.batches if b.padding]
    assert len(pads) == 2 and len(real) == 4
    for r, b in pads:
        assert (b.bucket, b.members) in real
        assert real[(b.bucket, b.members)] != r  # a copy never lands on its own rank
    # They copy the first batches of the shuffled order: rank 0's and rank 1's first batches.
    assert {b.members for _, b in pads} == {
        plans[0].batches[0].members,
        plans[1].batches[0].members,
    }


def test_more_ranks_than_batches() -> None:
    plans = ranks([A] * 4, 4)
    assert [len(p.batches) for p in plans] == [1, 1, 1, 1]
    assert [p.batches[0].padding for p in plans] == [False, True, True, True]
    assert len({p.batches[0].members for p in plans}) == 1


def test_empty_bucket_list() -> None:
    for plan in ranks([], 3):
        assert plan.batches == () and plan.pools == {}
        assert plan.stats["batches"] == 0 and plan.stats["padding_batches"] == 0


# --- determinism ------------------------------------------------------------------------------


def test_same_inputs_same_plan() -> None:
    one = plan_epoch(TEN_THREE * 5, batch_size=4, seed=11, epoch=2, rank=1, world_size=3)
    two = plan_epoch(tuple(TEN_THREE * 5), batch_size=4, seed=11, epoch=2, rank=1, world_size=3)
    assert one == two


def test_epochs_and_seeds_differ() -> None:
    buckets = TEN_THREE * 5
    base = plan_epoch(buckets, batch_size=4, seed=11, epoch=2)
    other_epoch = plan_epoch(buckets, batch_size=4, seed=11, epoch=3)
    other_seed = plan_epoch(buckets, batch_size=4, seed=12, epoch=2)
    assert as_tuples(base) != as_tuples(other_epoch)
    assert as_tuples(base) != as_tuples(other_seed)


def test_equal_bucket_objects_are_one_bucket() -> None:
    # Distinct but equal Bucket objects group by value, exactly as shared objects do.
    fresh = [Bucket(b.frames, b.width, b.height) for b in TEN_THREE]
    assert plan_epoch(fresh, batch_size=4, seed=5, epoch=0) == plan_epoch(
        TEN_THREE, batch_size=4, seed=5, epoch=0
    )
    mixed = [A, Bucket(5, 64, 64)] * 5
    plan = plan_epoch(mixed, batch_size=4, seed=5, epoch=0)
    assert plan.pools == {A: tuple(range(10))}


def test_many_fresh_bucket_objects_group_by_value() -> None:
    # More distinct objects than the identity cache holds: the rest are grouped by value.
    shared = [A, B, C] * 2000
    fresh = [Bucket(b.frames, b.width, b.height) for b in shared]
    one = plan_epoch(shared, batch_size=4, seed=5, epoch=0, world_size=2)
    two = plan_epoch(fresh, batch_size=4, seed=5, epoch=0, world_size=2)
    assert one == two
    assert two.pools[B] == tuple(range(1, 6000, 3))


def test_other_buckets_do_not_change_a_buckets_batches() -> None:
    # The within-bucket shuffle depends on the bucket's own samples only.
    alone = plan_epoch([A] * 12, batch_size=4, seed=5, epoch=0)
    mixed = plan_epoch([A] * 12 + [B] * 7, batch_size=4, seed=5, epoch=0)
    assert {b.members for b in alone.batches} == {b.members for b in mixed.batches if b.bucket == A}


# --- replacement_candidates -------------------------------------------------------------------


def test_replacement_candidates_cover_the_rest_of_the_pool() -> None:
    plans = ranks([A] * 40 + [B] * 9, 2)
    for plan in plans:
        for batch in plan.batches:
            got = list(replacement_candidates(plan, batch, seed=7))
            assert not set(got) & set(batch.members)
            assert len(got) == len(set(got))
            assert set(got) == set(plan.pools[batch.bucket]) - set(batch.members)
            assert got == list(replacement_candidates(plan, batch, seed=7))


def test_replacement_candidates_vary_with_position_rank_and_seed() -> None:
    plans = ranks([A] * 200, 2)
    first, second = plans[0].batches[0], plans[0].batches[1]
    common = set(plans[0].pools[A]) - set(first.members) - set(second.members)

    def order(plan: EpochPlan, batch: PlannedBatch, seed: int = 7) -> list[int]:
        return [c for c in replacement_candidates(plan, batch, seed=seed) if c in common]

    assert order(plans[0], first) != order(plans[0], second)
    assert order(plans[0], first) != order(plans[0], first, seed=8)
    moved = dataclasses.replace(first)  # same batch, other rank's plan
    assert order(plans[0], moved) != order(plans[1], moved)


def test_replacement_candidates_are_lazy_prefixes() -> None:
    plan = plan_epoch([A] * 30, batch_size=4, seed=2, epoch=0)
    batch = plan.batches[0]
    full = list(replacement_candidates(plan, batch, seed=1))
    it = replacement_candidates(plan, batch, seed=1)
    assert [next(it) for _ in range(3)] == full[:3]


def test_replacement_candidates_other_bucket_via_empty_members() -> None:
    plan = plan_epoch(TEN_THREE, batch_size=4, seed=2, epoch=0)
    batch = next(b for b in plan.batches if b.bucket == A and not b.repeats)
    other = list(
        replacement_candidates(plan, dataclasses.replace(batch, bucket=B, members=()), seed=1)
    )
    assert sorted(other) == [10, 11, 12]


def test_replacement_candidates_unknown_bucket() -> None:
    plan = plan_epoch(TEN_THREE, batch_size=4, seed=2, epoch=0)
    stray = dataclasses.replace(plan.batches[0], bucket=C)
    with pytest.raises(ValueError, match="no pool"):
        next(replacement_candidates(plan, stray, seed=1))


def test_bucket_with_no_other_samples_has_no_candidates() -> None:
    plan = plan_epoch([B] * 3, batch_size=4, seed=2, epoch=0)
    assert list(replacement_candidates(plan, plan.batches[0], seed=1)) == []


# --- fallback_buckets -------------------------------------------------------------------------


def test_fallback_buckets() -> None:
    many = [Bucket(1 + 4 * f, 16 * w, 16) for f in range(3) for w in range(1, 4)]
    plans = ranks(many * 8, 2, seed=3)  # two batches per bucket
    by_bucket: dict[Bucket, set[tuple[Bucket, ...]]] = {}
    for plan in plans:
        for batch in plan.batches:
            got = fallback_buckets(plan, batch, seed=3)
            assert batch.bucket not in got
            assert sorted(got, key=str) == sorted(set(many) - {batch.bucket}, key=str)
            assert got == fallback_buckets(plan, batch, seed=3)
            by_bucket.setdefault(batch.bucket, set()).add(tuple(got))
    # Seeded per batch: two batches of one bucket do not share one fixed order.
    assert all(len(orders) == 2 for orders in by_bucket.values())
    first = plans[0].batches[0]
    assert fallback_buckets(plans[0], first, seed=3) != fallback_buckets(plans[0], first, seed=4)
    # Same position on another rank: another order.
    assert fallback_buckets(plans[0], first, seed=3) != fallback_buckets(plans[1], first, seed=3)


def test_fallback_buckets_single_bucket_is_empty() -> None:
    plan = plan_epoch([A] * 8, batch_size=4, seed=3, epoch=0)
    assert fallback_buckets(plan, plan.batches[0], seed=3) == []


# --- shard_batches ----------------------------------------------------------------------------


@pytest.mark.parametrize("num_workers", [1, 2, 3, 7])
def test_shard_batches_partition_in_order(num_workers: int) -> None:
    plan = plan_epoch([A] * 37 + [B] * 11, batch_size=3, seed=1, epoch=0)
    shards = [shard_batches(plan, w, num_workers) for w in range(num_workers)]
    assert sorted(b.position for s in shards for b in s) == list(range(len(plan.batches)))
    for w, shard in enumerate(shards):
        assert [b.position for b in shard] == list(range(w, len(plan.batches), num_workers))
    # DataLoader's round-robin over the workers gives back the plan in position order.
    merged = []
    iters = [iter(s) for s in shards]
    while iters:
        for it in list(iters):
            batch = next(it, None)
            if batch is None:
                iters.remove(it)
            else:
                merged.append(batch)
    assert tuple(merged) == plan.batches


def test_shard_batches_validates() -> None:
    plan = plan_epoch([A] * 8, batch_size=4, seed=1, epoch=0)
    with pytest.raises(ConfigError, match="num_workers"):
        shard_batches(plan, 0, 0)
    with pytest.raises(ConfigError, match="worker"):
        shard_batches(plan, 2, 2)


# --- validation -------------------------------------------------------------------------------


def test_check_plan_options_valid() -> None:
    for mode in SMALL_BUCKET_MODES:
        assert check_plan_options(1, mode, 1, 0) == []
    assert check_plan_options(16, "repeat", 8, 7) == []


def test_check_plan_options_gathers_all_problems() -> None:
    problems = check_plan_options(0, "pad", 2, 2)
    assert len(problems) == 3
    assert "batch_size (0)" in problems[0]
    assert "small_buckets ('pad')" in problems[1] and "repeat" in problems[1]
    assert "rank (2)" in problems[2] and "world_size=2" in problems[2]
    assert len(check_plan_options(True, None, 0, "0")) == 4
    # Non-int batch_size and world_size; the rank range is unchecked without a valid world size.
    assert len(check_plan_options(2.0, "drop", 1.0, -1)) == 2
    (problem,) = check_plan_options(4, "drop", 4, -1)
    assert problem.startswith("rank (-1) must be in [0, world_size=4).")


def test_plan_epoch_raises_all_problems() -> None:
    with pytest.raises(ConfigError) as info:
        plan_epoch(TEN_THREE, batch_size=0, seed="1", epoch=0, rank=5, world_size=2)  # type: ignore[arg-type]
    assert len(info.value.problems) == 3
    assert isinstance(info.value, ValueError)


def test_plan_epoch_rejects_non_buckets() -> None:
    with pytest.raises(ConfigError) as info:
        plan_epoch([A, (5, 64, 64), A, None], batch_size=2, seed=0, epoch=0)  # type: ignore[list-item]
    assert len(info.value.problems) == 2
    assert "buckets[1]" in info.value.problems[0] and "buckets[3]" in info.value.problems[1]


def test_plan_epoch_caps_the_list_of_non_buckets() -> None:
    with pytest.raises(ConfigError) as info:
        plan_epoch([None] * 100, batch_size=2, seed=0, epoch=0)  # type: ignore[list-item]
    assert len(info.value.problems) == 6
    assert "95 more" in info.value.problems[-1]


def test_planned_batch_checks_repeats() -> None:
    with pytest.raises(ValueError, match="repeats"):
        PlannedBatch(position=0, bucket=A, members=(1, 2), repeats=3)
    with pytest.raises(ValueError, match="position"):
        PlannedBatch(position=-1, bucket=A, members=(1,))


# --- serialisation ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", SMALL_BUCKET_MODES)
def test_stats_are_json(mode: str) -> None:
    plan = plan_epoch(TEN_THREE, batch_size=4, seed=1, epoch=0, world_size=3, small_buckets=mode)
    assert json.loads(json.dumps(plan.stats)) == plan.stats


def test_plan_pickles() -> None:
    plan = plan_epoch(TEN_THREE * 3, batch_size=4, seed=1, epoch=4, rank=1, world_size=3)
    back = pickle.loads(pickle.dumps(plan))
    assert back == plan
    assert list(replacement_candidates(back, back.batches[0], seed=1)) == list(
        replacement_candidates(plan, plan.batches[0], seed=1)
    )
