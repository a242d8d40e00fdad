"""What a diffusion-pipe dataset TOML is: its keys, defaults and checks.

diffusion-pipe's ``utils/dataset.py`` at ``tdrussell/diffusion-pipe@8f83dbf2``
(``DirectoryDataset.__init__`` and ``_set_defaults``: which keys a ``[[directory]]`` entry
overrides and their defaults; ``Dataset.post_init``: ``subsample_ratio``), ``train.py`` (the
training config names the dataset file in ``dataset``; ``video_clip_mode``, the micro batch
sizes and ``uncond_fraction`` are training-config keys) and ``examples/dataset.toml``.
diffusion-pipe reads the file with ``dict.get`` and ignores keys it does not know, so unknown
keys are not errors here either (the importer reports them); values of the wrong type, which
make diffusion-pipe fail, are, with every problem of the file in one
:class:`~wan_data.errors.ConfigError`. :mod:`wan_data.config.importing.diffusion_pipe` maps a
checked file.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from wan_data.config.importing.result import MANUAL, NO_EQUIVALENT, ImportResult, UnmappedOption
from wan_data.errors import ConfigError, format_error

__all__ = [
    "CLIP_MODES",
    "DIFFUSION_PIPE_DEFAULTS",
    "DIRECTORY_ONLY",
    "DOC",
    "SHARED_KEYS",
    "TRAINING_KEYS",
    "Directory",
    "Loaded",
    "get_value",
    "load",
    "report_unknown",
    "suggest",
]

DOC = "see diffusion-pipe's examples/dataset.toml"

# Keys of the dataset file that a [[directory]] entry may override (DirectoryDataset: the
# directory's value, else the top level's, else the default), with their kind.
SHARED_KEYS: dict[str, str] = {
    "resolutions": "resolutions",
    "enable_ar_bucket": "bool",
    "min_ar": "positive",
    "max_ar": "positive",
    "num_ar_buckets": "count",
    "ar_buckets": "ars",
    "size_buckets": "sizes",
    "frame_buckets": "frames",
    "cache_shuffle_num": "count0",
    "cache_shuffle_delimiter": "str",
    "shuffle_tags": "bool",
    "caption_prefix": "str",
    "num_repeats": "positive",
    "shuffle_metadata": "bool",
    "skip_empty_caption": "bool",
    "online_captions": "bool",
}
# Keys only the top level has (Dataset, Dataset.post_init).
_TOP_KEYS: dict[str, str] = {"subsample_ratio": "ratio", "directory": "directories"}
# Keys only a [[directory]] entry has.
_DIRECTORY_KEYS: dict[str, str] = {
    "path": "str",
    "mask_path": "str",
    "default_mask_file": "str",
    "control_path": "str",
}

DIFFUSION_PIPE_DEFAULTS: dict[str, Any] = {
    "enable_ar_bucket": False,
    "ar_buckets": None,
    "size_buckets": None,
    "frame_buckets": [1],
    "cache_shuffle_num": 0,
    "cache_shuffle_delimiter": ", ",
    "shuffle_tags": False,
    "caption_prefix": "",
    "num_repeats": 1,
    "shuffle_metadata": True,
    "skip_empty_caption": True,
    "online_captions": False,
}
"""diffusion-pipe's defaults (``DirectoryDataset``): what a key it finds neither in a
``[[directory]]`` entry nor at the top level means. ``resolutions`` and, with
``enable_ar_bucket`` but no ``ar_buckets``, ``min_ar`` / ``max_ar`` / ``num_ar_buckets`` have
none: diffusion-pipe fails without them."""

# Training-config keys (train.py, models/base.py) about the data; the rest of that file
# (model, adapter, optimizer, epochs...) is not a dataset option.
TRAINING_KEYS = (
    "dataset",
    "video_clip_mode",
    "micro_batch_size_per_gpu",
    "image_micro_batch_size_per_gpu",
    "uncond_fraction",
    "eval_datasets",
)
# PreprocessMediaFile.extract_clips; multiple_overlapping is commented out at the checked commit.
CLIP_MODES = ("single_beginning", "single_middle", "multiple_overlapping")


@dataclass
class Directory:
    """One ``[[directory]]`` entry: its index and the keys it sets itself."""

    index: int
    values: dict[str, Any]

    @property
    def where(self) -> str:
        """``directory[<index>]``: where the entry is, as problems and unmapped settings name it."""
        return f"directory[{self.index}]"

    @property
    def path(self) -> str:
        """The entry's ``path`` as a string."""
        return str(self.values["path"])


