"""``DatasetConfig``: every option of a dataset, grouped by concern, checked as one.

The dataset, ``scan_dataset`` and ``wan-data`` all take a ``DatasetConfig`` (or the flat keywords
that build one), so an option is defined once (a field of one group in ``groups.py``) and means
the same everywhere. What depends on several groups (the ledger's default path needs the cache
folder, the integrity check's default needs the VAE) is resolved here, in one place.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wan_data.config.fields import AUTO, option
from wan_data.config.groups import (
    GROUPS,
    BatchingConfig,
    CaptionConfig,
    ConditioningConfig,
    ConfigGroup,
    ErrorsConfig,
    FiltersConfig,
    LatentsConfig,
    ObserveConfig,
    ReuseConfig,
    SamplingConfig,
    ShapeConfig,
    SourcesConfig,
    WorkersConfig,
    group_fields,
)
from wan_data.errors import ConfigError, format_error
from wan_data.media.buckets import PRESETS

__all__ = ["DatasetConfig", "option_names"]

# The attribute of DatasetConfig holding each group.
_ATTRIBUTE: dict[type[ConfigGroup], str] = {
    SourcesConfig: "sources",
    ShapeConfig: "shape",
    SamplingConfig: "sampling",
    FiltersConfig: "filters",
    BatchingConfig: "batching",
    ErrorsConfig: "errors",
    LatentsConfig: "latents",
    ConditioningConfig: "conditioning",
    CaptionConfig: "captions",
    ReuseConfig: "reuse",
    ObserveConfig: "observe",
    WorkersConfig: "workers",
}
# Options of DatasetConfig itself (not of a group).
_OWN = ("seed", "preset")


def _routes() -> dict[str, type[ConfigGroup] | None]:
    routes: dict[str, type[ConfigGroup] | None] = {name: None for name in _OWN}
    for group in GROUPS:
        for f in group_fields(group):
            if f.name in routes:  # pragma: no cover - a declaration bug, caught by the tests
                raise RuntimeError(f"option {f.name!r} is declared twice")
            routes[f.name] = group
    return routes


_ROUTES = _routes()


def option_names() -> list[str]:
    """Every flat option name :meth:`DatasetConfig.build` accepts."""
    return list(_ROUTES)


@dataclass(frozen=True)
class DatasetConfig:
    """Every option of a :class:`~wan_data.WanVideoDataset`, one group per concern.

    Build it from flat keywords (``DatasetConfig.build(preset="wan2.1", batch_size=2)``),
    from groups (``DatasetConfig(shape=ShapeConfig(frames=(17,)), batching=...)``), or change
    one (``config.replace(fps=24)``). Construction checks every group and raises one
    :class:`~wan_data.errors.ConfigError` with all problems.

    Attributes:
        seed: base of every random choice (plan, windows, crops, captions).
        preset: the preset the shape was built from (recorded; ``ShapeConfig.from_preset``
            applies it).
    """

    seed: int = option(
        0, help="base of every random choice (plan, windows, crops, captions)", parse=int
    )
    preset: str | None = option(
        None,
        help="a Wan model: sets frames, fps, resolution, step (and the image-to-video "
        "conditioning of the i2v presets)",
        choices=tuple(PRESETS),
    )
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    shape: ShapeConfig = field(default_factory=ShapeConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    errors: ErrorsConfig = field(default_factory=ErrorsConfig)
    latents: LatentsConfig = field(default_factory=LatentsConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    captions: CaptionConfig = field(default_factory=CaptionConfig)
    reuse: ReuseConfig = field(default_factory=ReuseConfig)
    observe: ObserveConfig = field(default_factory=ObserveConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    def problems(self) -> list[str]:
        """Problems that involve this config's own fields and several groups at once."""
        problems = []
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            problems.append(format_error("seed", self.seed, "must be an int"))
        for group, name in _ATTRIBUTE.items():
            if not isinstance(getattr(self, name), group):
                problems.append(
                    format_error(
                        name, type(getattr(self, name)).__name__, f"must be a {group.__name__}"
                    )
                )
        if (
            isinstance(self.conditioning, ConditioningConfig)
            and isinstance(self.latents, LatentsConfig)
            and self.conditioning.enabled
            and not self.latents.enabled
        ):
            problems.append(
                format_error(
                    "conditioning",
                    "text_encoder"
                    if self.conditioning.text_encoder is not None
                    else self.conditioning.conditioning,
                    "needs a latent cache: text embeddings and conditions are cached beside the "
                    "latents",
                    "pass vae= and cache_dir=",
                )
            )
        if (
            isinstance(self.conditioning, ConditioningConfig)
            and isinstance(self.captions, CaptionConfig)
            and self.conditioning.text_encoder is not None
            and self.captions.random
        ):
            problems.append(
                format_error(
                    "shuffle_tags" if self.captions.shuffle_tags else "tag_dropout",
                    self.captions.shuffle_tags
                    if self.captions.shuffle_tags
                    else self.captions.tag_dropout,
                    "cannot be used with a text_encoder: a shuffled or thinned caption differs "
                    "every epoch, so its embedding cannot be pre-encoded into the text cache "
                    "(caption_prefix and caption_suffix can: they are encoded with every caption)",
                    "turn shuffle_tags and tag_dropout off, or drop text_encoder and encode "
                    "captions in the trainer",
                )
            )
        return problems

    # -- building ------------------------------------------------------------------------

    @classmethod
    def build(cls, preset: str | None = None, **options: Any) -> DatasetConfig:
        """A config from flat keywords (``frames=``, ``batch_size=``, ``vae=``...).

        ``preset`` fills ``frames``, ``fps``, ``resolution`` and ``step`` unless given.

        Raises:
            ConfigError: unknown names (with the closest valid ones) and every problem of
                every group, in one error.
        """
        if preset is not None:
            options["preset"] = preset
        return cls().replace(**options)

    def replace(self, **options: Any) -> DatasetConfig:
        """This config with the flat options changed (``preset=`` re-applies a preset under
        the given shape options).

        Raises:
            ConfigError: as :meth:`build`.
        """
        problems: list[str] = []
        by_group: dict[type[ConfigGroup], dict[str, Any]] = {}
        own: dict[str, Any] = {}
        for name, value in options.items():
            if name not in _ROUTES:
                close = difflib.get_close_matches(name, list(_ROUTES), n=3)
                problems.append(
                    format_error(
                        "option",
                        name,
                        "is not an option of WanVideoDataset",
                        f"did you mean {' or '.join(close)}"
                        if close
                        else "see wan_data.config.option_names()",
                    )
                )
                continue
            group = _ROUTES[name]
            if group is None:
                own[name] = value
            else:
                by_group.setdefault(group, {})[name] = value
        groups: dict[str, Any] = {}
        preset = own.get("preset")
        if preset is not None and "conditioning" not in by_group.get(ConditioningConfig, {}):
            mode = PRESETS[preset].conditioning if preset in PRESETS else "none"
            by_group.setdefault(ConditioningConfig, {})["conditioning"] = mode
        for group, name in _ATTRIBUTE.items():
            given = by_group.get(group)
            try:
                if group is ShapeConfig and "preset" in own:
                    groups[name] = ShapeConfig.from_preset(
                        preset,
                        **{**_shape_without_preset(self.shape, self.preset), **(given or {})},
                    )
                elif given:
                    groups[name] = dataclasses.replace(getattr(self, name), **given)
            except ConfigError as exc:
                problems += list(exc.problems)
            except TypeError as exc:  # pragma: no cover - a wrong field type raised by the stdlib
                problems.append(format_error(name, str(exc), "is not a valid option set"))
        if problems:
            # Also report the problems of the own fields, so one error lists them all.
            try:
                dataclasses.replace(self, **own)
            except ConfigError as exc:
                problems += list(exc.problems)
            raise ConfigError(problems)
        return dataclasses.replace(self, **own, **groups)

    def flat(self) -> dict[str, Any]:
        """Every option by its flat name (what :meth:`build` takes)."""
        values: dict[str, Any] = {name: getattr(self, name) for name in _OWN}
        for name in _ATTRIBUTE.values():
            group = getattr(self, name)
            values.update({f.name: getattr(group, f.name) for f in dataclasses.fields(group)})
        return values

    # -- what depends on several groups --------------------------------------------------

    @property
    def integrity_enabled(self) -> bool:
        """``filters.integrity_check``, AUTO meaning on with a latent cache (the cache pass
        decodes every video anyway), off for pixel streaming."""
        check = self.filters.integrity_check
        return self.latents.enabled if check is AUTO else bool(check)

    @property
    def metadata_cache_path(self) -> Path | None:
        """``reuse.metadata_cache``; AUTO: ``<cache_dir>/metadata.jsonl`` when the integrity
        check runs with a cache (its verdicts must survive runs), else none."""
        value = self.reuse.metadata_cache
        if value is AUTO:
            cache_dir = self.latents.cache_dir
            if self.integrity_enabled and cache_dir is not None:
                return Path(cache_dir) / "metadata.jsonl"
            return None
        return None if value is None else Path(value)

    @property
    def ledger_path(self) -> Path | None:
        """``reuse.ledger``; AUTO: ``<cache_dir>/ledger.jsonl`` with a cache, else none."""
        value = self.reuse.ledger
        if value is AUTO:
            cache_dir = self.latents.cache_dir
            return Path(cache_dir) / "ledger.jsonl" if cache_dir is not None else None
        return None if value is None else Path(value)

    @property
    def sample_index_folder(self) -> Path | None:
        """``reuse.sample_index``; AUTO: ``<cache_dir>/samples`` with a cache, else
        ``<metadata_cache>.samples`` with a metadata cache, else none."""
        value = self.reuse.sample_index
        if value is AUTO:
            if self.latents.cache_dir is not None:
                return Path(self.latents.cache_dir) / "samples"
            metadata = self.metadata_cache_path
            return Path(f"{os.fspath(metadata)}.samples") if metadata is not None else None
        return None if value is None else Path(value)


def _shape_without_preset(shape: ShapeConfig, preset: str | None) -> dict[str, Any]:
    """The shape fields that differ from what ``preset`` (or the defaults) set: the ones a
    user chose, which a new preset must not override."""
    base = ShapeConfig.from_preset(preset) if preset is not None else ShapeConfig()
    return {
        f.name: getattr(shape, f.name)
        for f in dataclasses.fields(shape)
        if getattr(shape, f.name) != getattr(base, f.name)
    }
