"""Reproductions of the input-file faults of issue 13 (reliability), end to end per stage.

Each test builds the faulty input at test time (nothing here is committed media), runs the
stage that met the fault in the report (probe, collect, decode, integrity), and checks the
failure record: its reason, that it names the file (and line), whether the breaker counts it
and whether the ledger would keep it. docs/reliability.md ("Input files") points here.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bounded import finishes
from media import ffmpeg_available, make_image, make_video

from wan_data.errors import SampleError
from wan_data.failures.breaker import FILTER_REASONS
from wan_data.failures.ledger import LEDGER_REASONS, Ledger
from wan_data.failures.policy import ErrorPolicy
from wan_data.items import Bucket, Failed, Probed, Source
from wan_data.media import ffmpeg_errno
from wan_data.media.frames import decode_image, open_decoder
from wan_data.media.integrity import check_integrity
from wan_data.media.source_files import SourceFile
from wan_data.planning.clips import ClipPlan
from wan_data.stages.collect import collect
from wan_data.stages.probe import ProbeLimits, probe

needs_ffmpeg = pytest.mark.skipif(not ffmpeg_available(), reason="needs the ffmpeg CLI")
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")

LIMITS = ProbeLimits(min_frames=1, fps=16.0)


def no_sleep(_: float) -> None:
    """Backoff without waiting (the retries still happen)."""


def probe_one(path: str | Path, media_type: str = "video", **limits: Any) -> Probed | Failed:
    source = Source(key=Path(path).name, path=str(path), media_type=media_type)  # type: ignore[arg-type]
    (out,) = probe(
        [source],
        policy=ErrorPolicy(sleep=no_sleep),
        limits=ProbeLimits(**{"min_frames": 1, "fps": 16.0, **limits}),
    )
    assert isinstance(out, (Probed, Failed))
    return out


def failed(out: object) -> Failed:
    assert isinstance(out, Failed), out
    return out


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not ffmpeg_available():
        pytest.skip("needs the ffmpeg CLI")
    path = tmp_path_factory.mktemp("faults") / "good.mp4"
    make_video(path, width=64, height=48, fps=16, num_frames=20)
    return path


# -------------------------------------------------------------- transient errors at probe


@pytest.mark.parametrize(
    "strerror", ["Too many open files", "Cannot allocate memory", "Input/output error"]
)
def test_transient_error_at_probe_is_retried_and_never_ledgered(
    video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strerror: str
) -> None:
    # torchcodec wraps the C error in a RuntimeError; it used to be "unreadable" at once,
    # ledgered, and skipped as known_bad by every later run. The machine is at fault here, so
    # it fails Python too: a storage EIO fails the probe's re-read of the file, a host out of
    # memory its allocation check (without these, FFmpeg's EIO or ENOMEM on a file that reads
    # back fine is the file's fault: test_ffmpeg_errno_on_a_file_that_reads_back_is_the_files).
    import torchcodec.decoders

    if strerror == "Input/output error":

        def failing_read(self: SourceFile, buffer: Any) -> int:
            raise OSError(errno.EIO, strerror)

        monkeypatch.setattr(SourceFile, "readinto", failing_read)
    if strerror == "Cannot allocate memory":
        monkeypatch.setattr(ffmpeg_errno, "ALLOCATION_CHECK_BYTES", 1 << 62)  # MemoryError

    real = torchcodec.decoders.VideoDecoder
    calls = []

    def failing(source: Any, **kwargs: Any) -> Any:
        calls.append(source)
        raise RuntimeError(
            "SingleStreamDecoder, SingleStreamDecoder.cpp:41, Could not open input file: "
            f"{video} {strerror}"
        )

    monkeypatch.setattr(torchcodec.decoders, "VideoDecoder", failing)
    out = failed(probe_one(video))
    assert len(calls) == 3  # retried up to max_attempts
    assert out.reason == "io_transient" and out.attempts == 3
    assert out.reason not in LEDGER_REASONS
    ledger = Ledger(tmp_path / "ledger.jsonl")
    assert ledger.record(out) is False
    assert ledger.known_bad(str(video)) is None

    # The fault passes: the next run probes the file and keeps it.
    monkeypatch.undo()
    assert torchcodec.decoders.VideoDecoder is real
    assert isinstance(probe_one(video), Probed)


@pytest.mark.parametrize(
    ("strerror", "reason"),
    [("Input/output error", "unreadable"), ("Cannot allocate memory", "unreadable")],
)
def test_ffmpeg_errno_on_a_file_that_reads_back_is_the_files(
    video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strerror: str, reason: str
) -> None:
    # FFmpeg reports some damage as EIO or ENOMEM (tests/faults/test_fuzz.py has real files).
    # On every attempt, while the file reads back to its end and memory can be allocated: the
    # file's fault, skipped with the damaged-data reason and ledgered (not io_transient).
    import torchcodec.decoders

    calls = []

    def failing(source: Any, **kwargs: Any) -> Any:
        calls.append(source)
        raise RuntimeError(f"Failed to open input buffer: {strerror}")

    monkeypatch.setattr(torchcodec.decoders, "VideoDecoder", failing)
    out = failed(probe_one(video))
    assert len(calls) == 3 and out.attempts == 3  # retried first, as a machine fault
    assert (out.reason, out.error_type, out.stage) == (reason, "SampleError", "probe")
    assert str(video) in out.message and strerror in out.message
    assert "reads back to its end" in out.message
    assert Ledger(tmp_path / "ledger.jsonl").record(out) is True


def test_ffmpeg_errno_that_changes_between_attempts_stays_the_machines(
    video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Damage fails the same way every time; errors that differ are taken as the machine's.
    import torchcodec.decoders

    texts = iter(["Input/output error", "Cannot allocate memory", "Input/output error"])

    def failing(source: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"Failed to open input buffer: {next(texts)}")

    monkeypatch.setattr(torchcodec.decoders, "VideoDecoder", failing)
    out = failed(probe_one(video))
    assert out.reason == "io_transient" and out.attempts == 3


def test_transient_error_that_clears_within_the_retries_keeps_the_file(
    video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchcodec.decoders

    real = torchcodec.decoders.VideoDecoder
    attempts = []

    def flaky(source: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError(f"Could not open input file: {video} Too many open files")
        return real(source, **kwargs)

    monkeypatch.setattr(torchcodec.decoders, "VideoDecoder", flaky)
    out = probe_one(video)
    assert isinstance(out, Probed) and out.metadata.frame_count == 20


@pytest.fixture
def exhausted_descriptors() -> Iterator[Callable[[], None]]:
    """Fill the descriptor table (soft limit lowered to keep it quick); call to release."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 512), hard))
    held: list[int] = []

    def release() -> None:
        while held:
            os.close(held.pop())
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        assert exc.errno == errno.EMFILE
    try:
        yield release
    finally:
        release()


