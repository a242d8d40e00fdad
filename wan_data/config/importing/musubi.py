"""Read a musubi-tuner dataset TOML (``[general]`` + ``[[datasets]]``) into our configuration.

The format and its defaults are musubi-tuner's at ``kohya-ss/musubi-tuner@30c658c4``:
``src/musubi_tuner/dataset/config_utils.py`` (``BaseDatasetParams``, ``VideoDatasetParams``,
``ConfigSanitizer``: which keys ``[general]`` and each dataset may hold, and their types;
``BlueprintGenerator``: a dataset's value, else ``[general]``'s, else the default),
``src/musubi_tuner/dataset/image_video_dataset.py`` (``VideoDataset``: target_frames rounded
down to 4k+1, ``uniform`` with ``frame_sample = 1`` is ``head``, the ``frame_extraction`` modes)
and ``docs/dataset_config.md``. musubi rejects unknown keys, so this importer does too, with
every problem of the file in one :class:`~wan_data.errors.ConfigError`. The file's keys, defaults
and checks are :mod:`~wan_data.config.importing.musubi_format`; this module maps them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from wan_data.config.importing.musubi_format import (
    MUSUBI_DEFAULTS,
    SAMPLING,
    Dataset,
    load,
    resolved,
    validate,
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

__all__ = ["MUSUBI_DEFAULTS", "import_musubi"]

log = logging.getLogger("wan_data")

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
    raw = load(source)
    general, datasets = validate(raw, source)
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


def _resolution(value: Any) -> tuple[tuple[int, int], ...]:
    if isinstance(value, (list, tuple)):
        return ((int(value[0]), int(value[1])),)
    return ((int(value), int(value)),)


def _map_dataset(dataset: Dataset, general: dict[str, Any], result: ImportResult) -> dict[str, Any]:
    """The concept of one dataset (appended to ``result``) and its per-source options."""
    options: dict[str, Any] = {}
    resolution, _ = resolved(dataset, general, "resolution")
    options["resolution"] = _resolution(resolution)
    options["no_upscale"] = resolved(dataset, general, "bucket_no_upscale")[0]
    if dataset.video:  # an image dataset has no frame keys: an image is one frame in ours too
        _map_video(dataset, options, result)
    for key, detail in _NO_EQUIVALENT_DETAIL.items():
        if key in dataset.values:
            result.unmapped.append(
                UnmappedOption(key, dataset.values[key], dataset.where, NO_EQUIVALENT, detail)
            )
    repeats, _ = resolved(dataset, general, "num_repeats")
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


def _map_video(dataset: Dataset, options: dict[str, Any], result: ImportResult) -> None:
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
    options["sampling"] = SAMPLING[mode]
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
    datasets: list[Dataset],
    general: dict[str, Any],
    result: ImportResult,
    remaining: list[dict[str, Any]],
    vae: str | None,
) -> None:
    """Per-concept leftovers, and the options musubi sets per dataset but ours once per
    dataset object (batch_size as Concept.batch_size, caption_extension, cache_directory)."""
    sizes = [resolved(d, general, "batch_size")[0] for d in datasets]
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
        extensions = [(resolved(d, general, "caption_extension"), d) for d in folders]
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
    buckets = {(resolved(d, general, "enable_bucket")) for d in datasets}
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


def _map_cache(datasets: list[Dataset], result: ImportResult, vae: str | None) -> None:
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


def _general_notes(datasets: list[Dataset], result: ImportResult) -> None:
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
