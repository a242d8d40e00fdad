"""Property buckets: spatial bucket sets and the bucket a source is trained at.

Feature: wan-training-pipeline-fixes, Property buckets

For any step in {8, 16, 32}, any 1-3 target resolutions (sides multiples of the step in
64..2048, distinct areas: equal areas are refused by design) and any source size in 1..8192:

- every bucket side is a multiple of the step and the target is in its own tier;
- no bucket costs more than its tier's target area; each loses less than one step-wide strip of
  it (``target - W*H < step * W``), and for aspects within 1:2..2:1 less than
  ``step * min(W, H)``, i.e. ``W*H / target > 1 - step / sqrt(target)`` (> 50% here, since
  ``sqrt(target) >= 64 >= 2 * step``);
- ``choose`` goes to the largest tier the source area reaches (else the smallest) and no bucket of
  that tier is strictly nearer the source aspect in log ratio;
- ``choose(no_upscale=True)`` never upscales, and no fitting bucket of any tier has a larger area;
- with one target, ``choose`` is exactly ``nearest_bucket`` over ``make_buckets``;
- ``make_buckets`` (which stops its width scan early) equals its plain reference definition.
"""

from __future__ import annotations

import math

from hypothesis import example, given, note, settings
from hypothesis import strategies as st

from wan_data.media.buckets import BucketSet, make_bucket_set, make_buckets, nearest_bucket

PROPERTY = "Feature: wan-training-pipeline-fixes, Property buckets"
TOL = 1e-12  # log-ratio comparisons: mirrored buckets may differ by an ulp

Size = tuple[int, int]

steps = st.sampled_from([8, 16, 32])
source_sides = st.integers(1, 8192)


