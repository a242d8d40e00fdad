"""Generate a small, deterministic test media corpus with the ffmpeg CLI.

Nothing produced here is committed: the corpus is built at test time (usually
once per session by a pytest fixture) into a temporary folder. Every file is
tiny (at most 160x160 pixels, at most 3 seconds) so the whole corpus builds in
a few seconds on two CPU cores.

Layout of the corpus built by :func:`build_corpus`::

    readme.md                      ignored (not media)
    good/                          valid videos, most with a <stem>.txt caption
    good/.hidden.mp4               ignored (hidden file, but a valid video)
    good/._resource.mp4            ignored (AppleDouble metadata junk)
    short/                         valid videos shorter than 17 frames at 16 fps
    images/                        still images (png, jpg, webp, bmp)
    broken/                        files every sane loader must reject
    damaged/                       damaged data: salvage frames or skip, never crash
"""

from __future__ import annotations

import functools
import importlib.util
import random
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

__all__ = [
    "Corpus",
    "MediaSpec",
    "build_corpus",
    "damage_bytes",
    "ffmpeg_available",
    "frame_index",
    "key_picture_data",
    "make_example_data",
    "make_image",
    "make_indexed_video",
    "make_video",
]

KINDS = ("good", "broken", "damaged", "short", "image", "ignored")
"""Every value :attr:`MediaSpec.kind` can take."""

_MP4_LIKE = {".mp4", ".mov", ".m4a", ".m4v"}
_SEED = 20240601

_Add = Callable[["MediaSpec"], Path]


@dataclass(frozen=True)
class MediaSpec:
    """What a file of the corpus is and what a loader should find in it.

    Attributes:
        name: Path relative to the corpus root, e.g. ``"good/h264_landscape.mp4"``.
        kind: One of ``"good"``, ``"broken"``, ``"damaged"``, ``"short"``,
            ``"image"`` or ``"ignored"``.
        width: Display width in pixels; ``None`` for broken and ignored files.
        height: Display height in pixels; ``None`` for broken and ignored files.
        fps: Nominal frame rate; ``None`` for images, broken and ignored files.
            For the variable-frame-rate file this is the rate of its fastest
            segment.
        num_frames: Exact number of frames in the file (1 for images). For
            damaged files this is the number of frames encoded before the
            damage, i.e. what an intact index would declare. ``None`` for
            broken and ignored files.
        codec: Codec name as FFmpeg reports it (``"h264"``, ``"vp9"``,
            ``"mpeg4"``, ``"png"``, ``"mjpeg"``, ``"webp"``, ``"bmp"``).
        vfr: Whether the frame timestamps are irregular.
        expected_reason: For broken files, a short tag saying why a loader
            must reject it: ``"unreadable"``, ``"no_video_stream"``,
            ``"not_a_file"`` or ``"missing"``.
        caption: Text of the sidecar ``<stem>.txt`` caption file (one caption
            candidate per line), or ``None`` when the file has no caption.
    """

    name: str
    kind: str
    width: int | None
    height: int | None
    fps: float | None
    num_frames: int | None
    codec: str | None
    vfr: bool = False
    expected_reason: str | None = None
    caption: str | None = None

    @property
    def duration(self) -> float | None:
        """Nominal duration in seconds for constant-rate videos, else ``None``."""
        if self.fps is None or self.num_frames is None or self.vfr:
            return None
        return self.num_frames / self.fps