@dataclass
class Loaded:
    """A checked dataset file, with the training config it was reached from (if any)."""

    source: str  # the file or text imported
    dataset_source: str  # the dataset file (the same, unless a training config was given)
    top: dict[str, Any]
    directories: list[Directory]
    training: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def get_value(directory: Directory, top: dict[str, Any], key: str) -> tuple[Any, str]:
    """diffusion-pipe's value of a key for one directory: the entry's, else the top level's,
    else the default; with where it came from."""
    if key in directory.values:
        return directory.values[key], directory.where
    if key in top:
        return top[key], "top level"
    return DIFFUSION_PIPE_DEFAULTS.get(key), "diffusion-pipe default"


def suggest(key: str, known: list[str] | tuple[str, ...]) -> str:
    """``did you mean a or b`` for the (at most two) known keys closest to a misspelt ``key``; empty
    when none is close.
    """
    close = difflib.get_close_matches(key, list(known), n=2)
    return f"did you mean {' or '.join(close)}" if close else ""


# -- reading -------------------------------------------------------------------------------


def load(path_or_text: str | os.PathLike[str]) -> Loaded:
    """Read and check a dataset TOML, or a training TOML whose ``dataset`` names one.

    A ``str`` holding a line break is TOML text; anything else is a path.

    Raises:
        ConfigError: every problem of the file.
    """
    if isinstance(path_or_text, str) and "\n" in path_or_text:
        source = "<text>"
        raw = _parse(path_or_text, source)
    else:
        source = os.fspath(path_or_text)
        raw = _parse(_read(source, "diffusion-pipe dataset config", ""), source)
    if "directory" not in raw and isinstance(raw.get("dataset"), str):
        return _from_training(raw, source)
    top, directories = _validate(raw, source)
    return Loaded(source, source, top, directories)


def _read(source: str, what: str, hint: str) -> str:
    try:
        return Path(source).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(
            format_error(
                what,
                source,
                f"could not be read ({type(exc).__name__}: {exc.strerror or exc})",
                hint
                or "pass the dataset .toml that diffusion-pipe's training config names in "
                "`dataset`, or the training config itself",
            )
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            format_error(what, source, f"is not valid TOML ({exc})", DOC, path=source)
        ) from None


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            format_error(
                "diffusion-pipe dataset config",
                source,
                f"is not valid TOML ({exc})",
                "fix the line named; " + DOC,
                path=source,
            )
        ) from None


def _from_training(training: dict[str, Any], source: str) -> Loaded:
    """A training config: follow ``dataset`` as train.py does (relative to the working
    directory), else beside the training config."""
    name = training["dataset"]
    candidates = [Path(name)]
    if not os.path.isabs(name) and source != "<text>":
        candidates.append(Path(source).parent / name)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise ConfigError(
            format_error(
                "dataset",
                name,
                "names no readable file (looked in "
                + " and ".join(f"'{c}'" for c in dict.fromkeys(map(str, candidates)))
                + ")",
                "diffusion-pipe opens it relative to its working directory: run the import "
                "from there, or import the dataset file itself",
                path=source,
            )
        )
    dataset_source = os.fspath(found)
    raw = _parse(_read(dataset_source, "dataset", ""), dataset_source)
    top, directories = _validate(raw, dataset_source, training_problems(training, source))
    notes = [f"the training config {source} names the dataset file {dataset_source}"]
    return Loaded(source, dataset_source, top, directories, training, notes)


