"""What identifies a text encoder for cache keys: :class:`TextEncoderInfo`, from files alone.

A cached caption embedding is only valid for the encoder, tokenizer, dtype and length that made
it, so all of them are part of the encoder's identity: the architecture config (hashed without
the fields that say where and by which transformers release it was saved, or which dtype it was
last loaded in), a fingerprint of the weight files (the VAE's
:func:`~wan_data.latents.vae_identity.weights_fingerprint`: in full for small files, sampled for
UMT5-XXL's ~11-22 GB of shards), the tokenizer files (hashed in full: a changed vocabulary or
normaliser changes every embedding), the compute dtype and ``max_length``.

Everything is computed from the files, never from a loaded model: the train pass needs the cache
keys but must not load an 11 GB encoder, and computing the identity the same way in both passes
makes :func:`text_info_from_files` equal to :attr:`TextEncoder.info
<wan_data.conditioning.text.TextEncoder.info>` by construction. Reading the config needs no
``transformers``.

Split out of :mod:`wan_data.conditioning.text` so that the train pass's key computation and the
cache pass's loader share one definition of the identity without importing the encoder.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from wan_data.conditioning.text_loading import (
    check_max_length,
    check_text_dtype,
    resolve_text_encoder_path,
)
from wan_data.errors import ConfigError, format_error
from wan_data.latents.keys import canonical_json
from wan_data.latents.vae_identity import weights_fingerprint

__all__ = ["TEXT_RECIPE_VERSION", "TextEncoderInfo", "text_info_from_files"]

# Bump when what an embedding means changes for the same files (the cleaning, the tokenizer
# call, the slicing): old cache entries then stop matching instead of being served.
TEXT_RECIPE_VERSION = 1

# Config keys that do not describe the network: where and by which release it was saved, and the
# dtype it was saved or last loaded in (the compute dtype is its own field).
_META_KEYS = frozenset({"transformers_version", "dtype", "torch_dtype", "architectures"})
# Files a tokenizer is read from; whichever of them exist are hashed.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
)
_READ_BLOCK = 2**20


@dataclass(frozen=True)
class TextEncoderInfo:
    """What identifies a text encoder for cache keys and reports.

    Attributes:
        hidden_size: the embedding width D (``d_model``: 4096 for UMT5-XXL).
        max_length: tokens per caption (EOS included); Wan uses 512.
        dtype: the encoder's compute dtype (``"bfloat16"`` or ``"float32"``); part of the
            identity because bf16 embeddings differ from fp32 ones.
        config_hash: sha256 of the architecture config, see :func:`_config_hash`.
        weights_hash: fingerprint of the weight files (see ``weights_fingerprint``).
        tokenizer_hash: sha256 over the tokenizer files' names and bytes.
    """

    hidden_size: int
    max_length: int
    dtype: str
    config_hash: str
    weights_hash: str
    tokenizer_hash: str

    def __post_init__(self) -> None:
        problems = []
        if isinstance(self.hidden_size, bool) or self.hidden_size < 1:
            problems.append(
                format_error("TextEncoderInfo.hidden_size", self.hidden_size, "must be >= 1")
            )
        length = check_max_length(self.max_length)
        if length:
            problems.append(length)
        if self.dtype not in {"bfloat16", "float32"}:
            problems.append(
                format_error("TextEncoderInfo.dtype", self.dtype, "must be bfloat16 or float32")
            )
        if problems:
            raise ValueError("; ".join(problems))

    def as_dict(self) -> dict[str, object]:
        """The fields plus the recipe version: what a cache key hashes."""
        return {
            "config_hash": self.config_hash,
            "dtype": self.dtype,
            "hidden_size": self.hidden_size,
            "max_length": self.max_length,
            "recipe": TEXT_RECIPE_VERSION,
            "tokenizer_hash": self.tokenizer_hash,
            "weights_hash": self.weights_hash,
        }

    @property
    def identity(self) -> str:
        """sha256 hex of :meth:`as_dict`: one string that changes whenever an embedding would."""
        return hashlib.sha256(canonical_json(self.as_dict()).encode("ascii")).hexdigest()


def _config_hash(config: Path) -> tuple[str, int]:
    """sha256 of the encoder's ``config.json`` (sorted keys) and its ``d_model``.

    Keys starting with ``_`` and those in :data:`_META_KEYS` are left out: ``_name_or_path``
    would make the same encoder in two folders two identities, and ``dtype`` is rewritten by
    every ``save_pretrained`` of a model loaded in another dtype.
    """
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            format_error(
                "text encoder config",
                str(config),
                "is not a readable JSON file",
                f"fix or replace it ({type(exc).__name__}: {exc})",
            )
        ) from exc
    d_model = data.get("d_model") if isinstance(data, dict) else None
    if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model < 1:
        raise ConfigError(
            format_error(
                "text encoder config d_model",
                d_model,
                "must be an int >= 1",
                "the file is not a UMT5 config",
                path=str(config),
            )
        )
    kept = {k: v for k, v in data.items() if not k.startswith("_") and k not in _META_KEYS}
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest(), d_model


def _tokenizer_hash(folder: Path) -> str:
    """sha256 over the names and bytes of the tokenizer files in ``folder`` (a few MB at most)."""
    digest = hashlib.sha256(b"tokenizer\0")
    found = [folder / name for name in _TOKENIZER_FILES if (folder / name).is_file()]
    if not found:
        raise ConfigError(
            format_error(
                "text tokenizer folder",
                str(folder),
                f"holds none of {', '.join(_TOKENIZER_FILES)}",
                "save the tokenizer there (tokenizer.save_pretrained)",
            )
        )
    for file in found:
        digest.update(f"{file.name}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(_READ_BLOCK), b""):
                digest.update(block)
    return digest.hexdigest()


def _weights_hash(folder: Path) -> str:
    has_weights = any(
        p.is_file() and p.suffix in {".safetensors", ".bin"} for p in folder.iterdir()
    )
    if not has_weights:
        raise ConfigError(
            format_error(
                "text encoder weights folder",
                str(folder),
                "holds no *.safetensors or *.bin file",
                "the folder must be a complete transformers save (config.json + weights)",
            )
        )
    return weights_fingerprint(folder)


def info_from_resolved(
    folder: str,
    encoder_sub: str | None,
    tokenizer_sub: str | None,
    *,
    dtype: torch.dtype,
    max_length: int,
) -> TextEncoderInfo:
    """:class:`TextEncoderInfo` of a resolved encoder, see :func:`text_info_from_files`."""
    problems = [p for p in (check_text_dtype(dtype), check_max_length(max_length)) if p]
    if problems:
        raise ConfigError(problems)
    root = Path(os.path.expanduser(folder))
    encoder_dir = root / encoder_sub if encoder_sub else root
    tokenizer_dir = root / tokenizer_sub if tokenizer_sub else root
    config_hash, hidden = _config_hash(encoder_dir / "config.json")
    return TextEncoderInfo(
        hidden_size=hidden,
        max_length=max_length,
        dtype=str(dtype).removeprefix("torch."),
        config_hash=config_hash,
        weights_hash=_weights_hash(encoder_dir),
        tokenizer_hash=_tokenizer_hash(tokenizer_dir),
    )


def text_info_from_files(
    path: str | os.PathLike[str],
    *,
    subfolder: str | None = None,
    dtype: torch.dtype = torch.bfloat16,
    max_length: int = 512,
) -> TextEncoderInfo:
    """The text encoder's identity from its config, weight and tokenizer files, without loading.

    The train pass needs cache keys, hence the encoder's identity, but must not load an 11 GB
    encoder (nor import ``transformers``). Equal to the ``info`` of a
    :class:`~wan_data.conditioning.text.TextEncoder` built with the same arguments.

    Args:
        path: a local folder, see
            :func:`~wan_data.conditioning.text_loading.resolve_text_encoder_path`.
        subfolder: the folder inside ``path`` holding the encoder; detected when None.
        dtype: the encoder's compute dtype (bf16 or fp32; fp16 is refused).
        max_length: tokens per caption.

    Raises:
        ConfigError: a missing path, encoder, tokenizer or weight file, an unreadable config, or
            a bad dtype / max_length; the message names the path.
    """
    folder, encoder_sub, tokenizer_sub = resolve_text_encoder_path(path, subfolder)
    return info_from_resolved(
        folder, encoder_sub, tokenizer_sub, dtype=dtype, max_length=max_length
    )
