"""Metrics accuracy under injected decode failures: exact counts, for any number of workers.

A pool of tiny sources (PNG images of three aspect buckets, and two short videos cut into three
5-frame chunks each, so one source yields several samples) is built once per module. Every
example links a drawn subset of it into a fresh folder, builds a ``WanVideoDataset`` and makes a
drawn set of sources fail at decode: ``wan_data.stages.decode.decode_sample``
(what the pixel reader
calls) is replaced by a wrapper that raises ``SampleError(reason=...)`` for those paths and
decodes the rest for real. Forked DataLoader workers inherit the patch.

The ground truth is a reference model of one epoch written from the documented rules, fed only
by the plan (``ds.plan()``), the seeded candidate orders the plan module exposes and the injected
pattern: members are decoded in order; a failed member is replaced by the next candidate of
``replacement_candidates`` (which may fail in turn); when the bucket has no candidate left the
batch's good clips are repeated; when nothing of the bucket decodes, the whole batch is taken
from the first bucket of ``fallback_buckets`` that yields a clip (its pool shuffled with
``sample_rng(seed, epoch, "fallback:<position>:<bucket>", "plan")``); when no bucket yields
one, ``PipelineHealthError``. From the model's sequence of decode attempts follow the decode
stage's in/out/failed counts and reasons, one skip record per failed attempt, the batch and
sample totals and each batch's keys; the report must equal them exactly.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from media import make_image, make_video
from prop_helpers import fast_policy, link_or_copy

import wan_data.stages.decode
from wan_data.dataset import WanVideoDataset
from wan_data.errors import PipelineHealthError, SampleError
from wan_data.items import Bucket, Clip, Probed
from wan_data.media.sampling import sample_rng
from wan_data.planning.batches import PlanSample
from wan_data.planning.plan import (
    SMALL_BUCKET_MODES,
    EpochPlan,
    fallback_buckets,
    replacement_candidates,
)
from wan_data.stages.decode import DecodeOptions

REAL_DECODE_SAMPLE = wan_data.stages.decode.decode_sample

# --------------------------------------------------------------------------------------------
# The source pool
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolFile:
    """One source of the pool: an image (``frames`` 1) or a video of ``frames`` frames."""

    name: str
    width: int
    height: int
    frames: int = 1


POOL: tuple[PoolFile, ...] = (
    *(PoolFile(f"square_{i}.png", 32, 32) for i in range(4)),
    *(PoolFile(f"wide_{i}.png", 64, 16) for i in range(3)),
    PoolFile("tall_0.png", 16, 64),  # a one-sample bucket: smaller than any batch_size > 1
    PoolFile("clip_0.mp4", 32, 32, frames=15),  # three 5-frame chunks: three samples
    PoolFile("clip_1.mp4", 32, 32, frames=15),
)
"""Ten sources, fourteen samples, four buckets (1x32x32, 1x64x16, 1x16x64, 5x32x32)."""

NAMES = tuple(f.name for f in POOL)
SAMPLES_PER_FILE = {f.name: 3 if f.frames > 1 else 1 for f in POOL}
REASONS = ("decode_error", "unreadable", "bad_clip")
DATASET_OPTIONS: dict[str, Any] = {
    "frames": (1, 5),
    "fps": None,
    "resolution": (32, 32),
    "sampling": "chunks",
    "clips_per_video": 0,
    "breaker_threshold": None,  # the breaker would stop a run with many injected failures
    "num_ffmpeg_threads": 1,
    "probe_threads": 1,
}
COUNT_KEYS = ("in", "out", "failed", "bypassed", "warned", "failed_by_reason")
NO_STAGE: dict[str, Any] = {
    "in": 0,
    "out": 0,
    "failed": 0,
    "bypassed": 0,
    "warned": 0,
    "failed_by_reason": {},
    "failed_by_error_type": {},
}
_examples = itertools.count()


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Encode the pool once (under a second); every example hard-links from it."""
    root = tmp_path_factory.mktemp("metrics_pool")
    files: dict[str, Path] = {}
    for spec in POOL:
        path = root / spec.name
        if spec.frames > 1:
            make_video(path, width=spec.width, height=spec.height, fps=8.0, num_frames=spec.frames)
        else:
            make_image(path, width=spec.width, height=spec.height)
        files[spec.name] = path
    return files


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("metrics_examples")


