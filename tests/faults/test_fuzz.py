"""Fuzzing (issue 13): Hypothesis mutations of valid videos and images through the real pipeline.

Valid tiny files of several containers and codecs (MP4 H.264 with the index at the end and at
the front, WebM VP9, AVI MPEG-4 when the encoder exists, PNG, JPEG) are damaged by
Hypothesis-chosen mutations named as the issue names them:

* ``truncate``: cut the file anywhere (the header, the index, the middle, the last byte);
* ``bitflip``: flip 1 to ``MAX_BIT_FLIPS`` random bits;
* ``zero_run``: overwrite a span with zero bytes;
* ``splice_insert`` / ``splice_replace``: a span of another valid file inserted, or written over
  a span;
* ``splice_halves``: the head of this file joined to the tail of another;

plus the byte edits of property 4 (``overwrite`` with random bytes, ``insert`` random bytes,
``duplicate`` and ``delete`` a span). One to three mutations per example.

Each example runs through the real pipeline path under a hard time bound (a thread joined with a
timeout: a hang fails the example, naming the file) and must end with correct samples or a
recorded skip:

* the bulk, ``test_fuzz_probe_decode``: ``Source -> probe -> decode`` with the real torchcodec
  (as property 4 does). Every item out is a valid :class:`Clip` (dtype uint8, the shape of its
  bucket, a planned frame count, finite nondecreasing frame times) or a :class:`Failed` with a
  reason that is not ``unexpected_error`` (a wan_data bug) nor ``io_transient`` (the machine's
  fault: these files are damaged, the machine is fine). A mutation that leaves the bytes
  unchanged must give exactly the clips of the intact file.
* ``test_fuzz_dataset``: ``WanVideoDataset`` over a folder of good files plus one mutated file,
  read with ``loader(num_workers=0)``: every batch is full and valid, every good file is served,
  and the mutated file is served or appears in ``report()["skipped"]`` with a reason that is not
  ``unexpected_error``.

The default suite runs ``DEFAULT_EXAMPLES`` (probe/decode) and ``DATASET_EXAMPLES`` (dataset)
examples; the ``slow`` variants run ``SLOW_EXAMPLES`` and ``SLOW_DATASET_EXAMPLES`` with other
seeds. Generation is seeded and the example database is off, so CI replays the same examples.
The bugs the fuzzing found are pinned at the end of this module.
"""

from __future__ import annotations

import itertools
import math
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st
from media import _has_encoder, ffmpeg_available, make_image, make_video

from wan_data import WanVideoDataset
from wan_data.failures.breaker import BreakerConfig
from wan_data.failures.ledger import LEDGER_REASONS
from wan_data.failures.mechanism import StageContext
from wan_data.failures.policy import ErrorPolicy
from wan_data.items import Clip, Failed, Source
from wan_data.stages.decode import DecodeOptions, decode
from wan_data.stages.probe import ProbeLimits, probe

pytestmark = pytest.mark.skipif(not ffmpeg_available(), reason="needs the ffmpeg CLI")

DEFAULT_EXAMPLES = 300
SLOW_EXAMPLES = 2000
DATASET_EXAMPLES = 60
SLOW_DATASET_EXAMPLES = 400
TIMEOUT_SECONDS = 30.0
MAX_BIT_FLIPS = 32

FRAMES = (1, 5, 9, 17)
FPS = 8.0
BUCKETS = ((32, 32), (48, 32), (32, 48))
OPTION_SETS = (
    DecodeOptions(frames=FRAMES, fps=FPS, buckets=BUCKETS),
    DecodeOptions(frames=FRAMES, fps=None, buckets=BUCKETS),
    DecodeOptions(frames=FRAMES, fps=FPS, buckets=BUCKETS, sampling="uniform", clips_per_video=3),
    DecodeOptions(frames=(5, 9), fps=None, buckets=BUCKETS, sampling="chunks", clips_per_video=0),
)


@dataclass(frozen=True)
class BaseFile:
    name: str
    media_type: str
    make: Callable[[Path], None]


