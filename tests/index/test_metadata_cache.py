"""MetadataCache: reuse only while size and mtime hold; survive garbage; atomic saves."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from media import Corpus

from wan_data.failures.mechanism import StageContext
from wan_data.failures.policy import ErrorPolicy
from wan_data.index.metadata_cache import MetadataCache
from wan_data.items import Failed, Source, VideoMetadata
from wan_data.stages.probe import ProbeLimits, probe

META = VideoMetadata(
    width=64, height=48, fps=24.0, duration=2.0, frame_count=48, format="mp4", codec="h264"
)


def test_hit_only_while_size_and_mtime_hold(tmp_path: Path) -> None:
    f = tmp_path / "a.mp4"
    f.write_bytes(b"x" * 10)
    cache = MetadataCache()
    cache.put(str(f), META)
    assert cache.get(str(f)) == META
    os.utime(f, ns=(1, 1))  # mtime changed
    assert cache.get(str(f)) is None
    cache.put(str(f), META)
    f.write_bytes(b"x" * 11)  # size changed (and mtime)
    assert cache.get(str(f)) is None
    assert cache.get(str(tmp_path / "missing.mp4")) is None
    assert (cache.hits, cache.misses) == (1, 2)  # a vanished file is neither


def test_saved_cache_is_reloaded_and_bad_lines_are_ignored(tmp_path: Path) -> None:
    f = tmp_path / "a.mp4"
    f.write_bytes(b"x")
    store = tmp_path / "index" / "metadata.jsonl"
    cache = MetadataCache(store)
    cache.put(str(f), META)
    cache.save()
    assert not list(store.parent.glob(".metadata-*"))  # no temp file left
    with open(store, "a") as fh:
        fh.write("{not json\n")
        fh.write(json.dumps({"format": 999, "path": "x"}) + "\n")
    again = MetadataCache(store)
    assert len(again) == 1
    assert again.get(str(f)) == META


def test_save_without_changes_writes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "metadata.jsonl"
    MetadataCache(store).save()
    assert not store.exists()


@pytest.mark.parametrize("threads", [1, 3])
def test_probe_uses_the_cache_and_keeps_order(corpus: Corpus, tmp_path: Path, threads: int) -> None:
    sources = [
        Source(key=spec.name, path=str(corpus.path(spec.name)), media_type="video")
        for spec in corpus.by_kind("good", "broken", "damaged")
        if not spec.name.endswith("folder.mp4")
    ]
    store = tmp_path / "meta.jsonl"
    first_ctx = StageContext()
    cache = MetadataCache(store)
    first = list(
        probe(
            sources,
            policy=ErrorPolicy(backoff_seconds=0),
            context=first_ctx,
            limits=ProbeLimits(),
            threads=threads,
            cache=cache,
        )
    )
    assert [o.key for o in first] == [s.key for s in sources]  # input order, whatever the threads
    assert first_ctx.metrics.stages["probe"].items_in == len(sources)
    cache.save()
    probed = [o for o in first if not isinstance(o, Failed)]
    warm = MetadataCache(store)
    assert len(warm) == len(probed) + 1  # + the truncated file: it probes, then fails validation
    second = list(
        probe(
            sources,
            policy=ErrorPolicy(backoff_seconds=0),
            limits=ProbeLimits(),
            threads=threads,
            cache=warm,
        )
    )
    assert second == first
    assert warm.hits == len(probed) + 1
