"""collate.py: uint8 -> float conversion, collate, and bucket-homogeneous batching."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from wan_data.errors import ConfigError
from wan_data.failures.mechanism import StageContext
from wan_data.items import Bucket, Clip, CropBox, Failed, Source
from wan_data.stages.collate import BatchBuffers, batch_clips, collate, pixels_to_float


def _clip(
    name: str,
    frames: int = 5,
    width: int = 6,
    height: int = 4,
    *,
    fill: int | None = None,
    seed: int = 0,
    caption: str = "",
) -> Clip:
    source = Source(key=name, path=f"/data/{name}.mp4", media_type="video")
    if fill is None:
        g = torch.Generator().manual_seed(seed)
        pixels = torch.randint(0, 256, (frames, 3, height, width), generator=g, dtype=torch.uint8)
    else:
        pixels = torch.full((frames, 3, height, width), fill, dtype=torch.uint8)
    return Clip(
        key=f"{name}#0",
        source=source,
        pixels=pixels,
        frame_times=tuple(i / 16 for i in range(frames)),
        bucket=Bucket(frames, width, height),
        crop=CropBox(1.0, 2.0, float(width), float(height)),
        caption=caption or f"caption of {name}",
    )


def _failed(name: str) -> Failed:
    return Failed(
        key=name,
        path=f"/data/{name}.mp4",
        stage="decode",
        reason="decode_error",
        error_type="RuntimeError",
        message=f"decode of file ('/data/{name}.mp4') failed.",
    )


# --------------------------------------------------------------------------- pixels_to_float


def test_pixels_to_float_maps_every_byte_value_exactly() -> None:
    values = torch.arange(256, dtype=torch.uint8)
    frames = values.view(1, 1, 1, 1, 256).expand(1, 1, 3, 1, 256).contiguous()
    out = pixels_to_float(frames)
    assert out.dtype == torch.float32
    assert out.shape == (1, 3, 1, 1, 256)
    row = out[0, 0, 0, 0]
    assert row[0].item() == -1.0
    assert row[255].item() == 1.0
    expected = torch.arange(256, dtype=torch.float64) / 127.5 - 1.0
    assert torch.allclose(row.double(), expected, atol=1e-6, rtol=0)
    # 127.5 is the midpoint: 127 and 128 sit symmetrically around 0.
    assert row[127].item() == pytest.approx(-1 / 255, abs=1e-6)
    assert row[128].item() == pytest.approx(1 / 255, abs=1e-6)
    assert out.min().item() >= -1.0 and out.max().item() <= 1.0


def test_pixels_to_float_moves_channels_before_frames() -> None:
    frames = torch.zeros((2, 5, 3, 4, 6), dtype=torch.uint8)  # (B, F, C, H, W)
    frames[1, 3, 2, 1, 5] = 255
    frames[0, 4, 0, 3, 0] = 51
    out = pixels_to_float(frames)
    assert out.shape == (2, 3, 5, 4, 6)  # (B, C, F, H, W)
    assert out[1, 2, 3, 1, 5].item() == 1.0
    assert out[0, 0, 4, 3, 0].item() == pytest.approx(51 / 127.5 - 1, abs=1e-6)
    assert (out == -1.0).sum().item() == out.numel() - 2


# --------------------------------------------------------------------------- collate


def test_collate_stacks_into_b_c_f_h_w_with_metadata() -> None:
    a, b = _clip("a", seed=1), _clip("b", seed=2)
    batch = collate([a, b])
    pixels = batch["pixels"]
    assert pixels.dtype == torch.float32
    assert tuple(pixels.shape) == (2, 3, 5, 4, 6)
    for i, clip in enumerate((a, b)):
        expected = clip.pixels.permute(1, 0, 2, 3).double() / 127.5 - 1.0
        assert torch.allclose(pixels[i].double(), expected, atol=1e-6, rtol=0)
    # A known pixel of clip b at (f=3, c=2, y=1, x=5) lands at [1, 2, 3, 1, 5].
    value = int(b.pixels[3, 2, 1, 5])
    assert pixels[1, 2, 3, 1, 5].item() == pytest.approx(value / 127.5 - 1, abs=1e-6)
    assert batch["keys"] == ["a#0", "b#0"]
    assert batch["paths"] == ["/data/a.mp4", "/data/b.mp4"]
    assert batch["captions"] == ["caption of a", "caption of b"]
    assert batch["frame_times"] == [[i / 16 for i in range(5)]] * 2
    assert batch["crops"] == [[1.0, 2.0, 6.0, 4.0]] * 2
    assert batch["buckets"] == ["5x6x4", "5x6x4"]
    assert batch["dropped"] == 0
    # The clips themselves are untouched (still uint8, still (F, 3, H, W)).
    assert a.pixels.dtype == torch.uint8 and tuple(a.pixels.shape) == (5, 3, 4, 6)


def test_collate_extreme_values() -> None:
    batch = collate([_clip("black", fill=0), _clip("white", fill=255)])
    assert torch.all(batch["pixels"][0] == -1.0)
    assert torch.all(batch["pixels"][1] == 1.0)


def test_collate_drops_failed_and_none_and_reports_them() -> None:
    a, b = _clip("a", seed=1), _clip("b", seed=2)
    batch = collate([None, a, _failed("x"), b, None])
    assert tuple(batch["pixels"].shape) == (2, 3, 5, 4, 6)
    assert batch["keys"] == ["a#0", "b#0"]
    assert batch["dropped"] == 3
    assert torch.allclose(batch["pixels"], collate([a, b])["pixels"])


@pytest.mark.parametrize("items", [[], [None], [_failed("x"), None, _failed("y")]])
def test_collate_all_failed_or_empty_gives_an_empty_batch(items: list[Any]) -> None:
    batch = collate(items)
    assert batch["pixels"].shape[0] == 0
    assert batch["pixels"].dtype == torch.float32
    assert batch["pixels"].dim() == 5
    for key in ("captions", "paths", "keys", "frame_times", "crops", "buckets"):
        assert batch[key] == [], key
    assert batch["dropped"] == len(items)


def test_collate_mismatched_shapes_names_every_sample() -> None:
    clips = [_clip("a"), _clip("b", frames=9), _clip("c", width=8)]
    with pytest.raises(ValueError) as info:
        collate(clips)
    message = str(info.value)
    for clip in clips:
        assert clip.key in message, message
        assert clip.source.path in message, message
    assert "(9, 3, 4, 6)" in message and "(5, 3, 4, 8)" in message
    assert "stage=collate" in message


# --------------------------------------------------------------------------- batch_clips


class _Recorder:
    """An iterator that counts how many items the consumer has pulled."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.pulled = 0

    def __iter__(self) -> Iterator[Any]:
        for item in self.items:
            self.pulled += 1
            yield item


