"""Property 4: video resilience — any mutated video bytes give clips or a reason, never a crash.

Feature: wan-training-pipeline-fixes, Property 4: video resilience

Valid tiny videos (MP4 H.264 with the index at the end and at the front, WebM VP9, AVI MPEG-4)
are damaged by Hypothesis-chosen byte mutations (truncate, overwrite with random bytes, zero a
span, insert, duplicate a span, delete a span) and run through Source -> probe -> decode with the
real torchcodec. The result is one valid Clip or one Failed with a reason: no exception escapes,
and nothing hangs (each example runs under a hard timeout).
"""

from __future__ import annotations

import itertools
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from prop_helpers import BUCKETS, FPS, FRAMES, MUTATION_BASES, MediaPool

from wan_data.failures.breaker import BreakerConfig
from wan_data.failures.mechanism import StageContext
from wan_data.failures.policy import ErrorPolicy
from wan_data.items import Clip, Failed, Source
from wan_data.stages.decode import DecodeOptions, decode
from wan_data.stages.probe import ProbeLimits, probe

PROPERTY = "Feature: wan-training-pipeline-fixes, Property 4: video resilience"
# By presentation time (the default) and by native frame index, one clip or several per file:
# the batched, the frame-by-frame salvage and the partial multi-clip paths of decode.
OPTION_SETS = (
    DecodeOptions(frames=FRAMES, fps=FPS, buckets=BUCKETS),
    DecodeOptions(frames=FRAMES, fps=None, buckets=BUCKETS),
    DecodeOptions(frames=FRAMES, fps=FPS, buckets=BUCKETS, sampling="uniform", clips_per_video=3),
    DecodeOptions(frames=(5, 9), fps=None, buckets=BUCKETS, sampling="chunks", clips_per_video=0),
)
TIMEOUT_SECONDS = 30.0
_counter = itertools.count()


@dataclass(frozen=True)
class Mutation:
    """One byte-level edit; positions are taken modulo the current size."""

    kind: str
    at: int
    length: int = 0
    data: bytes = b""
    dest: int = 0

    def apply(self, blob: bytes) -> bytes:
        size = len(blob)
        at = self.at % (size + 1)
        end = min(size, at + self.length)
        if self.kind == "truncate":
            return blob[:at]
        if self.kind == "overwrite":
            return blob[:at] + self.data + blob[at + len(self.data) :]
        if self.kind == "zero":
            return blob[:at] + bytes(end - at) + blob[end:]
        if self.kind == "insert":
            return blob[:at] + self.data + blob[at:]
        if self.kind == "duplicate":
            dest = self.dest % (size + 1)
            return blob[:dest] + blob[at:end] + blob[dest:]
        if self.kind == "delete":
            return blob[:at] + blob[end:]
        raise AssertionError(self.kind)


positions = st.integers(0, 1 << 20)
lengths = st.integers(1, 4096)
mutations = st.one_of(
    st.builds(Mutation, kind=st.just("truncate"), at=positions),
    st.builds(
        Mutation, kind=st.just("overwrite"), at=positions, data=st.binary(min_size=1, max_size=512)
    ),
    st.builds(Mutation, kind=st.just("zero"), at=positions, length=lengths),
    st.builds(
        Mutation, kind=st.just("insert"), at=positions, data=st.binary(min_size=1, max_size=512)
    ),
    st.builds(Mutation, kind=st.just("duplicate"), at=positions, length=lengths, dest=positions),
    st.builds(Mutation, kind=st.just("delete"), at=positions, length=lengths),
)


@pytest.fixture(scope="module")
def mutation_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mutated")


def _run_with_timeout(source: Source, options: DecodeOptions) -> list[Any]:
    """Source -> probe -> decode in a thread; a hang fails the example instead of the suite."""
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            policy = ErrorPolicy(backoff_seconds=0)
            context = StageContext(breaker_config=BreakerConfig(enabled=False))
            limits = ProbeLimits(min_frames=min(options.frames), fps=options.fps)
            probed = probe([source], policy=policy, context=context, limits=limits)
            result["out"] = list(decode(probed, policy=policy, options=options, context=context))
        except BaseException as exc:  # reported to the test below
            result["exc"] = exc

    thread = threading.Thread(target=work, daemon=True, name=f"decode {source.path}")
    thread.start()
    thread.join(TIMEOUT_SECONDS)
    if thread.is_alive():
        pytest.fail(f"probe/decode of {source.path} hung for more than {TIMEOUT_SECONDS:.0f} s")
    if "exc" in result:
        exc = result["exc"]
        raise AssertionError(
            f"{type(exc).__name__} escaped the pipeline for {source.path}: {exc}"
        ) from exc
    return result["out"]


