"""Caption embeddings against diffusers' own ``WanPipeline.encode_prompt`` on a tiny UMT5.

The encoders are saved to disk (a plain folder and a Wan Diffusers repo layout) and loaded by
``TextEncoder`` through ``from_pretrained``; the reference is ``WanPipeline`` around a separately
loaded copy, so nothing of wan_data is in the expected values.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("ftfy")

import torch
from conditioning_fixtures import (
    build_tiny_tokenizer,
    make_text_reference_pipeline,
    make_tiny_text_encoder,
    make_tiny_text_repo,
)
from torch.utils.data import DataLoader, IterableDataset

from wan_data.conditioning import text as text_module
from wan_data.conditioning.text import (
    TextEncoder,
    clean_caption,
    pad_text_embeds,
    resolve_text_encoder_path,
    text_info_from_files,
)
from wan_data.errors import ConfigError, FatalError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LONG = "the quick brown fox jumps over the lazy dog " * 80  # 720 words: truncated to 511 + EOS
CAPTIONS = [
    "a red cat runs under the blue sky",
    "Tom &amp;amp; Jerry ; the cafÃ© ’quoted’ dog",
    "  naïve   café\t\n 日本 語  ,  a\u00a0dog\u3000runs  ",
    "unknown WORDS everywhere ?!",
    LONG,
    "",
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("text")
    return {
        "plain": make_tiny_text_encoder(root / "plain"),
        "repo": make_tiny_text_repo(root / "repo"),
        "other": make_tiny_text_encoder(root / "other", seed=1),
    }


@pytest.fixture(scope="module")
def encoder(folders: dict[str, Path]) -> TextEncoder:
    return TextEncoder(folders["plain"], device="cpu", dtype=torch.float32, batch_size=4)


@pytest.fixture(scope="module")
def reference(folders: dict[str, Path]) -> object:
    return make_text_reference_pipeline(folders["plain"])


def _diffusers(pipe: object, caption: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The reference, under ``no_grad`` as ``WanPipeline.__call__`` runs it.

    With gradients enabled torch picks other CPU attention kernels and the result moves by
    ~1e-7; the pipeline itself never encodes with gradients.
    """
    with torch.no_grad():
        return pipe.encode_prompt(  # type: ignore[attr-defined, no-any-return]
            caption,
            do_classifier_free_guidance=False,
            max_sequence_length=512,
            device="cpu",
            dtype=dtype,
        )[0]


# --------------------------------------------------------------------------- cleaning


def test_clean_caption_equals_diffusers_prompt_clean() -> None:
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    samples = [
        *CAPTIONS,
        "&lt;b&gt;bold&lt;/b&gt; &amp;quot;x&amp;quot;",
        "sep\x1cara\x1dtors\x1e\x1f kept",
        "\x1c leading separators \x1f",
        "line\u2028break\u2029para\x85nel\u200bzero\ufeffbom",
        "ＦＵＬＬ width ﬁ ligature",
        "\r\n\t  ",
    ]
    for caption in samples:
        assert clean_caption(caption) == prompt_clean(caption), repr(caption)


def test_whitespace_class_equals_diffusers_regex() -> None:
    regex = pytest.importorskip("regex")
    every = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    assert text_module._WHITESPACE.findall(every) == regex.findall(r"\s+", every)


def test_missing_ftfy_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ftfy", None)
    text_module._fix_text.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"wan_data\[text\]"):
            clean_caption("a cat")
    finally:
        text_module._fix_text.cache_clear()


# --------------------------------------------------------------------------- equality


def test_encode_equals_diffusers_encode_prompt(encoder: TextEncoder, reference: object) -> None:
    for caption in CAPTIONS:
        (embed,) = encoder.encode([caption])
        padded, lens = pad_text_embeds([embed])
        expected = _diffusers(reference, caption)
        assert padded.shape == (1, 512, 16)
        assert torch.equal(padded, expected), repr(caption[:40])
        mask = reference.tokenizer(  # type: ignore[attr-defined]
            [clean_caption(caption)],
            padding="max_length",
            max_length=512,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        ).attention_mask
        assert lens.tolist() == mask.sum(dim=1).tolist()
        assert embed.shape == (int(lens[0]), 16)
        assert torch.count_nonzero(padded[0, int(lens[0]) :]) == 0
        assert torch.count_nonzero(embed.abs().sum(dim=1)) == embed.shape[0]


def test_lengths_of_special_captions(encoder: TextEncoder) -> None:
    empty, long, short = encoder.encode(["", LONG, "a cat"])
    assert empty.shape == (1, 16)  # the EOS row alone
    assert long.shape == (512, 16)  # truncated, EOS kept
    assert short.shape == (3, 16)


