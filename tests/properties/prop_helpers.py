"""Shared pieces of the property tests: tiny media pools, exception strategies, test items.

The media pools are built once per session by fixtures in ``conftest.py`` (from the specs
below, so Hypothesis strategies can name the files before the files exist); every example picks
among them instead of encoding anything itself.
"""

from __future__ import annotations

import errno
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st
from media import make_video

from wan_data.errors import SampleError, TransientError
from wan_data.failures.policy import Action, ErrorPolicy
from wan_data.items import Failed

# --------------------------------------------------------------------------------------------
# Media pools
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoSpec:
    name: str
    width: int
    height: int
    fps: float
    frames: int
    codec: str
    faststart: bool = False


GOOD_VIDEOS: tuple[VideoSpec, ...] = (
    VideoSpec("h264_moov_end.mp4", 32, 32, 8.0, 24, "libx264"),
    VideoSpec("h264_faststart.mp4", 64, 48, 8.0, 32, "libx264", faststart=True),
    VideoSpec("vp9.webm", 32, 32, 8.0, 20, "libvpx-vp9"),
    VideoSpec("mpeg4.avi", 64, 48, 8.0, 40, "mpeg4"),
    VideoSpec("h264_wide.mov", 48, 32, 12.0, 30, "libx264"),
    VideoSpec("h264_tall.mp4", 32, 48, 8.0, 20, "libx264", faststart=True),
)
"""Six tiny valid videos: mp4 (moov at the end and faststart), webm VP9, avi MPEG-4, mov."""

MUTATION_BASES: tuple[str, ...] = (
    "h264_moov_end.mp4",
    "h264_faststart.mp4",
    "vp9.webm",
    "mpeg4.avi",
)
"""The videos property 4 mutates: one per container/codec family."""

BROKEN_FILES: dict[str, str] = {
    "empty.mp4": "unreadable",
    "garbage.mp4": "unreadable",
    "notes.mp4": "unreadable",
    "truncated_before_index.mp4": "unreadable",
    "bad_header.mp4": "unreadable",
    "too_short.mp4": "too_short",
}
"""Six files the probe must reject, with the reason it reports (the ground truth)."""

# What every pipeline in these tests samples: cheap (32x32 buckets, few frames at 8 fps).
FRAMES = (1, 5, 9, 17)
FPS = 8.0
BUCKETS = ((32, 32), (48, 32), (32, 48))


@dataclass(frozen=True)
class MediaPool:
    root: Path
    good: dict[str, Path]
    broken: dict[str, Path]

    def all_files(self) -> dict[str, Path]:
        return {**self.good, **self.broken}


def build_media_pool(root: Path) -> MediaPool:
    """Encode the good videos and write the broken files into ``root`` (about a second)."""
    root.mkdir(parents=True, exist_ok=True)
    good: dict[str, Path] = {}
    for spec in GOOD_VIDEOS:
        path = root / "good" / spec.name
        make_video(
            path,
            width=spec.width,
            height=spec.height,
            fps=spec.fps,
            num_frames=spec.frames,
            codec=spec.codec,
            faststart=spec.faststart,
        )
        good[spec.name] = path
    rng = random.Random(1234)
    bdir = root / "broken"
    bdir.mkdir(parents=True, exist_ok=True)
    broken = {name: bdir / name for name in BROKEN_FILES}
    broken["empty.mp4"].write_bytes(b"")
    broken["garbage.mp4"].write_bytes(rng.randbytes(2048))
    broken["notes.mp4"].write_text("not a video, just some notes\n" * 40, encoding="utf-8")
    path = broken["truncated_before_index.mp4"]
    make_video(path, width=32, height=32, fps=8.0, num_frames=24)  # moov at the end
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    path = broken["bad_header.mp4"]
    make_video(path, width=32, height=32, fps=8.0, num_frames=24, faststart=True)
    data = bytearray(path.read_bytes())
    data[:64] = rng.randbytes(64)
    path.write_bytes(bytes(data))
    # 3 frames at 8 fps: fewer than the smallest bucket (5) used by property 7.
    make_video(broken["too_short.mp4"], width=32, height=32, fps=8.0, num_frames=3)
    return MediaPool(root=root, good=good, broken=broken)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (same file system), copying when linking is refused."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        dst.hardlink_to(src)
    except OSError:
        shutil.copyfile(src, dst)


# --------------------------------------------------------------------------------------------
# Policies and a minimal stage item
# --------------------------------------------------------------------------------------------


def no_sleep(_seconds: float) -> None:
    """A policy ``sleep`` that does not wait: retries are tested, not their backoff."""


