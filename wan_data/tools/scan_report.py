"""The result of a scan: per-file verdicts (:class:`ScanRow`), bucket counts and their totals.

Kept apart from :func:`wan_data.tools.scan.scan_dataset`, which produces a report, because the
report is also read on its own: the CLI prints it (:mod:`wan_data.tools.scan_table`), writes its
JSON form (``as_dict``) and plots it (:mod:`wan_data.tools.plots`). Totals and summaries are
properties computed from the rows, so they can never disagree with the per-file verdicts.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from wan_data.planning.batches import PlanSample
from wan_data.planning.clips import DecodeOptions

__all__ = ["FIXED_WINDOW_MODES", "SCAN_VERSION", "BucketCount", "ScanReport", "ScanRow"]

SCAN_VERSION = 2
"""Version of the ``as_dict()`` layout; bumped when a key changes meaning.

2: ``frames_trimmed`` / ``frames_trimmed_total`` (which counted the tails ``head`` sampling
never reads as trimming) split into ``frames_trimmed_to_bucket`` and
``frames_unused_by_sampling``.
"""

# Sampling modes whose clips are consecutive windows from the start, the same every epoch: the
# frames they leave out are one tail, never trained on. ``random`` windows move every epoch
# and ``uniform`` ones spread over the video, so their unused frames are not counted.
FIXED_WINDOW_MODES = ("head", "chunks")


@dataclass(frozen=True)
class ScanRow:
    """The verdict on one source, with what the probe learned about it.

    Attributes:
        path: the file.
        key: the source key (a concept with ``repeats=n`` lists a file under n keys, because
            training samples it n times).
        status: ``"good"`` (training plans samples for it) or ``"bad"`` (training skips it).
        media_type: ``"video"``, ``"image"``, or ``None`` when collect rejected the entry.
        stage, reason, error_type, message: why a bad file is skipped, exactly as
            ``WanVideoDataset.report()["skipped"]`` records it; ``None`` for good files.
        width, height, fps, duration_seconds, num_frames: probed metadata (displayed size;
            content frame count; fps and duration ``None`` for images). Also filled for files
            that opened but failed validation (``too_short``, ``truncated``...).
        vfr: irregular frame spacing (``None``: not a good video, or not checked).
        has_caption: whether collect found at least one caption candidate.
        bucket: ``(width, height, frames)`` every clip of the file is trained at.
        clips: samples per epoch from this source.
        frames_available: frames at the target fps (native frames with ``fps=None``).
        frames_trimmed_to_bucket: frames after the last clip that a clip of up to the largest
            frame bucket would have covered: what rounding the clip length down to a 4k+1
            frame bucket costs (a 40-frame video with buckets 17, 33, 81 trains 33: 7).
        frames_unused_by_sampling: frames after the last clip that no allowed clip length
            reaches: the sampling mode leaves them out (``head``: everything after its one
            window of the largest bucket; ``chunks``: the remainder after the last whole
            chunk). The two add up to the frames no clip uses; see
            :func:`split_unused_frames`. Both ``None`` for ``random``/``uniform`` sampling,
            whose windows are not consecutive from the start (``random`` ones move every
            epoch), so what they leave out is not one tail lost for good.
        warnings: the probe's warnings (a header/content frame-count mismatch...).
    """

    path: str
    key: str
    status: str
    media_type: str | None = None
    stage: str | None = None
    reason: str | None = None
    error_type: str | None = None
    message: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration_seconds: float | None = None
    num_frames: int | None = None
    vfr: bool | None = None
    has_caption: bool | None = None
    bucket: tuple[int, int, int] | None = None
    clips: int = 0
    frames_available: int | None = None
    frames_trimmed_to_bucket: int | None = None
    frames_unused_by_sampling: int | None = None
    warnings: tuple[str, ...] = ()

    @property
    def good(self) -> bool:
        """Whether training plans samples for this file (``status == "good"``)."""
        return self.status == "good"

    def as_dict(self) -> dict[str, Any]:
        """JSON-native values only (lists, not tuples), so a JSON round trip is the identity."""
        out = dataclasses.asdict(self)
        out["bucket"] = (
            None
            if self.bucket is None
            else {"width": self.bucket[0], "height": self.bucket[1], "frames": self.bucket[2]}
        )
        out["warnings"] = list(self.warnings)
        return out


@dataclass(frozen=True)
class BucketCount:
    """How many samples (and distinct sources) training puts in one bucket per epoch."""

    width: int
    height: int
    frames: int
    samples: int
    files: int

    @property
    def label(self) -> str:
        """``832x480, 81 frames``: the bucket as the table and the plots name it."""
        return f"{self.width}x{self.height}, {self.frames} frames"

    def as_dict(self) -> dict[str, Any]:
        """The bucket's fields as a JSON object (``buckets`` of the scan JSON)."""
        return dataclasses.asdict(self)


