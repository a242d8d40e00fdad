"""A snapshot of what construction decided, so a warm start costs little more than a ``stat``.

Constructing a :class:`~wan_data.WanVideoDataset` walks the roots, reads every caption,
looks up (or probes) every file's metadata and assigns buckets: ~90 µs per source in Python,
40 times a bare ``os.stat``. When nothing changed since the last construction with the same
options, all of that gives the same answer again. This module saves the answer (sources,
metadata, samples and the construction report) after a construction, and on the next one
checks, in about two ``stat`` calls per source, that nothing it depends on changed:

- every folder the walk visited and the folder of every source and skipped file: adding,
  removing or renaming a file changes its folder's ``mtime``, so unchanged folders mean the same
  listing (the same media files, the same caption sidecars present or absent);
- every source (size and ``mtime_ns``, as the metadata cache and the cache keys use) and every
  caption sidecar it read, whose content can change in place without touching its folder (for
  sources found by walking a folder with ``missing_caption`` ``"empty"`` or ``"filename"``, a
  caption only shapes the caption, never the samples, so its check moves to the moment the
  sample is built: a changed sidecar is read again then, as collect would read it; a sidecar
  that is a link is checked at every start instead, since only collect may decide whether a new
  target lies outside the root);
- every skipped file, metadata file (``.jsonl``/``.csv`` roots) and the ledger;
- the options (a fingerprint of everything that shapes construction) and this format.

Anything changed, missing, unreadable or written within :data:`RACY_SECONDS` of the snapshot
(a change in the same clock tick could go unseen, as git's "racily clean" entries) means a full
construction, which then saves a new snapshot. The snapshot is loaded as columns: sample objects
are made only when a batch reads them, so memory and time stay flat in the dataset size.

The file is plain data (numpy arrays and JSON text; nothing is unpickled), written atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np

from wan_data.errors import SampleError, format_error
from wan_data.items import Bucket, Probed, Source, VideoMetadata
from wan_data.planning.batches import PlanSample
from wan_data.planning.columns import BucketColumn
from wan_data.sources.metadata_files import split_caption

__all__ = [
    "INDEX_FORMAT",
    "RACY_SECONDS",
    "LoadedIndex",
    "ProbedTable",
    "SampleTable",
    "SourceTable",
    "load_index",
    "save_index",
    "setup_fingerprint",
]

logger = logging.getLogger("wan_data")

INDEX_FORMAT = 1
# A file or folder modified this close to (or after) the snapshot may have changed again within
# the same timestamp tick; such a snapshot is not trusted.
RACY_SECONDS = 2.0
_NONE = -1  # "no such file" in identity columns


def setup_fingerprint(options: dict[str, Any]) -> str:
    """A digest of every option that shapes construction (and of this module's format)."""
    text = json.dumps(
        {"format": INDEX_FORMAT, **options}, sort_keys=True, default=str, separators=(",", ":")
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _identity(path: str) -> tuple[int, int]:
    """``(size, mtime_ns)`` of ``path`` (following links), ``(-1, -1)`` when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return _NONE, _NONE
    return st.st_size, st.st_mtime_ns


# --------------------------------------------------------------------------------------------
# Columns and the lazy sequences over them
# --------------------------------------------------------------------------------------------


class _Lines:
    """Rows of UTF-8 text kept as one byte array and their end offsets: row ``i`` is decoded
    when it is used, so a warm start (whose first batch needs a handful of rows) never decodes
    or splits the rest, and the rows cost one byte array in memory, not one object each."""

    def __init__(self, text: np.ndarray, ends: np.ndarray) -> None:
        self._text = text
        self._ends = ends

    def __len__(self) -> int:
        return int(self._ends.size)

    def __getitem__(self, i: int) -> str:
        start = int(self._ends[i - 1]) if i else 0
        return bytes(self._text[start : int(self._ends[i])].tobytes()).decode("utf-8")

    @staticmethod
    def encode(rows: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(text, ends)`` of ``rows`` for :meth:`__init__`."""
        data = [r.encode("utf-8") for r in rows]
        ends = np.cumsum([len(d) for d in data], dtype=np.int64)
        return np.frombuffer(b"".join(data), dtype=np.uint8), ends


@dataclass
class _Columns:
    """What the sequences share: paths eagerly, everything else parsed when a row is used."""

    paths: list[str]
    captions: list[str]  # each source's caption sidecar path
    caption_sizes: list[int]
    caption_mtimes: list[int]
    deferred: list[bool]  # caption checked when the sample is built (see the module docstring)
    racy_ns: int  # a caption modified after this is read again even if its identity matches
    rows: _Lines  # JSON of each source: key, media_type, captions, concept, repeat, fallback,
    # loss_weight (when not 1)
    probed_source: np.ndarray  # source row of each probed file
    probed_rows: _Lines  # JSON of each probed file's metadata and warnings
    sample_probed: np.ndarray  # probed row of each sample
    sample_clip: np.ndarray
    sample_bucket: np.ndarray  # index into buckets
    buckets: list[Bucket]

    def source(self, i: int) -> Source:
        row = json.loads(self.rows[i])
        captions = tuple(row["captions"])
        if self.deferred[i] and self.caption_sizes[i] != _NONE:
            captions = self._fresh_captions(i, captions, tuple(row["fallback"]))
        return Source(
            key=row["key"],
            path=self.paths[i],
            media_type=row["media_type"],
            captions=captions,
            concept=row["concept"],
            repeat=row["repeat"],
            loss_weight=row.get("loss_weight", 1.0),
        )

    def _fresh_captions(
        self, i: int, saved: tuple[str, ...], fallback: tuple[str, ...]
    ) -> tuple[str, ...]:
        """The captions as collect would read them now: the sidecar's lines if it changed
        since the snapshot (the fallback when it became empty or vanished)."""
        path = self.captions[i]
        try:
            st = os.stat(path)
        except OSError:
            return fallback
        same = (st.st_size, st.st_mtime_ns) == (self.caption_sizes[i], self.caption_mtimes[i])
        if same and st.st_mtime_ns < self.racy_ns:
            return saved
        try:
            with open(path, "rb") as fh:
                text = fh.read().decode("utf-8-sig", errors="replace")
        except OSError as exc:
            raise SampleError(
                format_error(
                    "caption file",
                    path,
                    f"cannot be read ({exc})",
                    "fix its permissions; the sample is replaced meanwhile",
                    stage="collect",
                ),
                reason="unreadable",
            ) from None
        return split_caption(text) or fallback

    def probed(self, j: int) -> Probed:
        row = json.loads(self.probed_rows[j])
        return Probed(
            source=self.source(int(self.probed_source[j])),
            metadata=VideoMetadata(**row["metadata"]),
            warnings=tuple(row["warnings"]),
        )

    def sample(self, k: int) -> PlanSample:
        return PlanSample(
            self.probed(int(self.sample_probed[k])),
            int(self.sample_clip[k]),
            self.buckets[int(self.sample_bucket[k])],
        )


class _Table(Sequence[Any]):
    """A read-only sequence whose items are built from the columns when accessed."""

    def __init__(self, columns: _Columns, length: int) -> None:
        self._columns = columns
        self._length = length

    def __len__(self) -> int:
        return self._length

    def _item(self, i: int) -> Any:
        return self._build(self._columns, i)

    @staticmethod
    def _build(columns: _Columns, i: int) -> Any:
        return columns.sample(i)

    @overload
    def __getitem__(self, i: int) -> Any: ...

    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self._item(k) for k in range(*i.indices(self._length))]
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            raise IndexError(f"index {i} out of range for {self._length} items")
        return self._item(i)

    def __iter__(self) -> Iterator[Any]:
        for i in range(self._length):
            yield self._item(i)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._length} items, built on access)"