def fast_policy(max_attempts: int = 3) -> ErrorPolicy:
    return ErrorPolicy(max_attempts=max_attempts, backoff_seconds=0.0, sleep=no_sleep)


@dataclass(frozen=True)
class Rec:
    """A minimal stage input with a key and a path, like a real item."""

    key: str
    path: str
    value: int


@dataclass(frozen=True)
class Out:
    """What the synthetic map_stage stages produce."""

    key: str
    path: str
    value: int


def recs(n: int) -> list[Rec]:
    return [Rec(key=f"rec/{i}", path=f"/data/clip_{i}.mp4", value=i) for i in range(n)]


# --------------------------------------------------------------------------------------------
# Injected exceptions
# --------------------------------------------------------------------------------------------

PERMANENT_TYPES: tuple[str, ...] = (
    "RuntimeError",
    "ValueError",
    "IndexError",
    "OSError",
    "TypeError",
    "TimeoutError",
    "SampleError",
)
"""Exception types injected as permanent failures (TimeoutError: fails every retry)."""

TRANSIENT_TYPES: tuple[str, ...] = ("TimeoutError", "TransientError", "OSError-EAGAIN")
"""Exception types the policy retries; injected for fewer attempts than ``max_attempts``."""

_FATAL_FRAGMENTS = (
    "libtorchcodec",
    "libavutil",
    "libavcodec",
    "libavformat",
    "libswscale",
    "ffmpeg",
)

messages = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=40
).filter(lambda s: not any(f in s.lower() for f in _FATAL_FRAGMENTS))
"""Random exception messages; never ones the policy reads as 'FFmpeg libraries missing'."""

reasons = st.sampled_from(["bad_clip", "sample_error", "unusable", "too_dark", "custom_reason"])


@dataclass(frozen=True)
class Injection:
    """One injected error: its type, message, and how many attempts it fails (0 = all)."""

    type_name: str
    message: str
    reason: str = "sample_error"
    fail_attempts: int = 0

    @property
    def transient(self) -> bool:
        return self.fail_attempts > 0

    def make(self) -> BaseException:
        m = self.message
        factories: dict[str, Callable[[], BaseException]] = {
            "RuntimeError": lambda: RuntimeError(m),
            "ValueError": lambda: ValueError(m),
            "IndexError": lambda: IndexError(m),
            "OSError": lambda: OSError(m),
            "TypeError": lambda: TypeError(m),
            "TimeoutError": lambda: TimeoutError(m),
            "SampleError": lambda: SampleError(m, reason=self.reason),
            "TransientError": lambda: TransientError(m),
            "OSError-EAGAIN": lambda: OSError(errno.EAGAIN, m),
        }
        return factories[self.type_name]()


permanent_injections = st.builds(
    Injection, type_name=st.sampled_from(PERMANENT_TYPES), message=messages, reason=reasons
).filter(lambda i: i.type_name != "SampleError" or bool(i.message.strip()))
"""Permanent errors. A blank ``SampleError`` message is left out here: property 3's
``test_sample_error_message_is_never_blank`` covers that case on its own."""
transient_injections = st.builds(
    Injection,
    type_name=st.sampled_from(TRANSIENT_TYPES),
    message=messages,
    fail_attempts=st.integers(1, 2),
)
injections = st.one_of(permanent_injections, transient_injections)


class Injector:
    """Wraps a per-item function: raises the injection planned for an item's key.

    A permanent injection raises on every call; a transient one on the first ``fail_attempts``
    calls for that key, then lets the real function run.
    """

    def __init__(self, fn: Callable[..., object], plan: dict[str, Injection], key_of=None):
        self.fn = fn
        self.plan = plan
        self.calls: dict[str, int] = {}
        self.key_of = key_of or (lambda *args, **kwargs: args[0].key)

    def __call__(self, *args: object, **kwargs: object) -> object:
        key = self.key_of(*args, **kwargs)
        injection = self.plan.get(key)
        count = self.calls[key] = self.calls.get(key, 0) + 1
        if injection is not None and (not injection.transient or count <= injection.fail_attempts):
            raise injection.make()
        return self.fn(*args, **kwargs)


def expected_outcome(injection: Injection | None, policy: ErrorPolicy) -> tuple[str, int] | None:
    """``(reason, attempts)`` of the Failed an injection must produce, ``None`` for success."""
    if injection is None:
        return None
    decision = policy.classify(injection.make())
    assert decision.action is not Action.FATAL, injection
    if injection.transient and injection.fail_attempts < policy.max_attempts:
        return None
    attempts = policy.max_attempts if decision.action is Action.RETRY else 1
    return decision.reason, attempts


def failed_items(items: list[object]) -> Iterator[Failed]:
    return (i for i in items if isinstance(i, Failed))
