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

This module is the public face of the VAE side: it re-exports the names of its parts, which
live in :mod:`~wan_data.latents.vae_loading` (finding and loading the VAE),
:mod:`~wan_data.latents.vae_identity` (:class:`VaeInfo` and the hashes that key the cache),
:mod:`~wan_data.latents.latent_math` (normalisation and latent shapes) and
:mod:`~wan_data.latents.encoder` (:class:`VaeEncoder` and its out-of-memory fallbacks).
"""

from __future__ import annotations

from wan_data.latents.encoder import VaeEncoder, is_out_of_memory
from wan_data.latents.latent_math import denormalise, latent_shape, normalise
from wan_data.latents.vae_identity import VaeInfo, weights_fingerprint
from wan_data.latents.vae_loading import load_vae, resolve_vae_path

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
