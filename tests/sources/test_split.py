"""The validation split: disjoint sides, repeats together, stable keys, config errors."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from media import make_video

from wan_data import ConfigError, WanVideoDataset
from wan_data.config import DatasetConfig
from wan_data.failures.breaker import FILTER_REASONS
from wan_data.failures.mechanism import StageContext
from wan_data.items import Failed, Source
from wan_data.sources.concepts import Concept
from wan_data.sources.split import (
    OTHER_SPLIT_REASON,
    SplitSources,
    base_key,
    split_value,
    val_keys,
)
from wan_data.tools.scan import scan_dataset

OPTIONS: dict[str, Any] = {"frames": [5], "fps": 8, "resolution": (32, 32), "seed": 1}
NAMES = [f"v{i}.mp4" for i in range(8)]


def _seed_with_both_sides(keys: list[str], fraction: float) -> int:
    """The first split seed that puts at least one key on each side (so the test means it)."""
    for seed in range(100):
        held = val_keys(keys, fraction=fraction, seed=seed)
        if 0 < len(held) < len(keys):
            return seed
    raise AssertionError("no seed splits the keys")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("split") / "clips"
    root.mkdir()
    for name in NAMES:
        make_video(root / name, width=32, height=32, fps=8, num_frames=8)
    old = time.time() - 3600  # the sample index is saved only over files not changing now
    for path in [*root.iterdir(), root]:
        os.utime(path, (old, old))
    return root


def _source_keys(ds: WanVideoDataset) -> set[str]:
    return {s.key for s in ds.probed}


@pytest.mark.integration
@pytest.mark.parametrize("mode", [{"val_fraction": 0.5}, {"val_count": 3}])
def test_train_and_val_are_disjoint_and_cover_every_source(
    data: Path, mode: dict[str, Any]
) -> None:
    keys = [f"clips/{n}" for n in NAMES]
    seed = _seed_with_both_sides(keys, 0.5) if "val_fraction" in mode else 0
    every = _source_keys(WanVideoDataset(data, **OPTIONS))
    train = WanVideoDataset(data, **OPTIONS, **mode, split="train", split_seed=seed)
    val = WanVideoDataset(data, **OPTIONS, **mode, split="val", split_seed=seed)
    assert _source_keys(train) and _source_keys(val)
    assert _source_keys(train) & _source_keys(val) == set()
    assert _source_keys(train) | _source_keys(val) == every == set(keys)
    if "val_count" in mode:
        assert len(_source_keys(val)) == 3
    # The other side is recorded as a filter-like skip of stage "split", never probed.
    for ds, other in ((train, val), (val, train)):
        skipped = [r for r in ds.report()["skipped"] if r["stage"] == "split"]
        assert {r["key"] for r in skipped} == _source_keys(other)
        assert {r["reason"] for r in skipped} == {OTHER_SPLIT_REASON}
    held = [r for r in train.report()["skipped"] if r["stage"] == "split"]
    assert "held out for the val split" in held[0]["message"]


@pytest.mark.integration
def test_the_sample_index_keys_on_the_split(data: Path, tmp_path: Path) -> None:
    index = {"sample_index": tmp_path / "samples"}
    seed = _seed_with_both_sides([f"clips/{n}" for n in NAMES], 0.5)
    split = {"val_fraction": 0.5, "split_seed": seed}
    everything = WanVideoDataset(data, **OPTIONS, **index)
    train = WanVideoDataset(data, **OPTIONS, **index, **split, split="train")
    val = WanVideoDataset(data, **OPTIONS, **index, **split, split="val")
    again = WanVideoDataset(data, **OPTIONS, **index, **split, split="val")  # warm
    assert len(everything.probed) == len(NAMES)
    assert _source_keys(train).isdisjoint(_source_keys(val))
    assert _source_keys(again) == _source_keys(val)
    assert len(list((tmp_path / "samples").glob("*.npz"))) == 3


@pytest.mark.integration
def test_the_scan_reports_the_other_split(data: Path) -> None:
    report = scan_dataset(data, **OPTIONS, val_count=2, split="val", progress=False)
    reasons = [r.reason for r in report.rows]
    assert reasons.count(OTHER_SPLIT_REASON) == len(NAMES) - 2
    assert reasons.count(None) == 2


def _source(key: str, repeat: int = 0) -> Source:
    return Source(
        key=key if repeat == 0 else f"{key}@{repeat}",
        path=f"/data/{key}",
        media_type="video",
        repeat=repeat,
    )


def test_repeats_of_one_file_stay_on_one_side() -> None:
    sources = [_source(f"dog/{i}.mp4", r) for i in range(40) for r in range(3)]
    assert base_key(sources[2]) == "dog/0.mp4" and sources[2].key == "dog/0.mp4@2"
    for split in ("train", "val"):
        stage = SplitSources.for_sources(sources, split=split, fraction=0.3, seed=7)
        out = list(stage(sources, StageContext()))
        kept = {base_key(s) for s in out if isinstance(s, Source)}
        dropped = {o.key.split("@")[0] for o in out if isinstance(o, Failed)}
        assert kept and dropped and kept.isdisjoint(dropped)
        for key in kept:  # every repeat kept together
            assert sum(1 for s in out if isinstance(s, Source) and base_key(s) == key) == 3


def test_a_file_named_with_an_at_sign_keeps_its_key() -> None:
    assert base_key(_source("c/a@1.mp4")) == "c/a@1.mp4"
    assert base_key(_source("c/a@1.mp4", 1)) == "c/a@1.mp4"


def test_count_takes_the_smallest_hashes_and_is_deterministic() -> None:
    keys = [f"k{i}" for i in range(50)]
    held = val_keys(keys, count=5, seed=3)
    assert held == val_keys(reversed(keys), count=5, seed=3)
    ranked = sorted(keys, key=lambda k: split_value(k, 3))
    assert held == set(ranked[:5])
    assert val_keys(keys, count=100) == set(keys)
    assert val_keys(keys, count=5, seed=4) != held  # the seed matters


def test_other_split_is_a_filter_reason_of_the_breaker() -> None:
    assert OTHER_SPLIT_REASON in FILTER_REASONS
    sources = [_source(f"a/{i}.mp4") for i in range(200)]
    stage = SplitSources.for_sources(sources, split="val", fraction=0.05)
    out = list(stage(sources, StageContext()))  # ~95% dropped: the breaker stays closed
    assert sum(isinstance(o, Failed) for o in out) > 150


def test_split_all_passes_everything() -> None:
    sources = [_source(f"a/{i}.mp4") for i in range(10)]
    stage = SplitSources.for_sources(sources, split="all", fraction=0.5)
    assert list(stage(sources, StageContext())) == sources


@pytest.mark.parametrize(
    ("given", "names"),
    [
        ({"split": "val"}, ["val_fraction", "val_count"]),
        ({"split": "train"}, ["val_fraction", "val_count"]),
        ({"split": "test", "val_fraction": 0.1}, ["split"]),
        ({"val_fraction": 1.0}, ["val_fraction"]),
        ({"val_fraction": -0.1}, ["val_fraction"]),
        ({"val_count": -1}, ["val_count"]),
        ({"val_count": 1.5}, ["val_count"]),
        ({"split_seed": "x"}, ["split_seed"]),
        ({"val_fraction": 0.1, "val_count": 2}, ["val_fraction", "val_count"]),
    ],
)
def test_config_errors_name_the_options(given: dict[str, Any], names: list[str]) -> None:
    with pytest.raises(ConfigError) as raised:
        DatasetConfig.build(**given)
    for name in names:
        assert name in str(raised.value)


def test_valid_split_options_build() -> None:
    config = DatasetConfig.build(split="val", val_count=3, split_seed=9)
    assert (config.sources.split, config.sources.val_count) == ("val", 3)
    assert DatasetConfig.build(val_fraction=0.2).sources.split == "all"  # holds nothing out


@pytest.mark.integration
def test_concept_repeats_through_construction(data: Path) -> None:
    concept = Concept(root=data, repeats=2, name="rep")
    seed = _seed_with_both_sides([f"rep/{n}" for n in NAMES], 0.5)
    train = WanVideoDataset([concept], **OPTIONS, val_fraction=0.5, split_seed=seed, split="train")
    keys = {s.key for s in train.probed}
    bases = {k.split("@")[0] for k in keys}
    assert keys == bases | {f"{b}@1" for b in bases}


@pytest.mark.integration
def test_a_val_count_covering_every_source_warns_that_train_is_empty(
    data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="wan_data"):
        train = WanVideoDataset(data, **OPTIONS, val_count=len(NAMES), split="train")
    assert not train.samples
    (message,) = [r.getMessage() for r in caplog.records if "split of" in r.getMessage()]
    assert f"train split of {len(NAMES)} source(s) by val_count ({len(NAMES)})" in message
    assert "lower val_count" in message
