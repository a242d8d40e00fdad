"""Importing musubi-tuner dataset TOMLs and OneTrainer concepts files.

The example configs are written from the peers' documented options: musubi-tuner's
``docs/dataset_config.md`` and ``src/musubi_tuner/dataset/config_utils.py`` (kohya-ss/musubi-tuner
@ 30c658c4), OneTrainer's ``modules/util/config/ConceptConfig.py`` (Nerogar/OneTrainer
@ 23df3832).
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

from wan_data import ConfigError, WanVideoDataset
from wan_data.config.importing import (
    MANUAL,
    NO_EQUIVALENT,
    SEMANTICS_DIFFER,
    ImportResult,
    StageSpec,
    import_config,
    import_musubi,
    import_onetrainer,
)
from wan_data.sources.concepts import Concept
from wan_data.tools.cli import main

# docs/dataset_config.md, "Sample for Video Dataset with Caption Text Files" (verbatim but for
# the comments).
MUSUBI_VIDEO_SAMPLE = """
[general]
resolution = [960, 544]
caption_extension = ".txt"
batch_size = 1
enable_bucket = true
bucket_no_upscale = false

[[datasets]]
video_directory = "/path/to/video_dir"
cache_directory = "/path/to/cache_directory"
target_frames = [1, 25, 45]
frame_extraction = "head"
source_fps = 30.0

[[datasets]]
video_directory = "/path/to/video_dir2"
cache_directory = "/path/to/cache_directory2"
frame_extraction = "full"
max_frames = 45
"""

# Every frame_extraction mode of docs/dataset_config.md ("frame_extraction Options"), datasets
# that differ in batch_size / caption_extension / bucket_no_upscale, an image dataset, a
# metadata JSONL dataset and keys ours has no equivalent for (config_utils.py schemas).
MUSUBI_MODES = """
[general]
resolution = 512
caption_extension = ".txt"
num_repeats = 2

[[datasets]]
video_directory = "/v/chunk"
target_frames = [13, 25]
frame_extraction = "chunk"
batch_size = 2

[[datasets]]
video_directory = "/v/slide"
target_frames = [1, 13, 25]
frame_extraction = "slide"
frame_stride = 10
caption_extension = ".caption"

[[datasets]]
video_directory = "/v/uniform"
target_frames = [30]
frame_extraction = "uniform"
frame_sample = 4
bucket_no_upscale = true

[[datasets]]
image_directory = "/i/stills"
control_directory = "/i/control"
num_repeats = 3

[[datasets]]
video_jsonl_file = "/m/metadata.jsonl"
cache_directory = "/c/stride"
target_frames = [1]
frame_stride = 10
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _unmapped(result: ImportResult) -> dict[tuple[str, str], tuple[Any, str]]:
    return {(u.where, u.key): (u.value, u.reason) for u in result.unmapped}


# -- musubi-tuner --------------------------------------------------------------------------


def test_musubi_documented_video_sample(tmp_path: Path) -> None:
    result = import_musubi(_write(tmp_path, "dataset.toml", MUSUBI_VIDEO_SAMPLE))
    first, second = result.concepts
    # sampling 'head' and fps 16 (source_fps resamples to Wan's 16) are our defaults.
    assert first == Concept("/path/to/video_dir", options={"frames": (1, 25, 45)})
    # 'full' up to max_frames 45: every 4k+1 count is a bucket; no source_fps: native rate.
    assert second.options == {
        "frames": tuple(range(1, 46, 4)),
        "sampling": "full",
        "fps": None,
    }
    # Shared by both datasets: dataset level. batch_size 1, '.txt' and no_upscale=False are
    # our defaults, so no option is needed.
    assert result.options == {"resolution": ((960, 544),)}
    # cache_directory needs a VAE in ours.
    assert _unmapped(result) == {
        ("datasets[0]", "cache_directory"): ("/path/to/cache_directory", MANUAL),
        ("datasets[1]", "cache_directory"): ("/path/to/cache_directory2", MANUAL),
    }
    notes = "\n".join(result.notes)
    assert "source_fps = 30.0" in notes and "16 fps" in notes
    assert "'full'" in notes and "enable_bucket = true" in notes
    assert "recursively" in notes and "one caption" in notes
    assert result.command_line() is None
    assert any("sets options" in p for p in result.command_line_problems())