@dataclass(frozen=True)
class Corpus:
    """A built corpus: its root folder and the description of every file.

    Attributes:
        root: Folder the corpus was built into.
        specs: One spec per file (or directory / symlink) of the corpus.
    """

    root: Path
    specs: tuple[MediaSpec, ...]

    def by_kind(self, *kinds: str) -> list[MediaSpec]:
        """Return the specs whose kind is one of ``kinds``, in corpus order.

        Args:
            *kinds: Kinds to select, e.g. ``"good", "short"``.

        Returns:
            The matching specs.

        Raises:
            ValueError: If a kind is not one of :data:`KINDS`.
        """
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown kinds: {sorted(unknown)}")
        return [spec for spec in self.specs if spec.kind in kinds]

    def path(self, name: str) -> Path:
        """Return the absolute path of the corpus file ``name``.

        Args:
            name: Relative path of a file, as in :attr:`MediaSpec.name`.

        Returns:
            ``root / name``.

        Raises:
            KeyError: If no spec has this name.
        """
        if not any(spec.name == name for spec in self.specs):
            raise KeyError(name)
        return self.root / name

    def spec(self, name: str) -> MediaSpec:
        """Return the spec named ``name``.

        Args:
            name: Relative path of a file, as in :attr:`MediaSpec.name`.

        Returns:
            The spec.

        Raises:
            KeyError: If no spec has this name.
        """
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise KeyError(name)


