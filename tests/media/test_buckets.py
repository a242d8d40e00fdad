"""buckets.py: bucket sets, nearest-aspect choice, resize-to-cover and crop boxes."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import pytest

from wan_data.errors import ConfigError
from wan_data.media.buckets import (
    PRESETS,
    BucketSet,
    Preset,
    bucket_table,
    check_resolution,
    check_resolutions,
    cover_size,
    crop_offsets,
    get_preset,
    make_bucket_set,
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


# --- presets --------------------------------------------------------------------------------


def test_presets_have_the_documented_values() -> None:
    conditioning = {
        "wan2.1": "none",
        "wan2.2-a14b": "none",
        "wan2.1-i2v": "i2v",
        "wan2.1-flf2v": "flf2v",
        "wan2.2-i2v-a14b": "i2v",
    }
    assert set(PRESETS) == {*conditioning, "wan2.2-ti2v-5b"}
    for name, mode in conditioning.items():
        p = PRESETS[name]
        assert (p.name, p.step, p.fps, p.frames, p.max_aspect) == (name, 16, 16.0, (81,), 4.0)
        assert p.resolutions == ((832, 480), (1280, 720)) and p.conditioning == mode
    ti2v = PRESETS["wan2.2-ti2v-5b"]
    assert (ti2v.name, ti2v.step, ti2v.fps, ti2v.frames) == ("wan2.2-ti2v-5b", 32, 24.0, (121,))
    assert ti2v.resolutions == ((1280, 704),) and ti2v.conditioning == "ti2v"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_bucket_sets(name: str) -> None:
    preset = get_preset(name)
    assert preset is PRESETS[name]
    bucket_set = preset.bucket_set()
    assert bucket_set == make_bucket_set(
        list(preset.resolutions), step=preset.step, max_aspect=preset.max_aspect
    )
    assert bucket_set.targets == preset.resolutions
    assert bucket_set.step == preset.step
    for target, tier in zip(bucket_set.targets, bucket_set.tiers, strict=True):
        assert target in tier
        assert tier == make_buckets(target, step=preset.step)
    for w, h in bucket_set.all:
        assert w % preset.step == 0 and h % preset.step == 0, (w, h)
    for f in preset.frames:
        assert (f - 1) % 4 == 0


def test_get_preset_unknown_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="preset") as info:
        get_preset("wan2.3")
    message = str(info.value)
    assert "'wan2.3'" in message
    for name in PRESETS:
        assert name in message


def test_preset_checks_itself() -> None:
    with pytest.raises(ConfigError) as info:
        Preset("bad", 16, 0.0, ((1280, 720), (830, 480)), (80,))
    problems = info.value.problems
    assert any("resolution[1] width (830)" in p for p in problems)
    assert any("ascending area" in p for p in problems)
    assert any("frame bucket (80)" in p for p in problems)
    assert any("fps" in p for p in problems)
    assert len(problems) == 4


# --- make_bucket_set / BucketSet.choose -----------------------------------------------------


def test_make_bucket_set_single_and_list() -> None:
    single = make_bucket_set((832, 480))
    assert single.targets == ((832, 480),)
    assert single.tiers == (make_buckets((832, 480)),)
    assert single.all == make_buckets((832, 480))
    assert make_bucket_set([(832, 480)]) == single
    # Sorted by area whatever the order given; exact repeats dropped.
    both = make_bucket_set([(1280, 720), (832, 480), (1280, 720)])
    assert both.targets == ((832, 480), (1280, 720))
    assert both.tiers == (make_buckets((832, 480)), make_buckets((1280, 720)))


def test_bucket_set_all_is_unique_and_sorted() -> None:
    bucket_set = get_preset("wan2.1").bucket_set()
    everything = bucket_set.all
    assert len(everything) == len(set(everything))
    assert set(everything) == set(bucket_set.tiers[0]) | set(bucket_set.tiers[1])
    keys = [(w / h, w * h) for w, h in everything]
    assert keys == sorted(keys)


def test_make_bucket_set_gathers_problems() -> None:
    with pytest.raises(ConfigError) as info:
        make_bucket_set([(830, 480), (1280, 721)], step=16, max_aspect=0.5)
    assert len(info.value.problems) == 3
    assert isinstance(info.value, ValueError)
    with pytest.raises(ConfigError, match="same area"):
        make_bucket_set([(832, 480), (480, 832)])


def test_bucket_set_rejects_inconsistent_fields() -> None:
    with pytest.raises(ValueError, match="bucket set"):
        BucketSet(tiers=(), targets=(), step=16)
    with pytest.raises(ValueError, match="bucket set"):
        BucketSet(tiers=(((832, 480),),), targets=((832, 480), (1280, 720)), step=16)


def test_choose_picks_the_tier_by_area() -> None:
    wan21 = get_preset("wan2.1").bucket_set()
    assert wan21.choose(1920, 1080) == (1280, 720)
    assert wan21.choose(3840, 2160) == (1280, 720)
    assert wan21.choose(1280, 720) == (1280, 720)
    assert wan21.choose(640, 360) == (832, 480)  # below every target: smallest tier, upscaled
    assert wan21.choose(832, 480) == (832, 480)
    # 1279x720 is just under the 720p area: it stays in the 480p tier.
    assert wan21.choose(1279, 720) in wan21.tiers[0]
    assert wan21.tier_index(1279, 720) == 0
    assert wan21.tier_index(1280, 720) == 1
    portrait = wan21.choose(1080, 1920)
    assert portrait == (720, 1280)
    assert portrait in wan21.tiers[1] and portrait not in wan21.tiers[0]


def test_choose_is_nearest_bucket_of_the_tier() -> None:
    wan21 = get_preset("wan2.1").bucket_set()
    rng = random.Random(7)
    for _ in range(300):
        w, h = rng.randint(1, 4000), rng.randint(1, 4000)
        tier = wan21.tiers[1] if w * h >= 1280 * 720 else wan21.tiers[0]
        assert wan21.choose(w, h) == nearest_bucket(w, h, tier)


def test_choose_no_upscale() -> None:
    wan21 = get_preset("wan2.1").bucket_set()
    assert wan21.choose(1920, 1080, no_upscale=True) == (1280, 720)
    assert wan21.choose(1280, 720, no_upscale=True) == (1280, 720)
    assert wan21.choose(1080, 1920, no_upscale=True) == (720, 1280)
    # Too small for 720p in both sides: the largest fitting 480p bucket, the nearer aspect of the
    # two full-area ones that fit (832x480 and 640x624).
    assert wan21.choose(1000, 700, no_upscale=True) == (832, 480)
    # A square source: 640x624 and 624x640 tie in area and aspect distance; the wider wins.
    assert wan21.choose(700, 700, no_upscale=True) == (640, 624)
    assert wan21.choose(640, 360, no_upscale=True) is None
    p480 = make_bucket_set((832, 480))
    assert p480.choose(100, 100, no_upscale=True) is None
    assert wan21.choose(100, 100, no_upscale=True) is None
    assert p480.choose(100, 100) == (640, 624)  # upscaling allowed: a bucket anyway
    assert p480.choose(4000, 4000, no_upscale=True) == (640, 624)


def test_choose_no_upscale_largest_area_over_all_tiers() -> None:
    wan21 = get_preset("wan2.1").bucket_set()
    rng = random.Random(9)
    none_seen = 0
    for _ in range(300):
        w, h = rng.randint(100, 2500), rng.randint(100, 2500)
        chosen = wan21.choose(w, h, no_upscale=True)
        fitting = [b for b in wan21.all if b[0] <= w and b[1] <= h]
        if chosen is None:
            none_seen += 1
            assert not fitting
            continue
        assert chosen[0] <= w and chosen[1] <= h
        assert chosen[0] * chosen[1] == max(b[0] * b[1] for b in fitting)
    assert 0 < none_seen < 300


def test_choose_remembers_its_answers_and_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The memo (choose runs for every cached read) answers as the computation does, asked
    again or not, keeps None (nothing fits) apart from "not asked", is bounded, and leaves the
    set's equality, hash and pickling alone."""
    import pickle

    import wan_data.media.buckets as buckets_module

    wan21 = get_preset("wan2.1").bucket_set()
    fresh = get_preset("wan2.1").bucket_set()
    rng = random.Random(11)
    sizes = [(rng.randint(50, 2500), rng.randint(50, 2500)) for _ in range(200)]
    for no_upscale in (False, True):
        for w, h in sizes + sizes:
            assert wan21.choose(w, h, no_upscale=no_upscale) == fresh._choose(w, h, no_upscale)
    assert wan21.choose(640, 360, no_upscale=True) is None
    assert wan21.choose(640, 360, no_upscale=True) is None  # a remembered None is still None
    assert wan21 == fresh and hash(wan21) == hash(fresh)
    restored = pickle.loads(pickle.dumps(wan21))
    assert restored == wan21 and restored.choose(1920, 1080) == wan21.choose(1920, 1080)

    monkeypatch.setattr(buckets_module, "_CHOSEN_LIMIT", 8)
    small = make_bucket_set((832, 480))
    for w in range(100, 140):
        small.choose(w, 480)
        assert len(small._chosen) <= 8
    with pytest.raises(ValueError, match="source size"):  # bad sizes are never remembered
        small.choose(0, 480)
    with pytest.raises(ValueError, match="source size"):
        small.choose(0, 480)


