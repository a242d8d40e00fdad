"""The construction snapshot: a warm start equals a cold one, and any change forces a cold one."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from media import make_video

import wan_data.index.sample_index as sample_index
from wan_data import WanVideoDataset
from wan_data.index.sample_index import ProbedTable, SampleTable, SourceTable

pytestmark = pytest.mark.integration

OPTIONS: dict[str, Any] = {
    "frames": [5, 9],
    "fps": 8,
    "resolution": (32, 32),
    "batch_size": 2,
    "seed": 1,
}
OLD = time.time() - 3600  # files older than the racy window, as a real dataset's are


def _age(*paths: Path) -> None:
    for path in paths:
        os.utime(path, (OLD, OLD))


def _dataset_folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    make_video(root / "a.mp4", width=48, height=32, fps=8, num_frames=12)
    make_video(root / "b.mp4", width=32, height=48, fps=8, num_frames=12)
    make_video(root / "sub" / "c.mp4", width=32, height=32, fps=8, num_frames=12)
    (root / "a.txt").write_text("a red car\nthe car, red")
    (root / "sub" / "c.txt").write_text("a cat")
    (root / "broken.mp4").write_bytes(b"not a video")
    _age(*root.rglob("*"), root)
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return _dataset_folder(tmp_path / "data")


def _make(folder: Path, tmp_path: Path, **extra: Any) -> WanVideoDataset:
    return WanVideoDataset(folder, **OPTIONS, sample_index=tmp_path / "index", **extra)


def _summary(ds: WanVideoDataset) -> dict[str, Any]:
    return {
        "sources": [(s.key, s.path, s.captions, s.media_type) for s in ds.sources],
        "probed": [(p.key, p.metadata, p.warnings) for p in ds.probed],
        "samples": [(s.key, s.clip_index, s.bucket) for s in ds.samples],
        "fingerprint": ds.fingerprint,
        "skipped": sorted((r["path"], r["stage"], r["reason"]) for r in ds.report()["skipped"]),
        "buckets": ds.bucket_report(),
        "plan": [(b.members, b.bucket) for b in ds.plan().batches],
    }


def _epoch(ds: WanVideoDataset, workers: int = 0) -> list[tuple[Any, ...]]:
    out = []
    for batch in ds.loader(num_workers=workers, timeout=120 if workers else 0):
        digest = hashlib.sha256(batch["pixels"].numpy().tobytes()).hexdigest()
        out.append((tuple(batch["keys"]), tuple(batch["captions"]), digest))
    return out


def test_a_warm_start_equals_a_cold_one(folder: Path, tmp_path: Path) -> None:
    cold = _make(folder, tmp_path)
    assert isinstance(cold.samples, list)
    assert len(list((tmp_path / "index").glob("*.npz"))) == 1
    warm = _make(folder, tmp_path)
    assert isinstance(warm.samples, SampleTable)
    assert isinstance(warm.sources, SourceTable) and isinstance(warm.probed, ProbedTable)
    assert _summary(warm) == _summary(cold)
    assert _epoch(warm) == _epoch(cold)
    assert _epoch(warm, workers=2) == _epoch(cold)
    state = cold.state_dict()
    warm.load_state_dict(state)  # same fingerprint: a resume across a warm start is accepted


def test_tables_behave_like_lists(folder: Path, tmp_path: Path) -> None:
    cold = _make(folder, tmp_path)
    warm = _make(folder, tmp_path)
    assert isinstance(warm.samples, SampleTable)
    n = len(cold.samples)
    assert len(warm.samples) == n
    assert warm.samples[-1].key == cold.samples[-1].key
    assert [s.key for s in warm.samples[1:]] == [s.key for s in cold.samples[1:]]
    with pytest.raises(IndexError):
        warm.samples[n]
    assert warm.samples.buckets == [s.bucket for s in cold.samples]


@pytest.mark.parametrize(
    "change",
    [
        "touch_source",
        "edit_caption_skip_mode",
        "add_file",
        "add_caption",
        "remove_file",
        "add_file_in_subfolder",
        "fix_broken_file",
        "other_options",
        "recent_change",
        "damaged_index",
    ],
)
def test_any_change_means_a_cold_start(
    folder: Path, tmp_path: Path, change: str, caplog: pytest.LogCaptureFixture
) -> None:
    options: dict[str, Any] = {}
    if change == "edit_caption_skip_mode":
        # with missing_caption="skip" an emptied caption removes the file: checked up front
        options = {"missing_caption": "skip"}
    cold = _make(folder, tmp_path, **options)
    assert isinstance(_make(folder, tmp_path, **options).samples, SampleTable)
    if change == "touch_source":
        os.utime(folder / "a.mp4", (OLD + 10, OLD + 10))
    elif change == "edit_caption_skip_mode":
        (folder / "a.txt").write_text("")  # in place: the folder's mtime stays
        os.utime(folder / "a.txt", (OLD + 5, OLD + 5))
    elif change == "add_file":
        make_video(folder / "d.mp4", width=32, height=32, fps=8, num_frames=12)
        _age(folder / "d.mp4", folder)
        os.utime(folder, (OLD + 5, OLD + 5))
    elif change == "add_caption":
        (folder / "b.txt").write_text("a bee")
        _age(folder / "b.txt")
        os.utime(folder, (OLD + 5, OLD + 5))
    elif change == "remove_file":
        (folder / "b.mp4").unlink()
        os.utime(folder, (OLD + 5, OLD + 5))
    elif change == "add_file_in_subfolder":
        make_video(folder / "sub" / "e.mp4", width=32, height=32, fps=8, num_frames=12)
        _age(folder / "sub" / "e.mp4")
        os.utime(folder / "sub", (OLD + 5, OLD + 5))
    elif change == "fix_broken_file":
        make_video(folder / "broken.mp4", width=32, height=32, fps=8, num_frames=12)
        os.utime(folder / "broken.mp4", (OLD + 5, OLD + 5))
    elif change == "other_options":
        options = {"missing_caption": "filename"}
    elif change == "recent_change":
        os.utime(folder / "b.mp4")  # now: within the racy window of any snapshot
    elif change == "damaged_index":
        index = next((tmp_path / "index").glob("*.npz"))
        index.write_bytes(index.read_bytes()[:100])
    with caplog.at_level(logging.INFO, logger="wan_data"):
        again = _make(folder, tmp_path, **options)
    assert isinstance(again.samples, list), change
    assert not any("from the sample index" in r.getMessage() for r in caplog.records)
    fresh = WanVideoDataset(folder, **OPTIONS, **options, sample_index=None)
    assert _summary(again) == _summary(fresh)
    if change in ("edit_caption_skip_mode", "add_caption"):
        assert _summary(again)["sources"] != _summary(cold)["sources"]


@pytest.mark.parametrize("edit", ["rewrite", "empty", "delete_after_start"])
def test_a_caption_edited_in_place_is_read_when_its_sample_is_built(
    folder: Path, tmp_path: Path, edit: str
) -> None:
    """With missing_caption "empty" (the default) a caption shapes only the caption, so the
    snapshot stays valid and the sample gets the file's current text, as collect would read it."""
    _make(folder, tmp_path)
    caption = folder / "a.txt"
    if edit == "delete_after_start":
        warm = _make(folder, tmp_path)
        caption.unlink()
        expected: tuple[str, ...] = ()  # as collect gives a file without a caption
    else:
        if edit == "rewrite":
            caption.write_text("a blue car\nblue, a car")
            expected = ("a blue car", "blue, a car")
            os.utime(caption, (OLD + 5, OLD + 5))
        else:
            caption.write_text("   \n")
            expected = ()
            os.utime(caption, (OLD + 5, OLD + 5))
        warm = _make(folder, tmp_path)
    assert isinstance(warm.samples, SampleTable)
    source = next(s for s in warm.sources if s.path.endswith("a.mp4"))
    assert source.captions == expected
    if edit != "delete_after_start":
        fresh = WanVideoDataset(folder, **OPTIONS, sample_index=None)
        cold_source = next(s for s in fresh.sources if s.path.endswith("a.mp4"))
        assert cold_source.captions == expected
    batches = list(warm.loader(num_workers=0))
    got = {p: c for b in batches for p, c in zip(b["paths"], b["captions"], strict=True)}
    assert got[str(folder / "a.mp4")] in ([*expected] or [""])