@functools.cache
def ffmpeg_available() -> bool:
    """Tell whether a working ``ffmpeg`` executable is on ``PATH``.

    Returns:
        True if ``ffmpeg -version`` runs and succeeds.
    """
    exe = shutil.which("ffmpeg")
    if exe is None:
        return False
    try:
        result = subprocess.run(
            [exe, "-hide_banner", "-version"],
            capture_output=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


@functools.cache
def _has_encoder(name: str) -> bool:
    result = subprocess.run(
        ["ffmpeg", "-hide_banner", "-encoders"],
        capture_output=True,
        text=True,
        check=False,
    )
    return any(
        len(parts) > 1 and parts[1] == name
        for parts in (line.split() for line in result.stdout.splitlines())
    )


def _ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly with ``args``; raise with its stderr on failure."""
    cmd = [
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        *args,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr}")


def _rate(fps: float) -> str:
    """Format ``fps`` as an exact rational, e.g. 29.97 -> ``"30000/1001"``."""
    frac = Fraction(fps).limit_denominator(1001)
    return f"{frac.numerator}/{frac.denominator}"


def make_video(
    path: Path,
    *,
    width: int,
    height: int,
    fps: float,
    num_frames: int,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    extra: list[str] | None = None,
    faststart: bool = False,
) -> None:
    """Encode a moving ``testsrc2`` pattern (every frame differs) into ``path``.

    The container is chosen from the file suffix. Encoding is single-threaded
    and bit-exact so the output is deterministic.

    Args:
        path: Output file; parent folders are created.
        width: Frame width in pixels (even for 4:2:0 codecs).
        height: Frame height in pixels (even for 4:2:0 codecs).
        fps: Constant frame rate.
        num_frames: Exact number of frames to encode.
        codec: FFmpeg encoder name, e.g. ``"libx264"``, ``"libvpx-vp9"``,
            ``"mpeg4"``.
        pix_fmt: Output pixel format.
        extra: More ffmpeg output options, inserted just before the output
            path (e.g. ``["-vf", "setpts=..."]`` or ``["-g", "1"]``).
        faststart: For MP4/MOV, put the ``moov`` index at the front of the file
            instead of at the end (ffmpeg's default).

    Raises:
        RuntimeError: If ffmpeg fails.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    args = [
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={width}x{height}:rate={_rate(fps)}",
        "-frames:v",
        str(num_frames),
        "-c:v",
        codec,
        "-pix_fmt",
        pix_fmt,
        "-threads",
        "1",
        "-map_metadata",
        "-1",
        "-fflags",
        "+bitexact",
        "-flags:v",
        "+bitexact",
    ]
    if codec == "libx264":
        args += ["-preset", "veryfast", "-crf", "28"]
    elif codec == "libvpx-vp9":
        args += ["-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k"]
    elif codec == "mpeg4":
        args += ["-q:v", "5"]
    if faststart and path.suffix.lower() in _MP4_LIKE:
        args += ["-movflags", "+faststart"]
    args += list(extra or [])
    _ffmpeg(*args, str(path))


INDEX_WIDTH, INDEX_HEIGHT = 64, 32
"""Size of :func:`make_indexed_video` frames: 2 rows of 8 stripes, one bit each."""

_INDEX_PATTERN = (
    "geq=lum='if(bitand(N\\,pow(2\\,floor(X/8)+8*floor(Y/16)))\\,235\\,16)':cb=128:cr=128"
)


def make_indexed_video(
    path: Path,
    *,
    fps: float,
    num_frames: int,
    codec: str = "libx264",
    extra: list[str] | None = None,
) -> None:
    """Encode frames that carry their own index: frame ``n`` shows ``n`` in binary.

    Each 64x32 frame is two rows of eight 8-pixel stripes, stripe ``b`` white when bit ``b`` of
    the frame number is set, so :func:`frame_index` reads back which source frame a decoded
    frame is (16 bits: up to 65535 frames), through any container, rate and lossy codec.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    args = [
        "-f",
        "lavfi",
        "-i",
        f"nullsrc=size={INDEX_WIDTH}x{INDEX_HEIGHT}:rate={_rate(fps)},format=yuv444p,"
        + _INDEX_PATTERN,
        "-frames:v",
        str(num_frames),
        "-c:v",
        codec,
        "-pix_fmt",
        "yuv420p",
        "-threads",
        "1",
    ]
    if codec == "libx264":
        args += ["-qp", "0", "-preset", "veryfast"]
    elif codec == "libvpx-vp9":
        args += ["-deadline", "realtime", "-cpu-used", "8", "-crf", "10", "-b:v", "0"]
    elif codec in ("mpeg2video", "mpeg4"):
        args += ["-q:v", "2"]
    args += list(extra or [])
    _ffmpeg(*args, str(path))


def frame_index(frame: object) -> int:
    """The index :func:`make_indexed_video` drew into ``frame`` (a (3, 32, 64) uint8 tensor)."""
    import torch

    assert isinstance(frame, torch.Tensor)
    luma = frame.float().mean(dim=0)
    n = 0
    for row in range(2):
        for bit in range(8):
            if luma[row * 16 + 8, bit * 8 + 4] > 128:
                n |= 1 << (bit + 8 * row)
    return n


def _packets(path: Path) -> list[dict[str, str]]:
    out = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries"),
            *("packet=pos,size,flags", "-of", "compact=p=0", str(path)),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [dict(kv.split("=", 1) for kv in line.split("|")) for line in out.splitlines()]


def key_picture_data(path: Path, nal_type: str | None) -> tuple[int, int]:
    """Byte range of the first key packet's picture data, skipping SEI/parameter-set NAL units.

    ``nal_type`` is ``"h264"`` or ``"hevc"`` for MP4's 4-byte length-prefixed NAL units, ``None``
    to take the whole packet (MPEG-4 part 2).
    """
    key = next(p for p in _packets(path) if "K" in p["flags"])
    pos, size = int(key["pos"]), int(key["size"])
    if nal_type is None:
        return pos, pos + size
    data = path.read_bytes()
    best = (0, 0)
    i = pos
    while i + 5 <= pos + size:
        length = struct.unpack(">I", data[i : i + 4])[0]
        header = data[i + 4]
        picture = (header & 0x1F) in (1, 5) if nal_type == "h264" else ((header >> 1) & 0x3F) < 32
        if picture and length > best[1] - best[0]:
            best = (i + 4, i + 4 + length)
        i += 4 + length
    assert best[1] > best[0], f"no picture NAL unit in the key packet of {path}"
    return best


def damage_bytes(src: Path, dst: Path, span: tuple[int, int], fraction: float) -> None:
    """XOR four bytes with 0xFF at ``fraction`` of the way into ``span``."""
    data = bytearray(src.read_bytes())
    at = span[0] + int((span[1] - span[0]) * fraction)
    for off in range(at, at + 4):
        data[off] ^= 0xFF
    dst.write_bytes(bytes(data))


def make_image(path: Path, *, width: int, height: int) -> None:
    """Write one ``testsrc2`` frame as a still image; format from the suffix.

    Supports whatever ffmpeg's image2 muxer supports (png, jpg, bmp, ...).
    WebP is written with ffmpeg's libwebp when present, else with Pillow.

    Args:
        path: Output file; parent folders are created.
        width: Image width in pixels.
        height: Image height in pixels.

    Raises:
        RuntimeError: If ffmpeg fails.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".webp" and not _has_encoder("libwebp"):
        _make_image_with_pillow(path, width=width, height=height)
        return
    args = [
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={width}x{height}:rate=1",
        "-frames:v",
        "1",
        "-update",
        "1",
        "-fflags",
        "+bitexact",
        "-flags:v",
        "+bitexact",
    ]
    if suffix in {".jpg", ".jpeg"}:
        args += ["-pix_fmt", "yuvj420p", "-q:v", "3"]
    elif suffix == ".webp":
        args += ["-c:v", "libwebp", "-lossless", "0", "-q:v", "75"]
    _ffmpeg(*args, str(path))


def _make_image_with_pillow(path: Path, *, width: int, height: int) -> None:
    from PIL import Image  # only needed when ffmpeg lacks libwebp

    image = Image.new("RGB", (width, height))
    image.putdata(
        [((x * 7) % 256, (y * 5) % 256, (x + y) % 256) for y in range(height) for x in range(width)]
    )
    image.save(path)


def _make_vfr_video(path: Path, *, width: int, height: int) -> int:
    """Encode an H.264 MP4 whose frame spacing changes mid-stream.

    Frames 0-23 are 1/24 s apart, frames 24-35 are 1/12 s apart, frames 36-59
    are 1/24 s apart again: 60 frames over 3 s. Timestamps are passed through
    unchanged (no frame duplication or dropping).

    Returns:
        The number of frames encoded.
    """
    num_frames = 60
    pts = "if(lt(N,24),N,if(lt(N,36),24+(N-24)*2,48+(N-36)))"
    make_video(
        path,
        width=width,
        height=height,
        fps=24,
        num_frames=num_frames,
        extra=["-vf", f"setpts='{pts}'", "-fps_mode", "passthrough"],
    )
    return num_frames


def _set_rotation(path: Path, degrees: int) -> None:
    """Patch the track header matrix of an MP4/MOV so players rotate the video.

    ffmpeg 5.1 cannot write a display matrix from the command line (the old
    ``rotate`` metadata is ignored and ``-display_rotation`` came in 6.0), so
    the 3x3 matrix of the first ``tkhd`` box is overwritten in place.

    Args:
        path: MP4/MOV file with a single video track.
        degrees: Counter-clockwise rotation, a multiple of 90.
    """
    one, zero = 1 << 16, 0
    cos, sin = {0: (1, 0), 90: (0, 1), 180: (-1, 0), 270: (0, -1)}[degrees % 360]
    matrix = (cos * one, -sin * one, zero, sin * one, cos * one, zero, 0, 0, 1 << 30)
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    if at < 4:
        raise RuntimeError(f"no tkhd box in {path}")
    version = data[at + 4]
    # type, version+flags, times+track id+reserved+duration, reserved, layer..volume
    offset = at + 4 + 4 + (32 if version == 1 else 20) + 8 + 8
    data[offset : offset + 36] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))