def test_musubi_every_mode_and_per_dataset_values(tmp_path: Path) -> None:
    result = import_musubi(_write(tmp_path, "dataset.toml", MUSUBI_MODES))
    chunk, slide, uniform, stills, jsonl = result.concepts
    # num_repeats from [general], overridden by the image dataset.
    assert [c.repeats for c in result.concepts] == [2, 2, 2, 3, 2]
    # batch_size differs between datasets: Concept.batch_size each.
    assert [c.batch_size for c in result.concepts] == [2, 1, 1, 1, 1]
    assert chunk.options == {"frames": (13, 25), "sampling": "chunks", "clips_per_video": 0}
    # frame_stride is our stride: only 'slide' uses it, so it is set for the dataset.
    assert slide.options == {"frames": (1, 13, 25), "sampling": "slide", "clips_per_video": 0}
    # 30 is not 4k+1: musubi rounds it down to 29.
    assert uniform.options == {
        "frames": (29,),
        "sampling": "uniform",
        "clips_per_video": 4,
        "no_upscale": True,
    }
    assert stills.root == "/i/stills" and stills.options == {}
    assert jsonl.options == {"frames": (1,)}
    # The same everywhere: dataset level (scalar resolution = a square, no source_fps = native).
    assert result.options == {"resolution": ((512, 512),), "fps": None, "stride": 10}
    unmapped = _unmapped(result)
    assert unmapped[("datasets[1]", "caption_extension")] == (".caption", MANUAL)
    assert unmapped[("datasets[3]", "control_directory")] == ("/i/control", NO_EQUIVALENT)
    assert unmapped[("musubi default", "enable_bucket")] == (False, SEMANTICS_DIFFER)
    assert unmapped[("datasets[4]", "cache_directory")] == ("/c/stride", MANUAL)
    assert len(unmapped) == 4
    notes = "\n".join(result.notes)
    assert "[30] not 4k+1" in notes and "[29]" in notes
    assert "datasets[4].frame_stride: used by musubi only with 'slide'" in notes
    assert "video_path" in notes  # the JSONL key to rename
    assert "every target_frames length" in notes


def test_musubi_defaults_are_musubis(tmp_path: Path) -> None:
    # config_utils.py BaseDatasetParams / VideoDatasetParams: resolution (960, 544),
    # target_frames (1,), frame_extraction 'head', uniform with frame_sample 1 = head.
    path = _write(
        tmp_path,
        "d.toml",
        '[[datasets]]\nvideo_directory = "/v"\nframe_extraction = "uniform"\n',
    )
    result = import_musubi(path)
    assert result.concepts == [Concept("/v")]
    assert result.options == {"resolution": ((960, 544),), "frames": (1,), "fps": None}
    notes = "\n".join(result.notes)
    assert "frame_sample=1 is 'head'" in notes and "default [1]" in notes
    assert "caption_extension is not set" in notes


def test_musubi_with_a_vae_maps_the_cache_and_has_a_command_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "d.toml",
        "[general]\nresolution = [832, 480]\nbatch_size = 2\nenable_bucket = true\n"
        '[[datasets]]\nvideo_directory = "/v"\ncache_directory = "/cache"\n'
        "target_frames = [17, 33]\n",
    )
    result = import_musubi(path, vae="/models/vae")
    assert result.options == {
        "frames": (17, 33),
        "fps": None,
        "batch_size": 2,
        "vae": "/models/vae",
        "cache_dir": "/cache",
    }
    assert result.unmapped == []
    line = result.command_line()
    assert line is not None
    words = shlex.split(line)
    assert words[:3] == ["wan-data", "cache", "/v"]
    for flag in ("--frames", "--fps", "--batch-size", "--vae", "--cache-dir"):
        assert flag in words
    assert words[words.index("--fps") + 1] == "native"


def test_musubi_malformed_file_lists_every_problem(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "bad.toml",
        "[general]\nresolution = 'big'\ntarget_frames = [17]\n"
        "[[datasets]]\nvideo_directory = 3\nframe_extraction = 'every'\nnum_repeat = 2\n"
        "[[datasets]]\ncache_directory = '/c'\n"
        "[extra]\nx = 1\n",
    )
    with pytest.raises(ConfigError) as info:
        import_musubi(path)
    problems = info.value.problems
    text = "\n".join(problems)
    assert all(f"file={path}" in p for p in problems)
    assert "general.resolution ('big') must be an integer or [width, height]" in text
    assert "general.target_frames" in text and "[general] takes only" in text
    assert "datasets[0].video_directory (3) must be a string" in text
    assert "datasets[0].frame_extraction ('every') must be one of head, chunk" in text
    assert "datasets[0].num_repeat" in text and "did you mean num_repeats" in text
    assert "datasets[1] ('no media') must name exactly one of" in text
    assert "extra" in text
    assert len(problems) == 7