class SourceTable(_Table):
    """``WanVideoDataset.sources`` of a warm start: every collected source, in order."""

    @staticmethod
    def _build(columns: _Columns, i: int) -> Source:
        return columns.source(i)


class ProbedTable(_Table):
    """``WanVideoDataset.probed`` of a warm start: the sources that passed the probe."""

    @staticmethod
    def _build(columns: _Columns, i: int) -> Probed:
        return columns.probed(i)


class SampleTable(_Table):
    """``WanVideoDataset.samples`` of a warm start; :attr:`buckets` without building samples."""

    @property
    def buckets(self) -> BucketColumn:
        """Each sample's bucket, as the stored codes (no per-sample object is built)."""
        return BucketColumn(self._columns.sample_bucket, self._columns.buckets)


# --------------------------------------------------------------------------------------------
# Save and load
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedIndex:
    """A validated snapshot: the construction's results and what the dataset keeps of them."""

    sources: SourceTable
    probed: ProbedTable
    samples: SampleTable
    setup_part: dict[str, Any]
    extra: dict[str, Any]


def save_index(
    path: str | os.PathLike[str],
    *,
    fingerprint: str,
    sources: Sequence[Source],
    probed: Sequence[Probed],
    samples: Sequence[PlanSample],
    setup_part: dict[str, Any],
    folders: Sequence[str],
    deferred: Sequence[tuple[bool, tuple[str, ...]]] | None = None,
    files: Sequence[str],
    appended: Sequence[str] = (),
    caption_extension: str,
    extra: dict[str, Any],
    started_ns: int,
) -> bool:
    """Write the snapshot of one construction atomically; returns whether it was written.

    Args:
        path: the snapshot file.
        fingerprint: :func:`setup_fingerprint` of the options.
        sources, probed, samples: what construction produced (lists, in order).
        setup_part: the construction's report snapshot (counts and skipped files).
        folders: folders whose listings construction depended on.
        deferred: per source, whether its caption may be checked when its sample is built
            (a folder-walk source with ``missing_caption`` ``"empty"``/``"filename"``), and the
            captions collect gives it when its sidecar is empty (concept caption or fallback).
        files: other files it depended on (skipped files).
        appended: append-only files it depended on (the ledger): any change grows them, so
            their size alone tells, and a fresh mtime (construction itself may have appended)
            does not make the snapshot racy.
        caption_extension: to find each source's caption sidecar.
        extra: small JSON-serialisable values to keep (fingerprints, statistics).
        started_ns: when construction started (``time.time_ns()``): anything modified after
            that may not be reflected in the results, so the snapshot is not written then.
    """
    index_of = {id(s): i for i, s in enumerate(sources)}
    probed_index = {id(p): j for j, p in enumerate(probed)}
    if len(index_of) != len(sources) or any(id(p.source) not in index_of for p in probed):
        return False  # not the objects construction made: nothing sound to save
    captions = [os.path.splitext(s.path)[0] + caption_extension for s in sources]
    identity = np.array([_identity(s.path) for s in sources], dtype=np.int64).reshape(-1, 2)
    caption_identity = np.array([_identity(c) for c in captions], dtype=np.int64).reshape(-1, 2)
    folder_list = sorted(set(folders) | {os.path.dirname(s.path) for s in sources})
    folder_identity = np.array([_identity(f) for f in folder_list], dtype=np.int64).reshape(-1, 2)
    file_list = sorted(set(files))
    file_identity = np.array([_identity(f) for f in file_list], dtype=np.int64).reshape(-1, 2)
    appended_list = sorted(set(appended))
    appended_identity = np.array([_identity(f)[0] for f in appended_list], dtype=np.int64)
    racy = started_ns - int(RACY_SECONDS * 1e9)
    mtimes = [identity[:, 1], caption_identity[:, 1], folder_identity[:, 1], file_identity[:, 1]]
    newest = max((int(m.max()) for m in mtimes if m.size), default=_NONE)
    if newest >= racy:
        logger.info(
            "sample index not saved: a file or folder changed during or just before "
            "construction (it is saved by a later construction)"
        )
        return False
    lazy = list(deferred) if deferred is not None else [(False, ())] * len(sources)
    if len(lazy) != len(sources):
        return False
    # A sidecar that is a link is never deferred: where it resolves can change without touching
    # any folder watched here (its target may sit in a hidden folder), and a deferred re-read
    # would skip collect's outside-root rule. Checked at every start instead, a changed target
    # means a full construction, where collect decides again.
    lazy = [
        (False, fallback) if lazy_caption and os.path.islink(caption) else (lazy_caption, fallback)
        for (lazy_caption, fallback), caption in zip(lazy, captions, strict=True)
    ]
    buckets = sorted({s.bucket for s in samples}, key=lambda b: (b.frames, b.width, b.height))
    bucket_id = {b: i for i, b in enumerate(buckets)}
    try:
        sample_probed = [probed_index[id(s.probed)] for s in samples]
    except KeyError:
        return False
    header = {
        "format": INDEX_FORMAT,
        "fingerprint": fingerprint,
        "saved_ns": time.time_ns(),
        "folders": folder_list,
        "files": file_list,
        "appended": appended_list,
        "captions_from": caption_extension,
        "buckets": [[b.frames, b.width, b.height] for b in buckets],
        "setup_part": setup_part,
        "extra": extra,
    }
    arrays = {
        "header": _text(json.dumps(header)),
        "paths": _text("\0".join(s.path for s in sources)),
        "captions": _text("\0".join(captions)),
        "identity": identity,
        "caption_identity": caption_identity,
        "deferred": np.array([d for d, _ in lazy], dtype=np.bool_),
        "folder_identity": folder_identity,
        "file_identity": file_identity,
        "appended_size": appended_identity,
        "probed_source": np.array([index_of[id(p.source)] for p in probed], dtype=np.int64),
        "sample_probed": np.array(sample_probed, dtype=np.int64),
        "sample_clip": np.array([s.clip_index for s in samples], dtype=np.int64),
        "sample_bucket": np.array([bucket_id[s.bucket] for s in samples], dtype=np.int64),
    }
    arrays["rows"], arrays["row_ends"] = _Lines.encode(
        [
            json.dumps(
                {
                    "key": s.key,
                    "media_type": s.media_type,
                    "captions": list(s.captions),
                    "concept": s.concept,
                    "repeat": s.repeat,
                    "fallback": list(fallback),
                    # Only when set, so rows of unweighted sources stay as they were.
                    **({"loss_weight": s.loss_weight} if s.loss_weight != 1.0 else {}),
                }
            )
            for s, (_, fallback) in zip(sources, lazy, strict=True)
        ]
    )
    arrays["probed_rows"], arrays["probed_row_ends"] = _Lines.encode(
        [
            json.dumps({"metadata": dataclasses.asdict(p.metadata), "warnings": list(p.warnings)})
            for p in probed
        ]
    )
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)  # type: ignore[arg-type]
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("sample index %s not saved (%s); the next start probes again", target, exc)
        return False
    return True


