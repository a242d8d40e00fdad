"""decode.py: pure clip planning, and the decode stage on the generated corpus."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from media import Corpus, MediaSpec, make_video

import wan_data.media.frames as frames_module
from wan_data.errors import SampleError
from wan_data.failures.mechanism import StageContext
from wan_data.failures.policy import ErrorPolicy
from wan_data.items import Bucket, Clip, Failed, Probed, Source, VideoMetadata
from wan_data.media.sampling import available_frames
from wan_data.stages.decode import DecodeOptions, decode, decode_one, plan_clips
from wan_data.stages.probe import probe_metadata
from wan_data.testing import check_stage_contract

torchcodec_decoders = pytest.importorskip("torchcodec.decoders")
VideoDecoder = torchcodec_decoders.VideoDecoder

FRAMES = (5, 17, 33, 41)
BUCKETS = ((64, 48), (48, 64), (64, 64), (96, 48))
OPTIONS = DecodeOptions(frames=FRAMES, fps=16.0, buckets=BUCKETS)
TORCHCODEC_LIKE = (
    "decode_av_frame, /__w/torchcodec/torchcodec/src/torchcodec/_core/SingleStreamDecoder.cpp:1493"
    ", Could not push packet to decoder: Invalid data found when processing input"
)


def _source(corpus: Corpus, spec: MediaSpec) -> Source:
    captions = tuple(spec.caption.splitlines()) if spec.caption else ()
    media_type = "image" if spec.kind == "image" else "video"
    return Source(
        key=spec.name, path=str(corpus.path(spec.name)), media_type=media_type, captions=captions
    )


def _probed_file(path: Path, key: str = "", captions: tuple[str, ...] = ()) -> Probed:
    media_type = "image" if path.suffix in {".png", ".jpg", ".webp", ".bmp"} else "video"
    source = Source(key=key or path.name, path=str(path), media_type=media_type, captions=captions)
    return Probed(source=source, metadata=probe_metadata(source))


@pytest.fixture(scope="module")
def probed(corpus: Corpus) -> dict[str, Probed]:
    out = {}
    for spec in corpus.by_kind("good", "image", "damaged"):
        source = _source(corpus, spec)
        out[spec.name] = Probed(source=source, metadata=probe_metadata(source))
    return out


def _run(items: Iterable[Any], options: DecodeOptions, **kwargs: Any) -> list[Clip | Failed]:
    return list(decode(iter(items), policy=ErrorPolicy(), options=options, **kwargs))


def _clip(item: Probed, options: DecodeOptions, epoch: int = 0) -> Clip:
    out = _run([item], options, epoch=epoch)
    assert len(out) == 1 and isinstance(out[0], Clip), out
    return out[0]


def _expected_frames(
    duration: float, source_fps: float, fps: float = 16.0, frames: Iterable[int] = FRAMES
) -> int:
    # Grid points i / fps up to the very end, none showing the frame its predecessor shows
    # (tested with literal values in test_sampling.py).
    available = available_frames(duration, fps, source_fps=source_fps)
    return max(f for f in frames if f <= available)


def _expected_bucket(width: int, height: int) -> tuple[int, int]:
    aspect = width / height
    if aspect < 0.9:
        return (48, 64)
    if aspect < 1.1:
        return (64, 64)
    if aspect < 1.6:
        return (64, 48)
    return (96, 48)


def _check_crop_geometry(clip: Clip, src_w: int, src_h: int, *, centered: bool) -> None:
    crop, bucket = clip.crop, clip.bucket
    scale_x, scale_y = crop.width / bucket.width, crop.height / bucket.height
    # Aspect preserved up to rounding: one source pixel per axis of the crop box is the same size.
    assert scale_x == pytest.approx(scale_y, rel=0.03), clip
    assert crop.x >= 0 and crop.x + crop.width <= src_w + 1e-6, clip
    assert crop.y >= 0 and crop.y + crop.height <= src_h + 1e-6, clip
    # The crop covers the source's full extent along one axis (cover-resize, then crop).
    assert crop.width == pytest.approx(src_w, abs=1e-6) or crop.height == pytest.approx(
        src_h, abs=1e-6
    ), clip
    if centered:
        left, right = crop.x, src_w - crop.x - crop.width
        top, bottom = crop.y, src_h - crop.y - crop.height
        assert abs(left - right) <= scale_x + 1e-6, clip
        assert abs(top - bottom) <= scale_y + 1e-6, clip


# --------------------------------------------------------------------------- plan_clips


def _fake(
    duration: float = 3.0,
    frames: int = 72,
    fps: float = 24.0,
    key: str = "concept/fake.mp4",
    path: str = "/nonexistent/fake.mp4",
    size: tuple[int, int] = (160, 90),
    media_type: str = "video",
) -> Probed:
    source = Source(key=key, path=path, media_type=media_type)  # type: ignore[arg-type]
    meta = VideoMetadata(
        width=size[0],
        height=size[1],
        fps=fps,
        duration=duration,
        frame_count=frames,
        format="mp4",
        codec="h264",
        media_type=media_type,  # type: ignore[arg-type]
    )
    return Probed(source=source, metadata=meta)


def _starts(plans: list[Any], fps: float = 16.0) -> list[int]:
    out = []
    for plan in plans:
        assert plan.times is not None and plan.indices is None
        out.append(round(plan.times[0] * fps))
        expected = [(out[-1] + i) / fps for i in range(plan.bucket.frames)]
        # A quarter source frame past each grid point (container rounding), the last one
        # possibly clamped into the source's last frame: always within half a target frame.
        assert all(abs(t - e) < 0.5 / fps for t, e in zip(plan.times, expected, strict=True))
    return out


def test_plan_head_uses_the_largest_bucket_from_the_start() -> None:
    # 3.0 s of a 24 fps source at 16 fps: grid points 0..48 (the last at the very end, showing
    # the source's last frame), so 49 frames fit and 53 would not.
    opts = DecodeOptions(frames=(17, 33, 49, 53), fps=16.0, buckets=((64, 48), (96, 48)))
    plans = plan_clips(_fake(), opts, epoch=0)
    assert len(plans) == 1
    plan = plans[0]
    assert plan.clip_index == 0
    assert plan.bucket == Bucket(49, 96, 48)
    assert plan.resized == (96, 54)  # 160x90 scaled to cover 96x48
    assert plan.offset == (0, 3)  # centred: (54 - 48) / 2
    assert _starts(plans) == [0]
    assert plan.times is not None and plan.times[-1] < 3.0


def test_plan_uniform_and_chunks_starts() -> None:
    def starts(sampling: str, clips: int, frames: tuple[int, ...]) -> list[int]:
        opts = DecodeOptions(
            frames=frames, fps=16.0, buckets=((96, 48),), sampling=sampling, clips_per_video=clips
        )
        plans = plan_clips(_fake(), opts, epoch=0)
        assert [p.clip_index for p in plans] == list(range(len(plans)))
        return _starts(plans)

    # 49 frames available (3.0 s of 24 fps: grid points 0..48, the last at the very end);
    # 17-frame clips leave 32 frames of slack.
    assert starts("uniform", 3, (17,)) == [0, 16, 32]
    assert starts("uniform", 1, (17,)) == [16]
    assert starts("uniform", 2, (33,)) == [0, 16]
    assert starts("chunks", 0, (17,)) == [0, 17]
    assert starts("chunks", 1, (17,)) == [0]
    assert starts("chunks", 0, (5,)) == [0, 5, 10, 15, 20, 25, 30, 35, 40]
    assert starts("chunks", 0, (33,)) == [0]


def test_plan_random_depends_only_on_seed_epoch_and_key() -> None:
    opts = DecodeOptions(frames=(17,), fps=16.0, buckets=((96, 48),), sampling="random", seed=7)

    def start(item: Probed, epoch: int, options: DecodeOptions = opts) -> int:
        (only,) = _starts(plan_clips(item, options, epoch))
        assert 0 <= only <= 32
        return only

    item = _fake()
    per_epoch = [start(item, e) for e in range(12)]
    assert per_epoch == [start(item, e) for e in range(12)]  # reproducible
    assert len(set(per_epoch)) > 3  # and it moves across epochs
    # Same key, different path and metadata that leave the same slack: same windows.
    twin = _fake(path="/elsewhere/other.mp4", size=(320, 180), fps=30.0, frames=90)
    assert [start(twin, e) for e in range(12)] == per_epoch
    # Another key or another seed: other windows.
    other = _fake(key="concept/other.mp4")
    assert [start(other, e) for e in range(12)] != per_epoch
    reseeded = DecodeOptions(frames=(17,), fps=16.0, buckets=((96, 48),), sampling="random")
    assert [start(item, e, reseeded) for e in range(12)] != per_epoch


def test_plan_is_pure_and_deterministic() -> None:
    opts = DecodeOptions(
        frames=(5, 17), fps=16.0, buckets=((48, 48),), sampling="random", crop="random"
    )
    item = _fake()  # its path does not exist: planning never touches the file
    first = plan_clips(item, opts, epoch=3)
    assert first == plan_clips(item, opts, epoch=3)
    offsets = {plan_clips(item, opts, epoch=e)[0].offset for e in range(10)}
    assert len(offsets) > 1
    for x, y in offsets:
        assert 0 <= x <= 85 - 48 and y == 0  # 160x90 covers 48x48 at 85x48


def test_plan_native_fps_uses_frame_indices() -> None:
    opts = DecodeOptions(frames=(17, 33, 49, 81), fps=None, buckets=((96, 48),))
    (plan,) = plan_clips(_fake(), opts, epoch=0)  # 72 native frames: 49 fits
    assert plan.times is None
    assert plan.indices == tuple(range(49))
    assert plan.bucket.frames == 49
    uniform = DecodeOptions(
        frames=(49,), fps=None, buckets=((96, 48),), sampling="uniform", clips_per_video=2
    )
    plans = plan_clips(_fake(), uniform, epoch=0)
    assert [p.indices for p in plans] == [tuple(range(49)), tuple(range(23, 72))]


def test_plan_image_is_one_frame() -> None:
    image = _fake(media_type="image", frames=1, fps=0.0, duration=0.0, size=(120, 160))
    opts = DecodeOptions(
        frames=(17, 33), fps=16.0, buckets=BUCKETS, sampling="chunks", clips_per_video=0
    )
    (plan,) = plan_clips(image, opts, epoch=0)
    assert plan.bucket == Bucket(1, 48, 64)
    assert plan.times == (0.0,) and plan.indices is None
    assert plan.resized == (48, 64)


def test_plan_too_short_raises_sample_error() -> None:
    opts = DecodeOptions(frames=(17, 33), fps=16.0, buckets=((96, 48),))
    with pytest.raises(SampleError) as info:
        plan_clips(_fake(duration=23 / 24, frames=23), opts, epoch=0)  # 16 frames at 16 fps
    assert info.value.reason == "too_short"
    message = str(info.value)
    assert "/nonexistent/fake.mp4" in message and "(17)" in message and "16 fps" in message
    # One source frame more fits: 1.0 s of 24 fps spans grid points 0..16 (the last at the end).
    assert plan_clips(_fake(duration=1.0, frames=24), opts, epoch=0)[0].bucket.frames == 17
    native = DecodeOptions(frames=(17,), fps=None, buckets=((96, 48),))
    with pytest.raises(SampleError, match=r"shorter than the smallest frame bucket \(17\)") as info:
        plan_clips(_fake(frames=16), native, epoch=0)
    assert info.value.reason == "too_short"


# --------------------------------------------------------------------------- good corpus


def test_decode_good_corpus(corpus: Corpus, probed: dict[str, Probed]) -> None:
    specs = corpus.by_kind("good")
    context = StageContext()
    out = _run([probed[s.name] for s in specs], OPTIONS, context=context)
    assert len(out) == len(specs)
    for spec, clip in zip(specs, out, strict=True):
        assert isinstance(clip, Clip), clip
        assert spec.width is not None and spec.height is not None and spec.fps is not None
        duration = 3.0 if spec.vfr else spec.duration
        assert duration is not None
        frames = _expected_frames(duration, spec.fps)
        width, height = _expected_bucket(spec.width, spec.height)
        assert clip.bucket == Bucket(frames, width, height), spec.name
        assert clip.pixels.dtype == torch.uint8
        assert tuple(clip.pixels.shape) == (frames, 3, height, width), spec.name
        assert clip.key == f"{spec.name}#0" and clip.clip_index == 0
        assert clip.source == probed[spec.name].source
        captions = spec.caption.splitlines() if spec.caption else [""]
        assert clip.caption in captions, spec.name
        # Frames differ (the pattern moves): no frame was duplicated to fill the clip.
        assert not torch.equal(clip.pixels[0], clip.pixels[-1]), spec.name
        _check_crop_geometry(clip, spec.width, spec.height, centered=True)
        times = clip.frame_times
        assert len(times) == frames
        if spec.vfr:
            assert all(b >= a for a, b in itertools.pairwise(times)), spec.name
            continue
        assert all(b > a for a, b in itertools.pairwise(times)), spec.name
        assert times[-1] - times[0] == pytest.approx((frames - 1) / 16, abs=1 / spec.fps)
        for i, t in enumerate(times):
            # The frame on screen at i / 16 s (give or take the quarter source frame that absorbs
            # container time rounding): shown at t, replaced 1 / fps later.
            requested = i / 16
            assert t <= requested + 0.25 / spec.fps + 1e-6, (spec.name, i, t)
            assert requested < t + 1 / spec.fps + 2e-3, (spec.name, i, t)
    stats = context.metrics.stages["decode"]
    assert (stats.items_in, stats.items_out, stats.failed) == (len(specs), len(specs), 0)


def test_vfr_frames_are_the_ones_played_at_the_sample_times(
    corpus: Corpus, probed: dict[str, Probed]
) -> None:
    name = "good/h264_vfr.mp4"
    opts = DecodeOptions(frames=(41,), fps=16.0, buckets=((128, 72),))
    clip = _clip(probed[name], opts)
    decoder = VideoDecoder(str(corpus.path(name)), seek_mode="exact")
    all_pts = decoder.get_frames_at(list(range(60))).pts_seconds.tolist()
    requested = [i / 16 for i in range(41)]
    indices = [max(j for j, p in enumerate(all_pts) if p <= t + 1e-9) for t in requested]
    # The slow segment (1/12 s spacing) repeats frames; the fast ones skip frames.
    assert indices[16:20] == [24, 24, 25, 26]
    assert list(clip.frame_times) == pytest.approx([all_pts[j] for j in indices], abs=1e-6)
    assert torch.equal(clip.pixels, decoder.get_frames_at(indices).data)
    # And not what a header-fps "every n-th frame" sampler would pick.
    naive = [round(t * 24) for t in requested]
    assert naive != indices


def test_native_fps_decodes_consecutive_frames(corpus: Corpus, probed: dict[str, Probed]) -> None:
    name = "good/h264_landscape.mp4"  # 54 frames at 24 fps
    opts = DecodeOptions(frames=(17, 33, 49, 57), fps=None, buckets=((160, 90),))
    clip = _clip(probed[name], opts)
    assert clip.bucket == Bucket(49, 160, 90)
    assert list(clip.frame_times) == pytest.approx([i / 24 for i in range(49)], abs=1e-6)
    reference = VideoDecoder(str(corpus.path(name))).get_frames_at(list(range(49))).data
    assert torch.equal(clip.pixels, reference)


def test_pixels_match_torchcodec_at_native_size(tmp_path: Path) -> None:
    path = tmp_path / "native.mp4"
    make_video(path, width=64, height=48, fps=16.0, num_frames=20)
    item = _probed_file(path)
    opts = DecodeOptions(frames=(17,), fps=16.0, buckets=((64, 48),))
    clip = _clip(item, opts)
    assert clip.crop.as_list() == [0.0, 0.0, 64.0, 48.0]
    reference = VideoDecoder(str(path)).get_frames_at(list(range(17))).data
    assert torch.equal(clip.pixels[0], reference[0])
    assert torch.equal(clip.pixels, reference)
    assert list(clip.frame_times) == pytest.approx([i / 16 for i in range(17)], abs=1e-6)


def test_decoder_side_resize_matches_a_full_size_resize(
    corpus: Corpus, probed: dict[str, Probed]
) -> None:
    name = "good/h264_landscape.mp4"
    small = _clip(probed[name], DecodeOptions(frames=(5,), fps=16.0, buckets=((80, 45),)))
    assert small.bucket == Bucket(5, 80, 45)
    assert small.crop.as_list() == pytest.approx([0.0, 0.0, 160.0, 90.0])
    full = VideoDecoder(str(corpus.path(name))).get_frames_at([0]).data.float()
    resized = torch.nn.functional.interpolate(full, size=(45, 80), mode="bilinear", antialias=True)
    diff = (small.pixels[:1].float() - resized).abs().mean().item()
    flipped = (small.pixels[:1].float() - resized.flip(-1)).abs().mean().item()
    assert diff < 6.0, diff
    assert flipped > 4 * diff


@pytest.mark.parametrize(
    ("name", "bucket"),
    [
        ("good/h264_landscape.mp4", (96, 48)),
        ("good/h264_portrait.mov", (48, 64)),
        ("good/vp9_square.webm", (64, 64)),
        ("good/mpeg4_4x3.avi", (64, 48)),
    ],
)
def test_resize_lands_in_the_expected_bucket(
    probed: dict[str, Probed], name: str, bucket: tuple[int, int]
) -> None:
    clip = _clip(probed[name], DecodeOptions(frames=(5,), fps=16.0, buckets=BUCKETS))
    assert (clip.bucket.width, clip.bucket.height) == bucket
    assert tuple(clip.pixels.shape) == (5, 3, bucket[1], bucket[0])


def test_rotated_video_is_decoded_upright(probed: dict[str, Probed]) -> None:
    # Same content as the landscape file, with a 90-degree display matrix.
    opts = DecodeOptions(frames=(17,), fps=16.0, buckets=((64, 32), (32, 64)))
    rotated = _clip(probed["good/h264_rotated.mp4"], opts)
    landscape = _clip(probed["good/h264_landscape.mp4"], opts)
    assert rotated.bucket == Bucket(17, 32, 64)
    assert landscape.bucket == Bucket(17, 64, 32)
    upright = torch.rot90(landscape.pixels, 1, dims=(2, 3)).float()
    wrong = torch.rot90(landscape.pixels, -1, dims=(2, 3)).float()
    good = (rotated.pixels.float() - upright).abs().mean().item()
    bad = (rotated.pixels.float() - wrong).abs().mean().item()
    assert good < 4.0, good
    assert bad > 10 * good


# --------------------------------------------------------------------------- captions and crops


def test_caption_is_reproducible_per_seed_epoch_and_key(corpus: Corpus) -> None:
    path = corpus.path("images/small.bmp")
    captions = ("one", "two", "three", "four")
    item = _probed_file(path, key="k/small.bmp", captions=captions)
    opts = DecodeOptions(frames=(1,), fps=16.0, buckets=((64, 48),), seed=3)

    def chosen(probed_item: Probed, epoch: int, options: DecodeOptions = opts) -> list[str]:
        return [_clip(probed_item, options, epoch).caption]

    per_epoch = [chosen(item, e)[0] for e in range(12)]
    assert all(c in captions for c in per_epoch)
    assert per_epoch == [chosen(item, e)[0] for e in range(12)]
    assert len(set(per_epoch)) > 1
    # The same key elsewhere chooses the same; batching with other items changes nothing.
    twin = _probed_file(corpus.path("images/landscape.png"), key="k/small.bmp", captions=captions)
    assert [chosen(twin, e)[0] for e in range(12)] == per_epoch
    other = _probed_file(path, key="k/other.bmp", captions=captions)
    together = _run([other, item, other], opts, epoch=5)
    assert isinstance(together[1], Clip) and together[1].caption == per_epoch[5]
    reseeded = DecodeOptions(frames=(1,), fps=16.0, buckets=((64, 48),), seed=4)
    assert [chosen(item, e, reseeded)[0] for e in range(12)] != per_epoch


def test_uncaptioned_source_gets_an_empty_caption(corpus: Corpus) -> None:
    item = _probed_file(corpus.path("images/small.bmp"))
    assert _clip(item, DecodeOptions(frames=(1,), fps=16.0, buckets=((64, 48),))).caption == ""


def test_random_crop_is_reproducible_varies_and_slices_the_resized_frames(
    probed: dict[str, Probed],
) -> None:
    item = probed["good/h264_landscape.mp4"]  # 160x90 covers 48x48 at 85x48
    crop_opts = DecodeOptions(frames=(5,), fps=16.0, buckets=((48, 48),), crop="random", seed=1)
    full = _clip(item, DecodeOptions(frames=(5,), fps=16.0, buckets=((85, 48),)))
    assert full.bucket == Bucket(5, 85, 48)
    xs = []
    for epoch in range(6):
        clip = _clip(item, crop_opts, epoch)
        again = _clip(item, crop_opts, epoch)
        assert torch.equal(clip.pixels, again.pixels) and clip.crop == again.crop
        _check_crop_geometry(clip, 160, 90, centered=False)
        assert clip.crop.y == 0 and clip.crop.height == pytest.approx(90.0)
        x = round(clip.crop.x * 85 / 160)
        assert 0 <= x <= 85 - 48
        assert torch.equal(clip.pixels, full.pixels[..., :, x : x + 48])
        xs.append(x)
    assert len(set(xs)) > 1, xs


def test_center_crop_offsets_are_symmetric(probed: dict[str, Probed]) -> None:
    item = probed["good/mpeg4_4x3.avi"]  # 160x120 into 48x48: resized 64x48, 8 px each side
    clip = _clip(item, DecodeOptions(frames=(5,), fps=16.0, buckets=((48, 48),)))
    assert clip.crop.as_list() == pytest.approx([20.0, 0.0, 120.0, 120.0])
    full = _clip(item, DecodeOptions(frames=(5,), fps=16.0, buckets=((64, 48),)))
    assert torch.equal(clip.pixels, full.pixels[..., 8:56])


# --------------------------------------------------------------------------- images


def test_images_decode_to_one_frame(corpus: Corpus, probed: dict[str, Probed]) -> None:
    from PIL import Image

    specs = corpus.by_kind("image")
    out = _run([probed[s.name] for s in specs], OPTIONS)
    for spec, clip in zip(specs, out, strict=True):
        assert isinstance(clip, Clip), clip
        assert spec.width is not None and spec.height is not None
        width, height = _expected_bucket(spec.width, spec.height)
        assert clip.bucket == Bucket(1, width, height), spec.name
        assert tuple(clip.pixels.shape) == (1, 3, height, width)
        assert clip.frame_times == (0.0,)
        _check_crop_geometry(clip, spec.width, spec.height, centered=True)
    # At native size the pixels are exactly what Pillow decodes.
    path = corpus.path("images/landscape.png")
    clip = _clip(_probed_file(path), DecodeOptions(frames=(1,), fps=16.0, buckets=((160, 120),)))
    with Image.open(path) as img:
        expected = torch.from_numpy(np.asarray(img.convert("RGB")).copy())
    assert torch.equal(clip.pixels[0].permute(1, 2, 0), expected)


def test_exif_rotated_jpeg_decodes_upright(tmp_path: Path) -> None:
    from PIL import Image, ImageOps

    image = Image.new("RGB", (80, 48), (0, 0, 0))
    image.paste((250, 250, 250), (0, 0, 20, 12))  # a white block in the top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)
    item = _probed_file(path)
    assert (item.metadata.width, item.metadata.height) == (48, 80)
    clip = _clip(item, DecodeOptions(frames=(1,), fps=16.0, buckets=((48, 80),)))
    with Image.open(path) as img:
        upright = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    assert torch.equal(clip.pixels[0].permute(1, 2, 0), torch.from_numpy(upright.copy()))
    # Orientation 6: the top-left block ends up in the top-right corner.
    assert clip.pixels[0, :, 2, 45].float().mean() > 200
    assert clip.pixels[0, :, 2, 2].float().mean() < 50


# --------------------------------------------------------------------------- damaged files


@pytest.fixture(scope="module")
def intact_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corrupt_middle file as it was before the damage (bit-exact encoding)."""
    path = tmp_path_factory.mktemp("intact") / "intact.mp4"
    make_video(path, width=160, height=90, fps=24.0, num_frames=72, faststart=True)
    return path


