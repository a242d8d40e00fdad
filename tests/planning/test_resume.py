"""Exact mid-epoch resume and multi-rank runs: the bucket issue's guarantees end to end."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from media import Corpus

from wan_data import ConfigError, WanVideoDataset

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning"),
]

OPTIONS: dict[str, Any] = {
    "frames": [17, 33],
    "fps": 16,
    "resolution": (64, 64),
    "batch_size": 2,
    "seed": 5,
    "sampling": "random",
    "crop": "random",
}


def fingerprint(batch: dict[str, Any]) -> tuple[Any, ...]:
    digest = hashlib.sha256(batch["pixels"].numpy().tobytes()).hexdigest()[:16]
    return (batch["epoch"], batch["position"], tuple(batch["keys"]), digest)


def loader_kwargs(workers: int) -> dict[str, Any]:
    return {"num_workers": workers, "timeout": 120 if workers else 0}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("workers", [0, 2])
def test_resume_after_batch_k_gives_exactly_the_rest(corpus: Corpus, workers: int) -> None:
    reference_ds = WanVideoDataset(corpus.root, **OPTIONS)
    reference_ds.set_epoch(1)
    reference = [fingerprint(b) for b in reference_ds.loader(**loader_kwargs(workers))]
    assert len(reference) >= 6
    for k in (0, 2, len(reference) - 2):
        first = WanVideoDataset(corpus.root, **OPTIONS)
        first.set_epoch(1)
        seen = []
        for batch in first.loader(**loader_kwargs(workers)):
            seen.append(fingerprint(batch))
            if len(seen) == k + 1:
                break  # interrupted after batch k
        state = first.state_dict()
        assert state["position"] == k + 1 and state["epoch"] == 1
        assert len(json.dumps(state)) < 1500  # small, whatever the dataset size
        resumed = WanVideoDataset(corpus.root, **OPTIONS)
        resumed.load_state_dict(state)
        rest = [fingerprint(b) for b in resumed.loader(**loader_kwargs(workers))]
        assert seen + rest == reference, f"k={k}"


def test_replaced_samples_are_the_same_after_resume(corpus: Corpus) -> None:
    ds = WanVideoDataset(corpus.root, **OPTIONS)
    batches = list(ds.loader(num_workers=0))
    replaced = [b["position"] for b in batches if b["replaced"]]
    assert replaced, "the corpus' damaged file should force a replacement"
    k = replaced[0]
    again = WanVideoDataset(corpus.root, **OPTIONS)
    again.load_state_dict({**ds.state_dict(), "epoch": 0, "position": k})
    rest = list(again.loader(num_workers=0))
    assert [fingerprint(b) for b in rest] == [fingerprint(b) for b in batches[k:]]
    assert rest[0]["replaced"] == batches[k]["replaced"] > 0


def test_state_from_a_plain_dataloader_needs_the_last_batch(corpus: Corpus) -> None:
    ds = WanVideoDataset(corpus.root, **OPTIONS)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, timeout=120)
    it = iter(loader)
    first = next(it)
    del it
    with pytest.raises(RuntimeError, match="last_batch"):
        ds.state_dict()
    state = ds.state_dict(last_batch=first)
    assert (state["epoch"], state["position"]) == (0, 1)


def test_state_of_another_dataset_is_refused_unless_allowed(corpus: Corpus, tmp_path: Path) -> None:
    ds = WanVideoDataset(corpus.root, **OPTIONS)
    next(iter(ds.loader(num_workers=0)))
    state = ds.state_dict()
    other = WanVideoDataset(corpus.root, **{**OPTIONS, "batch_size": 3})
    with pytest.raises(ConfigError, match="fingerprint"):
        other.load_state_dict(state)
    fewer = tmp_path / "fewer"
    shutil.copytree(corpus.root / "good", fewer)
    changed = WanVideoDataset(fewer, **OPTIONS)
    with pytest.raises(ConfigError, match="allow_mismatch"):
        changed.load_state_dict(state)
    changed.load_state_dict(state, allow_mismatch=True)
    assert next(b["position"] for b in changed.loader(num_workers=0)) == 1
    with pytest.raises(ConfigError, match="world_size"):
        WanVideoDataset(corpus.root, **OPTIONS, rank=0, world_size=2).load_state_dict(state)


def test_resume_position_reaches_persistent_workers(corpus: Corpus) -> None:
    ds = WanVideoDataset(corpus.root, **OPTIONS)
    loader = ds.loader(num_workers=2, persistent_workers=True, timeout=120)
    full = [fingerprint(b) for b in loader]
    ds.load_state_dict({**ds.state_dict(), "epoch": 0, "position": 3})
    assert [fingerprint(b) for b in loader] == full[3:]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("workers", [0, 2])
def test_two_ranks_get_equal_disjoint_batches(corpus: Corpus, tmp_path: Path, workers: int) -> None:
    """Two gloo processes over a corpus with ~15% broken files: no hang, equal batch counts."""
    import torch.multiprocessing as mp
    from dist_worker import rank_main

    root = tmp_path / "data"
    root.mkdir()
    for spec in corpus.by_kind("good", "image"):
        for copy in range(2):
            src = corpus.path(spec.name)
            shutil.copy(src, root / f"{copy}_{src.name}")
    for name in ("broken/garbage.mp4", "broken/empty.mp4", "broken/notes.mp4"):
        shutil.copy(corpus.path(name), root / Path(name).name)
    out = tmp_path / "out"
    out.mkdir()
    context = mp.start_processes(
        rank_main,
        args=(2, str(root), str(out), str(tmp_path / "init"), workers),
        nprocs=2,
        join=False,
        start_method="spawn",
    )
    import time

    deadline = time.monotonic() + 400
    while not context.join(timeout=5):
        assert time.monotonic() < deadline, "a rank hung"
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["len"] == ranks[1]["len"] == len(ranks[0]["positions"])
    assert len(ranks[1]["positions"]) == len(ranks[0]["positions"]) > 0
    for r in ranks:
        assert r["positions"] == list(range(len(r["positions"])))
        assert set(r["sizes"]) == {2}
    keys = [k for r in ranks for keys in r["keys"] for k in keys]
    assert set(keys) == set(ranks[0]["samples"])  # every good sample, once per epoch at least
    rank_sets = [
        {k for keys, pad in zip(r["keys"], r["padding"], strict=True) if not pad for k in keys}
        for r in ranks
    ]
    shared = rank_sets[0] & rank_sets[1]
    # only fillers of small buckets may appear on both ranks
    assert len(shared) <= 2 * len({k.split("#")[0] for k in shared})
    # report(all_ranks=True): every rank gets the same totals; iteration counts add up over
    # ranks, construction counts (identical on every rank) are counted once.
    local, total = [r["local"] for r in ranks], ranks[0]["all"]
    assert ranks[1]["all"] == total
    assert total["batches"] == local[0]["batches"] + local[1]["batches"] == 2 * ranks[0]["len"]
    assert total["samples"] == local[0]["samples"] + local[1]["samples"]
    assert total["decode_in"] == local[0]["decode_in"] + local[1]["decode_in"]
    assert total["probe_in"] == local[0]["probe_in"] == local[1]["probe_in"]
    setup_skips = [s for s in local[0]["skipped"] if s[1] != "decode"]
    assert [s for s in total["skipped"] if s[1] != "decode"] == setup_skips
    assert total["processes"] == local[0]["processes"] + local[1]["processes"]


# --- epochs advance by themselves; end-of-epoch states; what a refusal says -----------------


def _small(corpus: Corpus, tmp_path: Path) -> Path:
    root = tmp_path / "small"
    root.mkdir()
    for name in ("good/h264_landscape.mp4", "good/vp9_square.webm", "images/landscape.png"):
        shutil.copy(corpus.path(name), root / Path(name).name)
    return root


@pytest.mark.parametrize("workers", [0, 2])
def test_a_plain_dataloader_loop_advances_the_epoch(
    corpus: Corpus, tmp_path: Path, workers: int
) -> None:
    ds = WanVideoDataset(_small(corpus, tmp_path), **{**OPTIONS, "batch_size": 1})
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=workers, timeout=120 if workers else 0
    )
    epochs = [sorted({int(b["epoch"]) for b in loader}) for _ in range(3)]
    assert epochs == [[0], [1], [2]]
    assert ds.epoch == 2 and ds.next_epoch() == 3
    ds.set_epoch(0)  # an explicit choice wins, and later passes go on from it
    assert [sorted({int(b["epoch"]) for b in loader}) for _ in range(2)] == [[0], [1]]
    # Every batch of one pass has the same epoch, whatever worker made it.
    again = [fingerprint(b) for b in loader]
    assert {f[0] for f in again} == {2}


def test_persistent_workers_advance_the_epoch_too(corpus: Corpus, tmp_path: Path) -> None:
    ds = WanVideoDataset(_small(corpus, tmp_path), **{**OPTIONS, "batch_size": 1})
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=2, persistent_workers=True, timeout=120
    )
    assert [sorted({int(b["epoch"]) for b in loader}) for _ in range(3)] == [[0], [1], [2]]
    via = ds.loader(num_workers=2, persistent_workers=True, timeout=120)
    assert [sorted({int(b["epoch"]) for b in via}) for _ in range(2)] == [[3], [4]]


def test_a_state_saved_after_the_last_batch_resumes_at_the_next_epoch(
    corpus: Corpus, tmp_path: Path
) -> None:
    root = _small(corpus, tmp_path)
    ds = WanVideoDataset(root, **{**OPTIONS, "batch_size": 1})
    epoch0 = [fingerprint(b) for b in ds.loader(num_workers=0)]
    state = ds.state_dict()
    assert (state["epoch"], state["position"]) == (1, 0)
    # A state recorded as "position = number of batches" (an older version) is read the same.
    resumed = WanVideoDataset(root, **{**OPTIONS, "batch_size": 1})
    resumed.load_state_dict({**state, "epoch": 0, "position": len(epoch0)})
    rest = [fingerprint(b) for b in resumed.loader(num_workers=0)]
    assert rest and {f[0] for f in rest} == {1}
    reference = WanVideoDataset(root, **{**OPTIONS, "batch_size": 1})
    reference.set_epoch(1)
    assert rest == [fingerprint(b) for b in reference.loader(num_workers=0)]


def test_a_refused_state_says_which_options_and_sources_changed(
    corpus: Corpus, tmp_path: Path
) -> None:
    root = _small(corpus, tmp_path)
    index = tmp_path / "index"
    opts = {**OPTIONS, "batch_size": 1, "sample_index": index}
    ds = WanVideoDataset(root, **opts)
    next(iter(ds.loader(num_workers=0)))
    state = ds.state_dict()
    with pytest.raises(ConfigError) as info:
        WanVideoDataset(root, **{**opts, "batch_size": 2, "crop": "center"}).load_state_dict(state)
    message = str(info.value)
    assert "options changed: batch_size 1 -> 2, decode.crop 'random' -> 'center'" in message
    assert "sources:" not in message
    # Remove one source, add two, change one (another length): counted exactly.
    (root / "vp9_square.webm").unlink()
    shutil.copy(corpus.path("good/mpeg4_4x3.avi"), root / "new_a.avi")
    shutil.copy(corpus.path("images/square.webp"), root / "new_b.webp")
    shutil.copy(corpus.path("good/h264_vfr.mp4"), root / "h264_landscape.mp4")
    with pytest.raises(ConfigError) as info:
        WanVideoDataset(root, **opts).load_state_dict(state)
    assert "sources: 2 added, 1 removed, 1 changed (3 then, 4 now)" in str(info.value)
    assert "options changed" not in str(info.value)
    # Without the sketch file, the counts.
    for sketch in index.glob("state-*.sources.npz"):
        sketch.unlink()
    with pytest.raises(ConfigError, match=r"sources: 3 then, 4 now"):
        WanVideoDataset(root, **opts).load_state_dict(state)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ranks_that_see_different_files_fail_together_instead_of_hanging(
    corpus: Corpus, tmp_path: Path
) -> None:
    """A file present on one rank only (a shared folder still syncing) gives that rank another
    plan; the loader's first batch raises RankMismatchError on every rank, naming the counts."""
    import time

    import torch.multiprocessing as mp
    from dist_worker import mismatch_main

    good = [corpus.path(spec.name) for spec in corpus.by_kind("good")][:3]
    roots = [tmp_path / "rank0", tmp_path / "rank1"]
    for root in roots:
        root.mkdir()
        for src in good[:2]:
            shutil.copy(src, root / src.name)
    shutil.copy(good[2], roots[1] / good[2].name)  # rank 1 sees one file more
    out = tmp_path / "out"
    out.mkdir()
    context = mp.start_processes(
        mismatch_main,
        args=(2, [str(r) for r in roots], str(out), str(tmp_path / "init")),
        nprocs=2,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + 240
    while not context.join(timeout=5):
        assert time.monotonic() < deadline, "a rank hung"
    results = [json.loads((out / f"mismatch{r}.json").read_text()) for r in (0, 1)]
    assert results[0]["samples"] + 1 == results[1]["samples"]
    for result in results:
        error = result["error"]
        assert error is not None and "must be the same on every rank" in error
        assert f"rank 0: {results[0]['samples']} samples" in error
        assert f"rank 1: {results[1]['samples']} samples" in error
        assert error.endswith("[stage=plan]")