def _video(width: int, height: int, frames: int, codec: str, faststart: bool = False) -> Any:
    def make(path: Path) -> None:
        make_video(
            path,
            width=width,
            height=height,
            fps=8.0,
            num_frames=frames,
            codec=codec,
            faststart=faststart,
        )

    return make


def _image(width: int, height: int) -> Any:
    return lambda path: make_image(path, width=width, height=height)


BASE_FILES: tuple[BaseFile, ...] = (
    BaseFile("h264_moov_end.mp4", "video", _video(32, 32, 24, "libx264")),
    BaseFile("h264_faststart.mp4", "video", _video(64, 48, 32, "libx264", faststart=True)),
    BaseFile("vp9.webm", "video", _video(32, 32, 20, "libvpx-vp9")),
    BaseFile("mpeg4.avi", "video", _video(64, 48, 40, "mpeg4")),
    BaseFile("image.png", "image", _image(48, 32)),
    BaseFile("image.jpg", "image", _image(32, 48)),
)
"""The files mutated: one per container/codec family, and two image formats."""

DONORS: tuple[BaseFile, ...] = (
    BaseFile("donor_h264.mov", "video", _video(48, 32, 30, "libx264")),
    BaseFile("donor_tall.mp4", "video", _video(32, 48, 20, "libx264", faststart=True)),
)
"""More valid files, used only as the other side of splices (with the base files)."""

_ENCODER = {".mp4": "libx264", ".mov": "libx264", ".webm": "libvpx-vp9", ".avi": "mpeg4"}


@dataclass(frozen=True)
class Pool:
    files: dict[str, tuple[Path, str]]  # name -> (path, media type)
    bases: tuple[str, ...]
    clean: dict[tuple[str, int], list[tuple[str, tuple[float, ...], bytes]]]

    def blob(self, name: str) -> bytes:
        return self.files[name][0].read_bytes()


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Pool:
    """Encode the base and donor files once (about a second), and decode the intact bases."""
    root = tmp_path_factory.mktemp("fuzz_bases")
    files: dict[str, tuple[Path, str]] = {}
    for spec in BASE_FILES + DONORS:
        codec = _ENCODER.get(Path(spec.name).suffix)
        if codec is not None and codec != "libx264" and not _has_encoder(codec):
            continue  # e.g. an ffmpeg built without libvpx
        spec.make(root / spec.name)
        files[spec.name] = (root / spec.name, spec.media_type)
    bases = tuple(b.name for b in BASE_FILES if b.name in files)
    clean = {}
    for name in bases:
        path, media_type = files[name]
        for i, options in enumerate(OPTION_SETS):
            source = Source(key=f"clean/{name}", path=str(path), media_type=media_type)  # type: ignore[arg-type]
            out = _probe_decode(source, options)
            assert out and all(isinstance(x, Clip) for x in out), (name, options, out)
            clean[(name, i)] = [_fingerprint(x) for x in out]
    return Pool(files=files, bases=bases, clean=clean)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread, as in DataLoader workers (tiny clips on 2 cores run faster)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fingerprint(clip: Clip) -> tuple[str, tuple[float, ...], bytes]:
    return clip.key.split("#")[-1], clip.frame_times, clip.pixels.numpy().tobytes()