def training_problems(training: dict[str, Any], source: str) -> list[str]:
    """The problems of the data keys of a training config (train.py, models/base.py)."""
    problems = []
    mode = training.get("video_clip_mode", "single_beginning")
    if mode not in CLIP_MODES:
        problems.append(
            format_error(
                "video_clip_mode",
                mode,
                f"must be one of {', '.join(CLIP_MODES)}",
                "see diffusion-pipe's examples/main_example.toml",
                path=source,
            )
        )
    for key in ("micro_batch_size_per_gpu", "image_micro_batch_size_per_gpu"):
        value = training.get(key, 1)
        pairs = isinstance(value, list) and all(
            isinstance(p, list) and len(p) == 2 and all(_is_number(x) for x in p) for p in value
        )
        if not ((_is_int(value) and value >= 1) or (pairs and value)):
            problems.append(
                format_error(
                    key,
                    value,
                    "must be an integer >= 1 or a list of [resolution, batch size] pairs",
                    "e.g. 1, or [[512, 4], [1024, 1]]",
                    path=source,
                )
            )
    fraction = training.get("uncond_fraction", 0.0)
    if not _is_number(fraction) or not 0 <= fraction <= 1:
        problems.append(
            format_error("uncond_fraction", fraction, "must be a number in 0..1", path=source)
        )
    return problems


# -- checking ------------------------------------------------------------------------------


def _validate(
    raw: dict[str, Any], source: str, problems: list[str] | None = None
) -> tuple[dict[str, Any], list[Directory]]:
    problems = list(problems or [])
    top = {k: v for k, v in raw.items() if k != "directory"}
    problems += _check_keys(top, {**SHARED_KEYS, **_TOP_KEYS}, "", source)
    entries = raw.get("directory")
    if not isinstance(entries, list) or not entries:
        problems.append(
            format_error(
                "directory",
                "missing" if entries is None else type(entries).__name__,
                "must be one or more [[directory]] tables",
                "add [[directory]] with path = '...' (or import the training config, whose "
                "`dataset` names the dataset file); " + DOC,
                path=source,
            )
        )
        entries = []
    directories = []
    for index, entry in enumerate(entries):
        where = f"directory[{index}]"
        if not isinstance(entry, dict):
            problems.append(
                format_error(
                    where, type(entry).__name__, "must be a table ([[directory]])", path=source
                )
            )
            continue
        entry_problems = _check_keys(entry, {**SHARED_KEYS, **_DIRECTORY_KEYS}, where, source)
        if "path" not in entry:
            entry_problems.append(
                format_error(
                    f"{where}.path",
                    "missing",
                    "must name the folder of images/videos and their .txt captions",
                    "add path = '/data/clips'",
                    path=source,
                )
            )
        problems += entry_problems
        if not entry_problems:
            directories.append(Directory(index, entry))
    for directory in directories:
        problems += _check_required(directory, top, source)
    if problems:
        raise ConfigError(problems)
    return top, directories


def _check_keys(
    section: dict[str, Any], schema: dict[str, str], where: str, source: str
) -> list[str]:
    """Type and range problems of the known keys (unknown ones are reported, not refused)."""
    problems = []
    for key, value in section.items():
        kind = schema.get(key)
        if kind is None or kind == "directories":
            continue
        problem = _check_value(key, value, kind)
        if problem is not None:
            name = f"{where}.{key}" if where else key
            problems.append(format_error(name, value, problem[0], problem[1], path=source))
    return problems


def _check_required(directory: Directory, top: dict[str, Any], source: str) -> list[str]:
    """The keys diffusion-pipe reads without a default (it fails with a KeyError)."""
    problems: list[str] = []
    if get_value(directory, top, "size_buckets")[0] is not None:
        return problems
    if "resolutions" not in directory.values and "resolutions" not in top:
        problems.append(
            format_error(
                f"{directory.where}.resolutions",
                "missing",
                "must be set, at the top level or in the entry (diffusion-pipe has no default)",
                "e.g. resolutions = [512]",
                path=source,
            )
        )
    enabled = get_value(directory, top, "enable_ar_bucket")[0]
    if enabled and not get_value(directory, top, "ar_buckets")[0]:
        for key in ("min_ar", "max_ar", "num_ar_buckets"):
            if key not in directory.values and key not in top:
                problems.append(
                    format_error(
                        f"{directory.where}.{key}",
                        "missing",
                        "must be set with enable_ar_bucket = true and no ar_buckets "
                        "(diffusion-pipe has no default)",
                        "e.g. min_ar = 0.5, max_ar = 2.0, num_ar_buckets = 7",
                        path=source,
                    )
                )
        low, high = (get_value(directory, top, k)[0] for k in ("min_ar", "max_ar"))
        if _is_number(low) and _is_number(high) and low > high:
            problems.append(
                format_error(
                    f"{directory.where}.min_ar",
                    low,
                    f"must not exceed max_ar ({high})",
                    "min_ar is the tallest aspect (width/height), max_ar the widest",
                    path=source,
                )
            )
    return problems


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_pair(value: object) -> bool:
    return (
        isinstance(value, list) and len(value) == 2 and all(_is_number(v) and v > 0 for v in value)
    )


