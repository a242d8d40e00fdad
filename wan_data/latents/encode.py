"""Stage ``encode``: decoded clips of one bucket → latents, through the one failure mechanism.

The VAE runs in the main process of the cache pass, one :class:`~wan_data.items.EncodeJob`
(a chunk of clips of one bucket) per call. A whole job that raises is handled by
:func:`~wan_data.failures.mechanism.map_stage` like any stage's error (policy, retries,
breaker, stall watchdog); a clip the encoder gave up on alone (out of memory even by itself)
is returned as a partial failure beside its neighbours' latents, which stay good.
"""

from __future__ import annotations

from typing import Any

import torch

from wan_data.errors import SampleError
from wan_data.failures.mechanism import partial_failure
from wan_data.items import Encoded, EncodeJob, Failed
from wan_data.stages.base import MapStage

__all__ = ["Encode"]


class Encode(MapStage[EncodeJob, Encoded]):
    """``EncodeJob → Encoded`` per clip (or ``Failed`` for a clip the VAE could not encode).

    Args:
        encoder: a :class:`~wan_data.latents.encoder.VaeEncoder` (anything with
            ``encode_each(pixels) -> list[Tensor | SampleError]``).
    """

    name = "encode"
    accepts = EncodeJob

    def __init__(self, encoder: Any, *, condition: str = "none", image_encoder: Any = None) -> None:
        self._encoder = encoder
        # "i2v"/"flf2v": also the condition latents of [frame 0, zeros(, last)] (a VAE pass of
        # their own) and, with an image encoder, the CLIP embedding of frame 0 (and the last).
        self.condition = condition
        self._image_encoder = image_encoder

    def process(self, item: EncodeJob) -> list[Encoded | Failed]:
        results = self._encoder.encode_each(item.pixels)
        extras = self._conditions(item.pixels)
        out: list[Encoded | Failed] = []
        for i, (key, path, entry, result) in enumerate(
            zip(item.keys, item.paths, item.entries, results, strict=True)
        ):
            if isinstance(result, SampleError):
                out.append(partial_failure(key, path, self.name, result))
            elif isinstance(result, torch.Tensor):
                mine = {name: tensor[i].clone() for name, tensor in extras.items()}
                out.append(Encoded(key=key, path=path, latents=result, entry=entry, extras=mine))
            else:
                raise TypeError(
                    f"encoder.encode_each returned {type(result).__name__} for {key}; "
                    "expected a tensor or a SampleError"
                )
        return out

    def _conditions(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The I2V conditions of a job's clips, by name (empty without conditioning)."""
        if self.condition not in ("i2v", "flf2v"):
            return {}
        from wan_data.conditioning.image import encode_condition

        last = self.condition == "flf2v"
        extras = {"cond": encode_condition(self._encoder, pixels, last_frame=last)}
        if self._image_encoder is not None:
            first = self._image_encoder.encode(pixels[:, :, 0])
            if last:
                from wan_data.conditioning.clip import flf2v_image_embeds

                first = flf2v_image_embeds(first, self._image_encoder.encode(pixels[:, :, -1]))
            extras["clip"] = first
        return extras

    def identity(self) -> str:
        # The VAE's own identity is part of every cache key (latents/keys.py).
        return f"encode:v{self.version}:{self.condition}"