def test_real_descriptor_exhaustion_at_probe_is_transient(
    video: Path, tmp_path: Path, exhausted_descriptors: Callable[[], None]
) -> None:
    out = failed(probe_one(video))
    exhausted_descriptors()
    assert out.reason == "io_transient" and out.attempts == 3
    assert "Too many open files" in out.message and str(video) in out.message
    assert Ledger(tmp_path / "ledger.jsonl").record(out) is False
    assert isinstance(probe_one(video), Probed)


# ------------------------------------------------------------------------ metadata files


def test_csv_unclosed_quote_reports_every_swallowed_row(tmp_path: Path) -> None:
    for name in "abcde":
        (tmp_path / f"{name}.mp4").write_bytes(b"")
    meta = tmp_path / "list.csv"
    meta.write_text(
        'path,caption\na.mp4,"an unclosed caption\nb.mp4,second\nc.mp4,third\nd.mp4,fourth\n'
    )
    out = list(collect([str(meta)], policy=ErrorPolicy()))
    # Before: one Source a.mp4 whose caption held the three following rows; nothing else.
    assert not any(isinstance(o, Source) for o in out)
    bad = [failed(o) for o in out]
    assert [f.path for f in bad] == [f"{meta}:{n}" for n in (2, 3, 4, 5)]
    assert {f.reason for f in bad} == {"bad_metadata_line"}
    assert "quoted field" in bad[0].message and "line 3" in bad[0].message
    assert "opened at line 2" in bad[1].message and "b.mp4,second" in bad[1].message


def test_csv_multiline_caption_is_still_accepted(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "b.mp4").write_bytes(b"")
    meta = tmp_path / "list.csv"
    meta.write_text('path,caption\na.mp4,"first line\nsecond, line"\nb.mp4,other\n')
    out = list(collect([str(meta)], policy=ErrorPolicy()))
    assert [o.captions for o in out if isinstance(o, Source)] == [
        ("first line", "second, line"),
        ("other",),
    ]


def test_deeply_nested_jsonl_line_fails_alone(tmp_path: Path) -> None:
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).write_bytes(b"")
    meta = tmp_path / "list.jsonl"
    nested = "[" * 100_000 + "]" * 100_000
    lines = [json.dumps({"path": "a.mp4"}), nested, json.dumps({"path": "b.mp4"})]
    meta.write_text("\n".join(lines) + "\n")
    out = list(collect([str(meta)], policy=ErrorPolicy()))
    # Before: RecursionError dropped the whole file as one decode_error; 0 samples.
    assert sorted(o.path for o in out if isinstance(o, Source)) == [
        str(tmp_path / "a.mp4"),
        str(tmp_path / "b.mp4"),
    ]
    (bad,) = [failed(o) for o in out if isinstance(o, Failed)]
    assert bad.reason == "bad_metadata_line" and bad.path == f"{meta}:2"
    assert bad.error_type == "RecursionError" and "too deeply" in bad.message


# ----------------------------------------------------------------------- wrong reasons


