"""buckets.py: bucket sets, nearest-aspect choice, resize-to-cover and crop boxes."""

from __future__ import annotations

import math
import random

import pytest

from wan_data.buckets import (
    check_resolution,
    cover_size,
    crop_offsets,
    make_buckets,
    nearest_bucket,
    source_crop_box,
)

RESOLUTIONS = [((832, 480), 16), ((1280, 720), 16), ((1280, 704), 32), ((512, 512), 16)]


# --- make_buckets ---------------------------------------------------------------------------


@pytest.mark.parametrize(("resolution", "step"), RESOLUTIONS)
def test_make_buckets_invariants(resolution: tuple[int, int], step: int) -> None:
    buckets = make_buckets(resolution, step=step)
    area = resolution[0] * resolution[1]
    assert resolution in buckets
    assert len(buckets) == len(set(buckets))
    assert len(buckets) >= 10
    for w, h in buckets:
        assert w % step == 0 and h % step == 0, (w, h)
        assert w * h <= area, (w, h)
        assert 1 / 4 <= w / h <= 4, (w, h)
    aspects = [w / h for w, h in buckets]
    assert aspects == sorted(aspects)
    # Both orientations of the target are available.
    assert (resolution[1], resolution[0]) in buckets


@pytest.mark.parametrize(("resolution", "step"), RESOLUTIONS)
def test_make_buckets_use_most_of_the_area(resolution: tuple[int, int], step: int) -> None:
    area = resolution[0] * resolution[1]
    for w, h in make_buckets(resolution, step=step):
        # No bucket wastes more than one step-wide strip of the target's area.
        assert w * h > area - step * max(w, h), (w, h)


def test_make_buckets_832x480_ends() -> None:
    buckets = make_buckets((832, 480))
    assert buckets[0] == (320, 1248)
    assert buckets[-1] == (1248, 320)
    assert len(buckets) == 40


def test_make_buckets_max_aspect() -> None:
    buckets = make_buckets((832, 480), max_aspect=2.0)
    assert all(1 / 2 <= w / h <= 2 for w, h in buckets)
    assert (832, 480) in buckets
    assert len(buckets) < len(make_buckets((832, 480)))


def test_make_buckets_target_kept_even_if_extreme() -> None:
    assert (1024, 128) in make_buckets((1024, 128), max_aspect=4.0)


# --- nearest_bucket -------------------------------------------------------------------------


def test_nearest_bucket_exact_aspects() -> None:
    buckets = make_buckets((832, 480))
    assert nearest_bucket(1920, 1080, buckets) == (832, 480)
    assert nearest_bucket(1080, 1920, buckets) == (480, 832)
    assert nearest_bucket(832, 480, buckets) == (832, 480)


def test_nearest_bucket_uses_log_aspect() -> None:
    # Aspect 1.5 is nearer 2.0 than 1.0 in plain ratio (0.5 vs 0.5: a tie) but log says:
    # |log 1.5 - log 1| = 0.405 vs |log 2 - log 1.5| = 0.288, so 2:1 wins.
    buckets = [(100, 100), (200, 100)]
    assert nearest_bucket(150, 100, buckets) == (200, 100)
    # Symmetric for portrait.
    assert nearest_bucket(100, 150, [(100, 100), (100, 200)]) == (100, 200)


def test_nearest_bucket_is_the_minimum() -> None:
    buckets = make_buckets((832, 480))
    rng = random.Random(3)
    for _ in range(200):
        w, h = rng.randint(16, 4000), rng.randint(16, 4000)
        chosen = nearest_bucket(w, h, buckets)
        best = min(abs(math.log(b[0] / b[1]) - math.log(w / h)) for b in buckets)
        assert abs(math.log(chosen[0] / chosen[1]) - math.log(w / h)) == pytest.approx(best)


def test_nearest_bucket_tie_prefers_larger_area() -> None:
    assert nearest_bucket(16, 9, [(160, 90), (320, 180)]) == (320, 180)


@pytest.mark.parametrize(("w", "h"), [(0, 480), (832, 0), (-1, 10)])
def test_nearest_bucket_rejects_bad_source(w: int, h: int) -> None:
    with pytest.raises(ValueError, match="source size"):
        nearest_bucket(w, h, [(832, 480)])


def test_nearest_bucket_rejects_empty_set() -> None:
    with pytest.raises(ValueError, match="buckets"):
        nearest_bucket(832, 480, [])


# --- cover_size -----------------------------------------------------------------------------


def test_cover_size_examples() -> None:
    assert cover_size(1920, 1080, 832, 480) == (853, 480)
    assert cover_size(1080, 1920, 480, 832) == (480, 853)
    assert cover_size(832, 480, 832, 480) == (832, 480)
    assert cover_size(416, 240, 832, 480) == (832, 480)  # upscales
    assert cover_size(1000, 1000, 832, 480) == (832, 832)


