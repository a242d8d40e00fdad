"""Read a musubi-tuner dataset TOML (``[general]`` + ``[[datasets]]``) into our configuration.

The format and its defaults are musubi-tuner's at ``kohya-ss/musubi-tuner@30c658c4``:
``src/musubi_tuner/dataset/config_utils.py`` (``BaseDatasetParams``, ``VideoDatasetParams``,
``ConfigSanitizer``: which keys ``[general]`` and each dataset may hold, and their types;
``BlueprintGenerator``: a dataset's value, else ``[general]``'s, else the default),
``src/musubi_tuner/dataset/image_video_dataset.py`` (``VideoDataset``: target_frames rounded
down to 4k+1, ``uniform`` with ``frame_sample = 1`` is ``head``, the ``frame_extraction`` modes)
and ``docs/dataset_config.md``. musubi rejects unknown keys, so this importer does too, with
every problem of the file in one :class:`~wan_data.errors.ConfigError`.
"""

from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from wan_data.config.importing.result import (
    MANUAL,
    NO_EQUIVALENT,
    SEMANTICS_DIFFER,
    ImportResult,
    UnmappedOption,
    common_value,
    hoist_common,
    set_option,
)
from wan_data.errors import ConfigError, format_error
from wan_data.sources.concepts import Concept

__all__ = ["MUSUBI_DEFAULTS", "import_musubi"]

log = logging.getLogger("wan_data")

_DOC = "see musubi-tuner's docs/dataset_config.md"

# Keys [general] and every dataset may hold (ConfigSanitizer.DATASET_ASCENDABLE_SCHEMA).
_COMMON: dict[str, str] = {
    "caption_extension": "str",
    "batch_size": "int",
    "num_repeats": "int",
    "resolution": "resolution",
    "enable_bucket": "bool",
    "bucket_no_upscale": "bool",
}
# IMAGE_DATASET_DISTINCT_SCHEMA and VIDEO_DATASET_DISTINCT_SCHEMA.
_IMAGE: dict[str, str] = {
    "image_directory": "str",
    "image_jsonl_file": "str",
    "cache_directory": "str",
    "control_directory": "str",
    "multiple_target": "bool",
    "fp_latent_window_size": "int",
    "fp_1f_clean_indices": "ints",
    "fp_1f_target_index": "int",
    "fp_1f_no_post": "bool",
    "no_resize_control": "bool",
    "control_resolution": "resolution",
}
_VIDEO: dict[str, str] = {
    "video_directory": "str",
    "video_jsonl_file": "str",
    "control_directory": "str",
    "target_frames": "ints",
    "frame_extraction": "str",
    "frame_stride": "int",
    "frame_sample": "int",
    "max_frames": "int",
    "cache_directory": "str",
    "source_fps": "float",
    "fp_latent_window_size": "int",
}
# load_user_config's deprecated_key_map.
_DEPRECATED = {
    "flux_kontext_no_resize_control": "no_resize_control",
    "qwen_image_edit_no_resize_control": "no_resize_control",
    "qwen_image_edit_control_resolution": "control_resolution",
}
_ROOT_KEYS = ("video_directory", "video_jsonl_file", "image_directory", "image_jsonl_file")

MUSUBI_DEFAULTS: dict[str, Any] = {
    "resolution": (960, 544),
    "enable_bucket": False,
    "bucket_no_upscale": False,
    "caption_extension": None,
    "batch_size": 1,
    "num_repeats": 1,
    "cache_directory": None,
    "target_frames": (1,),
    "frame_extraction": "head",
    "frame_stride": 1,
    "frame_sample": 1,
    "max_frames": 129,
    "source_fps": None,
}
"""musubi-tuner's defaults (``BaseDatasetParams``, ``VideoDatasetParams``): what a key it does
not find in a dataset or in ``[general]`` means, and so what it is imported as."""

# musubi's frame_extraction -> our sampling (config/peers.py SAMPLING_PEERS).
_SAMPLING = {
    "head": "head",
    "chunk": "chunks",
    "slide": "slide",
    "uniform": "uniform",
    "full": "full",
}
# Wan's rate in musubi (VideoDataset.TARGET_FPS_WAN): what source_fps resamples to.
_WAN_FPS = 16.0

