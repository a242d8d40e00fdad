"""Property split: the validation split is a pure, stable function of (seed, key).

For any set of source keys, split seed and fraction: train and val partition the keys, every
repeat of a file is on its file's side, and adding or removing other keys never moves a key to
the other side. With a count, adding keys can only move a key from val to train (displaced by a
smaller hash), never from train to val.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from wan_data.failures.mechanism import StageContext
from wan_data.items import Failed, Source
from wan_data.sources.split import SplitSources, base_key, val_keys

keys = st.text(alphabet="abcdefgh/._@0123456789", min_size=1, max_size=12)
key_sets = st.sets(keys, min_size=0, max_size=40)
seeds = st.integers(0, 2**31)
fractions = st.floats(0.0, 0.99)


@settings(max_examples=200, deadline=None)
@given(key_sets, st.sets(keys, max_size=10), seeds, fractions)
def test_fraction_sides_never_change_when_keys_are_added_or_removed(
    old: set[str], added: set[str], seed: int, fraction: float
) -> None:
    before = val_keys(old, fraction=fraction, seed=seed)
    after = val_keys(old | added, fraction=fraction, seed=seed)
    assert before == after & old  # every old key keeps its side
    removed = set(sorted(old)[: len(old) // 2])
    assert val_keys(old - removed, fraction=fraction, seed=seed) == before - removed


@settings(max_examples=200, deadline=None)
@given(key_sets, keys, seeds, st.integers(1, 10))
def test_count_moves_a_key_only_from_val_to_train_when_one_is_added(
    old: set[str], added: str, seed: int, count: int
) -> None:
    before = val_keys(old, count=count, seed=seed)
    after = val_keys(old | {added}, count=count, seed=seed)
    assert len(before) == min(count, len(old))
    assert (after & old) <= before  # nothing old enters val
    assert len(before - after) <= 1  # at most one displaced to train


@settings(max_examples=100, deadline=None)
@given(key_sets, seeds, fractions, st.integers(1, 3))
def test_train_and_val_partition_the_sources_and_repeats_stay_together(
    names: set[str], seed: int, fraction: float, repeats: int
) -> None:
    sources = [
        Source(
            key=name if r == 0 else f"{name}@{r}", path=f"/d/{name}", media_type="video", repeat=r
        )
        for name in sorted(names)
        for r in range(repeats)
    ]
    sides = {}
    for split in ("train", "val"):
        stage = SplitSources.for_sources(sources, split=split, fraction=fraction, seed=seed)
        out = list(stage(sources, StageContext()))
        assert len(out) == len(sources)
        sides[split] = [s.key for s in out if isinstance(s, Source)]
        dropped = [f.key for f in out if isinstance(f, Failed)]
        assert all(f.reason == "other_split" for f in out if isinstance(f, Failed))
        assert sorted(sides[split] + dropped) == sorted(s.key for s in sources)
    assert set(sides["train"]).isdisjoint(sides["val"])
    assert sorted(sides["train"] + sides["val"]) == sorted(s.key for s in sources)
    by_key = {s.key: s for s in sources}
    for side in sides.values():
        bases = [base_key(by_key[k]) for k in side]
        assert all(bases.count(b) == repeats for b in bases)