def test_cover_size_covers_and_keeps_aspect() -> None:
    rng = random.Random(11)
    for _ in range(500):
        src_w, src_h = rng.randint(16, 4096), rng.randint(16, 4096)
        dst_w, dst_h = rng.randint(1, 80) * 16, rng.randint(1, 80) * 16
        w, h = cover_size(src_w, src_h, dst_w, dst_h)
        assert w >= dst_w and h >= dst_h
        assert w == dst_w or h == dst_h  # the smallest cover: one side fits exactly
        # Both sides are the source's scaled by one factor, each within a pixel.
        scale = max(dst_w / src_w, dst_h / src_h)
        assert abs(w - src_w * scale) <= 1.0, (src_w, src_h, dst_w, dst_h, w, h)
        assert abs(h - src_h * scale) <= 1.0, (src_w, src_h, dst_w, dst_h, w, h)


# --- crop_offsets ---------------------------------------------------------------------------


def test_crop_offsets_center() -> None:
    assert crop_offsets(853, 480, 832, 480) == (10, 0)
    assert crop_offsets(480, 853, 480, 832, mode="center") == (0, 10)
    assert crop_offsets(832, 480, 832, 480) == (0, 0)


def test_crop_offsets_random_within_bounds_and_reproducible() -> None:
    seen = set()
    for seed in range(200):
        x, y = crop_offsets(900, 500, 832, 480, mode="random", rng=random.Random(seed))
        assert 0 <= x <= 68 and 0 <= y <= 20
        assert (x, y) == crop_offsets(900, 500, 832, 480, mode="random", rng=random.Random(seed))
        seen.add((x, y))
    assert len(seen) > 100


def test_crop_offsets_random_without_slack() -> None:
    assert crop_offsets(832, 480, 832, 480, mode="random", rng=random.Random(0)) == (0, 0)


def test_crop_offsets_errors() -> None:
    with pytest.raises(ValueError, match="must fit"):
        crop_offsets(800, 480, 832, 480)
    with pytest.raises(ValueError, match="rng"):
        crop_offsets(900, 500, 832, 480, mode="random")
    with pytest.raises(ValueError, match="crop mode"):
        crop_offsets(900, 500, 832, 480, mode="left")


# --- source_crop_box ------------------------------------------------------------------------


def test_source_crop_box_centre_crop_of_full_hd() -> None:
    resized = cover_size(1920, 1080, 832, 480)
    x, y = crop_offsets(*resized, 832, 480)
    box = source_crop_box(x, y, 832, 480, *resized, 1920, 1080)
    # Ideal: scale 2.25, width 832 * 2.25 = 1872 centred in 1920 -> x = 24. Integer resize
    # (853 px) and integer offsets (10 px) may move it by a source pixel or two.
    assert box.x == pytest.approx(24, abs=2)
    assert box.y == 0
    assert box.width == pytest.approx(1872, abs=2)
    assert box.height == 1080
    assert box.x + box.width <= 1920
    # Exactly what the resize and crop did, axis by axis.
    assert box.x == pytest.approx(10 * 1920 / 853)
    assert box.width == pytest.approx(832 * 1920 / 853)


def test_source_crop_box_identity() -> None:
    box = source_crop_box(0, 0, 832, 480, 832, 480, 832, 480)
    assert box.as_list() == [0, 0, 832, 480]


def test_source_crop_box_stays_inside_source() -> None:
    rng = random.Random(5)
    for _ in range(300):
        src_w, src_h = rng.randint(16, 4096), rng.randint(16, 4096)
        dst_w, dst_h = rng.randint(1, 60) * 16, rng.randint(1, 60) * 16
        rw, rh = cover_size(src_w, src_h, dst_w, dst_h)
        x, y = crop_offsets(rw, rh, dst_w, dst_h, mode="random", rng=rng)
        box = source_crop_box(x, y, dst_w, dst_h, rw, rh, src_w, src_h)
        assert box.x >= 0 and box.y >= 0
        assert box.x + box.width <= src_w + 1e-6
        assert box.y + box.height <= src_h + 1e-6


# --- check_resolution -----------------------------------------------------------------------


def test_check_resolution_valid() -> None:
    assert check_resolution((832, 480), 16) == []
    assert check_resolution([1280, 704], 32) == []


def test_check_resolution_hint() -> None:
    (problem,) = check_resolution((830, 480), 16)
    assert problem == "resolution width (830) must be a positive multiple of 16. try 832."


def test_check_resolution_lists_both_sides() -> None:
    problems = check_resolution((830, 470), 16)
    assert len(problems) == 2
    assert "try 832" in problems[0]
    assert "try 464" in problems[1]


def test_check_resolution_too_small_suggests_step() -> None:
    (problem,) = check_resolution((8, 480), 16)
    assert "try 16" in problem


def test_check_resolution_wan22_step() -> None:
    (problem,) = check_resolution((1280, 720), 32)
    assert "height (720)" in problem
    assert "try 704" in problem or "try 736" in problem


@pytest.mark.parametrize(
    "bad", [(832.0, 480), (832,), (832, 480, 3), "832x480", "ab", None, 832, (True, 480)]
)
def test_check_resolution_rejects_shape(bad: object) -> None:
    (problem,) = check_resolution(bad, 16)
    assert "must be (width, height) ints" in problem


@pytest.mark.parametrize("step", [0, -16, 16.0, None])
def test_check_resolution_rejects_step(step: object) -> None:
    (problem,) = check_resolution((832, 480), step)  # type: ignore[arg-type]
    assert "step" in problem