_NO_EQUIVALENT_DETAIL = {
    "control_directory": "control images/videos (Kontext, Qwen-Image-Edit, FramePack one-frame "
    "training) have no counterpart; Wan conditions are made from the clip itself "
    "(conditioning='i2v' / 'flf2v')",
    "multiple_target": "layered targets (Qwen-Image-Layered) have no counterpart",
    "fp_latent_window_size": "a FramePack setting; Wan has no latent windows",
    "fp_1f_clean_indices": "a FramePack one-frame setting",
    "fp_1f_target_index": "a FramePack one-frame setting",
    "fp_1f_no_post": "a FramePack one-frame setting",
    "no_resize_control": "control images have no counterpart",
    "control_resolution": "control images have no counterpart",
}


@dataclass
class _Dataset:
    index: int
    values: dict[str, Any]  # the keys the dataset itself sets
    video: bool
    root_key: str

    @property
    def where(self) -> str:
        return f"datasets[{self.index}]"


def import_musubi(path: str | os.PathLike[str], *, vae: str | None = None) -> ImportResult:
    """A musubi-tuner dataset TOML as concepts and options.

    Args:
        path: the TOML file (``[general]`` and ``[[datasets]]``).
        vae: the Wan VAE to cache latents with. musubi names it on its caching script's command
            line (``--vae``), not in the TOML; ours needs it beside ``cache_dir``, so
            ``cache_directory`` is carried over only when it is given.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or breaks musubi's schema (unknown
            keys, wrong types, a dataset without media): every problem at once, each naming
            the file and the key path.
    """
    source = os.fspath(path)
    raw = _load(source)
    general, datasets = _validate(raw, source)
    result = ImportResult(peer="musubi", source=source)
    per_concept: list[dict[str, Any]] = []
    for dataset in datasets:
        per_concept.append(_map_dataset(dataset, general, result))
    # Video options are absent from image datasets (an image is one frame), clips_per_video
    # and stride from the modes that ignore them.
    inert = ("frames", "fps", "sampling", "clips_per_video", "stride")
    remaining = hoist_common(per_concept, result.options, inert)
    _map_dataset_level(datasets, general, result, remaining, vae)
    _general_notes(datasets, result)
    log.info(
        "imported %s: %d concept(s), %d option(s), %d unmapped",
        source,
        len(result.concepts),
        len(result.options),
        len(result.unmapped),
    )
    return result


# -- reading and checking ------------------------------------------------------------------


def _load(source: str) -> dict[str, Any]:
    try:
        data = Path(source).read_bytes()
    except OSError as exc:
        raise ConfigError(
            format_error(
                "musubi dataset config",
                source,
                f"could not be read ({type(exc).__name__}: {exc.strerror or exc})",
                "pass the path of the dataset .toml given to musubi's --dataset_config",
            )
        ) from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            format_error(
                "musubi dataset config",
                source,
                f"is not valid TOML ({exc})",
                "fix the line named; " + _DOC,
                path=source,
            )
        ) from None


def _validate(raw: dict[str, Any], source: str) -> tuple[dict[str, Any], list[_Dataset]]:
    problems: list[str] = []
    for key in raw:
        if key not in ("general", "datasets"):
            problems.append(
                format_error(
                    key,
                    raw[key],
                    "is not a musubi dataset config table",
                    _hint(key, ["general", "datasets"]),
                    path=source,
                )
            )
    general = raw.get("general", {})
    if not isinstance(general, dict):
        problems.append(
            format_error(
                "general", type(general).__name__, "must be a table ([general])", path=source
            )
        )
        general = {}
    general = _undeprecate(dict(general))
    problems += _check_keys(
        general,
        _COMMON,
        "general",
        source,
        "[general] takes only " + ", ".join(_COMMON) + " (video keys go in each [[datasets]])",
    )
    entries = raw.get("datasets")
    datasets: list[_Dataset] = []
    if not isinstance(entries, list) or not entries:
        problems.append(
            format_error(
                "datasets",
                "missing" if entries is None else type(entries).__name__,
                "must be one or more [[datasets]] tables",
                'add [[datasets]] with video_directory = "..."; ' + _DOC,
                path=source,
            )
        )
        entries = []
    for index, entry in enumerate(entries):
        where = f"datasets[{index}]"
        if not isinstance(entry, dict):
            problems.append(
                format_error(
                    where, type(entry).__name__, "must be a table ([[datasets]])", path=source
                )
            )
            continue
        entry = _undeprecate(dict(entry))
        roots = [k for k in _ROOT_KEYS if k in entry]
        # musubi: a video dataset has video_directory or video_jsonl_file, else it is an image
        # dataset (validate_flex_dataset).
        video = "video_directory" in entry or "video_jsonl_file" in entry
        schema = {**_COMMON, **(_VIDEO if video else _IMAGE)}
        kind = "video" if video else "image"
        problems += _check_keys(
            entry, schema, where, source, f"not a key of a musubi {kind} dataset"
        )
        if len(roots) != 1:
            problems.append(
                format_error(
                    where,
                    ", ".join(roots) if roots else "no media",
                    "must name exactly one of " + ", ".join(_ROOT_KEYS),
                    "one [[datasets]] table per folder or metadata file",
                    path=source,
                )
            )
            continue
        datasets.append(_Dataset(index, entry, video, roots[0]))
    if problems:
        raise ConfigError(problems)
    return general, datasets


