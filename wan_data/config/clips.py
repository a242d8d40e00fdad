"""The groups that decide which clips a dataset holds: sources, shape, sampling, filters,
batching. A file's verdict and its samples depend on these (and the seed) only, so they are
what ``wan-data scan`` and the sample index key on, and what a source may override.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from wan_data.config.base import ConfigGroup, _is_int, _is_number, _is_pair, _optional_positive
from wan_data.config.fields import AUTO, Auto, option
from wan_data.config.values import (
    parse_fps,
    parse_frame_batch_size,
    parse_optional_float,
    parse_optional_int,
    parse_size,
    show_fps,
    show_frame_batch_sizes,
    show_optional,
    show_sizes,
    show_words,
)
from wan_data.errors import ConfigError, format_error
from wan_data.media.buckets import BucketSet, check_resolutions, make_bucket_set
from wan_data.media.sampling import SAMPLING_MODES, check_frame_buckets
from wan_data.planning.plan import SMALL_BUCKET_MODES
from wan_data.sources.split import SPLIT_MODES
from wan_data.stages.collect import MISSING_CAPTION_MODES

__all__ = [
    "DEFAULT_FPS",
    "DEFAULT_FRAMES",
    "DEFAULT_RESOLUTION",
    "DEFAULT_STEP",
    "BatchingConfig",
    "FiltersConfig",
    "SamplingConfig",
    "ShapeConfig",
    "SourcesConfig",
]

# Without a preset: Wan 2.1's sampling rate, side multiple and official size, and the frame
# buckets from 1 s to 5 s at 16 fps.
DEFAULT_FRAMES = (17, 33, 49, 81)
DEFAULT_FPS = 16.0
DEFAULT_RESOLUTION = ((832, 480),)
DEFAULT_STEP = 16


@dataclass(frozen=True)
class SourcesConfig(ConfigGroup):
    """How sources and their captions are found (see docs/collect.md)."""

    title: ClassVar[str] = "sources"

    missing_caption: str = option(
        "empty",
        help="a source without caption: 'empty', 'filename', 'skip' or 'error'",
        choices=MISSING_CAPTION_MODES,
    )
    caption_extension: str = option(".txt", help="suffix of caption sidecar files")
    allow_outside_root: bool = option(
        False, help="accept entries (symlinks, metadata paths) that resolve outside their root"
    )
    split: str = option(
        "all",
        help="which sources to use: 'all', 'train' (not held out) or 'val' (held out)",
        choices=SPLIT_MODES,
    )
    val_fraction: float = option(
        0.0,
        help="hold out each source with this probability, stably by key (0 = off)",
        parse=float,
    )
    val_count: int = option(
        0, help="hold out this many sources, the smallest by key hash (0 = off)", parse=int
    )
    split_seed: int = option(0, help="seed of the val split's key hash", parse=int)

    def problems(self) -> list[str]:
        problems = []
        if self.missing_caption not in MISSING_CAPTION_MODES:
            problems.append(
                format_error(
                    "missing_caption",
                    self.missing_caption,
                    f"must be one of {', '.join(repr(m) for m in MISSING_CAPTION_MODES)}",
                )
            )
        if not isinstance(self.caption_extension, str) or not self.caption_extension:
            problems.append(
                format_error(
                    "caption_extension", self.caption_extension, "must be a suffix like '.txt'"
                )
            )
        return problems + self._split_problems()

    def _split_problems(self) -> list[str]:
        problems = []
        if self.split not in SPLIT_MODES:
            problems.append(
                format_error(
                    "split", self.split, f"must be one of {', '.join(map(repr, SPLIT_MODES))}"
                )
            )
        fraction_ok = _is_number(self.val_fraction) and 0 <= self.val_fraction < 1
        if not fraction_ok:
            problems.append(
                format_error("val_fraction", self.val_fraction, "must be a number in [0, 1)")
            )
        count_ok = _is_int(self.val_count) and self.val_count >= 0
        if not count_ok:
            problems.append(format_error("val_count", self.val_count, "must be an int >= 0"))
        if not _is_int(self.split_seed):
            problems.append(format_error("split_seed", self.split_seed, "must be an int"))
        if fraction_ok and count_ok:
            if self.val_fraction > 0 and self.val_count > 0:
                problems.append(
                    format_error(
                        "val_fraction and val_count",
                        (self.val_fraction, self.val_count),
                        "are both set",
                        "set one of them (val_fraction is stable when files are added)",
                    )
                )
            elif self.split in ("train", "val") and not (self.val_fraction or self.val_count):
                problems.append(
                    format_error(
                        "split",
                        self.split,
                        "needs a held-out set, but neither val_fraction nor val_count is set",
                        "pass val_fraction=0.05 (stable when files are added) or val_count=N",
                    )
                )
        return problems


@dataclass(frozen=True)
class ShapeConfig(ConfigGroup):
    """The shape of every clip: frame buckets, sampling rate and spatial buckets.

    ``resolution`` accepts one ``(width, height)`` or a list of them (bucket tiers) and is kept
    as a tuple of pairs. :meth:`from_preset` fills the fields a preset sets.
    """

    title: ClassVar[str] = "shape"

    frames: tuple[int, ...] = option(
        DEFAULT_FRAMES,
        help="frame buckets, 4k+1 counts; a video takes the largest it fills",
        parse=int,
        nargs="+",
        show=show_words,
    )
    fps: float | None = option(
        DEFAULT_FPS,
        help="sampling rate by presentation time, or 'native' for every source frame",
        parse=parse_fps,
        show=show_fps,
    )
    resolution: tuple[tuple[int, int], ...] = option(
        DEFAULT_RESOLUTION,
        help="target WxH, or several (bucket tiers)",
        parse=parse_size,
        nargs="+",
        metavar="WxH",
        show=show_sizes,
    )
    step: int = option(
        DEFAULT_STEP, help="side multiple of every bucket (16, or 32 for TI2V-5B)", parse=int
    )
    max_aspect: float = option(4.0, help="widest bucket aspect (and 1/x the tallest)", parse=float)
    no_upscale: bool = option(
        False, help="take the largest bucket not exceeding the source (smaller: too_small)"
    )

    @classmethod
    def from_preset(cls, preset: str | None, **given: Any) -> ShapeConfig:
        """The shape of a preset, with the ``given`` fields overriding it.

        Raises:
            ConfigError: an unknown preset and every problem of the resulting shape.
        """
        from wan_data.media.buckets import get_preset

        if preset is None:
            return cls(**given)
        try:
            chosen = get_preset(preset)
        except ValueError as exc:
            problems = [str(exc)]
            try:
                cls(**given)
            except ConfigError as more:
                problems += list(more.problems)
            raise ConfigError(problems) from None
        values: dict[str, Any] = {
            "frames": chosen.frames,
            "fps": chosen.fps,
            "resolution": chosen.resolutions,
            "step": chosen.step,
        }
        return cls(**{**values, **given})

    def _normalise(self) -> None:
        super()._normalise()
        frames = self.frames
        if _is_int(frames):
            self._set("frames", (frames,))
        elif isinstance(frames, Sequence) and not isinstance(frames, str):
            self._set(
                "frames", tuple(sorted(frames)) if all(map(_is_int, frames)) else tuple(frames)
            )
        resolution: Any = self.resolution
        if _is_pair(resolution):
            self._set("resolution", ((int(resolution[0]), int(resolution[1])),))
        elif isinstance(resolution, Sequence) and all(map(_is_pair, resolution)):
            self._set("resolution", tuple((int(w), int(h)) for w, h in resolution))
        fps: Any = self.fps
        if _is_int(fps):
            self._set("fps", float(fps))

    def problems(self) -> list[str]:
        problems: list[str] = []
        if isinstance(self.frames, tuple):
            problems += check_frame_buckets(list(self.frames))
        else:
            problems.append(format_error("frames", self.frames, "must be an int or a list of ints"))
        problems += check_resolutions(
            list(self.resolution) if isinstance(self.resolution, tuple) else self.resolution,
            self.step,
        )
        if self.fps is not None and (not _is_number(self.fps) or self.fps <= 0):
            problems.append(
                format_error(
                    "fps",
                    self.fps,
                    "must be a positive number or None",
                    "16 for Wan2.1/2.2-A14B, 24 for TI2V-5B",
                )
            )
        if not _is_number(self.max_aspect) or self.max_aspect < 1:
            problems.append(format_error("max_aspect", self.max_aspect, "must be >= 1"))
        if not isinstance(self.no_upscale, bool):
            problems.append(format_error("no_upscale", self.no_upscale, "must be True or False"))
        return problems

    @property
    def resolutions(self) -> tuple[tuple[int, int], ...]:
        """The ``(width, height)`` bucket tiers: ``resolution``, which is always kept as pairs."""
        return self.resolution

    def bucket_set(self) -> BucketSet:
        """The spatial buckets of these options (``resolution``, ``step``, ``max_aspect``; see
        :func:`~wan_data.media.buckets.make_bucket_set`), built anew on each call."""
        return make_bucket_set(self.resolution, step=self.step, max_aspect=self.max_aspect)


@dataclass(frozen=True)
class SamplingConfig(ConfigGroup):
    """Which windows of a video become clips, and where each frame is cropped."""

    title: ClassVar[str] = "sampling"

    sampling: str = option(
        "head",
        help="windows per video: head, full (= head), middle, random, uniform, chunks, slide "
        "or overlapping",
        choices=SAMPLING_MODES,
    )
    clips_per_video: int = option(
        1,
        help="windows per video for 'uniform' and 'overlapping' (0: fewest covering the "
        "video); cap for 'chunks' and 'slide' (0 = all)",
        parse=int,
    )
    crop: str = option(
        "center", help="crop position: center or random", choices=("center", "random")
    )
    stride: int | None = option(
        None,
        help="target frames between 'slide' windows (none: the window length)",
        parse=parse_optional_int,
        show=show_optional,
    )
    frame_stride: int = option(
        1, help="with fps=native, take every n-th source frame (ignored with an fps)", parse=int
    )

    def problems(self) -> list[str]:
        problems = []
        if self.sampling not in SAMPLING_MODES:
            problems.append(
                format_error("sampling", self.sampling, f"must be one of {SAMPLING_MODES}")
            )
        if not _is_int(self.clips_per_video) or self.clips_per_video < 0:
            problems.append(
                format_error("clips_per_video", self.clips_per_video, "must be an int >= 0")
            )
        if self.crop not in ("center", "random"):
            problems.append(format_error("crop", self.crop, "must be 'center' or 'random'"))
        if self.stride is not None and (not _is_int(self.stride) or self.stride < 1):
            problems.append(format_error("stride", self.stride, "must be an int >= 1 or None"))
        if not _is_int(self.frame_stride) or self.frame_stride < 1:
            problems.append(format_error("frame_stride", self.frame_stride, "must be an int >= 1"))
        return problems


@dataclass(frozen=True)
class FiltersConfig(ConfigGroup):
    """What a file must satisfy to be trained on (the probe's limits)."""

    title: ClassVar[str] = "filters"

    max_pixels: int = option(
        4096 * 4096, help="width x height above which a file is skipped as too_large", parse=int
    )
    max_duration_seconds: float | None = option(
        None,
        help="longest accepted video (seconds, or none)",
        parse=parse_optional_float,
        show=show_optional,
    )
    min_source_fps: float | None = option(
        None,
        help="skip videos slower than this as low_fps (none: any rate)",
        parse=parse_optional_float,
        show=show_optional,
    )
    integrity_check: bool | Auto = option(
        AUTO,
        help="decode every video once with FFmpeg's error detection and skip corrupt_frames "
        "(default: on with a latent cache, off for pixels)",
        aliases=("strict",),
    )

    def problems(self) -> list[str]:
        problems = []
        if not _is_int(self.max_pixels) or self.max_pixels < 1:
            problems.append(format_error("max_pixels", self.max_pixels, "must be a positive int"))
        problems += _optional_positive("max_duration_seconds", self.max_duration_seconds)
        problems += _optional_positive(
            "min_source_fps", self.min_source_fps, "e.g. 8 to skip slide shows"
        )
        if not (isinstance(self.integrity_check, bool) or self.integrity_check is AUTO):
            problems.append(
                format_error("integrity_check", self.integrity_check, "must be True, False or AUTO")
            )
        return problems


@dataclass(frozen=True)
class BatchingConfig(ConfigGroup):
    """How planned batches are formed (see docs/batching.md)."""

    title: ClassVar[str] = "batching"

    batch_size: int = option(1, help="samples per batch (batches never mix buckets)", parse=int)
    small_buckets: str = option(
        "repeat",
        help="a bucket's last partial batch: repeat, drop or partial",
        choices=SMALL_BUCKET_MODES,
    )
    frame_batch_sizes: tuple[tuple[int, int], ...] = option(
        (),
        help="batch size per frame bucket, as FRAMES:SIZE (e.g. 1:8 81:1: images at 8, "
        "81-frame clips at 1); a concept's batch_size wins",
        parse=parse_frame_batch_size,
        nargs="+",
        metavar="F:B",
        show=show_frame_batch_sizes,
    )

    def _normalise(self) -> None:
        super()._normalise()
        value = self.frame_batch_sizes
        if isinstance(value, Mapping):
            value = tuple(value.items())
        if isinstance(value, (list, tuple)) and all(_is_pair(v) for v in value):
            self._set("frame_batch_sizes", tuple(sorted((int(f), int(b)) for f, b in value)))

    def problems(self) -> list[str]:
        from wan_data.planning.plan import check_plan_options

        problems = check_plan_options(self.batch_size, self.small_buckets, 1, 0)
        value = self.frame_batch_sizes
        if (
            not isinstance(value, tuple)
            or not all(_is_pair(v) and v[0] >= 1 and v[1] >= 1 for v in value)
            or len({f for f, _ in value}) != len(value)
        ):
            problems.append(
                format_error(
                    "frame_batch_sizes",
                    value,
                    "must map frame counts to batch sizes, each an int >= 1, one per count",
                    "e.g. {1: 8, 81: 1}",
                )
            )
        return problems

    def frame_sizes(self) -> dict[int, int]:
        """``frame_batch_sizes`` as a dict (frame count → batch size)."""
        return dict(self.frame_batch_sizes)
