"""The bad-input corpus (issue 13): every kind of hostile or damaged input, end to end.

One table-driven test: each kind is a small builder that puts one bad item (a file, a link, a
sidecar, a metadata line, or a change made after construction) into a folder holding two good
videos, and the outcome the pipeline must reach. The item goes through the real path: a
``WanVideoDataset`` is constructed over the folder (or over a metadata list naming the files)
and iterated through ``dataset.loader(num_workers=0)``. For every kind:

- construction succeeds and iteration yields ``len(ds)`` full batches of valid pixels
  (finite, in [-1, 1], of the bucket's shape);
- the bad item is either in ``report()["skipped"]`` with one of the expected reasons (never
  ``unexpected_error``), or served correctly (its sample passes the same checks), or, for
  ``IGNORED``, neither (collect does not list it as media);
- the whole case (construction and iteration) finishes within :data:`CASE_SECONDS`.

The ids are stable: docs/reliability.md ("Bad-input corpus") cites them as
``tests/security/test_bad_input_corpus.py::test_bad_input[<id>]``. Files come from
``tests/media.py`` (the session ``corpus`` fixture and its builders) or are made here; nothing
is committed media.

Run: ``.venv/bin/python -m pytest tests/security/test_bad_input_corpus.py -q -p no:cacheprovider``
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import struct
import subprocess
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from media import Corpus, ffmpeg_available, make_image, make_video

from wan_data import WanVideoDataset

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not ffmpeg_available(), reason="needs the ffmpeg CLI"),
]

CASE_SECONDS = 60.0
"""Upper bound on one case (construction + iteration); they take well under a second each."""

OPTIONS: dict[str, Any] = {
    "frames": [5],
    "fps": 8,
    "resolution": (32, 32),
    "batch_size": 2,
    "seed": 0,
    "breaker_threshold": None,  # one bad file of three must never stop a run
}

SERVED = "served"
"""Outcome: the item is served, and its sample is as valid as any other."""
IGNORED = "ignored"
"""Outcome: collect does not take it for media (neither served nor skipped)."""


@dataclass
class Ctx:
    """What a builder works with: the case folder (two good videos already in it)."""

    folder: Path
    corpus: Corpus
    samples: dict[str, Path]
    monkeypatch: pytest.MonkeyPatch


@dataclass
class Bad:
    """The bad item a builder made.

    Attributes:
        path: the path its skip record (or served sample) carries: the file, or
            ``<list>:<line>`` for a metadata line.
        root: what the dataset is constructed over (default: the case folder).
        after: run after construction and before iteration (a file changed mid-run).
        options: more dataset options for this case.
        check: extra checks of the served sample ``(batch, index)``.
    """

    path: str
    root: Path | None = None
    after: Callable[[], object] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    check: Callable[[dict[str, Any], int], None] | None = None
    also: tuple[str, ...] = ()
    """More record paths that belong to this item (the rows an unclosed quote swallowed)."""


@dataclass(frozen=True)
class Kind:
    id: str
    build: Callable[[Ctx], Bad]
    expect: frozenset[str]
    xfail: str | None = None


# ------------------------------------------------------------------------------ helpers


def _copy(ctx: Ctx, name: str, dest: str) -> str:
    """Copy corpus file ``name`` into the case folder as ``dest``."""
    path = ctx.folder / dest
    shutil.copy(ctx.corpus.path(name), path)
    return str(path)


def _write(ctx: Ctx, name: str, data: bytes) -> str:
    path = ctx.folder / name
    path.write_bytes(data)
    return str(path)


def _cut(src: Path, dst: Path, fraction: float) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def _png(width: int, height: int, bit_depth: int, colour: int, rows: bytes | None) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
    if rows is not None:
        out += _png_chunk(b"IDAT", zlib.compress(rows, 9))
    return out + _png_chunk(b"IEND", b"")


def _png_bomb_bytes(side: int) -> bytes:
    """A real 1-bit PNG of side x side black pixels (~100 KB for 30000)."""
    row = b"\0" * (1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _mp4_without_streams() -> bytes:
    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    mvhd = _box(
        b"mvhd",
        bytes(4)
        + struct.pack(">IIII", 0, 0, 1000, 0)
        + struct.pack(">IH", 0x10000, 0x100)
        + bytes(10)
        + matrix
        + bytes(24)
        + struct.pack(">I", 1),
    )
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isom")
    return ftyp + _box(b"moov", mvhd)


def _ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
        check=True,
        capture_output=True,
    )


def _pillow(path: Path, mode: str, size: tuple[int, int], **save: Any) -> None:
    from PIL import Image

    image = Image.new(mode, size)
    if mode in ("I;16", "I"):
        image.putdata([(x * 997 + y * 131) % 65536 for y in range(size[1]) for x in range(size[0])])
    elif mode == "P":
        image.putpalette([i % 256 for i in range(768)])
        image.putdata([(x + y) % 256 for y in range(size[1]) for x in range(size[0])])
    else:
        bands = len(mode) if mode != "CMYK" else 4
        pixels = [
            tuple(((x * 7 + y * 3 + b * 50) % 256) for b in range(bands))
            for y in range(size[1])
            for x in range(size[0])
        ]
        image.putdata(pixels if bands > 1 else [p[0] for p in pixels])
    image.save(path, **save)


def _metadata(ctx: Ctx, lines: list[str], name: str = "list.jsonl") -> Path:
    """A JSONL list naming both good videos, then ``lines`` (line 3 onwards)."""
    meta = ctx.folder / name
    good = [json.dumps({"path": f"good{i}.mp4", "caption": f"good {i}"}) for i in range(2)]
    meta.write_bytes(("\n".join(good + lines) + "\n").encode("utf-8", "surrogateescape"))
    return meta


def _caption_check(expected: Callable[[str], bool]) -> Callable[[dict[str, Any], int], None]:
    def check(batch: dict[str, Any], i: int) -> None:
        caption = batch["captions"][i]
        assert isinstance(caption, str) and expected(caption), repr(caption[:200])

    return check


def _blocking_is_refused(ctx: Ctx, name: str) -> Callable[[], None]:
    def replace() -> None:
        path = ctx.folder / name
        path.unlink()
        os.mkfifo(path)

    return replace


# ----------------------------------------------------------------------------- builders
# Empty, text, garbage.


def empty_mp4(ctx: Ctx) -> Bad:
    return Bad(_write(ctx, "empty.mp4", b""))


def empty_png(ctx: Ctx) -> Bad:
    return Bad(_write(ctx, "empty.png", b""))


def text_named_mp4(ctx: Ctx) -> Bad:
    return Bad(_copy(ctx, "broken/notes.mp4", "notes.mp4"))


def random_bytes_mp4(ctx: Ctx) -> Bad:
    return Bad(_copy(ctx, "broken/garbage.mp4", "garbage.mp4"))


def mp4_header_overwritten(ctx: Ctx) -> Bad:
    return Bad(_copy(ctx, "broken/bad_header.mp4", "bad_header.mp4"))


# Truncated and structurally broken videos.


def _truncated(fraction: float, faststart: bool) -> Callable[[Ctx], Bad]:
    def build(ctx: Ctx) -> Bad:
        src = ctx.samples["faststart" if faststart else "moov_at_end"]
        dst = ctx.folder / "cut.mp4"
        _cut(src, dst, fraction)
        return Bad(str(dst))

    return build


def moov_missing(ctx: Ctx) -> Bad:
    """The index (the last box of a moov-at-end file) cut off: frames without their index."""
    data = ctx.samples["moov_at_end"].read_bytes()
    at = data.rfind(b"moov") - 4
    assert at > 0 and struct.unpack(">I", data[at : at + 4])[0] == len(data) - at
    return Bad(_write(ctx, "no_moov.mp4", data[:at]))


def moov_renamed_free(ctx: Ctx) -> Bad:
    """The index box typed ``free``: FFmpeg finds the moov inside it; the frames are intact."""
    data = ctx.samples["moov_at_end"].read_bytes()
    at = data.rfind(b"moov")
    return Bad(_write(ctx, "free_moov.mp4", data[:at] + b"free" + data[at + 4 :]))


def mp4_no_streams(ctx: Ctx) -> Bad:
    return Bad(_write(ctx, "no_streams.mp4", _mp4_without_streams()))


def audio_only(ctx: Ctx) -> Bad:
    return Bad(_copy(ctx, "broken/audio_only.mp4", "audio.mp4"))


def huge_declared_video_size(ctx: Ctx) -> Bad:
    """The avc1 sample entry and track header claim 40000x40000; the stream is 48x32."""
    data = bytearray(ctx.samples["faststart"].read_bytes())
    at = data.find(b"avc1")
    assert at > 0
    # avc1: 6 reserved + 2 index + 16 pre-defined/reserved, then width, height (16 bit).
    struct.pack_into(">HH", data, at + 4 + 24, 40000, 40000)
    tkhd = data.find(b"tkhd")
    version = data[tkhd + 4]
    size_at = tkhd + 4 + 4 + (32 if version == 1 else 20) + 8 + 8 + 36
    struct.pack_into(">II", data, size_at, 40000 << 16, 40000 << 16)
    return Bad(_write(ctx, "huge_dims.mp4", bytes(data)))


def zero_frame_video(ctx: Ctx) -> Bad:
    """What ffmpeg writes for ``-frames:v 0``: a zero-duration mp4 (it holds no track)."""
    path = ctx.folder / "zero.mp4"
    shutil.copy(ctx.samples["zero_frames"], path)
    return Bad(str(path))


def single_frame_video(ctx: Ctx) -> Bad:
    path = ctx.folder / "one_frame.mp4"
    make_video(path, width=48, height=32, fps=16, num_frames=1)
    return Bad(str(path))


def corrupt_middle_checked(ctx: Ctx) -> Bad:
    """Damaged packets inside an intact index, with the integrity check on."""
    return Bad(
        _copy(ctx, "damaged/corrupt_middle.mp4", "corrupt_middle.mp4"),
        options={"integrity_check": True},
    )


def truncated_after_index(ctx: Ctx) -> Bad:
    return Bad(_copy(ctx, "damaged/truncated_after_index.mp4", "truncated_after_index.mp4"))


# Videos that are odd but valid: served.


def rotated_video(ctx: Ctx) -> Bad:
    return Bad(_copy(ctx, "good/h264_rotated.mp4", "rotated.mp4"))


def vfr_video(ctx: Ctx) -> Bad:
    return Bad(_copy(ctx, "good/h264_vfr.mp4", "vfr.mp4"))


def odd_size_video(ctx: Ctx) -> Bad:
    path = ctx.folder / "odd.mp4"
    make_video(path, width=47, height=31, fps=16, num_frames=12, pix_fmt="yuv444p")
    return Bad(str(path))


def resolution_change_mid_stream(ctx: Ctx) -> Bad:
    """12 frames of 48x32, then 12 of 64x48, in one H.264 track (a second SPS mid-stream)."""
    path = ctx.folder / "size_change.mp4"
    shutil.copy(ctx.samples["size_change"], path)
    return Bad(str(path))


def animated_gif(ctx: Ctx) -> Bad:
    path = ctx.folder / "anim.gif"
    make_video(path, width=40, height=30, fps=10, num_frames=20, codec="gif", pix_fmt="rgb8")
    return Bad(str(path))


# Images.


def png_bomb_header_only(ctx: Ctx) -> Bad:
    """A 57-byte PNG declaring 100000x100000 RGB pixels, no data."""
    return Bad(_write(ctx, "bomb_header.png", _png(100_000, 100_000, 8, 2, None)))


def png_bomb(ctx: Ctx) -> Bad:
    return Bad(_write(ctx, "bomb.png", _png_bomb_bytes(30_000)))


def truncated_jpeg(ctx: Ctx) -> Bad:
    data = ctx.samples["jpeg"].read_bytes()
    return Bad(_write(ctx, "cut.jpg", data[: len(data) // 2]))


def truncated_png(ctx: Ctx) -> Bad:
    data = ctx.samples["png"].read_bytes()
    return Bad(_write(ctx, "cut.png", data[: len(data) // 2]))


def corrupt_jpeg_data(ctx: Ctx) -> Bad:
    """Entropy-coded data overwritten after the headers: libjpeg conceals or rejects it."""
    data = bytearray(ctx.samples["jpeg"].read_bytes())
    sos = data.find(b"\xff\xda")
    rng = random.Random(13)
    for i in range(sos + 40, len(data) - 10, 7):
        data[i] = rng.randrange(256)
    return Bad(_write(ctx, "corrupt.jpg", bytes(data)))


def one_by_one_image(ctx: Ctx) -> Bad:
    path = ctx.folder / "dot.png"
    _pillow(path, "RGB", (1, 1))
    return Bad(str(path))


def odd_size_image(ctx: Ctx) -> Bad:
    path = ctx.folder / "odd.png"
    _pillow(path, "RGB", (33, 47))
    return Bad(str(path))


def cmyk_jpeg(ctx: Ctx) -> Bad:
    path = ctx.folder / "cmyk.jpg"
    _pillow(path, "CMYK", (40, 40))
    return Bad(str(path))


def png_16_bit_grey(ctx: Ctx) -> Bad:
    path = ctx.folder / "deep.png"
    _pillow(path, "I;16", (40, 40))

    def not_saturated(batch: dict[str, Any], i: int) -> None:
        # A gradient over the 16-bit range must not come out as one flat colour.
        pixels = batch["pixels"][i]
        assert pixels.std() > 0.2 and (pixels < 0.9).float().mean() > 0.5, "served flat white"

    return Bad(str(path), check=not_saturated)


def grayscale_png(ctx: Ctx) -> Bad:
    path = ctx.folder / "grey.png"
    _pillow(path, "L", (40, 40))
    return Bad(str(path))


def palette_png_with_alpha(ctx: Ctx) -> Bad:
    path = ctx.folder / "palette.png"
    _pillow(path, "P", (40, 40), transparency=0)
    return Bad(str(path))


def rgba_png(ctx: Ctx) -> Bad:
    path = ctx.folder / "alpha.png"
    _pillow(path, "RGBA", (40, 40))
    return Bad(str(path))


def png_named_mp4(ctx: Ctx) -> Bad:
    return Bad(_write(ctx, "still.mp4", ctx.samples["png"].read_bytes()))


def mp4_named_png(ctx: Ctx) -> Bad:
    return Bad(_write(ctx, "moving.png", ctx.samples["faststart"].read_bytes()))


# Names and file types.


def symlink_loop(ctx: Ctx) -> Bad:
    (ctx.folder / "loop_a.mp4").symlink_to("loop_b.mp4")
    (ctx.folder / "loop_b.mp4").symlink_to("loop_a.mp4")
    return Bad(str(ctx.folder / "loop_a.mp4"), also=(str(ctx.folder / "loop_b.mp4"),))


def dangling_symlink(ctx: Ctx) -> Bad:
    (ctx.folder / "dangling.mp4").symlink_to("nowhere.mp4")
    return Bad(str(ctx.folder / "dangling.mp4"))


def symlink_outside_root(ctx: Ctx) -> Bad:
    outside = ctx.folder.parent / f"{ctx.folder.name}_outside.mp4"
    shutil.copy(ctx.samples["faststart"], outside)
    (ctx.folder / "escape.mp4").symlink_to(outside)
    return Bad(str(ctx.folder / "escape.mp4"))


def directory_named_mp4(ctx: Ctx) -> Bad:
    (ctx.folder / "folder.mp4").mkdir()
    return Bad(str(ctx.folder / "folder.mp4"))


def fifo_named_mp4(ctx: Ctx) -> Bad:
    os.mkfifo(ctx.folder / "pipe.mp4")
    return Bad(str(ctx.folder / "pipe.mp4"))


def socket_named_mp4(ctx: Ctx) -> Bad:
    path = ctx.folder / "sock.mp4"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()  # the socket file stays
    return Bad(str(path))


def unreadable_file(ctx: Ctx) -> Bad:
    """chmod 000 does not bind root: every open of the file raises EACCES instead."""
    path = ctx.folder / "secret.mp4"
    shutil.copy(ctx.samples["faststart"], path)
    target = str(path)
    real_open = os.open

    def denying_open(name: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.fsdecode(name) == target:
            raise PermissionError(13, "Permission denied", target)
        return real_open(name, flags, *args, **kwargs)

    ctx.monkeypatch.setattr(os, "open", denying_open)
    return Bad(target)


def non_utf8_name(ctx: Ctx) -> Bad:
    raw = os.fsencode(ctx.folder) + b"/caf\xe9-\xff.mp4"
    shutil.copy(ctx.samples["faststart"], raw)  # type: ignore[arg-type]
    return Bad(os.fsdecode(raw))


def very_long_name(ctx: Ctx) -> Bad:
    path = ctx.folder / ("v" * 251 + ".mp4")  # 255 bytes: the usual NAME_MAX
    shutil.copy(ctx.samples["faststart"], path)
    return Bad(str(path))


def newline_in_name(ctx: Ctx) -> Bad:
    path = ctx.folder / "line\nbreak\r.mp4"
    shutil.copy(ctx.samples["faststart"], path)
    return Bad(str(path))


# Caption sidecars.


def _with_sidecar(ctx: Ctx, make: Callable[[Path], object]) -> Path:
    path = ctx.folder / "captioned.mp4"
    shutil.copy(ctx.samples["faststart"], path)
    make(path.with_suffix(".txt"))
    return path


def caption_binary(ctx: Ctx) -> Bad:
    path = _with_sidecar(ctx, lambda p: p.write_bytes(bytes(range(256)) * 4))
    return Bad(str(path), check=_caption_check(lambda c: "\x00" not in c or len(c) < 5000))


def caption_non_utf8(ctx: Ctx) -> Bad:
    path = _with_sidecar(ctx, lambda p: p.write_bytes("café au lait\n".encode("latin-1")))
    return Bad(str(path), check=_caption_check(lambda c: c == "caf\ufffd au lait"))


def caption_huge(ctx: Ctx) -> Bad:
    """A 64 MiB sidecar of one line (sparse on disk)."""

    def huge(p: Path) -> None:
        with open(p, "wb") as fh:
            fh.truncate(64 << 20)
            fh.seek((64 << 20) - 1)
            fh.write(b"x")

    return Bad(str(_with_sidecar(ctx, huge)))


def caption_fifo(ctx: Ctx) -> Bad:
    path = _with_sidecar(ctx, os.mkfifo)
    return Bad(str(path), check=_caption_check(lambda c: c == ""))


def caption_directory(ctx: Ctx) -> Bad:
    path = _with_sidecar(ctx, lambda p: p.mkdir())
    return Bad(str(path), check=_caption_check(lambda c: c == ""))


def caption_dangling_symlink(ctx: Ctx) -> Bad:
    path = _with_sidecar(ctx, lambda p: p.symlink_to("nowhere.txt"))
    return Bad(str(path), check=_caption_check(lambda c: c == ""))


def caption_outside_root(ctx: Ctx) -> Bad:
    secret = ctx.folder.parent / f"{ctx.folder.name}_secret.txt"
    secret.write_text("outside the root\n")
    path = _with_sidecar(ctx, lambda p: p.symlink_to(secret))
    return Bad(str(path))


# Metadata lists.


def jsonl_deeply_nested_line(ctx: Ctx) -> Bad:
    meta = _metadata(ctx, ["[" * 100_000 + "]" * 100_000])
    return Bad(f"{meta}:3", root=meta)


def jsonl_invalid_line(ctx: Ctx) -> Bad:
    meta = _metadata(ctx, ['{"path": "good0.mp4", '])
    return Bad(f"{meta}:3", root=meta)


def jsonl_line_not_an_object(ctx: Ctx) -> Bad:
    meta = _metadata(ctx, ["[1, 2, 3]"])
    return Bad(f"{meta}:3", root=meta)


def jsonl_path_not_a_string(ctx: Ctx) -> Bad:
    meta = _metadata(ctx, [json.dumps({"path": {"nested": ["good0.mp4"]}})])
    return Bad(f"{meta}:3", root=meta)


def jsonl_non_utf8_line(ctx: Ctx) -> Bad:
    meta = ctx.folder / "list.jsonl"
    good = [json.dumps({"path": f"good{i}.mp4"}).encode() for i in range(2)]
    meta.write_bytes(b"\n".join([*good, b'{"path": "good\xff.mp4"}']) + b"\n")
    # Read with the bad byte replaced (U+FFFD): no such file, and the message names the line.
    return Bad(str(ctx.folder / "good\ufffd.mp4"), root=meta)


def csv_unclosed_quote(ctx: Ctx) -> Bad:
    meta = ctx.folder / "list.csv"
    for name in ("victim.mp4", "swallowed.mp4"):
        shutil.copy(ctx.samples["faststart"], ctx.folder / name)
    meta.write_text(
        'path,caption\ngood0.mp4,zero\ngood1.mp4,one\nvictim.mp4,"an unclosed caption\n'
        "swallowed.mp4,second\n"
    )
    return Bad(f"{meta}:4", root=meta, also=(f"{meta}:5",))


def metadata_dotdot_traversal(ctx: Ctx) -> Bad:
    outside = ctx.folder.parent / f"{ctx.folder.name}_up.mp4"
    shutil.copy(ctx.samples["faststart"], outside)
    meta = _metadata(ctx, [json.dumps({"path": f"../{outside.name}"})])
    return Bad(os.path.normpath(ctx.folder / ".." / outside.name), root=meta)


def metadata_absolute_outside(ctx: Ctx) -> Bad:
    outside = ctx.folder.parent / f"{ctx.folder.name}_abs.mp4"
    shutil.copy(ctx.samples["faststart"], outside)
    meta = _metadata(ctx, [json.dumps({"path": str(outside)})])
    return Bad(str(outside), root=meta)


def metadata_duplicate_paths(ctx: Ctx) -> Bad:
    shutil.copy(ctx.samples["faststart"], ctx.folder / "twice.mp4")
    line = json.dumps({"path": "twice.mp4", "caption": "twice"})
    meta = _metadata(ctx, [line, line])
    return Bad(str(ctx.folder / "twice.mp4"), root=meta)


def metadata_points_at_fifo(ctx: Ctx) -> Bad:
    os.mkfifo(ctx.folder / "listed_pipe.mp4")
    meta = _metadata(ctx, [json.dumps({"path": "listed_pipe.mp4"})])
    return Bad(str(ctx.folder / "listed_pipe.mp4"), root=meta)


def metadata_points_at_missing(ctx: Ctx) -> Bad:
    meta = _metadata(ctx, [json.dumps({"path": "not_there.mp4"})])
    return Bad(str(ctx.folder / "not_there.mp4"), root=meta)


# Changes after construction (between the probe and the decode).


def _late(ctx: Ctx, change: Callable[[Path], object]) -> Bad:
    path = ctx.folder / "late.mp4"
    shutil.copy(ctx.samples["faststart"], path)
    return Bad(str(path), after=lambda: change(path))


def deleted_after_construction(ctx: Ctx) -> Bad:
    return _late(ctx, lambda p: p.unlink())


def touched_after_construction(ctx: Ctx) -> Bad:
    def touch(p: Path) -> None:
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    return _late(ctx, touch)


def replaced_by_other_video_after_construction(ctx: Ctx) -> Bad:
    def replace(p: Path) -> None:
        make_video(p.with_name("staging.mp4"), width=40, height=40, fps=16, num_frames=30)
        os.replace(p.with_name("staging.mp4"), p)

    return _late(ctx, replace)


def replaced_by_garbage_after_construction(ctx: Ctx) -> Bad:
    return _late(ctx, lambda p: p.write_bytes(random.Random(5).randbytes(p.stat().st_size)))


def truncated_after_construction(ctx: Ctx) -> Bad:
    return _late(ctx, lambda p: _cut(p, p, 0.3))


def replaced_by_fifo_after_construction(ctx: Ctx) -> Bad:
    def fifo(p: Path) -> None:
        p.unlink()
        os.mkfifo(p)

    return _late(ctx, fifo)


def replaced_by_directory_after_construction(ctx: Ctx) -> Bad:
    def directory(p: Path) -> None:
        p.unlink()
        p.mkdir()

    return _late(ctx, directory)


# ------------------------------------------------------------------------------- the table

DECODE_FAILS = {"decode_error", "truncated", "unreadable", "source_changed"}

KINDS: tuple[Kind, ...] = (
    Kind("empty-mp4", empty_mp4, frozenset({"unreadable"})),
    Kind("empty-png", empty_png, frozenset({"invalid_data"})),
    Kind("text-named-mp4", text_named_mp4, frozenset({"unreadable"})),
    Kind("random-bytes-mp4", random_bytes_mp4, frozenset({"unreadable"})),
    Kind("mp4-header-overwritten", mp4_header_overwritten, frozenset({"unreadable"})),
    Kind("truncated-mp4-moov-at-end-10pc", _truncated(0.1, False), frozenset({"unreadable"})),
    Kind("truncated-mp4-moov-at-end-90pc", _truncated(0.9, False), frozenset({"unreadable"})),
    Kind(
        "truncated-mp4-in-moov",
        _truncated(0.02, True),
        frozenset({"unreadable", "no_video_stream"}),  # cut before the track: no stream left
    ),
    Kind("truncated-mp4-after-moov-50pc", _truncated(0.5, True), frozenset({"truncated"})),
    Kind("truncated-mp4-last-bytes", _truncated(0.995, True), frozenset({SERVED, "truncated"})),
    Kind("truncated-after-index-corpus", truncated_after_index, frozenset({"truncated"})),
    Kind("moov-missing", moov_missing, frozenset({"unreadable"})),
    Kind("moov-renamed-free", moov_renamed_free, frozenset({SERVED})),
    Kind("mp4-no-streams", mp4_no_streams, frozenset({"no_video_stream"})),
    Kind("audio-only", audio_only, frozenset({"no_video_stream"})),
    Kind("huge-declared-video-size", huge_declared_video_size, frozenset({SERVED, "too_large"})),
    Kind("zero-frame-video", zero_frame_video, frozenset({"no_video_stream", "no_frames"})),
    Kind("single-frame-video", single_frame_video, frozenset({"too_short"})),
    Kind("corrupt-packets-integrity-check", corrupt_middle_checked, frozenset({"corrupt_frames"})),
    Kind("rotated-video", rotated_video, frozenset({SERVED})),
    Kind("vfr-video", vfr_video, frozenset({SERVED})),
    Kind("odd-size-video", odd_size_video, frozenset({SERVED})),
    Kind(
        "resolution-change-mid-stream",
        resolution_change_mid_stream,
        # A clip inside one part is served; one across the change fails to stack its frames.
        frozenset({SERVED, "decode_error"}),
    ),
    Kind("animated-gif", animated_gif, frozenset({SERVED})),
    Kind("png-bomb-header-only", png_bomb_header_only, frozenset({"too_large"})),
    Kind("png-bomb-30000", png_bomb, frozenset({"too_large"})),
    Kind("truncated-jpeg", truncated_jpeg, frozenset({"truncated"})),
    Kind("truncated-png", truncated_png, frozenset({"truncated"})),
    Kind("corrupt-jpeg-data", corrupt_jpeg_data, frozenset({SERVED, "invalid_data", "truncated"})),
    Kind("image-1x1", one_by_one_image, frozenset({"too_small"})),
    Kind("odd-size-image", odd_size_image, frozenset({SERVED})),
    Kind("cmyk-jpeg", cmyk_jpeg, frozenset({SERVED})),
    Kind("png-16-bit-grey", png_16_bit_grey, frozenset({SERVED})),
    Kind("grayscale-png", grayscale_png, frozenset({SERVED})),
    Kind("palette-png-with-transparency", palette_png_with_alpha, frozenset({SERVED})),
    Kind("rgba-png", rgba_png, frozenset({SERVED})),
    Kind("png-named-mp4", png_named_mp4, frozenset({"too_short"})),
    Kind("mp4-named-png", mp4_named_png, frozenset({"invalid_data"})),
    Kind("symlink-loop", symlink_loop, frozenset({"missing"})),
    Kind("dangling-symlink", dangling_symlink, frozenset({"missing"})),
    Kind("symlink-outside-root", symlink_outside_root, frozenset({"outside_root"})),
    Kind("directory-named-mp4", directory_named_mp4, frozenset({"not_a_file"})),
    Kind("fifo-named-mp4", fifo_named_mp4, frozenset({"not_a_file"})),
    Kind("socket-named-mp4", socket_named_mp4, frozenset({"not_a_file"})),
    Kind("unreadable-file", unreadable_file, frozenset({"permission_denied"})),
    Kind("non-utf8-file-name", non_utf8_name, frozenset({SERVED})),
    Kind("very-long-file-name", very_long_name, frozenset({SERVED})),
    Kind("newline-in-file-name", newline_in_name, frozenset({SERVED})),
    Kind("caption-binary", caption_binary, frozenset({SERVED})),
    Kind("caption-non-utf8", caption_non_utf8, frozenset({SERVED})),
    Kind("caption-huge", caption_huge, frozenset({"too_large"})),
    Kind("caption-fifo", caption_fifo, frozenset({SERVED})),
    Kind("caption-directory", caption_directory, frozenset({SERVED})),
    Kind("caption-dangling-symlink", caption_dangling_symlink, frozenset({SERVED})),
    Kind("caption-symlink-outside-root", caption_outside_root, frozenset({"outside_root"})),
    Kind("jsonl-deeply-nested-line", jsonl_deeply_nested_line, frozenset({"bad_metadata_line"})),
    Kind("jsonl-invalid-line", jsonl_invalid_line, frozenset({"bad_metadata_line"})),
    Kind("jsonl-line-not-an-object", jsonl_line_not_an_object, frozenset({"bad_metadata_line"})),
    Kind("jsonl-path-not-a-string", jsonl_path_not_a_string, frozenset({"bad_metadata_line"})),
    Kind("jsonl-non-utf8-line", jsonl_non_utf8_line, frozenset({"missing"})),
    Kind("csv-unclosed-quote", csv_unclosed_quote, frozenset({"bad_metadata_line"})),
    Kind("metadata-dotdot-traversal", metadata_dotdot_traversal, frozenset({"outside_root"})),
    Kind("metadata-absolute-outside", metadata_absolute_outside, frozenset({"outside_root"})),
    Kind("metadata-duplicate-paths", metadata_duplicate_paths, frozenset({SERVED})),
    Kind("metadata-points-at-fifo", metadata_points_at_fifo, frozenset({"not_a_file"})),
    Kind("metadata-points-at-missing", metadata_points_at_missing, frozenset({"missing"})),
    Kind("deleted-after-construction", deleted_after_construction, frozenset({"missing"})),
    Kind("touched-after-construction", touched_after_construction, frozenset({SERVED})),
    Kind(
        "replaced-by-other-video-after-construction",
        replaced_by_other_video_after_construction,
        frozenset({"source_changed"}),
    ),
    Kind(
        "replaced-by-garbage-after-construction",
        replaced_by_garbage_after_construction,
        frozenset(DECODE_FAILS),
    ),
    Kind("truncated-after-construction", truncated_after_construction, frozenset(DECODE_FAILS)),
    Kind(
        "replaced-by-fifo-after-construction",
        replaced_by_fifo_after_construction,
        frozenset({"not_a_file"}),
    ),
    Kind(
        "replaced-by-directory-after-construction",
        replaced_by_directory_after_construction,
        frozenset({"not_a_file"}),
    ),
)

# Anything else is a bug report: these never count as a pass.
NEVER = frozenset({"unexpected_error", "invalid_item"})


def test_the_corpus_has_at_least_40_distinct_kinds() -> None:
    ids = [k.id for k in KINDS]
    assert len(ids) == len(set(ids)), "kind ids must be unique (the fault table cites them)"
    assert len({k.build for k in KINDS}) >= 40
    assert len(KINDS) >= 40
    assert not any(NEVER & k.expect for k in KINDS)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("bad_input_good")
    paths = [folder / f"good{i}.mp4" for i in range(2)]
    for i, path in enumerate(paths):
        make_video(path, width=48, height=32, fps=16, num_frames=12 + 2 * i)
    return paths


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Source material the builders cut, patch or copy."""
    folder = tmp_path_factory.mktemp("bad_input_samples")
    out = {
        "moov_at_end": folder / "moov_at_end.mp4",
        "faststart": folder / "faststart.mp4",
        "jpeg": folder / "still.jpg",
        "png": folder / "still.png",
        "zero_frames": folder / "zero.mp4",
        "size_change": folder / "size_change.mp4",
    }
    make_video(out["moov_at_end"], width=48, height=32, fps=16, num_frames=24)
    make_video(out["faststart"], width=48, height=32, fps=16, num_frames=24, faststart=True)
    make_image(out["jpeg"], width=160, height=120)
    make_image(out["png"], width=160, height=120)
    # A video stream with no frame: ffmpeg writes the track and its header, zero samples.
    _ffmpeg(
        *("-f", "lavfi", "-i", "testsrc2=size=48x32:rate=16", "-frames:v", "0"),
        *("-c:v", "libx264", "-pix_fmt", "yuv420p", str(out["zero_frames"])),
    )
    # Two H.264 elementary streams of different sizes, one after the other, in one mp4: the
    # second SPS changes the coded size mid-stream.
    parts = []
    for i, (w, h) in enumerate(((48, 32), (64, 48))):
        part = folder / f"part{i}.h264"
        _ffmpeg(
            *("-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate=16", "-frames:v", "12"),
            *("-c:v", "libx264", "-bf", "0", "-pix_fmt", "yuv420p"),
            *("-bsf:v", "h264_mp4toannexb"),
            *("-f", "h264", str(part)),
        )
        parts.append(part.read_bytes())
    joined = folder / "joined.h264"
    joined.write_bytes(b"".join(parts))
    _ffmpeg("-r", "16", "-f", "h264", "-i", str(joined), "-c", "copy", str(out["size_change"]))
    return out