@pytest.mark.parametrize(("w", "h"), [(0, 480), (832, 0), (-5, -5)])
@pytest.mark.parametrize("no_upscale", [False, True])
def test_choose_rejects_bad_source(w: int, h: int, no_upscale: bool) -> None:
    with pytest.raises(ValueError, match="source size"):
        make_bucket_set((832, 480)).choose(w, h, no_upscale=no_upscale)


# --- check_resolutions ----------------------------------------------------------------------


def test_check_resolutions_valid() -> None:
    assert check_resolutions((832, 480), 16) == []
    assert check_resolutions([832, 480], 16) == []
    assert check_resolutions([(832, 480)], 16) == []
    assert check_resolutions([(832, 480), [1280, 720]], 16) == []
    assert check_resolutions(((1280, 704),), 32) == []
    assert check_resolutions([(832, 480), (832, 480)], 16) == []  # an exact repeat is harmless


def test_check_resolutions_single_matches_check_resolution() -> None:
    for bad in [(830, 470), (8, 480), (832.0, 480), (True, 480), (832, 480, 3)]:
        assert check_resolutions(bad, 16) == check_resolution(bad, 16)


def test_check_resolutions_gathers_every_problem_of_a_list() -> None:
    problems = check_resolutions([(830, 480), (1280, 721), (1, 2, 3), 720, (480, 832)], 16)
    assert problems[0] == "resolution[0] width (830) must be a positive multiple of 16. try 832."
    assert problems[1] == "resolution[1] height (721) must be a positive multiple of 16. try 720."
    assert problems[2].startswith("resolution[2] ((1, 2, 3)) must be (width, height) ints")
    assert problems[3].startswith("resolution[3] (720) must be (width, height) ints")
    assert len(problems) == 4


