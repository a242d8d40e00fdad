"""Tiny conditioning encoders for tests, saved so that tests load them with ``from_pretrained``.

No hub: every model is built from a config with seeded random weights (conditioning.md §4) and
written with ``save_pretrained``, so the code under test and the diffusers reference both take
the path users take. Needs the ``text`` extra (``transformers``, ``tokenizers``, ``ftfy``).

Text side (UMT5 + tokenizer): :func:`build_tiny_tokenizer`, :func:`build_tiny_umt5`,
:func:`make_tiny_text_encoder` (one folder), :func:`make_tiny_text_repo` (a Wan Diffusers repo
layout) and :func:`make_text_reference_pipeline` (diffusers' ``WanPipeline`` around them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

# --------------------------------------------------------------------------- text (UMT5)

# Words chosen so that cleaning matters: "&" and ";" appear once HTML entities are unescaped,
# "'" once ftfy straightens a curly quote, "café" once ftfy repairs the mojibake "cafÃ©".
TEXT_WORDS = (
    *("a", "the", "cat", "dog", "runs", "jumps", "over", "under", "lazy", "quick", "brown"),
    *("fox", "red", "blue", "sky", "sea", "&", ";", "amp", "'", "’", "café", "naïve", "Tom"),
    *("Jerry", "日本", "語", ",", ".", "!", "?"),
)


def tiny_text_vocab(extra: tuple[str, ...] = ()) -> dict[str, int]:
    """``<pad>`` 0, ``</s>`` 1 (EOS, as google/umt5-xxl), ``<unk>`` 2, then the words."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in (*TEXT_WORDS, *extra):
        vocab.setdefault(word, len(vocab))
    return vocab


def build_tiny_tokenizer(extra: tuple[str, ...] = ()) -> Any:
    """An offline fast tokenizer with UMT5's conventions: EOS appended, no BOS, pad id 0."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(tiny_text_vocab(extra), unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def build_tiny_umt5(*, seed: int = 0, vocab_size: int | None = None) -> Any:
    """A 2-layer UMT5 encoder (d_model 16), seeded, without touching the global RNG."""
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=vocab_size or len(tiny_text_vocab()),
        d_model=16,
        d_kv=4,
        d_ff=32,
        num_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UMT5EncoderModel(config)
    return model.eval()


def make_tiny_text_encoder(path: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny UMT5 encoder and its tokenizer side by side into ``path``."""
    folder = Path(path)
    build_tiny_umt5(seed=seed).save_pretrained(folder)
    build_tiny_tokenizer().save_pretrained(folder)
    return folder


def make_tiny_text_repo(path: str | Path, *, seed: int = 0) -> Path:
    """Write a Wan Diffusers repo: ``model_index.json``, ``text_encoder/``, ``tokenizer/``."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    build_tiny_umt5(seed=seed).save_pretrained(root / "text_encoder")
    build_tiny_tokenizer().save_pretrained(root / "tokenizer")
    index = {
        "_class_name": "WanPipeline",
        "_diffusers_version": "0.42.1",
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "vae": ["diffusers", "AutoencoderKLWan"],
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return root


def make_text_reference_pipeline(folder: str | Path, *, dtype: torch.dtype = torch.float32) -> Any:
    """diffusers' ``WanPipeline`` around an independently loaded copy of a saved tiny encoder.

    Only the text components are real: ``encode_prompt`` needs nothing else, and ``WanPipeline``
    accepts ``vae``, ``scheduler`` and ``transformer`` as None.
    """
    from diffusers import WanPipeline
    from transformers import AutoTokenizer, UMT5EncoderModel

    encoder = UMT5EncoderModel.from_pretrained(str(folder), dtype=dtype).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return WanPipeline(
        tokenizer=tokenizer, text_encoder=encoder, vae=None, scheduler=None, transformer=None
    )


# --------------------------------------------------------------------------- image (I2V / CLIP)
# Image-to-video side, used by tests/conditioning/test_image.py: a tiny CLIP vision encoder with
# its processor, a Wan 2.1 I2V Diffusers repo layout around it, a tiny 36-channel I2V
# transformer, and diffusers' WanImageToVideoPipeline assembled from independently loaded copies.

# The tiny CLIP's hidden size: the I2V transformer's image_dim and added_kv_proj_dim.
CLIP_HIDDEN = 8
I2V_TEXT_DIM = 16  # = the tiny UMT5's d_model above, so real text embeddings fit the transformer


def build_tiny_clip(*, seed: int = 0) -> tuple[Any, Any]:
    """``(CLIPVisionModelWithProjection, CLIPImageProcessor)``: ViT at 224 px, patch 14 (257
    tokens), hidden 8, default OpenAI processor (shortest edge 224, centre crop, bicubic)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=CLIP_HIDDEN,
        projection_dim=CLIP_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=224,
        patch_size=14,
        intermediate_size=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPVisionModelWithProjection(config)
    return model.eval(), CLIPImageProcessor()


