"""The cache pass: encode every planned clip once into the latent cache.

Decoding runs in DataLoader worker processes; the VAE runs in the calling process only (never
in a forked worker: one model per GPU, and CUDA cannot start in a forked child). Entries are
written as they finish, so an interrupted pass (Ctrl-C, kill -9) loses at most the clips in
flight, and a rerun encodes only what is missing. Keys are content + configuration addresses
(``latent_cache.cache_key``): any change of source, frame selection, bucket, crop, VAE, dtype or
normalisation gives a new key, so nothing stale is ever served.

Two passes on one cache folder split the work through claims (:mod:`~wan_data.latents.claims`);
a full disk ends the pass with a message that says what was kept and how to resume. The cache
spec and keys live in :mod:`~wan_data.latents.spec` (re-exported here); the train pass reads
the entries with :mod:`~wan_data.latents.reading`.
"""

from __future__ import annotations

import errno
import itertools
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from wan_data.errors import FatalError, format_error
from wan_data.failures.breaker import BreakerConfig
from wan_data.failures.mechanism import StageContext
from wan_data.failures.policy import ErrorPolicy
from wan_data.items import (
    Bucket,
    CachedClip,
    Clip,
    EncodeJob,
    Failed,
    PlanSample,
)
from wan_data.latents.claims import ClaimOwner, Claims, settle
from wan_data.latents.encode import Encode
from wan_data.latents.encoder import pin_for
from wan_data.latents.reading import CacheIncompleteError
from wan_data.latents.spec import CacheSpec, sample_key, vae_info_from_files
from wan_data.latents.store import LatentCache
from wan_data.observe.metrics import Metrics
from wan_data.observe.watchdog import StallWatchdog
from wan_data.planning.clips import DecodeOptions
from wan_data.stages.base import Stage, compose
from wan_data.stages.collate import collate
from wan_data.stages.decode import Decode

__all__ = [
    "CacheIncompleteError",
    "CacheSpec",
    "CachedClip",
    "prepare_cache",
    "sample_key",
    "vae_info_from_files",
]

logger = logging.getLogger("wan_data")

# Names each cache pass of this process in its report parts: a second pass must add to the
# first one's counts in ``report()``, not overwrite its parts.
_passes = itertools.count()


# -- the cache pass ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    sample: int
    variant: int
    key: str


class _PrepareStream(IterableDataset[EncodeJob]):
    """Worker side of the cache pass: decode chunks of one bucket into encode jobs.

    Each clip goes through the decode stage and the dataset's clip stages, exactly as a
    pixel batch member does in training.
    """

    def __init__(
        self,
        chunks: list[list[_Task]],
        samples: Sequence[PlanSample],
        options: DecodeOptions,
        policy: ErrorPolicy,
        report_dir: str,
        run: str,
        clip_stages: Sequence[Stage[Clip, Clip]] = (),
        claims: Claims | None = None,
        spec: CacheSpec | None = None,
    ) -> None:
        self.chunks = chunks
        self.claims = claims
        self.spec = spec
        self._cache: LatentCache | None = None  # opened in the process that iterates
        self.samples = samples
        self.options = options
        self.policy = policy
        self.report_dir = report_dir
        self.run = run
        self.clip_stages = tuple(clip_stages)

    def __iter__(self) -> Iterator[EncodeJob]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        context = StageContext(metrics=Metrics(), policy=self.policy)
        part = Path(self.report_dir) / f"part-prepare-{self.run}-w{worker}-p{os.getpid()}.json"
        stages: tuple[Stage[Any, Any], ...] = (Decode(self.options), *self.clip_stages)
        try:
            for chunk in self.chunks[worker::workers]:
                clips: list[Clip] = []
                tasks: list[_Task] = []
                for task in chunk:
                    if not self._mine(task.key):
                        continue
                    context.epoch = task.variant
                    # Exhausted, not next(): a stage records its outcome after yielding it.
                    (out,) = compose([self.samples[task.sample]], stages, context)
                    if isinstance(out, Failed):
                        context.metrics.record_failed(out)
                        continue
                    clips.append(out)
                    tasks.append(task)
                context.metrics.write(part)
                if clips:
                    yield _job(clips, tasks, self.samples)
        finally:
            context.metrics.write(part)

    def _mine(self, key: str) -> bool:
        """Claim ``key`` for this pass; ``False`` when another pass holds it (the main process
        comes back to it at the end) or has written it since the pass started."""
        if self.claims is None or self.spec is None:
            return True
        if not self.claims.claim(key):
            return False
        if self._cache is None:
            self._cache = LatentCache(self.spec.root, create=False)
        cache = self._cache
        if all(cache.contains(k) for k in [key, *self.spec.conditions.keys(key).values()]):
            self.claims.release(key)  # another pass wrote it and let its claim go
            return False
        return True


