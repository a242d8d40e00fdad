"""ledger.py: known-bad files skipped while unchanged; tolerant reads; concurrent appends."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pickle
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from wan_data.errors import ConfigError
from wan_data.failures.breaker import FILTER_REASONS, BreakerConfig
from wan_data.failures.ledger import LEDGER_FORMAT, LEDGER_REASONS, Ledger, LedgerEntry
from wan_data.failures.mechanism import StageContext
from wan_data.failures.policy import ErrorPolicy
from wan_data.items import Failed, Probed, Source
from wan_data.stages.collect import collect
from wan_data.stages.ledger import KNOWN_BAD_REASON, skip_known_bad
from wan_data.stages.probe import probe
from wan_data.testing import check_stage_contract


def _file(folder: Path, name: str, data: bytes = b"broken") -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _failed(path: Path | str, reason: str = "unreadable", stage: str = "probe") -> Failed:
    return Failed(
        key=f"c/{Path(path).name}",
        path=str(path),
        stage=stage,
        reason=reason,
        error_type="RuntimeError",
        message=f"file ({str(path)!r}) could not be probed. re-encode it.",
    )


def _source(path: Path | str) -> Source:
    return Source(key=f"c/{Path(path).name}", path=str(path), media_type="video")


def _lines(ledger_file: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in ledger_file.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- the ledger


def test_record_known_bad_and_resolve(tmp_path: Path) -> None:
    bad = _file(tmp_path, "bad.mp4")
    other = _file(tmp_path, "other.mp4")
    ledger = Ledger(tmp_path / "ledger.jsonl")
    assert ledger.known_bad(bad) is None
    assert ledger.record(_failed(bad)) is True
    entry = ledger.known_bad(str(bad))
    assert isinstance(entry, LedgerEntry)
    st = bad.stat()
    assert (entry.path, entry.size, entry.mtime_ns) == (str(bad), st.st_size, st.st_mtime_ns)
    assert (entry.stage, entry.reason, entry.error_type, entry.key) == (
        "probe",
        "unreadable",
        "RuntimeError",
        "c/bad.mp4",
    )
    assert ledger.known_bad(other) is None
    assert list(ledger.entries()) == [str(bad)]
    assert ledger.resolve(bad) is True
    assert ledger.known_bad(bad) is None
    assert ledger.entries() == {}
    assert ledger.resolve(bad) is False  # not in the ledger: nothing written
    rows = _lines(tmp_path / "ledger.jsonl")
    assert [r["status"] for r in rows] == ["bad", "ok"]
    assert all(r["format"] == LEDGER_FORMAT for r in rows)
    assert set(rows[0]) >= {
        "path",
        "size",
        "mtime_ns",
        "stage",
        "reason",
        "error_type",
        "message",
        "key",
        "time",
    }


def test_survives_a_restart(tmp_path: Path) -> None:
    bad, fixed = _file(tmp_path, "bad.mp4"), _file(tmp_path, "fixed.mp4")
    store = tmp_path / "ledger.jsonl"
    first = Ledger(store)
    first.record(_failed(bad, "no_video_stream"))
    first.record(_failed(fixed, "decode_error", stage="decode"))
    first.resolve(fixed)
    again = Ledger(store)  # a new process would build exactly this
    entry = again.known_bad(bad)
    assert entry is not None and entry.reason == "no_video_stream"
    assert again.known_bad(fixed) is None
    assert len(again) == 1


def test_a_changed_file_is_tried_again(tmp_path: Path) -> None:
    touched, grown, gone = (_file(tmp_path, f"{n}.mp4") for n in ("touched", "grown", "gone"))
    ledger = Ledger(tmp_path / "ledger.jsonl")
    for path in (touched, grown, gone):
        assert ledger.record(_failed(path))
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # same size, new mtime
    mtime = grown.stat().st_mtime_ns
    grown.write_bytes(b"broken but longer")
    os.utime(grown, ns=(mtime, mtime))  # same mtime, new size
    gone.unlink()
    assert all(Ledger(tmp_path / "ledger.jsonl").known_bad(p) is None for p in (touched, grown))
    assert ledger.known_bad(touched) is None
    assert ledger.known_bad(grown) is None
    assert ledger.known_bad(gone) is None
    # Still held (a changed file is not forgotten until it fails again or is resolved) ...
    assert len(ledger.entries()) == 3
    # ... and failing again in its new state supersedes the old entry.
    assert ledger.record(_failed(touched, "truncated"))
    entry = ledger.known_bad(touched)
    assert entry is not None and entry.reason == "truncated"


def test_touching_without_a_change_keeps_it_known_bad(tmp_path: Path) -> None:
    bad = _file(tmp_path, "bad.mp4")
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.record(_failed(bad))
    st = bad.stat()
    os.utime(bad, ns=(st.st_atime_ns + 5, st.st_mtime_ns))  # atime only
    assert ledger.known_bad(bad) is not None


@pytest.mark.parametrize(
    ("reason", "stage"),
    [
        ("too_short", "probe"),
        ("too_small", "probe"),
        ("too_large", "probe"),
        ("too_long", "probe"),
        ("too_short", "decode"),
        ("missing_caption", "collect"),
        ("outside_root", "collect"),
        ("permission_denied", "probe"),
        ("missing", "probe"),
        ("out_of_memory", "encode"),
        ("cache_corrupt", "cache"),
        ("invalid_item", "probe"),
        ("unexpected_error", "probe"),
        ("transient", "probe"),
        ("io_transient", "probe"),
        ("timeout", "probe"),
        ("known_bad", "ledger"),
        ("decode_error", "cache"),  # a RuntimeError of the VAE, not of the file
        ("unreadable", "ledger"),
    ],
)
def test_configuration_and_environment_failures_are_not_recorded(
    tmp_path: Path, reason: str, stage: str
) -> None:
    path = _file(tmp_path, "clip.mp4")
    ledger = Ledger(tmp_path / "ledger.jsonl")
    assert ledger.record(_failed(path, reason, stage)) is False
    assert ledger.known_bad(path) is None
    assert not (tmp_path / "ledger.jsonl").exists() or _lines(tmp_path / "ledger.jsonl") == []


@pytest.mark.parametrize("reason", sorted(LEDGER_REASONS))
def test_every_file_property_reason_is_recorded(tmp_path: Path, reason: str) -> None:
    path = _file(tmp_path, "clip.mp4")
    ledger = Ledger(tmp_path / "ledger.jsonl")
    assert ledger.record(_failed(path, reason)) is True
    assert Ledger(tmp_path / "ledger.jsonl").known_bad(path) is not None


def test_reason_sets_agree_with_the_breaker() -> None:
    assert KNOWN_BAD_REASON in FILTER_REASONS  # known-bad skips never trip a breaker
    assert not LEDGER_REASONS & FILTER_REASONS  # option-dependent skips are never recorded
    assert KNOWN_BAD_REASON not in LEDGER_REASONS


def test_a_vanished_file_is_not_recorded(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    assert ledger.record(_failed(tmp_path / "nowhere.mp4")) is False
    assert ledger.entries() == {}


def test_the_same_failure_is_written_once(tmp_path: Path) -> None:
    bad = _file(tmp_path, "bad.mp4")
    ledger = Ledger(tmp_path / "ledger.jsonl")
    assert ledger.record(_failed(bad))
    assert ledger.record(_failed(bad))
    assert Ledger(tmp_path / "ledger.jsonl").record(_failed(bad))
    assert len(_lines(tmp_path / "ledger.jsonl")) == 1


def test_torn_last_line_and_garbage_are_skipped_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good, later = _file(tmp_path, "good_record.mp4"), _file(tmp_path, "later.mp4")
    store = tmp_path / "ledger.jsonl"
    Ledger(store).record(_failed(good))
    with open(store, "ab") as fh:
        fh.write(b"{not json\n")
        fh.write(b"\xff\xfe binary \x00 junk\n")
        fh.write(b"[1, 2, 3]\n")
        fh.write(b"[" * 100_000 + b"\n")  # deeper than json's recursion limit
        fh.write(json.dumps({"format": 999, "status": "bad", "path": str(later)}).encode() + b"\n")
        fh.write(json.dumps({"format": 1, "status": "bad", "path": str(later)}).encode() + b"\n")
        fh.write(b'{"format": 1, "status": "bad", "path": "/torn')  # writer died mid-line
    caplog.set_level(logging.WARNING, logger="wan_data")
    ledger = Ledger(store).load()
    assert ledger.skipped_lines == 7
    assert ledger.known_bad(good) is not None
    assert ledger.known_bad(later) is None
    ledger.load()  # the same lines again: not logged again
    warnings = [r for r in caplog.records if "ledger" in r.getMessage()]
    assert len(warnings) == 1
    assert "7 line(s)" in warnings[0].getMessage()
    # An append after the torn line starts a line of its own instead of extending the torn one.
    assert ledger.record(_failed(later, "no_frames"))
    reread = Ledger(store)
    entry = reread.known_bad(later)
    assert entry is not None and entry.reason == "no_frames"
    assert reread.skipped_lines == 7


def test_a_non_utf8_file_name_round_trips(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.mp4")  # latin-1 bytes: a surrogate escape in Python
    bad = _file(tmp_path, name)
    Ledger(tmp_path / "ledger.jsonl").record(_failed(bad))
    reread = Ledger(tmp_path / "ledger.jsonl")
    assert reread.skipped_lines == 0
    assert reread.known_bad(bad) is not None


def _append_many(store: str, paths: list[str], start: Any) -> None:
    ledger = Ledger(store)
    start.wait(10)
    for path in paths:
        failed = _failed(path)
        # Lines longer than PIPE_BUF (4096): one O_APPEND write must still keep them whole.
        long = Failed(**{**failed.as_record(), "message": failed.message + "x" * 1900})
        assert ledger.record(long)


def test_concurrent_appends_from_two_processes(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    paths = [str(_file(media, f"{i:03d}.mp4", b"x" * (i + 1))) for i in range(300)]
    store = str(tmp_path / "ledger.jsonl")
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    workers = [ctx.Process(target=_append_many, args=(store, paths[i::2], start)) for i in range(2)]
    for w in workers:
        w.start()
    start.set()
    for w in workers:
        w.join(30)
    assert [w.exitcode for w in workers] == [0, 0]
    ledger = Ledger(store)
    assert ledger.skipped_lines == 0
    assert sorted(ledger.entries()) == sorted(paths)
    assert all(ledger.known_bad(p) is not None for p in paths)
    assert len(_lines(Path(store))) == len(paths)


def test_compact_keeps_the_latest_state_only(tmp_path: Path) -> None:
    a, b, c = (_file(tmp_path, f"{n}.mp4") for n in "abc")
    store = tmp_path / "ledger.jsonl"
    ledger = Ledger(store)
    ledger.record(_failed(a, "unreadable"))
    ledger.record(_failed(b))
    ledger.resolve(b)
    ledger.record(_failed(c))
    os.utime(a, ns=(1, 10**18))
    ledger.record(_failed(a, "truncated"))  # supersedes a's first entry
    other = Ledger(store)  # another process appends after this one loaded
    other.record(_failed(c, "no_frames"))
    with open(store, "ab") as fh:
        fh.write(b"garbage\n{torn")
    assert ledger.compact() == 2
    rows = _lines(store)
    assert [(r["path"], r["reason"]) for r in rows] == [
        (str(a), "truncated"),
        (str(c), "no_frames"),
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    reread = Ledger(store)
    assert reread.skipped_lines == 0
    assert reread.entries() == ledger.entries()
    assert reread.known_bad(b) is None
    # A ledger that loaded before the rewrite appends to the new file, not the replaced one.
    d = _file(tmp_path, "d.mp4")
    assert other.record(_failed(d))
    assert Ledger(store).known_bad(d) is not None


def test_compact_of_a_missing_file_writes_an_empty_ledger(tmp_path: Path) -> None:
    store = tmp_path / "sub" / "ledger.jsonl"
    assert Ledger(store).compact() == 0
    assert store.read_bytes() == b""


def test_the_parent_folder_is_created(tmp_path: Path) -> None:
    bad = _file(tmp_path, "bad.mp4")
    store = tmp_path / "a" / "b" / "ledger.jsonl"
    Ledger(store).record(_failed(bad))
    assert Ledger(store).known_bad(bad) is not None


def test_an_unwritable_location_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    blocker = _file(tmp_path, "not_a_folder", b"")
    with pytest.raises(ConfigError) as info:
        Ledger(blocker / "ledger.jsonl")
    message = str(info.value)
    assert str(blocker / "ledger.jsonl") in message
    assert "ledger=None" in message and "writable" in message
    folder = tmp_path / "a_folder.jsonl"
    folder.mkdir()
    with pytest.raises(ConfigError, match="cannot be written"):
        Ledger(folder)


def test_a_failing_append_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = _file(tmp_path, "bad.mp4")
    store = tmp_path / "ledger.jsonl"
    ledger = Ledger(store)
    store.mkdir()  # the ledger file became a folder after construction
    caplog.set_level(logging.WARNING, logger="wan_data")
    assert ledger.record(_failed(bad)) is False
    assert ledger.known_bad(bad) is None
    assert any("could not be recorded" in r.getMessage() for r in caplog.records)


def test_the_ledger_pickles_with_its_state(tmp_path: Path) -> None:
    bad = _file(tmp_path, "bad.mp4")
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.record(_failed(bad))
    copy = pickle.loads(pickle.dumps(ledger))
    assert copy.known_bad(bad) == ledger.known_bad(bad)
    d = _file(tmp_path, "d.mp4")
    assert copy.record(_failed(d))  # its lock works after unpickling
    assert Ledger(tmp_path / "ledger.jsonl").known_bad(d) is not None


# --------------------------------------------------------------------------- the stage


def _known_bad_setup(tmp_path: Path) -> tuple[Ledger, Source, Source]:
    bad, good = _file(tmp_path, "bad.mp4"), _file(tmp_path, "good.mp4")
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.record(_failed(bad, "no_video_stream"))
    return ledger, _source(bad), _source(good)


def test_stage_contract(tmp_path: Path) -> None:
    ledger, bad, good = _known_bad_setup(tmp_path)
    check_stage_contract(skip_known_bad, [bad, good], ledger=ledger)
    check_stage_contract(skip_known_bad, [bad, good], ledger=ledger, retry_failed=True)
    check_stage_contract(skip_known_bad, [bad, good], ledger=None)


def test_stage_turns_known_bad_sources_into_failed(tmp_path: Path) -> None:
    ledger, bad, good = _known_bad_setup(tmp_path)
    context = StageContext()
    out = list(skip_known_bad([bad, good], policy=ErrorPolicy(), context=context, ledger=ledger))
    assert out[1] is good
    failed = out[0]
    assert isinstance(failed, Failed)
    assert (failed.key, failed.path, failed.stage, failed.reason, failed.error_type) == (
        bad.key,
        bad.path,
        "ledger",
        "known_bad",
        "RuntimeError",
    )
    assert failed.message.startswith(f"file ({bad.path!r}) failed before at probe: no_video_stream")
    assert "has not changed since. Pass retry_failed=True, or change the file" in failed.message
    assert str(ledger.path) in failed.message and "[stage=ledger]" in failed.message
    stats = context.metrics.stage("ledger")
    assert (stats.items_in, stats.items_out, stats.failed) == (2, 1, 1)
    assert stats.by_reason == {"known_bad": 1}


def _many_known_bad(tmp_path: Path, bad: int, good: int) -> tuple[Ledger, list[Source]]:
    """``bad`` known-bad sources then ``good`` clean ones, in a fresh ledger."""
    media = tmp_path / "media"
    media.mkdir()
    ledger = Ledger(tmp_path / "ledger.jsonl")
    sources = []
    for i in range(bad + good):
        path = _file(media, f"{i:03d}.mp4")
        if i < bad:
            ledger.record(_failed(path))
        sources.append(_source(path))
    return ledger, sources


def _ledger_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "wan_data" and r.levelno == level]


def test_known_bad_skips_log_one_summary_warning_and_details_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger, sources = _many_known_bad(tmp_path, bad=5, good=2)
    caplog.set_level(logging.DEBUG, logger="wan_data")
    context = StageContext()
    out = list(skip_known_bad(sources, policy=ErrorPolicy(), context=context, ledger=ledger))

    # The skips themselves are unchanged: one Failed each, counted in the report.
    failed = [o for o in out if isinstance(o, Failed)]
    assert [f.path for f in failed] == [s.path for s in sources[:5]]
    assert all((f.stage, f.reason) == ("ledger", "known_bad") for f in failed)
    assert [o for o in out if isinstance(o, Source)] == sources[5:]
    stats = context.metrics.stage("ledger")
    assert (stats.items_in, stats.items_out, stats.failed) == (7, 2, 5)
    assert stats.by_reason == {"known_bad": 5}
    assert stats.by_error_type == {"RuntimeError": 5}

    warnings = _ledger_records(caplog, logging.WARNING)
    assert len(warnings) == 1
    summary = warnings[0].getMessage()
    first = ", ".join(s.path for s in sources[:3])
    assert summary == (
        f"ledger {ledger.path} ('5 known-bad file(s)') skipped without opening them (first: "
        f"{first}, ...). Pass retry_failed=True, or change the files, to try them again; each "
        "file's first error is in the ledger and logged at debug level. [stage=ledger]"
    )
    details = [
        r.getMessage()
        for r in _ledger_records(caplog, logging.DEBUG)
        if "failed before at probe: unreadable" in r.getMessage()
    ]
    assert len(details) == 5
    assert all(
        d.startswith(f"skipped {s.path} at stage=ledger: ")
        for d, s in zip(details, sources[:5], strict=True)
    )


def test_the_summary_names_every_file_when_there_are_few(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger, sources = _many_known_bad(tmp_path, bad=2, good=0)
    caplog.set_level(logging.WARNING, logger="wan_data")
    list(skip_known_bad(sources, policy=ErrorPolicy(), ledger=ledger))
    (warning,) = _ledger_records(caplog, logging.WARNING)
    assert "'2 known-bad file(s)'" in warning.getMessage()
    assert f"(first: {sources[0].path}, {sources[1].path})." in warning.getMessage()


def test_the_summary_is_logged_once_when_the_stage_is_closed_early(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger, sources = _many_known_bad(tmp_path, bad=4, good=1)
    caplog.set_level(logging.WARNING, logger="wan_data")
    stage = skip_known_bad(sources, policy=ErrorPolicy(), ledger=ledger)
    assert isinstance(stage, Generator)  # what a DataLoader or an early break closes
    assert isinstance(next(stage), Failed) and isinstance(next(stage), Failed)
    assert _ledger_records(caplog, logging.WARNING) == []  # not before the pass ends
    stage.close()
    (warning,) = _ledger_records(caplog, logging.WARNING)
    assert "'2 known-bad file(s)'" in warning.getMessage()  # the skips seen so far
    stage.close()
    assert len(_ledger_records(caplog, logging.WARNING)) == 1


def test_no_known_bad_file_or_retry_failed_logs_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger, sources = _many_known_bad(tmp_path, bad=0, good=3)
    caplog.set_level(logging.DEBUG, logger="wan_data")
    assert list(skip_known_bad(sources, policy=ErrorPolicy(), ledger=ledger)) == sources
    assert _ledger_records(caplog, logging.WARNING) == []
    ledger.record(_failed(sources[0].path))
    retried = skip_known_bad(sources, policy=ErrorPolicy(), ledger=ledger, retry_failed=True)
    assert list(retried) == sources
    assert _ledger_records(caplog, logging.WARNING) == []


def test_a_lookup_that_raises_gets_the_stage_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, sources = _many_known_bad(tmp_path, bad=1, good=1)

    def broken(path: str | os.PathLike[str]) -> LedgerEntry | None:
        raise KeyError("a bug in the lookup")

    monkeypatch.setattr(ledger, "known_bad", broken)
    context = StageContext()
    out = list(skip_known_bad(sources, policy=ErrorPolicy(), context=context, ledger=ledger))
    assert [(o.path, o.stage, o.reason) for o in out if isinstance(o, Failed)] == [
        (s.path, "ledger", "unexpected_error") for s in sources
    ]
    assert context.metrics.stage("ledger").by_reason == {"unexpected_error": 2}


def test_retry_failed_or_no_ledger_passes_everything(tmp_path: Path) -> None:
    ledger, bad, good = _known_bad_setup(tmp_path)
    retried = skip_known_bad([bad, good], policy=ErrorPolicy(), ledger=ledger, retry_failed=True)
    assert list(retried) == [bad, good]
    assert list(skip_known_bad([bad, good], policy=ErrorPolicy(), ledger=None)) == [bad, good]
    assert ledger.known_bad(bad.path) is not None  # retrying forgets nothing by itself


def test_many_known_bad_files_do_not_trip_the_breaker(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    ledger = Ledger(tmp_path / "ledger.jsonl")
    sources = []
    for i in range(100):
        path = _file(media, f"{i:03d}.mp4")
        if i % 5 < 3:  # 60 % known-bad, spread over the whole run
            ledger.record(_failed(path))
        sources.append(_source(path))
    context = StageContext(breaker_config=BreakerConfig(threshold=0.5, min_items=20, window=100))
    out = list(skip_known_bad(sources, policy=ErrorPolicy(), context=context, ledger=ledger))
    assert sum(isinstance(o, Failed) for o in out) == 60
    assert sum(isinstance(o, Source) for o in out) == 40
    assert context.breakers["ledger"].state == "closed"


def test_known_bad_files_are_not_probed_again(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "data"
    root.mkdir()
    _file(root, "empty.mp4", b"")
    _file(root, "garbage.mp4", os.urandom(2048))
    _file(root, "text.png", b"not an image\n")
    Image.new("RGB", (32, 32)).save(root / "ok.png")
    ledger = Ledger(tmp_path / "ledger.jsonl")

    def run(retry_failed: bool = False) -> tuple[list[Probed | Failed], StageContext]:
        context = StageContext()
        policy = ErrorPolicy()
        sources = collect([root], policy=policy, context=context)
        kept = skip_known_bad(
            sources, policy=policy, context=context, ledger=ledger, retry_failed=retry_failed
        )
        return list(probe(kept, policy=policy, context=context)), context

    first, _ = run()
    failures = [o for o in first if isinstance(o, Failed)]
    assert {Path(f.path).name for f in failures} == {"empty.mp4", "garbage.mp4", "text.png"}
    assert all(ledger.record(f) for f in failures)

    second, context = run()
    assert context.metrics.stage("probe").items_in == 1  # only ok.png is opened
    skipped = sorted((Path(o.path).name, o.stage) for o in second if isinstance(o, Failed))
    assert skipped == [("empty.mp4", "ledger"), ("garbage.mp4", "ledger"), ("text.png", "ledger")]
    assert [Path(o.path).name for o in second if isinstance(o, Probed)] == ["ok.png"]

    third, context = run(retry_failed=True)
    assert context.metrics.stage("probe").items_in == 4
    assert _outcomes(third) == _outcomes(first)


def _outcomes(items: list[Probed | Failed]) -> list[tuple[str, str, str]]:
    return [
        (o.key, o.stage, o.reason) if isinstance(o, Failed) else (o.key, "ok", "") for o in items
    ]