def test_batch_equals_one_at_a_time(encoder: TextEncoder) -> None:
    together = encoder.encode(CAPTIONS * 2)  # batch_size 4: three encoder calls, mixed lengths
    assert len(together) == 2 * len(CAPTIONS)
    for caption, embed in zip(CAPTIONS * 2, together, strict=True):
        (alone,) = encoder.encode([caption])
        assert torch.equal(embed, alone)
    padded, lens = pad_text_embeds(together)
    assert padded.shape == (12, 512, 16)
    assert lens.dtype == torch.int64
    assert lens.tolist() == [e.shape[0] for e in together]


def test_outputs_are_plain_cpu_tensors_with_their_own_storage(encoder: TextEncoder) -> None:
    first, second = encoder.encode(["a cat", "a dog runs"])
    for embed in (first, second):
        assert embed.device.type == "cpu" and embed.dtype == torch.float32
        assert not embed.is_inference() and not embed.requires_grad
        assert embed.untyped_storage().nbytes() == embed.numel() * embed.element_size()
    first.mul_(2)  # an ordinary tensor: in-place use outside inference mode works


def test_bf16_equals_diffusers_in_bf16(folders: dict[str, Path]) -> None:
    encoder = TextEncoder(folders["repo"], device="cpu", dtype=torch.bfloat16)
    pipe = make_text_reference_pipeline(folders["plain"], dtype=torch.bfloat16)
    captions = ["a red cat runs", LONG]
    embeds = encoder.encode(captions)
    assert encoder._model.dtype == torch.bfloat16
    assert all(e.dtype == torch.bfloat16 for e in embeds)
    for caption, embed in zip(captions, embeds, strict=True):
        padded, _ = pad_text_embeds([embed])
        assert torch.equal(padded, _diffusers(pipe, caption, torch.bfloat16))


# --------------------------------------------------------------------------- layout and identity


def test_repo_layout_equals_plain_folder(folders: dict[str, Path], encoder: TextEncoder) -> None:
    assert resolve_text_encoder_path(folders["plain"]) == (str(folders["plain"]), None, None)
    assert resolve_text_encoder_path(folders["repo"]) == (
        str(folders["repo"]),
        "text_encoder",
        "tokenizer",
    )
    repo = TextEncoder(folders["repo"], device="cpu", dtype=torch.float32)
    for a, b in zip(repo.encode(CAPTIONS), encoder.encode(CAPTIONS), strict=True):
        assert torch.equal(a, b)
    assert repo.info == encoder.info
    assert repo.info.identity == encoder.info.identity
    assert repo.info.hidden_size == 16 and repo.info.max_length == 512
    explicit = TextEncoder(folders["repo"], subfolder="text_encoder", dtype=torch.float32)
    assert explicit.info == encoder.info


def test_info_from_files_equals_loaded_info(folders: dict[str, Path]) -> None:
    for name in ("plain", "repo"):
        encoder = TextEncoder(folders[name], device="cpu", dtype=torch.bfloat16, max_length=512)
        assert encoder._model is None
        files = text_info_from_files(folders[name])
        assert encoder.info == files  # before loading: computed from files...
        assert encoder._model is None
        encoder.encode(["a cat"])
        assert encoder.info == files  # ...and unchanged by loading


