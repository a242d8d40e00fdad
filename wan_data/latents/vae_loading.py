"""Finding and loading a Wan VAE the way users do, in the one process allowed to run it.

Users point at a folder holding the VAE itself, at a full Wan Diffusers repo whose ``vae/``
subfolder is found automatically (:func:`resolve_vae_path`), or at a hub id; :func:`load_vae`
loads it with ``diffusers.AutoencoderKLWan.from_pretrained`` (honouring ``HF_HUB_OFFLINE``),
in eval mode with gradients off, and describes it as a
:class:`~wan_data.latents.vae_identity.VaeInfo`. Every failure names the path and what was
looked for. The VAE runs once per GPU in
the process that owns the device: :func:`_check_worker` refuses to load or run it inside a
DataLoader worker.

Split out of :mod:`wan_data.latents.vae` so that locating and loading (configuration errors,
hub and device handling) can be read apart from encoding.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from wan_data.errors import ConfigError, FatalError, format_error
from wan_data.latents.model_files import read_json_config, refuse_in_worker
from wan_data.latents.vae_identity import VaeInfo, _describe

__all__ = ["load_vae", "resolve_vae_path"]

logger = logging.getLogger("wan_data")

_VAE_CLASS = "AutoencoderKLWan"
_STAGE = "vae_encode"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# --------------------------------------------------------------------------- locating the VAE


def _is_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and not text.startswith((".", "~"))


def _read_class_name(config: Path) -> str | None:
    """``_class_name`` of a diffusers config, or None when the file is absent."""
    data = read_json_config(config, "VAE config")
    if data is None:
        return None
    name = data.get("_class_name")
    return str(name) if name is not None else ""


def resolve_vae_path(
    vae: str | os.PathLike[str], *, subfolder: str | None = None
) -> tuple[str, str | None]:
    """Find where the Wan VAE lives, so users can point at a VAE folder or at the whole repo.

    A local folder is decided by its files: its own ``config.json`` naming ``AutoencoderKLWan``
    means the folder is the VAE; otherwise ``vae/config.json`` naming it means a full Wan
    Diffusers repo. A string that is not a local path but looks like ``org/name`` is a hub id,
    returned as ``(vae, subfolder or "vae")`` for ``from_pretrained`` to resolve (an empty
    ``subfolder=""`` means the repo root).

    Args:
        vae: a local folder or a hub id.
        subfolder: the folder inside ``vae`` holding the VAE; overrides the detection.

    Returns:
        ``(path or hub id, subfolder or None)`` ready for ``from_pretrained``.

    Raises:
        ConfigError: the local path is missing, is a file, or holds no Wan VAE; the message names
            the path and what was looked for.
    """
    text = os.fspath(vae)
    local = Path(os.path.expanduser(text))
    sub = subfolder or None
    if not local.exists():
        if _is_hub_id(text):
            return text, (subfolder if subfolder is not None else "vae") or None
        raise ConfigError(
            format_error(
                "VAE path",
                text,
                "does not exist",
                "pass a local Diffusers folder (the VAE's own folder or a full Wan Diffusers "
                "repo with a vae/ subfolder) or a hub id like Wan-AI/Wan2.1-T2V-14B-Diffusers",
            )
        )
    if not local.is_dir():
        raise ConfigError(
            format_error(
                "VAE path",
                text,
                "is a file; a Diffusers folder is needed",
                "single-file checkpoints (Wan2.1_VAE.pth, *.safetensors) are not supported: "
                "pass the Diffusers-format folder (config.json + diffusion_pytorch_model."
                "safetensors), e.g. the vae/ folder of Wan-AI/Wan2.1-T2V-14B-Diffusers",
            )
        )
    candidates: list[tuple[Path, str | None]]
    if sub is not None:
        candidates = [(local / sub / "config.json", sub)]
    else:
        candidates = [(local / "config.json", None), (local / "vae" / "config.json", "vae")]
    found = []
    for config, candidate_sub in candidates:
        name = _read_class_name(config)
        if name == _VAE_CLASS:
            return str(local), candidate_sub
        found.append(f"{config} ({'absent' if name is None else f'_class_name {name!r}'})")
    raise ConfigError(
        format_error(
            "VAE path",
            text,
            f"holds no {_VAE_CLASS} config; looked for {', '.join(found)}",
            "pass the Wan VAE folder, a full Wan Diffusers repo with a vae/ subfolder, "
            "or set subfolder= to where the VAE's config.json is",
        )
    )


# --------------------------------------------------------------------------- loading


def _hub_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - diffusers depends on huggingface_hub
        return False


def _check_worker(action: str) -> None:
    """Refuse to run the VAE inside a DataLoader worker process.

    The VAE runs once per GPU in the process that owns the device: a copy per forked worker
    would multiply device memory, and CUDA cannot be initialised in a forked child at all.
    """
    refuse_in_worker(
        "VAE",
        action,
        "must run in the main process (one VAE per GPU), never inside a DataLoader worker",
        "decode clips in the workers and call VaeEncoder.encode on the batches the "
        "DataLoader yields",
        _STAGE,
    )


def _parse_device(device: str | torch.device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(
            format_error("device", str(device), "is not a torch device", "use 'cpu' or 'cuda:0'")
        ) from exc


def load_vae(
    vae: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    subfolder: str | None = None,
) -> tuple[Any, VaeInfo]:
    """Load a Wan VAE the way users do and describe it.

    ``AutoencoderKLWan.from_pretrained(path, subfolder=..., torch_dtype=dtype)``, moved to
    ``device``, in eval mode with gradients off (the cache pass never trains the VAE).

    Args:
        vae: local folder or hub id, see :func:`resolve_vae_path`.
        device: where the VAE runs.
        dtype: the VAE's compute dtype (fp32 by default: bf16 changes the latents).
        subfolder: the folder inside ``vae`` holding the VAE; detected when None.

    Returns:
        ``(model, VaeInfo)``.

    Raises:
        ConfigError: missing path, no Wan VAE there, unreadable config or weights, a hub id that
            cannot be downloaded here; the message names the path and how to fix it.
        FatalError: ``device`` is CUDA and CUDA is not available, or called inside a DataLoader
            worker.
    """
    _check_worker("load")
    target = _parse_device(device)
    if dtype not in _FLOAT_DTYPES:
        raise ConfigError(
            format_error("vae_dtype", str(dtype), "must be torch.float32, bfloat16 or float16")
        )
    if target.type == "cuda" and not torch.cuda.is_available():
        raise FatalError(
            format_error(
                "device",
                str(target),
                "needs CUDA, which this process cannot use",
                "check the driver and CUDA_VISIBLE_DEVICES, or pass device='cpu'",
                stage=_STAGE,
            )
        )
    path, sub = resolve_vae_path(vae, subfolder=subfolder)
    is_local = Path(os.path.expanduser(path)).is_dir()
    offline = _hub_offline()
    where = f"{path}/{sub}" if sub else path

    from diffusers import AutoencoderKLWan

    kwargs: dict[str, Any] = {"subfolder": sub, "torch_dtype": dtype}
    if not is_local and offline:
        kwargs["local_files_only"] = True
    if importlib.util.find_spec("accelerate") is None:
        kwargs["low_cpu_mem_usage"] = False  # the default would only warn and do this anyway
    try:
        model = AutoencoderKLWan.from_pretrained(path, **kwargs)
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
        detail = f"{type(exc).__name__}: {str(exc)[:300]}"
        if not is_local and offline:
            hint = (
                "weights cannot be downloaded here (HF_HUB_OFFLINE is set) and no local copy is "
                f"cached; pass a local folder holding the VAE ({detail})"
            )
            raise ConfigError(
                format_error("VAE hub id", path, "is not available offline", hint)
            ) from exc
        hint = (
            "check that the folder is a complete Diffusers save of AutoencoderKLWan "
            f"(config.json + diffusion_pytorch_model.safetensors) ({detail})"
        )
        raise ConfigError(format_error("VAE", where, "could not be loaded", hint)) from exc
    model = model.to(target)
    model.eval()
    model.requires_grad_(False)

    info = _describe(model, path, sub, is_local, dtype)
    logger.info(
        "loaded VAE %s on %s (%s): z_dim=%d spatial=%d temporal=%d",
        where,
        target,
        info.dtype,
        info.z_dim,
        info.spatial_factor,
        info.temporal_factor,
    )
    return model, info