def _valid_batches(ds: WanVideoDataset, batches: list[dict[str, Any]]) -> None:
    assert len(batches) == len(ds) and batches, "iteration must yield every planned batch"
    for batch in batches:
        pixels = batch["pixels"]
        assert isinstance(pixels, torch.Tensor) and pixels.dtype.is_floating_point
        assert bool(torch.isfinite(pixels).all()) and float(pixels.abs().max()) <= 1.0
        size = len(batch["paths"])
        assert size == ds.batch_size == len(batch["keys"]) == len(batch["captions"])
        assert pixels.shape[0] == size and pixels.shape[1] == 3
        assert tuple(pixels.shape[-2:]) == (32, 32)
        frames, h, w = (int(x) for x in batch["buckets"][0].split("x"))
        assert pixels.shape[2] == frames and (h, w) == (32, 32)
        assert all(b == batch["buckets"][0] for b in batch["buckets"])


@pytest.mark.parametrize("kind", [pytest.param(k, id=k.id) for k in KINDS])
def test_bad_input(
    kind: Kind,
    corpus: Corpus,
    good: list[Path],
    samples: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if kind.xfail:
        pytest.xfail(kind.xfail)
    folder = tmp_path / "data"
    folder.mkdir()
    for path in good:
        shutil.copy(path, folder / path.name)
    bad = kind.build(Ctx(folder, corpus, samples, monkeypatch))
    options = {**OPTIONS, **bad.options}

    started = time.monotonic()
    ds = WanVideoDataset(bad.root or folder, **options)
    if bad.after is not None:
        bad.after()
    batches = list(ds.loader(num_workers=0))
    elapsed = time.monotonic() - started
    assert elapsed < CASE_SECONDS, f"{kind.id} took {elapsed:.1f} s"

    report = ds.report()
    records = report["skipped"]
    assert not [r for r in records if r["reason"] in NEVER], records
    _valid_batches(ds, batches)
    served = [(b, i) for b in batches for i, p in enumerate(b["paths"]) if p == bad.path]
    mine = [r for r in records if r["path"] in (bad.path, *bad.also)]
    others = [r for r in records if r not in mine]
    assert not others, f"only the bad item may be skipped: {others}"
    good_served = {p for b in batches for p in b["paths"]}
    assert {str(folder / p.name) for p in good} <= good_served, "a good file was lost"

    if served:
        outcome = SERVED
        assert not mine, f"served and skipped: {mine}"
        for batch, i in served:
            assert batch["pixels"][i].numel() > 0
            if bad.check is not None:
                bad.check(batch, i)
    elif mine:
        outcome = ",".join(sorted({r["reason"] for r in mine}))
        assert {r["reason"] for r in mine} <= kind.expect, (
            f"{kind.id}: skipped as {outcome}, expected one of {sorted(kind.expect)}: {mine}"
        )
        for record in mine:
            assert record["message"], record
    else:
        outcome = IGNORED
    assert outcome in kind.expect or outcome not in (SERVED, IGNORED), (
        f"{kind.id}: {outcome}, expected one of {sorted(kind.expect)}; skipped: {records}"
    )