# --------------------------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutation:
    """One edit of a file's bytes; offsets are taken modulo the current (or donor) size."""

    kind: str
    at: int = 0
    length: int = 0
    data: bytes = b""
    dest: int = 0
    bits: tuple[int, ...] = ()
    donor: str = ""

    def apply(self, blob: bytes, pool: Pool) -> bytes:
        size = len(blob)
        at = self.at % (size + 1)
        end = min(size, at + self.length)
        if self.kind == "truncate":
            return blob[:at]
        if self.kind == "bitflip":
            if not blob:
                return blob
            out = bytearray(blob)
            for bit in self.bits:
                out[(bit // 8) % size] ^= 1 << (bit % 8)
            return bytes(out)
        if self.kind == "zero_run":
            return blob[:at] + bytes(end - at) + blob[end:]
        if self.kind.startswith("splice"):
            other = pool.blob(self.donor)
            start = self.dest % (len(other) + 1)
            if self.kind == "splice_halves":
                return blob[:at] + other[start:]
            span = other[start : start + self.length]
            if self.kind == "splice_insert":
                return blob[:at] + span + blob[at:]
            return blob[:at] + span + blob[at + len(span) :]  # splice_replace
        if self.kind == "overwrite":
            return blob[:at] + self.data + blob[at + len(self.data) :]
        if self.kind == "insert":
            return blob[:at] + self.data + blob[at:]
        if self.kind == "duplicate":
            dest = self.dest % (size + 1)
            return blob[:dest] + blob[at:end] + blob[dest:]
        if self.kind == "delete":
            return blob[:at] + blob[end:]
        raise AssertionError(self.kind)


# Headers and indexes sit in the first bytes (and, moov at the end, the last ones): offsets are
# drawn from the first KiB half the time, anywhere (modulo the size) otherwise.
positions = st.one_of(st.integers(0, 1023), st.integers(0, 1 << 20))
lengths = st.one_of(st.integers(1, 64), st.integers(1, 8192))
bits = st.one_of(st.integers(0, 8 * 1024 - 1), st.integers(0, (1 << 23) - 1))
DONOR_NAMES = tuple(b.name for b in BASE_FILES + DONORS)


def mutations(donors: tuple[str, ...]) -> st.SearchStrategy[Mutation]:
    donor = st.sampled_from(donors)
    return st.one_of(
        st.builds(Mutation, kind=st.just("truncate"), at=positions),
        st.builds(
            Mutation,
            kind=st.just("bitflip"),
            bits=st.lists(bits, min_size=1, max_size=MAX_BIT_FLIPS).map(tuple),
        ),
        st.builds(Mutation, kind=st.just("zero_run"), at=positions, length=lengths),
        st.builds(
            Mutation,
            kind=st.sampled_from(["splice_insert", "splice_replace"]),
            at=positions,
            length=lengths,
            dest=positions,
            donor=donor,
        ),
        st.builds(
            Mutation, kind=st.just("splice_halves"), at=positions, dest=positions, donor=donor
        ),
        st.builds(
            Mutation,
            kind=st.sampled_from(["overwrite", "insert"]),
            at=positions,
            data=st.binary(min_size=1, max_size=512),
        ),
        st.builds(
            Mutation, kind=st.just("duplicate"), at=positions, length=lengths, dest=positions
        ),
        st.builds(Mutation, kind=st.just("delete"), at=positions, length=lengths),
    )


@dataclass(frozen=True)
class Case:
    base: str
    edits: tuple[Mutation, ...]
    option_set: int


def cases(bases: tuple[str, ...], donors: tuple[str, ...]) -> st.SearchStrategy[Case]:
    return st.builds(
        Case,
        base=st.sampled_from(bases),
        edits=st.lists(mutations(donors), min_size=1, max_size=3).map(tuple),
        option_set=st.integers(0, len(OPTION_SETS) - 1),
    )


def mutate(pool: Pool, case: Case) -> bytes:
    blob = pool.blob(case.base)
    for edit in case.edits:
        blob = edit.apply(blob, pool)
    return blob


# --------------------------------------------------------------------------------------------
# Running under a time bound
# --------------------------------------------------------------------------------------------


def _bounded(what: str, fn: Callable[[], Any]) -> Any:
    """``fn()`` in a thread: a hang fails the example (naming ``what``) instead of the suite."""
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["out"] = fn()
        except BaseException as exc:  # reported below
            result["exc"] = exc

    thread = threading.Thread(target=work, daemon=True, name=f"fuzz {what}")
    thread.start()
    thread.join(TIMEOUT_SECONDS)
    if thread.is_alive():
        pytest.fail(f"{what} did not end within {TIMEOUT_SECONDS:.0f} s (a hang)")
    if "exc" in result:
        exc = result["exc"]
        raise AssertionError(
            f"{type(exc).__name__} escaped the pipeline for {what}: {exc}"
        ) from exc
    return result["out"]


def _probe_decode(source: Source, options: DecodeOptions) -> list[Any]:
    policy = ErrorPolicy(backoff_seconds=0)
    context = StageContext(breaker_config=BreakerConfig(enabled=False))
    limits = ProbeLimits(min_frames=min(options.frames), fps=options.fps)
    probed = probe([source], policy=policy, context=context, limits=limits)
    return list(decode(probed, policy=policy, options=options, context=context))


def _check_clip(clip: Clip, source: Source, options: DecodeOptions) -> None:
    """A correct sample: uint8, its bucket's shape, a planned frame count (one for an image),
    a planned bucket, finite frame times in presentation order."""
    bucket = clip.bucket
    assert clip.source == source
    assert clip.pixels.dtype == torch.uint8
    if source.media_type == "image":
        assert bucket.frames == 1, bucket  # an image is a one-frame clip (docs/collect.md)
    else:
        assert bucket.frames in options.frames, bucket
    assert (bucket.width, bucket.height) in BUCKETS, bucket
    assert tuple(clip.pixels.shape) == (bucket.frames, 3, bucket.height, bucket.width)
    times = clip.frame_times
    assert len(times) == bucket.frames
    assert all(math.isfinite(t) for t in times), times
    assert all(a <= b for a, b in itertools.pairwise(times)), f"frame times go back: {times}"


def _check_failed(item: Failed, path: Path) -> None:
    assert item.stage in ("probe", "decode"), item
    assert item.reason != "unexpected_error", f"a wan_data bug: {item}"
    # The files are damaged, the machine is fine: a machine-fault reason is a wrong reason.
    assert item.reason != "io_transient", item
    assert item.reason.strip() and item.message.strip() and item.error_type.strip(), item
    assert item.path == str(path)


# --------------------------------------------------------------------------------------------
# Probe -> decode (the bulk)
# --------------------------------------------------------------------------------------------

_counter = itertools.count()


def fuzz_probe_decode(pool: Pool, work: Path, case: Case, outcomes: Counter[str]) -> None:
    original = pool.blob(case.base)
    blob = mutate(pool, case)
    path = work / f"{next(_counter)}_{case.base}"
    path.write_bytes(blob)
    media_type = pool.files[case.base][1]
    source = Source(key=f"mutated/{path.name}", path=str(path), media_type=media_type)  # type: ignore[arg-type]
    options = OPTION_SETS[case.option_set]
    try:
        out = _bounded(f"probe/decode of {path.name}", lambda: _probe_decode(source, options))
    finally:
        path.unlink(missing_ok=True)
    assert out, "every source gives at least one Clip or Failed"
    for item in out:
        if isinstance(item, Failed):
            _check_failed(item, path)
        else:
            assert isinstance(item, Clip), f"{type(item).__name__} came out of decode"
            _check_clip(item, source, options)
    if blob == original:
        # Unchanged bytes (a truncation at the end, flips that cancel): the intact file's clips.
        assert [_fingerprint(x) for x in out] == pool.clean[(case.base, case.option_set)]
    clips = sum(isinstance(x, Clip) for x in out)
    reasons = sorted({x.reason for x in out if isinstance(x, Failed)})
    outcome = ("clips" if clips else "skipped") + (f" ({', '.join(reasons)})" if reasons else "")
    outcomes[outcome] += 1
    for edit in case.edits:
        outcomes[f"mutation {edit.kind}"] += 1
    event(outcome)


def _run(
    pool: Pool,
    work: Path,
    examples: int,
    seed_value: int,
    body: Callable[[Pool, Path, Case, Counter[str]], None],
) -> Counter[str]:
    """Run ``body`` on ``examples`` seeded cases (no example database: CI replays the same)."""
    outcomes: Counter[str] = Counter()
    runs = Counter[str]()

    @seed(seed_value)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=cases(pool.bases, tuple(n for n in DONOR_NAMES if n in pool.files)))
    def fuzz(case: Case) -> None:
        body(pool, work, case, outcomes)
        runs["examples"] += 1

    fuzz()
    assert runs["examples"] >= examples
    return outcomes


def run_probe_decode(pool: Pool, work: Path, examples: int, seed_value: int) -> Counter[str]:
    return _run(pool, work, examples, seed_value, fuzz_probe_decode)


def _report(outcomes: Counter[str], record: Callable[[str, object], None]) -> None:
    record("fuzz_outcomes", dict(outcomes))
    print("\n".join(f"{n:5d}  {k}" for k, n in sorted(outcomes.items())))


def test_fuzz_probe_decode(
    pool: Pool, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """Mutated videos and images through probe -> decode: valid clips or a reason, in time."""
    outcomes = run_probe_decode(pool, tmp_path, DEFAULT_EXAMPLES, seed_value=13)
    _report(outcomes, record_property)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fuzz_probe_decode_slow(
    pool: Pool, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    outcomes = run_probe_decode(pool, tmp_path, SLOW_EXAMPLES, seed_value=1313)
    _report(outcomes, record_property)


# --------------------------------------------------------------------------------------------
# WanVideoDataset over a folder with one mutated file
# --------------------------------------------------------------------------------------------

DATASET_OPTIONS: dict[str, Any] = {
    "frames": [1, 5],
    "fps": 8,
    "resolution": (32, 32),
    "batch_size": 2,
    "seed": 0,
}
GOOD_IN_FOLDER = ("h264_moov_end.mp4", "vp9.webm", "image.png")


def fuzz_dataset(pool: Pool, work: Path, case: Case, outcomes: Counter[str]) -> None:
    folder = work / f"set{next(_counter)}"
    folder.mkdir()
    good = {}
    for name in GOOD_IN_FOLDER:
        if name in pool.files:
            good[name] = folder / f"good_{name}"
            shutil.copyfile(pool.files[name][0], good[name])
    mutated = folder / f"mutated_{case.base}"
    mutated.write_bytes(mutate(pool, case))

    def run() -> tuple[WanVideoDataset, list[dict[str, Any]]]:
        ds = WanVideoDataset(folder, **DATASET_OPTIONS)
        return ds, list(ds.loader(num_workers=0))

    try:
        ds, batches = _bounded(f"a dataset with {mutated.name}", run)
        report = ds.report()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert len(batches) == len(ds)
    served: Counter[str] = Counter()
    for b in batches:
        assert len(b["paths"]) == DATASET_OPTIONS["batch_size"], "a batch is not full"
        px = b["pixels"]
        assert px.dtype == torch.float32 and px.dim() == 5 and px.shape[:2] == (2, 3), px.shape
        assert px.shape[2] in DATASET_OPTIONS["frames"], px.shape
        assert tuple(px.shape[3:]) == (32, 32), px.shape
        assert bool(torch.isfinite(px).all())
        assert -1.0 <= float(px.min()) and float(px.max()) <= 1.0
        assert len(b["frame_times"]) == 2
        for times in b["frame_times"]:
            assert len(times) == px.shape[2]
            assert all(math.isfinite(t) for t in times)
            assert all(a <= c for a, c in itertools.pairwise(times)), times
        served.update(Path(p).name for p in b["paths"])
    skipped = {Path(r["path"]).name: r for r in report["skipped"]}
    for name, path in good.items():
        assert path.name in served, f"the good file {name} was not served"
        assert path.name not in skipped, skipped[path.name]
    for record in report["skipped"]:
        assert record["reason"] != "unexpected_error", f"a wan_data bug: {record}"
        assert record["reason"] != "io_transient", f"a damaged file blamed on the machine: {record}"
        assert record["message"].strip(), record
    assert mutated.name in served or mutated.name in skipped, "the mutated file vanished"
    if mutated.name in skipped:
        outcome = f"skipped ({skipped[mutated.name]['reason']})"
    else:
        outcome = "served"
    outcomes[outcome] += 1
    event(outcome)


def run_dataset(pool: Pool, work: Path, examples: int, seed_value: int) -> Counter[str]:
    return _run(pool, work, examples, seed_value, fuzz_dataset)


def test_fuzz_dataset(
    pool: Pool, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """A folder of good files and one mutated file: full valid batches, the file served or
    skipped with a reason."""
    outcomes = run_dataset(pool, tmp_path, DATASET_EXAMPLES, seed_value=31)
    _report(outcomes, record_property)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fuzz_dataset_slow(
    pool: Pool, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    outcomes = run_dataset(pool, tmp_path, SLOW_DATASET_EXAMPLES, seed_value=3131)
    _report(outcomes, record_property)


# --------------------------------------------------------------------------------------------
# Bugs the fuzzing found
# --------------------------------------------------------------------------------------------


def test_a_png_with_a_broken_chunk_is_invalid_data_not_a_bug(pool: Pool, tmp_path: Path) -> None:
    """Found by ``test_fuzz_probe_decode_slow``: one byte of an MP4 inserted at offset 443 of a
    PNG. Pillow's PNG reader raised ``SyntaxError: broken PNG file`` while the probe read the
    EXIF chunks, which the policy took for a wan_data bug (``unexpected_error``). Fixed in
    ``wan_data/stages/probe.py`` (``_probe_image``): now an ``invalid_data`` skip."""
    blob = pool.blob("image.png")
    blob = blob[:443] + pool.blob("h264_moov_end.mp4")[:1] + blob[443:]
    path = tmp_path / "broken_chunk.png"
    path.write_bytes(blob)
    source = Source(key="broken_chunk.png", path=str(path), media_type="image")
    (out,) = _probe_decode(source, OPTION_SETS[0])
    assert isinstance(out, Failed), out
    assert (out.stage, out.reason, out.error_type) == ("probe", "invalid_data", "SampleError")
    assert "broken PNG file" in out.message and str(path) in out.message


ERRNO_REPRODUCTIONS = {
    # found by test_fuzz_probe_decode_slow: Mutation(kind="truncate", at=52) of vp9.webm
    "eio": ("vp9.webm", "truncate", 52, "input/output error"),
    # found by test_fuzz_probe_decode: Mutation(kind="bitflip", bits=(7893,)) of the faststart MP4
    "enomem": ("h264_faststart.mp4", "bitflip", 7893, "cannot allocate memory"),
}


@pytest.mark.parametrize("which", sorted(ERRNO_REPRODUCTIONS))
def test_damage_ffmpeg_reports_as_an_errno_is_not_a_machine_fault(
    pool: Pool, tmp_path: Path, which: str
) -> None:
    """A damaged file whose FFmpeg error reads like an errno is still the file's fault.

    torchcodec raises FFmpeg's error as ``RuntimeError: Failed to open input buffer:
    Input/output error`` (the Matroska demuxer on a cut EBML header) or ``Failed to read frame
    from input file: Cannot allocate memory`` (a flipped bit in the MP4 index): the words of a
    flaky disk or a host out of memory, which the policy retries as ``io_transient`` (never
    ledgered). It used to skip the file as ``io_transient`` after 3 attempts, so every later
    run probed the broken file again while the report blamed the machine. Now, when every
    attempt fails the same way, the probe re-reads the file to its end (and for ENOMEM
    allocates 64 MiB) from Python; both succeed here, so the damage is the file's: skipped with
    the damaged-data reason and ledgered (``wan_data/media/ffmpeg_errno.py``).
    """
    base, kind, at, text = ERRNO_REPRODUCTIONS[which]
    if base not in pool.files:
        pytest.skip(f"ffmpeg cannot encode {base}")
    mutation = Mutation(kind=kind, at=at, bits=(at,))
    path = tmp_path / f"damaged_{base}"
    path.write_bytes(mutation.apply(pool.blob(base), pool))
    source = Source(key=path.name, path=str(path), media_type="video")
    (out,) = _probe_decode(source, OPTION_SETS[0])
    assert isinstance(out, Failed), out
    if text not in out.message.lower():
        pytest.skip(f"this ffmpeg build does not report {text!r} for the damage: {out.message}")
    assert out.reason != "io_transient", out
    assert out.stage == "probe" and out.attempts == 3, out  # retried first, as a machine fault
    assert out.reason in LEDGER_REASONS and "reads back to its end" in out.message, out