def test_musubi_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="could not be read"):
        import_musubi(tmp_path / "missing.toml")
    path = _write(tmp_path, "broken.toml", "[general\nresolution = 1\n")
    with pytest.raises(ConfigError, match="is not valid TOML") as info:
        import_musubi(path)
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match="must be one or more"):
        import_musubi(_write(tmp_path, "empty.toml", "[general]\nbatch_size = 1\n"))


# -- OneTrainer ----------------------------------------------------------------------------


def _concept(**values: Any) -> dict[str, Any]:
    """A concept as OneTrainer writes it (ConceptConfig.to_dict: every key, __version 2)."""
    concept: dict[str, Any] = {
        "__version": 2,
        "image": {"enable_crop_jitter": True, "enable_random_flip": False},
        "text": {"prompt_source": "sample", "prompt_path": "", "enable_tag_shuffling": False},
        "name": "",
        "path": "/data/x",
        "seed": 123,
        "enabled": True,
        "type": "STANDARD",
        "include_subdirectories": True,
        "image_variations": 1,
        "text_variations": 1,
        "balancing": 1.0,
        "balancing_strategy": "REPEATS",
        "loss_weight": 1.0,
        "concept_stats": {},
    }
    for key, value in values.items():
        if key in ("image", "text"):
            concept[key] = {**concept[key], **value}
        else:
            concept[key] = value
    return concept


def _json(tmp_path: Path, concepts: Any) -> Path:
    path = tmp_path / "concepts.json"
    path.write_text(json.dumps(concepts))
    return path


def test_onetrainer_concepts(tmp_path: Path) -> None:
    prompts = _write(tmp_path, "prompts.txt", "a photo of sks\n\nsks, outdoors\n")
    concepts = [
        _concept(
            name="style",
            path="/data/style",
            balancing=2.5,
            loss_weight=0.5,
            image={
                "enable_random_flip": True,
                "enable_random_brightness": True,
                "random_brightness_max_strength": 0.2,
                "enable_random_hue": True,
                "random_hue_max_strength": 0.1,
                "enable_resolution_override": True,
                "resolution_override": "512x768",
            },
            text={"enable_tag_shuffling": True, "keep_tags_count": 2, "tag_delimiter": ";"},
        ),
        _concept(
            name="char",  # differs from the folder name: kept
            path="/data/character",
            balancing=40,
            balancing_strategy="SAMPLES",
            include_subdirectories=False,
            image={
                "enable_random_flip": True,
                "enable_random_brightness": True,
                "random_brightness_max_strength": 0.2,
                "enable_random_hue": True,
                "random_hue_max_strength": 0.1,
                "enable_random_rotate": True,
            },
            text={
                "prompt_source": "concept",
                "prompt_path": str(prompts),
                "tag_dropout_enable": True,
                "tag_dropout_probability": 0.1,
                "tag_dropout_mode": "RANDOM",
            },
        ),
        _concept(name="off", path="/data/off", enabled=False),
        _concept(name="val", path="/data/val", type="VALIDATION"),
        _concept(name="prior", path="/data/prior", type="PRIOR_PREDICTION"),
    ]
    result = import_onetrainer(_json(tmp_path, concepts))
    style, char = result.concepts
    assert style == Concept(
        "/data/style",
        repeats=2.5,
        name=None,  # 'style' is the folder's name: the default
        loss_weight=0.5,
        options={"resolution": ((512, 768),), "shuffle_tags": True, "keep_tokens": 2},
    )
    assert char == Concept(
        "/data/character",
        name="char",
        samples_per_epoch=40,
        caption="a photo of sks\nsks, outdoors",
        options={"tag_dropout": 0.1, "keep_tokens": 1},  # OneTrainer's default keep is 1
    )
    # Crop jitter (on by default in OneTrainer) in both: dataset level.
    assert result.options == {"crop": "random"}
    # Both concepts flip and jitter alike: one stage each; OneTrainer's hue strength is twice
    # our hue.
    assert result.stages == [
        StageSpec("RandomFlip", {"p": 0.5}),
        StageSpec("ColorJitter", {"brightness": 0.2, "hue": 0.05}),
    ]
    unmapped = _unmapped(result)
    assert unmapped[("[0]", "seed")] == (123, SEMANTICS_DIFFER)
    assert unmapped[("[0].text", "text.tag_delimiter")] == (";", NO_EQUIVALENT)
    assert unmapped[("[1]", "include_subdirectories")] == (False, SEMANTICS_DIFFER)
    assert unmapped[("[1].image", "image.enable_random_rotate")] == (True, NO_EQUIVALENT)
    assert unmapped[("[1].text", "text.tag_dropout_mode")] == ("RANDOM", SEMANTICS_DIFFER)
    assert unmapped[("[3]", "type")] == ("VALIDATION", MANUAL)
    assert unmapped[("[4]", "type")] == ("PRIOR_PREDICTION", MANUAL)
    assert "val_fraction" in next(u.detail for u in result.unmapped if u.value == "VALIDATION")
    assert unmapped[("[1]", "seed")] == (123, SEMANTICS_DIFFER)
    assert len(unmapped) == 8
    notes = "\n".join(result.notes)
    assert "[2] (off): enabled = false, skipped" in notes
    assert "prompt_source = 'concept'" in notes and "training config" in notes
    assert result.command_line() is None
    code = result.python_code()
    assert "from wan_data.stages.augment import ColorJitter, RandomFlip" in code
    assert "clip_stages=[RandomFlip(p=0.5), ColorJitter(brightness=0.2, hue=0.05)]" in code


