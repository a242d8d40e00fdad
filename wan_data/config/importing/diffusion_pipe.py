"""Read a diffusion-pipe dataset TOML (top-level options + ``[[directory]]``) into our config.

The format and its behaviour are diffusion-pipe's at ``tdrussell/diffusion-pipe@8f83dbf2``
(``8f83dbf25d03219df705570ec03e62be04bc402f``): ``examples/dataset.toml`` and
``examples/main_example.toml``; ``utils/dataset.py`` (``DirectoryDataset``: every top-level key
but ``subsample_ratio`` may be overridden per directory; ``resolutions`` are areas and every
sample is trained at *each* of them; ``enable_ar_bucket`` off is one square bucket, on is
``ar_buckets`` or ``num_ar_buckets`` aspects between ``min_ar`` and ``max_ar``, each side rounded
to the model's 16; ``frame_buckets`` always gains 1, which only images take, and a video takes
the longest bucket it fills at the model's rate; ``path.glob('*')`` reads one folder level and
``<file>.txt`` as one caption; ``cache_shuffle_num`` caches that many shuffled captions per
file, each an entry of the epoch; ``skip_empty_caption`` defaults to true), ``models/base.py``
(``PreprocessMediaFile``: the bucket's frame count rounded down to 4k+1, ``video_clip_mode``
``single_beginning`` / ``single_middle``, ``multiple_overlapping`` commented out), and
``models/wan/wan.py`` (16 fps, 24 for TI2V-5B and SkyReels-V2; 32-pixel sides for TI2V-5B).
The file's checks are :mod:`wan_data.config.importing.diffusion_pipe_format`.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from wan_data.config.importing.diffusion_pipe_format import (
    DIFFUSION_PIPE_DEFAULTS,
    Directory,
    Loaded,
    get_value,
    load,
    report_unknown,
)
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
from wan_data.sources.concepts import Concept

__all__ = ["DIFFUSION_PIPE_DEFAULTS", "import_diffusion_pipe"]

log = logging.getLogger("wan_data")

# diffusion-pipe's video_clip_mode -> our sampling (config/peers.py SAMPLING_PEERS).
_SAMPLING = {
    "single_beginning": "head",
    "single_middle": "middle",
    "multiple_overlapping": "overlapping",
}
# Wan's pixel multiple in diffusion-pipe (BasePipeline.pixels_round_to_multiple; 32: TI2V-5B).
_STEP = 16

_NO_EQUIVALENT_DETAIL = {
    "mask_path": "masked training (a per-pixel loss weight from a mask image of the same name) "
    "has no counterpart: ours yields no masks; the loss is the trainer's",
    "default_mask_file": "masks have no counterpart (see mask_path)",
    "control_path": "control images (Flux Kontext) have no counterpart; Wan conditions are made "
    "from the clip itself (conditioning='i2v' / 'flf2v')",
    "online_captions": "the captions of <path>/captions.json read per step have no counterpart: "
    "ours reads <file>.txt sidecars or a .jsonl / .csv metadata file with a caption column",
}


def import_diffusion_pipe(path_or_text: str | os.PathLike[str]) -> ImportResult:
    """A diffusion-pipe dataset TOML as concepts and options.

    Args:
        path_or_text: the dataset TOML (top-level options and ``[[directory]]`` entries), or
            the training TOML whose ``dataset`` names it (then its ``video_clip_mode``,
            ``micro_batch_size_per_gpu``, ``image_micro_batch_size_per_gpu``,
            ``uncond_fraction`` and ``eval_datasets`` are imported too); a path, or the TOML
            text itself (a ``str`` with a line break).

    Raises:
        ConfigError: the file cannot be read, is not TOML, has values of the wrong type or
            lacks what diffusion-pipe needs (``resolutions``, a ``[[directory]]`` with a
            ``path``...): every problem at once, each naming the file and the key path
            (``directory[1].frame_buckets``).
    """
    loaded = load(path_or_text)
    result = ImportResult(peer="diffusion_pipe", source=loaded.source)
    result.notes += loaded.notes
    report_unknown(loaded, result)
    mapped: list[tuple[Directory, float, dict[str, Any]]] = []
    seen: set[tuple[str, str]] = set()
    for directory in loaded.directories:
        repeats, per_resolution = _map_directory(directory, loaded.top, result, seen)
        mapped += [(directory, repeats, options) for options in per_resolution]
    remaining = hoist_common([m[2] for m in mapped], result.options)
    sizes = _batch_sizes(loaded.training, [m[2] for m in mapped], result)
    same_size, size = common_value(sizes)
    result.concepts = [
        Concept(
            root=directory.path,
            repeats=repeats,
            batch_size=None if same_size else own,
            options=options,
        )
        for (directory, repeats, _), options, own in zip(mapped, remaining, sizes, strict=True)
    ]
    if same_size:
        set_option(result.options, "batch_size", size)
    _map_captions(loaded, result)
    _unused_aspect_keys(loaded, result)
    _map_training(loaded, result)
    _general_notes(loaded, result)
    log.info(
        "imported %s: %d concept(s), %d option(s), %d unmapped",
        loaded.source,
        len(result.concepts),
        len(result.options),
        len(result.unmapped),
    )
    return result


# -- per directory -------------------------------------------------------------------------


def _unmapped(
    result: ImportResult,
    seen: set[tuple[str, str]],
    key: str,
    value: Any,
    where: str,
    reason: str,
    detail: str,
) -> None:
    """Report a setting once where it is written (a top-level value holds for every entry)."""
    if (where, key) not in seen:
        seen.add((where, key))
        result.unmapped.append(UnmappedOption(key, value, where, reason, detail))


def _label(origin: str, key: str) -> str:
    """A key as notes name it: ``directory[1].min_ar``, ``min_ar`` (top level) or
    ``min_ar (diffusion-pipe's default)``."""
    if origin.startswith("directory["):
        return f"{origin}.{key}"
    return key if origin == "top level" else f"{key} (diffusion-pipe's default)"


def _note(result: ImportResult, text: str) -> None:
    if text not in result.notes:
        result.notes.append(text)


def _map_directory(
    directory: Directory, top: dict[str, Any], result: ImportResult, seen: set[tuple[str, str]]
) -> tuple[float, list[dict[str, Any]]]:
    """A directory's repeat count and its per-source options, one dict per resolution (each
    becomes a concept: diffusion-pipe trains every sample at every resolution)."""

    def value(key: str) -> tuple[Any, str]:
        return get_value(directory, top, key)

    where = directory.where
    options: dict[str, Any] = {}
    for key, detail in _NO_EQUIVALENT_DETAIL.items():
        # Masks and control images are read from the entry only, online_captions from either.
        shared = key == "online_captions"
        given, origin = value(key) if shared else (directory.values.get(key), where)
        if given:
            _unmapped(result, seen, key, given, origin, NO_EQUIVALENT, detail)
    shuffle_metadata, origin = value("shuffle_metadata")
    if not shuffle_metadata:
        _unmapped(
            result,
            seen,
            "shuffle_metadata",
            False,
            origin,
            SEMANTICS_DIFFER,
            "diffusion-pipe then keeps the sorted file order before bucketing; ours always "
            "plans every epoch in a seeded random order (seed=)",
        )
    repeats, _ = value("num_repeats")
    repeats = _map_captions_of(directory, top, options, result, seen, repeats)
    sizes, origin = value("size_buckets")
    if sizes is not None:
        frames = sorted({(f - 1) // 4 * 4 + 1 for _w, _h, f in sizes} - {1}) or [1]
        _unmapped(
            result,
            seen,
            "size_buckets",
            sizes,
            origin,
            NO_EQUIVALENT,
            "ours makes its buckets from resolution (an area, every aspect up to max_aspect) "
            "and frames, not from a list of sizes: set resolution= to the area wanted and "
            f"frames={tuple(frames)}; resolutions and the aspect settings are not read with "
            "it, so the entry keeps our defaults",
        )
        return repeats, [options]
    options["frames"] = _frames(directory, top, result)
    square = _map_aspects(directory, top, options, result, seen)
    resolutions, origin = value("resolutions")
    targets = _targets(resolutions, square, _label(origin, "resolutions"), result)
    if len(targets) > 1:
        _note(
            result,
            f"{where}: diffusion-pipe trains every sample at each of its {len(targets)} "
            "resolutions (the folder counts once per resolution); imported as one concept per "
            "resolution over the same folder, which does the same. For ours to train each "
            "source once, at the largest tier its size reaches, use one concept with "
            f"resolution={tuple(targets)}",
        )
    return repeats, [{**options, "resolution": (target,)} for target in targets]


def _frames(directory: Directory, top: dict[str, Any], result: ImportResult) -> tuple[int, ...]:
    given, origin = get_value(directory, top, "frame_buckets")
    rounded = sorted({(f - 1) // 4 * 4 + 1 for f in given})
    label = _label(origin, "frame_buckets")
    bad = [f for f in given if (f - 1) % 4]
    if bad:
        _note(
            result,
            f"{label}: {bad} not 4k+1; diffusion-pipe cuts a video of such a "
            "bucket to the 4k+1 count below it (as Wan's VAE needs), so they are imported as "
            f"{[f for f in rounded if f > 1] or [1]}",
        )
    videos = [f for f in rounded if f > 1]
    if not videos:
        _note(
            result,
            f"{label} = {given} has no bucket above 1: diffusion-pipe then drops "
            "every video (a video never takes the 1-frame bucket) and trains the images; "
            "imported as frames=(1,), with which ours trains one frame of each video: set "
            "frames= to train videos",
        )
        return (1,)
    if 1 in given:
        _note(
            result,
            f"{label}: 1 is diffusion-pipe's image bucket and is left out: ours "
            "trains images as one frame whatever frames says (with 1 listed, ours would also "
            "train videos shorter than every other bucket as one frame, which diffusion-pipe "
            "drops)",
        )
    return tuple(videos)


def _map_aspects(
    directory: Directory,
    top: dict[str, Any],
    options: dict[str, Any],
    result: ImportResult,
    seen: set[tuple[str, str]],
) -> bool:
    """``max_aspect`` from the aspect settings; whether the buckets are one square."""

    def value(key: str) -> tuple[Any, str]:
        return get_value(directory, top, key)

    enabled, origin = value("enable_ar_bucket")
    if not enabled:
        options["max_aspect"] = 1.0
        _note(
            result,
            f"{_label(origin, 'enable_ar_bucket')} = false: diffusion-pipe crops every sample "
            "to one square bucket of each resolution's area; imported as that square with "
            "max_aspect=1.0 (raise max_aspect to bucket by aspect instead)",
        )
        return True
    ars, origin = value("ar_buckets")
    if ars:
        aspects = [a[0] / a[1] if isinstance(a, list) else float(a) for a in ars]
        widest = max(max(aspects), 1 / min(aspects), 1.0)
        options["max_aspect"] = round(widest, 3)
        _unmapped(
            result,
            seen,
            "ar_buckets",
            ars,
            origin,
            SEMANTICS_DIFFER,
            "ours has no list of aspects: it buckets every aspect the step allows up to "
            f"max_aspect={options['max_aspect']:g} (the widest of the list, either way), so "
            "fewer pixels are cropped but more buckets exist",
        )
        return False
    (low, low_at), (high, high_at) = value("min_ar"), value("max_ar")
    widest = max(high, 1 / low, 1.0)
    options["max_aspect"] = round(widest, 3)
    if not math.isclose(low * high, 1.0, rel_tol=1e-3):
        _note(
            result,
            f"{_label(low_at, 'min_ar')} = {low:g}, {_label(high_at, 'max_ar')} = {high:g}: "
            "ours bounds aspects symmetrically, 1/max_aspect..max_aspect; imported as max_aspect="
            f"{options['max_aspect']:g}, which also buckets the aspects outside "
            f"{low:g}..{high:g}",
        )
    count, origin = value("num_ar_buckets")
    _unmapped(
        result,
        seen,
        "num_ar_buckets",
        count,
        origin,
        SEMANTICS_DIFFER,
        f"diffusion-pipe has {count} aspects, evenly spaced in log space between min_ar and "
        "max_ar; ours has every aspect the step (16 px) allows within max_aspect, so a sample "
        "is cropped less but batches of several samples fill from fewer sources per bucket",
    )
    return False


def _unused_aspect_keys(loaded: Loaded, result: ImportResult) -> None:
    """The aspect keys diffusion-pipe does not read because enable_ar_bucket is off where they
    apply (top-level ones only when it is off for every directory)."""
    keys = ("ar_buckets", "min_ar", "max_ar", "num_ar_buckets")
    off = [d for d in loaded.directories if not get_value(d, loaded.top, "enable_ar_bucket")[0]]
    unused = [f"{d.where}.{k}" for d in off for k in keys if k in d.values]
    if len(off) == len(loaded.directories):
        unused = [k for k in keys if k in loaded.top] + unused
    if unused:
        result.notes.append(
            f"{', '.join(unused)}: not used by diffusion-pipe without enable_ar_bucket"
        )


def _targets(
    resolutions: list[Any], square: bool, where: str, result: ImportResult
) -> list[tuple[int, int]]:
    """Our target per resolution (the same area; diffusion-pipe dedups equal areas)."""
    targets: list[tuple[int, int]] = []
    areas: set[float] = set()
    for given in resolutions:
        width, height = (given[0], given[1]) if isinstance(given, list) else (given, given)
        area = round(float(width) * float(height), 3)
        if area in areas:
            continue
        areas.add(area)
        if square:
            side = _round(math.sqrt(area))
            target = (side, side)
        else:
            target = (_round(width), _round(height))
        if target != (width, height):
            _note(
                result,
                f"{where}: {given} is imported as {target[0]}x{target[1]} "
                + (
                    "(the square of its area, enable_ar_bucket being off; "
                    if square
                    else "(sides on the 16-pixel grid; "
                )
                + "diffusion-pipe rounds each bucket's sides to 16 the same way)",
            )
        targets.append(target)
    return sorted(targets, key=lambda t: t[0] * t[1])


def _round(side: float) -> int:
    return max(_STEP, round(side / _STEP) * _STEP)


def _map_captions_of(
    directory: Directory,
    top: dict[str, Any],
    options: dict[str, Any],
    result: ImportResult,
    seen: set[tuple[str, str]],
    repeats: float,
) -> float:
    """Caption prefix and tag shuffling of one directory; the repeat count they imply."""
    prefix, where = get_value(directory, top, "caption_prefix")
    if prefix:
        options["caption_prefix"] = prefix
        if not prefix.endswith((",", " ")):
            _note(
                result,
                f"{_label(where, 'caption_prefix')} = {prefix!r}: diffusion-pipe glues it to the "
                "caption as written; ours joins it with ', ' unless it ends with ',' or a space "
                "(end it with a space to keep diffusion-pipe's text)",
            )
    count, count_at = get_value(directory, top, "cache_shuffle_num")
    shuffle, shuffle_at = get_value(directory, top, "shuffle_tags")
    if count or shuffle:
        options["shuffle_tags"] = True
        variants = max(count, 1)
        label = (
            _label(count_at, "cache_shuffle_num") if count else _label(shuffle_at, "shuffle_tags")
        )
        _note(
            result,
            f"{label}: diffusion-pipe caches {variants} shuffled "
            f"cop{'ies' if variants > 1 else 'y'} of each caption, fixed for the run (the "
            "prefix stays first); ours reshuffles the tags every epoch (shuffle_tags=True)",
        )
        if count > 1:
            repeats = repeats * count
            _note(
                result,
                f"{directory.where}: cache_shuffle_num = {count} makes every file {count} "
                f"entries of diffusion-pipe's epoch, one per shuffled caption: imported as "
                f"repeats={repeats:g} (num_repeats x cache_shuffle_num)",
            )
        delimiter, where = get_value(directory, top, "cache_shuffle_delimiter")
        if delimiter != ", ":
            _unmapped(
                result,
                seen,
                "cache_shuffle_delimiter",
                delimiter,
                where,
                NO_EQUIVALENT,
                "ours splits tags on ',' only: rewrite the captions with ', ' between tags",
            )
    return repeats


# -- dataset level -------------------------------------------------------------------------


def _map_captions(loaded: Loaded, result: ImportResult) -> None:
    """skip_empty_caption, one per dataset in ours (the first directory's is used)."""
    values = [(get_value(d, loaded.top, "skip_empty_caption"), d) for d in loaded.directories]
    (first, _), _ = values[0]
    set_option(result.options, "missing_caption", "skip" if first else "empty")
    if first and all(origin == "diffusion-pipe default" for (_, origin), _ in values):
        _note(
            result,
            "skip_empty_caption is not set: diffusion-pipe's default (true) skips files "
            "without a caption (the [[directory]] comment of its example says otherwise; the "
            "code skips); imported as missing_caption='skip'",
        )
    for (value, origin), directory in values[1:]:
        if value != first:
            result.unmapped.append(
                UnmappedOption(
                    "skip_empty_caption",
                    value,
                    origin,
                    MANUAL,
                    "ours has one missing_caption per dataset; "
                    f"{'skip' if first else 'empty'!r} (of directory[0]) is used: build a "
                    f"dataset per setting to treat {directory.path} otherwise",
                )
            )


def _batch_sizes(
    training: dict[str, Any] | None, per_concept: list[dict[str, Any]], result: ImportResult
) -> list[int]:
    """micro_batch_size_per_gpu per concept: one number, or the entry of the resolution
    nearest each concept's (train.py / ConcatenatedBatchedDataset.post_init)."""
    given = (training or {}).get("micro_batch_size_per_gpu", 1)
    if not isinstance(given, list):
        return [given] * len(per_concept)
    sizes = []
    for options in per_concept:
        target = options.get("resolution", ((832, 480),))[0]
        side = math.sqrt(target[0] * target[1])
        sizes.append(int(min(given, key=lambda pair: abs(pair[0] - side))[1]))
    result.notes.append(
        f"micro_batch_size_per_gpu = {given}: diffusion-pipe picks the entry nearest each "
        "bucket's side; imported per resolution as the entry nearest it"
    )
    return sizes


def _map_training(loaded: Loaded, result: ImportResult) -> None:
    training = loaded.training
    if training is None:
        result.notes.append(
            "video_clip_mode and the micro batch sizes are in diffusion-pipe's training "
            "config, not the dataset file: import the training config (its `dataset` names "
            "this file) to carry them over; their defaults (single_beginning, 1) are ours "
            "(sampling='head', batch_size=1)"
        )
        return
    mode = training.get("video_clip_mode", "single_beginning")
    set_option(result.options, "sampling", _SAMPLING[mode])
    if mode == "multiple_overlapping":
        result.options["clips_per_video"] = 0
        result.notes.append(
            "video_clip_mode = 'multiple_overlapping' is refused by diffusion-pipe at the "
            "checked commit (commented out); imported as its older meaning, the fewest "
            "overlapping windows that cover the video (sampling='overlapping', "
            "clips_per_video=0)"
        )
    images = training.get("image_micro_batch_size_per_gpu")
    if isinstance(images, list):
        result.unmapped.append(
            UnmappedOption(
                "image_micro_batch_size_per_gpu",
                images,
                "training config",
                MANUAL,
                "per-resolution image batch sizes have no counterpart: ours sets one size per "
                "frame count (frame_batch_sizes=[(1, N)]) or per concept (Concept.batch_size)",
            )
        )
    elif images is not None:
        if any(c.batch_size is not None for c in result.concepts):
            result.notes.append(
                "image_micro_batch_size_per_gpu: a concept's batch_size wins over "
                "frame_batch_sizes in ours, so the images of those concepts batch at it"
            )
        if images != result.options.get("batch_size", 1):
            result.options["frame_batch_sizes"] = ((1, images),)
    fraction = training.get("uncond_fraction", 0.0)
    if fraction:
        result.unmapped.append(
            UnmappedOption(
                "uncond_fraction",
                fraction,
                "training config",
                MANUAL,
                f"our caption_dropout={fraction} does the same (seeded by sample key and "
                "epoch, where diffusion-pipe draws with Python's random) but substitutes the "
                "cached embedding of the empty caption, so it needs the text encoder: pass "
                "it with text_encoder= (and vae=, cache_dir=)",
            )
        )
    for index, entry in enumerate(training.get("eval_datasets", [])):
        result.unmapped.append(
            UnmappedOption(
                "eval_datasets",
                entry,
                f"training config eval_datasets[{index}]",
                MANUAL,
                "ours holds out sources of the training roots (split='val' with val_fraction / "
                "val_count); to evaluate on that dataset file, import it too and build a "
                "second dataset from it",
            )
        )
    result.notes.append(
        "the training config's other keys (model, adapter, optimizer, epochs...) are not "
        "dataset options and were not read"
    )


def _general_notes(loaded: Loaded, result: ImportResult) -> None:
    result.notes.append(
        "diffusion-pipe reads one folder level (and the members of .tar files in it); ours "
        "walks folders recursively and does not open .tar files: files in subfolders are now "
        "included"
    )
    result.notes.append(
        "diffusion-pipe reads <file>.txt (or <path>/captions.json when it exists) as one "
        "caption; ours reads the .txt and takes each non-blank line as a candidate (one is "
        "drawn per epoch): multi-line caption files train differently, captions.json is not "
        "read"
    )
    result.notes.append(
        "diffusion-pipe resamples videos to Wan's 16 fps before choosing the frame bucket, "
        "as ours does at fps=16 (the default); for TI2V-5B (24 fps, 32-pixel sides) pass "
        "preset='wan2.2-ti2v-5b' or fps=24 and step=32"
    )
    if any(not os.path.isabs(d.path) for d in loaded.directories):
        result.notes.append(
            "relative paths are kept as written: diffusion-pipe resolves them against the "
            "working directory, as ours does"
        )
