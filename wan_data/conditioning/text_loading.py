"""Finding and loading Wan's UMT5 text encoder and tokenizer, in the one process allowed to run it.

Users point at a folder holding the encoder and its tokenizer side by side, or at a full Wan
Diffusers repo whose ``text_encoder/`` and ``tokenizer/`` subfolders are found automatically
(:func:`resolve_text_encoder_path`); :func:`load_text_encoder` loads them with
``transformers.UMT5EncoderModel.from_pretrained`` and ``AutoTokenizer.from_pretrained``, the paths
diffusers' ``WanPipeline`` takes, in eval mode with gradients off. Every failure names the path
and what was looked for.

The encoder is ~11 GB (UMT5-XXL) and runs once per GPU in the process that owns the device:
:func:`_check_worker` refuses to load or run it inside a DataLoader worker. ``transformers`` is an
optional dependency (the ``text`` extra), imported only here and only when a model is loaded.

Split out of :mod:`wan_data.conditioning.text` so that locating and loading (configuration errors,
device handling) can be read apart from encoding, as the VAE side does.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from wan_data.errors import ConfigError, FatalError, format_error
from wan_data.latents.model_files import import_transformers as _import_transformers
from wan_data.latents.model_files import read_json_config, refuse_in_worker
from wan_data.latents.vae_loading import _parse_device

__all__ = ["load_text_encoder", "resolve_text_encoder_path"]

logger = logging.getLogger("wan_data")

_MODEL_TYPE = "umt5"
_STAGE = "text_encode"
_ENCODER_SUB = "text_encoder"
_TOKENIZER_SUB = "tokenizer"
# Any of these files marks a folder as holding a tokenizer (tokenizer.json: fast tokenizers;
# spiece.model: google/umt5-xxl's sentencepiece model; tokenizer_config.json: what AutoTokenizer
# reads first).
_TOKENIZER_MARKERS = ("tokenizer.json", "spiece.model", "tokenizer_config.json")
# fp16 is refused: UMT5's activations overflow fp16 (inf/NaN embeddings), see conditioning.md §1.
_TEXT_DTYPES = (torch.float32, torch.bfloat16)


# --------------------------------------------------------------------------- checks


def check_text_dtype(dtype: object) -> str | None:
    """The problem with ``dtype`` as the encoder's compute dtype, or None when it is usable."""
    if dtype == torch.float16:
        return format_error(
            "text encoder dtype",
            str(dtype),
            "is refused: UMT5 overflows in float16 and gives inf/NaN embeddings",
            "use torch.bfloat16 (what Wan uses) or torch.float32",
        )
    if dtype not in _TEXT_DTYPES:
        return format_error(
            "text encoder dtype", str(dtype), "must be torch.bfloat16 or torch.float32"
        )
    return None