def _check_value(key: str, value: Any, kind: str) -> tuple[str, str] | None:
    if kind == "str" and not isinstance(value, str):
        return "must be a string", "quote it: '...'"
    if kind == "bool" and not isinstance(value, bool):
        return "must be true or false", ""
    if kind == "positive" and not (_is_number(value) and value > 0):
        return "must be a number > 0", ""
    if kind == "ratio" and not (_is_number(value) and 0 < value <= 1):
        return "must be a number in (0, 1]", "e.g. 0.5 for half of every epoch"
    if kind == "count" and not (_is_int(value) and value >= 1):
        return "must be an integer >= 1", ""
    if kind == "count0" and not (_is_int(value) and value >= 0):
        return "must be an integer >= 0", "0 keeps the caption as written"
    if kind == "resolutions" and not (
        isinstance(value, list)
        and value
        and all((_is_number(v) and v > 0) or _is_pair(v) for v in value)
    ):
        return (
            "must be a non-empty list of side lengths or [width, height] pairs",
            "e.g. [512] or [[1280, 720]]",
        )
    if kind == "ars" and not (
        isinstance(value, list)
        and value
        and all((_is_number(v) and v > 0) or _is_pair(v) for v in value)
    ):
        return (
            "must be a non-empty list of aspects (width/height) or [width, height] pairs",
            "e.g. [1.0, 1.5] or [[512, 512], [448, 576]]",
        )
    if kind == "sizes" and not (
        isinstance(value, list)
        and value
        and all(
            isinstance(v, list) and len(v) == 3 and all(_is_int(x) and x > 0 for x in v)
            for v in value
        )
    ):
        return "must be a non-empty list of [width, height, frames]", "e.g. [[512, 512, 33]]"
    if kind == "frames" and not (
        isinstance(value, list) and value and all(_is_int(v) and v >= 1 for v in value)
    ):
        return "must be a non-empty list of frame counts >= 1", "e.g. [1, 33]"
    return None


# Keys only a [[directory]] entry reads (the top level ignores them).
DIRECTORY_ONLY = ("path", "mask_path", "default_mask_file", "control_path")


def report_unknown(loaded: Loaded, result: ImportResult) -> None:
    """Report the keys diffusion-pipe does not read where they are (it ignores them
    silently) as unmapped options of ``result``."""
    sections: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
        ("top level", loaded.top, ("subsample_ratio",))
    ]
    sections += [(d.where, d.values, DIRECTORY_ONLY) for d in loaded.directories]
    for where, values, own in sections:
        known = (*SHARED_KEYS, *own)
        for key, value in values.items():
            if key in known:
                continue
            if key in DIRECTORY_ONLY or key == "subsample_ratio":
                detail = (
                    "a [[directory]] key: diffusion-pipe ignores it at the top level"
                    if key in DIRECTORY_ONLY
                    else "a top-level key: diffusion-pipe ignores it in a [[directory]] entry"
                )
                reason = NO_EQUIVALENT
            elif key in TRAINING_KEYS:
                detail = (
                    "a training-config key: diffusion-pipe reads it from the training config "
                    "only, so it has no effect here; import the training config to carry it "
                    "over"
                )
                reason = MANUAL
            else:
                hint = suggest(key, known)
                detail = "not a diffusion-pipe dataset key: diffusion-pipe ignores it" + (
                    f" ({hint}?)" if hint else ""
                )
                reason = NO_EQUIVALENT
            result.unmapped.append(UnmappedOption(key, value, where, reason, detail))
    ratio = loaded.top.get("subsample_ratio")
    if ratio is not None:
        result.unmapped.append(
            UnmappedOption(
                "subsample_ratio",
                ratio,
                "top level",
                MANUAL,
                "diffusion-pipe trains the first share of each epoch's batches; ours has no "
                "share of the whole: set Concept.samples_per_epoch (a fixed count per concept) "
                "or fractional repeats",
            )
        )