def _stream() -> list[Any]:
    a = [_clip(f"a{i}", seed=i) for i in range(4)]  # bucket 5x6x4
    b = [_clip(f"b{i}", frames=9, seed=10 + i) for i in range(3)]  # bucket 9x6x4
    c = _clip("c0", width=8, seed=20)  # bucket 5x8x4
    return [a[0], b[0], a[1], _failed("f0"), b[1], a[2], None, b[2], a[3], c, _failed("f1")]


def test_batch_clips_emits_full_batches_as_soon_as_they_fill() -> None:
    recorder = _Recorder(_stream())
    context = StageContext(epoch=3)
    emitted = []
    for batch in batch_clips(recorder, batch_size=2, context=context):
        emitted.append((recorder.pulled, batch["keys"], batch["buckets"]))
    assert emitted == [
        (3, ["a0#0", "a1#0"], ["5x6x4"] * 2),
        (5, ["b0#0", "b1#0"], ["9x6x4"] * 2),
        (9, ["a2#0", "a3#0"], ["5x6x4"] * 2),
        # Leftovers once the input is exhausted, as partial batches.
        (11, ["c0#0"], ["5x8x4"]),
        (11, ["b2#0"], ["9x6x4"]),
    ]
    for _, _, buckets in emitted:
        assert len(set(buckets)) == 1
    metrics = context.metrics
    assert [r["key"] for r in metrics.skipped] == ["f0", "f1"]
    assert all(r["epoch"] == 3 and r["reason"] == "decode_error" for r in metrics.skipped)
    assert metrics.dropped_in_collate == 1
    assert metrics.batches == 5
    assert metrics.samples == 8


