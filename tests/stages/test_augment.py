"""RandomFlip, ColorJitter and CropJitter: one seeded draw per clip, the same in every worker and
run."""

from __future__ import annotations

import dataclasses
import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from media import make_video

from wan_data import ConfigError, WanVideoDataset
from wan_data.failures.mechanism import StageContext
from wan_data.items import Bucket, Clip, CropBox, Source
from wan_data.stages import ColorJitter, CropJitter, RandomFlip
from wan_data.testing import check_stage_contract

FRAMES, HEIGHT, WIDTH = 5, 8, 12


def _clip(key: str = "concept/a.mp4#0", *, same_frames: bool = False, seed: int = 0) -> Clip:
    gen = torch.Generator().manual_seed(seed)
    if same_frames:
        frame = torch.randint(0, 256, (1, 3, HEIGHT, WIDTH), dtype=torch.uint8, generator=gen)
        pixels = frame.expand(FRAMES, -1, -1, -1).contiguous()
    else:
        pixels = torch.randint(0, 256, (FRAMES, 3, HEIGHT, WIDTH), dtype=torch.uint8, generator=gen)
    return Clip(
        key=key,
        source=Source(key=key.split("#")[0], path=f"/data/{key}.mp4", media_type="video"),
        pixels=pixels,
        frame_times=tuple(i / 8 for i in range(FRAMES)),
        bucket=Bucket(frames=FRAMES, width=WIDTH, height=HEIGHT),
        crop=CropBox(0.0, 0.0, float(WIDTH), float(HEIGHT)),
    )


def _run(stage: RandomFlip | ColorJitter | CropJitter, clip: Clip, epoch: int = 0) -> Clip:
    (out,) = list(stage([clip], StageContext(epoch=epoch)))
    assert isinstance(out, Clip)
    return out


JITTER = ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, seed=5)
CROP = CropJitter(scale=(0.5, 0.9), seed=3)


@pytest.mark.parametrize("stage", [RandomFlip(p=0.5), RandomFlip(p=1.0), JITTER, CROP])
def test_the_stage_contract(stage: RandomFlip | ColorJitter | CropJitter) -> None:
    check_stage_contract(stage, [_clip(f"c/{i}.mp4#0", seed=i) for i in range(4)])


def test_names_and_identity_cover_every_option_and_the_seed() -> None:
    assert RandomFlip().name == "flip" and ColorJitter().name == "color_jitter"
    flips = [RandomFlip(), RandomFlip(0.3), RandomFlip(seed=1)]
    assert len({s.identity() for s in flips}) == 3
    jitters = [
        ColorJitter(),
        ColorJitter(brightness=0.1),
        ColorJitter(contrast=0.1),
        ColorJitter(saturation=0.1),
        ColorJitter(hue=0.1),
        ColorJitter(seed=1),
    ]
    assert len({s.identity() for s in jitters}) == len(jitters)
    for stage in [*flips, *jitters]:
        again = pickle.loads(pickle.dumps(stage))
        assert again.identity() == stage.identity()
    assert RandomFlip().identity() == RandomFlip().identity()


@pytest.mark.parametrize("stage", [RandomFlip(p=1.0), JITTER])
def test_every_frame_of_a_clip_gets_the_same_augmentation(stage: RandomFlip | ColorJitter) -> None:
    clip = _clip(same_frames=True)
    for epoch in range(4):
        out = _run(stage, clip, epoch)
        assert out.pixels.dtype == torch.uint8 and out.pixels.shape == clip.pixels.shape
        assert all(torch.equal(out.pixels[0], frame) for frame in out.pixels)
        assert out.crop == clip.crop and out.key == clip.key


def test_a_flip_mirrors_the_last_axis_and_keeps_the_crop() -> None:
    clip = _clip()
    out = _run(RandomFlip(p=1.0), clip)
    assert torch.equal(out.pixels, clip.pixels.flip(-1))
    assert out.crop == clip.crop
    assert _run(RandomFlip(p=0.0), clip) is clip


