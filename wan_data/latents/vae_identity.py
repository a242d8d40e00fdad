"""What identifies a Wan VAE for cache keys: :class:`VaeInfo` and the hashes behind it.

A cached latent is only valid for the VAE that made it, so the VAE's identity is part of every
cache key: its architecture config (:func:`_config_hash`, without the fields that say where and
by which diffusers release it was saved), a fingerprint of its weight files
(:func:`weights_fingerprint`, sampled for the real 250-500 MB VAEs), its scale factors, the
latents mean and std it normalises with, and its compute dtype. :func:`_describe` builds the
:class:`VaeInfo` from a loaded model or, for the train pass that must not load one, from its
config alone.

Split out of :mod:`wan_data.latents.vae` so that the train pass's key computation and the cache
pass's loader share one definition of the identity without importing the encoder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wan_data.errors import ConfigError, format_error

__all__ = ["VaeInfo", "weights_fingerprint"]

logger = logging.getLogger("wan_data")

# Weight files up to this total size are hashed in full (a tiny test VAE, a LoRA-sized file);
# the real Wan VAEs (~250-500 MB) get the cheap sampled fingerprint, see weights_fingerprint.
_FULL_HASH_LIMIT = 64 * 2**20
_SAMPLE_BYTES = 2**20


@dataclass(frozen=True)
class VaeInfo:
    """What identifies a VAE for cache keys and reports.

    Attributes:
        z_dim: latent channels (16 for the Wan2.1 VAE, 48 for the Wan2.2 TI2V-5B VAE).
        spatial_factor: pixels per latent cell along H and W (8, or 16 with ``patch_size`` 2).
        temporal_factor: pixel frames per latent frame after the first (4).
        latents_mean: per-channel mean subtracted before caching (from ``vae.config``).
        latents_std: per-channel std divided by before caching (from ``vae.config``).
        config_hash: sha256 of the architecture config, see :func:`_config_hash`.
        weights_hash: fingerprint of the weight files, see :func:`weights_fingerprint`.
        dtype: the dtype the VAE computes in (``"float32"`` or ``"bfloat16"``); part of the
            identity because bf16 encoding gives different latents.
    """

    z_dim: int
    spatial_factor: int
    temporal_factor: int
    latents_mean: tuple[float, ...]
    latents_std: tuple[float, ...]
    config_hash: str
    weights_hash: str
    dtype: str

    def __post_init__(self) -> None:
        problems = []
        if self.z_dim < 1:
            problems.append(format_error("VaeInfo.z_dim", self.z_dim, "must be >= 1"))
        if self.spatial_factor < 1 or self.temporal_factor < 1:
            problems.append(
                format_error(
                    "VaeInfo factors",
                    [self.spatial_factor, self.temporal_factor],
                    "must be >= 1",
                )
            )
        for name, values in (
            ("latents_mean", self.latents_mean),
            ("latents_std", self.latents_std),
        ):
            if len(values) != self.z_dim:
                problems.append(
                    format_error(
                        f"VaeInfo.{name} length",
                        len(values),
                        f"must equal z_dim ({self.z_dim})",
                    )
                )
        if any(not s > 0 for s in self.latents_std):
            problems.append(
                format_error("VaeInfo.latents_std", list(self.latents_std), "must be all > 0")
            )
        if problems:
            raise ValueError("; ".join(problems))


def _config_hash(config: Any) -> str:
    """sha256 of the architecture config, json-serialised with sorted keys.

    Keys starting with ``_`` (``_class_name``, ``_diffusers_version``, ``_name_or_path``,
    ``_use_default_values``) are left out: they describe where and by which diffusers release the
    config was written, not the network, and ``_name_or_path`` would make the same VAE in two
    folders two different cache keys.
    """
    data = {str(k): v for k, v in dict(config).items() if not str(k).startswith("_")}
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _weight_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".safetensors")
    if not files:  # from_pretrained falls back to pickled .bin weights
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".bin")
    return files


def weights_fingerprint(folder: str | os.PathLike[str], *, full_hash_limit: int = -1) -> str:
    """Fingerprint the VAE weight files in ``folder`` for cache keys.

    Small weights (total under 64 MiB: test VAEs) are hashed in full: sha256 over each file's name
    and bytes. The real Wan VAEs are 250-500 MB, and hashing them at every start of a cache pass
    would cost seconds for a question whose answer almost never changes, so large weights are
    fingerprinted by sha256 over each file's name, size, ``mtime_ns`` and its first and last MiB.
    That catches a replaced or re-downloaded file (new mtime, new size or new header) and errs
    on the side of recomputing: copying the folder without preserving mtimes changes the
    fingerprint and re-encodes, it never serves stale latents from different weights of the same
    size, header and mtime (which needs a deliberate edit in the middle of the file that keeps
    its mtime).

    Args:
        folder: the folder holding ``*.safetensors`` (or, lacking those, ``*.bin``) weights.
        full_hash_limit: byte total below which files are hashed in full; -1 means 64 MiB.

    Raises:
        ConfigError: no weight file in ``folder``.
    """
    limit = _FULL_HASH_LIMIT if full_hash_limit < 0 else full_hash_limit
    path = Path(folder)
    files = _weight_files(path)
    if not files:
        raise ConfigError(
            format_error(
                "VAE weights folder",
                str(path),
                "holds no *.safetensors or *.bin file",
                "the folder must be a complete Diffusers save (config.json + weights)",
            )
        )
    stats = [(f, f.stat()) for f in files]
    total = sum(s.st_size for _, s in stats)
    full = total < limit
    digest = hashlib.sha256(b"full\0" if full else b"sampled\0")
    for file, stat in stats:
        digest.update(f"{file.name}\0{stat.st_size}\0".encode())
        with file.open("rb") as handle:
            if full:
                for block in iter(lambda: handle.read(_SAMPLE_BYTES), b""):
                    digest.update(block)
            else:
                digest.update(f"{stat.st_mtime_ns}\0".encode())
                digest.update(handle.read(_SAMPLE_BYTES))
                handle.seek(max(0, stat.st_size - _SAMPLE_BYTES))
                digest.update(handle.read(_SAMPLE_BYTES))
    return digest.hexdigest()


def _state_dict_fingerprint(model: Any) -> str:
    """sha256 over the loaded parameters: the fallback when the weight files cannot be found."""
    digest = hashlib.sha256(b"state_dict\0")
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _hub_folder(repo_id: str, subfolder: str | None) -> Path | None:
    """The local snapshot folder of a hub VAE that from_pretrained has just used, if findable."""
    try:
        from huggingface_hub import snapshot_download

        root = snapshot_download(
            repo_id,
            allow_patterns=[f"{subfolder}/*"] if subfolder else None,
            local_files_only=True,
        )
    except Exception as exc:  # best effort: the caller falls back to hashing the parameters
        logger.debug("no local snapshot of %s for the weights fingerprint: %s", repo_id, exc)
        return None
    folder = Path(root) / subfolder if subfolder else Path(root)
    return folder if folder.is_dir() and _weight_files(folder) else None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _describe(
    model: Any, path: str, sub: str | None, is_local: bool, dtype: torch.dtype
) -> VaeInfo:
    """The :class:`VaeInfo` of a VAE from ``model.config`` and its weight files.

    ``model`` needs only ``config`` (and ``state_dict`` when no weight file is found): the train
    pass passes its config alone. Raises :class:`ConfigError` for a config whose scale factors
    or statistics contradict the architecture.
    """
    config = model.config
    where = f"{path}/{sub}" if sub else path
    z_dim = int(config.z_dim)
    patch = int(config.patch_size or 1)
    # The encoder halves H and W once per stage after the first, after patchify.
    derived_spatial = 2 ** (len(config.dim_mult) - 1) * patch
    spatial = int(config.scale_factor_spatial or derived_spatial)
    temporal = int(getattr(config, "scale_factor_temporal", None) or 4)
    mean = tuple(float(v) for v in config.latents_mean)
    std = tuple(float(v) for v in config.latents_std)
    problems = []
    if spatial != derived_spatial:
        problems.append(
            format_error(
                "VAE scale_factor_spatial",
                spatial,
                f"disagrees with the architecture (dim_mult and patch_size give {derived_spatial})",
            )
        )
    if len(mean) != z_dim or len(std) != z_dim:
        problems.append(
            format_error(
                "VAE latents_mean/latents_std lengths",
                [len(mean), len(std)],
                f"must both equal z_dim ({z_dim})",
            )
        )
    if any(not s > 0 for s in std):
        problems.append(format_error("VAE latents_std", list(std), "must be all > 0"))
    if problems:
        raise ConfigError([f"{p} [file={where}/config.json]" for p in problems])

    folder = Path(os.path.expanduser(path)) / sub if sub else Path(os.path.expanduser(path))
    if not is_local:
        found = _hub_folder(path, sub)
        folder = found if found is not None else folder
    if folder.is_dir() and _weight_files(folder):
        weights = weights_fingerprint(folder)
    else:
        logger.info("weight files of %s not found locally; fingerprinting the parameters", where)
        weights = _state_dict_fingerprint(model)
    return VaeInfo(
        z_dim=z_dim,
        spatial_factor=spatial,
        temporal_factor=temporal,
        latents_mean=mean,
        latents_std=std,
        config_hash=_config_hash(config),
        weights_hash=weights,
        dtype=_dtype_name(dtype),
    )
