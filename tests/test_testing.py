"""testing.py: the public stage contract still checks under ``python -O``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_BROKEN_STAGE = """
from wan_data.testing import check_stage_contract

def swallow_everything(items, *, policy):
    return iter(())  # drops good items and upstream failures alike

try:
    check_stage_contract(swallow_everything, [1, 2])
except AssertionError as exc:
    print("caught", str(exc).split(":")[0])
else:
    print("missed")
"""


def test_the_contract_check_holds_without_assert_statements() -> None:
    # Users run their checks anywhere, optimised interpreters included: the contract must not
    # rely on `assert` statements, which `python -O` strips.
    done = subprocess.run(
        [sys.executable, "-O", "-c", _BROKEN_STAGE],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        timeout=120,
    )
    assert done.stdout.strip() == "caught (b) swallow_everything", done.stdout + done.stderr
