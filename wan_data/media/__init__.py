"""Media: the pure math of frames and buckets, and the access to decoded frames.

- ``sampling.py``: frame windows, request times and their tolerance, available frames, seeded
  randomness;
- ``buckets.py``: aspect buckets, presets, resize and crop geometry;
- ``frames.py``: opening decoders, exact and sequential frame fetches, salvage, images;
- ``integrity.py``: the full FFmpeg decode that finds concealed decode errors;
- ``source_files.py``: sources opened only as regular files (a FIFO never blocks);
- ``ffmpeg_errno.py``: FFmpeg's EIO/ENOMEM, the file's damage or the machine's fault.
"""
