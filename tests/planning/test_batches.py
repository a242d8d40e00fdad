"""batches.py: the bucket stage (``build_samples``) honours the stage contract."""

from __future__ import annotations

import pytest
from batch_reuse import check_batches_reused_only_when_let_go
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


def test_pixel_batches_are_reused_only_once_the_trainer_let_go(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The pixel reader's pool (``BatchBuffers``), through the dataset."""
    from wan_data import WanVideoDataset

    root = tmp_path_factory.mktemp("pool")
    for i in range(6):
        make_video(root / f"v{i}.mp4", width=64, height=48, fps=10 + 2 * i, num_frames=20)
    ds = WanVideoDataset(root, frames=[5], fps=8, resolution=(64, 48), batch_size=2, seed=0)
    check_batches_reused_only_when_let_go(ds, "pixels")