@pytest.mark.parametrize(
    "make", [lambda: RandomFlip(p=0.5, seed=2), lambda: JITTER, lambda: CropJitter((0.5, 0.9))]
)
def test_same_seed_epoch_and_key_give_the_same_output(
    make: Callable[[], RandomFlip | ColorJitter | CropJitter],
) -> None:
    clip = _clip()
    a, b = make(), pickle.loads(pickle.dumps(make()))
    outs = [_run(a, clip, epoch).pixels for epoch in range(12)]
    again = [_run(b, clip, epoch).pixels for epoch in range(12)]
    assert all(torch.equal(x, y) for x, y in zip(outs, again, strict=True))
    # Over several epochs the draws differ.
    assert len({bytes(x.flatten().tolist()) for x in outs}) >= 2


def test_jitter_factors_are_drawn_in_range_and_vary_by_epoch_key_and_seed() -> None:
    stage = ColorJitter(brightness=0.5, contrast=2.0, saturation=0.25, hue=0.5)
    for epoch in range(20):
        f = stage.factors("k#0", epoch)
        assert 0.5 <= f["brightness"] <= 1.5
        assert 0.0 <= f["contrast"] <= 3.0
        assert 0.75 <= f["saturation"] <= 1.25
        assert -0.5 <= f["hue"] <= 0.5
    assert stage.factors("k#0", 0) != stage.factors("k#0", 1)
    assert stage.factors("k#0", 0) != stage.factors("k#1", 0)
    seeded = ColorJitter(brightness=0.5, contrast=2.0, saturation=0.25, hue=0.5, seed=9)
    assert stage.factors("k#0", 0) != seeded.factors("k#0", 0)
    assert ColorJitter().factors("k#0", 0) == {}


def test_the_flip_rate_is_p_within_binomial_bounds() -> None:
    n = 4000
    for p in (0.1, 0.5, 0.8):
        stage = RandomFlip(p=p, seed=3)
        count = sum(stage.flips(f"concept/{i}.mp4#0", epoch=0) for i in range(n))
        bound = 5 * math.sqrt(n * p * (1 - p))
        assert abs(count - n * p) < bound, (p, count)
    assert not any(RandomFlip(p=0.0).flips(f"{i}#0", 0) for i in range(200))
    assert all(RandomFlip(p=1.0).flips(f"{i}#0", 0) for i in range(200))


def test_a_jitter_with_every_option_at_zero_is_the_identity() -> None:
    clip = _clip()
    for epoch in range(3):
        assert torch.equal(_run(ColorJitter(), clip, epoch).pixels, clip.pixels)


def test_a_jitter_changes_pixels_and_keeps_uint8() -> None:
    clip = _clip()
    out = _run(ColorJitter(brightness=0.5, seed=1), clip)
    assert out.pixels.dtype == torch.uint8
    assert not torch.equal(out.pixels, clip.pixels)


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"p": -0.1}, "RandomFlip.p"),
        ({"p": 1.5}, "RandomFlip.p"),
        ({"p": "half"}, "RandomFlip.p"),
        ({"p": float("nan")}, "RandomFlip.p"),
        ({"seed": 1.5}, "seed"),
        ({"seed": True}, "seed"),
    ],
)
def test_flip_arguments_are_checked(kwargs: dict[str, object], what: str) -> None:
    with pytest.raises(ConfigError, match=what):
        RandomFlip(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"brightness": -0.1}, "ColorJitter.brightness"),
        ({"contrast": float("inf")}, "ColorJitter.contrast"),
        ({"saturation": "x"}, "ColorJitter.saturation"),
        ({"hue": 0.6}, "ColorJitter.hue"),
        ({"hue": -0.1}, "ColorJitter.hue"),
        ({"brightness": True}, "ColorJitter.brightness"),
        ({"seed": "0"}, "seed"),
    ],
)
def test_jitter_arguments_are_checked(kwargs: dict[str, object], what: str) -> None:
    with pytest.raises(ConfigError, match=what):
        ColorJitter(**kwargs)  # type: ignore[arg-type]


def test_every_jitter_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        ColorJitter(brightness=-1, contrast=-1, hue=1, seed="x")  # type: ignore[arg-type]
    assert len(info.value.problems) == 4


