"""``wan-data`` flags generated from the configuration fields, and a config printed as flags.

``add_config_arguments(parser, "cache")`` adds one flag per option that ``wan-data cache``
takes (see ``option(commands=...)``); ``config_from_args`` builds the
:class:`~wan_data.config.DatasetConfig` from the flags actually given (absent flags keep the
defaults, so a preset still fills what was not typed); ``command_line`` is the inverse: the
flags that rebuild a config, every non-default option included.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from collections.abc import Iterator, Sequence
from typing import Any

from wan_data.config.dataset_config import DatasetConfig
from wan_data.config.fields import AUTO, OptionSpec, spec_of
from wan_data.errors import ConfigError, format_error

__all__ = ["add_config_arguments", "command_line", "config_from_args", "config_options"]


def config_options(command: str) -> Iterator[tuple[str, dataclasses.Field[Any], OptionSpec]]:
    """``(group attribute or "", field, spec)`` of every option ``command`` takes."""
    for f in dataclasses.fields(DatasetConfig):
        if "option" in f.metadata:
            spec = spec_of(f)
            if command in spec.commands:
                yield "", f, spec
    for attribute in (
        f.name for f in dataclasses.fields(DatasetConfig) if "option" not in f.metadata
    ):
        group = getattr(DatasetConfig(), attribute)
        for f in dataclasses.fields(group):
            spec = spec_of(f)
            if command in spec.commands:
                yield attribute, f, spec


def _flag(f: dataclasses.Field[Any], spec: OptionSpec) -> str:
    return spec.flag or f.name.replace("_", "-")


def _default(attribute: str, f: dataclasses.Field[Any]) -> Any:
    config = DatasetConfig()
    owner = getattr(config, attribute) if attribute else config
    return getattr(owner, f.name)


def add_config_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """Add a flag for every option ``command`` takes, grouped by concern in ``--help``."""
    sections: dict[str, Any] = {}
    for attribute, f, spec in config_options(command):
        section = sections.get(attribute)
        if section is None:
            title = f"{attribute} options" if attribute else "dataset options"
            section = sections[attribute] = parser.add_argument_group(title)
        default = _default(attribute, f)
        names = [f"--{_flag(f, spec)}", *(f"--{a}" for a in spec.aliases)]
        common: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        if spec.parse is None and (isinstance(default, bool) or default is AUTO):
            if default is AUTO:
                section.add_argument(
                    names[0], action=argparse.BooleanOptionalAction, help=spec.help, **common
                )
                for alias in names[1:]:
                    section.add_argument(
                        alias, action="store_const", const=True, help=f"= {names[0]}", **common
                    )
            elif default:
                section.add_argument(
                    f"--no-{_flag(f, spec)}",
                    action="store_false",
                    help=f"turn off: {spec.help}",
                    **common,
                )
            else:
                section.add_argument(*names, action="store_true", help=spec.help, **common)
            continue
        # Values are parsed by config_from_args, not argparse, so that an unparseable value is
        # reported with every other configuration problem in one message.
        kwargs: dict[str, Any] = {"help": _help(spec, default), **common}
        if spec.nargs is not None:
            kwargs["nargs"] = spec.nargs
        if spec.metavar is not None:
            kwargs["metavar"] = spec.metavar
        if spec.choices is not None:
            kwargs["choices"] = spec.choices  # the text is checked before it is parsed
        section.add_argument(*names, **kwargs)


def _help(spec: OptionSpec, default: Any) -> str:
    if default is None or default is AUTO or default == ():
        return spec.help
    shown = " ".join(spec.show(default)) if spec.show is not None else str(default)
    return f"{spec.help} (default: {shown})"


def config_from_args(
    args: argparse.Namespace, command: str, base: DatasetConfig | None = None
) -> DatasetConfig:
    """The config the given flags describe (flags not typed keep ``base``'s values).

    Raises:
        ConfigError: every problem of the resulting config.
    """
    given: dict[str, Any] = {}
    problems: list[str] = []
    for _attribute, f, spec in config_options(command):
        if not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if spec.parse is not None:
            words = value if isinstance(value, list) else [value]
            parsed = []
            for word in words:
                try:
                    parsed.append(spec.parse(word))
                except (argparse.ArgumentTypeError, ValueError) as exc:
                    rule = str(exc) if isinstance(exc, argparse.ArgumentTypeError) else "is invalid"
                    hint = f"see wan-data {command} --help"
                    problems.append(format_error(f"--{_flag(f, spec)}", word, rule, hint))
            if len(parsed) != len(words):
                continue
            value = parsed if isinstance(value, list) else parsed[0]
        given[f.name] = tuple(value) if isinstance(value, list) else value
    base = base if base is not None else DatasetConfig()
    try:
        config = base.replace(**given)
    except ConfigError as exc:
        problems += list(exc.problems)
    if problems:
        raise ConfigError(problems)
    return config


def command_line(
    config: DatasetConfig,
    command: str,
    positional: Sequence[str] = (),
    *,
    program: str = "wan-data",
) -> str:
    """The ``wan-data <command>`` line that rebuilds ``config``: every option ``command``
    takes whose value differs from its default (options the command cannot take, e.g. a
    Python callback, are left out).

    Shape options are written out even when a preset set them, so the line does not depend
    on what a preset means in another version.
    """
    words = [program, command, *positional]
    defaults = DatasetConfig()
    for attribute, f, spec in config_options(command):
        if f.name == "preset":
            continue
        value = getattr(getattr(config, attribute) if attribute else config, f.name)
        default = getattr(getattr(defaults, attribute) if attribute else defaults, f.name)
        if value == default or value is AUTO:
            continue
        flag = f"--{_flag(f, spec)}"
        if isinstance(value, bool) or (spec.parse is None and isinstance(default, bool)):
            if value:
                words.append(flag)
            else:
                words.append(f"--no-{_flag(f, spec)}")
            continue
        shown = spec.show(value) if spec.show is not None else [str(value)]
        words += [flag, *shown]
    return " ".join(shlex.quote(w) for w in words)
