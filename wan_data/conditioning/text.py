"""Caption embeddings for Wan: UMT5 outputs exactly as diffusers' Wan pipelines compute them.

Every Wan 2.1 / 2.2 model is conditioned on UMT5-XXL's ``last_hidden_state`` of the cleaned
prompt, cut to its real tokens (EOS included) and zero-padded to 512 rows
(``WanPipeline._get_t5_prompt_embeds``). The cache stores the unpadded ``(L, D)`` rows per caption
(what musubi-tuner stores; a third of the disk for typical captions) and :func:`pad_text_embeds`
rebuilds diffusers' ``(B, 512, D)`` tensor at batch time, with exactly zero padding rows: the
transformer reads ``encoder_hidden_states`` without a mask, so raw UMT5 outputs at pad positions
would change its output.

- :func:`clean_caption`: diffusers' ``prompt_clean`` (ftfy, HTML unescaping, whitespace);
- :class:`TextEncoder`: loads UMT5 lazily in the calling process, encodes captions in batches;
- :func:`pad_text_embeds`: diffusers' zero padding, plus the lengths.

This module is the public face of the text side: it also re-exports
:class:`~wan_data.conditioning.text_identity.TextEncoderInfo`, :func:`text_info_from_files`
(the identity for cache keys, from files alone) and :func:`resolve_text_encoder_path`.
"""

from __future__ import annotations

import functools
import html
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch

from wan_data.conditioning.text_identity import (
    TEXT_RECIPE_VERSION,
    TextEncoderInfo,
    info_from_resolved,
    text_info_from_files,
)
from wan_data.conditioning.text_loading import (
    _check_worker,
    check_max_length,
    check_text_dtype,
    default_device,
    load_text_encoder,
    resolve_text_encoder_path,
)
from wan_data.errors import ConfigError, FatalError, format_error
from wan_data.latents.model_files import EXTRA_HINT

__all__ = [
    "TEXT_RECIPE_VERSION",
    "TextEncoder",
    "TextEncoderInfo",
    "clean_caption",
    "pad_text_embeds",
    "resolve_text_encoder_path",
    "text_info_from_files",
]

logger = logging.getLogger("wan_data")

WAN_TEXT_LENGTH = 512  # every Wan model was trained with 512 text tokens
# diffusers collapses whitespace with the third-party ``regex`` module, whose ``\s`` is Unicode
# White_Space; Python's ``re`` ``\s`` also matches the separators U+001C..U+001F (str.isspace),
# so they are excluded here to match diffusers character for character.
_WHITESPACE = re.compile(r"[^\S\x1c-\x1f]+")


# --------------------------------------------------------------------------- cleaning


@functools.lru_cache(maxsize=1)
def _fix_text() -> Callable[[str], str]:
    try:
        import ftfy
    except ImportError as exc:
        raise ConfigError(
            format_error(
                "ftfy",
                "not installed",
                "is needed to clean captions exactly as diffusers' Wan pipelines do "
                "(ftfy.fix_text)",
                EXTRA_HINT,
            )
        ) from exc
    fix: Callable[[str], str] = ftfy.fix_text
    return fix


