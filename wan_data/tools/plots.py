"""Pictures of a scan: samples per bucket, and a contact sheet of what the model will see.

Drawn with Pillow alone (no plotting library to install on a training box). Every image size is
a pure function of the inputs (:func:`bucket_histogram_size`, :func:`contact_sheet_size`): text is
cut to fit fixed boxes instead of growing them, so the same scan always gives the same layout,
and tests check sizes without parsing pixels.

The contact sheet decodes its clips with :func:`wan_data.stages.decode.decode_sample` and the scan's
:class:`~wan_data.stages.decode.DecodeOptions`, the call training makes, so a thumbnail shows the
frames, the resize and the crop of the real sample (epoch 0), not a guess at them. Given
augmentation stages (``augmentations=``, ``wan-data scan --sheet-augment``), it runs them on each
decoded clip as ``clip_stages=`` would (epoch 0), and labels every thumbnail with the draw it
got, so the sheet shows what an augmented training sample looks like.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from wan_data.errors import ConfigError, format_error
from wan_data.failures.mechanism import StageContext, clean_message
from wan_data.failures.policy import release_frames
from wan_data.items import Clip, Failed
from wan_data.media.sampling import sample_rng
from wan_data.planning.batches import PlanSample
from wan_data.stages.base import Stage
from wan_data.stages.decode import decode_sample
from wan_data.tools.scan_report import BucketCount, ScanReport

__all__ = [
    "ContactSheet",
    "bucket_histogram",
    "bucket_histogram_size",
    "contact_sheet",
    "contact_sheet_size",
    "thumbnail_width",
]

logger = logging.getLogger("wan_data")

_BACKGROUND = (250, 250, 250)
_INK = (30, 30, 30)
_MUTED = (110, 110, 110)
_ALERT = (180, 30, 30)
_EMPTY = (225, 225, 225)
# One colour per frame count, so clip lengths read at a glance (cycled when there are more).
_PALETTE = ((66, 110, 180), (225, 130, 40), (70, 160, 90), (170, 70, 160), (120, 120, 120))

# Histogram layout (pixels).
_H_MARGIN = 10
_H_TITLE = 44
_H_LABEL = 150
_H_COUNT = 64

# Contact sheet layout (pixels).
_S_MARGIN = 10
_S_TITLE = 26
_S_LABEL = 20
_S_NAME = 18
_S_AUGMENT = 14  # the augmentation label line, only on an augmented sheet
_S_ROW_GAP = 10
_S_FRAME_GAP = 2
_S_CELL_GAP = 12
_S_MIN_CELL = 120
_S_MIN_WIDTH = 560
_S_FOOTER = 22


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    """``text`` cut (with "...") to fit ``width`` pixels: boxes never grow to fit their text."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..." if text else ""


_MINIMUM = {"thumb_height": 8, "row_height": 8}