def _undeprecate(section: dict[str, Any]) -> dict[str, Any]:
    """musubi's renames of old keys (load_user_config), so they are checked by their new name."""
    for old, new in _DEPRECATED.items():
        if old in section:
            value = section.pop(old)
            section.setdefault(new, value)
    return section


def _check_keys(
    section: dict[str, Any], schema: dict[str, str], where: str, source: str, rule: str
) -> list[str]:
    problems = []
    for key, value in section.items():
        kind = schema.get(key)
        if kind is None:
            problems.append(
                format_error(f"{where}.{key}", value, rule, _hint(key, list(schema)), path=source)
            )
            continue
        problem = _check_value(value, kind)
        if problem is None:
            problem = _check_range(key, value)
        if problem is not None:
            problems.append(
                format_error(f"{where}.{key}", value, problem[0], problem[1], path=source)
            )
    return problems


def _hint(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=2)
    return f"did you mean {' or '.join(close)}" if close else _DOC


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_value(value: object, kind: str) -> tuple[str, str] | None:
    if kind == "str" and not isinstance(value, str):
        return "must be a string", 'quote it: "..."'
    if kind == "int" and not _is_int(value):
        return "must be an integer", ""
    if kind == "bool" and not isinstance(value, bool):
        return "must be true or false", ""
    if kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return "must be a number", "e.g. 30.0"
    if kind == "ints" and not (isinstance(value, list) and all(_is_int(v) for v in value)):
        return "must be a list of integers", "e.g. [1, 25, 45]"
    if kind == "resolution" and not (
        _is_int(value) or (isinstance(value, list) and len(value) == 2 and all(map(_is_int, value)))
    ):
        return "must be an integer or [width, height]", "e.g. [960, 544]"
    return None


def _check_range(key: str, value: Any) -> tuple[str, str] | None:
    if (
        key in ("batch_size", "num_repeats", "frame_stride", "frame_sample", "max_frames")
        and value < 1
    ):
        return "must be >= 1", ""
    if key == "resolution" and any(v < 1 for v in (value if isinstance(value, list) else [value])):
        return "must be positive", "e.g. [960, 544]"
    if key == "target_frames" and (not value or any(v < 1 for v in value)):
        return "must be a non-empty list of frame counts >= 1", "e.g. [1, 25, 45]"
    if key == "frame_extraction" and value not in _SAMPLING:
        return f"must be one of {', '.join(_SAMPLING)}", _DOC
    if key == "source_fps" and value <= 0:
        return "must be positive", "e.g. 30.0"
    return None


# -- mapping -------------------------------------------------------------------------------


def _value(dataset: _Dataset, general: dict[str, Any], key: str) -> tuple[Any, str]:
    """musubi's resolution of a key (BlueprintGenerator.search_value): the dataset's value,
    else [general]'s (common keys only), else the default; with where it came from."""
    if key in dataset.values:
        return dataset.values[key], dataset.where
    if key in _COMMON and key in general:
        return general[key], "general"
    return MUSUBI_DEFAULTS.get(key), "musubi default"


def _resolution(value: Any) -> tuple[tuple[int, int], ...]:
    if isinstance(value, (list, tuple)):
        return ((int(value[0]), int(value[1])),)
    return ((int(value), int(value)),)