def test_corrupt_middle_salvages_the_frames_before_the_damage_or_fails(
    probed: dict[str, Probed], intact_copy: Path
) -> None:
    item = probed["damaged/corrupt_middle.mp4"]
    opts = DecodeOptions(frames=(5, 17, 33), fps=16.0, buckets=((160, 90),))
    context = StageContext()
    out = _run([item], opts, context=context)
    assert len(out) == 1
    result = out[0]
    if isinstance(result, Failed):
        assert result.reason == "decode_error", result
        assert ".cpp:" not in result.message and item.path in result.message
        return
    assert result.bucket.frames in (5, 17), result  # shorter than the 33 an intact file gives
    intact = _clip(_probed_file(intact_copy), opts)
    assert intact.bucket.frames == 33
    n = result.bucket.frames
    assert torch.equal(result.pixels, intact.pixels[:n])
    assert result.frame_times == intact.frame_times[:n]
    assert context.metrics.stages["decode"].failed == 0


def test_chunks_on_corrupt_middle_keep_the_good_clip(probed: dict[str, Probed]) -> None:
    item = probed["damaged/corrupt_middle.mp4"]
    opts = DecodeOptions(
        frames=(17,), fps=16.0, buckets=((160, 90),), sampling="chunks", clips_per_video=0
    )
    out = _run([item], opts)
    assert len(out) == 2
    first, second = out
    assert isinstance(first, Clip) and first.bucket.frames == 17 and first.clip_index == 0
    if isinstance(second, Failed):
        assert second.key == f"{item.key}#1"
        assert second.reason == "decode_error"
        assert ".cpp:" not in second.message, second.message
        assert item.path in second.message
    else:
        assert isinstance(second, Clip) and second.clip_index == 1
        assert second.bucket.frames == 17


