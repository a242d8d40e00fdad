"""The cache pass and the train pass from cached latents, end to end with tiny Wan VAEs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from media import make_video
from vae_fixtures import make_tiny_wan21_vae, make_tiny_wan22_vae

from wan_data import WanVideoDataset
from wan_data.latents.prepare import CacheIncompleteError
from wan_data.latents.spec import sample_key
from wan_data.latents.store import LatentCache
from wan_data.latents.vae import load_vae, normalise

pytestmark = pytest.mark.integration

OPTIONS: dict[str, Any] = {
    "frames": [5, 9],
    "fps": 8,
    "resolution": (64, 64),
    "batch_size": 2,
    "seed": 1,
    "sampling": "random",
    "crop": "random",
    "device": "cpu",
    "latent_dtype": torch.float32,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache_data")
    make_video(root / "wide.mp4", width=96, height=64, fps=16, num_frames=24)
    make_video(root / "tall.mp4", width=64, height=96, fps=16, num_frames=24)
    make_video(root / "square.mp4", width=64, height=64, fps=12, num_frames=20)
    make_video(root / "square2.mp4", width=64, height=64, fps=24, num_frames=30)
    (root / "broken.mp4").write_bytes(b"not a video")
    return root


@pytest.fixture(scope="module")
def vae21(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_wan21_vae(tmp_path_factory.mktemp("vae21") / "vae")


@pytest.fixture(scope="module")
def vae22(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_wan22_vae(tmp_path_factory.mktemp("vae22") / "vae")


def prepared(data: Path, vae: Path, cache: Path, **extra: Any) -> WanVideoDataset:
    ds = WanVideoDataset(data, **{**OPTIONS, **extra}, vae=vae, cache_dir=cache)
    ds.prepare(num_workers=0, progress=False)
    return ds


@pytest.mark.parametrize("which", ["wan21", "wan22"])
def test_cached_latents_equal_encoding_the_pixel_stream(
    data: Path, vae21: Path, vae22: Path, tmp_path: Path, which: str
) -> None:
    vae = vae21 if which == "wan21" else vae22
    latent_ds = prepared(data, vae, tmp_path / "cache")
    pixel_ds = WanVideoDataset(
        data, **{k: v for k, v in OPTIONS.items() if k not in ("device", "latent_dtype")}
    )
    model, info = load_vae(vae)
    pixel_batches = {b["position"]: b for b in pixel_ds.loader(num_workers=0)}
    latent_batches = list(latent_ds.loader(num_workers=2, timeout=120))
    assert len(latent_batches) == len(pixel_batches) > 0
    for batch in latent_batches:
        pixels = pixel_batches[batch["position"]]
        assert batch["keys"] == pixels["keys"]
        assert batch["captions"] == pixels["captions"]
        with torch.no_grad():
            expected = normalise(model.encode(pixels["pixels"]).latent_dist.mode(), info)
        assert batch["latents"].shape == expected.shape
        b, _, f, h, w = pixels["pixels"].shape
        assert batch["latents"].shape == (
            b,
            info.z_dim,
            (f - 1) // 4 + 1,
            h // info.spatial_factor,
            w // info.spatial_factor,
        )
        torch.testing.assert_close(batch["latents"], expected, atol=1e-5, rtol=1e-5)
        assert batch["frame_times"] == pixels["frame_times"]
        assert [pytest.approx(c) for c in pixels["crops"]] == batch["crops"]
    assert "decode" not in latent_ds.report()["stages"] or all(
        r["stage"] != "decode" for r in latent_ds.report()["skipped"]
    )


def test_missing_entries_stop_with_the_command_or_fill_with_auto(
    data: Path, vae21: Path, tmp_path: Path
) -> None:
    ds = WanVideoDataset(data, **OPTIONS, vae=vae21, cache_dir=tmp_path / "cache")
    with pytest.raises(CacheIncompleteError, match="wan-data cache") as info:
        next(iter(ds.loader(num_workers=0)))
    assert "ds.prepare()" in str(info.value)
    auto = WanVideoDataset(data, **OPTIONS, vae=vae21, cache_dir=tmp_path / "cache", prepare="auto")
    assert len(list(auto.loader(num_workers=0))) == len(auto)
    assert auto.cache_complete()


def test_rerun_encodes_only_what_changed(data: Path, vae21: Path, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    shutil.copytree(data, folder)
    cache = tmp_path / "cache"
    first = prepared(folder, vae21, cache)
    tasks = len(first.samples)
    ds = WanVideoDataset(folder, **OPTIONS, vae=vae21, cache_dir=cache)
    assert ds.prepare(num_workers=0, progress=False)["encoded"] == 0
    st = os.stat(folder / "wide.mp4")
    os.utime(folder / "wide.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "touched"
    ds = WanVideoDataset(folder, **OPTIONS, vae=vae21, cache_dir=cache)
    wide = sum(1 for s in ds.samples if s.path.endswith("wide.mp4"))
    assert ds.prepare(num_workers=0, progress=False)["encoded"] == wide
    for change in (
        {"fps": 6},
        {"resolution": (48, 48)},
        {"frames": [5]},
        {"latent_dtype": torch.bfloat16},
    ):
        changed = WanVideoDataset(folder, **{**OPTIONS, **change}, vae=vae21, cache_dir=cache)
        summary = changed.prepare(num_workers=0, progress=False)
        assert summary["already_cached"] == 0 and summary["encoded"] == len(changed.samples), change
    # Another seed moves the random windows and crops of some clips: exactly those re-encode
    # (a clip with no slack keeps its frames and crop, hence its key and its entry).
    reseeded = WanVideoDataset(folder, **{**OPTIONS, "seed": 2}, vae=vae21, cache_dir=cache)
    summary = reseeded.prepare(num_workers=0, progress=False)
    assert summary["encoded"] > 0
    assert summary["encoded"] + summary["already_cached"] == len(reseeded.samples)
    other_vae = make_tiny_wan21_vae(tmp_path / "other_vae", seed=7)
    other = WanVideoDataset(folder, **OPTIONS, vae=other_vae, cache_dir=cache)
    summary = other.prepare(num_workers=0, progress=False)
    assert summary["already_cached"] == 0 and summary["encoded"] == tasks


def test_corrupt_entries_are_quarantined_replaced_and_re_encoded(
    data: Path, vae21: Path, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    ds = prepared(data, vae21, cache_dir)
    cache = LatentCache(cache_dir)
    victim = sorted(cache.keys())[0]
    path = cache.path_for(victim)
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF  # flip a byte of the tensor data
    path.write_bytes(bytes(blob))
    batches = list(ds.loader(num_workers=0))
    assert len(batches) == len(ds)
    assert all(len(b["keys"]) == OPTIONS["batch_size"] for b in batches)
    report = ds.report()
    corrupt = [r for r in report["skipped"] if r["reason"] == "cache_corrupt"]
    assert corrupt, report["skipped"]
    assert any(b["replaced"] for b in batches)
    assert list((cache_dir / "quarantine").iterdir())
    again = WanVideoDataset(data, **OPTIONS, vae=vae21, cache_dir=cache_dir)
    assert again.prepare(num_workers=0, progress=False)["encoded"] == 1


def test_variations_cache_k_variants_and_epochs_cycle_through_them(
    data: Path, vae21: Path, tmp_path: Path
) -> None:
    ds = WanVideoDataset(data, **OPTIONS, vae=vae21, cache_dir=tmp_path / "c", variations=2)
    summary = ds.prepare(num_workers=0, progress=False)
    distinct = ds.cache_keys()
    assert len(distinct) > len(ds.samples)  # random windows and crops: most variants differ
    assert summary["encoded"] == summary["tasks"] == len(distinct)

    def latents(epoch: int) -> dict[str, torch.Tensor]:
        ds.set_epoch(epoch)
        return {
            k: b["latents"][i] for b in ds.loader(num_workers=0) for i, k in enumerate(b["keys"])
        }

    e0, e1, e2 = latents(0), latents(1), latents(2)
    assert any(not torch.equal(e0[k], e1[k]) for k in e0)  # other window or crop
    assert all(torch.equal(e0[k], e2[k]) for k in e0)  # epoch 2 reads variant 0 again


def test_cache_options_are_checked_together(data: Path, vae21: Path) -> None:
    from wan_data import ConfigError

    with pytest.raises(ConfigError) as info:
        WanVideoDataset(data, **OPTIONS, vae=vae21, variations=0, prepare="sometimes")
    text = str(info.value)
    assert "cache_dir" in text and "variations" in text and "prepare" in text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cache_pass_on_gpu(data: Path, vae21: Path, tmp_path: Path) -> None:
    ds = WanVideoDataset(
        data, **{**OPTIONS, "device": "cuda"}, vae=vae21, cache_dir=tmp_path / "cache"
    )
    assert ds.prepare(num_workers=2, progress=False)["encoded"] == len(ds.samples)
    assert len(list(ds.loader(num_workers=0))) == len(ds)


def test_report_carries_cache_stats_aggregated_over_workers(
    data: Path, vae21: Path, tmp_path: Path
) -> None:
    ds = prepared(data, vae21, tmp_path / "cache")
    batches = list(ds.loader(num_workers=2, timeout=120))
    stats = ds.report()["cache"]
    reads = sum(len(b["keys"]) for b in batches)
    assert stats["hits"] == reads and stats["misses"] == 0
    assert stats["hit_rate"] == 1.0 and stats["miss_rate"] == 0.0
    assert stats["corruption_count"] == 0
    assert stats["total_items"] == len(LatentCache(tmp_path / "cache").keys()) > 0
    assert stats["cache_size_mb"] > 0 and stats["avg_access_time"] > 0


def test_report_counts_the_writes_of_the_cache_pass(
    data: Path, vae21: Path, tmp_path: Path
) -> None:
    """The cache pass writes in this process, not in an iteration: its counters must still
    reach ``report()["cache"]``, and a second pass adds to the first instead of replacing it."""
    cache_dir = tmp_path / "cache"
    ds = WanVideoDataset(data, **OPTIONS, vae=vae21, cache_dir=cache_dir)
    encoded = ds.prepare(num_workers=0, progress=False)["encoded"]
    written = len(LatentCache(cache_dir).keys())
    assert encoded == written == len(ds.samples) > 0
    stats = ds.report()["cache"]
    assert stats["writes"] == written and stats["total_items"] == written
    assert ds.prepare(num_workers=0, progress=False)["encoded"] == 0
    assert ds.report()["cache"]["writes"] == written  # nothing more written, nothing lost
    reads = sum(len(b["keys"]) for b in ds.loader(num_workers=0))
    stats = ds.report()["cache"]
    assert (stats["writes"], stats["hits"], stats["misses"]) == (written, reads, 0)


def _entry_latents(ds: WanVideoDataset, cache_dir: Path, batch: dict[str, Any]) -> torch.Tensor:
    """The batch's latents as read one by one from the cache (by each member's entry key)."""
    from wan_data.latents.prepare import sample_key

    cache = LatentCache(cache_dir)
    by_key = {s.key: s for s in ds.samples}
    assert ds.cache_spec is not None
    out = []
    for member in batch["keys"]:
        key, _ = sample_key(by_key[member], 0, ds._decode, ds.cache_spec)
        entry = cache.get(key)
        assert entry is not None
        out.append(entry.latents)
    return torch.stack(out)


def test_latents_are_read_into_their_batch_without_a_stack_copy(
    data: Path, vae21: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wan_data.latents.prepare as prepare_module

    cache_dir = tmp_path / "cache"
    ds = prepared(data, vae21, cache_dir)
    expected = [_entry_latents(ds, cache_dir, b) for b in ds.loader(num_workers=0)]

    def no_stack(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise AssertionError("full batches must not be stacked")

    monkeypatch.setattr(prepare_module.torch, "stack", no_stack)
    ds.set_epoch(0)  # the same epoch again (a new pass would be the next one)
    try:
        got = [b["latents"] for b in ds.loader(num_workers=0)]
    finally:
        monkeypatch.undo()
    assert len(got) == len(expected) == len(ds)
    for g, e in zip(got, expected, strict=True):
        assert torch.equal(g, e)


def test_a_corrupt_member_leaves_its_slot_to_the_replacement(
    data: Path, vae21: Path, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    ds = prepared(data, vae21, cache_dir)
    cache = LatentCache(cache_dir)
    victim = cache.path_for(sorted(cache.keys())[0])
    blob = bytearray(victim.read_bytes())
    blob[-3] ^= 0x10
    victim.write_bytes(bytes(blob))
    for workers in (0, 2):
        for batch in ds.loader(num_workers=workers):
            assert torch.equal(batch["latents"], _entry_latents(ds, cache_dir, batch))


def test_batcher_stacks_when_the_slots_do_not_line_up(
    data: Path, vae21: Path, tmp_path: Path
) -> None:
    from wan_data.latents.reading import LatentBatcher

    cache_dir = tmp_path / "cache"
    ds = prepared(data, vae21, cache_dir)
    assert ds.cache_spec is not None
    batcher = LatentBatcher(ds._decode, ds.cache_spec, LatentCache(cache_dir), batch_size=2)
    same = [s for s in ds.samples if s.bucket == ds.samples[0].bucket]
    first = batcher.read(same[0], 0)
    batcher.read(same[-1], 0)  # fills slot 1, then is not part of the batch
    third = batcher.read(same[0], 0)  # a third read starts a new arena
    out = batcher.collate([first, third])
    assert torch.equal(out["latents"], torch.stack([first.latents, third.latents]))
    assert out["latents"].data_ptr() not in (first.latents.data_ptr(), third.latents.data_ptr())
    # Lined-up slots are handed out as they are.
    a = batcher.read(same[0], 0)
    b = batcher.read(same[-1], 0)
    lined = batcher.collate([a, b])
    assert lined["latents"].data_ptr() == a.latents.data_ptr()
    assert torch.equal(lined["latents"][1], b.latents)


def test_cache_corruption_raises_an_alert_once(data: Path, vae21: Path, tmp_path: Path) -> None:
    from wan_data import AlertConfig

    cache_dir = tmp_path / "cache"
    prepared(data, vae21, cache_dir)
    fired: list[Any] = []
    ds = WanVideoDataset(
        data,
        **OPTIONS,
        vae=vae21,
        cache_dir=cache_dir,
        alerts=AlertConfig(stall_seconds=None),
        on_alert=fired.append,
        metrics_every=1,
    )
    list(ds.loader(num_workers=0))
    assert not [a for a in fired if a.kind == "cache_corruption"]
    cache = LatentCache(cache_dir)
    victim = cache.path_for(sorted(cache.keys())[0])
    blob = bytearray(victim.read_bytes())
    blob[-1] ^= 0x01
    victim.write_bytes(bytes(blob))
    list(ds.loader(num_workers=0))
    corrupt = [a for a in fired if a.kind == "cache_corruption"]
    assert len(corrupt) == 1, fired
    assert corrupt[0].value == 1


def test_the_fill_command_in_the_error_rebuilds_this_dataset(
    data: Path, vae21: Path, tmp_path: Path
) -> None:
    """The hint must carry every non-default option: a command without the dataset's frames,
    fps or resolution would fill a different cache."""
    import shlex

    from wan_data.config.cli import config_from_args
    from wan_data.tools.cli import _build_parser

    options = {**OPTIONS, "no_upscale": True, "clips_per_video": 2, "max_aspect": 2.0}
    ds = WanVideoDataset(data, **options, vae=vae21, cache_dir=tmp_path / "cache")
    with pytest.raises(CacheIncompleteError) as info:
        next(iter(ds.loader(num_workers=0)))
    command = str(info.value).split("`")[1]
    for flag in ("--frames 5 9", "--fps 8", "--resolution 64x64", "--no-upscale", "--seed 1"):
        assert flag in command, (flag, command)
    args = _build_parser().parse_args(shlex.split(command)[1:])
    assert config_from_args(args, "cache").flat() == ds.config.flat()


def invert(clip: Any) -> Any:
    import dataclasses

    return dataclasses.replace(clip, pixels=255 - clip.pixels)


def test_clip_stages_run_in_the_cache_pass_and_key_its_entries(
    data: Path, vae21: Path, tmp_path: Path
) -> None:
    from wan_data.stages import Map

    cache = tmp_path / "cache"
    plain = prepared(data, vae21, cache)
    stages = [Map(invert, name="invert")]
    inverted = WanVideoDataset(data, **OPTIONS, vae=vae21, cache_dir=cache, clip_stages=stages)
    assert inverted.cache_keys().isdisjoint(plain.cache_keys())
    assert not inverted.cache_complete()
    summary = inverted.prepare(num_workers=1, progress=False)
    assert summary["encoded"] == len(inverted.cache_keys(0)) and inverted.cache_complete()
    assert "ds.prepare()" in inverted.cache_spec.command_hint  # type: ignore[union-attr]
    pixels = WanVideoDataset(data, **OPTIONS, clip_stages=stages)
    model, info = load_vae(vae21, device="cpu")
    for batch, pixel_batch in zip(
        inverted.loader(num_workers=0), pixels.loader(num_workers=0), strict=True
    ):
        with torch.no_grad():
            expected = normalise(model.encode(pixel_batch["pixels"]).latent_dist.mode(), info)
        torch.testing.assert_close(batch["latents"], expected, atol=1e-5, rtol=1e-5)


def _job(pixels: torch.Tensor) -> Any:
    from wan_data.items import EncodeJob

    entries = tuple({"path": f"/v{i}.mp4"} for i in range(pixels.shape[0]))
    keys = tuple(f"{i:064d}" for i in range(pixels.shape[0]))
    return EncodeJob(
        keys=keys, paths=tuple(e["path"] for e in entries), pixels=pixels, entries=entries
    )


def test_the_cache_pass_pins_pixels_only_for_a_cuda_encoder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Host-to-device copies of decoded pixels overlap the host only from pinned memory: the
    pass's DataLoader pins them (EncodeJob.pin_memory) for a CUDA encoder, never on CPU."""
    from torch.utils.data._utils.pin_memory import pin_memory

    from wan_data.latents.encoder import pin_for

    class Encoder:
        def __init__(self, device: str) -> None:
            self.device = torch.device(device)

    assert not pin_for(Encoder("cpu")) and not pin_for(object())
    assert pin_for(Encoder("cuda")) == torch.cuda.is_available()

    pinned: list[torch.Tensor] = []

    def fake_pin(self: torch.Tensor, *args: Any) -> torch.Tensor:  # no accelerator here
        pinned.append(self)
        return self.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    job = _job(torch.zeros(2, 3, 5, 16, 16, dtype=torch.uint8))
    out = pin_memory(job)  # what DataLoader(pin_memory=True) does to each batch
    assert type(out) is type(job) and out.keys == job.keys and out.entries == job.entries
    assert pinned == [job.pixels] and out.pixels is not job.pixels
    assert torch.equal(out.pixels, job.pixels)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pinned_pixels_reach_the_gpu_encoder_unchanged(vae21: Path) -> None:
    from wan_data.latents.encoder import VaeEncoder

    pixels = torch.randint(0, 256, (1, 3, 5, 32, 32), dtype=torch.uint8)
    encoder = VaeEncoder(vae21, device="cuda", latent_dtype=torch.float32)
    pinned = _job(pixels).pin_memory().pixels
    assert pinned.is_pinned()
    assert torch.equal(encoder.encode(pinned), encoder.encode(pixels))