def load_index(path: str | os.PathLike[str], fingerprint: str) -> LoadedIndex | None:
    """The snapshot at ``path`` if it is for these options and nothing it depends on changed.

    ``None`` (with the reason logged at info level) means: construct from scratch.
    """
    target = Path(path)
    if not target.is_file():
        return None
    try:
        with np.load(target, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        header = json.loads(_untext(arrays["header"]))
        if header.get("format") != INDEX_FORMAT or header.get("fingerprint") != fingerprint:
            return _stale(target, "it was made for other options or another version")
        paths = _untext(arrays["paths"]).split("\0") if arrays["identity"].size else []
        captions = _untext(arrays["captions"]).split("\0") if paths else []
        deferred = arrays["deferred"].tolist()
        reason = _changed(header, arrays, paths, captions, deferred)
        if reason is not None:
            return _stale(target, reason)
        caption_sizes, caption_mtimes = _columns_of(arrays["caption_identity"])
        columns = _Columns(
            paths=paths,
            captions=captions,
            caption_sizes=caption_sizes,
            caption_mtimes=caption_mtimes,
            deferred=deferred,
            racy_ns=int(header["saved_ns"]) - int(RACY_SECONDS * 1e9),
            rows=_Lines(arrays["rows"], arrays["row_ends"]),
            probed_source=arrays["probed_source"],
            probed_rows=_Lines(arrays["probed_rows"], arrays["probed_row_ends"]),
            sample_probed=arrays["sample_probed"],
            sample_clip=arrays["sample_clip"],
            sample_bucket=arrays["sample_bucket"],
            buckets=[Bucket(*b) for b in header["buckets"]],
        )
        if not (
            len(columns.rows) == len(paths)
            and len(columns.probed_rows) == columns.probed_source.size
            and int(arrays["row_ends"][-1] if len(paths) else 0) == arrays["rows"].size
            and columns.sample_probed.size == columns.sample_clip.size
            and columns.sample_bucket.size == columns.sample_clip.size
        ):
            return _stale(target, "its columns do not agree (damaged)")
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        logger.warning("sample index %s unreadable (%s); constructing from scratch", target, exc)
        return None
    except Exception as exc:  # a damaged zip raises zipfile.BadZipFile and others
        logger.warning("sample index %s unreadable (%s); constructing from scratch", target, exc)
        return None
    return LoadedIndex(
        sources=SourceTable(columns, len(paths)),
        probed=ProbedTable(columns, columns.probed_source.size),
        samples=SampleTable(columns, columns.sample_clip.size),
        setup_part=header["setup_part"],
        extra=header["extra"],
    )


def _changed(
    header: dict[str, Any],
    arrays: dict[str, np.ndarray],
    paths: list[str],
    captions: list[str],
    deferred: list[bool],
) -> str | None:
    """Why the snapshot no longer describes the files (``None``: it still does)."""
    racy = int(header["saved_ns"]) - int(RACY_SECONDS * 1e9)
    for kind, names, expected in (
        ("folder", header["folders"], arrays["folder_identity"]),
        ("file", header["files"], arrays["file_identity"]),
    ):
        for name, size, mtime in zip(names, *_columns_of(expected), strict=True):
            now = _identity(name)
            if now != (size, mtime) or mtime >= racy:
                return f"{kind} {name} changed"
    for name, size in zip(header["appended"], arrays["appended_size"].tolist(), strict=True):
        if _identity(name)[0] != size:
            return f"file {name} changed"
    checked = [c for c, lazy in zip(captions, deferred, strict=True) if not lazy]
    files = paths + checked
    sizes, mtimes = _columns_of(arrays["identity"])
    caption_sizes, caption_mtimes = _columns_of(arrays["caption_identity"])
    sizes += [v for v, lazy in zip(caption_sizes, deferred, strict=True) if not lazy]
    mtimes += [v for v, lazy in zip(caption_mtimes, deferred, strict=True) if not lazy]
    # One loop (threads do not help: a stat of a cached inode is mostly Python, under the GIL).
    return _check_files(files, sizes, mtimes, 0, len(files), racy)


def _check_files(
    files: list[str], sizes: list[int], mtimes: list[int], start: int, stop: int, racy: int
) -> str | None:
    """The first of ``files[start:stop]`` whose size or mtime changed (or that is racy)."""
    stat = os.stat
    for i in range(start, stop):
        size = sizes[i]
        if size == _NONE:
            continue  # a caption absent then: its creation would have changed its folder
        try:
            st = stat(files[i])
        except OSError:
            return f"{files[i]} is gone"
        if st.st_size != size or st.st_mtime_ns != mtimes[i] or mtimes[i] >= racy:
            return f"{files[i]} changed"
    return None


def _columns_of(identity: np.ndarray) -> tuple[list[int], list[int]]:
    """Sizes and mtimes as two lists (one ``tolist`` of an (n, 2) array makes n small lists,
    which costs as much as the ``stat`` calls themselves)."""
    if identity.size == 0:
        return [], []
    return identity[:, 0].tolist(), identity[:, 1].tolist()


def _stale(target: Path, reason: str) -> LoadedIndex | None:
    logger.info("sample index %s not used: %s; constructing from scratch", target, reason)
    return None


def _text(value: str) -> np.ndarray:
    return np.frombuffer(value.encode("utf-8"), dtype=np.uint8)


def _untext(array: np.ndarray) -> str:
    return bytes(array.tobytes()).decode("utf-8")
