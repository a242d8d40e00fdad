"""Read a OneTrainer concepts JSON (a list of ``ConceptConfig`` dicts) into our configuration.

The format is OneTrainer's at ``Nerogar/OneTrainer@23df3832``:
``modules/util/config/ConceptConfig.py`` (the concept, ``image`` and ``text`` keys, their
defaults and the ``__version`` migrations: ``repeats`` became ``balancing``,
``validation_concept`` became ``type``), ``modules/util/enum/BalancingStrategy.py``,
``modules/util/enum/ConceptType.py``, ``modules/dataLoader/mixin/DataLoaderMgdsMixin.py``
(the file is a JSON list; ``VALIDATION`` concepts form the validation set) and
``modules/dataLoader/mixin/DataLoaderText2ImageMixin.py`` (``prompt_source``: ``sample`` reads
``<file>.txt``, one random line; ``concept`` a line of ``prompt_path``; ``filename`` the name).
The frame count, resolution and batch size are in OneTrainer's training config, not here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from wan_data.config.importing.onetrainer_format import (
    COLORS,
    CONCEPT_DEFAULTS,
    IMAGE_DEFAULTS,
    TEXT_DEFAULTS,
    get_value,
    load_concepts,
    validate_concepts,
)
from wan_data.config.importing.result import (
    MANUAL,
    NO_EQUIVALENT,
    SEMANTICS_DIFFER,
    ImportResult,
    StageSpec,
    UnmappedOption,
    common_value,
    hoist_common,
    set_option,
)
from wan_data.errors import ConfigError, format_error
from wan_data.sources.concepts import Concept
from wan_data.sources.metadata_files import split_caption

__all__ = ["CONCEPT_DEFAULTS", "IMAGE_DEFAULTS", "TEXT_DEFAULTS", "import_onetrainer"]

log = logging.getLogger("wan_data")


@dataclass
class _Mapped:
    """One training concept while it is mapped: its concept fields, per-source options and
    the dataset-level values it asks for (kept when every concept asks for the same)."""

    where: str
    path: str
    concept: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    flip: float = 0.0
    jitter: dict[str, float] = field(default_factory=dict)
    prompt_source: str = "sample"
    variations: int = 1


def import_onetrainer(path: str | os.PathLike[str]) -> ImportResult:
    """A OneTrainer concepts JSON as concepts and options.

    Raises:
        ConfigError: the file cannot be read, is not JSON, is not a list of concept objects,
            has values of the wrong type or leaves no concept to train: every problem at
            once, each naming the file and the key path (``[2].text.prompt_source``).
    """
    source = os.fspath(path)
    raw = load_concepts(source)
    concepts = validate_concepts(raw, source)
    result = ImportResult(peer="onetrainer", source=source)
    mapped = [m for m in (_map_concept(i, c, result) for i, c in enumerate(concepts)) if m]
    if not mapped:
        raise ConfigError(
            format_error(
                "concepts",
                source,
                "has no enabled STANDARD concept to train",
                'enable one ("enabled": true) or import the file the training concepts are in',
                path=source,
            )
        )
    # keep_tokens is set only where tags are shuffled or dropped; elsewhere it does nothing.
    remaining = hoist_common([m.options for m in mapped], result.options, ("keep_tokens",))
    result.concepts = [
        Concept(root=m.path, options=options, **m.concept)
        for m, options in zip(mapped, remaining, strict=True)
    ]
    _map_shared(mapped, result)
    result.notes.append(
        "frames, resolution and batch_size are in OneTrainer's training config, not the "
        "concepts file: set them on the dataset (frames=, resolution=, batch_size=)"
    )
    log.info(
        "imported %s: %d concept(s), %d option(s), %d unmapped",
        source,
        len(result.concepts),
        len(result.options),
        len(result.unmapped),
    )
    return result


# -- reading and checking ------------------------------------------------------------------


def _map_concept(index: int, concept: dict[str, Any], result: ImportResult) -> _Mapped | None:
    where = f"[{index}]"
    path = concept["path"]
    label = f"{where} ({concept.get('name') or path})"
    if not concept.get("enabled", True):
        result.notes.append(f"{label}: enabled = false, skipped")
        return None
    kind = concept.get("type", "STANDARD")
    if kind != "STANDARD":
        detail = (
            "OneTrainer validates on whole VALIDATION concepts; ours holds out sources of the "
            "training roots by val_fraction / val_count (split='val'): to validate on this "
            f"folder, build a second dataset over it, WanVideoDataset({path!r}, ...)"
            if kind == "VALIDATION"
            else "its samples train toward the base model's own prediction (prior "
            "preservation); ours has no such mode: add it as a Concept (e.g. with a lower "
            "loss_weight) if it should train as data"
        )
        result.unmapped.append(UnmappedOption("type", kind, where, MANUAL, detail + "; skipped"))
        return None
    mapped = _Mapped(where=where, path=path)
    _map_fields(concept, mapped, result)
    _map_image(concept, mapped, result)
    _map_text(concept, mapped, result)
    for key, value in concept.items():
        if key not in CONCEPT_DEFAULTS and key not in ("image", "text"):
            result.unmapped.append(
                UnmappedOption(
                    key,
                    value,
                    where,
                    NO_EQUIVALENT,
                    "not a ConceptConfig key; OneTrainer ignores it",
                )
            )
    for section, defaults in (("image", IMAGE_DEFAULTS), ("text", TEXT_DEFAULTS)):
        for key, value in concept.get(section, {}).items():
            if key not in defaults:
                result.unmapped.append(
                    UnmappedOption(
                        f"{section}.{key}",
                        value,
                        where,
                        NO_EQUIVALENT,
                        f"not a {section} key of ConceptConfig; OneTrainer ignores it",
                    )
                )
    return mapped


def _map_fields(concept: dict[str, Any], mapped: _Mapped, result: ImportResult) -> None:
    where = mapped.where
    name = concept.get("name", "")
    if name and name != PurePath(os.path.abspath(mapped.path)).name:
        mapped.concept["name"] = name
    balancing = concept.get("balancing", 1.0)
    if concept.get("balancing_strategy", "REPEATS") == "SAMPLES":
        mapped.concept["samples_per_epoch"] = max(1, int(balancing))
        if balancing != int(balancing):
            result.notes.append(
                f"{where}.balancing = {balancing} with SAMPLES: imported as samples_per_epoch="
                f"{max(1, int(balancing))} (a whole number of samples)"
            )
    elif balancing != 1:
        mapped.concept["repeats"] = balancing
    weight = concept.get("loss_weight", 1.0)
    if weight != 1:
        mapped.concept["loss_weight"] = float(weight)
    if "seed" in concept:
        result.unmapped.append(
            UnmappedOption(
                "seed",
                concept["seed"],
                where,
                SEMANTICS_DIFFER,
                "OneTrainer seeds each concept; ours has one seed per dataset (seed=, "
                "default 0), from which every concept's draws are derived",
            )
        )
    if not concept.get("include_subdirectories", False):
        result.unmapped.append(
            UnmappedOption(
                "include_subdirectories",
                False,
                where,
                SEMANTICS_DIFFER,
                "ours always walks folders recursively: files in subfolders of "
                f"{mapped.path} are included; move them out, or list the files in a .jsonl",
            )
        )
    mapped.variations = concept.get("image_variations", 1)
    if concept.get("text_variations", 1) != 1:
        result.unmapped.append(
            UnmappedOption(
                "text_variations",
                concept["text_variations"],
                where,
                NO_EQUIVALENT,
                "ours caches no caption variants: a caption is drawn (and shuffled) every epoch",
            )
        )
    if concept.get("concept_stats"):
        result.notes.append(
            f"{where}.concept_stats: statistics OneTrainer computed; not a setting, dropped"
        )


def _map_image(concept: dict[str, Any], mapped: _Mapped, result: ImportResult) -> None:
    where = f"{mapped.where}.image"
    mapped.options["crop"] = (
        "random" if get_value(concept, "image", "enable_crop_jitter") else "center"
    )
    if get_value(concept, "image", "enable_fixed_flip"):
        mapped.flip = 1.0
    elif get_value(concept, "image", "enable_random_flip"):
        mapped.flip = 0.5
    for color in COLORS:
        if get_value(concept, "image", f"enable_random_{color}"):
            strength = float(get_value(concept, "image", f"random_{color}_max_strength"))
            # OneTrainer shifts hue by half its strength (mgds RandomHue); ours by `hue`.
            mapped.jitter[color] = strength / 2 if color == "hue" else strength
        if get_value(concept, "image", f"enable_fixed_{color}"):
            result.unmapped.append(
                UnmappedOption(
                    f"image.enable_fixed_{color}",
                    True,
                    where,
                    NO_EQUIVALENT,
                    f"ColorJitter draws the {color} change at random per clip; a fixed change "
                    "is a preprocessing step of the files",
                )
            )
    for key, detail in (
        ("enable_random_rotate", "ours has no rotation augmentation"),
        ("enable_fixed_rotate", "ours has no rotation augmentation"),
        ("enable_random_circular_mask_shrink", "ours has no masked training"),
        ("enable_random_mask_rotate_crop", "ours has no masked training"),
    ):
        if get_value(concept, "image", key):
            result.unmapped.append(
                UnmappedOption(f"image.{key}", True, where, NO_EQUIVALENT, detail)
            )
    if get_value(concept, "image", "enable_resolution_override"):
        text = str(get_value(concept, "image", "resolution_override")).strip()
        resolution = _resolution(text)
        if resolution is None:
            result.unmapped.append(
                UnmappedOption(
                    "image.resolution_override",
                    text,
                    where,
                    SEMANTICS_DIFFER,
                    "a list of sizes trains every sample at one of them; ours puts a source "
                    "in one tier (the largest not exceeding its area): set "
                    "Concept.options['resolution'] by hand",
                )
            )
        else:
            mapped.options["resolution"] = resolution


def _resolution(text: str) -> tuple[tuple[int, int], ...] | None:
    """OneTrainer's resolution strings (ui/validation_helpers.py): ``"512"`` or ``"WxH"``."""
    if "x" in text:
        parts = [p.strip() for p in text.split("x")]
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            return ((int(parts[0]), int(parts[1])),)
        return None
    if text.isdigit():
        return ((int(text), int(text)),)
    return None