@pytest.mark.integration
def test_a_dataset_with_a_certain_flip_yields_the_flipped_pixels(tmp_path: Path) -> None:
    for i in range(3):
        make_video(tmp_path / f"v{i}.mp4", width=48, height=32, fps=8, num_frames=12)
    options: dict[str, Any] = {"frames": [5], "fps": 8, "resolution": (32, 32), "batch_size": 2}
    plain = WanVideoDataset(tmp_path, **options)
    flipped = WanVideoDataset(tmp_path, **options, clip_stages=[RandomFlip(p=1.0)])
    batches = 0
    for a, b in zip(plain.loader(num_workers=0), flipped.loader(num_workers=0), strict=True):
        assert a["keys"] == b["keys"]
        assert torch.equal(b["pixels"], a["pixels"].flip(-1))
        assert not torch.equal(b["pixels"], a["pixels"])
        batches += 1
    assert batches == len(plain) > 0
    assert flipped.report()["stages"]["flip"]["out"] > 0


# -- CropJitter ------------------------------------------------------------------------------


def test_crop_jitter_name_identity_and_repr_cover_every_option_and_the_seed() -> None:
    assert CropJitter().name == "crop_jitter"
    stages = [CropJitter(), CropJitter((0.5, 1.0)), CropJitter((0.9, 0.95)), CropJitter(seed=1)]
    assert len({s.identity() for s in stages}) == len(stages)
    assert len({repr(s) for s in stages}) == len(stages)
    assert CropJitter((0.5, 1)).identity() == CropJitter([0.5, 1.0]).identity()  # type: ignore[arg-type]
    # The three augmentations never share an identity (they are all in the cache keys).
    assert len({CropJitter().identity(), RandomFlip().identity(), ColorJitter().identity()}) == 3
    assert repr(CropJitter((0.5, 0.9), seed=3)) == "CropJitter(scale=(0.5, 0.9), seed=3)"


def test_a_crop_jitter_cuts_one_box_for_every_frame_and_resizes_it_back() -> None:
    from torchvision.transforms.v2 import functional as tvf

    clip = _clip()  # every frame different
    for epoch in range(6):
        out = _run(CROP, clip, epoch)
        assert out.pixels.dtype == torch.uint8 and out.pixels.shape == clip.pixels.shape
        x, y, w, h = CROP.box(clip.key, epoch, WIDTH, HEIGHT)
        assert (w, h) != (WIDTH, HEIGHT)  # scale <= 0.9 always cuts on 12x8
        for i in range(FRAMES):  # each frame alone, cut to the same box, gives the same frame
            alone = tvf.resize(
                clip.pixels[i : i + 1, :, y : y + h, x : x + w], [HEIGHT, WIDTH], antialias=True
            )
            assert torch.equal(out.pixels[i], alone[0]), (epoch, i)


def test_identical_frames_stay_identical_after_a_crop_jitter() -> None:
    clip = _clip(same_frames=True)
    for epoch in range(6):
        out = _run(CROP, clip, epoch)
        assert all(torch.equal(out.pixels[0], frame) for frame in out.pixels)
        assert not torch.equal(out.pixels, clip.pixels)


def test_a_crop_jitter_reports_the_source_box_it_shows() -> None:
    # A crop of 24x16 source pixels at (10, 4) shown at 12x8: 2 source pixels per bucket pixel.
    clip = dataclasses.replace(_clip(), crop=CropBox(10.0, 4.0, 24.0, 16.0))
    boxes = set()
    for epoch in range(8):
        out = _run(CROP, clip, epoch)
        x, y, w, h = CROP.box(clip.key, epoch, WIDTH, HEIGHT)
        boxes.add((x, y, w, h))
        assert out.crop == CropBox(10.0 + 2 * x, 4.0 + 2 * y, 2.0 * w, 2.0 * h)
        assert 10.0 <= out.crop.x and out.crop.x + out.crop.width <= 34.0
        assert 4.0 <= out.crop.y and out.crop.y + out.crop.height <= 20.0
    assert len(boxes) >= 4  # the box moves and zooms from epoch to epoch


def test_crop_jitter_draws_are_deterministic_and_vary_by_epoch_key_and_seed() -> None:
    stage = CropJitter((0.5, 0.9))
    assert stage.draw("k#0", 3) == pickle.loads(pickle.dumps(stage)).draw("k#0", 3)
    assert stage.draw("k#0", 0) != stage.draw("k#0", 1)
    assert stage.draw("k#0", 0) != stage.draw("k#1", 0)
    assert stage.draw("k#0", 0) != CropJitter((0.5, 0.9), seed=1).draw("k#0", 0)
    clip = _clip()
    assert not torch.equal(_run(stage, clip, 0).pixels, _run(stage, clip, 1).pixels)
    draws = [stage.draw(f"c/{i}#0", 0) for i in range(2000)]
    scales = [d[0] for d in draws]
    assert 0.5 <= min(scales) < 0.52 and 0.88 < max(scales) <= 0.9
    for fractions in ([d[1] for d in draws], [d[2] for d in draws]):
        assert 0.0 <= min(fractions) < 0.01 and 0.99 < max(fractions) < 1.0