def _job(clips: list[Clip], tasks: list[_Task], samples: Sequence[PlanSample]) -> EncodeJob:
    batch = collate(clips)
    entries = []
    for task, times, crop, caption in zip(
        tasks, batch["frame_times"], batch["crops"], batch["captions"], strict=True
    ):
        sample = samples[task.sample]
        entries.append(
            {
                "path": sample.path,
                "clip_index": str(sample.clip_index),
                "variant": str(task.variant),
                "frame_times": json.dumps(times),
                "crop": json.dumps(crop),
                "bucket": str(sample.bucket),
                "caption": caption,
            }
        )
    return EncodeJob(
        keys=tuple(t.key for t in tasks),
        paths=tuple(samples[t.sample].path for t in tasks),
        pixels=batch["pixels"],
        entries=tuple(entries),
    )


def prepare_cache(
    samples: Sequence[PlanSample],
    *,
    options: DecodeOptions,
    spec: CacheSpec,
    encoder: Any,
    policy: ErrorPolicy,
    report_dir: str,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 2,
    progress: bool = True,
    clip_stages: Sequence[Stage[Clip, Clip]] = (),
    breaker_config: BreakerConfig | None = None,
    watchdog: StallWatchdog | None = None,
    image_encoder: Any = None,
) -> dict[str, Any]:
    """Encode every distinct clip (sample x variant) of this rank that the cache lacks.

    Returns a summary; ``tasks`` counts distinct keys of this rank. Work is sharded across ranks
    by the index of the distinct key, so under ``torchrun`` each clip is encoded by
    exactly one rank into the shared cache directory. Already present entries are skipped, which
    makes the pass resumable. Passes that know nothing of each other (two jobs on one folder)
    split the work through claims (:mod:`~wan_data.latents.claims`): a key another live pass
    claimed is skipped, then waited for at the end (or encoded here if that pass failed or
    died); ``encoded_elsewhere`` counts them. Should claims ever be lost, atomic writes still
    make the last writer of a key win with an identical, valid file.

    Raises:
        FatalError: the cache folder is read-only, or filled up (``ENOSPC``/``EDQUOT``): the
            message names the folder, what this pass wrote and how to resume; every entry on
            disk is complete (no temp file is left) and a rerun encodes only the rest.

    The pass writes its report parts into ``report_dir`` under names of their own (rank,
    process and pass): decode counts from the workers, and from this process the skips of the
    encoder and the cache counters (``writes``...), so that the dataset's ``report()["cache"]``
    counts the entries this pass wrote, and a second pass adds to the first.

    Every clip is decoded by the decode stage and then ``clip_stages`` (in the workers), and
    encoded by the encode stage (here), each under ``policy``, ``breaker_config`` and the
    stall ``watchdog``, like every other stage.
    """
    started = time.perf_counter()
    run = f"r{rank}-p{os.getpid()}-i{next(_passes)}"
    cache = LatentCache(spec.root)
    cache.require_writable("the cache pass")
    # Distinct keys, in a fixed order, dealt to ranks: variants of a clip that cannot vary (no
    # slack for its window or crop) share a key and must be encoded once, by one rank.
    unique: dict[str, _Task] = {}
    for i in range(len(samples)):
        for v in range(spec.variations):
            key, _ = sample_key(samples[i], v, options, spec)
            unique.setdefault(key, _Task(i, v, key))
    tasks_all = list(unique.values())[rank::world_size]

    def complete(key: str) -> bool:
        return all(cache.contains(k) for k in [key, *spec.conditions.keys(key).values()])

    missing = [task for task in tasks_all if not complete(task.key)]
    present = len(tasks_all) - len(missing)
    size = max(1, int(getattr(encoder, "encode_batch_size", 1)))
    claims = Claims(Path(spec.root), ClaimOwner.current())
    claims.sweep()
    encoded = skipped_encode = written = 0
    context = StageContext(
        metrics=Metrics(),
        policy=policy,
        breaker_config=breaker_config if breaker_config is not None else BreakerConfig(),
        watchdog=watchdog,
    )
    bar = _progress(len(missing), progress)
    threads = torch.get_num_threads()
    vae_threads = threads
    if str(getattr(encoder, "device", "cpu")).startswith("cpu"):
        # The decoding workers run beside a CPU VAE: leave them their cores. With more OpenMP
        # threads than free cores, torch's threads spin against the decoders: on a busy 2-core
        # machine one 33x128x128 clip took 6 s to encode with 2 threads and 0.45 s with 1.
        vae_threads = max(1, min(threads, (os.cpu_count() or 1) - num_workers))
    torch.set_num_threads(vae_threads)
    pending, attempted = missing, set[str]()
    try:
        encode = Encode(encoder, condition=spec.conditions.mode, image_encoder=image_encoder)
        for round_ in itertools.count():
            chunks = _chunks(pending, samples, size)
            stream = _PrepareStream(
                chunks,
                samples,
                options,
                policy,
                report_dir,
                f"{run}-k{round_}",
                clip_stages,
                claims,
                spec,
            )
            loader = DataLoader(
                stream,
                batch_size=None,
                num_workers=num_workers,
                pin_memory=pin_for(encoder),
            )
            for out in encode(iter(loader), context):
                if isinstance(out, Failed):
                    context.metrics.record_failed(out)
                    skipped_encode += 1
                else:
                    # The conditions first: an entry whose latents exist is complete.
                    derived = spec.conditions.keys(out.key)
                    for name, tensor in out.extras.items():
                        written += _put(cache, derived[name], tensor, {**out.entry, "kind": name})
                    written += _put(cache, out.key, out.latents, out.entry)
                    claims.release(out.key)
                    encoded += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(encoded=encoded, skipped=skipped_encode)
            by_key = {t.key: t for t in pending}
            retry = settle(list(by_key), complete, claims, attempted)
            pending = [by_key[k] for k in retry]
            if not pending:
                break
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise FatalError(
            _full_message(spec.root, exc, encoded, written, missing, complete)
        ) from exc
    finally:
        for task in pending:  # an error mid-round: leave no claim of this pass behind
            claims.release(task.key)
        torch.set_num_threads(threads)
        if bar is not None:
            bar.close()
        context.metrics.cache = cache.counters()
        context.metrics.write(Path(report_dir) / f"part-prepare-{run}-main.json")
    seconds = time.perf_counter() - started
    elsewhere = max(0, sum(complete(t.key) for t in missing) - encoded)
    summary = {
        "tasks": len(tasks_all),
        "already_cached": present,
        "encoded": encoded,
        "encoded_elsewhere": elsewhere,
        "skipped": len(missing) - encoded - elsewhere,
        "skipped_in_encode": skipped_encode,
        "seconds": round(seconds, 3),
        "clips_per_second": round(encoded / seconds, 3) if seconds else None,
        "rank": rank,
        "world_size": world_size,
        "vae_threads": vae_threads,
    }
    logger.info("cache pass: %s", summary)
    return summary