def test_identity_changes_with_weights_dtype_length_and_tokenizer(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    base = text_info_from_files(folders["plain"], dtype=torch.float32)
    changed = [
        text_info_from_files(folders["other"], dtype=torch.float32),  # other weights
        text_info_from_files(folders["plain"], dtype=torch.bfloat16),
        text_info_from_files(folders["plain"], dtype=torch.float32, max_length=256),
    ]
    vocab = shutil.copytree(folders["plain"], tmp_path / "vocab")
    build_tiny_tokenizer(extra=("new",)).save_pretrained(vocab)
    changed.append(text_info_from_files(vocab, dtype=torch.float32))
    identities = {base.identity, *(info.identity for info in changed)}
    assert len(identities) == 1 + len(changed)
    copy = shutil.copytree(folders["plain"], tmp_path / "copy")  # another place, same files
    assert text_info_from_files(copy, dtype=torch.float32).identity == base.identity


# --------------------------------------------------------------------------- refusals


def test_fp16_is_refused(folders: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"float16.*(bfloat16|float32)"):
        TextEncoder(folders["plain"], dtype=torch.float16)
    with pytest.raises(ConfigError, match="overflow"):
        text_info_from_files(folders["plain"], dtype=torch.float16)


def test_bad_options_are_reported_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        TextEncoder(tmp_path / "nope", dtype=torch.float16, max_length=0, batch_size=0)
    assert len(info.value.problems) == 4


def test_missing_paths_name_the_path(folders: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError, match=str(missing)):
        TextEncoder(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"no UMT5 encoder config.*text_encoder"):
        text_info_from_files(empty)
    no_tok = tmp_path / "no_tokenizer"
    make_tiny_text_encoder(no_tok)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (no_tok / name).unlink()
    with pytest.raises(ConfigError, match=rf"no tokenizer.*{no_tok}"):
        TextEncoder(no_tok)
    repo = shutil.copytree(folders["repo"], tmp_path / "repo")
    shutil.rmtree(repo / "tokenizer")
    with pytest.raises(ConfigError, match=rf"no tokenizer.*{repo / 'tokenizer'}"):
        text_info_from_files(repo)
    file = tmp_path / "model.pth"
    file.write_bytes(b"x")
    with pytest.raises(ConfigError, match="is a file"):
        resolve_text_encoder_path(file)


def test_missing_transformers_names_the_extra(
    folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = TextEncoder(folders["plain"], device="cpu", dtype=torch.float32)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ConfigError, match=r"wan_data\[text\]"):
        encoder.encode(["a cat"])


class _EncodeInWorker(IterableDataset[torch.Tensor]):
    """Calls ``encode`` where a user might: in ``__iter__``, inside the worker."""

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder = encoder

    def __iter__(self) -> Iterator[torch.Tensor]:
        yield from self.encoder.encode(["a cat"])


class _ReportFromWorker(IterableDataset[str]):
    """Yields what ``encode`` raised in the worker, so the worker ends normally.

    (A worker that raises makes torch wait 5 s for it at shutdown; one such test is enough.)
    """

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder = encoder

    def __iter__(self) -> Iterator[str]:
        try:
            self.encoder.encode(["a cat"])
        except FatalError as exc:
            yield f"FatalError: {exc}"
        else:
            yield "encoded"


def test_encoding_in_a_dataloader_worker_is_refused(folders: dict[str, Path]) -> None:
    encoder = TextEncoder(folders["plain"], device="cpu", dtype=torch.float32)
    loader = DataLoader(
        _EncodeInWorker(encoder), batch_size=None, num_workers=1, multiprocessing_context="fork"
    )
    with pytest.raises(FatalError, match=r"load in DataLoader worker 0 of 1.*calling process"):
        list(loader)
    assert encoder._model is None


def test_a_model_loaded_before_the_fork_is_refused_too(folders: dict[str, Path]) -> None:
    encoder = TextEncoder(folders["plain"], device="cpu", dtype=torch.float32)
    encoder.encode(["a cat"])  # loaded in the parent: the forked worker inherits the model
    loader = DataLoader(
        _ReportFromWorker(encoder), batch_size=None, num_workers=1, multiprocessing_context="fork"
    )
    (report,) = list(loader)
    assert report.startswith("FatalError: ") and "use in DataLoader worker 0 of 1" in report
    assert len(encoder.encode(["a cat"])) == 1  # the parent still encodes


def test_pickling_drops_the_model(encoder: TextEncoder) -> None:
    encoder.encode(["a cat"])
    clone = pickle.loads(pickle.dumps(encoder))
    assert clone._model is None and clone._tokenizer is None
    assert clone.info == encoder.info
    assert "loaded=False" in repr(clone)


def test_encode_input_checks(encoder: TextEncoder) -> None:
    with pytest.raises(ValueError, match="sequence of str"):
        encoder.encode("a cat")
    with pytest.raises(ValueError, match="must be a str"):
        encoder.encode(["a cat", 3])  # type: ignore[list-item]
    assert encoder.encode([]) == []


def test_pad_text_embeds_checks() -> None:
    a, b = torch.randn(3, 8), torch.randn(5, 8)
    padded, lens = pad_text_embeds([a, b], max_length=6)
    assert padded.shape == (2, 6, 8) and lens.tolist() == [3, 5]
    assert torch.equal(padded[0, :3], a) and torch.equal(padded[1, :5], b)
    assert torch.count_nonzero(padded[0, 3:]) == 0 and torch.count_nonzero(padded[1, 5:]) == 0
    with pytest.raises(ValueError, match="at least one"):
        pad_text_embeds([])
    with pytest.raises(ValueError, match=r"must be <= max_length \(4\)"):
        pad_text_embeds([a, b], max_length=4)
    with pytest.raises(ValueError, match="must match embedding 0"):
        pad_text_embeds([a, torch.randn(2, 4)])
    with pytest.raises(ValueError, match="2-D"):
        pad_text_embeds([torch.randn(2, 3, 4)])
