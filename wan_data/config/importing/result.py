"""What an import produces: :class:`ImportResult`, and what every importer shares.

An imported config is only useful if the user can see exactly what it became and what it did
not, so the result carries the concepts and options (to build the dataset from directly), a
runnable Python snippet and the ``wan-data`` command that say the same in text, and every peer
setting that was *not* carried over, each with where it was in the file and why.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wan_data.config.cli import command_line as config_command_line
from wan_data.config.cli import config_options
from wan_data.config.dataset_config import DatasetConfig
from wan_data.errors import ConfigError
from wan_data.sources.concepts import PER_SOURCE_OPTIONS, Concept, option_json

if TYPE_CHECKING:
    from wan_data.dataset import WanVideoDataset

__all__ = [
    "MANUAL",
    "NO_EQUIVALENT",
    "REASONS",
    "SEMANTICS_DIFFER",
    "ImportResult",
    "StageSpec",
    "UnmappedOption",
    "common_value",
    "hoist_common",
    "set_option",
]

NO_EQUIVALENT = "no equivalent"
SEMANTICS_DIFFER = "semantics differ"
MANUAL = "needs a manual decision"
REASONS = (NO_EQUIVALENT, SEMANTICS_DIFFER, MANUAL)
"""Why a peer setting was not carried over."""


@dataclass(frozen=True)
class UnmappedOption:
    """A peer setting the import did not carry over.

    Attributes:
        key: the peer's name for it (``enable_bucket``, ``image.enable_random_rotate``).
        value: its value in the file (or the peer's default, when that is what matters).
        where: where it is in the file (``general``, ``datasets[1]``, ``[2]``).
        reason: one of :data:`REASONS`.
        detail: what differs and what to do instead.
    """

    key: str
    value: Any
    where: str
    reason: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        """The setting as JSON (``value`` made JSON-native), for ``wan-data import --json``."""
        return {
            "key": self.key,
            "value": option_json(self.value),
            "where": self.where,
            "reason": self.reason,
            "detail": self.detail,
        }

    def __str__(self) -> str:
        return f"{self.where}: {self.key} = {self.value!r}: {self.reason}: {self.detail}"


@dataclass(frozen=True)
class StageSpec:
    """An augmentation stage to append to ``clip_stages``: a class of
    :mod:`wan_data.stages.augment` by name and its keyword arguments. Kept as a spec, not an
    object, so the snippet and the JSON can say it and :meth:`ImportResult.build` makes it."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def code(self) -> str:
        """The stage as Python source (``CropJitter(min_scale=0.9)``) for the printed snippet."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.name}({args})"

    def make(self) -> Any:
        """The stage object: the class of :mod:`wan_data.stages.augment` called with ``kwargs``."""
        from wan_data.stages import augment

        return getattr(augment, self.name)(**self.kwargs)


@dataclass
class ImportResult:
    """A peer's dataset config in our terms.

    Attributes:
        peer: the peer's key (``musubi``, ``onetrainer``; see ``config/peers.py``).
        source: the imported file.
        concepts: one :class:`Concept` per peer dataset / concept that trains.
        options: dataset-level flat options (what ``DatasetConfig.build`` and
            ``WanVideoDataset(**options)`` take).
        stages: augmentation stages for ``clip_stages`` (Python only).
        unmapped: every peer setting not carried over, with the reason.
        notes: what was carried over but behaves differently, and what was skipped.
    """

    peer: str
    source: str
    concepts: list[Concept] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    stages: list[StageSpec] = field(default_factory=list)
    unmapped: list[UnmappedOption] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    # -- building -----------------------------------------------------------------------

    def config(self) -> DatasetConfig:
        """The dataset-level options as a checked :class:`DatasetConfig`.

        Raises:
            ConfigError: every problem of the options.
        """
        return DatasetConfig.build(**self.options)

    def build(self, **overrides: Any) -> WanVideoDataset:
        """The dataset the import describes (``overrides`` win over the imported options).

        Raises:
            ConfigError: every problem of the concepts and options (missing roots included).
        """
        from wan_data.dataset import WanVideoDataset

        stages = [s.make() for s in self.stages]
        return WanVideoDataset(
            list(self.concepts), clip_stages=stages, **{**self.options, **overrides}
        )

    # -- as text ------------------------------------------------------------------------

    def python_code(self) -> str:
        """A runnable snippet that builds the dataset (``dataset = WanVideoDataset(...)``)."""
        lines = ["from wan_data import Concept, WanVideoDataset"]
        if self.stages:
            names = ", ".join(sorted({s.name for s in self.stages}))
            lines.append(f"from wan_data.stages.augment import {names}")
        lines += ["", "dataset = WanVideoDataset(", "    ["]
        for concept in self.concepts:
            lines.append(f"        {_concept_code(concept)},")
        lines.append("    ],")
        for name, value in self.options.items():
            lines.append(f"    {name}={value!r},")
        if self.stages:
            lines.append(f"    clip_stages=[{', '.join(s.code() for s in self.stages)}],")
        lines.append(")")
        return "\n".join(lines) + "\n"

    def command(self) -> str:
        """The ``wan-data`` subcommand the result maps to: ``cache`` with a latent cache (it
        fills it), else ``scan`` (it checks the dataset as training would read it)."""
        return "cache" if "vae" in self.options and "cache_dir" in self.options else "scan"

    def command_line_problems(self) -> list[str]:
        """Why the result has no ``wan-data`` command (empty when it has one)."""
        problems = []
        for index, concept in enumerate(self.concepts):
            extra = [
                f.name
                for f in dataclasses.fields(Concept)
                if f.name not in ("root", "name")
                and getattr(concept, f.name) != getattr(Concept(root=concept.root), f.name)
            ]
            if concept.name is not None:
                extra.insert(0, "name")
            if extra:
                problems.append(
                    f"concepts[{index}] ({concept.root}) sets {', '.join(extra)}: a Concept "
                    "field, which the command line cannot express (roots are plain paths)"
                )
        if self.stages:
            problems.append(
                "augmentations (" + ", ".join(s.code() for s in self.stages) + ") are Python "
                "only (clip_stages)"
            )
        command = self.command()
        taken = {f.name for _attribute, f, _spec in config_options(command)}
        missing = [name for name in self.options if name not in taken]
        if missing:
            problems.append(
                f"wan-data {command} does not take {', '.join(missing)}"
                + (
                    " (cache-only options: they need --vae and --cache-dir)"
                    if command == "scan"
                    else ""
                )
            )
        return problems

    def command_line(self) -> str | None:
        """The ``wan-data`` command that reads the same data with the same options, or
        ``None`` when the result is not expressible there (:meth:`command_line_problems`
        says why)."""
        if self.command_line_problems():
            return None
        try:
            config = self.config()
        except ConfigError:
            return None
        roots = [os.fspath(c.root) for c in self.concepts]
        return config_command_line(config, self.command(), roots)

    def as_dict(self) -> dict[str, Any]:
        """Everything, as JSON-ready values (``wan-data import --json``)."""
        return {
            "peer": self.peer,
            "source": self.source,
            "concepts": [_concept_json(c) for c in self.concepts],
            "options": {k: option_json(v) for k, v in self.options.items()},
            "stages": [{"name": s.name, "kwargs": dict(s.kwargs)} for s in self.stages],
            "unmapped": [u.as_dict() for u in self.unmapped],
            "notes": list(self.notes),
            "python": self.python_code(),
            "command_line": self.command_line(),
            "command_line_problems": self.command_line_problems(),
        }


def _concept_code(concept: Concept) -> str:
    args = [repr(os.fspath(concept.root))]
    default = Concept(root=concept.root)
    for f in dataclasses.fields(Concept):
        if f.name == "root":
            continue
        value = getattr(concept, f.name)
        if value != getattr(default, f.name):
            args.append(f"{f.name}={dict(value) if f.name == 'options' else value!r}")
    return f"Concept({', '.join(args)})"


def _concept_json(concept: Concept) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(Concept):
        value = getattr(concept, f.name)
        if f.name == "options":
            out[f.name] = {k: option_json(v) for k, v in value.items()}
        elif f.name == "root":
            out[f.name] = os.fspath(value)
        else:
            out[f.name] = value
    return out


def hoist_common(
    per_concept: Sequence[dict[str, Any]],
    options: dict[str, Any],
    inert: Collection[str] = (),
) -> list[dict[str, Any]]:
    """Move every per-source option whose value is the same in every concept that sets it
    into the dataset-level ``options`` (left out when it is our default); return what stays
    per concept. An option is hoisted only when every concept sets it, except the ``inert``
    ones: an importer leaves those out of a concept only where they have no effect (``stride``
    where the sampling is not 'slide', ``frames`` for a folder of images).

    One dataset-level value is what the peer meant when its datasets agree, and it keeps the
    concepts plain (a plain concept is a root on the command line).
    """
    names: list[str] = []
    for values in per_concept:
        names += [n for n in values if n not in names]
    remaining = [dict(values) for values in per_concept]
    defaults = DatasetConfig().flat()
    for name in names:
        given = [values[name] for values in per_concept if name in values]
        everywhere = name in inert or len(given) == len(per_concept)
        if everywhere and all(v == given[0] for v in given[1:]):
            set_option(options, name, given[0], defaults)
            for values in remaining:
                values.pop(name, None)
        else:
            # The dataset keeps our default, so a concept at the default needs no option.
            for values in remaining:
                if name in values and _same(values[name], defaults[name], name):
                    del values[name]
    for values in remaining:
        for name in values:
            if name not in PER_SOURCE_OPTIONS:  # pragma: no cover - an importer bug
                raise RuntimeError(f"{name!r} is not a per-source option")
    return remaining


def set_option(
    options: dict[str, Any], name: str, value: Any, defaults: dict[str, Any] | None = None
) -> None:
    """``options[name] = value`` unless it is our default: a default needs no option, and
    leaving it out keeps the snippet and the command line to what the import changed."""
    defaults = DatasetConfig().flat() if defaults is None else defaults
    if not _same(value, defaults[name], name):
        options[name] = value


def _same(value: Any, default: Any, name: str) -> bool:
    """Whether ``value`` is our default once normalised as the config normalises it."""
    try:
        return bool(DatasetConfig.build(**{name: value}).flat()[name] == default)
    except ConfigError:
        return False


def common_value(values: Iterable[Any]) -> tuple[bool, Any]:
    """``(True, value)`` when every value is the same, else ``(False, first value)``."""
    items = list(values)
    first = items[0] if items else None
    return all(v == first for v in items), first