def _map_dataset(
    dataset: _Dataset, general: dict[str, Any], result: ImportResult
) -> dict[str, Any]:
    """The concept of one dataset (appended to ``result``) and its per-source options."""
    options: dict[str, Any] = {}
    resolution, _ = _value(dataset, general, "resolution")
    options["resolution"] = _resolution(resolution)
    options["no_upscale"] = _value(dataset, general, "bucket_no_upscale")[0]
    if dataset.video:  # an image dataset has no frame keys: an image is one frame in ours too
        _map_video(dataset, options, result)
    for key, detail in _NO_EQUIVALENT_DETAIL.items():
        if key in dataset.values:
            result.unmapped.append(
                UnmappedOption(key, dataset.values[key], dataset.where, NO_EQUIVALENT, detail)
            )
    repeats, _ = _value(dataset, general, "num_repeats")
    root = dataset.values[dataset.root_key]
    result.concepts.append(Concept(root=root, repeats=repeats))
    if dataset.root_key.endswith("jsonl_file"):
        key = "video_path" if dataset.video else "image_path"
        result.notes.append(
            f"{dataset.where}.{dataset.root_key}: musubi's metadata lines name the file "
            f"`{key}`; ours reads the keys path, file, video or image (and caption, text or "
            f"prompt): rename `{key}` to `path` in {root} (e.g. with "
            f'`sed -i \'s/"{key}":/"path":/\'`)'
        )
    return options


