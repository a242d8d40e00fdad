"""Conditioning inputs of Wan models, computed once and cached next to the latents.

Wan's transformer is conditioned on text (every model) and, for image-to-video, on the first
frame. Both come from large frozen encoders whose outputs never change during training, so they
are computed in the cache pass, in the one process that owns the device, and the train pass only
reads them. Every cached tensor must equal what diffusers' Wan pipelines compute, because that is
what the models were trained and are sampled with.

- ``text.py``: the text side, public face: ``clean_caption`` (diffusers' prompt cleaning),
  ``TextEncoder`` (UMT5, unpadded per-caption embeddings), ``pad_text_embeds`` (diffusers' zero
  padding to 512) and re-exports of the two modules below;
- ``text_loading.py``: finding the UMT5 encoder and its tokenizer (a folder or a full Wan
  Diffusers repo) and loading them outside DataLoader workers;
- ``text_identity.py``: ``TextEncoderInfo`` and ``text_info_from_files``, the encoder's identity
  for cache keys, computed from its files without loading the model.
"""
