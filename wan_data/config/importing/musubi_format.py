"""musubi-tuner's dataset TOML as a file: its keys, types, defaults and checks.

What :mod:`~wan_data.config.importing.musubi` maps from, at ``kohya-ss/musubi-tuner@30c658c4``
(``config_utils.py``'s ``ConfigSanitizer`` schemas and ``load_user_config``, the dataclass
defaults of ``BaseDatasetParams`` / ``VideoDatasetParams``): :func:`load` reads the TOML,
:func:`validate` checks it as musubi does (unknown keys, types, ranges: every problem of the file
in one :class:`~wan_data.errors.ConfigError`), and :func:`resolved` resolves a key as musubi's
``BlueprintGenerator`` does (the dataset's value, else ``[general]``'s, else the default).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from wan_data.errors import ConfigError, format_error

__all__ = [
    "DOC",
    "MUSUBI_DEFAULTS",
    "ROOT_KEYS",
    "SAMPLING",
    "Dataset",
    "load",
    "resolved",
    "validate",
]

DOC = "see musubi-tuner's docs/dataset_config.md"

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
ROOT_KEYS = ("video_directory", "video_jsonl_file", "image_directory", "image_jsonl_file")

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
SAMPLING = {
    "head": "head",
    "chunk": "chunks",
    "slide": "slide",
    "uniform": "uniform",
    "full": "full",
}


@dataclass
class Dataset:
    """One ``[[datasets]]`` table, checked: its position, the keys it sets itself (the rest come
    from ``[general]`` or the defaults, see :func:`resolved`), whether it is a video dataset,
    and the key naming its files (``video_directory``, ``image_jsonl_file``...)."""

    index: int
    values: dict[str, Any]  # the keys the dataset itself sets
    video: bool
    root_key: str

    @property
    def where(self) -> str:
        """How messages name it: ``datasets[<index>]``."""
        return f"datasets[{self.index}]"


def load(source: str) -> dict[str, Any]:
    """The TOML file ``source`` as a dict.

    Raises:
        ConfigError: it cannot be read, is not UTF-8, or is not TOML (naming the line).
    """
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
                "fix the line named; " + DOC,
                path=source,
            )
        ) from None


def validate(raw: dict[str, Any], source: str) -> tuple[dict[str, Any], list[Dataset]]:
    """``[general]`` and the datasets of ``raw``, checked as musubi-tuner checks them
    (deprecated keys renamed first).

    Raises:
        ConfigError: every problem of the file at once: unknown sections or keys (with the
            closest valid names), wrong types, out-of-range values, a dataset naming no files
            or two kinds of them.
    """
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
    datasets: list[Dataset] = []
    if not isinstance(entries, list) or not entries:
        problems.append(
            format_error(
                "datasets",
                "missing" if entries is None else type(entries).__name__,
                "must be one or more [[datasets]] tables",
                'add [[datasets]] with video_directory = "..."; ' + DOC,
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
        roots = [k for k in ROOT_KEYS if k in entry]
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
                    "must name exactly one of " + ", ".join(ROOT_KEYS),
                    "one [[datasets]] table per folder or metadata file",
                    path=source,
                )
            )
            continue
        datasets.append(Dataset(index, entry, video, roots[0]))
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
    return f"did you mean {' or '.join(close)}" if close else DOC


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
    if key == "frame_extraction" and value not in SAMPLING:
        return f"must be one of {', '.join(SAMPLING)}", DOC
    if key == "source_fps" and value <= 0:
        return "must be positive", "e.g. 30.0"
    return None


# -- mapping -------------------------------------------------------------------------------


def resolved(dataset: Dataset, general: dict[str, Any], key: str) -> tuple[Any, str]:
    """musubi's resolution of a key (BlueprintGenerator.search_value): the dataset's value,
    else [general]'s (common keys only), else the default; with where it came from."""
    if key in dataset.values:
        return dataset.values[key], dataset.where
    if key in _COMMON and key in general:
        return general[key], "general"
    return MUSUBI_DEFAULTS.get(key), "musubi default"