def check_max_length(max_length: object) -> str | None:
    """The problem with ``max_length`` (tokens per caption), or None when it is usable."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        return format_error(
            "text max_length", max_length, "must be an int >= 1", "Wan models use 512"
        )
    return None


def _check_worker(action: str) -> None:
    """Refuse to run the text encoder inside a DataLoader worker process.

    The encoder runs once per GPU in the calling process: a copy per forked worker would multiply
    11 GB of memory, and CUDA cannot be initialised in a forked child at all.
    """
    refuse_in_worker(
        "text encoder",
        action,
        "must run in the calling process (one encoder per GPU), never inside a DataLoader worker",
        "read captions in the workers and call TextEncoder.encode on the batches the "
        "DataLoader yields",
        _STAGE,
    )


def import_transformers() -> Any:
    """``transformers``, or a ConfigError naming the ``text`` extra when it is not installed."""
    return _import_transformers("to load the UMT5 text encoder")


# --------------------------------------------------------------------------- locating


def _read_model_type(config: Path) -> str | None:
    """``model_type`` of a transformers config, None when absent, "" when the key is missing."""
    data = read_json_config(config, "text encoder config")
    if data is None:
        return None
    name = data.get("model_type")
    return str(name) if name is not None else ""


def has_tokenizer(folder: Path) -> bool:
    """True when ``folder`` holds tokenizer files AutoTokenizer can start from."""
    return folder.is_dir() and any((folder / name).is_file() for name in _TOKENIZER_MARKERS)


def _sub(local: Path, sub: str | None) -> Path:
    return local / sub if sub else local


def _find_tokenizer(local: Path, encoder_sub: str | None, text: str) -> str | None:
    """The tokenizer's subfolder: the encoder's own folder first, then ``tokenizer/``."""
    candidates = [encoder_sub, _TOKENIZER_SUB] if encoder_sub else [None, _TOKENIZER_SUB]
    if encoder_sub == _ENCODER_SUB:  # a Wan repo: its tokenizer/ is the one the pipeline uses
        candidates = [_TOKENIZER_SUB, encoder_sub]
    for sub in candidates:
        if has_tokenizer(_sub(local, sub)):
            return sub
    looked = ", ".join(str(_sub(local, s)) for s in candidates)
    raise ConfigError(
        format_error(
            "text encoder path",
            text,
            f"holds a UMT5 encoder but no tokenizer; looked in {looked} for any of "
            f"{', '.join(_TOKENIZER_MARKERS)}",
            "save the tokenizer next to the encoder (tokenizer.save_pretrained) or pass a full "
            "Wan Diffusers repo with text_encoder/ and tokenizer/",
        )
    )


def resolve_text_encoder_path(
    path: str | os.PathLike[str], subfolder: str | None = None
) -> tuple[str, str | None, str | None]:
    """Find the UMT5 encoder and its tokenizer, so users can point at a folder or the whole repo.

    A local folder is decided by its files: its own ``config.json`` with ``model_type`` "umt5"
    means the folder is the encoder (its tokenizer beside it, or in ``tokenizer/``); otherwise
    ``text_encoder/config.json`` means a full Wan Diffusers repo, whose tokenizer is
    ``tokenizer/``. Only local folders are accepted: the train pass computes cache keys from the
    files, so they must be on disk anyway.

    Args:
        path: a local folder.
        subfolder: the folder inside ``path`` holding the encoder; overrides the detection ("" is
            the folder itself). The tokenizer is then looked for beside the encoder, then in
            ``tokenizer/`` (for ``text_encoder``: ``tokenizer/`` first, as in a Wan repo).

    Returns:
        ``(folder, encoder subfolder or None, tokenizer subfolder or None)``.

    Raises:
        ConfigError: the path is missing or a file, holds no UMT5 encoder, or no tokenizer; the
            message names the path and what was looked for.
    """
    text = os.fspath(path)
    local = Path(os.path.expanduser(text))
    if not local.exists():
        raise ConfigError(
            format_error(
                "text encoder path",
                text,
                "does not exist",
                "pass a local folder holding the UMT5 encoder and its tokenizer, or a full Wan "
                "Diffusers repo (e.g. huggingface-cli download Wan-AI/Wan2.1-T2V-14B-Diffusers "
                "--include 'text_encoder/*' 'tokenizer/*' --local-dir DIR)",
            )
        )
    if not local.is_dir():
        raise ConfigError(
            format_error(
                "text encoder path",
                text,
                "is a file; a Diffusers/transformers folder is needed",
                "single-file checkpoints (models_t5_umt5-xxl-enc-bf16.pth) are not supported: "
                "pass the text_encoder/ and tokenizer/ folders of a Wan Diffusers repo",
            )
        )
    # An explicit subfolder replaces the detection ("" is the folder itself).
    candidates = [subfolder or None] if subfolder is not None else [None, _ENCODER_SUB]
    found = []
    for sub in candidates:
        config = _sub(local, sub) / "config.json"
        model_type = _read_model_type(config)
        if model_type == _MODEL_TYPE:
            return str(local), sub, _find_tokenizer(local, sub, text)
        shown = "absent" if model_type is None else f"model_type {model_type!r}"
        found.append(f"{config} ({shown})")
    raise ConfigError(
        format_error(
            "text encoder path",
            text,
            f"holds no UMT5 encoder config; looked for {', '.join(found)}",
            "pass the UMT5 encoder folder, a full Wan Diffusers repo with text_encoder/ and "
            "tokenizer/, or set subfolder= to where the encoder's config.json is",
        )
    )


# --------------------------------------------------------------------------- loading


def default_device(device: str | torch.device | None) -> torch.device:
    """``device`` parsed; None means the first CUDA device when there is one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return _parse_device(device)