@st.composite
def step_and_targets(draw: st.DrawFn, max_targets: int = 3) -> tuple[int, list[Size]]:
    """A step and 1..max_targets targets with sides multiples of it in 64..2048, distinct areas."""
    step = draw(steps)
    side = st.integers(64 // step, 2048 // step).map(lambda k: k * step)
    targets = draw(
        st.lists(
            st.tuples(side, side),
            min_size=1,
            max_size=max_targets,
            unique_by=lambda r: r[0] * r[1],
        )
    )
    return step, targets


@st.composite
def sources_for(draw: st.DrawFn, targets: list[Size]) -> Size:
    """A source size: mostly anywhere in 1..8192, often exactly a target or a pixel off one.

    The tier boundary (source area == a target area) is where an off-by-one would hide.
    """
    if draw(st.booleans()):
        return draw(source_sides), draw(source_sides)
    tw, th = draw(st.sampled_from(targets))
    dw, dh = draw(st.sampled_from([(0, 0), (-1, 0), (0, -1), (1, 0), (0, 1)]))
    return tw + dw, th + dh


def log_aspect(size: Size) -> float:
    return math.log(size[0]) - math.log(size[1])


def expected_tier(bucket_set: BucketSet, width: int, height: int) -> int:
    """Reference: the tier of the largest target area <= the source area, else the smallest."""
    areas = [w * h for w, h in bucket_set.targets]
    reached = [i for i, a in enumerate(areas) if a <= width * height]
    return max(reached, key=lambda i: areas[i]) if reached else areas.index(min(areas))


def reference_make_buckets(
    resolution: Size, *, step: int, max_aspect: float = 4.0
) -> tuple[Size, ...]:
    """make_buckets as first written: scan every width up to area / step."""
    target_w, target_h = resolution
    area = target_w * target_h
    found = {(target_w, target_h)}
    w = step
    while w * step <= area:
        h = (area // w) // step * step
        if h >= step and 1 / max_aspect <= w / h <= max_aspect:
            found.add((w, h))
        w += step
    best: dict[int, Size] = {}
    for bw, bh in found:
        if bh not in best or bw > best[bh][0]:
            best[bh] = (bw, bh)
    return tuple(sorted(best.values(), key=lambda b: (b[0] / b[1], b[0])))


@settings(max_examples=200, deadline=None)
@given(setup=step_and_targets())
@example(setup=(32, [(64, 64)]))  # the tightest area bound of the domain: sqrt(4096) = 2 * 32
@example(setup=(32, [(64, 96)]))  # a 4:1 end bucket keeps only 2/3 of the area
@example(setup=(16, [(832, 480), (1280, 720)]))
def test_buckets_are_on_the_grid_and_within_the_area(setup: tuple[int, list[Size]]) -> None:
    """Feature: wan-training-pipeline-fixes, Property buckets: grid and area bound

    Sides are multiples of the step; area <= target; target - area < step * W always (target
    exact), < step * min(W, H) within 1:2..2:1, hence ratio > 1 - step / sqrt(target) >= 50%.
    """
    step, targets = setup
    bucket_set = make_bucket_set(targets, step=step)
    assert sorted(targets, key=lambda r: r[0] * r[1]) == list(bucket_set.targets)
    assert set(bucket_set.all) == {b for tier in bucket_set.tiers for b in tier}
    for target, tier in zip(bucket_set.targets, bucket_set.tiers, strict=True):
        area = target[0] * target[1]
        assert target in tier
        assert len(tier) == len(set(tier))
        for w, h in tier:
            assert w % step == 0 and h % step == 0, (w, h)
            assert w >= step and h >= step
            assert w * h <= area, (target, w, h)
            if (w, h) != target:
                assert 1 / 4 <= w / h <= 4, (target, w, h)
                assert area - w * h < step * w, (target, w, h)
            if 0.5 <= w / h <= 2:
                note(f"tier {target} bucket {(w, h)} ratio {w * h / area:.3f}")
                assert area - w * h < step * min(w, h), (target, w, h)
                assert w * h / area > 1 - step / math.sqrt(area), (target, w, h)
                assert w * h >= 0.5 * area, (target, w, h)


@settings(max_examples=300, deadline=None)
@given(setup=step_and_targets(), data=st.data())
def test_choose_takes_the_reached_tier_and_its_nearest_aspect(
    setup: tuple[int, list[Size]], data: st.DataObject
) -> None:
    """Feature: wan-training-pipeline-fixes, Property buckets: nearest aspect within the tier

    The chosen bucket lies in the tier of the largest target area the source reaches (else the
    smallest tier), is what nearest_bucket picks there, and no bucket of that tier is strictly
    nearer the source aspect in log ratio.
    """
    step, targets = setup
    width, height = data.draw(sources_for(targets), label="source")
    bucket_set = make_bucket_set(targets, step=step)
    chosen = bucket_set.choose(width, height)
    assert chosen is not None
    index = expected_tier(bucket_set, width, height)
    assert bucket_set.tier_index(width, height) == index
    tier = bucket_set.tiers[index]
    assert chosen in tier
    assert chosen == nearest_bucket(width, height, tier)
    source = math.log(width / height)
    distance = abs(log_aspect(chosen) - source)
    for other in tier:
        assert abs(log_aspect(other) - source) >= distance - TOL, (chosen, other)


@settings(max_examples=300, deadline=None)
@given(setup=step_and_targets(), data=st.data())
def test_no_upscale_never_upscales_and_takes_the_largest_fitting(
    setup: tuple[int, list[Size]], data: st.DataObject
) -> None:
    """Feature: wan-training-pipeline-fixes, Property buckets: no_upscale

    The bucket fits inside the source (cover-resize scale max(W/width, H/height) <= 1), no
    fitting bucket of any tier has a larger area nor, at equal area, a strictly nearer aspect;
    None exactly when nothing fits.
    """
    step, targets = setup
    width, height = data.draw(sources_for(targets), label="source")
    bucket_set = make_bucket_set(targets, step=step)
    chosen = bucket_set.choose(width, height, no_upscale=True)
    fitting = [b for tier in bucket_set.tiers for b in tier if b[0] <= width and b[1] <= height]
    if chosen is None:
        assert not fitting
        return
    w, h = chosen
    assert w <= width and h <= height
    assert max(w / width, h / height) <= 1
    assert any(chosen in tier for tier in bucket_set.tiers)
    source = math.log(width) - math.log(height)
    distance = abs(log_aspect(chosen) - source)
    for bw, bh in fitting:
        assert bw * bh <= w * h, (chosen, (bw, bh))
        if bw * bh == w * h:
            assert abs(log_aspect((bw, bh)) - source) >= distance - TOL, (chosen, (bw, bh))


@settings(max_examples=300, deadline=None)
@given(
    setup=step_and_targets(max_targets=1),
    width=source_sides,
    height=source_sides,
    as_list=st.booleans(),
    max_aspect=st.sampled_from([1.0, 2.0, 3.5, 4.0, 8.0]),
)
def test_single_resolution_choose_is_nearest_bucket(
    setup: tuple[int, list[Size]], width: int, height: int, as_list: bool, max_aspect: float
) -> None:
    """Feature: wan-training-pipeline-fixes, Property buckets: single resolution = nearest_bucket

    With one target, tiers change nothing: choose equals nearest_bucket over make_buckets, given
    as ``(W, H)`` or ``[(W, H)]``.
    """
    step, (target,) = setup
    bucket_set = make_bucket_set([target] if as_list else target, step=step, max_aspect=max_aspect)
    buckets = make_buckets(target, step=step, max_aspect=max_aspect)
    assert bucket_set.tiers == (buckets,)
    assert bucket_set.choose(width, height) == nearest_bucket(width, height, buckets)


@settings(max_examples=200, deadline=None)
@given(
    setup=step_and_targets(max_targets=1),
    max_aspect=st.one_of(
        st.sampled_from([1.0, 2.0, 4.0, 16.0, math.inf]),
        st.floats(1.0, 64.0, allow_nan=False),
    ),
)
def test_make_buckets_equals_its_reference(
    setup: tuple[int, list[Size]], max_aspect: float
) -> None:
    """Feature: wan-training-pipeline-fixes, Property buckets: early-stopping scan is exact

    make_buckets stops scanning widths at sqrt(2 * area * max_aspect); that must drop nothing the
    full scan would have kept.
    """
    step, (target,) = setup
    assert make_buckets(target, step=step, max_aspect=max_aspect) == reference_make_buckets(
        target, step=step, max_aspect=max_aspect
    )
