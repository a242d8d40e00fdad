"""Where sources come from: the user's roots, the files found under them, and their captions.

This package describes and discovers sources; the collect stage
(:mod:`wan_data.stages.collect`) turns what it finds into ``Source`` and ``Failed`` items. It is
kept apart from the stage so each piece (a folder walk, a metadata-file parser, caption
fallbacks) can be read and tested without the error mechanism, and reused where no stage runs
(the dataset re-applies caption fallbacks on a warm start; the concept checks run at
construction).

Modules:
    concepts: :class:`~wan_data.sources.concepts.Concept` (a root with a name, repeats and a
        default caption), normalising the user's roots into concepts, and checking them all at
        once (missing roots, CSV headers without a path column, duplicate names).
    extensions: the video, image and metadata-file extensions, and ``media_type(name)``.
    entries: the :class:`~wan_data.sources.entries.Entry` discovery hands the stage, the
        options of one collect run, the ``outside_root`` rules, and the policy guard of
        discovery's own I/O.
    walk: the walk of a folder root: listing, classifying links and special files, loops,
        sidecars, sorted by relative path.
    metadata_files: parsing ``.jsonl`` / ``.csv`` metadata files line by line (pure text work).
    metadata_entries: a metadata file's lines as keyed entries, and the checks of a listed file.
    captions: reading and decoding caption sidecars, and the fallbacks when a file has none
        (``missing_caption``).
"""
