"""Defaults and checks of the options that ``WanVideoDataset`` and ``wan-data scan`` share.

The scan must judge every file exactly as training will, so both take their defaults and their
validation from here rather than from two copies that could drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wan_data.errors import format_error
from wan_data.media.buckets import Preset, get_preset
from wan_data.media.sampling import SAMPLING_MODES
from wan_data.stages.collect import MISSING_CAPTION_MODES

__all__ = [
    "DEFAULT_FPS",
    "DEFAULT_FRAMES",
    "DEFAULT_RESOLUTION",
    "DEFAULT_STEP",
    "Shape",
    "check_sample_options",
    "resolve_shape",
]

# Without a preset: Wan 2.1's sampling rate, side multiple and official size, and the frame
# buckets from 1 s to 5 s at 16 fps.
DEFAULT_FRAMES = (17, 33, 49, 81)
DEFAULT_FPS = 16.0
DEFAULT_RESOLUTION = (832, 480)
DEFAULT_STEP = 16


@dataclass(frozen=True)
class Shape:
    """Frames, fps, resolution(s) and step after the preset and the defaults were applied."""

    frames: list[Any]
    fps: Any
    resolution: Any
    step: Any
    preset: Preset | None = None
    problems: list[str] = field(default_factory=list)


def resolve_shape(
    preset: str | None, *, frames: Any, fps: Any, resolution: Any, step: Any, unset: object
) -> Shape:
    """Apply ``preset`` (then the defaults) to the options left unset.

    ``None`` means unset for every option but ``fps``, where ``None`` means native frame rate
    and the caller's ``unset`` sentinel means unset.
    """
    problems: list[str] = []
    chosen: Preset | None = None
    if preset is not None:
        try:
            chosen = get_preset(preset)
        except ValueError as exc:
            problems.append(str(exc))
    if frames is None:
        frames = chosen.frames if chosen else DEFAULT_FRAMES
    if fps is unset:
        fps = chosen.fps if chosen else DEFAULT_FPS
    if resolution is None:
        resolution = chosen.resolutions if chosen else DEFAULT_RESOLUTION
    if step is None:
        step = chosen.step if chosen else DEFAULT_STEP
    frame_list = [frames] if isinstance(frames, int) else list(frames)
    return Shape(frame_list, fps, resolution, step, chosen, problems)


def check_sample_options(
    *,
    fps: Any,
    sampling: Any,
    clips_per_video: Any,
    crop: Any,
    missing_caption: Any,
    max_aspect: Any,
    max_pixels: Any,
    seed: Any,
) -> list[str]:
    """Problems with the options that decide which clips a file yields (empty when valid)."""
    problems = []
    if fps is not None and (not isinstance(fps, (int, float)) or isinstance(fps, bool) or fps <= 0):
        problems.append(
            format_error(
                "fps",
                fps,
                "must be a positive number or None",
                "16 for Wan2.1/2.2-A14B, 24 for TI2V-5B",
            )
        )
    if sampling not in SAMPLING_MODES:
        problems.append(format_error("sampling", sampling, f"must be one of {SAMPLING_MODES}"))
    if not isinstance(clips_per_video, int) or clips_per_video < 0:
        problems.append(format_error("clips_per_video", clips_per_video, "must be an int >= 0"))
    if crop not in ("center", "random"):
        problems.append(format_error("crop", crop, "must be 'center' or 'random'"))
    if missing_caption not in MISSING_CAPTION_MODES:
        problems.append(
            format_error(
                "missing_caption",
                missing_caption,
                f"must be one of {', '.join(repr(m) for m in MISSING_CAPTION_MODES)}",
            )
        )
    if not isinstance(max_aspect, (int, float)) or max_aspect < 1:
        problems.append(format_error("max_aspect", max_aspect, "must be >= 1"))
    if not isinstance(max_pixels, int) or max_pixels < 1:
        problems.append(format_error("max_pixels", max_pixels, "must be a positive int"))
    if not isinstance(seed, int):
        problems.append(format_error("seed", seed, "must be an int"))
    return problems
