"""What each option is called in musubi-tuner, diffusion-pipe and OneTrainer.

Most users arrive with a dataset config written for one of those trainers. This module maps
every option of ours (each field of each group in ``groups.py``, ``DatasetConfig``'s own
``seed`` and ``preset``), every :class:`~wan_data.sources.concepts.Concept` field, every
sampling mode and every augmentation stage to the name the peer uses, with a note where the
meaning differs: the same word often means something else (musubi's ``frame_stride`` is the
step between sliding windows, our ``stride``; our ``frame_stride`` is a source-frame skip it
does not have). ``None`` means the peer has no such option; names were never guessed.
``docs/configuration.md`` is generated from these tables (``wan_data/config/reference.py``) and
``tests/config/test_reference.py`` fails when an option of ours has no entry, so a new option
cannot be added without deciding what the peers call it.

Verified against the peers' sources (snapshot commits):

- musubi-tuner ``kohya-ss/musubi-tuner`` @ ``30c658c4f4b0bf05038b3346eff9670259b10fc7``:
  ``src/musubi_tuner/dataset/config_utils.py`` (``BaseDatasetParams``, ``VideoDatasetParams``,
  ``ConfigSanitizer`` schemas), ``src/musubi_tuner/dataset/image_video_dataset.py``
  (``frame_extraction`` modes), ``src/musubi_tuner/dataset/media_utils.py`` (non-recursive
  globs), ``docs/dataset_config.md``, ``src/musubi_tuner/cache_latents.py``,
  ``src/musubi_tuner/wan_cache_latents.py`` (``--i2v``, ``--clip``),
  ``src/musubi_tuner/cache_text_encoder_outputs.py``,
  ``src/musubi_tuner/wan_cache_text_encoder_outputs.py`` (``--t5``),
  ``src/musubi_tuner/wan_train_network.py`` (``--task``),
  ``src/musubi_tuner/training/parser_common.py`` (``--seed``).
- diffusion-pipe ``tdrussell/diffusion-pipe`` @ ``8f83dbf25d03219df705570ec03e62be04bc402f``:
  ``examples/dataset.toml``, ``examples/main_example.toml``, ``utils/dataset.py``
  (``[[directory]]`` keys, ``.txt`` captions, non-recursive ``path.glob('*')``, the cache in
  ``<path>/cache/<model>``), ``models/base.py`` (``video_clip_mode``), ``models/wan/wan.py``
  (``ckpt_path``, ``llm_path``, the 32-pixel step of TI2V-5B), ``train.py``
  (``uncond_fraction``, ``caching_batch_size``, ``image_micro_batch_size_per_gpu``,
  ``eval_datasets``).
- OneTrainer ``Nerogar/OneTrainer`` @ ``23df3832e8f213d64c337e39f9365ba46e99fed0``:
  ``modules/util/config/ConceptConfig.py`` (concept, ``image.*`` and ``text.*`` keys),
  ``modules/util/enum/BalancingStrategy.py``, ``modules/util/enum/ConceptType.py``,
  ``modules/util/config/TrainConfig.py``, ``modules/dataLoader/mixin/DataLoaderText2ImageMixin.py``
  (``prompt_source`` values, the 24 fps video loader), and ``Nerogar/mgds``
  ``src/mgds/pipelineModules/ScaleCropImage.py`` (crop jitter = random crop position),
  ``RandomBrightness.py`` and ``RandomHue.py`` (strength scales). OneTrainer has no Wan model
  type at that commit; its names are given for users bringing concept files.

Names are written as the peer spells them: a TOML key (musubi ``[general]``/``[[datasets]]``,
diffusion-pipe dataset or training file), a command-line flag with its dashes, or a dotted
OneTrainer JSON path (``image.enable_random_flip``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CONCEPT_PEERS",
    "OPTION_PEERS",
    "PEER_ONLY",
    "PEER_TITLES",
    "SAMPLING_PEERS",
    "STAGE_PEERS",
    "PeerNames",
    "PeerOnly",
]

# The peers, in the order of the reference's columns, with their display names.
PEER_TITLES: dict[str, str] = {
    "musubi": "musubi-tuner",
    "diffusion_pipe": "diffusion-pipe",
    "onetrainer": "OneTrainer",
}


@dataclass(frozen=True)
class PeerNames:
    """One option's names in the peers (``None``: the peer has no equivalent).

    Attributes:
        musubi: the musubi-tuner name.
        diffusion_pipe: the diffusion-pipe name.
        onetrainer: the OneTrainer name.
        note: how the meaning differs from ours ("" when it does not, or there is no peer).
    """

    musubi: str | None = None
    diffusion_pipe: str | None = None
    onetrainer: str | None = None
    note: str = ""

    def names(self) -> dict[str, str | None]:
        """The names by peer key (the keys of :data:`PEER_TITLES`)."""
        return {
            "musubi": self.musubi,
            "diffusion_pipe": self.diffusion_pipe,
            "onetrainer": self.onetrainer,
        }


_NONE = PeerNames()


@dataclass(frozen=True)
class PeerOnly:
    """A peer option with no single option of ours, and what to do instead."""

    peer: str
    name: str
    instead: str


# Every option of DatasetConfig (its own fields and every group's), by its flat name.
OPTION_PEERS: dict[str, PeerNames] = {
    # -- DatasetConfig itself
    "seed": PeerNames(
        "--seed",
        None,
        "seed",
        "musubi: the training script's seed (its datasets draw their shuffle seed with "
        "Python's `random`); "
        "OneTrainer: one seed per concept, random by default.",
    ),
    "preset": PeerNames(
        "--task",
        "type",
        None,
        "musubi: `--task` (t2v-14B, i2v-14B...) of the Wan scripts picks the model; "
        "diffusion-pipe: `[model] type = 'wan'`, the variant is detected from `ckpt_path`. "
        "Neither sets frames, fps or resolution, which our presets do.",
    ),
    # -- sources
    "missing_caption": PeerNames(
        None,
        "skip_empty_caption",
        "text.prompt_source",
        "diffusion-pipe: true (its default) = our 'skip', false = 'empty'. OneTrainer: "
        "`prompt_source = 'filename'` captions every file by its name; our 'filename' does so "
        "only for files without a caption.",
    ),
    "caption_extension": PeerNames(
        "caption_extension",
        None,
        None,
        "diffusion-pipe and OneTrainer ('sample' prompts) always read `<file>.txt`.",
    ),
    "allow_outside_root": _NONE,
    "split": PeerNames(
        None,
        "eval_datasets",
        "type",
        "The peers hold out whole datasets: diffusion-pipe lists separate dataset files in "
        "`eval_datasets` (training config); OneTrainer marks a concept `type = VALIDATION`. "
        "Ours holds out sources of the same roots, stably by key (split='val').",
    ),
    "val_fraction": _NONE,
    "val_count": _NONE,
    "split_seed": _NONE,
    # -- shape
    "frames": PeerNames(
        "target_frames",
        "frame_buckets",
        "frames",
        "musubi (frame_extraction='head') cuts one clip per `target_frames` value the video "
        "fills; ours and diffusion-pipe put a video in the largest bucket it fills "
        "(diffusion-pipe always adds a 1-frame bucket). OneTrainer: one count for the run.",
    ),
    "fps": PeerNames(
        "source_fps",
        None,
        None,
        "musubi declares the sources' rate per dataset and resamples to the model's rate; "
        "unset, every frame is used (our fps='native'). Ours reads each file's rate and "
        "samples at `fps`. diffusion-pipe resamples to the model's fixed rate (16 or 24 by Wan "
        "variant); "
        "OneTrainer's video loader to a fixed 24.",
    ),
    "resolution": PeerNames(
        "resolution",
        "resolutions",
        "resolution",
        "musubi: one (W, H), bucket areas match it. diffusion-pipe: side lengths or [W, H] "
        "areas, and every sample is trained at *each* of them; ours puts a source in one "
        "tier, the largest not exceeding its area. OneTrainer: a string ('512'), per concept "
        "`image.resolution_override`.",
    ),
    "step": PeerNames(
        None,
        "num_ar_buckets",
        None,
        "The peers round sides to the model's multiple themselves (diffusion-pipe: 16, 32 for "
        "TI2V-5B). diffusion-pipe's `num_ar_buckets` sets how many aspects exist (evenly in log "
        "space); ours has every aspect the step allows.",
    ),
    "max_aspect": PeerNames(
        None,
        "min_ar, max_ar",
        None,
        "diffusion-pipe bounds width/height by `min_ar`..`max_ar` (needs "
        "`enable_ar_bucket = true`); ours is symmetric: 1/max_aspect..max_aspect, always on.",
    ),
    "no_upscale": PeerNames("bucket_no_upscale", None, None),
    # -- sampling
    "sampling": PeerNames(
        "frame_extraction",
        "video_clip_mode",
        None,
        "The modes are mapped one by one in the sampling table below. diffusion-pipe's "
        "`video_clip_mode` is a training-config key, for all datasets.",
    ),
    "clips_per_video": PeerNames(
        "frame_sample",
        None,
        None,
        "musubi: windows for frame_extraction='uniform' only; ours also caps 'chunks' and "
        "'slide' and sets the count for 'overlapping'.",
    ),
    "crop": PeerNames(
        None,
        None,
        "image.enable_crop_jitter",
        "OneTrainer's crop jitter places the bucket crop at a random offset (our crop='random'); "
        "it is on by default there, ours defaults to 'center'.",
    ),
    "stride": PeerNames(
        "frame_stride",
        None,
        None,
        "musubi's `frame_stride` is the step between 'slide' windows, i.e. our `stride` "
        "(not our `frame_stride`).",
    ),
    "frame_stride": PeerNames(
        None,
        None,
        None,
        "Not musubi's `frame_stride` (that is our `stride`): ours skips source frames with "
        "fps='native'.",
    ),
    # -- filters
    "max_pixels": _NONE,
    "max_duration_seconds": _NONE,
    "min_source_fps": _NONE,
    "integrity_check": _NONE,
    # -- batching
    "batch_size": PeerNames(
        "batch_size",
        "micro_batch_size_per_gpu",
        "batch_size",
        "musubi sets it per dataset (our Concept.batch_size); diffusion-pipe in the training "
        "config.",
    ),
    "small_buckets": _NONE,
    "frame_batch_sizes": PeerNames(
        None,
        "image_micro_batch_size_per_gpu",
        None,
        "diffusion-pipe: a batch size for images only (our `1:N`).",
    ),
    # -- errors
    "policy": _NONE,
    "breaker_threshold": _NONE,
    "breaker_min_items": _NONE,
    # -- latents
    "vae": PeerNames(
        "--vae",
        "ckpt_path",
        "vae.model_name",
        "diffusion-pipe loads the VAE from the Wan checkpoint folder `[model] ckpt_path`; "
        "OneTrainer's `vae.model_name` overrides the base model's VAE.",
    ),
    "cache_dir": PeerNames(
        "cache_directory",
        None,
        "cache_dir",
        "musubi: one per dataset; diffusion-pipe always caches in `<path>/cache/<model>`.",
    ),
    "device": PeerNames("--device", None, "train_device"),
    "vae_dtype": PeerNames(
        "--vae_dtype",
        "dtype",
        "vae.weight_dtype",
        "diffusion-pipe: `[model] dtype`, for every part of the model.",
    ),
    "latent_dtype": _NONE,
    "encode_batch_size": PeerNames(
        "--batch_size",
        "caching_batch_size",
        None,
        "musubi: a flag of its caching script that lowers the datasets' batch sizes; "
        "diffusion-pipe: one size for latent and text caching.",
    ),
    "vae_subfolder": _NONE,
    "variations": PeerNames(
        None,
        None,
        "image_variations",
        "OneTrainer: per concept. diffusion-pipe's `cache_shuffle_num` caches caption "
        "variants, not pixel ones (see shuffle_tags).",
    ),
    "prepare": _NONE,
    "content_hash": _NONE,
    # -- conditioning
    "text_encoder": PeerNames(
        "--t5",
        "llm_path",
        "text_encoder.model_name",
        "diffusion-pipe: optional, the UMT5 checkpoint inside `ckpt_path` by default.",
    ),
    "text_dtype": PeerNames(
        None,
        "dtype",
        "text_encoder.weight_dtype",
        "musubi's Wan text caching has only `--fp8_t5`; diffusion-pipe's `[model] dtype` is for "
        "every part of the model.",
    ),
    "text_max_length": PeerNames(None, None, "text_encoder_sequence_length"),
    "text_batch_size": PeerNames(
        "--batch_size",
        "caching_batch_size",
        None,
        "musubi: a flag of its text caching script; diffusion-pipe: one size for latent and "
        "text caching.",
    ),
    "caption_dropout": PeerNames(
        None,
        "uncond_fraction",
        "text_encoder.dropout_probability",
        "diffusion-pipe: a training-config key, drawn per sample with Python's `random`; ours "
        "is seeded by sample key and epoch.",
    ),
    "conditioning": PeerNames(
        "--i2v",
        None,
        None,
        "musubi: a switch (first frame as the condition); FLF2V and TI2V have no flag there. "
        "diffusion-pipe detects i2v from the checkpoint.",
    ),
    "image_encoder": PeerNames("--clip", None, None),
    # -- captions
    "caption_prefix": PeerNames(None, "caption_prefix", None),
    "caption_suffix": _NONE,
    "shuffle_tags": PeerNames(
        None,
        "shuffle_tags",
        "text.enable_tag_shuffling",
        "diffusion-pipe shuffles when caching into `cache_shuffle_num` fixed variants "
        "(delimiter `cache_shuffle_delimiter`); ours reshuffles every epoch, on ', '.",
    ),
    "keep_tokens": PeerNames(
        None,
        None,
        "text.keep_tags_count",
        "OneTrainer's default is 1, ours 0.",
    ),
    "tag_dropout": PeerNames(
        None,
        None,
        "text.tag_dropout_probability",
        "OneTrainer also needs `text.tag_dropout_enable` and has modes and special tags.",
    ),
    # -- reuse
    "metadata_cache": _NONE,
    "sample_index": _NONE,
    "ledger": _NONE,
    "retry_failed": _NONE,
    # -- observe
    "metrics": _NONE,
    "alerts": _NONE,
    "on_alert": _NONE,
    "metrics_callback": _NONE,
    "metrics_every": _NONE,
    "log_jsonl": _NONE,
    "report_dir": _NONE,
    # -- workers
    "num_ffmpeg_threads": _NONE,
    "probe_threads": _NONE,
    "rank": _NONE,
    "world_size": _NONE,
}

# Every field of Concept. A concept is musubi's [[datasets]] entry, diffusion-pipe's
# [[directory]] entry and OneTrainer's concept.
CONCEPT_PEERS: dict[str, PeerNames] = {
    "root": PeerNames(
        "video_directory",
        "path",
        "path",
        "musubi also has `image_directory` and `video_jsonl_file` / `image_jsonl_file` (our "
        "`.jsonl` roots). Ours walks folders recursively; musubi and diffusion-pipe read one "
        "level; OneTrainer only with `include_subdirectories`.",
    ),
    "repeats": PeerNames(
        "num_repeats",
        "num_repeats",
        "balancing",
        "musubi: an int. OneTrainer: `balancing` with `balancing_strategy = REPEATS`. Ours "
        "may be fractional: the fraction is a seeded share of the sources, drawn every epoch.",
    ),
    "name": PeerNames(None, None, "name"),
    "caption": PeerNames(
        None,
        None,
        "text.prompt_path",
        "OneTrainer: with `text.prompt_source = 'concept'`, every file takes a line of that "
        "file; ours captions only files without a caption of their own.",
    ),
    "samples_per_epoch": PeerNames(
        None,
        None,
        "balancing",
        "OneTrainer: `balancing` with `balancing_strategy = SAMPLES`.",
    ),
    "loss_weight": PeerNames(None, None, "loss_weight"),
    "batch_size": PeerNames("batch_size", None, None, "musubi: per [[datasets]] entry."),
    "options": PeerNames(
        "[[datasets]]",
        "[[directory]]",
        None,
        "musubi and diffusion-pipe set options per dataset or directory entry (diffusion-pipe: "
        "resolutions, frame_buckets and the aspect settings); OneTrainer only "
        "`image.resolution_override`.",
    ),
}

# Every value of the `sampling` option.
SAMPLING_PEERS: dict[str, PeerNames] = {
    "head": PeerNames(
        "head",
        "single_beginning",
        None,
        "musubi cuts one clip per `target_frames` value the video fills, ours one at the "
        "largest bucket.",
    ),
    "full": PeerNames(
        "full",
        None,
        None,
        "musubi trains the whole video (up to `max_frames`, cut to 4k+1); ours is 'head': the "
        "largest bucket the video fills, so list long frame counts to train long clips.",
    ),
    "middle": PeerNames(None, "single_middle", None),
    "random": _NONE,
    "uniform": PeerNames("uniform", None, None, "musubi: `frame_sample` windows."),
    "chunks": PeerNames("chunk", None, None),
    "slide": PeerNames("slide", None, None, "musubi: step `frame_stride` (our `stride`)."),
    "overlapping": PeerNames(
        None,
        "multiple_overlapping",
        None,
        "diffusion-pipe: only as commented-out code in models/base.py at the checked commit "
        "(the mode is refused); for users of older configs.",
    ),
}

# Every augmentation stage (wan_data.stages.augment), by class name.
STAGE_PEERS: dict[str, PeerNames] = {
    "RandomFlip": PeerNames(
        None,
        None,
        "image.enable_random_flip",
        "OneTrainer's `image.enable_fixed_flip` flips every sample (our p=1).",
    ),
    "ColorJitter": PeerNames(
        None,
        None,
        "image.random_brightness_max_strength",
        "OneTrainer: `image.enable_random_{brightness,contrast,saturation,hue}` with "
        "`image.random_*_max_strength`; the factors are drawn like ours, but its hue shift is "
        "half the strength (our hue=h is its strength 2h).",
    ),
    "CropJitter": PeerNames(
        None,
        None,
        None,
        "OneTrainer's `image.enable_crop_jitter` moves the crop without zooming: our "
        "crop='random'.",
    ),
}

# Peer options without a single option of ours.
PEER_ONLY: tuple[PeerOnly, ...] = (
    PeerOnly(
        "musubi",
        "enable_bucket",
        "always on: every source goes to the bucket of its aspect; max_aspect bounds them",
    ),
    PeerOnly(
        "musubi",
        "max_frames",
        "the largest value of `frames` (sampling='full' is 'head' at the largest bucket)",
    ),
    PeerOnly("musubi", "image_directory", "a Concept root; images and videos may share one"),
    PeerOnly("musubi", "--skip_existing", "always: cached entries are reused by key"),
    PeerOnly("diffusion_pipe", "enable_ar_bucket", "always on; see max_aspect"),
    PeerOnly(
        "diffusion_pipe", "ar_buckets", "none: buckets come from resolution, step, max_aspect"
    ),
    PeerOnly("diffusion_pipe", "size_buckets", "none: buckets come from frames and resolution"),
    PeerOnly("diffusion_pipe", "cache_shuffle_num", "shuffle_tags (reshuffled every epoch)"),
    PeerOnly("diffusion_pipe", "--regenerate_cache", "a new cache_dir, or content_hash"),
    PeerOnly("onetrainer", "aspect_ratio_bucketing", "always on; see max_aspect"),
    PeerOnly("onetrainer", "include_subdirectories", "always: folders are walked recursively"),
    PeerOnly(
        "onetrainer",
        "balancing_strategy",
        "REPEATS is Concept.repeats, SAMPLES is Concept.samples_per_epoch",
    ),
    PeerOnly("onetrainer", "text_variations", "none: captions vary every epoch instead"),
    PeerOnly("onetrainer", "tag_delimiter", "none: tags are split on ','"),
    PeerOnly("onetrainer", "latent_caching", "a latent cache: vae= and cache_dir="),
)
