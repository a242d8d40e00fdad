"""Property ledger: ``known_bad`` answers what a five-line model answers, whatever happened.

Feature: wan-training-pipeline-fixes, Property ledger

For any sequence of operations on three source files and one ledger (record a failure of any
reason and stage, resolve, change the file's mtime or size, touch it without a change, delete
and recreate it, record through another process's ledger object, reopen the ledger, compact
it, append a torn or garbage line to it), after every operation ``known_bad(path)`` is not
``None`` exactly when the model holds the path and the file's current size and mtime equal the
recorded ones, and ``entries()`` holds exactly the model's paths; the same holds for a ledger
read afresh from the file and after ``compact()``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, note, settings
from hypothesis import strategies as st

from wan_data.failures.ledger import LEDGER_REASONS, LEDGER_STAGES, Ledger
from wan_data.items import Failed

PROPERTY = "Feature: wan-training-pipeline-fixes, Property ledger"
FILES = ("a.mp4", "b.webm", "c.png")
REASONS = (
    *sorted(LEDGER_REASONS),
    "too_short",
    "missing_caption",
    "permission_denied",
    "known_bad",
)
STAGES = ("collect", "probe", "decode", "cache", "ledger")

_file = st.integers(0, len(FILES) - 1)
_failure = st.tuples(_file, st.sampled_from(REASONS), st.sampled_from(STAGES))
OPERATIONS = st.one_of(
    st.tuples(st.just("record"), _failure),
    st.tuples(st.just("other_record"), _failure),
    st.tuples(st.just("resolve"), _file),
    st.tuples(st.just("other_resolve"), _file),
    st.tuples(st.just("new_mtime"), _file),
    st.tuples(st.just("new_size"), _file),
    st.tuples(st.just("touch_same"), _file),
    st.tuples(st.just("delete"), _file),
    st.tuples(st.just("create"), _file),
    st.tuples(st.sampled_from(["reopen", "compact", "tear", "garbage"]), st.none()),
)


class _World:
    """The files, the ledger under test and the model, in one temporary folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = root / "state" / "ledger.jsonl"
        self.paths = [str(root / name) for name in FILES]
        self.clock = 10**18  # every mtime set here is new
        for path in self.paths:
            self.create(path)
        self.ledger = Ledger(self.store)
        self.model: dict[str, tuple[int, int]] = {}

    def next_mtime(self) -> int:
        self.clock += 1_000_003
        return self.clock

    def create(self, path: str) -> None:
        if not os.path.exists(path):
            Path(path).write_bytes(b"broken")
            t = self.next_mtime()
            os.utime(path, ns=(t, t))

    def failed(self, index: int, reason: str, stage: str) -> Failed:
        return Failed(
            key=f"c/{FILES[index]}",
            path=self.paths[index],
            stage=stage,
            reason=reason,
            error_type="RuntimeError",
            message="file could not be probed.",
        )

    def record(self, ledger: Ledger, index: int, reason: str, stage: str) -> None:
        path = self.paths[index]
        recorded = ledger.record(self.failed(index, reason, stage))
        should = reason in LEDGER_REASONS and stage in LEDGER_STAGES and os.path.exists(path)
        assert recorded == should
        if should:
            st_ = os.stat(path)
            self.model[path] = (st_.st_size, st_.st_mtime_ns)

    def apply(self, op: str, arg: Any) -> None:
        if op == "record":
            self.record(self.ledger, *arg)
        elif op == "other_record":
            self.record(Ledger(self.store), *arg)
            self.ledger.load()
        elif op in ("resolve", "other_resolve"):
            ledger = self.ledger if op == "resolve" else Ledger(self.store)
            path = self.paths[arg]
            assert ledger.resolve(path) == (path in self.model)
            self.model.pop(path, None)
            self.ledger.load()
        elif op in ("new_mtime", "new_size", "touch_same"):
            path = self.paths[arg]
            if not os.path.exists(path):
                return
            st_ = os.stat(path)
            if op == "new_size":
                with open(path, "ab") as fh:
                    fh.write(b"x")
            mtime = self.next_mtime() if op == "new_mtime" else st_.st_mtime_ns
            os.utime(path, ns=(st_.st_atime_ns, mtime))
        elif op == "delete":
            Path(self.paths[arg]).unlink(missing_ok=True)
        elif op == "create":
            self.create(self.paths[arg])
        elif op == "reopen":
            self.ledger = Ledger(self.store)
        elif op == "compact":
            assert self.ledger.compact() == len(self.model)
        elif op in ("tear", "garbage"):
            with open(self.store, "ab") as fh:
                fh.write(b'{"format": 1, "status": "bad", "pa' if op == "tear" else b"%%\n")
        else:  # pragma: no cover
            raise AssertionError(op)

    def expected(self, path: str) -> bool:
        if path not in self.model:
            return False
        try:
            st_ = os.stat(path)
        except OSError:
            return False
        return (st_.st_size, st_.st_mtime_ns) == self.model[path]

    def check(self, ledger: Ledger, when: str) -> None:
        for path in self.paths:
            got = ledger.known_bad(path) is not None
            assert got == self.expected(path), f"{when}: known_bad({path}) = {got}"
        assert set(ledger.entries()) == set(self.model), when


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(OPERATIONS, min_size=1, max_size=25))
def test_property_ledger_known_bad_matches_the_model(ops: list[tuple[str, Any]]) -> None:
    with tempfile.TemporaryDirectory(prefix="ledger_prop_") as tmp:
        world = _World(Path(tmp))
        for step, (op, arg) in enumerate(ops):
            note(f"step {step}: {op} {arg}")
            world.apply(op, arg)
            world.check(world.ledger, f"after step {step} ({op})")
        world.check(Ledger(world.store), "after a reload")
        compacted = Ledger(world.store)
        assert compacted.compact() == len(world.model)
        assert compacted.skipped_lines == 0
        world.check(compacted, "after compact")
        reread = Ledger(world.store)
        assert reread.skipped_lines == 0
        world.check(reread, "after compact and a reload")
