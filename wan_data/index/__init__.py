"""What a later run reuses: probed metadata and snapshots of construction.

- ``metadata_cache.py``: probed metadata and integrity verdicts, valid while a file's size and
  mtime hold;
- ``sample_index.py``: a snapshot of construction validated by ``stat`` calls (warm starts).
"""
