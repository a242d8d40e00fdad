"""The plain-text table of a scan report, for the terminal (``wan-data scan``) and for docs.

Presentation only: it reads a :class:`~wan_data.tools.scan_report.ScanReport` and computes no
verdict, so the table and the JSON (``ScanReport.as_dict``), which has everything, always agree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from wan_data.tools.scan_report import ScanReport, ScanRow

__all__ = ["format_scan_table"]


def format_scan_table(report: ScanReport, max_rows: int = 20) -> str:
    """A plain-text summary for the terminal and for docs; long lists stop after ``max_rows``.

    Sections: the verdict counts (good, then bad by reason), min/median/max of the good files,
    the bucket table, frames lost to 4k+1 trimming and frames the sampling mode leaves unused,
    variable-frame-rate files, files missing captions, and the bad files with their reasons.
    The JSON (``as_dict``) has everything.
    """
    opts = report.options
    totals = report.totals()
    lines: list[str] = []
    fps = "native fps" if opts["fps"] is None else f"{opts['fps']:g} fps"
    res = ", ".join(f"{w}x{h}" for w, h in opts["resolutions"])
    preset = f"preset {opts['preset']}, " if opts["preset"] else ""
    lines.append(
        f"scanned {', '.join(report.roots)}: {totals['files']} file(s), {totals['good']} good, "
        f"{totals['bad']} bad, {report.seconds:.1f} s"
    )
    lines.append(
        f"options: {preset}frames {opts['frames']} at {fps}, resolution {res}, step "
        f"{opts['step']}, sampling {opts['sampling']}"
    )
    lines.append("")
    lines.append(f"{'verdict':<24}{'files':>7}")
    lines.append(f"{'good':<24}{totals['good']:>7}")
    lines.append(f"{'  videos / images':<24}{totals['good_videos']:>7} / {totals['good_images']}")
    for reason, count in totals["bad_by_reason"].items():
        lines.append(f"{'bad: ' + reason:<24}{count:>7}")
    lines.append("")

    summary = report.summary()
    lines.append(f"{'good files':<18}{'min':>10}{'median':>10}{'max':>10}{'count':>7}")
    for label, key, fmt in (
        ("duration (s)", "duration_seconds", "{:.2f}"),
        ("fps", "fps", "{:.3g}"),
        ("width", "width", "{:d}"),
        ("height", "height", "{:d}"),
    ):
        s = summary[key]
        cells = ["-" if s[k] is None else _fmt(fmt, s[k]) for k in ("min", "median", "max")]
        lines.append(f"{label:<18}{cells[0]:>10}{cells[1]:>10}{cells[2]:>10}{s['count']:>7}")
    r = summary["resolution"]
    if r["count"]:
        lines.append(
            f"{'size (by area)':<18}{r['min']:>10}{r['median']:>10}{r['max']:>10}{r['count']:>7}"
        )
    lines.append("")

    lines.append(
        f"buckets: {totals['samples']} sample(s) per epoch in {len(report.buckets)} bucket(s)"
    )
    if report.buckets:
        top = max(b.samples for b in report.buckets)
        lines.append(f"  {'width x height':<16}{'frames':>7}{'samples':>9}{'files':>7}")
        for b in report.buckets[:max_rows]:
            bar = "#" * max(1, round(24 * b.samples / top))
            size = f"{b.width}x{b.height}"
            lines.append(f"  {size:<16}{b.frames:>7}{b.samples:>9}{b.files:>7}  {bar}")
        _more(lines, len(report.buckets), max_rows, "bucket(s)")
    good_videos = totals["good_videos"]
    trimmed, unused = report.frames_trimmed_to_bucket, report.frames_unused_by_sampling
    if trimmed is None or unused is None:
        lines.append(
            f"frames lost to 4k+1 trimming / unused by sampling: not counted for "
            f"{opts['sampling']} sampling (only head and chunks keep their windows in place)"
        )
    else:
        for label, count in (
            ("frames lost to 4k+1 trimming (clip rounded down to a frame bucket)", trimmed),
            (f"frames unused by {opts['sampling']} sampling (beyond the largest bucket)", unused),
        ):
            per_video = count / good_videos if good_videos else 0.0
            lines.append(f"{label}: {count} ({per_video:.1f} per good video)")
    lines.append("")

    for title, paths in (
        ("variable frame rate", report.vfr_files),
        ("low frame rate (frames repeated to reach the target fps)", report.low_fps_files),
        ("missing captions (train with an empty caption)", report.missing_captions),
    ):
        lines.append(f"{title}: {len(paths)}")
        for path in paths[:max_rows]:
            lines.append(f"  {_short(path, report.roots)}")
        _more(lines, len(paths), max_rows, "file(s)")
    bad = report.bad
    lines.append(f"bad files (training skips them): {len(bad)}")
    for row in bad[:max_rows]:
        lines.append(f"  {row.reason:<16}{_short(row.path, report.roots)}")
        why = _why(row)
        if why:
            lines.append(f"  {'':<16}  {why}")
    _more(lines, len(bad), max_rows, "file(s)")
    if report.breaker:
        lines.append("")
        lines.append("training would stop here (circuit breaker):")
        lines.extend(f"  {line}" for line in report.breaker.splitlines())
    return "\n".join(lines)


def _fmt(fmt: str, value: float | int) -> str:
    if fmt == "{:d}":
        return str(round(value))
    return fmt.format(value)


def _more(lines: list[str], total: int, shown: int, what: str) -> None:
    if total > shown:
        lines.append(f"  ... and {total - shown} more {what} (full list: --json)")


def _short(path: str, roots: Sequence[str]) -> str:
    """The path relative to the root it was found under (the reader knows the roots)."""
    for root in roots:
        base = root if os.path.isdir(root) else os.path.dirname(root)
        base = os.path.abspath(base)
        if path.startswith(base + os.sep):
            return path[len(base) + 1 :]
    return path


def _why(row: ScanRow, width: int = 110) -> str:
    """The rule part of a skip message: without the file name and the stage/file suffix."""
    text = row.message or ""
    if text.endswith("]") and " [" in text:
        text = text[: text.rindex(" [")]
    text = re.sub(r"^(\w+ of )?file \('[^']*'\) ", "", text)
    text = text.replace(row.path, os.path.basename(row.path))
    return text if len(text) <= width else text[: width - 3] + "..."