@dataclass
class ScanReport:
    """Everything ``wan-data scan`` found; ``as_dict()`` is its JSON form.

    Totals and summaries are computed from ``rows`` on demand, so they can never disagree with
    the per-file verdicts. ``samples`` and ``decode_options`` are kept (not serialised) so that
    :func:`wan_data.tools.plots.contact_sheet` decodes exactly the clips training would.

    Attributes:
        roots: the scanned roots as given.
        options: the resolved training options the verdicts hold for.
        rows: one :class:`ScanRow` per source, sorted by path.
        buckets: samples per bucket, most samples first.
        breaker: the circuit-breaker message training would stop with, ``None`` when it would
            not trip.
        seconds: wall time of the scan.
    """

    roots: list[str]
    options: dict[str, Any]
    rows: list[ScanRow]
    buckets: list[BucketCount]
    breaker: str | None = None
    seconds: float = 0.0
    samples: list[PlanSample] = field(default_factory=list, repr=False, compare=False)
    decode_options: DecodeOptions | None = field(default=None, repr=False, compare=False)

    @property
    def good(self) -> list[ScanRow]:
        """The rows of the files training uses, in path order."""
        return [r for r in self.rows if r.good]

    @property
    def bad(self) -> list[ScanRow]:
        """The rows of the files training skips, in path order."""
        return [r for r in self.rows if not r.good]

    @property
    def bad_by_reason(self) -> dict[str, int]:
        """Bad files per skip reason, the most frequent first (ties by reason)."""
        counts = Counter(str(r.reason) for r in self.bad)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def vfr_files(self) -> list[str]:
        """Good videos with a variable frame rate (content average fps more than 1 % off the
        header's rate): training samples by presentation time, so they are correct, but motion
        in them may look uneven."""
        return [r.path for r in self.good if r.vfr]

    @property
    def low_fps_files(self) -> list[str]:
        """Good videos slower than the target fps: training repeats some of their frames
        (``min_source_fps`` skips them instead)."""
        target = self.options.get("fps")
        if not target:
            return []
        return [
            r.path
            for r in self.good
            if r.media_type == "video" and r.fps is not None and r.fps < float(target) * 0.999
        ]

    @property
    def missing_captions(self) -> list[str]:
        """Good files that train with an empty caption (bad files never train)."""
        return [r.path for r in self.good if r.has_caption is False]

    @property
    def counts_unused_frames(self) -> bool:
        """Whether the sampling mode takes consecutive windows from the start (``head``,
        ``chunks``), so that the frames it leaves out are one tail, lost for good, and counted."""
        return self.options.get("sampling") in FIXED_WINDOW_MODES

    @property
    def frames_trimmed_to_bucket(self) -> int | None:
        """Sum over the files; equals ``ds.bucket_report()["frames_trimmed_to_bucket"]``."""
        if not self.counts_unused_frames:
            return None
        return sum(r.frames_trimmed_to_bucket or 0 for r in self.rows)

    @property
    def frames_unused_by_sampling(self) -> int | None:
        """Sum over the files; equals ``ds.bucket_report()["frames_unused_by_sampling"]``."""
        if not self.counts_unused_frames:
            return None
        return sum(r.frames_unused_by_sampling or 0 for r in self.rows)

    def totals(self) -> dict[str, Any]:
        """The counts of the report (files, good, bad, good videos and images, samples per epoch)
        and ``bad_by_reason``: the ``totals`` of the JSON."""
        good = self.good
        return {
            "files": len(self.rows),
            "good": len(good),
            "bad": len(self.rows) - len(good),
            "good_videos": sum(r.media_type == "video" for r in good),
            "good_images": sum(r.media_type == "image" for r in good),
            "samples": sum(b.samples for b in self.buckets),
            "bad_by_reason": self.bad_by_reason,
        }

    def summary(self) -> dict[str, Any]:
        """Min / median / max of the good files: duration and fps of videos, size of all."""
        good = self.good
        videos = [r for r in good if r.media_type == "video"]
        sized = sorted(
            (r for r in good if r.width and r.height),
            key=lambda r: ((r.width or 0) * (r.height or 0), r.width or 0),
        )
        resolution: dict[str, Any] = {"count": len(sized)}
        if sized:
            for name, row in (
                ("min", sized[0]),
                ("median", sized[(len(sized) - 1) // 2]),
                ("max", sized[-1]),
            ):
                resolution[name] = f"{row.width}x{row.height}"
        return {
            "duration_seconds": _stats(r.duration_seconds for r in videos),
            "fps": _stats(r.fps for r in videos),
            "width": _stats(r.width for r in good),
            "height": _stats(r.height for r in good),
            "resolution": resolution,
        }

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``wan-data scan --json``); ``json.loads(json.dumps(d)) == d``."""
        return {
            "version": SCAN_VERSION,
            "roots": list(self.roots),
            "options": dict(self.options),
            "totals": self.totals(),
            "summary": self.summary(),
            "buckets": [b.as_dict() for b in self.buckets],
            "frames_trimmed_to_bucket": self.frames_trimmed_to_bucket,
            "frames_unused_by_sampling": self.frames_unused_by_sampling,
            "vfr": self.vfr_files,
            "low_fps": self.low_fps_files,
            "missing_captions": self.missing_captions,
            "breaker": self.breaker,
            "seconds": round(self.seconds, 3),
            "files": [r.as_dict() for r in self.rows],
        }


def _stats(values: Iterable[float | int | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    if not present:
        return {"count": 0, "min": None, "median": None, "max": None}
    return {
        "count": len(present),
        "min": min(present),
        "median": round(float(statistics.median(present)), 3),
        "max": max(present),
    }
