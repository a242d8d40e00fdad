"""Importing diffusion-pipe dataset TOMLs (and the training TOMLs that name them).

The example configs are written from diffusion-pipe's documented options: its
``examples/dataset.toml`` and ``examples/main_example.toml``, and the keys ``utils/dataset.py``
reads (tdrussell/diffusion-pipe @ 8f83dbf2).
"""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path
from typing import Any

import pytest
from media import make_image, make_video

import wan_data
from wan_data import ConfigError, WanVideoDataset
from wan_data.config.dataset_config import DatasetConfig
from wan_data.config.importing import (
    MANUAL,
    NO_EQUIVALENT,
    SEMANTICS_DIFFER,
    ImportResult,
    import_config,
    import_diffusion_pipe,
)
from wan_data.sources.concepts import Concept
from wan_data.tools.cli import main

# diffusion-pipe's examples/dataset.toml (its settings verbatim, its comments left out; the
# commented-out alternatives are used in the tests below).
DP_EXAMPLE = """
resolutions = [512]
enable_ar_bucket = true
min_ar = 0.5
max_ar = 2.0
num_ar_buckets = 7
frame_buckets = [1, 33]

[[directory]]
path = '/home/anon/data/images/grayscale'
num_repeats = 1
"""

# Every key utils/dataset.py reads, per-directory overrides of the top-level ones (the
# example's "Directory-level settings will override top-level settings"), and keys that are
# not read where they are written.
DP_OVERRIDES = """
resolutions = [[1280, 720], 512]
enable_ar_bucket = true
min_ar = 0.5
max_ar = 1.5
num_ar_buckets = 9
frame_buckets = [1, 32, 65]
cache_shuffle_num = 3
cache_shuffle_delimiter = ";"
caption_prefix = "sks "
subsample_ratio = 0.5
video_clip_mode = "single_middle"
resolutoins = [256]

[[directory]]
path = "/d/clips"
num_repeats = 2
mask_path = "/d/masks"
shuffle_metadata = false

[[directory]]
path = "/d/stills"
enable_ar_bucket = false
resolutions = [[1280, 720]]
frame_buckets = [1]
ar_buckets = [[512, 512], [448, 576]]
cache_shuffle_num = 0
online_captions = true

[[directory]]
path = "/d/sized"
size_buckets = [[512, 512, 33], [768, 432, 1]]
cache_shuffle_num = 0
skip_empty_caption = false
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _unmapped(result: ImportResult) -> dict[tuple[str, str], tuple[Any, str]]:
    return {(u.where, u.key): (u.value, u.reason) for u in result.unmapped}


def test_documented_example(tmp_path: Path) -> None:
    result = import_diffusion_pipe(_write(tmp_path, "dataset.toml", DP_EXAMPLE))
    assert result.peer == "diffusion_pipe"
    assert result.concepts == [Concept("/home/anon/data/images/grayscale")]
    # 512 is the side of a square area: our 512x512 target, bucketed by aspect within
    # min_ar..max_ar (symmetric: max_aspect 2). The 1-frame bucket is diffusion-pipe's image
    # bucket: ours trains images as one frame anyway. Files without a caption are skipped
    # (skip_empty_caption defaults to true).
    assert result.options == {
        "frames": (33,),
        "max_aspect": 2.0,
        "resolution": ((512, 512),),
        "missing_caption": "skip",
    }
    assert _unmapped(result) == {("top level", "num_ar_buckets"): (7, SEMANTICS_DIFFER)}
    notes = "\n".join(result.notes)
    assert "1 is diffusion-pipe's image bucket" in notes
    assert "skip_empty_caption is not set" in notes and "training config" in notes
    assert "recursively" in notes and "one caption" in notes and "16 fps" in notes
    assert result.command_line() == (
        "wan-data scan /home/anon/data/images/grayscale --missing-caption skip --frames 33 "
        "--resolution 512x512 --max-aspect 2.0"
    )
    assert result.config() == DatasetConfig.build(**result.options)


def test_directory_overrides_and_every_key(tmp_path: Path) -> None:
    result = import_diffusion_pipe(_write(tmp_path, "dataset.toml", DP_OVERRIDES))
    clips_512, clips_720, stills, sized = result.concepts
    # Two resolutions: diffusion-pipe trains every sample at each, so the folder is two
    # concepts, one per area; cache_shuffle_num = 3 makes every file 3 entries of the epoch.
    assert clips_512 == Concept(
        "/d/clips",
        repeats=6,
        options={
            "shuffle_tags": True,
            "frames": (29, 65),
            "max_aspect": 2.0,
            "resolution": ((512, 512),),
        },
    )
    assert clips_720.root == "/d/clips" and clips_720.repeats == 6
    assert clips_720.options["resolution"] == ((1280, 720),)
    # enable_ar_bucket = false: one square bucket of the area (sqrt(1280 * 720) = 960).
    assert stills == Concept(
        "/d/stills",
        options={"frames": (1,), "max_aspect": 1.0, "resolution": ((960, 960),)},
    )
    # size_buckets: not carried over, the entry keeps our defaults.
    assert sized == Concept("/d/sized")
    # Only the clips shuffle (cache_shuffle_num 0 elsewhere); the prefix is everywhere.
    assert clips_720.options["shuffle_tags"] is True
    assert result.options == {"caption_prefix": "sks ", "missing_caption": "skip"}
    unmapped = _unmapped(result)
    assert unmapped == {
        ("top level", "video_clip_mode"): ("single_middle", MANUAL),
        ("top level", "resolutoins"): ([256], NO_EQUIVALENT),
        ("top level", "subsample_ratio"): (0.5, MANUAL),
        ("directory[0]", "mask_path"): ("/d/masks", NO_EQUIVALENT),
        ("directory[0]", "shuffle_metadata"): (False, SEMANTICS_DIFFER),
        ("top level", "cache_shuffle_delimiter"): (";", NO_EQUIVALENT),
        ("top level", "num_ar_buckets"): (9, SEMANTICS_DIFFER),
        ("directory[1]", "online_captions"): (True, NO_EQUIVALENT),
        ("directory[2]", "size_buckets"): ([[512, 512, 33], [768, 432, 1]], NO_EQUIVALENT),
        ("directory[2]", "skip_empty_caption"): (False, MANUAL),
    }
    details = {u.key: u.detail for u in result.unmapped}
    assert "did you mean resolutions" in details["resolutoins"]
    assert "training config" in details["video_clip_mode"]
    assert "frames=(33,)" in details["size_buckets"]
    notes = "\n".join(result.notes)
    assert "frame_buckets: [32] not 4k+1" in notes and "[29, 65]" in notes
    assert "directory[1].frame_buckets = [1] has no bucket above 1" in notes
    assert "directory[1].enable_ar_bucket = false" in notes
    assert "directory[1].ar_buckets: not used" in notes
    assert "min_ar = 0.5, max_ar = 1.5" in notes and "symmetrically" in notes
    assert "each of its 2 resolutions" in notes and "one concept per resolution" in notes
    assert "repeats=6 (num_repeats x cache_shuffle_num)" in notes
    assert "1280x720" not in notes  # on the grid already: no rounding note
    assert result.command_line() is None


def test_rounding_and_caption_notes(tmp_path: Path) -> None:
    text = (
        "resolutions = [500, [830, 470]]\nenable_ar_bucket = true\nar_buckets = [0.25, 1.0]\n"
        "frame_buckets = [33]\nshuffle_tags = true\ncaption_prefix = 'sks'\n"
        "skip_empty_caption = false\n"
        "[[directory]]\npath = 'clips'\n"
    )
    result = import_diffusion_pipe(_write(tmp_path, "d.toml", text))
    first, second = result.concepts
    # Sides on the 16-pixel grid, as diffusion-pipe rounds its buckets' sides.
    assert first.options == {"resolution": ((496, 496),)}
    assert second.options == {"resolution": ((832, 464),)}
    # ar_buckets: the widest aspect of the list (1/0.25) bounds ours: our default 4.0.
    assert result.options == {
        "frames": (33,),
        "caption_prefix": "sks",
        "shuffle_tags": True,
    }
    assert _unmapped(result) == {("top level", "ar_buckets"): ([0.25, 1.0], SEMANTICS_DIFFER)}
    notes = "\n".join(result.notes)
    assert "resolutions: 500 is imported as 496x496" in notes
    assert "[830, 470] is imported as 832x464" in notes
    assert "shuffle_tags: diffusion-pipe caches 1 shuffled copy" in notes
    assert "caption_prefix = 'sks'" in notes and "', '" in notes
    assert "relative paths are kept" in notes


def test_training_config_is_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "dataset.toml", DP_EXAMPLE)
    # examples/main_example.toml's data keys; per-resolution batch sizes as its comment shows.
    training = _write(
        tmp_path,
        "train.toml",
        "output_dir = '/runs'\ndataset = 'dataset.toml'\nepochs = 10\n"
        "micro_batch_size_per_gpu = 2\nimage_micro_batch_size_per_gpu = 8\n"
        "video_clip_mode = 'single_middle'\nuncond_fraction = 0.1\n"
        "eval_datasets = [{name = 'val', config = 'eval.toml'}]\n"
        "[model]\ntype = 'wan'\nckpt_path = '/models/Wan2.1-T2V-1.3B'\n",
    )
    monkeypatch.chdir(tmp_path.parent)  # not found from the working directory: beside it
    result = import_diffusion_pipe(training)
    assert result.source == str(training)
    assert result.concepts == [Concept("/home/anon/data/images/grayscale")]
    assert result.options["sampling"] == "middle"
    assert result.options["batch_size"] == 2
    assert result.options["frame_batch_sizes"] == ((1, 8),)
    unmapped = _unmapped(result)
    assert unmapped[("training config", "uncond_fraction")] == (0.1, MANUAL)
    assert unmapped[("training config eval_datasets[0]", "eval_datasets")][1] == MANUAL
    notes = "\n".join(result.notes)
    assert f"names the dataset file {tmp_path / 'dataset.toml'}" in notes
    assert "other keys" in notes
    assert result.command_line() == (
        "wan-data scan /home/anon/data/images/grayscale --missing-caption skip --frames 33 "
        "--resolution 512x512 --max-aspect 2.0 --sampling middle --batch-size 2 "
        "--frame-batch-sizes 1:8"
    )
    # Per-resolution batch sizes: the entry nearest each concept's resolution.
    _write(tmp_path, "two.toml", DP_EXAMPLE.replace("[512]", "[512, 1024]"))
    text = "dataset = 'two.toml'\nmicro_batch_size_per_gpu = [[512, 4], [1024, 1]]\n"
    result = import_diffusion_pipe(_write(tmp_path, "train2.toml", text))
    assert [c.batch_size for c in result.concepts] == [4, 1]
    # multiple_overlapping: refused at the checked commit, imported as its older meaning.
    text = "dataset = 'dataset.toml'\nvideo_clip_mode = 'multiple_overlapping'\n"
    result = import_diffusion_pipe(_write(tmp_path, "train3.toml", text))
    assert result.options["sampling"] == "overlapping"
    assert result.options["clips_per_video"] == 0


def test_text_is_accepted() -> None:
    result = import_diffusion_pipe(DP_EXAMPLE)
    assert result.source == "<text>"
    assert result.concepts == [Concept("/home/anon/data/images/grayscale")]


def test_malformed_file_lists_every_problem(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "bad.toml",
        "resolutions = 512\nenable_ar_bucket = 'yes'\nnum_repeats = 0\nframe_buckets = [0]\n"
        "cache_shuffle_num = -1\nsubsample_ratio = 2\n"
        "[[directory]]\npath = 3\n"
        "[[directory]]\nnum_repeats = 2\n"
        "[[directory]]\npath = '/ok'\nenable_ar_bucket = true\nmin_ar = 2.0\nmax_ar = 1.0\n"
        "ar_buckets = 'square'\nresolutions = [[512]]\nsize_buckets = [[1, 2]]\n",
    )
    with pytest.raises(ConfigError) as info:
        import_diffusion_pipe(path)
    problems = info.value.problems
    text = "\n".join(problems)
    assert all(f"file={path}" in p for p in problems)
    for expected in (
        "resolutions (512) must be a non-empty list of side lengths or [width, height] pairs",
        "enable_ar_bucket ('yes') must be true or false",
        "num_repeats (0) must be a number > 0",
        "frame_buckets ([0]) must be a non-empty list of frame counts >= 1",
        "cache_shuffle_num (-1) must be an integer >= 0",
        "subsample_ratio (2) must be a number in (0, 1]",
        "directory[0].path (3) must be a string",
        "directory[1].path ('missing') must name the folder",
        "directory[2].ar_buckets ('square') must be a non-empty list of aspects",
        "directory[2].resolutions ([[512]]) must be a non-empty list",
        "directory[2].size_buckets ([[1, 2]]) must be a non-empty list of [width, height, frames]",
    ):
        assert expected in text
    assert len(problems) == 11
    # What diffusion-pipe has no default for.
    path = _write(
        tmp_path,
        "missing.toml",
        "enable_ar_bucket = true\nmin_ar = 2.0\nmax_ar = 1.0\n[[directory]]\npath = '/a'\n",
    )
    with pytest.raises(ConfigError) as info:
        import_diffusion_pipe(path)
    text = "\n".join(info.value.problems)
    assert "directory[0].resolutions ('missing') must be set" in text
    assert "directory[0].num_ar_buckets ('missing') must be set with enable_ar_bucket" in text
    assert "directory[0].min_ar (2.0) must not exceed max_ar (1.0)" in text
    assert len(info.value.problems) == 3


def test_unreadable_invalid_and_empty(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="could not be read"):
        import_diffusion_pipe(tmp_path / "missing.toml")
    path = _write(tmp_path, "broken.toml", "resolutions = [512\n")
    with pytest.raises(ConfigError, match="is not valid TOML") as info:
        import_diffusion_pipe(path)
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match=r"directory \('missing'\) must be one or more"):
        import_diffusion_pipe(_write(tmp_path, "empty.toml", "resolutions = [512]\n"))
    path = _write(tmp_path, "train.toml", "dataset = 'nowhere.toml'\n")
    with pytest.raises(ConfigError, match=r"dataset \('nowhere.toml'\) names no readable file"):
        import_diffusion_pipe(path)
    _write(tmp_path, "d.toml", DP_EXAMPLE)
    path = _write(tmp_path, "t.toml", "dataset = 'd.toml'\nvideo_clip_mode = 'all'\n")
    with pytest.raises(ConfigError, match=r"video_clip_mode \('all'\) must be one of"):
        import_diffusion_pipe(path)


# -- the snippet builds the same dataset ---------------------------------------------------


class _Recorder:
    """Stands in for WanVideoDataset: keeps what the snippet passes."""

    def __init__(self, roots: Any, **options: Any) -> None:
        self.roots = roots
        self.options = options


@pytest.mark.parametrize("text", [DP_EXAMPLE, DP_OVERRIDES], ids=["example", "overrides"])
def test_snippet_builds_the_same_config(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = import_diffusion_pipe(_write(tmp_path, "dataset.toml", text))
    monkeypatch.setattr(wan_data, "WanVideoDataset", _Recorder)
    namespace: dict[str, Any] = {}
    exec(result.python_code(), namespace)
    recorded = namespace["dataset"]
    assert recorded.roots == result.concepts
    assert DatasetConfig.build(**recorded.options) == result.config()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dp_importer")
    for i in range(2):
        make_video(root / "clips" / f"v{i}.mp4", width=32, height=32, fps=16, num_frames=12)
        (root / "clips" / f"v{i}.txt").write_text(f"clip {i}")
    make_image(root / "clips" / "s0.png", width=48, height=32)
    (root / "clips" / "s0.txt").write_text("still")
    make_image(root / "clips" / "uncaptioned.png", width=32, height=32)
    old = time.time() - 3600
    for path in root.rglob("*"):
        os.utime(path, (old, old))
    return root


@pytest.mark.integration
def test_snippet_builds_the_dataset(tmp_path: Path, media: Path) -> None:
    path = _write(
        tmp_path,
        "dataset.toml",
        f"resolutions = [32]\nenable_ar_bucket = true\nmin_ar = 0.5\nmax_ar = 2.0\n"
        f"num_ar_buckets = 3\nframe_buckets = [1, 9]\n"
        f"[[directory]]\npath = '{media / 'clips'}'\nnum_repeats = 2\n",
    )
    result = import_diffusion_pipe(path)
    namespace: dict[str, Any] = {}
    exec(result.python_code(), namespace)
    dataset = namespace["dataset"]
    assert isinstance(dataset, WanVideoDataset)
    assert dataset.config == result.config()
    assert dataset.concepts[0].repeats == 2
    batches = list(dataset)
    shapes = {tuple(b["pixels"].shape[1:3]) for b in batches}
    assert shapes == {(3, 9), (3, 1)}  # the 12-frame clips at 9 frames, the image at 1
    paths = [p for b in batches for p in b["paths"]]
    # The uncaptioned image is skipped (skip_empty_caption's default); two of the rest each.
    assert len(paths) == 2 * 3 and not any("uncaptioned" in p for p in paths)


# -- wan-data import diffusion-pipe --------------------------------------------------------


def test_cli_prints_python_command_line_and_unmapped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "dataset.toml", DP_EXAMPLE)
    assert main(["import", "diffusion-pipe", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# {path} (diffusion_pipe) as a WanVideoDataset:")
    assert "dataset = WanVideoDataset(" in out and "max_aspect=2.0," in out
    assert "# the same on the command line:" in out
    words = shlex.split(next(line for line in out.splitlines() if line.startswith("wan-data")))
    assert words[:3] == ["wan-data", "scan", "/home/anon/data/images/grayscale"]
    assert "# not carried over (1):" in out and "num_ar_buckets = 7" in out
    assert main(["import", "diffusion-pipe", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["peer"] == "diffusion_pipe" and data["options"]["frames"] == [33]
    assert data["unmapped"][0]["reason"] == SEMANTICS_DIFFER
    assert data["command_line"].startswith("wan-data scan ")


def test_cli_malformed_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "bad.toml", "resolutions = 'big'\n[[directory]]\nnum_repeats = 'x'\n")
    assert main(["import", "diffusion-pipe", str(path)]) == 2
    err = capsys.readouterr().err
    assert "3 configuration problems" in err and "num_repeats" in err and "resolutions" in err
    good = _write(tmp_path, "good.toml", DP_EXAMPLE)
    assert main(["import", "diffusion-pipe", str(good), "--vae", "/v"]) == 2
    assert "musubi configs only" in capsys.readouterr().err


def test_import_config_dispatches(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.toml", DP_EXAMPLE)
    assert import_config("diffusion-pipe", path).concepts == [
        Concept("/home/anon/data/images/grayscale")
    ]
    with pytest.raises(ConfigError, match="must be one of musubi, onetrainer, diffusion-pipe"):
        import_config("diffusion_pipe", path)
