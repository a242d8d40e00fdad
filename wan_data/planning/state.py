"""Exact resume: the state a dataset saves, the identity it checks, and where it restarts.

A state is a few integers (epoch, position of the next batch, rank, world size, seed) and a
fingerprint of the options and samples, whatever the dataset size: every epoch's plan is a pure
function of them, so resuming needs nothing else. A state saved against other sources or
options is refused, with what changed said in words (``resume.py``). These functions implement
``WanVideoDataset.state_dict``/``load_state_dict``; the progress they read and the resume point
they set live in the dataset's shared memory (``epochs.py``), so they reach its workers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from wan_data.errors import ConfigError, format_error
from wan_data.planning.resume import describe_changes, save_sketch

if TYPE_CHECKING:
    from wan_data.dataset import WanVideoDataset
    from wan_data.planning.batches import PlanSample

__all__ = [
    "STATE_VERSION",
    "fingerprint",
    "fingerprint_options",
    "load_state_dict",
    "source_contents",
    "state_dict",
]

logger = logging.getLogger("wan_data")

STATE_VERSION = 1


def state_dict(ds: WanVideoDataset, last_batch: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``ds.state_dict(last_batch)``: where this rank is (see its docstring)."""
    if last_batch is not None:
        epoch, position = int(last_batch["epoch"]), int(last_batch["position"]) + 1
    else:
        progress = ds._shared.progress()
        if progress is None:
            raise RuntimeError(
                format_error(
                    "progress of this dataset",
                    "unknown",
                    "was never recorded: DataLoader workers do not report it to the main process",
                    "iterate through ds.loader(num_workers=...) (or with num_workers=0), or pass "
                    "the last batch the trainer consumed: ds.state_dict(last_batch=batch)",
                )
            )
        epoch, position = progress
    epoch, position = _normalise_position(ds, epoch, position)
    rank, world = ds.rank_and_world_size()
    return {
        "version": STATE_VERSION,
        "epoch": epoch,
        "position": position,
        "rank": rank,
        "world_size": world,
        "seed": ds.seed,
        "fingerprint": ds.fingerprint,
        # What the fingerprint covers, so a refused state can say what changed (the
        # per-source sketch goes to a file beside the sample index: see resume.py).
        "options": fingerprint_options(ds),
        "sources": _save_sketch(ds),
    }


def load_state_dict(
    ds: WanVideoDataset, state: dict[str, Any], *, allow_mismatch: bool = False
) -> None:
    """``ds.load_state_dict(state)``: resume at the batch after the saved one (see its
    docstring); raises :class:`ConfigError` on a mismatch unless ``allow_mismatch``."""
    problems = []
    if state.get("version") != STATE_VERSION:
        problems.append(
            format_error("state version", state.get("version"), f"must be {STATE_VERSION}")
        )
    _, world = ds.rank_and_world_size()
    hint = "pass allow_mismatch=True to resume this dataset's plan at the saved position"
    for name, mine in (("world_size", world), ("seed", ds.seed)):
        if state.get(name) != mine:
            problems.append(
                format_error(
                    f"state {name}",
                    state.get(name),
                    f"differs from this dataset's ({mine})",
                    hint,
                )
            )
    if state.get("fingerprint") != ds.fingerprint:
        changes = describe_changes(
            state, fingerprint_options(ds), source_contents(ds.samples), ds._index_folder
        )
        problems.append(
            format_error(
                "state fingerprint",
                state.get("fingerprint"),
                f"differs from this dataset's ({ds.fingerprint}): "
                + ("; ".join(changes) or "the sources or options changed since it was saved"),
                hint,
            )
        )
    if problems and not allow_mismatch:
        raise ConfigError(problems)
    for problem in problems:
        logger.warning("load_state_dict: %s (allowed)", problem)
    epoch, position = _normalise_position(ds, int(state["epoch"]), int(state["position"]))
    ds.set_epoch(epoch)
    ds._shared.resume_at(epoch, position)


def _normalise_position(ds: WanVideoDataset, epoch: int, position: int) -> tuple[int, int]:
    """A position after an epoch's last batch is the start of the next epoch (resuming
    there must not give an empty iteration)."""
    if position > 0 and position >= len(ds.plan(epoch).batches):
        return epoch + 1, 0
    return epoch, position


def _save_sketch(ds: WanVideoDataset) -> int:
    """Write this fingerprint's source sketch once (beside the sample index, when there is
    one); returns the number of sources it covers."""
    contents = source_contents(ds.samples)
    if ds._index_folder is not None and not ds._sketch_saved:
        save_sketch(ds._index_folder, ds.fingerprint, contents)
        ds._sketch_saved = True
    return len(contents)


def source_contents(samples: Iterable[PlanSample]) -> dict[str, str]:
    """Per source key, what of it the fingerprint covers (its samples' buckets, frame count
    and duration)."""
    contents: dict[str, list[str]] = {}
    for sample in samples:
        meta = sample.probed.metadata
        contents.setdefault(sample.probed.key, []).append(
            f"{sample.bucket}|{meta.frame_count}|{meta.duration}"
        )
    return {key: "\n".join(parts) for key, parts in contents.items()}


def fingerprint(ds: WanVideoDataset, samples_digest: str) -> str:
    """Identity of the options and samples, for ``load_state_dict`` to refuse a mismatch."""
    digest = hashlib.sha256()
    digest.update(json.dumps(fingerprint_options(ds), sort_keys=True).encode())
    digest.update(samples_digest.encode())
    return digest.hexdigest()[:32]


def fingerprint_options(ds: WanVideoDataset) -> dict[str, Any]:
    """The options the fingerprint covers, as JSON values."""
    options: dict[str, Any] = {
        "frames": ds.frames,
        "fps": ds.fps,
        "resolutions": ds.resolutions,
        "step": ds.step,
        "batch_size": ds.batch_size,
        "small_buckets": ds.small_buckets,
        "decode": ds._decode.identity(captions=True),
    }
    # What changes the plan per concept (repeats, samples per epoch, batch sizes, weights):
    # only when set, so the states of datasets without them keep their fingerprints.
    if ds.config.batching.frame_batch_sizes:
        options["frame_batch_sizes"] = ds.config.batching.frame_batch_sizes
    concepts = [c.identity()[1:] for c in ds.concepts if len(c.identity()) > 4 or c.balanced]
    if concepts:
        options["concepts"] = concepts
    parsed: dict[str, Any] = json.loads(json.dumps(options, sort_keys=True, default=str))
    return parsed