def _png_bomb(path: Path, side: int) -> None:
    """A valid 1-bit grayscale PNG of side x side black pixels (~100 KB for 30000)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\0" * (1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def test_png_bomb_is_too_large_not_a_bug(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    _png_bomb(bomb, 30_000)
    out = failed(probe_one(bomb, "image", max_pixels=2**62))  # Pillow's own bound applies
    assert out.reason == "too_large" and out.error_type == "SampleError"
    assert str(bomb) in out.message and "pixels" in out.message
    assert out.reason in FILTER_REASONS  # not counted toward the breaker as a bug
    assert "wan_data bug" not in out.message


def test_symlink_loop_is_a_missing_path(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").symlink_to("b.mp4")
    (tmp_path / "b.mp4").symlink_to("a.mp4")
    meta = tmp_path / "list.jsonl"
    meta.write_text(json.dumps({"path": "a.mp4"}) + "\n")
    (listed,) = collect([str(meta)], policy=ErrorPolicy())
    assert failed(listed).reason == "missing"  # was invalid_data (ELOOP from stat)
    assert f"{meta}:1" in listed.message  # the listing line is named
    out = failed(probe_one(tmp_path / "a.mp4"))
    assert out.reason == "missing" and "symbolic links" in out.message


def _mp4_without_streams(path: Path) -> None:
    """ftyp + a moov holding only its mvhd: a valid container with no track at all."""

    def box(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", 8 + len(payload)) + kind + payload

    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    mvhd = box(
        b"mvhd",
        bytes(4)
        + struct.pack(">IIII", 0, 0, 1000, 0)
        + struct.pack(">IH", 0x10000, 0x100)
        + bytes(10)
        + matrix
        + bytes(24)
        + struct.pack(">I", 1),
    )
    path.write_bytes(box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isom") + box(b"moov", mvhd))


def test_mp4_without_streams_is_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "empty_container.mp4"
    _mp4_without_streams(path)
    out = failed(probe_one(path))
    assert out.reason == "no_video_stream"  # was decode_error ("Could not seek file to pts=0")
    assert "no video stream" in out.message and str(path) in out.message


@needs_ffmpeg
def test_non_utf8_file_name_is_probed_decoded_and_checked(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9-\xff.mp4"  # Latin-1 bytes: not valid UTF-8
    staging = tmp_path / "staging.mp4"
    make_video(staging, width=64, height=48, fps=16, num_frames=20)
    os.rename(staging, raw)
    path = os.fsdecode(raw)  # surrogate-escaped str, as os.listdir gives it
    out = probe_one(path)
    assert isinstance(out, Probed), out  # was a damaged file (torchcodec cannot take the str)
    assert out.metadata.frame_count == 20
    decoder = open_decoder(path, (64, 48), (64, 48), 1)
    assert tuple(decoder.get_frame_at(19).data.shape) == (3, 48, 64)
    assert check_integrity(path).ok

    image_raw = os.fsencode(tmp_path) + b"/\xff.png"
    make_image(tmp_path / "staging.png", width=32, height=24)
    os.rename(tmp_path / "staging.png", image_raw)
    image = os.fsdecode(image_raw)
    assert isinstance(probe_one(image, "image"), Probed)
    assert tuple(decode_image(image, _plan(32, 24)).shape) == (1, 3, 24, 32)


@needs_ffmpeg
def test_truncated_jpeg_fails_at_probe(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    make_image(path, width=160, height=120)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    out = failed(probe_one(path, "image"))  # passed the probe before, failed only at decode
    assert out.reason == "truncated" and out.stage == "probe"
    assert str(path) in out.message
    assert out.reason in LEDGER_REASONS  # a property of the bytes: skipped in later runs


# ------------------------------------------------------- a source replaced by a FIFO


def _plan(width: int, height: int) -> ClipPlan:
    return ClipPlan(0, Bucket(1, width, height), (width, height), (0, 0), None, (0,))


@needs_fifo
@pytest.mark.parametrize(
    ("stage", "open_it"),
    [
        ("probe", lambda p: probe_one(p)),
        ("probe", lambda p: probe_one(p, "image")),
        ("decode", lambda p: open_decoder(p, (64, 48), (64, 48), 1)),
        ("decode", lambda p: decode_image(p, _plan(64, 48))),
        ("integrity", lambda p: check_integrity(p, timeout_seconds=60)),
    ],
    ids=["probe-video", "probe-image", "decode-video", "decode-image", "integrity"],
)
def test_source_replaced_by_fifo_fails_fast(
    tmp_path: Path, stage: str, open_it: Callable[[str], object]
) -> None:
    if stage == "integrity" and not ffmpeg_available():
        pytest.skip("needs the ffmpeg CLI")
    fifo = tmp_path / "replaced.mp4"
    os.mkfifo(fifo)
    result = finishes(lambda: open_it(str(fifo)), 20.0)
    if isinstance(result, Failed):  # the probe stage records the skip
        assert result.reason == "not_a_file" and result.stage == "probe"
        message = result.message
    else:
        assert isinstance(result, SampleError), result
        assert result.reason == "not_a_file"
        message = str(result)
    assert str(fifo) in message and "FIFO" in message and f"stage={stage}" in message
