"""Property crop jitter: the box a clip shows is inside the frame, at the scale drawn.

Feature: wan-training-pipeline-fixes, Property crop jitter

For any scale range ``0 < min <= max <= 1``, seed, epoch, clip key and bucket size in 1..4096:

- the drawn side scale is in ``[min, max]`` and the position fractions in ``[0, 1)``;
- the box ``(x, y, w, h)`` lies inside the frame, and each side is the drawn scale times the
  frame's side, rounded, at least one pixel (so within half a pixel of ``scale * side`` unless
  that is under half a pixel);
- the same (seed, epoch, key) gives the same box, whatever the stage object.

For any small clip (1 or 5 frames, sides 1..24) with any source crop box, the stage keeps the
pixels' shape and dtype, shows exactly the box it reports (each frame equals that frame alone
cut to the box and resized), and ``Clip.crop`` becomes that box mapped into source pixels,
inside the old crop.
"""

from __future__ import annotations

import pickle

import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st

from wan_data.failures.mechanism import StageContext
from wan_data.items import Bucket, Clip, CropBox, Source
from wan_data.stages import CropJitter

PROPERTY = "Feature: wan-training-pipeline-fixes, Property crop jitter"
EPS = 1e-9


@st.composite
def scale_ranges(draw: st.DrawFn) -> tuple[float, float]:
    """``(min, max)`` with ``0 < min <= max <= 1``, often an edge (1.0, or min == max)."""
    unit = st.floats(min_value=0.01, max_value=1.0, allow_nan=False)
    a, b = draw(unit), draw(st.one_of(unit, st.just(1.0)))
    low, high = min(a, b), max(a, b)
    if draw(st.booleans()) and draw(st.booleans()):
        high = low
    return low, high


keys = st.text(min_size=1, max_size=20).map(lambda s: f"{s}#0")
epochs = st.integers(0, 1000)
seeds = st.integers(-(2**31), 2**31)


@settings(max_examples=300, deadline=None)
@given(
    scale=scale_ranges(),
    seed=seeds,
    epoch=epochs,
    key=keys,
    width=st.integers(1, 4096),
    height=st.integers(1, 4096),
)
def test_property_crop_jitter_box_is_inside_the_frame_at_the_drawn_scale(
    scale: tuple[float, float], seed: int, epoch: int, key: str, width: int, height: int
) -> None:
    stage = CropJitter(scale, seed=seed)
    drawn, fx, fy = stage.draw(key, epoch)
    x, y, w, h = stage.box(key, epoch, width, height)
    note(f"drawn={drawn} fx={fx} fy={fy} box={(x, y, w, h)}")
    assert scale[0] - EPS <= drawn <= scale[1] + EPS
    assert 0.0 <= fx < 1.0 and 0.0 <= fy < 1.0
    assert 0 <= x and x + w <= width and 0 <= y and y + h <= height
    assert 1 <= w <= width and 1 <= h <= height
    for side, full in ((w, width), (h, height)):
        exact = drawn * full
        assert side == max(1, round(exact))
        assert abs(side - exact) <= 0.5 + EPS or exact < 0.5
    twin = pickle.loads(pickle.dumps(CropJitter(scale, seed=seed)))
    assert twin.box(key, epoch, width, height) == (x, y, w, h)


@st.composite
def clips(draw: st.DrawFn) -> Clip:
    """A small clip with random pixels and a random source crop box."""
    frames = draw(st.sampled_from([1, 5]))
    width, height = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    pixels = torch.randint(0, 256, (frames, 3, height, width), dtype=torch.uint8, generator=gen)
    origin = st.floats(0.0, 5000.0, allow_nan=False)
    factor = st.floats(0.25, 8.0, allow_nan=False)
    crop = CropBox(draw(origin), draw(origin), width * draw(factor), height * draw(factor))
    key = draw(keys)
    return Clip(
        key=key,
        source=Source(key=key.split("#")[0], path=f"/data/{key}.mp4", media_type="video"),
        pixels=pixels,
        frame_times=tuple(i / 8 for i in range(frames)),
        bucket=Bucket(frames=frames, width=width, height=height),
        crop=crop,
    )


@settings(max_examples=150, deadline=None)
@given(clip=clips(), scale=scale_ranges(), seed=seeds, epoch=epochs)
def test_property_crop_jitter_shows_the_box_it_reports(
    clip: Clip, scale: tuple[float, float], seed: int, epoch: int
) -> None:
    from torchvision.transforms.v2 import functional as tvf

    stage = CropJitter(scale, seed=seed)
    (out,) = list(stage([clip], StageContext(epoch=epoch)))
    assert isinstance(out, Clip)
    assert out.pixels.shape == clip.pixels.shape and out.pixels.dtype == torch.uint8
    width, height = clip.bucket.width, clip.bucket.height
    x, y, w, h = stage.box(clip.key, epoch, width, height)
    note(f"box={(x, y, w, h)} crop={clip.crop} -> {out.crop}")
    if (w, h) == (width, height):
        assert out is clip
        return
    for i in range(clip.bucket.frames):
        alone = tvf.resize(
            clip.pixels[i : i + 1, :, y : y + h, x : x + w], [height, width], antialias=True
        )
        assert torch.equal(out.pixels[i], alone[0])
    old, new = clip.crop, out.crop
    sx, sy = old.width / width, old.height / height
    assert new == CropBox(old.x + x * sx, old.y + y * sy, w * sx, h * sy)
    tol = 1e-6 * (1.0 + abs(old.x) + abs(old.y) + old.width + old.height)
    assert old.x - tol <= new.x and new.x + new.width <= old.x + old.width + tol
    assert old.y - tol <= new.y and new.y + new.height <= old.y + old.height + tol