# --------------------------------------------------------------------------------------------
# Scenarios and the injected decoder
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One drawn example: which sources exist, which fail at decode and why, the plan options."""

    files: tuple[str, ...]
    bad: tuple[tuple[str, str], ...]  # (file name, reason) of every source that fails
    batch_size: int
    small_buckets: str
    seed: int
    epoch: int


@st.composite
def scenarios(draw: st.DrawFn, *, one_good: bool = False) -> Scenario:
    """Any subset of the pool, any failure pattern over it (``one_good``: at least one source
    decodes, so the epoch cannot end in ``PipelineHealthError``), any plan options."""
    files = tuple(
        sorted(draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=len(NAMES), unique=True)))
    )
    outcomes = draw(
        st.lists(
            st.one_of(st.none(), st.sampled_from(REASONS)),
            min_size=len(files),
            max_size=len(files),
        )
    )
    spared = draw(st.sampled_from(files)) if one_good else None
    bad = tuple(
        (name, reason)
        for name, reason in zip(files, outcomes, strict=True)
        if reason is not None and name != spared
    )
    return Scenario(
        files=files,
        bad=bad,
        batch_size=draw(st.integers(1, 4)),
        small_buckets=draw(st.sampled_from(SMALL_BUCKET_MODES)),
        seed=draw(st.integers(0, 3)),
        epoch=draw(st.integers(0, 3)),
    )


class InjectedDecode:
    """Stands in for ``decode_sample``: raises ``SampleError`` for the bad paths (every clip of
    such a source, every time it is tried), decodes every other sample for real."""

    def __init__(self, bad: Mapping[str, str]) -> None:
        self.bad = dict(bad)

    def __call__(
        self, item: Probed, clip_index: int, bucket: Bucket, options: DecodeOptions, epoch: int
    ) -> Clip:
        reason = self.bad.get(item.path)
        if reason is not None:
            raise SampleError(message(item.path, reason), reason=reason)
        return REAL_DECODE_SAMPLE(item, clip_index, bucket, options, epoch)


def message(path: str, reason: str) -> str:
    """The injected error's message (a non-blank ``SampleError`` message is kept verbatim)."""
    return f"injected decode failure ({reason}) [stage=decode file={path}]"


# --------------------------------------------------------------------------------------------
# The reference model of one epoch
# --------------------------------------------------------------------------------------------


@dataclass
class Reference:
    """What one epoch must do: every decode attempt in order, every batch's keys, and whether
    the epoch ends in ``PipelineHealthError`` (then ``batches`` holds those yielded before)."""

    attempts: list[int] = field(default_factory=list)
    batches: list[list[str]] = field(default_factory=list)
    raises: bool = False
    replaced: int = 0  # candidates tried in place of a failed member
    repeated: int = 0  # slots filled by repeating a good clip (candidates exhausted)
    fallbacks: int = 0  # batches taken whole from another bucket


def reference_epoch(
    plan: EpochPlan, samples: Sequence[PlanSample], bad: Mapping[str, str], seed: int
) -> Reference:
    """Replay the replacement rules (see the module docstring) over the injected pattern."""
    ref = Reference()

    def decodes(index: int) -> bool:
        ref.attempts.append(index)
        return samples[index].path not in bad

    def keys(kept: list[int], size: int) -> list[str]:
        # Slots left empty repeat the batch's good clips, in order.
        filled = kept + [kept[i % len(kept)] for i in range(size - len(kept))]
        return [samples[i].key for i in filled]

    for batch in plan.batches:
        candidates = iter(replacement_candidates(plan, batch, seed=seed))
        kept: list[int] = []
        for member in batch.members:
            index: int | None = member
            while index is not None and not decodes(index):
                index = next(candidates, None)  # the next candidate, or none left
                ref.replaced += index is not None
            if index is not None:
                kept.append(index)
        if kept:
            ref.repeated += len(batch.members) - len(kept)
            ref.batches.append(keys(kept, len(batch.members)))
            continue
        ref.fallbacks += 1
        for bucket in fallback_buckets(plan, batch, seed=seed):
            order = list(plan.pools[bucket])
            rng = sample_rng(seed, plan.epoch, f"fallback:{batch.position}:{bucket}", "plan")
            rng.shuffle(order)
            kept = []
            for index in order:
                if decodes(index):
                    kept.append(index)
                    if len(kept) == len(batch.members):
                        break
            if kept:
                ref.batches.append(keys(kept, len(batch.members)))
                break
        else:
            ref.raises = True
            return ref
    return ref


def expected_counts(
    ref: Reference, samples: Sequence[PlanSample], bad: Mapping[str, str], epoch: int
) -> dict[str, Any]:
    """The report counts the reference implies: each attempt is one decode ``in``; an attempt
    on a bad path is one ``failed`` (its reason, error type ``SampleError``) and one skip
    record with one attempt (``SampleError`` is never retried); the others are ``out``."""
    failures = [samples[i] for i in ref.attempts if samples[i].path in bad]
    reasons = collections.Counter(bad[s.path] for s in failures)
    decode = {
        "in": len(ref.attempts),
        "out": len(ref.attempts) - len(failures),
        "failed": len(failures),
        "bypassed": 0,
        "warned": 0,
        "failed_by_reason": dict(sorted(reasons.items())),
        "failed_by_error_type": {"SampleError": len(failures)} if failures else {},
    }
    skipped = [
        {
            "key": s.key,
            "path": s.path,
            "stage": "decode",
            "reason": bad[s.path],
            "error_type": "SampleError",
            "message": message(s.path, bad[s.path]),
            "attempts": 1,
            "epoch": epoch,
        }
        for s in failures
    ]
    return {
        "decode": decode,
        "skipped": sorted_records(skipped),
        "batches": len(ref.batches),
        "samples": sum(len(b) for b in ref.batches),
    }