def _make_audio(path: Path, *, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:sample_rate=16000:duration={seconds}",
        "-c:a",
        "aac",
        "-b:a",
        "32k",
        "-map_metadata",
        "-1",
        "-fflags",
        "+bitexact",
        "-flags:a",
        "+bitexact",
        str(path),
    )


def _truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def _overwrite(path: Path, offset: int, junk: bytes) -> None:
    data = bytearray(path.read_bytes())
    data[offset : offset + len(junk)] = junk
    path.write_bytes(bytes(data))


def _apple_double() -> bytes:
    """Bytes of a minimal AppleDouble ``._*`` file, as macOS leaves on FAT/SMB."""
    header = bytes.fromhex("00051607 00020000") + b"Mac OS X        "
    entries = (2).to_bytes(2, "big")
    # Entry 9 (Finder info) at offset 50, 32 bytes; entry 2 (resource fork) empty.
    entries += (9).to_bytes(4, "big") + (50).to_bytes(4, "big") + (32).to_bytes(4, "big")
    entries += (2).to_bytes(4, "big") + (82).to_bytes(4, "big") + (0).to_bytes(4, "big")
    return header + entries + b"\x00" * 32


def _write_caption(root: Path, spec: MediaSpec) -> None:
    if spec.caption is not None:
        (root / spec.name).with_suffix(".txt").write_text(spec.caption + "\n", encoding="utf-8")