def test_check_resolutions_same_area() -> None:
    (problem,) = check_resolutions([(832, 480), (1280, 720), (480, 832)], 16)
    assert problem.startswith("resolution[2] ((480, 832)) has the same area (399360 px)")
    assert "resolution[0] (832, 480)" in problem


def test_check_resolutions_bad_step_still_checks_shapes() -> None:
    problems = check_resolutions([(830, 480), (832,)], 0)
    assert len(problems) == 2
    assert problems[0].startswith("step (0)")
    assert problems[1].startswith("resolution[1] ((832,))")


@pytest.mark.parametrize("bad", [[], (), "832x480", None, 832, b"ab"])
def test_check_resolutions_rejects_shape(bad: object) -> None:
    (problem,) = check_resolutions(bad, 16)
    assert "must be (width, height) or a non-empty list of them" in problem


# --- bucket_table ---------------------------------------------------------------------------


def test_bucket_table_rows() -> None:
    rows = bucket_table(make_bucket_set((832, 480)))
    assert len(rows) == len(make_buckets((832, 480)))
    target = {
        "tier": "832x480",
        "width": 832,
        "height": 480,
        "aspect": 1.733,
        "area": 399360,
        "area_vs_target": 1.0,
    }
    assert target in rows
    assert rows[0] == {
        "tier": "832x480",
        "width": 320,
        "height": 1248,
        "aspect": 0.256,
        "area": 399360,
        "area_vs_target": 1.0,
    }
    assert all(row["area_vs_target"] <= 1.0 for row in rows)  # type: ignore[operator]


def test_bucket_table_tiers_in_area_order() -> None:
    bucket_set = get_preset("wan2.1").bucket_set()
    rows = bucket_table(bucket_set)
    tiers = [row["tier"] for row in rows]
    assert tiers == ["832x480"] * 40 + ["1280x720"] * len(bucket_set.tiers[1])
    assert {"tier": "1280x720", "width": 1280, "height": 720}.items() <= next(
        r for r in rows if r["tier"] == "1280x720" and r["width"] == 1280
    ).items()


# --- docs/bucketing.md stays in sync ---------------------------------------------------------


def markdown_table(rows: list[dict[str, object]]) -> str:
    """The Markdown table docs/bucketing.md shows for one tier (the script there prints this)."""
    lines = ["| width | height | aspect | area | area_vs_target |", "|---:|---:|---:|---:|---:|"]
    lines += [
        f"| {r['width']} | {r['height']} | {r['aspect']} | {r['area']} | {r['area_vs_target']} |"
        for r in rows
    ]
    return "\n".join(lines)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_docs_show_every_preset_table(name: str) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "bucketing.md").read_text()
    bucket_set = get_preset(name).bucket_set()
    rows = bucket_table(bucket_set)
    for tw, th in bucket_set.targets:
        tier = f"{tw}x{th}"
        table = markdown_table([r for r in rows if r["tier"] == tier])
        assert table in doc, f"docs/bucketing.md lacks the current {tier} table of {name}"
    assert re.search(rf"^#+ .*`{re.escape(name)}`", doc, re.MULTILINE), name
