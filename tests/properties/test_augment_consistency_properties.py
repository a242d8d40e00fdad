"""Property augmentation consistency: a clip's frames all get the same augmentation.

Feature: wan-training-pipeline-fixes, Property augmentation consistency

For any ``RandomFlip`` (``p`` in [0, 1]) or ``ColorJitter`` (brightness, contrast and
saturation in [0, 2], hue in [0, 0.5]), seed, epoch, clip key and small clip (1, 5 or 9 frames,
sides 1..16):

- each output frame equals that frame alone, as a one-frame clip of the same key, through the
  same stage in the same epoch: one draw per clip, applied to every frame (a flip or a colour
  shift that changed from frame to frame would be motion the model learns);
- a clip of identical frames stays a clip of identical frames;
- a flip mirrors either every frame or none; the clip keeps its shape, dtype, key and crop;
- the same (seed, epoch, key) gives the same pixels, whatever the stage object.
"""

from __future__ import annotations

import dataclasses
import pickle

import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st

from wan_data.failures.mechanism import StageContext
from wan_data.items import Bucket, Clip, CropBox, Source
from wan_data.stages import ColorJitter, RandomFlip

PROPERTY = "Feature: wan-training-pipeline-fixes, Property augmentation consistency"

keys = st.text(st.characters(exclude_characters="#"), min_size=1, max_size=20).map(
    lambda s: f"{s}#0"
)
epochs = st.integers(0, 1000)
seeds = st.integers(-(2**31), 2**31)


@st.composite
def stages(draw: st.DrawFn) -> RandomFlip | ColorJitter:
    """A flip or a colour jitter with any valid options (an option often at an edge)."""
    seed = draw(seeds)
    if draw(st.booleans()):
        return RandomFlip(p=draw(st.one_of(st.just(0.5), st.just(1.0), st.floats(0, 1))), seed=seed)
    spread = st.one_of(st.just(0.0), st.floats(0.0, 2.0, allow_nan=False))
    hue = st.one_of(st.just(0.0), st.just(0.5), st.floats(0.0, 0.5, allow_nan=False))
    return ColorJitter(draw(spread), draw(spread), draw(spread), draw(hue), seed=seed)


@st.composite
def clips(draw: st.DrawFn) -> Clip:
    """A small clip with random pixels; sometimes every frame is the same picture."""
    frames = draw(st.sampled_from([1, 5, 9]))
    width, height = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    if draw(st.booleans()):
        pixels = torch.randint(0, 256, (frames, 3, height, width), dtype=torch.uint8, generator=gen)
    else:
        frame = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8, generator=gen)
        pixels = frame.expand(frames, -1, -1, -1).contiguous()
    key = draw(keys)
    return _clip(key, pixels)


def _clip(key: str, pixels: torch.Tensor) -> Clip:
    frames, _, height, width = pixels.shape
    return Clip(
        key=key,
        source=Source(key=key.split("#")[0], path=f"/data/{key}.mp4", media_type="video"),
        pixels=pixels,
        frame_times=tuple(i / 8 for i in range(frames)),
        bucket=Bucket(frames=frames, width=width, height=height),
        crop=CropBox(0.0, 0.0, float(width), float(height)),
    )


def _run(stage: RandomFlip | ColorJitter, clip: Clip, epoch: int) -> Clip:
    (out,) = list(stage([clip], StageContext(epoch=epoch)))
    assert isinstance(out, Clip), out
    return out


@settings(max_examples=200, deadline=None)
@given(stage=stages(), clip=clips(), epoch=epochs)
def test_property_augmentations_apply_one_draw_to_every_frame(
    stage: RandomFlip | ColorJitter, clip: Clip, epoch: int
) -> None:
    out = _run(stage, clip, epoch)
    note(f"{stage!r} epoch={epoch} draw={stage.describe(clip.key, epoch)!r}")
    assert out.pixels.shape == clip.pixels.shape and out.pixels.dtype == torch.uint8
    assert (out.key, out.crop, out.bucket) == (clip.key, clip.crop, clip.bucket)
    for i in range(clip.bucket.frames):
        alone = _run(stage, _clip(clip.key, clip.pixels[i : i + 1].clone()), epoch)
        assert torch.equal(out.pixels[i], alone.pixels[0]), i
    if all(torch.equal(clip.pixels[0], frame) for frame in clip.pixels):
        assert all(torch.equal(out.pixels[0], frame) for frame in out.pixels)
    if isinstance(stage, RandomFlip):
        flipped = stage.flips(clip.key, epoch)
        assert torch.equal(out.pixels, clip.pixels.flip(-1) if flipped else clip.pixels)
    twin = pickle.loads(pickle.dumps(stage))
    again = _run(twin, dataclasses.replace(clip, pixels=clip.pixels.clone()), epoch)
    assert torch.equal(again.pixels, out.pixels)
