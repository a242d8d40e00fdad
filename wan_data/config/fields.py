"""How an option is declared once: a dataclass field carrying its help and command-line form.

Each option of the dataset is one field of one configuration group (``groups.py``). The field's
metadata says how ``wan-data`` spells it on the command line, which subcommands take it and how
to parse it, so the CLI flags are generated from the fields (``config/cli.py``) and a new option
appears in the dataset, the scan and the CLI at once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import MISSING, Field, field
from typing import Any

__all__ = ["AUTO", "Auto", "OptionSpec", "option", "spec_of"]


class Auto(enum.Enum):
    """The value of an option whose default depends on other options.

    ``AUTO`` is the only "decide for me" marker of the configuration (``None`` always means
    "none": no ledger, no sample index, native frame rate). Which value it resolves to is
    documented on each field that accepts it (e.g. ``ReuseConfig.ledger``: ``<cache_dir>/
    ledger.jsonl`` with a cache, none without).
    """

    AUTO = "auto"

    def __repr__(self) -> str:
        return "AUTO"


AUTO = Auto.AUTO

# Subcommands of ``wan-data`` that build a dataset configuration.
COMMANDS = ("scan", "cache")


class OptionSpec:
    """The command-line side of one option (kept in the dataclass field's metadata)."""

    __slots__ = (
        "aliases",
        "choices",
        "commands",
        "flag",
        "help",
        "metavar",
        "nargs",
        "parse",
        "show",
    )

    def __init__(
        self,
        *,
        help: str,
        commands: Sequence[str],
        flag: str | None,
        aliases: Sequence[str],
        parse: Callable[[str], Any] | None,
        nargs: str | None,
        metavar: str | None,
        choices: Sequence[str] | None,
        show: Callable[[Any], list[str]] | None,
    ) -> None:
        self.help = help
        self.commands = tuple(commands)
        self.flag = flag
        self.aliases = tuple(aliases)
        self.parse = parse
        self.nargs = nargs
        self.metavar = metavar
        self.choices = tuple(choices) if choices is not None else None
        self.show = show


def option(
    default: Any = MISSING,
    *,
    help: str,
    default_factory: Callable[[], Any] | Any = MISSING,
    commands: Sequence[str] = COMMANDS,
    flag: str | None = None,
    aliases: Sequence[str] = (),
    parse: Callable[[str], Any] | None = None,
    nargs: str | None = None,
    metavar: str | None = None,
    choices: Sequence[str] | None = None,
    show: Callable[[Any], list[str]] | None = None,
) -> Any:
    """A configuration field with its help text and command-line form.

    Args:
        default, default_factory: as for :func:`dataclasses.field`.
        help: one line; the CLI's help and the reference in the docs.
        commands: the ``wan-data`` subcommands that take it (``()``: Python only, e.g. a
            callback or an object).
        flag: the flag without dashes (default: the field name with ``_`` → ``-``).
        aliases: further flags (without dashes) for the same option.
        parse: turns the command-line text into the value (default: the text itself).
            ``None`` for a ``bool``: the flag is a switch (``--x`` for a ``False`` default,
            ``--no-x`` for a ``True`` one).
        nargs, metavar, choices: as for :meth:`argparse.ArgumentParser.add_argument`.
        show: the command-line words of a value, the inverse of ``parse`` (default:
            ``[str(value)]``), so a configuration can be printed as the command that rebuilds
            it (the cache's "fill it with" hint).
    """
    spec = OptionSpec(
        help=help,
        commands=commands,
        flag=flag,
        aliases=aliases,
        parse=parse,
        nargs=nargs,
        metavar=metavar,
        choices=choices,
        show=show,
    )
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata={"option": spec})
    return field(default=default, metadata={"option": spec})


def spec_of(f: Field[Any]) -> OptionSpec:
    """The :class:`OptionSpec` of a configuration field."""
    spec = f.metadata.get("option")
    if not isinstance(spec, OptionSpec):
        raise TypeError(f"configuration field {f.name!r} was not declared with option()")
    return spec