def test_a_box_keeps_the_scale_and_stays_in_the_frame() -> None:
    stage = CropJitter((0.5, 1.0), seed=7)
    for i in range(300):
        scale = stage.draw(f"k{i}#0", 0)[0]
        x, y, w, h = stage.box(f"k{i}#0", 0, 832, 480)
        assert (w, h) == (round(scale * 832), round(scale * 480))
        assert 0 <= x <= 832 - w and 0 <= y <= 480 - h


def test_a_crop_jitter_that_cannot_cut_returns_the_clip_unchanged() -> None:
    clip = _clip()
    assert _run(CropJitter((1.0, 1.0)), clip) is clip
    assert CropJitter((1.0, 1.0)).describe(clip.key, 0) == ""
    # A 0.96 side of 12x8 rounds back to the whole frame: no resize, no change.
    assert _run(CropJitter((0.96, 0.97)), clip) is clip


def test_describe_labels_the_draw_of_every_augmentation() -> None:
    assert RandomFlip(p=1.0).describe("k#0", 0) == "flip"
    assert RandomFlip(p=0.0).describe("k#0", 0) == ""
    assert ColorJitter().describe("k#0", 0) == ""
    label = ColorJitter(brightness=0.5, hue=0.1).describe("k#0", 0)
    f = ColorJitter(brightness=0.5, hue=0.1).factors("k#0", 0)
    assert label == f"color b{f['brightness']:.2f} h{f['hue']:+.2f}"
    scale = CROP.draw("k#0", 0)[0]
    assert CROP.describe("k#0", 0) == f"crop {scale:.2f}"


@pytest.mark.parametrize(
    "scale",
    [
        (0.0, 1.0),
        (-0.5, 1.0),
        (0.5, 1.1),
        (0.9, 0.8),
        (float("nan"), 1.0),
        (0.5, float("inf")),
        (True, 1.0),
        (0.5,),
        (0.5, 0.7, 0.9),
        0.9,
        "0.9,1",
        None,
    ],
)
def test_crop_jitter_scales_are_checked(scale: object) -> None:
    with pytest.raises(ConfigError, match=r"CropJitter\.scale"):
        CropJitter(scale)  # type: ignore[arg-type]


def test_every_crop_jitter_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        CropJitter((1.0, 0.5), seed=2.5)  # type: ignore[arg-type]
    assert len(info.value.problems) == 2
    assert any("seed" in p for p in info.value.problems)
    with pytest.raises(ConfigError, match="seed"):
        CropJitter(seed=True)


@pytest.mark.integration
def test_a_dataset_with_a_crop_jitter_yields_zoomed_clips_and_their_boxes(tmp_path: Path) -> None:
    for i in range(3):
        make_video(tmp_path / f"v{i}.mp4", width=48, height=32, fps=8, num_frames=12)
    options: dict[str, Any] = {"frames": [5], "fps": 8, "resolution": (32, 32), "batch_size": 2}
    plain = WanVideoDataset(tmp_path, **options)
    stage = CropJitter((0.5, 0.8), seed=1)
    jittered = WanVideoDataset(tmp_path, **options, clip_stages=[stage])
    batches = 0
    for a, b in zip(plain.loader(num_workers=0), jittered.loader(num_workers=0), strict=True):
        assert a["keys"] == b["keys"]
        assert b["pixels"].shape == a["pixels"].shape and b["pixels"].dtype == a["pixels"].dtype
        assert not torch.equal(b["pixels"], a["pixels"])
        for (px, py, pw, ph), (x, y, w, h) in zip(a["crops"], b["crops"], strict=True):
            assert px <= x and x + w <= px + pw + 1e-9 and py <= y and y + h <= py + ph + 1e-9
            assert w < pw and h < ph
        batches += 1
    assert batches == len(plain) > 0
    assert jittered.report()["stages"]["crop_jitter"]["out"] > 0