def test_a_snapshot_is_not_saved_while_files_are_fresh(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    make_video(root / "a.mp4", width=32, height=32, fps=8, num_frames=12)
    _make(root, tmp_path)  # a.mp4 was written a moment ago: racy
    assert not list((tmp_path / "index").glob("*.npz"))
    _age(root / "a.mp4", root)
    _make(root, tmp_path)
    assert len(list((tmp_path / "index").glob("*.npz"))) == 1


def test_default_location_and_disabling(folder: Path, tmp_path: Path) -> None:
    meta = tmp_path / "meta.jsonl"
    WanVideoDataset(folder, **OPTIONS, metadata_cache=meta)
    assert len(list(Path(f"{meta}.samples").glob("*.npz"))) == 1
    ds = WanVideoDataset(folder, **OPTIONS, metadata_cache=meta)
    assert isinstance(ds.samples, SampleTable)
    off = WanVideoDataset(folder, **OPTIONS, metadata_cache=meta, sample_index=None)
    assert isinstance(off.samples, list)
    retry = WanVideoDataset(folder, **OPTIONS, metadata_cache=meta, retry_failed=True)
    assert isinstance(retry.samples, list)  # known-bad files must really be tried again


def test_the_index_holds_no_pickle(folder: Path, tmp_path: Path) -> None:
    import numpy as np

    _make(folder, tmp_path)
    index = next((tmp_path / "index").glob("*.npz"))
    with np.load(index, allow_pickle=False) as data:
        names = set(data.files)
        assert all(data[n].dtype != object for n in names)
    header = json.loads(bytes(np.load(index)["header"].tobytes()).decode())
    assert header["format"] == sample_index.INDEX_FORMAT
    assert str(folder / "sub") in header["folders"]


def test_warm_start_serves_the_cache(folder: Path, tmp_path: Path) -> None:
    from vae_fixtures import make_tiny_wan21_vae

    vae = make_tiny_wan21_vae(tmp_path / "vae")
    options = {**OPTIONS, "vae": vae, "cache_dir": tmp_path / "cache", "device": "cpu"}
    cold = WanVideoDataset(folder, **options)
    cold.prepare(num_workers=0, progress=False)
    warm = WanVideoDataset(folder, **options)
    assert isinstance(warm.samples, SampleTable)
    a = [b["latents"] for b in cold.loader(num_workers=0)]
    b = [b["latents"] for b in warm.loader(num_workers=0)]
    assert len(a) == len(b) > 0 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_spawned_workers_receive_the_tables(folder: Path, tmp_path: Path) -> None:
    cold = _make(folder, tmp_path)
    warm = _make(folder, tmp_path)
    assert isinstance(warm.samples, SampleTable)
    loader = warm.loader(num_workers=2, multiprocessing_context="spawn", timeout=120)
    got = sorted(k for batch in loader for k in batch["keys"])
    assert got == sorted(k for batch in cold.loader(num_workers=0) for k in batch["keys"])
