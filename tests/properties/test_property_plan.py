"""Feature: wan-training-pipeline-fixes, Property plan: epoch batch plan.

For any assignment of 0..300 samples to 1..6 buckets, any batch size 1..8, world size 1..4 and
small-bucket mode: batches are bucket-homogeneous, full in ``repeat`` and ``drop`` modes, every
rank has the same number of batches, every non-padding batch is on exactly one rank, and (in
``repeat`` and ``partial`` modes) every sample is planned. For any set of samples that fail to
decode, a consumer that follows ``replacement_candidates`` and ``fallback_buckets`` keeps every
batch homogeneous and full unless no bucket could fill it, and gets the same result whatever the
number of DataLoader workers. The plan is a pure function of its inputs.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from dataclasses import dataclass

from hypothesis import event, given, settings
from hypothesis import strategies as st

from wan_data.items import Bucket
from wan_data.planning.plan import (
    SMALL_BUCKET_MODES,
    EpochPlan,
    PlannedBatch,
    fallback_buckets,
    plan_epoch,
    replacement_candidates,
    shard_batches,
)

BUCKET_CHOICES = (
    Bucket(1, 16, 16),
    Bucket(5, 32, 16),
    Bucket(5, 16, 32),
    Bucket(9, 64, 32),
    Bucket(17, 32, 32),
    Bucket(33, 48, 48),
)


@dataclass(frozen=True)
class Scenario:
    buckets: tuple[Bucket, ...]
    batch_size: int
    world_size: int
    mode: str
    seed: int
    epoch: int

    def plans(self) -> list[EpochPlan]:
        return [
            plan_epoch(
                self.buckets,
                batch_size=self.batch_size,
                seed=self.seed,
                epoch=self.epoch,
                rank=r,
                world_size=self.world_size,
                small_buckets=self.mode,
            )
            for r in range(self.world_size)
        ]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """Sample lists with lopsided bucket sizes: tiny buckets are where the edge cases live."""
    chosen = draw(st.lists(st.sampled_from(BUCKET_CHOICES), min_size=1, max_size=6, unique=True))
    n = draw(st.integers(0, 300))
    weights = draw(st.lists(st.integers(1, 20), min_size=len(chosen), max_size=len(chosen)))
    pool = [b for b, w in zip(chosen, weights, strict=True) for _ in range(w)]
    assignment = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    return Scenario(
        buckets=tuple(assignment),
        batch_size=draw(st.integers(1, 8)),
        world_size=draw(st.integers(1, 4)),
        mode=draw(st.sampled_from(SMALL_BUCKET_MODES)),
        seed=draw(st.integers(0, 2**32)),
        epoch=draw(st.integers(0, 50)),
    )


@st.composite
def failure_sets(draw: st.DrawFn, buckets: tuple[Bucket, ...]) -> frozenset[int]:
    """Nothing, a few samples, whole buckets (forcing fallbacks), or everything."""
    n = len(buckets)
    if n == 0:
        return frozenset()
    kind = draw(st.sampled_from(["none", "some", "buckets", "buckets", "all"]))
    if kind == "none":
        return frozenset()
    if kind == "all":
        return frozenset(range(n))
    failed = set(draw(st.sets(st.integers(0, n - 1), max_size=n)))
    if kind == "buckets":
        # Some, not all, buckets die outright: their batches must fall back to a live one.
        present = sorted(set(buckets), key=str)
        most = max(1, len(present) - 1)
        dead = draw(st.sets(st.sampled_from(present), min_size=1, max_size=most))
        failed |= {i for i, b in enumerate(buckets) if b in dead}
    return frozenset(failed)


def consume(
    plan: EpochPlan, batch: PlannedBatch, failed: frozenset[int], seed: int
) -> tuple[Bucket, tuple[int, ...]] | None:
    """What a consumer yields for one planned batch when the samples in ``failed`` fail.

    A failed member is replaced by the next non-failed candidate of its bucket; when the
    candidates run out, a whole batch is built from the first fallback bucket that has enough
    good samples. ``None``: no bucket could fill the batch.
    """
    size = len(batch.members)
    candidates = replacement_candidates(plan, batch, seed=seed)
    out: list[int] = []
    for member in batch.members:
        if member not in failed:
            out.append(member)
            continue
        good = next((c for c in candidates if c not in failed), None)
        if good is None:
            break
        out.append(good)
    else:
        return batch.bucket, tuple(out)
    for other in fallback_buckets(plan, batch, seed=seed):
        whole = dataclasses.replace(batch, bucket=other, members=(), repeats=0)
        goods = (c for c in replacement_candidates(plan, whole, seed=seed) if c not in failed)
        chosen = tuple(itertools.islice(goods, size))
        if len(chosen) == size:
            event("fell back to another bucket")
            return other, chosen
    return None


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_plan_structure(s: Scenario) -> None:
    plans = s.plans()
    n = len(s.buckets)
    counts = {len(p.batches) for p in plans}
    assert len(counts) == 1, f"ranks disagree on the batch count: {[len(p.batches) for p in plans]}"
    stats = plans[0].stats
    for p in plans:
        assert p.stats == stats and p.pools == plans[0].pools
        assert [b.position for b in p.batches] == list(range(len(p.batches)))
        assert stats["batches_per_rank"] == len(p.batches)

    # Pools: every sample of each bucket, ascending.
    expected_pools: dict[Bucket, list[int]] = {}
    for i, b in enumerate(s.buckets):
        expected_pools.setdefault(b, []).append(i)
    assert plans[0].pools == {b: tuple(v) for b, v in expected_pools.items()}

    real: dict[tuple[Bucket, tuple[int, ...]], int] = {}
    own_slots: Counter[int] = Counter()
    pads = []
    for r, p in enumerate(plans):
        for b in p.batches:
            assert all(s.buckets[m] == b.bucket for m in b.members), "mixed-bucket batch"
            assert 1 <= len(b.members) <= s.batch_size
            if s.mode in ("repeat", "drop"):
                assert len(b.members) == s.batch_size
            if s.mode != "repeat":
                assert b.repeats == 0
            if b.padding:
                pads.append((r, b))
                continue
            key = (b.bucket, b.members)
            if key in real:
                # Only identical repeat-filled batches of a bucket smaller than the batch can
                # coincide; they are still distinct planned batches.
                assert b.repeats
            real[key] = r
            own_slots.update(b.members[: len(b.members) - b.repeats])
            if b.repeats and len(expected_pools[b.bucket]) >= s.batch_size:
                assert len(set(b.members)) == len(b.members), "filler duplicates a member"

    # Non-padding batches: each planned once, on one rank; the samples they own are disjoint.
    assert sum(not b.padding for p in plans for b in p.batches) == stats["batches"]
    assert all(c == 1 for c in own_slots.values())
    if s.mode in ("repeat", "partial"):
        assert set(own_slots) == set(range(n)), "a sample was never planned"
        assert stats["dropped"] == 0
    else:
        assert n - len(own_slots) == stats["dropped"]

    # Padding: fewer copies than ranks, each a copy of a real batch held by another rank.
    assert len(pads) == stats["padding_batches"] < s.world_size
    for r, b in pads:
        assert real[(b.bucket, b.members)] != r


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_replacement_keeps_batches_full(data: st.DataObject) -> None:
    s = data.draw(scenarios())
    failed = data.draw(failure_sets(s.buckets))
    good_per_bucket = Counter(s.buckets[i] for i in range(len(s.buckets)) if i not in failed)
    for plan in s.plans():
        for batch in plan.batches:
            result = consume(plan, batch, failed, s.seed)
            size = len(batch.members)
            if result is None:
                event("no bucket could fill a batch")
                # Only when neither the own bucket nor any other could fill the batch.
                lost = sum(m in failed for m in batch.members)
                spare = set(plan.pools[batch.bucket]) - set(batch.members) - failed
                assert len(spare) < lost
                assert all(good_per_bucket[b] < size for b in plan.pools if b != batch.bucket), (
                    "gave up although another bucket could fill the batch"
                )
                continue
            bucket, members = result
            assert len(members) == size
            if s.mode in ("repeat", "drop"):
                assert size == s.batch_size
            assert not set(members) & failed
            assert all(s.buckets[m] == bucket for m in members), "mixed-bucket batch"
            replaced = [m for m in members if m not in batch.members]
            assert len(set(replaced)) == len(replaced), "one candidate used twice"
            # Deterministic: the same failure gives the same replacement.
            assert consume(plan, batch, failed, s.seed) == result


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_worker_shards_partition_and_keep_order(data: st.DataObject) -> None:
    s = data.draw(scenarios())
    failed = data.draw(failure_sets(s.buckets))
    num_workers = data.draw(st.integers(1, 3))
    for plan in s.plans():
        shards = [shard_batches(plan, w, num_workers) for w in range(num_workers)]
        positions = sorted(b.position for shard in shards for b in shard)
        assert positions == list(range(len(plan.batches)))
        for shard in shards:
            assert [b.position for b in shard] == sorted(b.position for b in shard)
        # DataLoader round-robin over workers that each yield their whole share: the plan, in
        # order, with the same replacements as a single process.
        yielded = [
            [(b.position, consume(plan, b, failed, s.seed)) for b in shard] for shard in shards
        ]
        merged = [
            item for group in itertools.zip_longest(*yielded) for item in group if item is not None
        ]
        single = [(b.position, consume(plan, b, failed, s.seed)) for b in plan.batches]
        assert merged == single


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_plan_is_pure(s: Scenario) -> None:
    before = s.buckets
    first = s.plans()
    # Recomputed in another order, from a list instead of a tuple, with fresh Bucket objects.
    fresh = [Bucket(b.frames, b.width, b.height) for b in s.buckets]
    again = [
        plan_epoch(
            fresh,
            batch_size=s.batch_size,
            seed=s.seed,
            epoch=s.epoch,
            rank=r,
            world_size=s.world_size,
            small_buckets=s.mode,
        )
        for r in reversed(range(s.world_size))
    ]
    assert first == list(reversed(again))
    assert s.buckets == before
    for p in first:
        for b in p.batches:
            assert list(replacement_candidates(p, b, seed=s.seed)) == list(
                replacement_candidates(p, b, seed=s.seed)
            )
            assert fallback_buckets(p, b, seed=s.seed) == fallback_buckets(p, b, seed=s.seed)