def _chunks(tasks: list[_Task], samples: Sequence[PlanSample], size: int) -> list[list[_Task]]:
    """Encode jobs of up to ``size`` clips, each of one bucket, in a fixed order."""
    by_bucket: dict[Bucket, list[_Task]] = defaultdict(list)
    for task in tasks:
        by_bucket[samples[task.sample].bucket].append(task)
    return [
        group[i : i + size]
        for _, group in sorted(by_bucket.items(), key=lambda kv: str(kv[0]))
        for i in range(0, len(group), size)
    ]


def _put(cache: LatentCache, key: str, latents: torch.Tensor, entry: dict[str, str]) -> int:
    """Store one entry; its size in bytes (what a full-disk message reports as written)."""
    return cache.put(key, latents.contiguous(), entry).stat().st_size


def _full_message(
    root: str,
    exc: OSError,
    encoded: int,
    written: int,
    missing: Sequence[_Task],
    complete: Callable[[str], bool],
) -> str:
    """The error of a cache pass that ran out of space: where, how far, how to go on."""
    try:
        left = sum(not complete(t.key) for t in missing)
    except OSError:
        left = len(missing) - encoded
    return format_error(
        "latent cache folder",
        root,
        f"ran out of space ({exc.strerror or exc}) after this pass wrote {encoded} entries "
        f"({written / 2**20:.1f} MiB); {left} clip(s) are still to encode",
        "free space there, or point cache_dir at another folder, then run the cache pass "
        "again: every entry written is complete and kept (nothing partial is left behind), "
        "and the rerun encodes only the rest",
        path=exc.filename if isinstance(exc.filename, str) else None,
        stage="cache_write",
    )


def _progress(total: int, enabled: bool) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="clip", desc="wan-data cache", dynamic_ncols=True)