def clean_caption(text: str) -> str:
    """Diffusers' Wan prompt cleaning (``prompt_clean`` in ``pipeline_wan.py``), exactly.

    ``ftfy.fix_text``, ``html.unescape`` twice (``&amp;amp;`` → ``&``), strip, collapse each
    whitespace run to one space, strip. diffusers skips ftfy when it is not installed; here a
    missing ftfy is an error instead, because a cached embedding must equal the one diffusers
    computes where ftfy is installed (the normal case), and mojibake or odd quotes left in would
    silently change it.

    Raises:
        ConfigError: ftfy is not installed (``pip install wan_data[text]``).
        ValueError: ``text`` is not a str.
    """
    if not isinstance(text, str):
        raise ValueError(format_error("caption", type(text).__name__, "must be a str"))
    text = _fix_text()(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip()


# --------------------------------------------------------------------------- padding


def pad_text_embeds(
    embeds: Sequence[torch.Tensor], max_length: int = WAN_TEXT_LENGTH
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad per-caption ``(L, D)`` embeddings to diffusers' ``(B, max_length, D)`` batch.

    The same expression as ``WanPipeline._get_t5_prompt_embeds``, so the result is
    ``torch.equal`` to ``encode_prompt(..., max_sequence_length=max_length)`` for the same
    captions. Padding rows are exactly zero (not UMT5's pad outputs: the transformer has no text
    mask).

    Args:
        embeds: one ``(L, D)`` tensor per caption, ``L <= max_length``, all with the same ``D``,
            dtype and device.
        max_length: the padded length; Wan models need 512 (the I2V transformer splits its
            context at ``shape[1] - 512``).

    Returns:
        ``(padded (B, max_length, D), lens (B,) int64)`` on the embeddings' device.

    Raises:
        ValueError: no embeddings, a non-2-D one, mixed D / dtype / device, or one longer than
            ``max_length``.
    """
    length = check_max_length(max_length)
    if length:
        raise ValueError(length)
    if len(embeds) == 0:
        raise ValueError(
            format_error(
                "text embeddings", 0, "must be at least one", "the width D comes from them"
            )
        )
    first = embeds[0]
    problems = []
    for i, u in enumerate(embeds):
        if not isinstance(u, torch.Tensor) or u.ndim != 2:
            shape = list(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__
            problems.append(format_error(f"text embedding {i}", shape, "must be a 2-D (L, D)"))
            continue
        if u.shape[1] != first.shape[1] or u.dtype != first.dtype or u.device != first.device:
            problems.append(
                format_error(
                    f"text embedding {i}",
                    f"D={u.shape[1]} {u.dtype} {u.device}",
                    f"must match embedding 0 (D={first.shape[1]} {first.dtype} {first.device})",
                )
            )
        if u.shape[0] > max_length:
            problems.append(
                format_error(
                    f"text embedding {i} length",
                    u.shape[0],
                    f"must be <= max_length ({max_length})",
                    "encode with the same max_length the batch is padded to",
                )
            )
    if problems:
        raise ValueError("; ".join(problems))
    padded = torch.stack(
        [torch.cat([u, u.new_zeros(max_length - u.size(0), u.size(1))]) for u in embeds], dim=0
    )
    lens = torch.tensor([u.size(0) for u in embeds], dtype=torch.int64, device=first.device)
    return padded, lens


# --------------------------------------------------------------------------- the encoder


class TextEncoder:
    """Encodes captions into UMT5 embeddings, one unpadded ``(L, D)`` tensor per caption.

    One instance per process, built cheaply: the path is resolved and every option checked at
    construction, but ``transformers`` is imported and the model (~11 GB for UMT5-XXL) loaded
    only on the first :meth:`encode`, in the process that calls it. Loading or encoding inside a
    DataLoader worker raises :class:`FatalError`: a copy per worker multiplies memory and CUDA
    cannot start in a forked child. Pickling drops the model. Calls are serialised by a lock.
    :attr:`info` (the cache identity) is computed from the files and never loads the model.

    Args:
        path: a folder holding the encoder and its tokenizer, or a full Wan Diffusers repo with
            ``text_encoder/`` and ``tokenizer/``, see :func:`resolve_text_encoder_path`.
        device: where the encoder runs; None is the first CUDA device, or the CPU without one.
        dtype: compute dtype, bf16 (Wan's) or fp32; fp16 is refused (UMT5 overflows).
        max_length: tokens per caption, EOS included; longer captions are truncated, keeping EOS.
        batch_size: captions per encoder call (all are padded to ``max_length``, so memory grows
            with it, not with the captions' lengths).
        subfolder: the folder inside ``path`` holding the encoder; detected when None.

    Raises:
        ConfigError: every bad option at once (and a missing encoder or tokenizer).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.bfloat16,
        max_length: int = WAN_TEXT_LENGTH,
        batch_size: int = 8,
        subfolder: str | None = None,
    ) -> None:
        problems = [p for p in (check_text_dtype(dtype), check_max_length(max_length)) if p]
        try:
            self.device = default_device(device)
        except ConfigError as exc:
            problems.extend(exc.problems)
            self.device = torch.device("cpu")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            problems.append(format_error("text batch_size", batch_size, "must be an int >= 1"))
        try:
            self._folder, self._encoder_sub, self._tokenizer_sub = resolve_text_encoder_path(
                path, subfolder
            )
        except ConfigError as exc:
            problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)
        if max_length != WAN_TEXT_LENGTH:
            logger.warning(
                "text max_length is %d; Wan models were trained with %d tokens",
                max_length,
                WAN_TEXT_LENGTH,
            )
        self.dtype = dtype
        self.max_length = max_length
        self.batch_size = batch_size
        self._model: Any = None
        self._tokenizer: Any = None
        self._info: TextEncoderInfo | None = None
        self._lock = threading.Lock()

    # -- lifecycle

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"] = None
        state["_tokenizer"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"TextEncoder({self._folder!r}, encoder={self._encoder_sub!r}, "
            f"tokenizer={self._tokenizer_sub!r}, device={self.device}, "
            f"dtype={str(self.dtype).removeprefix('torch.')}, max_length={self.max_length}, "
            f"batch_size={self.batch_size}, loaded={self._model is not None})"
        )

    @property
    def info(self) -> TextEncoderInfo:
        """The encoder's identity for cache keys, from its files (never loads the model)."""
        if self._info is None:
            self._info = info_from_resolved(
                self._folder,
                self._encoder_sub,
                self._tokenizer_sub,
                dtype=self.dtype,
                max_length=self.max_length,
            )
        return self._info

    def _load(self) -> tuple[Any, Any]:
        _check_worker("load" if self._model is None else "use")
        if self._model is None:
            self._model, self._tokenizer = load_text_encoder(
                self._folder,
                self._encoder_sub,
                self._tokenizer_sub,
                device=self.device,
                dtype=self.dtype,
            )
        return self._model, self._tokenizer

    def unload(self) -> None:
        """Drop the model and free its device memory (e.g. before the train pass starts)."""
        with self._lock:
            self._model = None
            self._tokenizer = None
            if self.device.type == "cuda" and torch.cuda.is_available():
                torch.cuda.empty_cache()

    # -- encoding

    def encode(self, captions: Sequence[str]) -> list[torch.Tensor]:
        """Each caption's unpadded UMT5 embedding, exactly as diffusers computes it.

        Per ``WanPipeline._get_t5_prompt_embeds``: clean, tokenize with
        ``padding="max_length"``, ``truncation=True`` and special tokens, run the encoder with
        the attention mask, and keep the first ``attention_mask.sum()`` rows of
        ``last_hidden_state``. Captions go through the encoder ``batch_size`` at a time, under
        ``torch.inference_mode()``.

        Args:
            captions: the raw captions (cleaned here); ``""`` gives the empty-prompt embedding
                (one EOS row), which caption dropout and the negative prompt use.

        Returns:
            One independent ``(L, D)`` tensor per caption, ``1 <= L <= max_length``, on the CPU
            in the encoder's dtype.

        Raises:
            ValueError: ``captions`` is a str or holds a non-str.
            ConfigError: ftfy or transformers missing, or the files cannot be loaded.
            FatalError: called inside a DataLoader worker.
        """
        if isinstance(captions, str):
            raise ValueError(
                format_error(
                    "captions", captions[:60], "must be a sequence of str", "wrap it: [caption]"
                )
            )
        cleaned = [clean_caption(c) for c in captions]  # before loading: ftfy missing fails fast
        if not cleaned:
            _check_worker("use")
            return []
        out: list[torch.Tensor] = []
        with self._lock:
            model, tokenizer = self._load()
            for start in range(0, len(cleaned), self.batch_size):
                hidden, lens = self._encode_batch(
                    model, tokenizer, cleaned[start : start + self.batch_size]
                )
                # Sliced and cloned outside inference mode: ordinary tensors, each with its own
                # storage (saving one does not save its batch neighbours).
                out.extend(row[:n].clone() for row, n in zip(hidden, lens, strict=True))
        return out

    def _encode_batch(
        self, model: Any, tokenizer: Any, captions: list[str]
    ) -> tuple[torch.Tensor, list[int]]:
        with torch.inference_mode():
            inputs = tokenizer(
                captions,
                padding="max_length",
                max_length=self.max_length,
                truncation=True,
                add_special_tokens=True,
                return_attention_mask=True,
                return_tensors="pt",
            )
            ids, mask = inputs.input_ids, inputs.attention_mask
            lens = mask.gt(0).sum(dim=1).long().tolist()
            hidden = model(ids.to(self.device), mask.to(self.device)).last_hidden_state
            hidden = hidden.to(device="cpu", dtype=self.dtype)
        expected = (len(captions), self.max_length, self.info.hidden_size)
        if tuple(hidden.shape) != expected:
            raise FatalError(
                format_error(
                    "text encoder output shape",
                    list(hidden.shape),
                    f"differs from the expected {list(expected)}",
                    "the encoder's config.json does not match the network it loaded",
                    stage="text_encode",
                )
            )
        filled = sum(n >= self.max_length for n in lens)
        if filled:
            logger.info(
                "%d of %d captions fill all %d text tokens (longer ones are truncated)",
                filled,
                len(captions),
                self.max_length,
            )
        return hidden, lens
