"""Latents: encoding clips with the Wan VAE and the crash-safe disk cache that keeps them.

The VAE side (public face: ``vae.py``):

- ``vae.py``: re-exports the VAE API below (``VaeEncoder``, ``VaeInfo``, ``load_vae``, ...);
- ``vae_loading.py``: finding the VAE (folder, full repo, hub id) and loading ``AutoencoderKLWan``
  outside DataLoader workers;
- ``vae_identity.py``: ``VaeInfo`` and the config / weights hashes that make the VAE part of a
  cache key;
- ``latent_math.py``: normalise / denormalise with the VAE's statistics, clip -> latent shape;
- ``encoder.py``: ``VaeEncoder``, pixels -> normalised latents with out-of-memory fallbacks.

The cache (public face: ``store.py``):

- ``store.py``: ``LatentCache`` (put, verified lookup, keys, verify_all, prune, stats) and
  re-exports of the cache API;
- ``keys.py``: the format version and content + config cache keys (pure);
- ``entry.py``: the safetensors entry format: encode, parse, checksum, verify (pure);
- ``atomic.py``: atomic file replacement (temp file, fsync, rename, directory fsync);
- ``index.py``: the entries directory's fan-out layout and the ``index.jsonl`` size hint;
- ``quarantine.py``: moving a corrupt entry aside with its reason, unless it was replaced;
- ``stats.py``: ``CacheStats``, the cache's counters, mergeable across workers and ranks.

Using both:

- ``spec.py``: ``CacheSpec`` and ``sample_key``, how a dataset addresses its cache (and the
  latent shape each bucket's entries must have);
- ``prepare.py``: the cache pass (workers decode, one process encodes) and reading cached
  latents in the train pass;
- ``claims.py``: per-key claim files, so two cache passes on one folder encode each key once.
"""
