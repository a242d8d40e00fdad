"""Typed items that flow between stages, one per stage boundary.

Every item is a frozen dataclass with a stable ``key`` (the identity of source + clip) and checks
its own shapes and dtypes on construction, so a malformed item fails where it is made, with the
file named, instead of deep inside collate. Failure is an item too (:class:`Failed`): it flows
downstream untouched and is dropped before batching, so ``None`` never means "failed".
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Literal, TypedDict

import torch

from wan_data.errors import format_error

__all__ = [
    "Batch",
    "Bucket",
    "CachedClip",
    "Clip",
    "CropBox",
    "EncodeJob",
    "Encoded",
    "Failed",
    "Item",
    "MediaType",
    "PlanSample",
    "Probed",
    "Source",
    "ValidationResult",
    "VideoMetadata",
]

MediaType = Literal["video", "image"]


def _require(ok: bool, what: str, value: object, rule: str, path: str | None = None) -> None:
    if not ok:
        raise ValueError(format_error(what, value, rule, path=path))


@dataclass(frozen=True)
class Source:
    """A media file found by the collect stage, with its caption candidates.

    Attributes:
        key: stable identity, ``<concept>/<path relative to its root>`` plus ``@<repeat>`` for
            repeated concepts, so repeats sample different windows.
        path: absolute path of the file.
        media_type: ``"video"`` or ``"image"`` (images become one-frame clips).
        captions: caption candidates (one is chosen per sample and epoch by a seeded RNG).
        concept: name of the root or concept the file came from.
        repeat: repeat index within its concept (0 for the first).
        loss_weight: its concept's ``loss_weight``, carried into the batch (``loss_weights``)
            so a trainer can weight each member's loss.
    """

    key: str
    path: str
    media_type: MediaType
    captions: tuple[str, ...] = ()
    concept: str = ""
    repeat: int = 0
    loss_weight: float = 1.0

    def __post_init__(self) -> None:
        _require(bool(self.key), "Source.key", self.key, "must be non-empty", self.path)
        _require(bool(self.path), "Source.path", self.path, "must be non-empty")
        _require(
            self.media_type in ("video", "image"),
            "Source.media_type",
            self.media_type,
            "must be 'video' or 'image'",
            self.path,
        )
        _require(
            all(isinstance(c, str) for c in self.captions),
            "Source.captions",
            self.captions,
            "must be a tuple of str",
            self.path,
        )
        _require(self.repeat >= 0, "Source.repeat", self.repeat, "must be >= 0", self.path)
        _require(
            isinstance(self.loss_weight, (int, float))
            and not isinstance(self.loss_weight, bool)
            and math.isfinite(self.loss_weight)
            and self.loss_weight >= 0,
            "Source.loss_weight",
            self.loss_weight,
            "must be a finite number >= 0",
            self.path,
        )


_MAX_SECONDS = 1e9  # ~32 years: anything longer is a corrupt header, not a video
_MAX_FPS = 1e6


@dataclass(frozen=True)
class VideoMetadata:
    """What the probe learned about one file (the spec's data model).

    Units: ``fps`` in frames per second (average over the content for VFR files), ``duration``
    and ``begin_seconds`` in seconds of presentation time. ``frame_count`` is counted from the
    content (an exact scan), ``frame_count_from_header`` is what the container claims; the two
    differ for truncated or badly muxed files.
    """

    width: int
    height: int
    fps: float
    duration: float
    frame_count: int
    format: str
    codec: str
    is_corrupted: bool = False
    error_details: str | None = None
    begin_seconds: float = 0.0
    frame_count_from_header: int | None = None
    media_type: MediaType = "video"

    def __post_init__(self) -> None:
        _require(self.width >= 0, "VideoMetadata.width", self.width, "must be >= 0")
        _require(self.height >= 0, "VideoMetadata.height", self.height, "must be >= 0")
        _require(self.frame_count >= 0, "VideoMetadata.frame_count", self.frame_count, ">= 0")
        # Finite and bounded: a header claiming 1e308 s would overflow the frame arithmetic.
        _require(
            0 <= self.fps <= _MAX_FPS, "VideoMetadata.fps", self.fps, f"must be in [0, {_MAX_FPS}]"
        )
        _require(
            0 <= self.duration <= _MAX_SECONDS,
            "VideoMetadata.duration",
            self.duration,
            f"must be in [0, {_MAX_SECONDS:g}] seconds",
        )
        _require(
            abs(self.begin_seconds) <= _MAX_SECONDS,
            "VideoMetadata.begin_seconds",
            self.begin_seconds,
            f"must be within +-{_MAX_SECONDS:g} seconds",
        )

    @property
    def end_seconds(self) -> float:
        """Presentation time at which the last frame stops being shown."""
        return self.begin_seconds + self.duration


@dataclass(frozen=True)
class ValidationResult:
    """Outcome of validating one file (the spec's data model)."""

    is_valid: bool
    error_message: str | None = None
    warnings: tuple[str, ...] = ()
    metadata: VideoMetadata | None = None
    processing_time: float = 0.0
    reason: str | None = None

    def __post_init__(self) -> None:
        _require(
            self.is_valid or bool(self.error_message),
            "ValidationResult.error_message",
            self.error_message,
            "must explain why the file is invalid",
        )
        _require(
            not self.is_valid or self.metadata is not None,
            "ValidationResult.metadata",
            None,
            "must be set for a valid file",
        )


@dataclass(frozen=True)
class Probed:
    """A source whose file opened and passed validation."""

    source: Source
    metadata: VideoMetadata
    warnings: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The source's key: a probed file is named as its source."""
        return self.source.key

    @property
    def path(self) -> str:
        """The source file's absolute path."""
        return self.source.path


@dataclass(frozen=True)
class Bucket:
    """Shape class of a clip: every batch holds clips of one bucket."""

    frames: int
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ("frames", "width", "height"):
            value = getattr(self, name)
            _require(
                isinstance(value, int) and not isinstance(value, bool),
                f"Bucket.{name}",
                value,
                "must be an int",
            )
        _require(
            self.frames >= 1 and (self.frames - 1) % 4 == 0,
            "Bucket.frames",
            self.frames,
            "must be 4k+1 (1, 5, 9, ... 81)",
        )
        _require(self.width > 0, "Bucket.width", self.width, "must be > 0")
        _require(self.height > 0, "Bucket.height", self.height, "must be > 0")

    def __str__(self) -> str:
        return f"{self.frames}x{self.width}x{self.height}"


@dataclass(frozen=True)
class CropBox:
    """A crop in source pixel coordinates (x, y of the top-left corner, width, height)."""

    x: float
    y: float
    width: float
    height: float

    def as_list(self) -> list[float]:
        """``[x, y, width, height]``: the crop as a batch's ``crops`` entry holds it (plain
        floats, JSON-ready)."""
        return [self.x, self.y, self.width, self.height]


@dataclass(frozen=True, repr=False)
class Clip:
    """A decoded, resized and cropped pixel clip, ready to batch.

    Attributes:
        key: ``<source key>#<clip index>``.
        source: where it came from.
        pixels: uint8 tensor (F, 3, H, W) matching ``bucket``; converted to float only when
            batched, so workers ship a quarter of the bytes through shared memory.
        frame_times: presentation time in seconds of every frame.
        bucket: the shape class.
        crop: the crop box in source pixel coordinates.
        caption: the caption chosen for this sample and epoch.
        clip_index: index of the clip within its source (modes ``uniform`` and ``chunks``).
        repeated_frames: frames that repeat the frame before them (a source slower than the
            target fps; a faster source never repeats one).
    """

    key: str
    source: Source
    pixels: torch.Tensor
    frame_times: tuple[float, ...]
    bucket: Bucket
    crop: CropBox
    caption: str = ""
    clip_index: int = 0
    repeated_frames: int = 0

    def __post_init__(self) -> None:
        p = self.pixels
        path = self.source.path
        _require(isinstance(p, torch.Tensor), "Clip.pixels", type(p).__name__, "must be a tensor")
        _require(p.dtype == torch.uint8, "Clip.pixels.dtype", p.dtype, "must be uint8", path)
        expected = (self.bucket.frames, 3, self.bucket.height, self.bucket.width)
        _require(
            tuple(p.shape) == expected,
            "Clip.pixels.shape",
            tuple(p.shape),
            f"must equal (F, 3, H, W) of bucket {self.bucket} = {expected}",
            path,
        )
        _require(
            len(self.frame_times) == self.bucket.frames,
            "len(Clip.frame_times)",
            len(self.frame_times),
            f"must equal the bucket's frame count {self.bucket.frames}",
            path,
        )
        _require(
            all(a <= b for a, b in itertools.pairwise(self.frame_times)),
            "Clip.frame_times",
            self.frame_times[:8],
            "must never go backwards (frames in presentation order)",
            path,
        )
        _require(
            0 <= self.repeated_frames < max(1, self.bucket.frames),
            "Clip.repeated_frames",
            self.repeated_frames,
            f"must be in [0, {self.bucket.frames}) (the first frame repeats nothing)",
            path,
        )

    def __repr__(self) -> str:
        return (
            f"Clip(key={self.key!r}, pixels={tuple(self.pixels.shape)} {self.pixels.dtype}, "
            f"bucket={self.bucket}, frames {self.frame_times[0]:.3f}s..{self.frame_times[-1]:.3f}s)"
        )


@dataclass(frozen=True)
class PlanSample:
    """A sample: one clip of a source in the epoch-independent sample list — which source,
    which window (``clip_index``) and which bucket. Construction makes the list once; each
    epoch's plan orders it into batches, and decoding turns a sample into a :class:`Clip`.
    """

    probed: Probed
    clip_index: int
    bucket: Bucket

    def __post_init__(self) -> None:
        _require(
            isinstance(self.clip_index, int) and self.clip_index >= 0,
            "clip_index",
            self.clip_index,
            "must be an int >= 0",
            self.probed.path,
        )

    @property
    def key(self) -> str:
        """``<source key>#<clip index>``: the sample's identity, and the key of the clip it
        becomes."""
        return f"{self.probed.key}#{self.clip_index}"

    @property
    def path(self) -> str:
        """The source file's absolute path (what a skip record names)."""
        return self.probed.path


@dataclass(frozen=True)
class CachedClip:
    """A clip read back from the latent cache: latents instead of pixels (the train pass)."""

    key: str
    source: Source
    latents: torch.Tensor
    frame_times: tuple[float, ...]
    crop: CropBox
    bucket: Bucket
    caption: str
    # The caption's unpadded (L, D) UMT5 embedding, when the dataset has a text encoder.
    text_embed: torch.Tensor | None = None
    # The I2V condition latents (z, F_lat, h, w) and CLIP embedding (257 or 514, D), when cached.
    cond_latents: torch.Tensor | None = None
    clip_embeds: torch.Tensor | None = None

    @property
    def path(self) -> str:
        """The source file's absolute path (what a skip record names)."""
        return self.source.path


@dataclass(frozen=True)
class EncodeJob:
    """Decoded clips of one bucket on their way into the VAE (the cache pass).

    Attributes:
        keys: the cache key of each clip.
        paths: each clip's source file.
        pixels: float32 ``(B, 3, F, H, W)`` in [-1, 1].
        entries: per clip, the metadata stored beside its latents (path, clip, variant,
            frame times, crop, bucket, caption).
    """

    keys: tuple[str, ...]
    paths: tuple[str, ...]
    pixels: torch.Tensor
    entries: tuple[dict[str, str], ...]

    def __post_init__(self) -> None:
        count = len(self.keys)
        _require(
            count >= 1 and len(self.paths) == count and len(self.entries) == count,
            "encode job members",
            count,
            "must be >= 1, with one path and one entry per key",
        )
        _require(
            self.pixels.ndim == 5 and self.pixels.shape[0] == count,
            "encode job pixels shape",
            tuple(self.pixels.shape),
            f"must be ({count}, 3, F, H, W)",
        )

    def pin_memory(self) -> EncodeJob:
        """The job with its pixels in page-locked memory (what ``DataLoader(pin_memory=True)``
        calls): the copy to a CUDA device is then a DMA that ``non_blocking=True`` overlaps with
        the host, instead of a staged copy through a pinned bounce buffer."""
        return replace(self, pixels=self.pixels.pin_memory())

    @property
    def key(self) -> str:
        """The first clip's key, plus ``(+N)`` for the N others: one name for the job in a skip
        record or a log line."""
        return self.keys[0] if len(self.keys) == 1 else f"{self.keys[0]} (+{len(self.keys) - 1})"

    @property
    def path(self) -> str:
        """The first clip's source file: a skip record of the job names one path."""
        return self.paths[0]


@dataclass(frozen=True)
class Encoded:
    """One clip's latents, ready for the cache (the ``encode`` stage's output)."""

    key: str
    path: str
    latents: torch.Tensor
    entry: dict[str, str]
    # Tensors cached beside the latents, by name: "cond" (the I2V condition latents), "clip"
    # (the CLIP image embedding); see wan_data/conditioning/condition_cache.py.
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class Batch(TypedDict, total=False):
    """What the dataset yields: one planned, bucket-homogeneous batch (JSON-like keys).

    Built in one place (:func:`wan_data.stages.collate.make_batch`) for pixel and latent
    batches alike; exactly one of ``pixels`` and ``latents`` is present.

    Keys:
        pixels: float32 ``(B, 3, F, H, W)`` in [-1, 1] (pixel batches).
        latents: ``(B, z, T, h, w)`` in the cache's dtype (cached batches).
        captions, paths, keys: per member: the caption, the source file, the sample key.
        frame_times: per member, each frame's presentation time in seconds.
        crops: per member, ``[x, y, w, h]`` of the crop in source pixels.
        buckets: per member, the bucket as ``"FxWxH"`` (frames, width, height).
        concepts: per member, the concept (root) its source came from.
        loss_weights: float32 ``(B,)``, each member's concept ``loss_weight`` (ones unless a
            concept sets one): multiply the per-member loss by it.
        repeated_fraction: per member, the share of frames repeating the one before (a
            source slower than the target fps); pixel batches only.
        text_embeds: ``(B, max_length, D)`` UMT5 embeddings of the captions, zero-padded after
            each caption's length exactly as diffusers' ``WanPipeline.encode_prompt`` pads
            (latent batches of a dataset with a text encoder).
        text_lens: ``(B,)`` int64, each caption's token count (its non-zero rows).
        cond_latents: ``(B, 16, F_lat, h, w)`` the normalised VAE latent of ``[frame 0, zeros]``
            (``[frame 0, zeros, last frame]`` for FLF2V), as ``WanImageToVideoPipeline.
            prepare_latents`` builds it (``conditioning="i2v"``/``"flf2v"``).
        cond_mask: ``(B, 4, F_lat, h, w)`` the pipeline's mask (ones on latent frame 0; FLF2V
            also ``[0, 0, 0, 1]`` on the last); the transformer input is
            ``cat([noisy, cond_mask, cond_latents], 1)`` (36 channels).
        clip_embeds: ``(B, 257, 1280)`` CLIP image embedding of frame 0 (Wan 2.1 I2V; FLF2V:
            ``(B, 514, 1280)``, first and last frame).
        dropped: inputs dropped while collating (``Failed``/``None``).
        position, epoch: where the batch is in its epoch's plan (what resume needs).
        replaced: members that are not the planned ones: replaced by another sample of the
            bucket after a failure, or a good member repeated when the bucket had no unused
            sample left (the plan's own ``small_buckets="repeat"`` fills are not counted).
        padding: ``True`` for a copy of another rank's batch, added only so every rank has
            the same number of batches.
    """

    pixels: torch.Tensor
    latents: torch.Tensor
    captions: list[str]
    paths: list[str]
    keys: list[str]
    frame_times: list[list[float]]
    crops: list[list[float]]
    buckets: list[str]
    concepts: list[str]
    loss_weights: torch.Tensor
    repeated_fraction: list[float]
    text_embeds: torch.Tensor
    text_lens: torch.Tensor
    cond_latents: torch.Tensor
    cond_mask: torch.Tensor
    clip_embeds: torch.Tensor
    dropped: int
    position: int
    epoch: int
    replaced: int
    padding: bool


@dataclass(frozen=True)
class Failed:
    """A sample that could not be produced, carried as a value instead of ``None``.

    Attributes:
        key: the key of the item that failed.
        path: its source file.
        stage: the stage that failed (``collect``, ``probe``, ``decode``...).
        reason: short machine-readable tag (``unreadable``, ``too_short``...).
        error_type: class name of the underlying exception.
        message: the full message, in the ``<what> (<value>) <rule>. <hint>`` format.
        attempts: how many times the stage tried.
    """

    key: str
    path: str
    stage: str
    reason: str
    error_type: str
    message: str
    attempts: int = 1

    def __post_init__(self) -> None:
        _require(bool(self.stage), "Failed.stage", self.stage, "must be non-empty", self.path)
        _require(bool(self.reason), "Failed.reason", self.reason, "must be non-empty", self.path)
        _require(self.attempts >= 1, "Failed.attempts", self.attempts, "must be >= 1", self.path)

    def as_record(self) -> dict[str, object]:
        """The JSON-serialisable form used by the report and the ledger."""
        return {
            "key": self.key,
            "path": self.path,
            "stage": self.stage,
            "reason": self.reason,
            "error_type": self.error_type,
            "message": self.message,
            "attempts": self.attempts,
        }


Item = Source | Probed | Clip | Failed