def _check(**values: int) -> None:
    problems = []
    for name, value in values.items():
        low = _MINIMUM.get(name, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            problems.append(format_error(name, value, f"must be an int >= {low}"))
    if problems:
        raise ConfigError(problems)


# -- bucket histogram ----------------------------------------------------------------------------


def bucket_histogram_size(
    num_buckets: int, *, width: int = 720, row_height: int = 20
) -> tuple[int, int]:
    """``(width, height)`` of :func:`bucket_histogram`'s image: one row per bucket (min one)."""
    return width, _H_TITLE + max(1, num_buckets) * row_height + 2 * _H_MARGIN


def _histogram_order(buckets: Sequence[BucketCount]) -> list[BucketCount]:
    # Tall to wide, then by size and length: the aspect distribution of the data reads as a shape.
    return sorted(buckets, key=lambda b: (b.width / b.height, b.width * b.height, b.frames))


def bucket_histogram(
    report: ScanReport,
    path: str | os.PathLike[str],
    *,
    width: int = 720,
    row_height: int = 20,
) -> tuple[int, int]:
    """Draw samples per bucket as horizontal bars (tall to wide) into a PNG at ``path``.

    Horizontal because bucket labels (``832x480 x81f``) are long and there can be dozens of
    buckets; colour tells the frame count. Returns the image size.
    """
    _check(width=width, row_height=row_height)
    if width < _H_LABEL + _H_COUNT + 2 * _H_MARGIN + 20:
        raise ConfigError(
            format_error("width", width, f"must be >= {_H_LABEL + _H_COUNT + 2 * _H_MARGIN + 20}")
        )
    buckets = _histogram_order(report.buckets)
    size = bucket_histogram_size(len(buckets), width=width, row_height=row_height)
    image = Image.new("RGB", size, _BACKGROUND)
    draw = ImageDraw.Draw(image)
    font, small = _font(13), _font(11)
    total = sum(b.samples for b in buckets)
    title = f"samples per bucket: {total} sample(s) in {len(buckets)} bucket(s)"
    draw.text(
        (_H_MARGIN, _H_MARGIN),
        _fit(draw, title, font, width - 2 * _H_MARGIN),
        fill=_INK,
        font=font,
    )
    frames = sorted({b.frames for b in buckets})
    colour = {f: _PALETTE[i % len(_PALETTE)] for i, f in enumerate(frames)}
    x = _H_MARGIN
    legend_y = _H_MARGIN + 20
    for f in frames:
        label = f"{f} frames"
        if x + 14 + draw.textlength(label, font=small) > width - _H_MARGIN:
            break
        draw.rectangle((x, legend_y + 2, x + 10, legend_y + 12), fill=colour[f])
        draw.text((x + 14, legend_y), label, fill=_MUTED, font=small)
        x += 14 + int(draw.textlength(label, font=small)) + 14
    top = _H_TITLE + _H_MARGIN
    if not buckets:
        draw.text((_H_MARGIN, top), "no samples: every file was skipped", fill=_ALERT, font=font)
    most = max((b.samples for b in buckets), default=1)
    bar_x = _H_MARGIN + _H_LABEL
    span = width - bar_x - _H_COUNT - _H_MARGIN
    for i, b in enumerate(buckets):
        y = top + i * row_height
        label = _fit(draw, b.label, small, _H_LABEL - 8)
        draw.text((_H_MARGIN, y + (row_height - 13) // 2), label, fill=_INK, font=small)
        length = max(1, round(span * b.samples / most))
        pad = max(1, row_height // 6)
        draw.rectangle(
            (bar_x, y + pad, bar_x + length, y + row_height - pad), fill=colour[b.frames]
        )
        draw.text(
            (bar_x + length + 6, y + (row_height - 13) // 2),
            str(b.samples),
            fill=_INK,
            font=small,
        )
    _save(image, path)
    return size


# -- contact sheet -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContactSheet:
    """What :func:`contact_sheet` drew.

    Attributes:
        path: the PNG written.
        size: its ``(width, height)``; equals :func:`contact_sheet_size` of the shown buckets.
        buckets: the buckets shown, one row each, as ``(width, height, frames)``.
        shown: ``(bucket label, file)`` of every decoded sample on the sheet.
        failed: ``(file, why)`` of every sample that did not decode (skipped, another sample
            of its bucket tried instead), or that an augmentation turned into a failure.
        augmentations: the augmentation stages applied, by ``repr``, in order (empty: none).
        applied: per entry of ``shown``, the label of the augmentations drawn for it (``"flip,
            crop 0.91"``; ``"unchanged"`` when none changed it); empty on a plain sheet.
    """

    path: str
    size: tuple[int, int]
    buckets: tuple[tuple[int, int, int], ...]
    shown: tuple[tuple[str, str], ...]
    failed: tuple[tuple[str, str], ...]
    augmentations: tuple[str, ...] = ()
    applied: tuple[str, ...] = ()


def thumbnail_width(width: int, height: int, thumb_height: int) -> int:
    """Width of one frame thumbnail of a ``width x height`` bucket scaled to ``thumb_height``."""
    return max(1, round(thumb_height * width / height))


def _cell_width(bucket: Sequence[int], frames_per_sample: int, thumb_height: int) -> int:
    tw = thumbnail_width(bucket[0], bucket[1], thumb_height)
    slots = min(frames_per_sample, bucket[2])  # an image bucket (1 frame) needs one slot
    return max(_S_MIN_CELL, slots * tw + (slots - 1) * _S_FRAME_GAP)


def _row_height(thumb_height: int, augmented: bool = False) -> int:
    return _S_LABEL + thumb_height + _S_NAME + (_S_AUGMENT if augmented else 0) + _S_ROW_GAP


def contact_sheet_size(
    buckets: Sequence[tuple[int, int, int]],
    *,
    per_bucket: int = 3,
    frames_per_sample: int = 4,
    thumb_height: int = 64,
    augmented: bool = False,
) -> tuple[int, int]:
    """``(width, height)`` of a contact sheet showing ``buckets``, each ``(width, height, frames)``.

    One row per bucket: a label line, ``per_bucket`` cells of ``min(frames_per_sample,
    frames)`` thumbnails ``thumb_height`` tall (a cell is at least wide enough for a file name),
    a file-name line and, on an ``augmented`` sheet, a line naming the augmentations drawn;
    plus a title and a footer line. An empty sheet keeps one row for its message.
    """
    rows = [
        2 * _S_MARGIN
        + per_bucket * _cell_width(b, frames_per_sample, thumb_height)
        + (per_bucket - 1) * _S_CELL_GAP
        for b in buckets
    ]
    width = max([_S_MIN_WIDTH, *rows])
    row = _row_height(thumb_height, augmented)
    height = 2 * _S_MARGIN + _S_TITLE + max(1, len(buckets)) * row + _S_FOOTER
    return width, height


@dataclass
class _Cell:
    name: str
    thumbs: list[Image.Image]
    applied: str = ""


def _augment(clip: Clip, stages: Sequence[Stage[Clip, Clip]]) -> tuple[Clip, str]:
    """``clip`` through ``stages`` at epoch 0 (as ``clip_stages=`` runs them), and a label.

    The label joins each stage's ``describe`` of its draw for this clip (a stage without one
    is named instead), so a reader can tell a flipped or zoomed thumbnail from a plain one.

    Raises:
        ValueError: a stage yielded a ``Failed`` or not exactly one clip; the caller notes the
            sample as failed, as it does a decode error.
    """
    context = StageContext()
    labels = []
    for stage in stages:
        describe = getattr(stage, "describe", None)
        label = describe(clip.key, context.epoch) if callable(describe) else stage.name
        out = list(stage([clip], context))
        if len(out) != 1 or not isinstance(out[0], Clip):
            why = out[0].message if out and isinstance(out[0], Failed) else f"{len(out)} items"
            raise ValueError(
                format_error(f"augmentation {stage.name}", why, "must turn one clip into one clip")
            )
        clip = out[0]
        if label:
            labels.append(str(label))
    return clip, ", ".join(labels) or "unchanged"


def _frame_indices(frames: int, wanted: int) -> list[int]:
    """``wanted`` frames spread evenly over a clip (first and last included), fewer if short."""
    k = min(frames, wanted)
    if k <= 1:
        return [0]
    return [round(i * (frames - 1) / (k - 1)) for i in range(k)]


def _candidates(samples: Sequence[PlanSample], seed: int, label: str) -> list[PlanSample]:
    """A seeded order over a bucket's samples, one per file first (variety over repeats)."""
    order = sorted(samples, key=lambda s: s.key)
    sample_rng(seed, 0, f"contact:{label}", "contact").shuffle(order)
    seen: set[str] = set()
    first: list[PlanSample] = []
    rest: list[PlanSample] = []
    for s in order:
        (rest if s.path in seen else first).append(s)
        seen.add(s.path)
    return first + rest


def contact_sheet(
    report: ScanReport,
    path: str | os.PathLike[str],
    *,
    per_bucket: int = 3,
    frames_per_sample: int = 4,
    thumb_height: int = 64,
    max_buckets: int = 12,
    threads: int | None = None,
    augmentations: Sequence[Stage[Clip, Clip]] = (),
) -> ContactSheet:
    """Decode a few samples of each bucket exactly as training does and draw them on one PNG.

    Rows are the ``max_buckets`` buckets with the most samples; each shows up to
    ``per_bucket`` samples (a seeded choice, distinct files first), each as
    ``frames_per_sample`` frames spread over the clip, downscaled to ``thumb_height``. A sample
    that fails to decode is logged, listed in the footer and in ``ContactSheet.failed``, and
    replaced by another of its bucket when there is one: the sheet is always written.

    ``augmentations`` (clip stages, e.g. :class:`~wan_data.stages.CropJitter`,
    :class:`~wan_data.stages.RandomFlip`, :class:`~wan_data.stages.ColorJitter`) run on every
    decoded clip in order at epoch 0, as ``clip_stages=`` would in training's first epoch, so
    the thumbnails show the augmented frames; a line under each names the draw it got. Their
    draws are seeded per clip, so the same scan and stages give the same sheet.

    Decoding a clip decodes all its frames at bucket size (as training does), so the cost is
    about ``max_buckets x per_bucket`` training samples; ``threads`` decode buckets in parallel
    (default: up to 4, one clip in memory per thread).

    Raises:
        ConfigError: bad layout numbers, or a report without decode options (one loaded from
            JSON rather than returned by ``scan_dataset``).
    """
    _check(
        per_bucket=per_bucket,
        frames_per_sample=frames_per_sample,
        thumb_height=thumb_height,
        max_buckets=max_buckets,
    )
    options = report.decode_options
    if options is None:
        raise ConfigError(
            format_error(
                "report.decode_options",
                None,
                "is needed to decode samples",
                "pass the report scan_dataset returned (a report read back from JSON has no "
                "samples)",
            )
        )
    shown_buckets = report.buckets[:max_buckets]
    by_bucket: dict[tuple[int, int, int], list[PlanSample]] = {}
    for s in report.samples:
        by_bucket.setdefault((s.bucket.width, s.bucket.height, s.bucket.frames), []).append(s)

    def one(b: BucketCount) -> tuple[list[_Cell], list[tuple[str, str]]]:
        cells: list[_Cell] = []
        failed: list[tuple[str, str]] = []
        candidates = _candidates(
            by_bucket.get((b.width, b.height, b.frames), []), options.seed, b.label
        )
        tw = thumbnail_width(b.width, b.height, thumb_height)
        for sample in candidates[: 3 * per_bucket]:
            if len(cells) == per_bucket:
                break
            try:
                clip = decode_sample(sample.probed, sample.clip_index, sample.bucket, options, 0)
                clip, applied = _augment(clip, augmentations) if augmentations else (clip, "")
            except Exception as exc:  # any failure is this file's: note it, try another
                why = f"{type(exc).__name__}: {clean_message(exc)[:200]}"
                release_frames(exc)  # the traceback holds the decoder: free it now
                logger.warning("contact sheet: %s did not decode, skipped (%s)", sample.path, why)
                failed.append((sample.path, why))
                continue
            thumbs = []
            for index in _frame_indices(clip.bucket.frames, frames_per_sample):
                frame = clip.pixels[index].permute(1, 2, 0).contiguous().numpy()
                thumbs.append(
                    Image.fromarray(frame, "RGB").resize(
                        (tw, thumb_height), Image.Resampling.LANCZOS
                    )
                )
            name = Path(sample.path).name + (f" #{sample.clip_index}" if sample.clip_index else "")
            cells.append(_Cell(name, thumbs, applied))
            del clip
        return cells, failed

    workers = threads if threads is not None else min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="wan_data_sheet") as pool:
        results = list(pool.map(one, shown_buckets))

    buckets = [(b.width, b.height, b.frames) for b in shown_buckets]
    augmented = bool(augmentations)
    size = contact_sheet_size(
        buckets,
        per_bucket=per_bucket,
        frames_per_sample=frames_per_sample,
        thumb_height=thumb_height,
        augmented=augmented,
    )
    image = Image.new("RGB", size, _BACKGROUND)
    draw = ImageDraw.Draw(image)
    font, small = _font(13), _font(11)
    inner = size[0] - 2 * _S_MARGIN
    opts = report.options
    title = (
        f"contact sheet: {len(buckets)} of {len(report.buckets)} bucket(s), frames as training "
        f"decodes them (epoch 0, crop {opts.get('crop', 'center')}"
        + (f", augmented: {', '.join(s.name for s in augmentations)})" if augmented else ")")
    )
    draw.text((_S_MARGIN, _S_MARGIN), _fit(draw, title, font, inner), fill=_INK, font=font)
    top = _S_MARGIN + _S_TITLE
    if not buckets:
        draw.text((_S_MARGIN, top), "no samples: every file was skipped", fill=_ALERT, font=font)
    all_failed: list[tuple[str, str]] = []
    shown: list[tuple[str, str]] = []
    applied: list[str] = []
    for row, (b, (cells, failed)) in enumerate(zip(shown_buckets, results, strict=True)):
        all_failed += failed
        y = top + row * _row_height(thumb_height, augmented)
        label = f"{b.width}x{b.height}, {b.frames} frames: {b.samples} sample(s), {b.files} file(s)"
        draw.text((_S_MARGIN, y + 2), _fit(draw, label, font, inner), fill=_INK, font=font)
        cell_w = _cell_width((b.width, b.height, b.frames), frames_per_sample, thumb_height)
        ty = y + _S_LABEL
        for j in range(per_bucket):
            x = _S_MARGIN + j * (cell_w + _S_CELL_GAP)
            if j < len(cells):
                cell = cells[j]
                for i, thumb in enumerate(cell.thumbs):
                    image.paste(thumb, (x + i * (thumb.width + _S_FRAME_GAP), ty))
                name = _fit(draw, cell.name, small, cell_w)
                draw.text((x, ty + thumb_height + 3), name, fill=_MUTED, font=small)
                shown.append((b.label, cell.name))
                if augmented:
                    note = _fit(draw, cell.applied, small, cell_w)
                    draw.text((x, ty + thumb_height + _S_NAME), note, fill=_INK, font=small)
                    applied.append(cell.applied)
            elif failed and j == len(cells):
                draw.rectangle((x, ty, x + cell_w - 1, ty + thumb_height - 1), fill=_EMPTY)
                note = _fit(draw, f"{len(failed)} failed to decode", small, cell_w - 8)
                draw.text((x + 4, ty + 4), note, fill=_ALERT, font=small)
    footer_y = size[1] - _S_MARGIN - _S_FOOTER + 4
    if all_failed:
        names = ", ".join(Path(p).name for p, _ in all_failed)
        footer = f"{len(all_failed)} sample(s) did not decode and were skipped: {names}"
        draw.text((_S_MARGIN, footer_y), _fit(draw, footer, small, inner), fill=_ALERT, font=small)
    else:
        footer = "every sample shown decoded with the scan's training options"
        draw.text((_S_MARGIN, footer_y), _fit(draw, footer, small, inner), fill=_MUTED, font=small)
    _save(image, path)
    return ContactSheet(
        path=os.fspath(path),
        size=size,
        buckets=tuple(buckets),
        shown=tuple(shown),
        failed=tuple(all_failed),
        augmentations=tuple(repr(s) for s in augmentations),
        applied=tuple(applied),
    )


def _save(image: Image.Image, path: str | os.PathLike[str]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, format="PNG", optimize=True)