def test_each_cached_variant_holds_its_own_draw_of_a_random_clip_stage(
    data: Path, vae21: Path, tmp_path: Path
) -> None:
    """Head windows and centre crops cannot vary, yet a flip seeded per epoch does: each
    variant is a key of its own, filled with the draw of its epoch."""
    from wan_data.stages import RandomFlip

    fixed = {**OPTIONS, "sampling": "head", "crop": "center"}
    stages = [RandomFlip(p=0.5, seed=3)]
    ds = WanVideoDataset(
        data, **fixed, vae=vae21, cache_dir=tmp_path / "c", variations=2, clip_stages=stages
    )
    assert all(
        len({sample_key(s, v, ds._decode, ds.cache_spec)[0] for v in (0, 1)}) == 2  # type: ignore[arg-type]
        for s in ds.samples
    )
    assert len(ds.cache_keys()) == 2 * len(ds.cache_keys(0)) == 2 * len(ds.samples)
    assert any(stages[0].flips(s.key, 0) != stages[0].flips(s.key, 1) for s in ds.samples)
    assert ds.prepare(num_workers=0, progress=False)["encoded"] == 2 * len(ds.samples)
    pixels = WanVideoDataset(data, **fixed, clip_stages=stages)
    ds.set_epoch(1)
    pixels.set_epoch(1)
    model, info = load_vae(vae21, device="cpu")
    for batch, pixel_batch in zip(
        ds.loader(num_workers=0), pixels.loader(num_workers=0), strict=True
    ):
        assert batch["keys"] == pixel_batch["keys"]
        with torch.no_grad():
            expected = normalise(model.encode(pixel_batch["pixels"]).latent_dist.mode(), info)
        torch.testing.assert_close(batch["latents"], expected, atol=1e-5, rtol=1e-5)
