"""What a OneTrainer concepts JSON is: its keys, defaults and checks.

OneTrainer's ``modules/util/config/ConceptConfig.py`` at ``Nerogar/OneTrainer@23df3832``: the
concept, ``image`` and ``text`` keys with their defaults, the ``__version`` migrations, and the
types and values each key takes. :mod:`wan_data.config.importing.onetrainer` maps a checked
file; this module only reads and checks it, every problem at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wan_data.errors import ConfigError, format_error

__all__ = [
    "COLORS",
    "CONCEPT_DEFAULTS",
    "IMAGE_DEFAULTS",
    "TEXT_DEFAULTS",
    "get_value",
    "load_concepts",
    "validate_concepts",
]


# ConceptConfig.default_values() (seed is random there: a file always holds one).
CONCEPT_DEFAULTS: dict[str, Any] = {
    "name": "",
    "path": "",
    "seed": None,
    "enabled": True,
    "type": "STANDARD",
    "include_subdirectories": False,
    "image_variations": 1,
    "text_variations": 1,
    "balancing": 1.0,
    "balancing_strategy": "REPEATS",
    "loss_weight": 1.0,
    "concept_stats": {},
}
IMAGE_DEFAULTS: dict[str, Any] = {
    "enable_crop_jitter": True,
    "enable_random_flip": False,
    "enable_fixed_flip": False,
    "enable_random_rotate": False,
    "enable_fixed_rotate": False,
    "random_rotate_max_angle": 0.0,
    "enable_random_brightness": False,
    "enable_fixed_brightness": False,
    "random_brightness_max_strength": 0.0,
    "enable_random_contrast": False,
    "enable_fixed_contrast": False,
    "random_contrast_max_strength": 0.0,
    "enable_random_saturation": False,
    "enable_fixed_saturation": False,
    "random_saturation_max_strength": 0.0,
    "enable_random_hue": False,
    "enable_fixed_hue": False,
    "random_hue_max_strength": 0.0,
    "enable_resolution_override": False,
    "resolution_override": "512",
    "enable_random_circular_mask_shrink": False,
    "enable_random_mask_rotate_crop": False,
}
TEXT_DEFAULTS: dict[str, Any] = {
    "prompt_source": "sample",
    "prompt_path": "",
    "enable_tag_shuffling": False,
    "tag_delimiter": ",",
    "keep_tags_count": 1,
    "tag_dropout_enable": False,
    "tag_dropout_mode": "FULL",
    "tag_dropout_probability": 0.0,
    "tag_dropout_special_tags_mode": "NONE",
    "tag_dropout_special_tags": "",
    "tag_dropout_special_tags_regex": False,
    "caps_randomize_enable": False,
    "caps_randomize_mode": "capslock, title, first, random",
    "caps_randomize_probability": 0.0,
    "caps_randomize_lowercase": False,
}
_TYPES = ("STANDARD", "VALIDATION", "PRIOR_PREDICTION")
_STRATEGIES = ("REPEATS", "SAMPLES")
_PROMPT_SOURCES = ("sample", "concept", "filename")
COLORS = ("brightness", "contrast", "saturation", "hue")
_DOC = "see OneTrainer's modules/util/config/ConceptConfig.py"


def load_concepts(source: str) -> Any:
    """The parsed JSON of a OneTrainer concepts file.

    Raises:
        ConfigError: the file cannot be read or is not JSON.
    """
    try:
        text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            format_error(
                "OneTrainer concepts file",
                source,
                f"could not be read ({type(exc).__name__}: {exc})",
                "pass the concepts JSON (training_concepts/concepts.json by default)",
            )
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            format_error(
                "OneTrainer concepts file",
                source,
                f"is not valid JSON ({exc})",
                "fix the line named",
                path=source,
            )
        ) from None


def _migrate(concept: dict[str, Any]) -> dict[str, Any]:
    """ConceptConfig's migrations: version 0 called ``balancing`` ``repeats``, version 1 had
    ``validation_concept`` (a bool) instead of ``type``."""
    version = concept.get("__version", 0)
    data = dict(concept)
    if version == 0 and "repeats" in data:
        data.setdefault("balancing", data.pop("repeats"))
    if version <= 1 and "validation_concept" in data:
        flag = data.pop("validation_concept")
        data.setdefault("type", "VALIDATION" if flag else "STANDARD")
    data.pop("__version", None)
    return data


def validate_concepts(raw: Any, source: str) -> list[dict[str, Any]]:
    """The concepts of ``raw`` as dicts, checked against OneTrainer's schema.

    Raises:
        ConfigError: not a list of concept objects, with every problem of the file.
    """
    if not isinstance(raw, list):
        raise ConfigError(
            format_error(
                "OneTrainer concepts file",
                type(raw).__name__,
                "must be a JSON list of concept objects",
                'a training config (with "concepts" inside) is not a concepts file: import '
                "the file its concept_file_name names",
                path=source,
            )
        )
    problems: list[str] = []
    concepts = []
    for index, item in enumerate(raw):
        where = f"[{index}]"
        if not isinstance(item, dict):
            problems.append(
                format_error(where, type(item).__name__, "must be a concept object", path=source)
            )
            continue
        concept = _migrate(item)
        problems += _check(concept, where, source)
        concepts.append(concept)
    if problems:
        raise ConfigError(problems)
    return concepts


def _kind(default: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, (int, float)):
        return "number" if isinstance(default, float) else "int"
    if isinstance(default, dict):
        return "object"
    return "str"


_RULES = {
    "bool": "must be true or false",
    "int": "must be an integer",
    "number": "must be a number",
    "object": "must be an object",
    "str": "must be a string",
}


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    return isinstance(value, str)


def _check(concept: dict[str, Any], where: str, source: str) -> list[str]:
    problems = []
    for section, defaults in (
        ("", CONCEPT_DEFAULTS),
        ("image", IMAGE_DEFAULTS),
        ("text", TEXT_DEFAULTS),
    ):
        values = concept if not section else concept.get(section, {})
        label = f"{where}.{section}" if section else where
        if not isinstance(values, dict):
            problems.append(
                format_error(label, type(values).__name__, "must be an object", path=source)
            )
            continue
        for key, value in values.items():
            if key not in defaults:
                continue  # reported as unmapped: OneTrainer ignores keys it does not know
            kind = "int" if key == "seed" else _kind(defaults[key])
            if not _type_ok(value, kind):
                problems.append(
                    format_error(f"{label}.{key}", value, _RULES[kind], _DOC, path=source)
                )
    path = concept.get("path")
    if not isinstance(path, str) or not path.strip():
        problems.append(
            format_error(
                f"{where}.path",
                path if path is not None else "missing",
                "must name the concept's folder",
                path=source,
            )
        )
    for key, choices in (("type", _TYPES), ("balancing_strategy", _STRATEGIES)):
        value = concept.get(key, CONCEPT_DEFAULTS[key])
        if isinstance(value, str) and value not in choices:
            problems.append(
                format_error(
                    f"{where}.{key}", value, f"must be one of {', '.join(choices)}", path=source
                )
            )
    text = concept.get("text", {})
    prompt = text.get("prompt_source", "sample") if isinstance(text, dict) else "sample"
    if isinstance(prompt, str) and prompt not in _PROMPT_SOURCES:
        problems.append(
            format_error(
                f"{where}.text.prompt_source",
                prompt,
                f"must be one of {', '.join(_PROMPT_SOURCES)}",
                path=source,
            )
        )
    balancing = concept.get("balancing", 1.0)
    weight = concept.get("loss_weight", 1.0)
    if _type_ok(balancing, "number") and balancing <= 0:
        problems.append(format_error(f"{where}.balancing", balancing, "must be > 0", path=source))
    if _type_ok(weight, "number") and weight < 0:
        problems.append(format_error(f"{where}.loss_weight", weight, "must be >= 0", path=source))
    return problems


# -- mapping -------------------------------------------------------------------------------


def get_value(concept: dict[str, Any], section: str, key: str) -> Any:
    """A concept's ``section`` (``image``/``text``) value of ``key``, or OneTrainer's default for
    it.
    """
    defaults = {"image": IMAGE_DEFAULTS, "text": TEXT_DEFAULTS}[section]
    return concept.get(section, {}).get(key, defaults[key])