# name, (width, height), fps, frames, codec, encoder, faststart, caption
_GOOD_VIDEOS: tuple[tuple[str, tuple[int, int], float, int, str, str, bool, str | None], ...] = (
    (
        "good/h264_landscape.mp4",
        (160, 90),
        24.0,
        54,
        "h264",
        "libx264",
        False,
        "a colourful test pattern\nthe test pattern moves",
    ),
    ("good/h264_portrait.mov", (90, 160), 25.0, 60, "h264", "libx264", False, "a tall pattern"),
    (
        "good/vp9_square.webm",
        (128, 128),
        30.0,
        66,
        "vp9",
        "libvpx-vp9",
        False,
        "a square pattern\na square pattern in webm\nvp9 video",
    ),
    ("good/mpeg4_4x3.avi", (160, 120), 30.0, 75, "mpeg4", "mpeg4", False, "an old avi clip"),
    ("good/h264_faststart_uncaptioned.mp4", (120, 68), 30.0, 72, "h264", "libx264", True, None),
)

# name, (width, height), codec, caption
_IMAGES: tuple[tuple[str, tuple[int, int], str, str | None], ...] = (
    ("images/landscape.png", (160, 120), "png", "a png still"),
    ("images/portrait.jpg", (72, 128), "mjpeg", "a portrait jpeg\na tall still"),
    ("images/square.webp", (96, 96), "webp", "a webp still"),
    ("images/small.bmp", (64, 48), "bmp", None),
)


def _build_good(root: Path, add: _Add) -> None:
    for name, (width, height), fps, frames, codec, encoder, faststart, caption in _GOOD_VIDEOS:
        spec = MediaSpec(name, "good", width, height, fps, frames, codec, caption=caption)
        make_video(
            add(spec),
            width=width,
            height=height,
            fps=fps,
            num_frames=frames,
            codec=encoder,
            faststart=faststart,
        )

    # Coded 160x90 with a display matrix rotating it by 90 degrees: shown as 90x160.
    caption = "a pattern filmed with the phone held upright"
    rotated = MediaSpec("good/h264_rotated.mp4", "good", 90, 160, 24.0, 54, "h264", caption=caption)
    make_video(add(rotated), width=160, height=90, fps=24.0, num_frames=54)
    _set_rotation(root / rotated.name, 90)

    caption = "a pattern at a variable frame rate"
    vfr = MediaSpec("good/h264_vfr.mp4", "good", 128, 72, 24.0, 60, "h264", True, caption=caption)
    _make_vfr_video(add(vfr), width=128, height=72)


