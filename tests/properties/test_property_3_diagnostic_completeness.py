"""Property 3: diagnostic completeness — every failure names stage, item and cause.

Feature: wan-training-pipeline-fixes, Property 3: diagnostic completeness

Over the generated corpus (good, short, images, broken, damaged files) plus errors injected at
random into probe and decode, every ``Failed`` names the module (stage), the item (key and path)
and the cause (error type, and a message holding the file path or the exception text); every
record of ``report()["skipped"]`` has path, stage, reason, error_type, message and attempts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from media import Corpus
from prop_helpers import BUCKETS, FPS, Injection, Injector, fast_policy, injections, messages
from torch.utils.data import DataLoader

import wan_data.stages.decode
import wan_data.stages.probe
from wan_data.dataset import WanVideoDataset
from wan_data.errors import SampleError
from wan_data.failures.breaker import BreakerConfig
from wan_data.failures.mechanism import StageContext, map_stage
from wan_data.items import Failed, Source
from wan_data.stages.collect import collect
from wan_data.stages.decode import DecodeOptions, decode
from wan_data.stages.probe import probe

PROPERTY = "Feature: wan-training-pipeline-fixes, Property 3: diagnostic completeness"
OPTIONS = DecodeOptions(frames=(1, 5, 9), fps=FPS, buckets=BUCKETS)
REAL_PROBE_METADATA = wan_data.stages.probe.probe_metadata
REAL_DECODE_ONE = wan_data.stages.decode.decode_one
STAGES = {"collect", "probe", "decode"}
RECORD_KEYS = ("path", "stage", "reason", "error_type", "message", "attempts")


@pytest.fixture(scope="module")
def corpus_sources(corpus: Corpus) -> list[Source | Failed]:
    """What collect makes of the corpus (sources and collect-stage failures), once."""
    return list(collect([corpus.root], policy=fast_policy()))


def _check_failure(failed: Failed, root: Path, injected: dict[tuple[str, str], Injection]) -> None:
    """The failure names its stage, its item and its cause."""
    assert failed.stage in STAGES, failed
    assert failed.key.strip(), failed
    assert failed.path.strip() and os.path.isabs(failed.path), failed
    relative = Path(failed.path).relative_to(root).as_posix()
    assert relative in failed.key, f"key {failed.key!r} does not name {relative!r}"
    assert failed.reason.strip(), failed
    assert failed.error_type.strip(), failed
    assert failed.attempts >= 1, failed
    assert failed.message.strip(), failed
    source_key = failed.key.split("#", 1)[0]
    injection = injected.get((failed.stage, source_key))
    if injection is None or injection.transient:  # a transient one gave way to the real error
        assert failed.path in failed.message, f"message does not name the file: {failed}"
        return
    exc = injection.make()
    assert failed.error_type == type(exc).__name__
    assert failed.path in failed.message or str(exc).strip() in failed.message, failed


def _check_record(record: dict[str, Any]) -> None:
    for key in RECORD_KEYS:
        value = record.get(key)
        assert value is not None and str(value).strip(), f"record lacks {key}: {record}"
    assert isinstance(record["attempts"], int) and record["attempts"] >= 1
    assert record["stage"] in STAGES


def _plans(
    data: st.DataObject, keys: list[str]
) -> tuple[dict[str, Injection], dict[str, Injection]]:
    pick = st.dictionaries(st.sampled_from(keys), injections, max_size=6)
    return data.draw(pick, label="probe errors"), data.draw(pick, label="decode errors")


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_every_stage_failure_names_stage_item_and_cause(
    corpus: Corpus, corpus_sources: list[Source | Failed], data: st.DataObject
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 3: diagnostic completeness

    Every Failed out of probe/decode over the corpus with injected errors is complete.
    """
    subset = data.draw(
        st.lists(
            st.sampled_from(corpus_sources),
            min_size=1,
            max_size=len(corpus_sources),
            unique_by=lambda i: i.key,
        ),
        label="items",
    )
    keys = [i.key for i in subset]
    probe_plan, decode_plan = _plans(data, keys)
    injected = {("probe", k): v for k, v in probe_plan.items()}
    injected |= {("decode", k): v for k, v in decode_plan.items()}
    policy = fast_policy()
    context = StageContext(breaker_config=BreakerConfig(enabled=False))
    injectors = {
        "probe": Injector(REAL_PROBE_METADATA, probe_plan),
        "decode": Injector(REAL_DECODE_ONE, decode_plan),
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(wan_data.stages.probe, "probe_metadata", injectors["probe"])
        mp.setattr(wan_data.stages.decode, "decode_one", injectors["decode"])
        out = list(
            decode(
                probe(subset, policy=policy, context=context),
                policy=policy,
                options=OPTIONS,
                context=context,
            )
        )
    failures = [o for o in out if isinstance(o, Failed)]
    for failed in failures:
        _check_failure(failed, corpus.root, injected)
    # Every permanent error injected into an item that reached the stage shows up there.
    for (stage, key), injection in injected.items():
        if not injection.transient and key in injectors[stage].calls:
            assert any(f.key == key and f.stage == stage for f in failures), (stage, key)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_report_skipped_records_are_complete(
    corpus: Corpus, corpus_sources: list[Source | Failed], data: st.DataObject
) -> None:
    """Feature: wan-training-pipeline-fixes, Property 3: diagnostic completeness

    Every record of report()['skipped'] has its six keys filled.
    """
    keys = [i.key for i in corpus_sources if isinstance(i, Source)]
    probe_plan, decode_plan = _plans(data, keys)
    dataset = WanVideoDataset(
        corpus.root,
        frames=[1, 5, 9],
        fps=FPS,
        resolution=(32, 32),
        batch_size=data.draw(st.integers(1, 3), label="batch_size"),
        breaker_threshold=None,
        policy=fast_policy(),
        num_ffmpeg_threads=1,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            wan_data.stages.probe, "probe_metadata", Injector(REAL_PROBE_METADATA, probe_plan)
        )
        mp.setattr(wan_data.stages.decode, "decode_one", Injector(REAL_DECODE_ONE, decode_plan))
        batches = list(DataLoader(dataset, batch_size=None, num_workers=0))
    report = dataset.report()
    skipped = report["skipped"]
    assert skipped, "the corpus holds broken files: something must be skipped"
    for record in skipped:
        _check_record(record)
        assert record["path"] in str(record["message"]) or any(
            str(i.make()).strip() in str(record["message"])
            for i in (*probe_plan.values(), *decode_plan.values())
        ), record
    failed_total = sum(s["failed"] for s in report["stages"].values())
    assert len(skipped) == failed_total, "every counted failure has a ledger record"
    assert report["samples"] == sum(len(b["keys"]) for b in batches)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(message=messages, reason=st.sampled_from(["bad_clip", "too_dark"]))
@example(message="", reason="bad_clip")
@example(message="   ", reason="too_dark")
def test_sample_error_message_is_never_blank(message: str, reason: str) -> None:
    """Feature: wan-training-pipeline-fixes, Property 3: diagnostic completeness

    A SampleError of any text still gives a Failed with a non-blank cause.

    Whatever text a stage function's SampleError carries, the Failed it becomes must name the
    file (or at least carry a non-blank cause).
    """
    source = Source(key="c/a.mp4", path="/data/c/a.mp4", media_type="video")

    def fail(item: Source) -> list[Source]:
        raise SampleError(message, reason=reason)

    (out,) = map_stage([source], fail, stage="filter", accepts=Source, policy=fast_policy())
    assert isinstance(out, Failed)
    assert out.message.strip(), f"blank message for SampleError({message!r})"
    assert source.path in out.message or message in out.message