def test_batch_clips_drop_last_counts_the_dropped_samples() -> None:
    context = StageContext()
    batches = list(batch_clips(iter(_stream()), batch_size=2, drop_last=True, context=context))
    assert [b["keys"] for b in batches] == [
        ["a0#0", "a1#0"],
        ["b0#0", "b1#0"],
        ["a2#0", "a3#0"],
    ]
    assert all(b["pixels"].shape[0] == 2 for b in batches)
    assert context.metrics.warnings["dropped_partial_batch_samples"] == 2
    assert context.metrics.batches == 3 and context.metrics.samples == 6
    assert len(context.metrics.skipped) == 2


def test_batch_clips_pixels_are_the_collated_clips() -> None:
    items = _stream()
    batches = list(batch_clips(iter(items), batch_size=3))
    clips = {c.key: c for c in items if isinstance(c, Clip)}
    seen = []
    for batch in batches:
        expected = collate([clips[k] for k in batch["keys"]])
        assert torch.equal(batch["pixels"], expected["pixels"])
        seen.extend(batch["keys"])
    assert sorted(seen) == sorted(clips)  # every clip exactly once
    assert [len(b["keys"]) for b in batches] == [3, 3, 1, 1]


def test_batch_clips_without_context_and_with_only_failures() -> None:
    assert list(batch_clips(iter([_failed("x"), None]), batch_size=2)) == []
    assert list(batch_clips(iter([]), batch_size=1)) == []
    singles = list(batch_clips(iter([_clip("a"), _clip("b", frames=9)]), batch_size=1))
    assert [b["keys"] for b in singles] == [["a#0"], ["b#0"]]


@pytest.mark.parametrize("batch_size", [0, -1, True, 2.0])
def test_batch_clips_rejects_a_bad_batch_size(batch_size: Any) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        list(batch_clips(iter([_clip("a")]), batch_size=batch_size))


# -- BatchBuffers: a batch tensor is reused only when nothing outside the pool holds it --------


def _fresh_pool() -> tuple[BatchBuffers, int]:
    pool = BatchBuffers()
    first = pool.empty((4, 3), torch.float32)
    ptr = first.data_ptr()
    del first
    return pool, ptr


def test_batch_buffers_reuse_a_tensor_nobody_holds() -> None:
    pool, ptr = _fresh_pool()
    again = pool.empty((4, 3), torch.float32)
    assert again.data_ptr() == ptr
    assert pool.reused == 1


@pytest.mark.parametrize(
    "hold",
    [
        pytest.param(lambda t: t, id="the tensor"),
        pytest.param(lambda t: {"latents": t}, id="a batch dict"),
        pytest.param(lambda t: t[1:], id="a view"),
        pytest.param(lambda t: t.view(-1), id="a reshaped view"),
        pytest.param(lambda t: t.numpy(), id="a numpy array"),
        pytest.param(lambda t: memoryview(t.numpy()), id="a memoryview"),
        pytest.param(lambda t: t.untyped_storage(), id="its storage"),
    ],
)
def test_batch_buffers_never_hand_out_a_tensor_still_held(hold: Any) -> None:
    pool = BatchBuffers()
    first = pool.empty((4, 3), torch.float32)
    first.fill_(7.0)
    held = hold(first)
    ptr = first.data_ptr()
    del first
    second = pool.empty((4, 3), torch.float32)
    assert second.data_ptr() != ptr
    assert pool.reused == 0
    second.fill_(-1.0)  # writing the new batch leaves the held one alone
    assert held is not None
    del held
    third = pool.empty((4, 3), torch.float32)  # let go now: reusable
    assert third.data_ptr() == ptr


def test_batch_buffers_match_shape_and_dtype_and_keep_a_bounded_number() -> None:
    pool, ptr = _fresh_pool()
    other = pool.empty((4, 3), torch.bfloat16)
    assert other.data_ptr() != ptr
    wider = pool.empty((5, 3), torch.float32)
    assert wider.data_ptr() != ptr
    del other, wider
    assert len(pool._held) == pool.keep == 2  # the oldest, (4, 3) float32, was let go
    pool.clear()
    assert pool._held == []


def test_batch_buffers_without_torch_use_counts_always_allocate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import wan_data.stages.collate as collate_module

    monkeypatch.setattr(collate_module, "_storage_use_count", None)
    pool, _ = _fresh_pool()
    pool.empty((4, 3), torch.float32)
    assert pool.reused == 0
    assert pool._held == []  # nothing tracked, nothing kept alive
