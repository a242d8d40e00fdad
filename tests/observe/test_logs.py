"""logs.py: one complete JSON object per record, from any number of processes, into one file."""

from __future__ import annotations

import datetime
import json
import logging
import multiprocessing
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from wan_data.observe import logs
from wan_data.observe.logs import JsonLinesHandler, log_to_jsonl, remove_jsonl

KEYS = [
    "time",
    "level",
    "logger",
    "stage",
    "key",
    "path",
    "reason",
    "error_type",
    "worker",
    "rank",
    "message",
]

wan_logger = logging.getLogger("wan_data")


@pytest.fixture
def jsonl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A JSON-lines file attached to the wan_data logger, detached afterwards."""
    monkeypatch.delenv("RANK", raising=False)
    path = tmp_path / "log.jsonl"
    handler = log_to_jsonl(path, level=logging.DEBUG)
    yield path
    remove_jsonl(handler)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_record_has_every_field(jsonl: Path) -> None:
    wan_logger.info("decoded %d clips", 3)
    (line,) = _lines(jsonl)
    assert list(line) == KEYS
    assert line["level"] == "INFO" and line["logger"] == "wan_data"
    assert line["message"] == "decoded 3 clips"
    for name in ("stage", "key", "path", "reason", "error_type", "worker", "rank"):
        assert line[name] is None, name
    when = datetime.datetime.fromisoformat(line["time"])
    assert when.utcoffset() == datetime.timedelta(0)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - when).total_seconds()) < 60


def test_extra_fields_become_columns(jsonl: Path) -> None:
    wan_logger.getChild("decode").warning(
        "skipped %s",
        "a.mp4",
        extra={
            "stage": "decode",
            "key": "k1",
            "path": Path("/data/a.mp4"),
            "reason": "decode_error",
            "error_type": "RuntimeError",
            "unlisted": "ignored",
        },
    )
    (line,) = _lines(jsonl)
    assert line["logger"] == "wan_data.decode" and line["level"] == "WARNING"
    assert (line["stage"], line["key"], line["path"]) == ("decode", "k1", "/data/a.mp4")
    assert (line["reason"], line["error_type"]) == ("decode_error", "RuntimeError")
    assert "unlisted" not in line


def test_exception_text_is_in_the_message(jsonl: Path) -> None:
    try:
        raise ValueError("bad header\nsecond line")
    except ValueError:
        wan_logger.exception("probe failed")
    lines = jsonl.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1  # the traceback's newlines are escaped, not line breaks
    message = json.loads(lines[0])["message"]
    assert message.startswith("probe failed\nTraceback (most recent call last):")
    assert "ValueError: bad header\nsecond line" in message


def test_worker_and_rank(jsonl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "get_worker_info", lambda: SimpleNamespace(id=3))
    monkeypatch.setenv("RANK", "5")
    wan_logger.warning("from a worker")
    monkeypatch.setenv("RANK", "not-a-number")
    wan_logger.warning("odd env")
    first, second = _lines(jsonl)
    assert (first["worker"], first["rank"]) == (3, 5)
    assert second["rank"] is None


def test_level_is_respected(tmp_path: Path) -> None:
    handler = log_to_jsonl(tmp_path / "w.jsonl", level=logging.WARNING)
    try:
        wan_logger.info("not written")
        wan_logger.warning("written")
    finally:
        remove_jsonl(handler)
    assert [line["message"] for line in _lines(tmp_path / "w.jsonl")] == ["written"]


def test_logger_level_is_lowered_and_restored(tmp_path: Path) -> None:
    before = wan_logger.level
    wan_logger.setLevel(logging.WARNING)
    try:
        handler = log_to_jsonl(tmp_path / "i.jsonl", level=logging.INFO)
        wan_logger.info("reaches the handler")
        assert wan_logger.level == logging.INFO
        remove_jsonl(handler)
        assert wan_logger.level == logging.WARNING
    finally:
        wan_logger.setLevel(before)
    assert [line["message"] for line in _lines(tmp_path / "i.jsonl")] == ["reaches the handler"]


def test_idempotent_per_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = log_to_jsonl("same.jsonl")
    try:
        assert log_to_jsonl(tmp_path / "same.jsonl") is first
        assert sum(isinstance(h, JsonLinesHandler) for h in wan_logger.handlers) == 1
        other = log_to_jsonl(tmp_path / "other.jsonl")
        assert other is not first
        remove_jsonl(other)
        wan_logger.warning("once")
    finally:
        remove_jsonl(first)
    assert not any(isinstance(h, JsonLinesHandler) for h in wan_logger.handlers)
    assert len(_lines(tmp_path / "same.jsonl")) == 1
    assert log_to_jsonl(tmp_path / "same.jsonl") is not first  # removed: a new one
    remove_jsonl(wan_logger.handlers[-1])  # type: ignore[arg-type]


def test_appends_and_closed_handler_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"old": 1}\n')
    handler = JsonLinesHandler(path)
    record = logging.LogRecord("wan_data", logging.ERROR, __file__, 1, "x", None, None)
    handler.handle(record)
    handler.close()
    handler.handle(record)
    assert [next(iter(line)) for line in _lines(path)] == ["old", "time"]


def _write_lines(path: str, tag: str, count: int, start: Any) -> None:
    handler = log_to_jsonl(path)  # inherited through fork: the same handler, reopened
    start.wait()
    for i in range(count):
        wan_logger.warning("%s %d %s", tag, i, tag * 1000, extra={"key": f"{tag}{i}"})
    remove_jsonl(handler)


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_two_processes_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    handler = log_to_jsonl(path)
    try:
        ctx = multiprocessing.get_context("fork")
        start = ctx.Event()
        procs = [
            ctx.Process(target=_write_lines, args=(str(path), tag, 200, start)) for tag in "ab"
        ]
        for p in procs:
            p.start()
        start.set()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0]
        wan_logger.warning("parent still writes")
    finally:
        remove_jsonl(handler)
    lines = _lines(path)  # json.loads fails on any torn or interleaved line
    assert len(lines) == 401
    for tag in "ab":
        mine = [line for line in lines if line["key"] and line["key"].startswith(tag)]
        assert [line["key"] for line in mine] == [f"{tag}{i}" for i in range(200)]
        assert all(line["message"].endswith(tag * 1000) for line in mine)
    assert lines[-1]["message"] == "parent still writes"
    assert os.path.getsize(path) > 400 * 1000


def test_the_log_file_folder_is_created(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "exp1" / "wan_data.jsonl"
    handler = log_to_jsonl(path)
    try:
        wan_logger.warning("first line")
    finally:
        remove_jsonl(handler)
    assert [line["message"] for line in _lines(path)] == ["first line"]
