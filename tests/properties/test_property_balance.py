"""Property: balancing and per-sample batch sizes in the epoch plan.

For any concepts with fractional repeats or ``samples_per_epoch`` over any sources and clips:
each epoch's selection plans the fixed copies once, a fractional copy for ``floor(f * n)`` or
``ceil(f * n)`` of the ``n`` sources (so the mean over epochs is ``f * n`` within a bound), a
``samples_per_epoch`` concept exactly ``K`` samples (each at most ``ceil(K / M)`` times), the
other concepts' samples once; the selection is a pure function of (seed, epoch, samples).
For any per-sample batch sizes and selection, the plan's batches hold one bucket and one batch
size, are full in ``repeat`` mode, every rank has the same count, and every selected sample is
planned as often as it was selected.
"""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from wan_data.items import Bucket, PlanSample, Probed, Source, VideoMetadata
from wan_data.planning.balance import Balancing
from wan_data.planning.plan import plan_epoch
from wan_data.sources.concepts import Concept

META = VideoMetadata(
    width=32, height=32, fps=8.0, duration=2.0, frame_count=16, format="mp4", codec="h264"
)
BUCKETS = (Bucket(1, 16, 16), Bucket(5, 32, 16), Bucket(9, 32, 32))


def _samples(concepts: list[tuple[Concept, int, int]]) -> list[PlanSample]:
    """Samples as collect + bucket make them: ``ceil(repeats)`` copies of each source, each
    with ``clips`` samples."""
    out = []
    for concept, sources, clips in concepts:
        for s in range(sources):
            for r in range(concept.copies):
                key = f"{concept.name}/f{s}.mp4" + (f"@{r}" if r else "")
                source = Source(
                    key=key,
                    path=f"/data/{concept.name}/f{s}.mp4",
                    media_type="video",
                    concept=concept.name or "",
                    repeat=r,
                )
                probed = Probed(source=source, metadata=META)
                for c in range(clips):
                    out.append(PlanSample(probed=probed, clip_index=c, bucket=BUCKETS[0]))
    return out


concept_specs = st.lists(
    st.tuples(
        st.one_of(
            st.floats(0.1, 3.9).map(lambda r: round(r, 2)),
            st.integers(1, 3).map(float),
        ),
        st.one_of(st.none(), st.integers(1, 40)),
        st.integers(0, 12),  # sources
        st.integers(1, 3),  # clips per source
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(specs=concept_specs, seed=st.integers(0, 2**31), epochs=st.integers(1, 6))
def test_selection_counts_are_within_bounds(
    specs: list[tuple[float, int | None, int, int]], seed: int, epochs: int
) -> None:
    concepts = []
    for i, (repeats, per_epoch, sources, clips) in enumerate(specs):
        concept = (
            Concept(root=f"/c{i}", name=f"c{i}", samples_per_epoch=per_epoch)
            if per_epoch is not None
            else Concept(root=f"/c{i}", name=f"c{i}", repeats=repeats)
        )
        concepts.append((concept, sources, clips))
    samples = _samples(concepts)
    balancing = Balancing.from_samples(samples, [c for c, _, _ in concepts], seed=seed)
    if not any(c.balanced for c, _, _ in concepts):
        assert balancing is None
        return
    assert balancing is not None
    totals: Counter[str] = Counter()
    for epoch in range(epochs):
        selection = balancing.selection(epoch)
        assert selection == sorted(selection)
        assert selection == balancing.selection(epoch)  # pure
        again = Balancing.from_samples(samples, [c for c, _, _ in concepts], seed=seed)
        assert again is not None and again.selection(epoch) == selection
        counts = Counter(selection)
        for concept, sources, clips in concepts:
            own = [i for i, s in enumerate(samples) if s.probed.source.concept == concept.name]
            chosen = sum(counts[i] for i in own)
            totals[concept.name or ""] += chosen
            if concept.samples_per_epoch is not None:
                k = concept.samples_per_epoch
                assert chosen == (k if own else 0)
                if own:
                    assert max(counts[i] for i in own) <= math.ceil(k / len(own))
            elif not concept.balanced:
                assert all(counts[i] == 1 for i in own)
            else:
                fraction = concept.repeats - math.floor(concept.repeats)
                fixed = math.floor(concept.repeats) * sources * clips
                optional = chosen - fixed
                assert optional % clips == 0  # a source's clips come and go together
                drawn = optional // clips
                assert math.floor(fraction * sources) <= drawn <= math.ceil(fraction * sources)
                assert all(counts[i] <= 1 for i in own)
    for concept, sources, clips in concepts:
        if concept.balanced and concept.samples_per_epoch is None and sources:
            expected = concept.repeats * sources * clips * epochs
            # Each epoch is within one source's clips of f * n, never further.
            assert abs(totals[concept.name or ""] - expected) <= clips * epochs


@settings(max_examples=150, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 2), st.sampled_from([1, 2, 3, 8])), max_size=120),
    extra=st.lists(st.integers(0, 119), max_size=40),
    world=st.integers(1, 4),
    seed=st.integers(0, 1000),
    mode=st.sampled_from(["repeat", "drop", "partial"]),
)
def test_plan_with_batch_sizes_and_selection(
    data: list[tuple[int, int]], extra: list[int], world: int, seed: int, mode: str
) -> None:
    buckets = [BUCKETS[b] for b, _ in data]
    sizes = [s for _, s in data]
    selection = sorted([*range(len(data)), *(i for i in extra if i < len(data))])
    plans = [
        plan_epoch(
            buckets,
            batch_size=2,
            seed=seed,
            epoch=3,
            rank=r,
            world_size=world,
            small_buckets=mode,
            batch_sizes=sizes,
            selection=selection,
        )
        for r in range(world)
    ]
    assert len({len(p.batches) for p in plans}) == 1
    planned: Counter[int] = Counter()
    for plan in plans:
        for batch in plan.batches:
            members = batch.members
            assert {buckets[i] for i in members} == {batch.bucket}
            own = {sizes[i] for i in members}
            assert len(own) == 1
            (size,) = own
            if mode != "partial":
                assert len(members) == size
            else:
                assert len(members) <= size
            if not batch.padding:
                planned.update(members[: len(members) - batch.repeats])
    wanted = Counter(selection)
    if mode == "drop":
        assert all(planned[i] <= wanted[i] for i in planned)
    else:
        assert planned == wanted