def test_multi_clip_partial_failure_keeps_the_good_clips(
    probed: dict[str, Probed], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fetch = frames_module._fetch

    def fetch(decoder: Any, plan: Any, *rest: Any) -> Any:
        if plan.clip_index == 1:
            raise RuntimeError(TORCHCODEC_LIKE)
        return real_fetch(decoder, plan, *rest)

    def salvage(decoder: Any, plan: Any, frames: Any) -> Any:
        raise RuntimeError(TORCHCODEC_LIKE)

    monkeypatch.setattr(frames_module, "_fetch", fetch)
    monkeypatch.setattr(frames_module, "_salvage", salvage)
    item = probed["good/h264_landscape.mp4"]  # 36 frames at 16 fps: 4 chunks of 9, capped at 3
    opts = DecodeOptions(
        frames=(9,), fps=16.0, buckets=((96, 48),), sampling="chunks", clips_per_video=3
    )
    context = StageContext()
    out = _run([item], opts, context=context)
    assert [type(o) for o in out] == [Clip, Clip, Failed]
    assert [o.key for o in out] == [f"{item.key}#0", f"{item.key}#2", f"{item.key}#1"]
    good_a, good_b, failed = out
    assert isinstance(good_a, Clip) and isinstance(good_b, Clip) and isinstance(failed, Failed)
    assert good_a.frame_times[0] == pytest.approx(0.0)
    assert good_b.frame_times[0] == pytest.approx(18 / 16, abs=1 / 24)
    assert failed.stage == "decode" and failed.reason == "decode_error"
    assert failed.error_type == "RuntimeError" and failed.path == item.path
    assert item.path in failed.message
    assert ".cpp:" not in failed.message, failed.message
    assert "Could not push packet" in failed.message
    stats = context.metrics.stages["decode"]
    assert (stats.items_in, stats.items_out, stats.failed) == (1, 2, 1)
    assert stats.by_reason["decode_error"] == 1


def test_all_clips_failing_gives_one_failed_for_the_source(
    probed: dict[str, Probed], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError(TORCHCODEC_LIKE)

    monkeypatch.setattr(frames_module, "_fetch", broken)
    monkeypatch.setattr(frames_module, "_salvage", broken)
    item = probed["good/h264_landscape.mp4"]
    chunks = DecodeOptions(
        frames=(9,), fps=16.0, buckets=((96, 48),), sampling="chunks", clips_per_video=0
    )
    for opts in (chunks, OPTIONS):
        out = _run([item, probed["images/small.bmp"]], opts)
        assert len(out) == 2
        failed, image = out
        assert isinstance(failed, Failed) and isinstance(image, Clip)
        assert failed.key == item.key and failed.reason == "decode_error"
        assert failed.attempts == 1
        assert ".cpp:" not in failed.message and item.path in failed.message


def test_salvage_after_a_failed_batch_keeps_a_shorter_clip(
    probed: dict[str, Probed], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batched call that fails on a good file falls back to frame-by-frame decoding."""

    def fetch(decoder: Any, plan: Any, *rest: Any) -> Any:
        raise RuntimeError(TORCHCODEC_LIKE)

    monkeypatch.setattr(frames_module, "_fetch", fetch)
    item = probed["good/h264_landscape.mp4"]
    clip = _clip(item, DecodeOptions(frames=(5, 17, 33), fps=16.0, buckets=((96, 48),)))
    monkeypatch.undo()
    reference = _clip(item, DecodeOptions(frames=(5, 17, 33), fps=16.0, buckets=((96, 48),)))
    assert clip.bucket == reference.bucket == Bucket(33, 96, 48)
    assert torch.equal(clip.pixels, reference.pixels)
    assert clip.frame_times == reference.frame_times


def test_broken_files_never_raise_from_the_stage(corpus: Corpus, probed: dict[str, Probed]) -> None:
    fake_meta = probed["good/h264_landscape.mp4"].metadata
    items: list[Probed] = []
    for spec in corpus.by_kind("broken"):
        if spec.expected_reason in ("not_a_file", "missing"):
            continue
        items.append(Probed(source=_source(corpus, spec), metadata=fake_meta))
    items.append(probed["damaged/truncated_after_index.mp4"])
    out = _run(items, OPTIONS)
    assert len(out) >= len(items)
    by_key = {o.key.split("#")[0]: o for o in out}
    for item in items:
        result = by_key[item.key]
        if item.key.startswith("broken/"):
            assert isinstance(result, Failed), result
            assert result.reason in ("unreadable", "no_video_stream"), result
            assert ".cpp:" not in result.message
        else:
            assert isinstance(result, (Clip, Failed))
            if isinstance(result, Clip):
                assert (result.bucket.frames - 1) % 4 == 0


# --------------------------------------------------------------------------- misc


def test_real_world_files_decode(shared_media: Path) -> None:
    opts = DecodeOptions(frames=(5, 9, 17), fps=16.0, buckets=((64, 64), (96, 48)))
    items = [
        _probed_file(shared_media / name)
        for name in ("av1_video.mkv", "h265_video.mp4", "nasa_13013.mp4")
    ]
    out = _run(items, opts)
    assert [type(o) for o in out] == [Clip] * 3, out
    av1, h265, nasa = out
    assert isinstance(av1, Clip) and isinstance(h265, Clip) and isinstance(nasa, Clip)
    assert av1.bucket == Bucket(17, 96, 48)
    assert h265.bucket == Bucket(9, 64, 64)  # 1 s at 16 fps = 16 frames
    assert nasa.bucket == Bucket(17, 96, 48)


def test_decode_one_is_deterministic(probed: dict[str, Probed]) -> None:
    item = probed["good/vp9_square.webm"]
    opts = DecodeOptions(
        frames=(5,),
        fps=16.0,
        buckets=((48, 48),),
        sampling="random",
        crop="random",
        clips_per_video=1,
        seed=11,
    )
    a = decode_one(item, opts, epoch=2)
    b = decode_one(item, opts, epoch=2)
    assert len(a) == len(b) == 1
    assert isinstance(a[0], Clip) and isinstance(b[0], Clip)
    assert torch.equal(a[0].pixels, b[0].pixels) and a[0].frame_times == b[0].frame_times


def test_decode_honours_the_stage_contract(probed: dict[str, Probed]) -> None:
    items = [probed["good/h264_faststart_uncaptioned.mp4"], probed["images/portrait.jpg"]]
    opts = DecodeOptions(frames=(5,), fps=16.0, buckets=((32, 32),), crop="random")
    check_stage_contract(decode, items, options=opts, epoch=1)


def test_failures_leave_no_decoder_to_the_garbage_collector(
    probed: dict[str, Probed], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decoder kept alive by a reference cycle (an exception's traceback) is freed by the
    collector, possibly in a forked worker where its FFmpeg threads do not exist: decode must
    free every decoder by reference counting, through salvage and partial failures alike."""
    import gc

    damaged = probed["damaged/corrupt_middle.mp4"]
    good = probed["good/h264_landscape.mp4"]
    chunks = DecodeOptions(
        frames=(17,), fps=16.0, buckets=((160, 90),), sampling="chunks", clips_per_video=0
    )
    real_fetch = frames_module._fetch

    def fetch(decoder: Any, plan: Any, *rest: Any) -> Any:
        if plan.clip_index == 1:
            raise RuntimeError(TORCHCODEC_LIKE)
        return real_fetch(decoder, plan, *rest)

    def broken(*args: Any) -> Any:
        raise RuntimeError(TORCHCODEC_LIKE)

    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        outputs = _run([damaged], OPTIONS)  # salvaged frame by frame
        outputs += _run([damaged], chunks)  # one clip fails inside the decoder
        monkeypatch.setattr(frames_module, "_fetch", fetch)
        monkeypatch.setattr(frames_module, "_salvage", broken)
        outputs += _run([good], chunks)  # a partial failure
        monkeypatch.setattr(frames_module, "_fetch", broken)
        outputs += _run([good], chunks)  # every clip fails
        gc.collect()
        leaked = [o for o in gc.garbage if isinstance(o, VideoDecoder)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert [type(o).__name__ for o in outputs] == [
        "Clip",  # salvaged
        "Clip",  # chunk 0
        "Failed",  # chunk 1, damaged
        "Clip",  # chunk 0
        "Failed",  # chunk 1, patched to fail
        "Failed",  # the whole source
    ]
    assert all(o.reason == "decode_error" for o in outputs if isinstance(o, Failed))
    assert leaked == []


def test_stream_starting_late_is_sampled_from_its_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "offset.mp4"
    make_video(
        path, width=64, height=48, fps=24.0, num_frames=48, extra=["-output_ts_offset", "1.5"]
    )
    item = _probed_file(path)
    assert item.metadata.begin_seconds == pytest.approx(1.5, abs=1e-3)
    assert item.metadata.duration == pytest.approx(2.0, abs=1e-3)
    # 2.0 s of 24 fps at 16 fps: grid points 0..32, the last at the very end, so 33 fits
    # (its last frame is the source's last) and 37 does not.
    clip = _clip(item, DecodeOptions(frames=(17, 33, 37), fps=16.0, buckets=((64, 48),)))
    assert clip.bucket.frames == 33
    assert clip.frame_times[0] == pytest.approx(1.5, abs=1e-3)
    decoder = VideoDecoder(str(path), seek_mode="exact")
    indices = [min(47, math.floor(i * 24 / 16 + 1e-9)) for i in range(33)]  # 0, 1, 3, 4, 6...
    assert indices[-2:] == [46, 47]
    reference = decoder.get_frames_at(indices)
    assert list(clip.frame_times) == pytest.approx(reference.pts_seconds.tolist(), abs=1e-6)
    assert torch.equal(clip.pixels, reference.data)