def _build_broken(add: _Add, rng: random.Random) -> None:
    def broken(name: str, reason: str) -> Path:
        spec = MediaSpec(f"broken/{name}", "broken", None, None, None, None, None)
        path = add(replace(spec, expected_reason=reason))
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.is_file():
            path.unlink()
        return path

    broken("empty.mp4", "unreadable").write_bytes(b"")
    broken("garbage.mp4", "unreadable").write_bytes(rng.randbytes(4096))

    path = broken("truncated_before_index.mp4", "unreadable")
    make_video(path, width=160, height=90, fps=24.0, num_frames=48)  # moov at the end
    _truncate(path, 0.5)

    path = broken("bad_header.mp4", "unreadable")
    make_video(path, width=160, height=90, fps=24.0, num_frames=48, faststart=True)
    _overwrite(path, 0, rng.randbytes(64))

    _make_audio(broken("audio_only.mp4", "no_video_stream"), seconds=2.0)

    text = "These are not the frames you are looking for.\n" * 20
    broken("notes.mp4", "unreadable").write_text(text, encoding="utf-8")

    broken("folder.mp4", "not_a_file").mkdir(exist_ok=True)
    broken("dangling.mp4", "missing").symlink_to("does_not_exist.mp4")


def _build_damaged(add: _Add, rng: random.Random) -> None:
    # moov at the front, then cut: the index promises 72 frames, ~40 are present.
    spec = MediaSpec("damaged/truncated_after_index.mp4", "damaged", 160, 90, 24.0, 72, "h264")
    path = add(spec)
    make_video(path, width=160, height=90, fps=24.0, num_frames=72, faststart=True)
    _truncate(path, 0.6)

    # Index intact, a tenth of the file (all inside mdat) overwritten mid-way.
    spec = MediaSpec("damaged/corrupt_middle.mp4", "damaged", 160, 90, 24.0, 72, "h264")
    path = add(spec)
    make_video(path, width=160, height=90, fps=24.0, num_frames=72, faststart=True)
    size = path.stat().st_size
    _overwrite(path, size // 2, rng.randbytes(max(256, size // 10)))


def build_corpus(root: Path) -> Corpus:
    """Generate the whole test corpus into ``root`` and describe it.

    ``root`` is created if needed; existing corpus files are overwritten, so
    building twice into the same folder is fine. The output is deterministic
    (fixed seeds, bit-exact single-threaded encoding).

    Args:
        root: Folder to build into.

    Returns:
        The corpus, with one :class:`MediaSpec` per generated entry.

    Raises:
        RuntimeError: If ffmpeg is missing or fails.
    """
    if not ffmpeg_available():
        raise RuntimeError("ffmpeg CLI not found on PATH")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(_SEED)
    specs: list[MediaSpec] = []

    def add(spec: MediaSpec) -> Path:
        specs.append(spec)
        return root / spec.name

    _build_good(root, add)

    short = MediaSpec("short/h264_half_second.mp4", "short", 96, 64, 24.0, 12, "h264")
    make_video(
        add(replace(short, caption="too short to sample")),
        width=96,
        height=64,
        fps=24.0,
        num_frames=12,
    )

    for name, (width, height), codec, caption in _IMAGES:
        spec = MediaSpec(name, "image", width, height, None, 1, codec, caption=caption)
        make_image(add(spec), width=width, height=height)

    _build_broken(add, rng)
    _build_damaged(add, rng)

    def ignored(name: str) -> Path:
        return add(MediaSpec(name, "ignored", None, None, None, None, None))

    make_video(ignored("good/.hidden.mp4"), width=64, height=48, fps=24.0, num_frames=48)
    ignored("good/._resource.mp4").write_bytes(_apple_double())
    readme = "# Test corpus\n\nGenerated by tests/media.py; do not edit.\n"
    ignored("readme.md").write_text(readme, encoding="utf-8")

    for spec in specs:
        _write_caption(root, spec)
    return Corpus(root=root, specs=tuple(specs))


def make_example_data(root: Path) -> Path:
    """The examples' dataset (``examples/example_data.py``) written into ``root``: loaded from
    the script itself, so the tests of the examples and of the integrations use what a user
    runs."""
    script = Path(__file__).resolve().parents[1] / "examples" / "example_data.py"
    spec = importlib.util.spec_from_file_location("example_data", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    made: Path = module.make_example_data(root)
    return made