def test_onetrainer_differing_and_legacy_concepts(tmp_path: Path) -> None:
    # __version 0 files call balancing 'repeats'; version 1 has validation_concept (the
    # ConceptConfig migrations).
    concepts = [
        {"path": "/a", "repeats": 3.0, "image": {"enable_random_flip": True}},
        {"__version": 1, "path": "/b", "validation_concept": False, "image_variations": 2},
        {"__version": 1, "path": "/c", "validation_concept": True},
        {"path": "/d", "text": {"prompt_source": "filename"}, "my_key": 1},
    ]
    result = import_onetrainer(_json(tmp_path, concepts))
    assert [c.root for c in result.concepts] == ["/a", "/b", "/d"]
    assert result.concepts[0].repeats == 3.0
    assert result.stages == [] and "missing_caption" not in result.options
    unmapped = _unmapped(result)
    assert unmapped[("[0]", "image.enable_random_flip")] == (True, MANUAL)
    assert unmapped[("[1]", "image.enable_random_flip")] == (False, MANUAL)
    assert unmapped[("[1]", "image_variations")] == (2, MANUAL)
    assert unmapped[("[2]", "type")] == ("VALIDATION", MANUAL)
    assert unmapped[("[3]", "text.prompt_source")] == ("filename", MANUAL)
    assert unmapped[("[3]", "my_key")] == (1, NO_EQUIVALENT)


def test_onetrainer_plain_concepts_have_a_command_line(tmp_path: Path) -> None:
    concepts = [
        _concept(
            path="/data/a", image={"enable_crop_jitter": False}, text={"prompt_source": "filename"}
        ),
        _concept(
            path="/data/b", image={"enable_crop_jitter": False}, text={"prompt_source": "filename"}
        ),
    ]
    result = import_onetrainer(_json(tmp_path, concepts))
    assert result.options == {"missing_caption": "filename"}
    assert result.command_line() == "wan-data scan /data/a /data/b --missing-caption filename"


def test_onetrainer_malformed_file_lists_every_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be a JSON list"):
        import_onetrainer(_json(tmp_path, {"concepts": []}))
    bad = [
        {"path": "", "balancing": "2"},
        {"path": "/x", "type": "TRAIN", "loss_weight": -1, "image": {"enable_random_flip": "yes"}},
        {"path": "/y", "text": {"prompt_source": "caption"}, "balancing_strategy": "SOMETIMES"},
        7,
    ]
    path = _json(tmp_path, bad)
    with pytest.raises(ConfigError) as info:
        import_onetrainer(path)
    problems = info.value.problems
    text = "\n".join(problems)
    assert all(f"file={path}" in p for p in problems)
    for expected in (
        "[0].path ('') must name the concept's folder",
        "[0].balancing ('2') must be a number",
        "[1].type ('TRAIN') must be one of STANDARD, VALIDATION, PRIOR_PREDICTION",
        "[1].loss_weight (-1) must be >= 0",
        "[1].image.enable_random_flip ('yes') must be true or false",
        "[2].text.prompt_source ('caption') must be one of sample, concept, filename",
        "[2].balancing_strategy ('SOMETIMES') must be one of REPEATS, SAMPLES",
        "[3] ('int') must be a concept object",
    ):
        assert expected in text
    assert len(problems) == 8
    with pytest.raises(ConfigError, match="no enabled STANDARD concept"):
        import_onetrainer(_json(tmp_path, [{"path": "/v", "enabled": False}]))
    with pytest.raises(ConfigError, match="not valid JSON"):
        import_onetrainer(_write(tmp_path, "c.json", "[{"))


