"""batches.py: the bucket stage (``build_samples``) honours the stage contract."""

from __future__ import annotations

import pytest
from media import Corpus, make_video

from wan_data.failures.mechanism import StageContext
from wan_data.failures.policy import ErrorPolicy
from wan_data.items import Failed, PlanSample, Probed, Source
from wan_data.stages.bucket import build_samples
from wan_data.stages.decode import DecodeOptions
from wan_data.stages.probe import probe_metadata
from wan_data.testing import check_stage_contract


def _probed(corpus: Corpus, name: str) -> Probed:
    source = Source(key=name, path=str(corpus.path(name)), media_type="video")
    if name.startswith("images/"):
        source = Source(key=name, path=str(corpus.path(name)), media_type="image")
    return Probed(source=source, metadata=probe_metadata(source))


OPTIONS = DecodeOptions(frames=(17, 33), fps=16.0, buckets=((64, 64), (96, 48)), no_upscale=True)


def test_build_samples_honours_the_stage_contract(corpus: Corpus) -> None:
    items = [_probed(corpus, "good/h264_landscape.mp4"), _probed(corpus, "images/portrait.jpg")]
    check_stage_contract(build_samples, items, options=OPTIONS, context=StageContext())


def test_build_samples_gives_one_sample_per_clip_with_its_bucket(corpus: Corpus) -> None:
    video = _probed(corpus, "good/h264_landscape.mp4")
    out = list(
        build_samples([video], options=OPTIONS, policy=ErrorPolicy(), context=StageContext())
    )
    (sample,) = out
    assert isinstance(sample, PlanSample)
    assert sample.key == f"{video.key}#0" and sample.bucket.frames == 33
    tiny = DecodeOptions(frames=(17,), fps=16.0, buckets=((4096, 4096),), no_upscale=True)
    (failed,) = build_samples([video], options=tiny, policy=ErrorPolicy(), context=StageContext())
    assert isinstance(failed, Failed) and failed.reason == "too_small"
    assert failed.stage == "bucket"


def test_pixel_batches_reuse_a_float_batch_only_once_the_trainer_let_go(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The pixel reader's pool (``BatchBuffers``): batches a trainer keeps stay intact; a
    batch it dropped gives its tensor to a later one."""
    import torch

    from wan_data import WanVideoDataset

    root = tmp_path_factory.mktemp("pool")
    for i in range(6):
        make_video(root / f"v{i}.mp4", width=64, height=48, fps=10 + 2 * i, num_frames=20)
    ds = WanVideoDataset(root, frames=[5], fps=8, resolution=(64, 48), batch_size=2, seed=0)

    def one_pass() -> list[dict[str, object]]:
        ds.set_epoch(0)
        return list(ds.loader(num_workers=0))

    kept = one_pass()
    expected = [b["pixels"].clone() for b in one_pass()]  # type: ignore[union-attr]
    assert len(kept) == 3
    assert len({b["pixels"].data_ptr() for b in kept}) == 3  # type: ignore[union-attr]
    for got, want in zip(kept, expected, strict=True):
        assert torch.equal(got["pixels"], want)  # type: ignore[arg-type]
    ds.set_epoch(0)
    addresses = []
    for batch, want in zip(ds.loader(num_workers=0), expected, strict=True):
        assert torch.equal(batch["pixels"], want)
        addresses.append(batch["pixels"].data_ptr())
        del batch
    assert len(set(addresses)) < len(addresses)