def _dtype_kwarg(transformers: Any) -> str:
    """``from_pretrained``'s dtype keyword: ``dtype`` since transformers 4.56, ``torch_dtype``
    before (older releases would silently ignore ``dtype`` and load fp32)."""
    try:
        major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    except ValueError:
        return "dtype"
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def load_text_encoder(
    folder: str,
    encoder_sub: str | None,
    tokenizer_sub: str | None,
    *,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Any, Any]:
    """Load the UMT5 encoder and its tokenizer the way diffusers' Wan pipelines do.

    ``UMT5EncoderModel.from_pretrained(folder, subfolder=..., dtype=dtype)`` moved to ``device``,
    in eval mode with gradients off, and ``AutoTokenizer.from_pretrained(folder, subfolder=...)``.
    As in diffusers, a bf16 load keeps UMT5's ``wo`` projections in fp32
    (``_keep_in_fp32_modules``); ``model.dtype`` is the requested dtype.

    Returns:
        ``(model, tokenizer)``.

    Raises:
        ConfigError: transformers missing, or the files cannot be loaded (names the folder).
        FatalError: called in a DataLoader worker, or ``device`` is CUDA without CUDA.
    """
    _check_worker("load")
    problem = check_text_dtype(dtype)
    if problem:
        raise ConfigError(problem)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FatalError(
            format_error(
                "device",
                str(device),
                "needs CUDA, which this process cannot use",
                "check the driver and CUDA_VISIBLE_DEVICES, or pass device='cpu'",
                stage=_STAGE,
            )
        )
    transformers = import_transformers()
    encoder_kwargs: dict[str, Any] = {_dtype_kwarg(transformers): dtype}
    if encoder_sub:
        encoder_kwargs["subfolder"] = encoder_sub
    tokenizer_kwargs: dict[str, Any] = {"subfolder": tokenizer_sub} if tokenizer_sub else {}
    where = str(Path(folder) / encoder_sub) if encoder_sub else folder
    try:
        model = transformers.UMT5EncoderModel.from_pretrained(folder, **encoder_kwargs)
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
        raise ConfigError(
            format_error(
                "text encoder",
                where,
                "could not be loaded as a UMT5EncoderModel",
                "check that the folder is a complete transformers save (config.json + "
                f"*.safetensors) ({type(exc).__name__}: {str(exc)[:300]})",
            )
        ) from exc
    tok_where = str(Path(folder) / tokenizer_sub) if tokenizer_sub else folder
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **tokenizer_kwargs)
    except (OSError, ValueError, RuntimeError, TypeError, KeyError, ImportError) as exc:
        raise ConfigError(
            format_error(
                "text tokenizer",
                tok_where,
                "could not be loaded with AutoTokenizer",
                "check that the folder is a complete tokenizer save (tokenizer.json or "
                f"spiece.model + tokenizer_config.json) ({type(exc).__name__}: {str(exc)[:300]})",
            )
        ) from exc
    if model.dtype != dtype:  # from_pretrained ignored the dtype: never encode in another one
        raise FatalError(
            format_error(
                "text encoder dtype after loading",
                str(model.dtype),
                f"differs from the requested {dtype}",
                f"transformers {transformers.__version__} did not apply it; upgrade transformers",
                stage=_STAGE,
            )
        )
    model = model.to(device)
    model.eval()
    model.requires_grad_(False)
    logger.info(
        "loaded text encoder %s (tokenizer %s) on %s (%s): d_model=%d",
        where,
        tok_where,
        device,
        str(dtype).removeprefix("torch."),
        int(model.config.d_model),
    )
    return model, tokenizer