# -- the snippets build datasets -----------------------------------------------------------


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("importers")
    for i in range(3):
        make_video(root / "clips" / f"v{i}.mp4", width=32, height=32, fps=8, num_frames=12)
        (root / "clips" / f"v{i}.txt").write_text(f"clip {i}")
    for i in range(2):
        make_image(root / "stills" / f"s{i}.png", width=32, height=32)
    old = time.time() - 3600
    for path in root.rglob("*"):
        os.utime(path, (old, old))
    return root


def _exec(result: ImportResult) -> WanVideoDataset:
    namespace: dict[str, Any] = {}
    exec(result.python_code(), namespace)
    dataset = namespace["dataset"]
    assert isinstance(dataset, WanVideoDataset)
    return dataset


@pytest.mark.integration
def test_musubi_snippet_builds_the_dataset(tmp_path: Path, media: Path) -> None:
    path = _write(
        tmp_path,
        "dataset.toml",
        f"""
[general]
resolution = [32, 32]
caption_extension = ".txt"
enable_bucket = true

[[datasets]]
video_directory = "{media / "clips"}"
target_frames = [5, 9]
frame_extraction = "chunk"
batch_size = 2

[[datasets]]
image_directory = "{media / "stills"}"
num_repeats = 2
""",
    )
    result = import_musubi(path)
    dataset = _exec(result)
    assert [c.root for c in dataset.concepts] == [str(media / "clips"), str(media / "stills")]
    assert dataset.config.shape.resolution == ((32, 32),)
    batches = list(dataset)
    shapes = {tuple(b["pixels"].shape) for b in batches}
    # 12 native frames: one 9-frame chunk per video, batches of 2 (the last one filled by
    # repeating, small_buckets='repeat'); the images one frame each, twice (num_repeats).
    assert (2, 3, 9, 32, 32) in shapes and (1, 3, 1, 32, 32) in shapes
    paths = [p for b in batches for p in b["paths"]]
    assert len(set(paths)) == 5 and len(paths) == 4 + 2 * 2
    # build() makes the same dataset.
    assert len(result.build()) == len(dataset)


@pytest.mark.integration
def test_onetrainer_snippet_builds_the_dataset(tmp_path: Path, media: Path) -> None:
    concepts = [
        _concept(path=str(media / "clips"), balancing=2, image={"enable_random_flip": True}),
        _concept(path=str(media / "stills"), loss_weight=0.5, image={"enable_random_flip": True}),
    ]
    result = import_onetrainer(_json(tmp_path, concepts))
    dataset = _exec(result)
    assert [type(s).__name__ for s in dataset.clip_stages] == ["RandomFlip"]
    dataset2 = result.build(frames=(9,), fps=8, resolution=(32, 32))
    assert dataset2.concepts[0].repeats == 2 and dataset2.concepts[1].loss_weight == 0.5


# -- wan-data import -----------------------------------------------------------------------


def test_cli_prints_python_command_line_and_unmapped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "dataset.toml", MUSUBI_VIDEO_SAMPLE)
    assert main(["import", "musubi", str(path)]) == 0
    out = capsys.readouterr().out
    assert "dataset = WanVideoDataset(" in out
    assert "# no wan-data command says the same:" in out
    assert "# not carried over (2):" in out and "cache_directory" in out
    assert main(["import", "musubi", str(path), "--vae", "/vae", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["options"]["cache_dir"] == "/path/to/cache_directory"
    assert data["concepts"][0]["options"]["frames"] == [1, 25, 45]
    assert data["unmapped"][0]["reason"] == MANUAL and data["command_line"] is None
    out_file = tmp_path / "out" / "r.json"
    assert (
        main(["import", "onetrainer", str(_json(tmp_path, [_concept()])), "--json", str(out_file)])
        == 0
    )
    assert "result written to" in capsys.readouterr().out
    assert json.loads(out_file.read_text())["peer"] == "onetrainer"


def test_cli_malformed_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "bad.toml", "[[datasets]]\nnum_repeats = 'x'\n")
    assert main(["import", "musubi", str(path)]) == 2
    err = capsys.readouterr().err
    assert "2 configuration problems" in err and "num_repeats" in err
    assert main(["import", "onetrainer", str(path), "--vae", "/v"]) == 2


def test_import_config_dispatches(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.toml", '[[datasets]]\nvideo_directory = "/v"\n')
    assert import_config("musubi", path).concepts == [Concept("/v")]
    with pytest.raises(ConfigError, match="must be one of musubi, onetrainer"):
        import_config("kohya", path)
