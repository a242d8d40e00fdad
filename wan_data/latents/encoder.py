"""Encoding pixel clips into normalised Wan latents, surviving out-of-memory on the device.

:class:`VaeEncoder` is what the cache pass calls on each bucket's batch of decoded clips: it
loads the VAE lazily in the process that uses it (never in a DataLoader worker), checks the
pixels, encodes with ``latent_dist.mode()`` (deterministic, as musubi-tuner and diffusion-pipe
cache) and normalises. Running out of device memory is not fatal for the run: the encoder halves
the number of clips per VAE call down to one, then retries the clip with spatial tiling, and only
then gives up on that clip with ``SampleError(reason="out_of_memory")`` so the rest of the
dataset is still cached; :func:`is_out_of_memory` decides which errors take that path.

Split out of :mod:`wan_data.latents.vae` because the fallback ladder and its bookkeeping are
most of the VAE code and change for different reasons than loading and identity do.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Iterable
from typing import Any

import torch

from wan_data.errors import ConfigError, FatalError, SampleError, format_error
from wan_data.latents.latent_math import latent_shape, normalise
from wan_data.latents.vae_identity import VaeInfo, _dtype_name
from wan_data.latents.vae_loading import (
    _FLOAT_DTYPES,
    _STAGE,
    _check_worker,
    _parse_device,
    load_vae,
    resolve_vae_path,
)

__all__ = ["VaeEncoder", "is_out_of_memory", "pin_for"]

logger = logging.getLogger("wan_data")

_RANGE_SLACK = 1e-3  # float pixels may overshoot [-1, 1] by rounding, not by a wrong scale


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
        # Pinned pixels (the cache pass's DataLoader pins them for a CUDA device) are copied
        # without blocking the host; a pageable tensor is copied synchronously, as before.
        x = part.to(self.device, non_blocking=self.device.type == "cuda" and part.is_pinned())
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


def pin_for(encoder: object) -> bool:
    """Whether the cache pass pins decoded pixels: only for an encoder on a CUDA device with
    workers' batches to copy (torch pins them in a thread of this process while the VAE runs),
    never on CPU, where pinning is a wasted copy (and warns without an accelerator)."""
    device = getattr(encoder, "device", None)
    return isinstance(device, torch.device) and device.type == "cuda" and torch.cuda.is_available()


def _shape_text(shape: Iterable[int]) -> str:
    frames, height, width = tuple(shape)
    return f"{frames} frames of {width}x{height}"