def _map_text(concept: dict[str, Any], mapped: _Mapped, result: ImportResult) -> None:
    where = f"{mapped.where}.text"
    source = get_value(concept, "text", "prompt_source")
    mapped.prompt_source = source
    if source == "concept":
        prompt_path = get_value(concept, "text", "prompt_path")
        try:
            captions = split_caption(Path(prompt_path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            result.unmapped.append(
                UnmappedOption(
                    "text.prompt_path",
                    prompt_path,
                    where,
                    MANUAL,
                    f"could not be read here ({type(exc).__name__}); set Concept.caption to "
                    "its lines (one is drawn per sample)",
                )
            )
        else:
            mapped.concept["caption"] = "\n".join(captions)
            result.notes.append(
                f"{where}.prompt_source = 'concept': the lines of {prompt_path} are the "
                "concept's caption; OneTrainer gives them to every file, ours only to files "
                "without a caption of their own"
            )
    shuffle = bool(get_value(concept, "text", "enable_tag_shuffling"))
    dropout = bool(get_value(concept, "text", "tag_dropout_enable"))
    mapped.options["shuffle_tags"] = shuffle
    mapped.options["tag_dropout"] = (
        float(get_value(concept, "text", "tag_dropout_probability")) if dropout else 0.0
    )
    if shuffle or dropout:
        mapped.options["keep_tokens"] = get_value(concept, "text", "keep_tags_count")
        delimiter = get_value(concept, "text", "tag_delimiter")
        if delimiter != ",":
            result.unmapped.append(
                UnmappedOption(
                    "text.tag_delimiter", delimiter, where, NO_EQUIVALENT, "ours splits tags on ','"
                )
            )
    if dropout:
        mode = get_value(concept, "text", "tag_dropout_mode")
        if mode != "FULL":
            result.unmapped.append(
                UnmappedOption(
                    "text.tag_dropout_mode",
                    mode,
                    where,
                    SEMANTICS_DIFFER,
                    "ours drops each tag with probability tag_dropout (OneTrainer's FULL mode)",
                )
            )
        special = get_value(concept, "text", "tag_dropout_special_tags_mode")
        if special != "NONE":
            result.unmapped.append(
                UnmappedOption(
                    "text.tag_dropout_special_tags_mode",
                    special,
                    where,
                    NO_EQUIVALENT,
                    "ours has no list of tags to always or never drop (keep_tokens keeps "
                    "the first N)",
                )
            )
    if get_value(concept, "text", "caps_randomize_enable"):
        result.unmapped.append(
            UnmappedOption(
                "text.caps_randomize_enable",
                True,
                where,
                NO_EQUIVALENT,
                "ours never changes a caption's case",
            )
        )


def _map_shared(mapped: list[_Mapped], result: ImportResult) -> None:
    """What ours sets once per dataset: kept when every concept agrees, else reported."""
    same, flip = common_value(m.flip for m in mapped)
    if same and flip:
        result.stages.append(StageSpec("RandomFlip", {"p": flip}))
    elif not same:
        _differ(
            mapped, result, "image.enable_random_flip", [m.flip > 0 for m in mapped], "RandomFlip"
        )
    same, jitter = common_value(m.jitter for m in mapped)
    if same and jitter:
        result.stages.append(StageSpec("ColorJitter", dict(jitter)))
    elif not same:
        _differ(
            mapped, result, "image.enable_random_*", [dict(m.jitter) for m in mapped], "ColorJitter"
        )
    same, source = common_value(m.prompt_source for m in mapped)
    if same and source == "filename":
        result.options["missing_caption"] = "filename"
        result.notes.append(
            "text.prompt_source = 'filename': imported as missing_caption='filename'; "
            "OneTrainer captions every file by its name, ours only files without a caption"
        )
    elif not same:
        for m in mapped:
            if m.prompt_source == "filename":
                result.unmapped.append(
                    UnmappedOption(
                        "text.prompt_source",
                        "filename",
                        m.where,
                        MANUAL,
                        "ours sets missing_caption='filename' for the whole dataset and the "
                        "other concepts caption differently: build a dataset for this concept",
                    )
                )
    same, variations = common_value(m.variations for m in mapped)
    if same and variations != 1:
        set_option(result.options, "variations", variations)
        result.notes.append(
            f"image_variations = {variations}: imported as variations (takes effect with a "
            "latent cache: vae= and cache_dir=)"
        )
    elif not same:
        _differ(mapped, result, "image_variations", [m.variations for m in mapped], "variations")


def _differ(
    mapped: list[_Mapped], result: ImportResult, key: str, values: list[Any], ours: str
) -> None:
    for m, value in zip(mapped, values, strict=True):
        result.unmapped.append(
            UnmappedOption(
                key,
                value,
                m.where,
                MANUAL,
                f"the concepts differ, and ours has one {ours} for the whole dataset: choose "
                "one, or build a dataset per setting",
            )
        )
