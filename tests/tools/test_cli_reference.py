"""The command line reference (docs/cli.md): it is what ``wan-data ... --help`` prints now.

The page is generated from the parser (wan_data/tools/cli_reference.py), so these tests keep it
honest: the committed file must be what the code generates, every option string of every
command must be on it, and the help must not depend on the terminal it is rendered in.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pytest

from wan_data.tools.cli_reference import (
    HELP_PYTHON,
    REGENERATE,
    SNIPPET_MARKER,
    cli_markdown,
    command_parsers,
    help_text,
    main,
)

PAGE = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


@pytest.mark.skipif(
    sys.version_info[:2] != HELP_PYTHON,
    reason=f"argparse lays help out differently; the page shows Python {HELP_PYTHON}'s",
)
def test_committed_page_is_the_generated_one() -> None:
    committed = PAGE.read_text(encoding="utf-8")
    assert committed == cli_markdown(), (
        f"docs/cli.md is out of date with the wan-data parser; regenerate it with `{REGENERATE}`"
    )


def test_every_option_string_of_every_command_is_on_the_page() -> None:
    page = PAGE.read_text(encoding="utf-8")
    missing = []
    for path, parser, _ in command_parsers():
        command = " ".join(("wan-data", *path))
        if f"`{command}`" not in page:
            missing.append(command)
        for action in parser._actions:
            for option in action.option_strings:
                if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", page):
                    missing.append(f"{command} {option}")
    assert not missing, f"docs/cli.md lacks {missing}; regenerate it with `{REGENERATE}`"


def test_every_command_has_a_section_with_a_marked_help_block() -> None:
    page = cli_markdown()
    lines = page.splitlines()
    commands = [" ".join(("wan-data", *path)) for path, _, _ in command_parsers()]
    assert {"wan-data", "wan-data demo", "wan-data cache", "wan-data scan"} <= set(commands)
    assert {"wan-data import", "wan-data bench"} <= set(commands)
    for command in commands:
        assert re.search(rf"^#+ `{re.escape(command)}`$", page, re.MULTILINE), command
    blocks = [i for i, line in enumerate(lines) if line == "```text"]
    assert len(blocks) == len(commands)
    for i in blocks:
        assert lines[i - 1] == SNIPPET_MARKER, lines[i - 2 : i]
    assert "generated" in lines[2] and REGENERATE in lines[2]


def test_help_does_not_depend_on_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = []
    for columns in ("40", "300"):
        monkeypatch.setenv("COLUMNS", columns)
        texts.append([help_text(parser) for _, parser, _ in command_parsers()])
    assert texts[0] == texts[1]


def test_nested_subcommands_and_aliases() -> None:
    top = argparse.ArgumentParser(prog="tool", description="The tool.")
    sub = top.add_subparsers(dest="command")
    first = sub.add_parser("import", help="import a file", aliases=["im"])
    first.add_argument("--json", action="store_true")
    nested = first.add_subparsers(dest="format")
    nested.add_parser("diffusion-pipe", help="a diffusion-pipe TOML")
    sub.add_parser("bench", description="Measure.")
    found = [(path, parser.prog, summary) for path, parser, summary in command_parsers(top)]
    assert found == [
        ((), "tool", ""),
        (("import",), "tool import", "import a file"),
        (("import", "diffusion-pipe"), "tool import diffusion-pipe", "a diffusion-pipe TOML"),
        (("bench",), "tool bench", ""),
    ]


def test_main_writes_the_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "cli.md"
    assert main([str(target)]) == 0
    assert target.read_text(encoding="utf-8") == cli_markdown()
    assert main([]) == 0
    assert capsys.readouterr().out == cli_markdown()
