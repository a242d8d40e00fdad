"""synthetic.py: the demo / benchmark dataset written with torchcodec's encoder."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wan_data.failures.policy import ErrorPolicy
from wan_data.items import Bucket, Clip, Failed, Probed, Source
from wan_data.stages.decode import DecodeOptions, decode
from wan_data.stages.probe import ProbeLimits, probe
from wan_data.tools.synthetic import (
    TINY_VAE_VARIANTS,
    SyntheticFile,
    build_tiny_wan_vae,
    make_clip_tensor,
    make_synthetic_dataset,
    make_tiny_wan_vae,
    tiny_latent_stats,
    tiny_wan_vae_config,
)

torchcodec_decoders = pytest.importorskip("torchcodec.decoders")
VideoDecoder = torchcodec_decoders.VideoDecoder

SIZES = ((96, 64), (64, 96), (80, 80))
FPS = (24.0, 25.0, 30.0)
SECONDS = 1.2


def _make(root: Path, seed: int = 5, **kwargs: object) -> list[SyntheticFile]:
    options: dict[str, object] = {
        "num_videos": 4,
        "seconds": SECONDS,
        "seed": seed,
        "sizes": SIZES,
        "fps_choices": FPS,
    }
    options.update(kwargs)
    return make_synthetic_dataset(root, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SyntheticFile]]:
    root = tmp_path_factory.mktemp("synthetic")
    return root, _make(root)


def _digests(files: list[SyntheticFile], root: Path) -> dict[str, str]:
    out = {}
    for f in files:
        out[str(f.path.relative_to(root))] = hashlib.sha256(f.path.read_bytes()).hexdigest()
        caption = f.path.with_suffix(".txt")
        if caption.exists():
            out[str(caption.relative_to(root))] = caption.read_text()
    return out


def test_writes_the_declared_files(dataset: tuple[Path, list[SyntheticFile]]) -> None:
    root, files = dataset
    relative = [str(f.path.relative_to(root)) for f in files]
    assert relative == [
        "videos/clip_000.mp4",
        "videos/clip_001.mp4",
        "videos/clip_002.mp4",
        "videos/clip_003.mp4",
        "broken/empty.mp4",
        "broken/random_bytes.mp4",
        "broken/notes.mp4",
        "broken/truncated.mp4",
    ]
    assert [f.good for f in files] == [True] * 4 + [False] * 4
    assert all(f.reason is None for f in files[:4])
    assert all(f.reason == "unreadable" for f in files[4:])
    for f in files:
        assert f.path.is_file(), f.path
    assert files[4].path.stat().st_size == 0
    assert files[5].path.stat().st_size == 8192
    # Nothing undeclared besides the caption sidecars.
    on_disk = {p for p in root.rglob("*") if p.is_file() and p.suffix != ".txt"}
    assert on_disk == {f.path for f in files}


def test_captions_are_written_next_to_good_videos(
    dataset: tuple[Path, list[SyntheticFile]],
) -> None:
    _, files = dataset
    for i, f in enumerate(files[:4]):
        lines = f.path.with_suffix(".txt").read_text().splitlines()
        assert len(lines) == 2, lines
        assert lines[0].endswith(" moving")
        assert lines[1].endswith(f"synthetic clip {i}")
        assert lines[0].removesuffix(" moving") in lines[1]
    assert not any(f.path.with_suffix(".txt").exists() for f in files[4:])


def test_good_videos_have_the_stated_sizes_rates_and_lengths(
    dataset: tuple[Path, list[SyntheticFile]],
) -> None:
    _, files = dataset
    for i, f in enumerate(files[:4]):
        meta = VideoDecoder(str(f.path), seek_mode="exact").metadata
        width, height = SIZES[i % len(SIZES)]
        fps = FPS[i % len(FPS)]
        assert (meta.width, meta.height) == (width, height), f.path
        assert meta.average_fps == pytest.approx(fps, rel=1e-3), f.path
        assert meta.num_frames == round(SECONDS * fps), f.path


def test_good_videos_decode_through_the_pipeline(
    dataset: tuple[Path, list[SyntheticFile]],
) -> None:
    root, files = dataset
    sources = [
        Source(key=str(f.path.relative_to(root)), path=str(f.path), media_type="video")
        for f in files
    ]
    policy = ErrorPolicy()
    probed = list(probe(sources, policy=policy, limits=ProbeLimits(min_frames=17)))
    for f, item in zip(files, probed, strict=True):
        if f.good:
            assert isinstance(item, Probed), item
        else:
            assert isinstance(item, Failed), item
            assert item.reason == f.reason, (f.path, item.reason, item.message)
            assert item.stage == "probe"
    options = DecodeOptions(frames=(5, 17), fps=16.0, buckets=((48, 32), (32, 48), (48, 48)))
    clips = list(decode(probed, policy=policy, options=options))
    expected = [Bucket(17, 48, 32), Bucket(17, 32, 48), Bucket(17, 48, 48), Bucket(17, 48, 32)]
    good = [c for c in clips if isinstance(c, Clip)]
    assert [c.bucket for c in good] == expected
    for clip in good:
        assert clip.pixels.dtype == torch.uint8
        # The pattern moves: first and last frames differ.
        assert (clip.pixels[0].float() - clip.pixels[-1].float()).abs().mean() > 5
    assert sum(isinstance(c, Failed) for c in clips) == 4


def test_broken_files_fail_to_open(dataset: tuple[Path, list[SyntheticFile]]) -> None:
    _, files = dataset
    for f in files[4:]:
        with pytest.raises(RuntimeError, match="Could not open input file"):
            VideoDecoder(str(f.path))


def test_same_seed_writes_the_same_bytes(
    tmp_path: Path, dataset: tuple[Path, list[SyntheticFile]]
) -> None:
    root, files = dataset
    again = _make(tmp_path / "again")
    assert _digests(again, tmp_path / "again") == _digests(files, root)
    other = _make(tmp_path / "other", seed=6)
    a, b = _digests(files, root), _digests(other, tmp_path / "other")
    assert a.keys() == b.keys()
    assert a["broken/random_bytes.mp4"] != b["broken/random_bytes.mp4"]
    assert a["videos/clip_000.mp4"] != b["videos/clip_000.mp4"]
    assert a["broken/notes.mp4"] == b["broken/notes.mp4"]


def test_without_broken_files(tmp_path: Path) -> None:
    files = make_synthetic_dataset(tmp_path, num_videos=1, seconds=0.5, broken=False)
    assert [f.path.name for f in files] == ["clip_000.mp4"]
    assert files[0].good
    assert not (tmp_path / "broken").exists()
    meta = VideoDecoder(str(files[0].path)).metadata
    assert (meta.width, meta.height, meta.num_frames) == (192, 108, 12)  # defaults: 24 fps


def test_make_clip_tensor() -> None:
    a = make_clip_tensor(6, 40, 24, seed=1)
    assert a.dtype == torch.uint8 and tuple(a.shape) == (6, 3, 24, 40)
    assert torch.equal(a, make_clip_tensor(6, 40, 24, seed=1))
    assert not torch.equal(a, make_clip_tensor(6, 40, 24, seed=2))
    assert not torch.equal(a[0], a[1])  # motion
    clean = make_clip_tensor(6, 40, 24, noise=0)
    noisy_diff = (a.int() - clean.int()).abs()
    assert 0 < noisy_diff.max().item() <= 8
    assert torch.equal(clean, make_clip_tensor(6, 40, 24, seed=99, noise=0))


# -- the tiny Wan VAE -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "z_dim", "spatial", "parameters"),
    [("wan2.1", 16, 8, 13_861), ("wan2.2", 48, 16, 34_146)],
)
def test_tiny_vae_loads_from_disk_and_encodes(
    tmp_path: Path, variant: str, z_dim: int, spatial: int, parameters: int
) -> None:
    from diffusers import AutoencoderKLWan

    folder = make_tiny_wan_vae(tmp_path / variant, variant=variant, seed=1)
    assert folder == tmp_path / variant
    config = json.loads((folder / "config.json").read_text())
    assert config["_class_name"] == "AutoencoderKLWan"
    assert config["z_dim"] == z_dim and config["base_dim"] == 3
    mean, std = tiny_latent_stats(z_dim, 1 + 1000)
    assert config["latents_mean"] == mean and config["latents_std"] == std
    vae = AutoencoderKLWan.from_pretrained(folder)
    assert sum(p.numel() for p in vae.parameters()) == parameters
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 3, 5, 32, 32)).latent_dist.mode()
    assert tuple(z.shape) == (1, z_dim, 2, 32 // spatial, 32 // spatial)


def test_tiny_vae_is_seeded_and_leaves_the_global_generator_alone() -> None:
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    a = build_tiny_wan_vae(seed=0)
    assert torch.equal(torch.rand(3), expected)
    b = build_tiny_wan_vae(seed=0)
    c = build_tiny_wan_vae(seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_tiny_latent_stats_are_distinct_and_non_trivial() -> None:
    mean, std = tiny_latent_stats(16, 3)
    assert len(set(mean)) == 16 and len(set(std)) == 16
    assert all(-0.5 <= m <= 0.5 for m in mean) and all(0.5 <= s <= 2.0 for s in std)
    assert tiny_latent_stats(16, 3) == (mean, std) != tiny_latent_stats(16, 4)


def test_tiny_vae_config_is_a_copy_and_rejects_unknown_variants() -> None:
    assert TINY_VAE_VARIANTS == ("wan2.1", "wan2.2")
    config = tiny_wan_vae_config("wan2.1")
    config["dim_mult"].append(9)
    assert tiny_wan_vae_config("wan2.1")["dim_mult"] == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="'wan3'"):
        tiny_wan_vae_config("wan3")


def test_importing_wan_data_does_not_import_diffusers() -> None:
    code = (
        "import sys, wan_data, wan_data.tools.synthetic, wan_data.tools.cli; "
        "print('diffusers' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