def make_tiny_clip(path: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny CLIP encoder and its processor side by side into ``path`` (a CLIP folder)."""
    folder = Path(path)
    model, processor = build_tiny_clip(seed=seed)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def make_tiny_wan_i2v_repo(path: str | Path, *, seed: int = 0) -> Path:
    """A Wan 2.1 I2V Diffusers layout: ``vae/``, ``image_encoder/``, ``image_processor/``."""
    from vae_fixtures import make_tiny_wan21_vae

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    make_tiny_wan21_vae(root / "vae", seed=seed)
    model, processor = build_tiny_clip(seed=seed)
    model.save_pretrained(root / "image_encoder")
    processor.save_pretrained(root / "image_processor")
    index = {
        "_class_name": "WanImageToVideoPipeline",
        "_diffusers_version": "0.42.1",
        "vae": ["diffusers", "AutoencoderKLWan"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "image_processor": ["transformers", "CLIPImageProcessor"],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return root


def build_tiny_i2v_transformer(*, seed: int = 0, pos_embed_seq_len: int | None = None) -> Any:
    """A 1-layer ``WanTransformer3DModel`` with Wan 2.1 I2V's interface: 36 input channels
    (16 noise + 4 mask + 16 condition), CLIP image tokens of width 8, text of width 16.
    ``pos_embed_seq_len=514`` gives the FLF2V variant (two images' tokens)."""
    from diffusers import WanTransformer3DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WanTransformer3DModel(
            num_attention_heads=2,
            attention_head_dim=4,
            in_channels=36,
            out_channels=16,
            text_dim=I2V_TEXT_DIM,
            freq_dim=32,
            ffn_dim=16,
            num_layers=1,
            rope_max_seq_len=32,
            image_dim=CLIP_HIDDEN,
            added_kv_proj_dim=CLIP_HIDDEN,
            pos_embed_seq_len=pos_embed_seq_len,
        )
    return model.eval()


def make_i2v_reference_pipeline(
    vae_folder: str | Path,
    clip_folder: str | Path | None = None,
    processor_folder: str | Path | None = None,
    *,
    transformer: Any = None,
    expand_timesteps: bool = False,
) -> Any:
    """diffusers' ``WanImageToVideoPipeline`` around independently loaded copies of saved tiny
    models (fp32), with the tiny text encoder above and a flow-matching scheduler.

    ``clip_folder`` None leaves CLIP out (Wan 2.2); the processor is read from ``processor_folder``
    (default: ``clip_folder``); ``expand_timesteps`` makes it the TI2V-5B
    pipeline. ``prepare_latents`` and ``encode_image`` need no transformer.
    """
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    vae = AutoencoderKLWan.from_pretrained(str(vae_folder), torch_dtype=torch.float32).eval()
    encoder = processor = None
    if clip_folder is not None:
        encoder = CLIPVisionModelWithProjection.from_pretrained(str(clip_folder)).eval()
        processor = CLIPImageProcessor.from_pretrained(str(processor_folder or clip_folder))
    return WanImageToVideoPipeline(
        tokenizer=build_tiny_tokenizer(),
        text_encoder=build_tiny_umt5(),
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        image_processor=processor,
        image_encoder=encoder,
        transformer=transformer,
        expand_timesteps=expand_timesteps,
    )
