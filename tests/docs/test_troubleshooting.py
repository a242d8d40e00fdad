"""docs/troubleshooting.md documents every skip reason and every alert the code can produce.

The names are collected from the code, not from a copy kept here, so a new reason cannot land
undocumented: the registries the package exports (``breaker.FILTER_REASONS``,
``ledger.LEDGER_REASONS``, the policy's message table, ``alerts.ALERT_KINDS``, the reason
constants of the ledger and split stages) plus a scan of the package's syntax tree for the
places a reason is written as a literal, because most reasons have no registry:

- ``reason="x"`` as a keyword of any call (``Failed(...)``, ``SampleError(...)``,
  ``WorkerError(...)``);
- the second positional argument of ``SampleError(msg, "x")``, ``Failed(...)`` and of a
  non-fatal ``Decision(Action.SKIP | Action.RETRY, "x")`` (a fatal decision's tag is an
  exception name, not a skip);
- the third positional argument of the entry helper ``failed(key, path, "x", ...)``;
- ``reason = "x"`` / ``reason, other = "x", ...`` assignments and ``reason="x"`` defaults;
- string returns of functions named ``*_reason`` and the first element of the tuples returned
  by ``validate_*`` functions (``("too_short", rule)``).

Each name must appear in docs/troubleshooting.md as a heading containing ```name``` or as a
table row whose first cell is ```name```.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from wan_data.failures import breaker, ledger, policy
from wan_data.observe.alerts import ALERT_KINDS
from wan_data.sources.split import OTHER_SPLIT_REASON
from wan_data.stages.ledger import KNOWN_BAD_REASON

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "wan_data"
PAGE = REPO / "docs" / "troubleshooting.md"

REASON_CALLS = {"SampleError": 1, "Failed": 1, "Decision": 1, "failed": 2}


def _const(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _is_fatal_decision(node: ast.Call) -> bool:
    first = node.args[0] if node.args else None
    return isinstance(first, ast.Attribute) and first.attr == "FATAL"


def _returned_strings(func: ast.FunctionDef) -> set[str]:
    """Every string a function can return: literals and both sides of a conditional."""
    found: set[str] = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Return) and node.value is not None:
            values = [node.value]
            if isinstance(node.value, ast.IfExp):
                values = [node.value.body, node.value.orelse]
            found.update(v for v in map(_const, values) if v is not None)
    return found


def _literal_reasons(tree: ast.AST) -> set[str]:
    """The reason literals of one module (the rules of the module docstring)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            found.update(
                value
                for kw in node.keywords
                if kw.arg == "reason" and (value := _const(kw.value)) is not None
            )
            name = _call_name(node)
            position = REASON_CALLS.get(name or "")
            fatal = name == "Decision" and _is_fatal_decision(node)
            if position is not None and len(node.args) > position and not fatal:
                found.update(v for v in [_const(node.args[position])] if v is not None)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == "reason":
                    found.update(v for v in [_const(node.value)] if v is not None)
                elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    for t, v in zip(target.elts, node.value.elts, strict=False):
                        if isinstance(t, ast.Name) and t.id == "reason" and _const(v):
                            found.add(str(_const(v)))
        elif isinstance(node, ast.AnnAssign):
            if isinstance(node.target, ast.Name) and node.target.id == "reason":
                found.update(v for v in [_const(node.value)] if v is not None)
        elif isinstance(node, ast.FunctionDef):
            args = node.args
            positional = args.posonlyargs + args.args
            with_defaults = positional[len(positional) - len(args.defaults) :]
            pairs = list(zip(with_defaults, args.defaults, strict=True))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d]
            found.update(
                value for a, d in pairs if a.arg == "reason" and (value := _const(d)) is not None
            )
            if node.name.endswith("_reason"):
                found.update(_returned_strings(node))
            if node.name.startswith("validate_"):
                for ret in ast.walk(node):
                    if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Tuple):
                        value = _const(ret.value.elts[0]) if ret.value.elts else None
                        if value is not None:
                            found.add(value)
    return found


def skip_reasons() -> set[str]:
    """Every skip (and worker failure) reason the package can record."""
    reasons = set(breaker.FILTER_REASONS) | set(ledger.LEDGER_REASONS)
    reasons |= {reason for _, reason in policy._MESSAGE_REASONS}
    reasons |= {KNOWN_BAD_REASON, OTHER_SPLIT_REASON}
    for path in sorted(PACKAGE.rglob("*.py")):
        reasons |= _literal_reasons(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return reasons


def documented(text: str) -> set[str]:
    """Names in backticks in a heading, or in the first cell of a table row."""
    names: set[str] = set()
    for line in text.splitlines():
        if re.match(r"^#{1,6}\s", line):
            names.update(re.findall(r"`([^`]+)`", line))
        elif line.startswith("|"):
            first = line.strip("|").split("|", 1)[0]
            names.update(re.findall(r"`([^`]+)`", first))
    return names


def test_the_code_scan_finds_the_known_reasons() -> None:
    """A guard on the scan itself: reasons written in each of its shapes are found."""
    reasons = skip_reasons()
    expected = {
        "unreadable",  # reason= keyword (probe), LEDGER_REASONS
        "too_short",  # validate_metadata's tuple, FILTER_REASONS
        "no_frames",  # validate_metadata's tuple only
        "unsupported_container",  # a *_reason function's conditional return
        "bad_metadata_line",  # the entries' failed(key, path, reason, ...) helper
        "io_transient",  # a RETRY decision
        "stalled",  # a tuple assignment in the worker supervisor
        "died",  # WorkerError(reason="died")
    }
    assert expected <= reasons, expected - reasons
    assert "ffmpeg_missing" not in reasons  # fatal: an exception, not a skip
    assert len(reasons) >= 35


def test_every_skip_reason_is_documented() -> None:
    missing = sorted(skip_reasons() - documented(PAGE.read_text(encoding="utf-8")))
    assert not missing, (
        f"skip reasons missing from {PAGE.relative_to(REPO)} (add a heading or a table row "
        f"with the exact name in backticks, what it means and what to do): {missing}"
    )


def test_every_alert_is_documented() -> None:
    missing = sorted(set(ALERT_KINDS) - documented(PAGE.read_text(encoding="utf-8")))
    assert not missing, f"alerts missing from {PAGE.relative_to(REPO)}: {missing}"
