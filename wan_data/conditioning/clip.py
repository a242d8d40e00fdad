"""CLIP image embeddings for Wan 2.1 I2V / FLF2V, equal to ``WanImageToVideoPipeline.encode_image``.

Wan 2.1 I2V-14B and FLF2V cross-attend to CLIP ViT-H/14 tokens of the given frame(s): the
penultimate hidden state (257 tokens: CLS + 16 x 16 patches, no post layer-norm); Wan 2.2 models
take none. :class:`ClipImageEncoder` loads the encoder and its ``CLIPImageProcessor`` through
transformers' ``from_pretrained`` (the encoder's folder, or a Wan 2.1 I2V Diffusers repo's
``image_encoder/`` + ``image_processor/``) and computes what diffusers does: processor ->
``output_hidden_states=True`` -> ``hidden_states[-2]``.

Preprocessing follows diffusers, not the original Wan repository: shortest edge to 224 (bicubic),
centre crop 224 x 224; the original squashes the whole frame to 224 x 224. Caches made with one do
not match the other. Frames reach the processor as PIL images, as a diffusers user passes them:
processors treat PIL, uint8 and float inputs differently (a float tensor is rescaled by 1/255
again), so the input known to give the pipeline's result is the same PIL image. uint8 frames
convert losslessly; float frames in [-1, 1] are quantised as diffusers' ``postprocess(
output_type="pil")`` does. transformers (the ``text`` extra) is imported only when loading.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wan_data.errors import ConfigError, FatalError, format_error
from wan_data.latents.model_files import import_transformers, read_json_config, refuse_in_worker
from wan_data.latents.vae_identity import (
    _config_hash,
    _dtype_name,
    _hub_folder,
    _state_dict_fingerprint,
    _weight_files,
    weights_fingerprint,
)
from wan_data.latents.vae_loading import _FLOAT_DTYPES, _hub_offline, _is_hub_id, _parse_device

__all__ = [
    "ClipImageEncoder",
    "ClipInfo",
    "flf2v_image_embeds",
    "frames_to_pil",
    "resolve_clip_path",
]

logger = logging.getLogger("wan_data")

_STAGE = "clip_encode"
_ENCODER_SUB = "image_encoder"
_PROCESSOR_SUB = "image_processor"
_MODEL_TYPES = ("clip_vision_model", "clip")
_PROCESSOR_FILE = "preprocessor_config.json"
# What is taken from the model and how frames reach it: part of the identity, so a change to
# either makes a new cache key rather than mixing embeddings.
_RECIPE = "diffusers-encode_image/pil-uint8/hidden_states[-2]"
# Config keys that say who saved the model or how it was loaded, not what it computes.
_VOLATILE_KEYS = ("transformers_version", "dtype", "torch_dtype", "architectures")


@dataclass(frozen=True)
class ClipInfo:
    """What identifies a CLIP image encoder for cache keys and reports.

    Attributes:
        hidden_size: width of each token (1280 for Wan 2.1's ViT-H/14).
        num_tokens: tokens per image, ``(image_size / patch_size)^2 + 1`` (257).
        config_hash: sha256 of the model config without the saving/loading fields.
        weights_hash: fingerprint of the weight files (as for the VAE, see
            :func:`~wan_data.latents.vae_identity.weights_fingerprint`).
        processor_hash: sha256 of the image processor's class and settings (resize, crop,
            mean/std change the embeddings as much as the weights do).
        dtype: the compute dtype (``"float32"`` by default).
        recipe: which output and which input conversion, see the module docstring.
    """

    hidden_size: int
    num_tokens: int
    config_hash: str
    weights_hash: str
    processor_hash: str
    dtype: str
    recipe: str = _RECIPE


def _import_transformers() -> Any:
    """transformers, or a ConfigError naming the extra that installs it."""
    return import_transformers("for CLIP image embeddings (Wan 2.1 I2V / FLF2V)")


def _check_worker(action: str) -> None:
    """Refuse to run CLIP in a DataLoader worker: one model per GPU, and no CUDA after fork."""
    refuse_in_worker(
        "CLIP image encoder",
        action,
        "must run in the main process, never inside a DataLoader worker",
        "decode frames in the workers and call ClipImageEncoder.encode on the batches "
        "the DataLoader yields",
        _STAGE,
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    return read_json_config(path, "CLIP config")


def resolve_clip_path(
    path: str | os.PathLike[str], *, subfolder: str | None = None
) -> tuple[str, str | None, str | None]:
    """Find the CLIP encoder and its processor in a folder, a Wan repo, or on the hub.

    A local folder whose ``config.json`` is a CLIP (vision) config is the encoder; otherwise
    ``image_encoder/config.json`` means a Wan 2.1 I2V Diffusers repo. The processor's
    ``preprocessor_config.json`` is looked for in ``image_processor/`` and then next to the
    encoder. A missing local path that looks like ``org/name`` is a hub id, resolved to the Wan
    repo layout.

    Returns:
        ``(path or hub id, encoder subfolder or None, processor subfolder or None)``.

    Raises:
        ConfigError: the path is missing, or holds no CLIP encoder or no processor config.
    """
    text = os.fspath(path)
    local = Path(os.path.expanduser(text))
    if not local.exists() and _is_hub_id(text):
        return text, subfolder or _ENCODER_SUB, _PROCESSOR_SUB
    if not local.is_dir():
        raise ConfigError(
            format_error(
                "CLIP path",
                text,
                "does not exist" if not local.exists() else "is a file; a folder is needed",
                "pass the CLIP image encoder's folder (config.json + weights + "
                "preprocessor_config.json) or a Wan 2.1 I2V Diffusers repo",
            )
        )
    candidates = [subfolder] if subfolder else [None, _ENCODER_SUB]
    looked = []
    for sub in candidates:
        folder = local / sub if sub else local
        config = _read_json(folder / "config.json")
        if config is not None and config.get("model_type") in _MODEL_TYPES:
            for proc_sub in (_PROCESSOR_SUB, sub):
                if ((local / proc_sub) if proc_sub else local).joinpath(_PROCESSOR_FILE).is_file():
                    return str(local), sub, proc_sub
            raise ConfigError(
                format_error(
                    "CLIP image processor",
                    str(local),
                    f"has no {_PROCESSOR_FILE} in {_PROCESSOR_SUB}/ or next to the encoder",
                    "save the CLIPImageProcessor with the model (its resize/crop/mean/std "
                    "change the embeddings)",
                )
            )
        found = "absent" if config is None else f"model_type {config.get('model_type')!r}"
        looked.append(f"{folder / 'config.json'} ({found})")
    hint = "pass the CLIP folder or a Wan 2.1 I2V / FLF2V Diffusers repo"
    if (local / "vae").is_dir():
        hint += "; Wan 2.2 (I2V-A14B, TI2V-5B) and T2V repos have no image encoder"
    raise ConfigError(
        format_error("CLIP path", text, f"holds no CLIP config; looked for {looked}", hint)
    )


def _check_frames(frames: object) -> None:
    if not isinstance(frames, torch.Tensor):
        raise ValueError(format_error("frames", type(frames).__name__, "must be a torch.Tensor"))
    ok_dtype = frames.dtype == torch.uint8 or frames.is_floating_point()
    if frames.ndim != 4 or frames.shape[0] < 1 or frames.shape[1] != 3 or not ok_dtype:
        what = f"{list(frames.shape)} {frames.dtype}"
        rule = "must be (B, 3, H, W) uint8 or float in [-1, 1]"
        raise ValueError(format_error("frames", what, rule, "for a clip pass pixels[:, :, 0]"))
    if frames.is_floating_point():
        low, high = (round(float(v), 4) for v in torch.aminmax(frames))
        if not (low >= -1.001 and high <= 1.001):
            rule = "must be within [-1, 1] (and finite)"
            raise ValueError(format_error("float frames range", [low, high], rule))


def frames_to_pil(frames: torch.Tensor) -> list[Any]:
    """``(B, 3, H, W)`` uint8, or float in [-1, 1], -> B RGB PIL images, as diffusers users pass.

    Float frames are quantised as ``VaeImageProcessor.postprocess(output_type="pil")`` does:
    ``round(clamp(x / 2 + 0.5, 0, 1) * 255)``, so uint8 -> ``x / 127.5 - 1`` -> here is lossless.
    """
    from PIL import Image

    if frames.is_floating_point():
        unit = (frames.detach().to("cpu", torch.float32) / 2 + 0.5).clamp(0, 1)
        frames = (unit * 255).round().to(torch.uint8)
    hwc = frames.detach().to("cpu").permute(0, 2, 3, 1).contiguous().numpy()
    return [Image.fromarray(image) for image in hwc]  # (H, W, 3) uint8 -> RGB


def flf2v_image_embeds(first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """FLF2V embeddings per sample, ``(B, 2 * 257, D)``: first frame's tokens, then the last's.

    Equals ``encode_image([first_image, last_image])`` (``(2, 257, D)``) flattened per sample, the
    ``(514, 1280)`` a cache stores. diffusers' FLF2V transformer (``pos_embed_seq_len=514``)
    takes them as ``(2B, 257, D)`` and regroups them itself: pass ``embeds.reshape(-1, 257, D)``.
    """
    if first.shape != last.shape or first.ndim != 3:
        shapes = [list(first.shape), list(last.shape)]
        raise ValueError(format_error("FLF2V embeds shapes", shapes, "must be equal (B, T, D)"))
    return torch.stack([first, last], dim=1).reshape(first.shape[0], -1, first.shape[2])


class ClipImageEncoder:
    """Encodes frames ``(B, 3, H, W)`` into Wan 2.1's CLIP image tokens ``(B, 257, hidden)``.

    ``encode`` equals ``WanImageToVideoPipeline.encode_image`` given the same frames as PIL
    images (see the module docstring). The model is built lazily in the process that first uses
    it, never inside a DataLoader worker, and pickling drops it (like the VAE encoder).

    Args:
        path: CLIP folder, Wan 2.1 I2V Diffusers repo, or hub id (see :func:`resolve_clip_path`).
        device: where CLIP runs; None is ``cuda`` when available, else ``cpu``.
        dtype: compute dtype (fp32 default, as diffusers' Wan I2V example loads it).
        subfolder: the encoder's folder inside ``path``; detected when None.

    Raises:
        ConfigError: every bad option at once (dtype, device, missing or invalid path).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        subfolder: str | None = None,
    ) -> None:
        problems: list[str] = []
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.device = _parse_device(device)
        except ConfigError as exc:
            problems.extend(exc.problems)
            self.device = torch.device("cpu")
        if dtype not in _FLOAT_DTYPES:
            problems.append(
                format_error("dtype", str(dtype), "must be float32, bfloat16 or float16")
            )
        try:
            self._path, self._sub, self._proc_sub = resolve_clip_path(path, subfolder=subfolder)
        except ConfigError as exc:
            problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)
        self.dtype = dtype
        self._model: Any = None
        self._processor: Any = None
        self._info: ClipInfo | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"] = state["_processor"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = f"{self._path}/{self._sub}" if self._sub else self._path
        return (
            f"ClipImageEncoder({where!r}, device={self.device}, dtype={_dtype_name(self.dtype)}, "
            f"loaded={self._model is not None})"
        )

    # -- loading

    def _load(self) -> tuple[Any, Any]:
        _check_worker("load" if self._model is None else "use")
        if self._model is None:
            self._model, self._processor, self._info = self._build()
        return self._model, self._processor

    def _build(self) -> tuple[Any, Any, ClipInfo]:
        transformers = _import_transformers()
        if self.device.type == "cuda" and not torch.cuda.is_available():
            rule = "needs CUDA, which this process cannot use"
            raise FatalError(format_error("device", str(self.device), rule, stage=_STAGE))
        local = Path(os.path.expanduser(self._path))
        is_local = local.is_dir()
        where = f"{self._path}/{self._sub}" if self._sub else self._path
        config = _read_json(local / (self._sub or "") / "config.json") if is_local else None
        architectures = (config or {}).get("architectures") or []
        with_projection = architectures != ["CLIPVisionModel"]
        name = "CLIPVisionModelWithProjection" if with_projection else "CLIPVisionModel"
        extra: dict[str, Any] = {}
        if not is_local and _hub_offline():
            extra["local_files_only"] = True
        try:
            model = getattr(transformers, name).from_pretrained(
                self._path, subfolder=self._sub or "", dtype=self.dtype, **extra
            )
            processor = transformers.CLIPImageProcessor.from_pretrained(
                self._path, subfolder=self._proc_sub or "", **extra
            )
        except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
            detail = f"{type(exc).__name__}: {str(exc)[:300]}"
            hint = f"pass a local folder holding config.json, weights and {_PROCESSOR_FILE}"
            rule = "could not be loaded"
            raise ConfigError(
                format_error("CLIP image encoder", where, rule, f"{hint} ({detail})")
            ) from exc
        model = model.to(self.device).eval().requires_grad_(False)
        info = self._describe(model, processor, is_local)
        logger.info("loaded CLIP image encoder %s (%s) on %s: %s", where, name, self.device, info)
        return model, processor, info

    def _describe(self, model: Any, processor: Any, is_local: bool) -> ClipInfo:
        config = model.config
        settings = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE_KEYS}
        processor_settings = {
            "class": type(processor).__name__,
            **{k: v for k, v in processor.to_dict().items() if k != "processor_class"},
        }
        folder = Path(os.path.expanduser(self._path)) / (self._sub or "")
        if not is_local:
            found = _hub_folder(self._path, self._sub)
            folder = found if found is not None else folder
        if folder.is_dir() and _weight_files(folder):
            weights = weights_fingerprint(folder)
        else:
            weights = _state_dict_fingerprint(model)
        return ClipInfo(
            hidden_size=int(config.hidden_size),
            num_tokens=(int(config.image_size) // int(config.patch_size)) ** 2 + 1,
            config_hash=_config_hash(settings),
            weights_hash=weights,
            processor_hash=_config_hash(processor_settings),
            dtype=_dtype_name(self.dtype),
        )

    @property
    def model(self) -> Any:
        """The loaded ``CLIPVisionModel(WithProjection)`` (loads it on first use)."""
        return self._load()[0]

    @property
    def processor(self) -> Any:
        """The loaded ``CLIPImageProcessor`` (loads it on first use)."""
        return self._load()[1]

    @property
    def info(self) -> ClipInfo:
        """The encoder's identity for cache keys (loads the model on first use)."""
        if self._info is None:
            self._load()
        assert self._info is not None
        return self._info

    def unload(self) -> None:
        """Drop the model and free its device memory."""
        with self._lock:
            self._model = self._processor = None
            if self.device.type == "cuda" and torch.cuda.is_available():
                torch.cuda.empty_cache()

    # -- encoding

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """CLIP tokens of each frame, equal to ``pipe.encode_image(pil_frame)`` row by row.

        Args:
            frames: ``(B, 3, H, W)`` uint8, or float in [-1, 1]; for a clip pass
                ``pixels[:, :, 0]`` (I2V uses the first frame; FLF2V also ``pixels[:, :, -1]``,
                combined with :func:`flf2v_image_embeds`).

        Returns:
            ``(B, 257, hidden)`` on the CPU in the model's dtype: the penultimate hidden state.

        Raises:
            ValueError: bad shape, dtype or range.
        """
        _check_frames(frames)
        images = frames_to_pil(frames)
        with self._lock:
            model, processor = self._load()
            pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
            with torch.no_grad():
                output = model(pixel_values=pixel_values.to(self.device), output_hidden_states=True)
            return output.hidden_states[-2].to("cpu")