# --------------------------------------------------------------------------------------------
# Running an example and reading its report
# --------------------------------------------------------------------------------------------


def sorted_records(records: Sequence[Mapping[str, object]]) -> list[tuple[tuple[str, str], ...]]:
    """Skip records as comparable tuples, sorted (workers finish in any order)."""
    return sorted(tuple(sorted((k, repr(v)) for k, v in r.items())) for r in records)


def counts(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report's decode counts, skip records and totals, in ``expected_counts``'s shape."""
    decode = report["stages"].get("decode", NO_STAGE)
    return {
        "decode": {k: decode[k] for k in (*COUNT_KEYS, "failed_by_error_type")},
        "skipped": sorted_records(report["skipped"]),
        "batches": report["batches"],
        "samples": report["samples"],
    }


def normalised(report: Mapping[str, Any]) -> dict[str, Any]:
    """Everything of a report that must not depend on the worker count (timings left out;
    a stage no process entered reads as zeros)."""
    stages = {
        name: {k: s[k] for k in (*COUNT_KEYS, "failed_by_error_type")}
        for name, s in report["stages"].items()
        if s["in"] or name != "decode"
    }
    return {
        "stages": stages,
        "skipped": sorted_records(report["skipped"]),
        "warnings": report["warnings"],
        "batches": report["batches"],
        "samples": report["samples"],
        "dropped_in_collate": report["dropped_in_collate"],
        "sources": report["sources"],
    }


def make_dataset(pool: dict[str, Path], folders: Path, scenario: Scenario) -> WanVideoDataset:
    folder = folders / f"example_{next(_examples)}"
    for name in scenario.files:
        link_or_copy(pool[name], folder / name)
    ds = WanVideoDataset(
        folder,
        batch_size=scenario.batch_size,
        small_buckets=scenario.small_buckets,
        seed=scenario.seed,
        policy=fast_policy(),
        **DATASET_OPTIONS,
    )
    ds.set_epoch(scenario.epoch)
    # The pool is valid: every chosen file is a source and yields all its samples.
    assert sorted(Path(s.path).name for s in ds.sources) == list(scenario.files)
    assert len(ds.samples) == sum(SAMPLES_PER_FILE[name] for name in scenario.files)
    return ds


def bad_paths(ds: WanVideoDataset, scenario: Scenario) -> dict[str, str]:
    """The injected pattern keyed by source path, as the dataset spells it."""
    reasons = dict(scenario.bad)
    return {s.path: reasons[Path(s.path).name] for s in ds.sources if Path(s.path).name in reasons}


def run_epoch(
    ds: WanVideoDataset, bad: Mapping[str, str], workers: int
) -> tuple[list[list[str]], bool]:
    """Iterate one epoch through ``ds.loader`` with ``bad`` failing at decode: the keys of
    every batch received, and whether the epoch ended in ``PipelineHealthError``."""
    kwargs: dict[str, Any] = {"num_workers": workers}
    if workers:
        kwargs["multiprocessing_context"] = "fork"  # workers must inherit the patched decoder
    keys: list[list[str]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(wan_data.stages.decode, "decode_sample", InjectedDecode(bad))
        try:
            for batch in ds.loader(**kwargs):
                keys.append(list(batch["keys"]))
        except PipelineHealthError:
            return keys, True
    return keys, False


def check_invariants(
    report: Mapping[str, Any],
    ds: WanVideoDataset,
    plan: EpochPlan,
    bad: Mapping[str, str],
    keys: list[list[str]],
    epoch: int,
) -> None:
    """Properties that hold whatever the replacement order (checked before the exact model, so
    a failure names the broken rule rather than a diff)."""
    decode = report["stages"].get("decode", NO_STAGE)
    assert decode["in"] == decode["out"] + decode["failed"], decode
    assert sum(decode["failed_by_reason"].values()) == decode["failed"], decode
    # Every failure is an injected one, recorded once, with the injected reason.
    skips = report["skipped"]
    assert len(skips) == decode["failed"], (len(skips), decode)
    for record in skips:
        assert record["stage"] == "decode", record
        assert record["path"] in bad, record
        assert record["reason"] == bad[record["path"]], record
        assert (record["error_type"], record["attempts"], record["epoch"]) == (
            "SampleError",
            1,
            epoch,
        )
    by_reason = collections.Counter(r["reason"] for r in skips)
    assert dict(sorted(by_reason.items())) == decode["failed_by_reason"]
    # A planned member is always tried first: every bad planned slot is a failure at least.
    bad_slots = [m for b in plan.batches for m in b.members if ds.samples[m].path in bad]
    assert decode["failed"] >= len(bad_slots)
    assert {ds.samples[m].path for m in bad_slots} <= {r["path"] for r in skips}
    # Batches reach the trainer whole and only with clips that decoded.
    by_key = {s.key: s for s in ds.samples}
    assert report["batches"] == len(keys)
    assert report["samples"] == sum(len(k) for k in keys)
    assert decode["out"] <= report["samples"]
    for batch, got in zip(plan.batches, keys, strict=False):
        assert len(got) == len(batch.members)
        assert all(by_key[k].path not in bad for k in got), got
        assert len({by_key[k].bucket for k in got}) == 1, got


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_report_counts_equal_injected_ground_truth(
    pool: dict[str, Path], folders: Path, scenario: Scenario
) -> None:
    """With ``num_workers=0``, any decode-failure pattern gives exactly the reference counts.

    Checked: the decode stage's in/out/failed, failures by reason and by error type, the skip
    records (key, path, reason, message, attempts, epoch; one per failed attempt, so a bad
    sample tried for several batches is recorded each time), the batch and sample totals, and
    each batch's keys. When every source fails the epoch must stop with
    ``PipelineHealthError`` at the first batch and the report still hold the attempts made;
    with ``small_buckets="drop"`` and every bucket smaller than the batch, nothing is decoded.
    """
    ds = make_dataset(pool, folders, scenario)
    bad = bad_paths(ds, scenario)
    plan = ds.plan()
    ref = reference_epoch(plan, ds.samples, bad, scenario.seed)

    for name, happens in (
        ("a member replaced", ref.replaced),
        ("a slot repeated after its bucket ran out", ref.repeated),
        ("a batch taken from another bucket", ref.fallbacks),
        ("PipelineHealthError", ref.raises),
        ("nothing planned", not plan.batches),
    ):
        event(f"{name}: {bool(happens)}")

    keys, raised = run_epoch(ds, bad, workers=0)
    report = ds.report()

    assert raised == ref.raises
    if raised:
        # Only when nothing decodes, at the first batch, after trying each of its member slots
        # and then every other sample once (its bucket's candidates, then every other bucket).
        assert len(bad) == len(scenario.files) and keys == []
        members = plan.batches[0].members
        tried = len(members) + len(ds.samples) - len(set(members))
        decode = report["stages"]["decode"]
        assert (decode["in"], decode["out"], decode["failed"]) == (tried, 0, tried)
        assert len(report["skipped"]) == tried
    else:
        assert len(keys) == len(plan.batches)
        assert report["samples"] == sum(len(b.members) for b in plan.batches)
        check_invariants(report, ds, plan, bad, keys, scenario.epoch)
    assert keys == ref.batches
    assert counts(report) == expected_counts(ref, ds.samples, bad, scenario.epoch)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios(one_good=True))
def test_report_is_the_same_for_0_1_2_workers(
    pool: dict[str, Path], folders: Path, scenario: Scenario
) -> None:
    """``ds.report()`` in the main process merges the workers' parts into the counts of a
    ``num_workers=0`` run of the same epoch, and both equal the reference.

    One dataset runs the epoch with 0, 1 and 2 fork workers, ``reset_report()`` between runs
    (which must forget the previous run's decode counts and keep the setup stages). Compared:
    every stage's counts (collect, probe, bucket from setup; decode), the sorted skip records,
    warnings, batch and sample totals, and the keys of every batch in the order received
    (workers are dealt batches round-robin, so the loader yields the plan in order).
    """
    ds = make_dataset(pool, folders, scenario)
    bad = bad_paths(ds, scenario)
    ref = reference_epoch(ds.plan(), ds.samples, bad, scenario.seed)
    assert not ref.raises
    expected = expected_counts(ref, ds.samples, bad, scenario.epoch)

    runs: dict[int, dict[str, Any]] = {}
    for workers in (0, 1, 2):
        ds.reset_report()
        ds.set_epoch(scenario.epoch)  # each pass would otherwise advance the epoch
        keys, raised = run_epoch(ds, bad, workers)
        report = ds.report()
        assert not raised
        assert keys == ref.batches, f"num_workers={workers}"
        assert counts(report) == expected, f"num_workers={workers}"
        runs[workers] = normalised(report)
    assert runs[1] == runs[0]
    assert runs[2] == runs[0]
