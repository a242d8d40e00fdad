"""The text-embedding cache end to end: prepare() encodes every caption once, batches carry
text_embeds/text_lens equal to diffusers', caption dropout is seeded, stale or corrupt entries
are never served."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from conditioning_fixtures import make_text_reference_pipeline, make_tiny_text_encoder
from media import make_video
from vae_fixtures import make_tiny_wan21_vae

from wan_data import WanVideoDataset
from wan_data.conditioning.text_cache import TextSpec, chosen_caption, text_key
from wan_data.latents.prepare import CacheIncompleteError
from wan_data.latents.store import LatentCache
from wan_data.stages.decode import DecodeOptions

pytestmark = pytest.mark.integration

CAPTIONS = {
    "a.mp4": "a quick brown fox jumps over the lazy dog",
    "b.mp4": "the red cat runs\nTom &amp;amp; Jerry under the blue sky",  # two candidates
    "c.mp4": "  the   sea ,  café  ",
    "d.mp4": "",  # no caption: trains with the empty caption's embedding
}


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("text_data")
    for i, (name, caption) in enumerate(CAPTIONS.items()):
        make_video(root / name, width=64, height=64, fps=8, num_frames=12 + i)
        if caption:
            (root / name).with_suffix(".txt").write_text(caption, encoding="utf-8")
    models = tmp_path_factory.mktemp("text_models")
    return {
        "data": root,
        "vae": make_tiny_wan21_vae(models / "vae"),
        "text": make_tiny_text_encoder(models / "umt5"),
    }


def _options(parts: dict[str, Path], cache: Path, **extra: Any) -> dict[str, Any]:
    return {
        "frames": [5],
        "fps": 8,
        "resolution": (64, 64),
        "batch_size": 2,
        "device": "cpu",
        "latent_dtype": torch.float32,
        "vae": parts["vae"],
        "cache_dir": cache,
        "text_encoder": parts["text"],
        "text_dtype": torch.float32,
        **extra,
    }


def _reference(parts: dict[str, Path], caption: str) -> torch.Tensor:
    pipe = make_text_reference_pipeline(parts["text"])
    with torch.no_grad():  # as the pipeline's own __call__ runs it
        embeds, _ = pipe.encode_prompt(
            caption,
            do_classifier_free_guidance=False,
            max_sequence_length=512,
            device="cpu",
            dtype=torch.float32,
        )
    return embeds[0]


def test_batches_carry_the_embeddings_diffusers_computes(
    parts: dict[str, Path], tmp_path: Path
) -> None:
    ds = WanVideoDataset(parts["data"], **_options(parts, tmp_path / "cache"))
    summary = ds.prepare(num_workers=0, progress=False)
    # 5 distinct captions (b's two lines, a, c, and the empty one) encoded once each.
    assert summary["text"] == {"captions": 5, "already_cached": 0, "encoded": 5, "skipped": 0}
    assert ds.report()["stages"]["encode_text"]["out"] == 5
    assert ds.prepare(num_workers=0, progress=False)["text"]["encoded"] == 0
    seen = set()
    for epoch in range(3):
        ds.set_epoch(epoch)
        for batch in ds.loader(num_workers=0):
            embeds, lens = batch["text_embeds"], batch["text_lens"]
            assert embeds.shape == (len(batch["paths"]), 512, 16) and lens.dtype == torch.int64
            for i, caption in enumerate(batch["captions"]):
                seen.add(caption)
                assert torch.equal(embeds[i], _reference(parts, caption)), caption
                assert int(lens[i]) == int(embeds[i].abs().sum(-1).gt(0).sum())
                assert not embeds[i, int(lens[i]) :].any()  # exact zero padding
    assert "" in seen and "a quick brown fox jumps over the lazy dog" in seen


def test_caption_dropout_is_seeded_and_at_its_rate(parts: dict[str, Path], tmp_path: Path) -> None:
    spec = TextSpec(encoder="e", dropout=0.3, seed=5)
    ds = WanVideoDataset(parts["data"], **_options(parts, tmp_path / "cache", caption_dropout=0.3))
    options: DecodeOptions = ds._decode
    draws = [
        chosen_caption(s, options, epoch, spec) == "" and s.probed.source.captions != ()
        for epoch in range(200)
        for s in ds.samples
        if s.probed.source.captions
    ]
    n, dropped = len(draws), sum(draws)
    mean, sd = 0.3 * n, (n * 0.3 * 0.7) ** 0.5
    assert abs(dropped - mean) < 4 * sd, (dropped, n)
    ds.prepare(num_workers=0, progress=False)
    ds.set_epoch(1)
    alone = [b["captions"] for b in ds.loader(num_workers=0)]
    ds.set_epoch(1)
    workers = [b["captions"] for b in ds.loader(num_workers=2)]
    assert alone == workers


def test_a_changed_caption_is_a_missing_entry_and_prune_keeps_text(
    parts: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(parts["data"], data)
    cache = tmp_path / "cache"
    ds = WanVideoDataset(data, **_options(parts, cache))
    ds.prepare(num_workers=0, progress=False)
    assert LatentCache(cache).prune(ds.cache_keys()) == 0  # text entries are this dataset's
    assert ds.cache_complete()
    (data / "a.txt").write_text("the dog runs under the sea", encoding="utf-8")
    changed = WanVideoDataset(data, **_options(parts, cache))
    assert not changed.cache_complete()
    with pytest.raises(CacheIncompleteError, match="text embedding") as info:
        list(changed.loader(num_workers=0))
    assert "--text-encoder" in str(info.value)


def test_a_corrupt_text_entry_is_never_served(parts: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ds = WanVideoDataset(parts["data"], **_options(parts, cache))
    ds.prepare(num_workers=0, progress=False)
    assert ds.cache_spec is not None and ds.cache_spec.text is not None
    key = text_key(CAPTIONS["c.mp4"], ds.cache_spec.text)
    path = LatentCache(cache).path_for(key)
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF
    path.write_bytes(bytes(data))
    served = [c for b in ds.loader(num_workers=0) for c in b["captions"]]
    assert CAPTIONS["c.mp4"] not in served
    skipped = [r for r in ds.report()["skipped"] if r["reason"] == "cache_corrupt"]
    assert skipped and "c.mp4" in skipped[0]["path"]


class _FakeTextEncoder:
    def encode(self, captions: list[str]) -> list[torch.Tensor]:
        if any("boom" in c for c in captions):
            raise RuntimeError("the tokenizer choked")
        return [torch.full((len(c.split()) + 1, 4), float(len(c))) for c in captions]


def test_the_text_pass_is_a_stage_and_skips_a_failing_chunk() -> None:
    from wan_data.conditioning.text_cache import EncodeText, TextJob
    from wan_data.failures.mechanism import StageContext
    from wan_data.items import Encoded, Failed
    from wan_data.testing import check_stage_contract

    jobs = [TextJob(("a" * 64,), ("a cat",)), TextJob(("b" * 64, "c" * 64), ("x", "y z"))]
    check_stage_contract(EncodeText(_FakeTextEncoder()), jobs)
    context = StageContext()
    out = list(EncodeText(_FakeTextEncoder())([*jobs, TextJob(("d" * 64,), ("boom",))], context))
    assert [type(o) for o in out] == [Encoded, Encoded, Encoded, Failed]
    assert out[-1].stage == "encode_text" and "tokenizer choked" in out[-1].message