def _check_clip(clip: Clip, source: Source) -> None:
    """A valid clip: uint8, the bucket's shape, a 4k+1 frame count, finite frame times in
    presentation order (a damaged ``ctts`` box must give a ``Failed``, never disordered frames;
    ``test_damaged_sample_table_never_gives_disordered_frames`` hits that case every time)."""
    bucket = clip.bucket
    assert clip.source == source
    assert clip.pixels.dtype == torch.uint8
    assert bucket.frames in FRAMES and (bucket.frames - 1) % 4 == 0
    assert (bucket.width, bucket.height) in BUCKETS
    assert tuple(clip.pixels.shape) == (bucket.frames, 3, bucket.height, bucket.width)
    times = clip.frame_times
    assert len(times) == bucket.frames
    assert all(math.isfinite(t) for t in times), times
    assert _ordered(times), times


def _ordered(times: tuple[float, ...]) -> bool:
    return all(a <= b for a, b in itertools.pairwise(times))


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    base=st.sampled_from(MUTATION_BASES),
    edits=st.lists(mutations, min_size=1, max_size=3),
    options=st.sampled_from(OPTION_SETS),
)
def test_mutated_videos_give_clips_or_a_reason(
    media_pool: MediaPool,
    mutation_dir: Path,
    base: str,
    edits: list[Mutation],
    options: DecodeOptions,
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 4: video resilience"""
    blob = media_pool.good[base].read_bytes()
    for edit in edits:
        blob = edit.apply(blob)
    path = mutation_dir / f"{next(_counter)}_{base}"
    path.write_bytes(blob)
    source = Source(key=f"mutated/{path.name}", path=str(path), media_type="video")
    try:
        out = _run_with_timeout(source, options)
    finally:
        path.unlink(missing_ok=True)
    assert out, "every source gives at least one Clip or Failed"
    if len(out) > 1:
        assert options.sampling != "head"
    for item in out:
        if isinstance(item, Failed):
            assert item.stage in ("probe", "decode")
            assert item.reason.strip() and item.message.strip() and item.error_type.strip()
            assert item.path == str(path)
        else:
            assert isinstance(item, Clip), f"{type(item).__name__} came out of decode"
            _check_clip(item, source)
            assert item.bucket.frames in options.frames
    event("clips" if any(isinstance(i, Clip) for i in out) else "failed")


H264_MP4 = tuple(name for name in MUTATION_BASES if name.startswith("h264"))


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    base=st.sampled_from(H264_MP4),
    byte=st.integers(0, 3),
    value=st.binary(min_size=1, max_size=1),
    options=st.sampled_from(OPTION_SETS),
)
def test_damaged_sample_table_never_gives_disordered_frames(
    media_pool: MediaPool,
    mutation_dir: Path,
    base: str,
    byte: int,
    value: bytes,
    options: DecodeOptions,
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 4: video resilience

    Clips from a damaged file keep their frames in presentation order (nondecreasing
    frame_times), or the file is skipped. The damage: one byte of the type of the MP4 ``ctts``
    (composition offsets) box overwritten, so the box is ignored and B-frames lose their
    display order. Found by the mutation property above (overwrite at offset 678 of
    h264_faststart.mp4 with b"\\x00").
    """
    blob = bytearray(media_pool.good[base].read_bytes())
    at = blob.find(b"ctts")
    assert at > 0, f"{base} has no ctts box (no B-frames?)"
    blob[at + byte : at + byte + 1] = value
    path = mutation_dir / f"{next(_counter)}_ctts_{base}"
    path.write_bytes(bytes(blob))
    source = Source(key=f"mutated/{path.name}", path=str(path), media_type="video")
    try:
        out = _run_with_timeout(source, options)
    finally:
        path.unlink(missing_ok=True)
    for item in out:
        if isinstance(item, Clip):
            assert _ordered(item.frame_times), f"frame times go back: {item.frame_times}"
