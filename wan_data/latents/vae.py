"""The VAE side of the cache pass: encode pixel clips into normalised Wan latents.

The Wan VAE is loaded through ``diffusers.AutoencoderKLWan.from_pretrained`` (the path users
take), from a folder holding the VAE itself or from a full Wan Diffusers repo whose ``vae/``
subfolder is found automatically. What is cached is ``(latent_dist.mode() - latents_mean) /
latents_std`` with the statistics taken from ``vae.config`` (the VAE does not normalise; ``mode``
is deterministic, which is what musubi-tuner and diffusion-pipe cache).

The encoder runs in exactly one process per GPU, never inside a forked DataLoader worker: the
model is built lazily in the process that uses it and refuses to load in a worker. Running out
of device memory is not fatal for the run: :class:`VaeEncoder` halves the number of clips per VAE
call down to one, then retries the clip with spatial tiling, and only then gives up on that clip
with ``SampleError(reason="out_of_memory")`` so the rest of the dataset is still cached.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
import logging
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wan_data.errors import ConfigError, FatalError, SampleError, format_error

__all__ = [
    "VaeEncoder",
    "VaeInfo",
    "denormalise",
    "is_out_of_memory",
    "latent_shape",
    "load_vae",
    "normalise",
    "resolve_vae_path",
    "weights_fingerprint",
]

logger = logging.getLogger("wan_data")

_VAE_CLASS = "AutoencoderKLWan"
_STAGE = "vae_encode"
# Weight files up to this total size are hashed in full (a tiny test VAE, a LoRA-sized file);
# the real Wan VAEs (~250-500 MB) get the cheap sampled fingerprint, see weights_fingerprint.
_FULL_HASH_LIMIT = 64 * 2**20
_SAMPLE_BYTES = 2**20
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_RANGE_SLACK = 1e-3  # float pixels may overshoot [-1, 1] by rounding, not by a wrong scale


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


# --------------------------------------------------------------------------- locating the VAE


def _is_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and not text.startswith((".", "~"))


def _read_class_name(config: Path) -> str | None:
    """``_class_name`` of a diffusers config, or None when the file is absent."""
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            format_error(
                "VAE config",
                str(config),
                "is not a readable JSON file",
                f"fix or replace it ({type(exc).__name__}: {exc})",
            )
        ) from exc
    name = data.get("_class_name") if isinstance(data, dict) else None
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


# --------------------------------------------------------------------------- identity hashes


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


# --------------------------------------------------------------------------- loading


def _hub_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - diffusers depends on huggingface_hub
        return False


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check_worker(action: str) -> None:
    """Refuse to run the VAE inside a DataLoader worker process.

    The VAE runs once per GPU in the process that owns the device: a copy per forked worker
    would multiply device memory, and CUDA cannot be initialised in a forked child at all.
    """
    worker = torch.utils.data.get_worker_info()
    if worker is not None:
        raise FatalError(
            format_error(
                "VAE",
                f"{action} in DataLoader worker {worker.id} of {worker.num_workers}",
                "must run in the main process (one VAE per GPU), never inside a DataLoader worker",
                "decode clips in the workers and call VaeEncoder.encode on the batches the "
                "DataLoader yields",
                stage=_STAGE,
            )
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


def _describe(
    model: Any, path: str, sub: str | None, is_local: bool, dtype: torch.dtype
) -> VaeInfo:
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


# --------------------------------------------------------------------------- latent math


def _stats(latents: torch.Tensor, info: VaeInfo) -> tuple[torch.Tensor, torch.Tensor]:
    if latents.ndim not in (4, 5) or latents.shape[-4] != info.z_dim:
        raise ValueError(
            format_error(
                "latents shape",
                list(latents.shape),
                f"must be (B, {info.z_dim}, T, h, w) or ({info.z_dim}, T, h, w)",
            )
        )
    shape = (info.z_dim, 1, 1, 1)
    mean = torch.tensor(info.latents_mean, dtype=torch.float32, device=latents.device)
    std = torch.tensor(info.latents_std, dtype=torch.float32, device=latents.device)
    return mean.reshape(shape), std.reshape(shape)


def normalise(latents: torch.Tensor, info: VaeInfo) -> torch.Tensor:
    """``(latents - latents_mean) / latents_std`` per channel, computed in float32.

    The diffusion model is trained on normalised latents and the VAE does not normalise, so this
    is what the cache stores. Accepts ``(B, z, T, h, w)`` or ``(z, T, h, w)``; returns float32
    (normalising in bf16 would add rounding before the cast to the storage dtype).
    """
    mean, std = _stats(latents, info)
    return (latents.to(torch.float32) - mean) / std


def denormalise(latents: torch.Tensor, info: VaeInfo) -> torch.Tensor:
    """Inverse of :func:`normalise`, for decoding cached latents back to pixels (previews)."""
    mean, std = _stats(latents, info)
    return latents.to(torch.float32) * std + mean


def latent_shape(frames: int, height: int, width: int, info: VaeInfo) -> tuple[int, int, int, int]:
    """``(z, (F-1)//4+1, H/s, W/s)``: the latent shape of one clip, for cache planning.

    Raises:
        ValueError: ``frames`` is not ``4k+1`` (the diffusers VAE silently drops extra frames:
            F=8 encodes like F=5), or ``height``/``width`` are not positive multiples of the
            spatial factor.
    """
    t = info.temporal_factor
    problems = []
    if frames < 1 or (frames - 1) % t:
        problems.append(
            format_error(
                "frame count",
                frames,
                f"must be {t}k+1 (1, {t + 1}, {2 * t + 1}, ..., 81) for the Wan VAE",
                f"the VAE silently drops extra frames; sample exactly {t}k+1 frames",
            )
        )
    s = info.spatial_factor
    for name, value in (("height", height), ("width", width)):
        if value < 1 or value % s:
            problems.append(
                format_error(
                    f"pixel {name}",
                    value,
                    f"must be a positive multiple of {s} (the VAE's spatial factor)",
                    "choose a bucket whose sides are multiples of it",
                )
            )
    if problems:
        raise ValueError("; ".join(problems))
    return info.z_dim, (frames - 1) // t + 1, height // s, width // s


def is_out_of_memory(exc: BaseException) -> bool:
    """True for device out-of-memory errors worth a fallback.

    ``torch.cuda.OutOfMemoryError`` (and any exception class named ``OutOfMemoryError``, such as
    other backends' or a test's injected one), plus ``RuntimeError``s whose message says the
    allocator failed (CPU: "can't allocate memory"; older builds: "out of memory"). Python's
    ``MemoryError`` is not one of them: the host itself is out of memory and the run must stop.
    """
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    if isinstance(exc, RuntimeError):
        message = str(exc).lower()
        return "out of memory" in message or "can't allocate memory" in message
    return False


# --------------------------------------------------------------------------- the encoder


class VaeEncoder:
    """Encodes uint8 or [-1, 1] float pixel clips (B, 3, F, H, W) of ONE bucket into latents.

    One instance per process: the Wan encoder keeps a per-call feature cache on the model, so two
    threads sharing a model would corrupt each other's latents (calls are serialised by a lock).
    The model is built lazily in the process that first uses it and never inside a forked
    DataLoader worker: loading (or encoding) there raises :class:`FatalError`, because a VAE per
    worker multiplies device memory and CUDA cannot start in a forked child. Pickling drops the
    model, so an encoder handed to a worker cannot smuggle one in either.

    Out of device memory, a call falls back step by step (each logged): fewer clips per VAE call
    (halved down to 1; remembered per clip shape for later calls, since it does not change the
    latents), then that clip alone with ``vae.enable_tiling()`` (which changes latents slightly,
    so it is used for that clip only), then ``SampleError(reason="out_of_memory")`` for that clip.
    Tiling only splits frames larger than diffusers' tile (256 px by default; for the Wan2.2 VAE
    the tiles are counted after its 2x2 patchify, so only beyond ~384 px); below that the tiled
    retry is a plain retry after freeing memory.

    Args:
        vae: local folder or hub id, see :func:`resolve_vae_path`; checked at construction.
        device: where the VAE runs.
        vae_dtype: the VAE's compute dtype (fp32 default; bf16 is faster and less exact).
        latent_dtype: dtype of the returned latents (what the cache stores).
        encode_batch_size: clips per VAE call.
        subfolder: the folder inside ``vae`` holding the VAE; detected when None.
        tiling: encode every clip tiled (saves memory at large sizes, changes latents slightly).

    Raises:
        ConfigError: every bad option at once (and a missing/invalid local VAE path).
    """

    def __init__(
        self,
        vae: str | os.PathLike[str],
        *,
        device: str | torch.device = "cpu",
        vae_dtype: torch.dtype = torch.float32,
        latent_dtype: torch.dtype = torch.bfloat16,
        encode_batch_size: int = 1,
        subfolder: str | None = None,
        tiling: bool = False,
    ) -> None:
        problems: list[str] = []
        try:
            self.device = _parse_device(device)
        except ConfigError as exc:
            problems.extend(exc.problems)
            self.device = torch.device("cpu")
        if vae_dtype not in _FLOAT_DTYPES:
            problems.append(
                format_error("vae_dtype", str(vae_dtype), "must be float32, bfloat16 or float16")
            )
        if latent_dtype not in _FLOAT_DTYPES:
            problems.append(
                format_error(
                    "latent_dtype", str(latent_dtype), "must be float32, bfloat16 or float16"
                )
            )
        if not isinstance(encode_batch_size, int) or encode_batch_size < 1:
            problems.append(format_error("encode_batch_size", encode_batch_size, "must be >= 1"))
        try:
            self._path, self._subfolder = resolve_vae_path(vae, subfolder=subfolder)
        except ConfigError as exc:
            problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)
        self.vae_dtype = vae_dtype
        self.latent_dtype = latent_dtype
        self.encode_batch_size = encode_batch_size
        self.tiling = tiling
        self._model: Any = None
        self._info: VaeInfo | None = None
        self._lock = threading.Lock()
        self._chunk_by_shape: dict[tuple[int, int, int], int] = {}
        self._fallbacks = {"chunk_halved": 0, "tiled": 0, "out_of_memory": 0}

    # -- lifecycle

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = f"{self._path}/{self._subfolder}" if self._subfolder else self._path
        return (
            f"VaeEncoder({where!r}, device={self.device}, vae_dtype={_dtype_name(self.vae_dtype)},"
            f" latent_dtype={_dtype_name(self.latent_dtype)}, "
            f"encode_batch_size={self.encode_batch_size}, loaded={self._model is not None})"
        )

    def _load(self) -> Any:
        _check_worker("load" if self._model is None else "use")
        if self._model is None:
            model, info = load_vae(
                self._path, device=self.device, dtype=self.vae_dtype, subfolder=self._subfolder
            )
            if self.tiling:
                model.enable_tiling()
            self._model, self._info = model, info
        return self._model

    @property
    def model(self) -> Any:
        """The loaded ``AutoencoderKLWan`` (loads it on first use)."""
        return self._load()

    @property
    def info(self) -> VaeInfo:
        """The VAE's identity for cache keys (loads the model on first use)."""
        if self._info is None:
            self._load()
        assert self._info is not None
        return self._info

    @property
    def fallbacks(self) -> dict[str, int]:
        """How often each out-of-memory fallback was taken (for the run report)."""
        return dict(self._fallbacks)

    def unload(self) -> None:
        """Drop the model and free its device memory (e.g. between the cache and train passes)."""
        with self._lock:
            self._model = None
            self._free_memory()

    # -- encoding

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Encode one bucket's clips into normalised latents.

        Args:
            pixels: ``(B, 3, F, H, W)``, uint8 in [0, 255] or float in [-1, 1], with ``F = 4k+1``
                and ``H``, ``W`` multiples of the spatial factor.

        Returns:
            ``(B, z, T, h, w)`` latents in ``latent_dtype`` on the CPU.

        Raises:
            ValueError: bad shape, dtype or value range (names the value and the rule).
            SampleError: a clip ran out of memory after every fallback (``reason
                "out_of_memory"``); use :meth:`encode_each` to keep the other clips.
        """
        results = self._encode_all(pixels)
        for result in results:
            if isinstance(result, SampleError):
                raise result
        return torch.stack([r for r in results if isinstance(r, torch.Tensor)])

    def encode_each(self, pixels: torch.Tensor) -> list[torch.Tensor | SampleError]:
        """Like :meth:`encode`, but per clip, so one clip's OOM does not lose the others.

        Returns:
            One entry per clip: its ``(z, T, h, w)`` latent (an independent tensor, so saving it
            does not save its neighbours' storage) or the ``SampleError`` that ended it.
        """
        return [
            r.clone(memory_format=torch.contiguous_format) if isinstance(r, torch.Tensor) else r
            for r in self._encode_all(pixels)
        ]

    def _check_pixels(self, pixels: torch.Tensor, info: VaeInfo) -> None:
        if not isinstance(pixels, torch.Tensor):
            raise ValueError(
                format_error("pixels", type(pixels).__name__, "must be a torch.Tensor")
            )
        if pixels.ndim != 5 or pixels.shape[0] < 1 or pixels.shape[1] != 3:
            raise ValueError(
                format_error(
                    "pixels shape",
                    list(pixels.shape),
                    "must be (B, 3, F, H, W) with B >= 1",
                    "images are clips with F = 1",
                )
            )
        if pixels.dtype != torch.uint8 and not pixels.is_floating_point():
            raise ValueError(
                format_error("pixels dtype", str(pixels.dtype), "must be uint8 or floating point")
            )
        _, _, frames, height, width = pixels.shape
        latent_shape(frames, height, width, info)
        if pixels.is_floating_point():
            low, high = (float(v) for v in torch.aminmax(pixels))
            if not (low >= -1 - _RANGE_SLACK and high <= 1 + _RANGE_SLACK):
                raise ValueError(
                    format_error(
                        "float pixels range",
                        [round(low, 4), round(high, 4)],
                        "must be within [-1, 1] (and finite)",
                        "pass uint8 pixels, or convert them with x / 127.5 - 1",
                    )
                )

    def _to_model_input(self, part: torch.Tensor) -> torch.Tensor:
        x = part.to(self.device)
        if x.dtype == torch.uint8:
            x = x.to(torch.float32).div_(127.5).sub_(1.0)  # a new tensor: in place is safe
        return x.to(self.vae_dtype)

    def _encode_chunk(self, model: Any, part: torch.Tensor, info: VaeInfo) -> torch.Tensor:
        try:
            x = self._to_model_input(part)
            with torch.no_grad():
                mode = model.encode(x).latent_dist.mode()
                latents = normalise(mode, info)
            del x, mode
            _, _, frames, height, width = part.shape
            expected = (part.shape[0], *latent_shape(frames, height, width, info))
            if tuple(latents.shape) != expected:
                raise FatalError(
                    format_error(
                        "VAE output shape",
                        list(latents.shape),
                        f"differs from the expected {list(expected)}",
                        "the VAE config's scale factors do not match the network",
                        stage=_STAGE,
                    )
                )
            return latents.to(device="cpu", dtype=self.latent_dtype)
        finally:
            clear = getattr(model, "clear_cache", None)
            if callable(clear):
                clear()  # drop the feature cache an interrupted call leaves on the model

    def _free_memory(self) -> None:
        gc.collect()
        if self.device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _encode_all(self, pixels: torch.Tensor) -> list[torch.Tensor | SampleError]:
        with self._lock:
            model = self._load()
            info = self.info
            self._check_pixels(pixels, info)
            count, _, frames, height, width = pixels.shape
            shape = (frames, height, width)
            chunk = min(self._chunk_by_shape.get(shape, self.encode_batch_size), count)
            results: list[torch.Tensor | SampleError] = []
            start = 0
            while start < count:
                part = pixels[start : start + chunk]
                latents, oom = self._attempt(model, part, info)
                if latents is not None:
                    results.extend(latents.unbind(0))
                    start += part.shape[0]
                    continue
                self._free_memory()
                if chunk > 1:
                    smaller = max(1, chunk // 2)
                    logger.warning(
                        "VAE encode out of memory for %d clips of %s (%s); retrying with %d "
                        "clips per call",
                        chunk,
                        _shape_text(shape),
                        oom,
                        smaller,
                    )
                    self._fallbacks["chunk_halved"] += 1
                    chunk = smaller
                    self._chunk_by_shape[shape] = smaller
                    continue
                results.append(self._encode_tiled(model, part, info, start, count, oom))
                start += 1
            return results

    def _attempt(
        self, model: Any, part: torch.Tensor, info: VaeInfo
    ) -> tuple[torch.Tensor | None, str]:
        """One VAE call; an OOM comes back as text so its traceback (and tensors) die here."""
        try:
            return self._encode_chunk(model, part, info), ""
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            return None, f"{type(exc).__name__}: {str(exc)[:200]}"

    def _encode_tiled(
        self, model: Any, clip: torch.Tensor, info: VaeInfo, index: int, count: int, oom: str
    ) -> torch.Tensor | SampleError:
        shape = _shape_text(tuple(clip.shape[2:]))
        if not self.tiling:
            logger.warning(
                "VAE encode out of memory for clip %d of %d (%s) alone (%s); retrying it with "
                "tiling (its latents differ slightly from untiled ones)",
                index,
                count,
                shape,
                oom,
            )
            model.enable_tiling()
            try:
                latents, oom = self._attempt(model, clip, info)
            finally:
                model.disable_tiling()
            if latents is not None:
                self._fallbacks["tiled"] += 1
                return latents[0]
            self._free_memory()
        logger.error(
            "VAE encode out of memory for clip %d of %d (%s) even alone and tiled (%s); "
            "skipping it",
            index,
            count,
            shape,
            oom,
        )
        self._fallbacks["out_of_memory"] += 1
        return SampleError(
            format_error(
                "VAE encode",
                f"clip {index} of {count}, {shape}",
                "ran out of device memory with 1 clip per call and tiling",
                "use a smaller bucket (fewer frames or pixels) or a device with more memory",
                stage=_STAGE,
            ),
            reason="out_of_memory",
        )


def _shape_text(shape: Iterable[int]) -> str:
    frames, height, width = tuple(shape)
    return f"{frames} frames of {width}x{height}"