def _map_video(dataset: _Dataset, options: dict[str, Any], result: ImportResult) -> None:
    where = dataset.where
    values = dataset.values
    mode = values.get("frame_extraction", MUSUBI_DEFAULTS["frame_extraction"])
    sample = values.get("frame_sample", MUSUBI_DEFAULTS["frame_sample"])
    if mode == "uniform" and sample == 1:
        mode = "head"  # VideoDataset.__init__ does the same (and warns)
        result.notes.append(
            f"{where}: frame_extraction='uniform' with frame_sample=1 is 'head' in musubi "
            "(it switches and warns); imported as sampling='head'"
        )
    if mode == "full":
        frames = _full_frames(values.get("max_frames", MUSUBI_DEFAULTS["max_frames"]))
        options["frames"] = frames
        result.notes.append(
            f"{where}: frame_extraction='full' trains each whole video cut to 4k+1 frames up "
            f"to max_frames; ours takes the largest frame bucket a video fills, so every 4k+1 "
            f"count up to {frames[-1]} is a bucket ({len(frames)} buckets; list fewer to "
            "batch more videos together)"
        )
        if "target_frames" in values:
            result.notes.append(f"{where}.target_frames: not used by musubi with 'full'")
    else:
        given = list(values.get("target_frames", MUSUBI_DEFAULTS["target_frames"]))
        rounded = sorted({(f - 1) // 4 * 4 + 1 for f in given})
        options["frames"] = tuple(rounded)
        if sorted(set(given)) != rounded:
            bad = [f for f in given if (f - 1) % 4]
            result.notes.append(
                f"{where}.target_frames: {bad} not 4k+1; musubi rounds them down (as Wan's VAE "
                f"needs), so they are imported as {rounded}"
            )
        if "target_frames" not in values:
            result.notes.append(
                f"{where}: no target_frames; musubi's default [1] trains the first frame of "
                "each video, imported as frames=(1,)"
            )
        if len(rounded) > 1 and mode in ("head", "chunk", "slide", "uniform"):
            result.notes.append(
                f"{where}: musubi cuts clips of every target_frames length a video fills; ours "
                f"cuts them at the largest one only (frames={tuple(rounded)})"
            )
        if "max_frames" in values:
            result.notes.append(f"{where}.max_frames: used by musubi only with 'full'; dropped")
    options["sampling"] = _SAMPLING[mode]
    if mode in ("chunk", "slide"):
        options["clips_per_video"] = 0  # musubi takes every chunk / window
    if mode == "uniform":
        options["clips_per_video"] = sample
    elif "frame_sample" in values:
        result.notes.append(f"{where}.frame_sample: used by musubi only with 'uniform'; dropped")
    if mode == "slide":
        options["stride"] = values.get("frame_stride", MUSUBI_DEFAULTS["frame_stride"])
    elif "frame_stride" in values:
        result.notes.append(f"{where}.frame_stride: used by musubi only with 'slide'; dropped")
    fps = values.get("source_fps")
    if fps is None:
        options["fps"] = None
    else:
        options["fps"] = _WAN_FPS
        result.notes.append(
            f"{where}.source_fps = {fps}: musubi assumes every video of the dataset runs at "
            f"that rate and drops frames down to Wan's {_WAN_FPS:g} fps; ours reads each file's "
            f"own rate and samples at fps={_WAN_FPS:g}"
        )


def _full_frames(max_frames: int) -> tuple[int, ...]:
    top = (max_frames - 1) // 4 * 4 + 1
    return tuple(range(1, top + 1, 4))


def _map_dataset_level(
    datasets: list[_Dataset],
    general: dict[str, Any],
    result: ImportResult,
    remaining: list[dict[str, Any]],
    vae: str | None,
) -> None:
    """Per-concept leftovers, and the options musubi sets per dataset but ours once per
    dataset object (batch_size as Concept.batch_size, caption_extension, cache_directory)."""
    sizes = [_value(d, general, "batch_size")[0] for d in datasets]
    same_size, size = common_value(sizes)
    concepts = []
    for concept, options, own_size in zip(result.concepts, remaining, sizes, strict=True):
        concepts.append(
            Concept(
                root=concept.root,
                repeats=concept.repeats,
                batch_size=None if same_size else own_size,
                options=options,
            )
        )
    result.concepts = concepts
    if same_size:
        set_option(result.options, "batch_size", size)
    folders = [d for d in datasets if d.root_key.endswith("_directory")]
    if folders:
        extensions = [(_value(d, general, "caption_extension"), d) for d in folders]
        (first, _), _ = extensions[0]
        if first is None:
            result.notes.append(
                "caption_extension is not set: musubi's folder datasets then fail to read "
                "captions; ours reads '.txt' sidecars"
            )
        else:
            set_option(result.options, "caption_extension", first)
        for (value, origin), dataset in extensions[1:]:
            if value != first:
                result.unmapped.append(
                    UnmappedOption(
                        "caption_extension",
                        value,
                        origin,
                        MANUAL,
                        f"ours has one caption extension per dataset; {first!r} (of "
                        f"{folders[0].where}) is used: rename the captions of "
                        f"{dataset.values[dataset.root_key]} or build a dataset per extension",
                    )
                )
    _map_cache(datasets, result, vae)
    buckets = {(_value(d, general, "enable_bucket")) for d in datasets}
    for value, origin in sorted(buckets, key=str):
        if value:
            result.notes.append(f"{origin}.enable_bucket = true: ours always buckets by aspect")
        else:
            result.unmapped.append(
                UnmappedOption(
                    "enable_bucket",
                    value,
                    origin,
                    SEMANTICS_DIFFER,
                    "without buckets musubi resizes and crops every sample to exactly "
                    "`resolution`; ours always buckets by aspect (max_aspect bounds how far "
                    "from square; no setting forces one size)",
                )
            )


def _map_cache(datasets: list[_Dataset], result: ImportResult, vae: str | None) -> None:
    given = [d for d in datasets if "cache_directory" in d.values]
    if not given:
        if vae is not None:
            result.notes.append(
                "no cache_directory: musubi caches beside the media; pass cache_dir= with vae="
            )
        return
    if vae is None:
        for dataset in given:
            result.unmapped.append(
                UnmappedOption(
                    "cache_directory",
                    dataset.values["cache_directory"],
                    dataset.where,
                    MANUAL,
                    "our latent cache needs the VAE too (musubi names it on its caching "
                    "command line, --vae): import with vae= (wan-data import --vae PATH) or "
                    "pass vae= and cache_dir= to the dataset",
                )
            )
        return
    first = given[0].values["cache_directory"]
    result.options["vae"] = vae
    result.options["cache_dir"] = first
    for dataset in given[1:]:
        value = dataset.values["cache_directory"]
        if value != first:
            result.unmapped.append(
                UnmappedOption(
                    "cache_directory",
                    value,
                    dataset.where,
                    MANUAL,
                    f"ours keeps one cache per dataset object (entries are keyed by source and "
                    f"options, so the concepts share it); {first!r} of {given[0].where} is used",
                )
            )


def _general_notes(datasets: list[_Dataset], result: ImportResult) -> None:
    if any(d.root_key.endswith("_directory") for d in datasets):
        result.notes.append(
            "musubi reads one folder level; ours walks folders recursively: files in "
            "subfolders are now included"
        )
        result.notes.append(
            "musubi reads a caption file as one caption; ours takes each non-blank line as a "
            "candidate (one is drawn per epoch): multi-line caption files train differently"
        )
    result.notes.append(
        "musubi draws its shuffle seed at random each run; ours is seeded (seed=0): pass "
        "seed= to change it"
    )
    if any(not os.path.isabs(d.values[d.root_key]) for d in datasets):
        result.notes.append(
            "relative paths are kept as written: musubi resolves them against the working "
            "directory, as ours does"
        )
