"""The epoch batch plan: which samples form which batch, in which order, on which rank.

The plan is a pure function of (seed, epoch, the per-sample bucket list, batch size, world
size, small-bucket mode), computed before any frame is decoded. Every rank and every DataLoader
worker computes (or receives) the same plan without communicating, so batches are
bucket-homogeneous, of constant size, and every rank ends the epoch with the same number of
batches: a rank with one batch fewer than the others makes DDP hang in its next all-reduce.

Algorithm (:func:`plan_epoch`):

1. Group sample indices by bucket. Buckets are visited in sorted ``(frames, width, height)``
   order and indices within a bucket ascend, so the grouping depends on nothing but the list.
2. Within each bucket, permute the indices with a numpy PCG64 generator seeded by the SHA-256 of
   ``(seed, epoch, f"bucket:{frames}x{width}x{height}", "plan")`` (:func:`seeded_permutation`)
   and cut them into batches of ``batch_size``. With per-sample ``batch_sizes`` a bucket's
   samples are split by size first and each group is cut alone (its key gets ``/bs:<size>``
   unless the size is ``batch_size``). With an epoch ``selection`` (balancing) only the
   selected samples are grouped. The remainder (all of a bucket smaller than the batch)
   follows ``small_buckets``:

   - ``"repeat"`` (default): fill it up to ``batch_size`` with other samples of the same bucket,
     drawn with ``sample_rng(seed, epoch, f"bucket:...", "repeat")`` from the bucket's samples
     that are *not* in the remainder (so no sample appears twice in one batch when the bucket
     has a full batch); a bucket smaller than the batch cycles through its own samples, spread
     evenly.
     The fillers are the last ``repeats`` members of the batch. Every sample is seen, no batch is
     short, and the counts are logged: the field's habit of silently dropping small buckets is
     exactly what this mode exists to avoid.
   - ``"drop"``: drop the remainder; its samples are counted in ``stats`` and logged (a warning
     when a whole bucket never reaches the model this epoch).
   - ``"partial"``: keep a smaller batch (for trainers that accept a variable batch size).

3. Permute all batches together, seeded by ``(seed, epoch, "", "batches")``.
4. Equalise ranks: when the number of batches is not a multiple of ``world_size``, append copies
   of the first batches (``padding=True``) until it is. Rank ``r`` takes ``batches[r::world_size]``
   and renumbers their positions ``0..n-1``. The copies always land on a rank other than the one
   holding the original.
5. Inputs are validated first (all problems gathered into one :class:`ConfigError`).

Decoding can still fail after planning. The plan carries, per bucket, every sample index of all
ranks (``pools``), and :func:`replacement_candidates` / :func:`fallback_buckets` give seeded,
deterministic orders in which the consumer replaces a failed member (same bucket) or, when a
bucket is exhausted, builds a whole batch of another bucket, so batches stay full and
homogeneous and the batch count never shrinks. Because the orders depend only on (seed, epoch,
rank, position, bucket), a resumed run or a different ``num_workers`` picks the same replacement
whenever a sample's failure is deterministic.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from wan_data.errors import ConfigError, format_error
from wan_data.items import Bucket
from wan_data.media.sampling import sample_rng
from wan_data.planning.columns import BucketColumn, IndexPool, bucket_order, group_by_bucket
from wan_data.planning.groups import batch_groups, check_per_sample

__all__ = [
    "SMALL_BUCKET_MODES",
    "EpochPlan",
    "PlannedBatch",
    "check_plan_options",
    "fallback_buckets",
    "plan_epoch",
    "replacement_candidates",
    "seeded_permutation",
    "shard_batches",
]

logger = logging.getLogger("wan_data")

SMALL_BUCKET_MODES = ("repeat", "drop", "partial")

_LOG_BUCKETS = 8  # buckets named in one log line; the rest are summarised as "+N more"


@dataclass(frozen=True, slots=True)
class PlannedBatch:
    """One batch of one rank's epoch plan.

    Attributes:
        position: index of this batch within its rank's plan (``0..len-1``); it seeds the
            replacement order, so it must not change between a run and its resumption.
        bucket: the shape class every member belongs to.
        members: sample indices into the caller's sample list. With ``repeats`` > 0 the last
            ``repeats`` members are fillers, and a bucket smaller than the batch repeats indices.
        repeats: how many members are repeats added to fill the batch (``small_buckets="repeat"``).
        padding: a copy of another rank's batch, added only so every rank has the same count.
    """

    position: int
    bucket: Bucket
    members: tuple[int, ...]
    repeats: int = 0
    padding: bool = False

    def __post_init__(self) -> None:
        if self.position < 0:
            raise ValueError(format_error("PlannedBatch.position", self.position, "must be >= 0"))
        if not 0 <= self.repeats <= len(self.members):
            raise ValueError(
                format_error(
                    "PlannedBatch.repeats",
                    self.repeats,
                    f"must be in [0, len(members)={len(self.members)}]",
                )
            )


@dataclass(frozen=True)
class EpochPlan:
    """One rank's batches for one epoch, plus what failure handling needs.

    Attributes:
        epoch: the epoch planned.
        rank: the rank whose batches these are.
        world_size: number of ranks the epoch was split over.
        batches: this rank's batches in order, positions ``0..n-1``; ``n`` is the same on every
            rank.
        pools: every sample index of each bucket, over all ranks, ascending: the candidates a
            failed member can be replaced with (an :class:`IndexPool`: a read-only int
            sequence over one array, equal to the tuple of its ints).
        stats: JSON-serialisable counts, identical on every rank: per bucket (``"buckets"``,
            keyed ``"FxWxH"``) ``samples``, ``batches``, ``repeated``, ``dropped``; the same
            totals at the top level plus ``padding_batches``, ``batches_per_rank`` and
            ``partial_batches``.
    """

    epoch: int
    rank: int
    world_size: int
    batches: tuple[PlannedBatch, ...]
    pools: dict[Bucket, IndexPool] = field(default_factory=dict)
    stats: dict[str, object] = field(default_factory=dict)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_plan_options(
    batch_size: object, small_buckets: object, world_size: object, rank: object
) -> list[str]:
    """Problems with the planning options, all of them (empty when valid).

    Gathered rather than raised one at a time so that one edit of a launch script fixes them all
    instead of one per failed start.
    """
    problems = []
    if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1):
        problems.append(format_error("batch_size", batch_size, "must be an int >= 1"))
    if not isinstance(small_buckets, str) or small_buckets not in SMALL_BUCKET_MODES:
        problems.append(
            format_error(
                "small_buckets",
                small_buckets,
                f"must be one of {SMALL_BUCKET_MODES}",
                "'repeat' fills short batches with repeats, 'drop' drops them, "
                "'partial' keeps them short",
            )
        )
    world = world_size if _is_int(world_size) else None
    if not isinstance(world, int) or world < 1:
        problems.append(format_error("world_size", world_size, "must be an int >= 1"))
        world = None
    if not isinstance(rank, int) or isinstance(rank, bool):
        problems.append(format_error("rank", rank, "must be an int"))
    elif world is not None and not 0 <= rank < world:
        problems.append(
            format_error(
                "rank",
                rank,
                f"must be in [0, world_size={world_size})",
                "pass torch.distributed.get_rank() and get_world_size()",
            )
        )
    return problems


def seeded_permutation(n: int, seed: int, epoch: int, key: str, purpose: str) -> list[int]:
    """A permutation of ``range(n)`` seeded like :func:`sample_rng` (SHA-256 of the inputs).

    numpy's generator, not ``random.shuffle``: the plan is computed at the start of every epoch
    before the first batch, and a Python shuffle (0.8 µs per element) was most of it.
    """
    # surrogateescape (in _permutation_array): a key from a file name that is not UTF-8
    return _permutation_array(n, seed, epoch, key, purpose).tolist()


def _permutation_array(n: int, seed: int, epoch: int, key: str, purpose: str) -> np.ndarray:
    """:func:`seeded_permutation` as an int64 array (the planner permutes arrays)."""
    text = f"{seed}\x00{epoch}\x00{key}\x00{purpose}".encode("utf-8", "surrogateescape")
    digest = hashlib.sha256(text).digest()
    generator = np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "big")))
    return generator.permutation(n) if n else np.zeros(0, dtype=np.int64)


def _shuffled(
    indices: Sequence[int] | np.ndarray, seed: int, epoch: int, key: str, purpose: str
) -> np.ndarray:
    """``indices`` in the order of :func:`seeded_permutation`, as an int64 array."""
    array = np.asarray(indices, dtype=np.int64)
    if array.size < 2:
        return array.copy()
    return array[_permutation_array(array.size, seed, epoch, key, purpose)]


def _bucket_key(bucket: Bucket) -> str:
    return f"bucket:{bucket.frames}x{bucket.width}x{bucket.height}"


def _summary(counts: dict[str, int]) -> str:
    parts = [f"{name} {n}" for name, n in list(counts.items())[:_LOG_BUCKETS]]
    if len(counts) > _LOG_BUCKETS:
        parts.append(f"+{len(counts) - _LOG_BUCKETS} more")
    return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class _Segment:
    """One bucket's batches before the global shuffle, kept as its shuffled order.

    Only this rank's batches become tuples and objects: a million-sample epoch has a quarter of
    a million batches, and allocating them all (then letting the garbage collector walk them)
    cost more than the shuffles.

    Attributes:
        first: global id of the bucket's first batch; its batches are ``first..first+count-1``.
        bucket: the bucket.
        order: its sample indices, shuffled (int64); batch ``j < full`` is
            ``order[j*bs:(j+1)*bs]``.
        full: how many full batches it cuts into.
        tail: the remainder batch (members, repeats) when the mode keeps one.
        size: the batch size of its samples.
    """

    first: int
    bucket: Bucket
    order: np.ndarray
    full: int
    tail: tuple[tuple[int, ...], int] | None
    size: int

    def batch(self, j: int) -> tuple[tuple[int, ...], int]:
        if j < self.full:
            return tuple(self.order[j * self.size : (j + 1) * self.size].tolist()), 0
        assert self.tail is not None
        return self.tail


def plan_epoch(
    buckets: Sequence[Bucket],
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    small_buckets: str = "repeat",
    batch_sizes: Sequence[int] | None = None,
    selection: Sequence[int] | None = None,
) -> EpochPlan:
    """Plan one rank's batches for one epoch (see the module docstring for the algorithm).

    Args:
        buckets: the bucket of sample ``i`` at index ``i`` (the caller's sample list).
        batch_size: samples per batch.
        seed: run seed; with ``epoch`` it determines every shuffle.
        epoch: the epoch planned; each epoch gets a different order.
        rank: this process's rank.
        world_size: number of ranks; every rank gets the same number of batches.
        small_buckets: what to do with a bucket's remainder: ``"repeat"``, ``"drop"`` or
            ``"partial"``.
        batch_sizes: the batch size of sample ``i`` at index ``i`` (per concept or frame
            count); ``None``: ``batch_size`` for all. Samples of one bucket with different
            sizes are batched apart (a batch never mixes sizes), each group as a bucket is.
        selection: the samples this epoch trains on, as indices into ``buckets`` (repeats
            allowed: a sample listed twice is planned twice); ``None``: every sample once.
            Balancing computes it per epoch (:mod:`wan_data.planning.balance`). Failed
            members are still replaced from the whole bucket (``pools``).

    Returns:
        This rank's plan. An empty ``buckets`` gives zero batches on every rank.

    Raises:
        ConfigError: any invalid option or non-``Bucket`` entry, all problems listed.
    """
    problems = check_plan_options(batch_size, small_buckets, world_size, rank)
    if not _is_int(seed):
        problems.append(format_error("seed", seed, "must be an int"))
    if not _is_int(epoch):
        problems.append(format_error("epoch", epoch, "must be an int"))
    problems += check_per_sample(len(buckets), batch_sizes, selection)
    if problems:
        raise ConfigError(problems)

    column = BucketColumn.of(buckets)  # ConfigError naming entries that are not a Bucket
    groups = group_by_bucket(column)
    planned_groups = batch_groups(groups, column, batch_size, batch_sizes, selection)
    segments: list[_Segment] = []
    planned = 0  # batches of all ranks, before padding
    per_bucket: dict[str, dict[str, int]] = {}
    repeated: dict[str, int] = {}
    dropped: dict[str, int] = {}
    whole_dropped: list[str] = []
    partial: dict[str, int] = {}
    for (bucket, size), indices in planned_groups.items():
        # The default size keeps the keys (and so the plans) of datasets without sizes.
        key = _bucket_key(bucket) if size == batch_size else f"{_bucket_key(bucket)}/bs:{size}"
        name = str(bucket) if size == batch_size else f"{bucket}/bs{size}"
        order = _shuffled(indices, seed, epoch, key, "plan")
        n_full = len(order) // size
        rest = order[n_full * size :].tolist()
        tail: tuple[tuple[int, ...], int] | None = None
        n_repeated = n_dropped = 0
        if rest:
            if small_buckets == "repeat":
                n_repeated = size - len(rest)
                # Prefer samples outside the remainder so a filler never duplicates a member.
                pool = order[: n_full * size].tolist() or rest
                rng = sample_rng(seed, epoch, key, "repeat")
                picks = rng.sample(pool, min(n_repeated, len(pool)))
                fill = [picks[i % len(picks)] for i in range(n_repeated)]
                tail = (tuple(rest + fill), n_repeated)
                repeated[name] = n_repeated
            elif small_buckets == "drop":
                n_dropped = len(rest)
                dropped[name] = n_dropped
                if not n_full:
                    whole_dropped.append(name)
            else:
                tail = (tuple(rest), 0)
                partial[name] = len(rest)
        count = n_full + (tail is not None)
        if count:
            segments.append(_Segment(planned, bucket, order, n_full, tail, size))
            planned += count
        per_bucket[name] = {
            "samples": len(indices),
            "batches": count,
            "repeated": n_repeated,
            "dropped": n_dropped,
        }

    # Shuffling batch ids is shuffling the batches: the permutation depends only on the length
    # and the seed, never on the contents.
    ids = seeded_permutation(planned, seed, epoch, "", "batches")
    padding = (-planned) % world_size if planned else 0
    padded = ids + [ids[i % planned] for i in range(padding)]
    firsts = [seg.first for seg in segments]
    batches = []
    with _collector_paused():
        for p, g in enumerate(padded[rank::world_size]):
            seg = segments[bisect.bisect_right(firsts, g) - 1]
            members, repeats = seg.batch(g - seg.first)
            batches.append(
                PlannedBatch(
                    position=p,
                    bucket=seg.bucket,
                    members=members,
                    repeats=repeats,
                    padding=rank + p * world_size >= planned,
                )
            )

    stats: dict[str, object] = {
        "epoch": epoch,
        "batch_size": batch_size,
        "world_size": world_size,
        "small_buckets": small_buckets,
        "samples": len(buckets) if selection is None else len(selection),
        "batches": planned,
        "repeated": sum(repeated.values()),
        "dropped": sum(dropped.values()),
        "partial_batches": len(partial),
        "padding_batches": padding,
        "batches_per_rank": len(padded) // world_size,
        "buckets": per_bucket,
    }
    _log(epoch, small_buckets, repeated, dropped, whole_dropped, partial)
    return EpochPlan(
        epoch=epoch,
        rank=rank,
        world_size=world_size,
        batches=tuple(batches),
        pools={b: IndexPool(indices) for b, indices in groups.items()},
        stats=stats,
    )


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while the plan's batches are allocated.

    A million-sample epoch allocates a quarter of a million small objects per rank; each 700
    allocations start a collection, and the older generations' collections walk every tracked
    object of the process, so the planning time grew faster than the samples (14x for 10x,
    measured by ``benchmarks/bench_plan.py``; 7x with the collector paused). The batches hold
    no reference cycles, so nothing is left for the collector; its previous state is restored.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _log(
    epoch: int,
    mode: str,
    repeated: dict[str, int],
    dropped: dict[str, int],
    whole_dropped: list[str],
    partial: dict[str, int],
) -> None:
    """One line per kind of adjustment, so a small bucket is never handled silently."""
    if repeated:
        logger.info(
            "epoch %d plan: filled the short last batch of %d bucket(s) with %d repeated "
            "sample(s) (small_buckets=%r), repeats per bucket: %s",
            epoch,
            len(repeated),
            sum(repeated.values()),
            mode,
            _summary(repeated),
        )
    if dropped:
        logger.info(
            "epoch %d plan: dropped %d sample(s) of %d bucket(s) that do not fill a batch "
            "(small_buckets=%r): %s",
            epoch,
            sum(dropped.values()),
            len(dropped),
            mode,
            _summary(dropped),
        )
    if whole_dropped:
        logger.warning(
            "epoch %d plan: %d bucket(s) smaller than the batch size are never trained on "
            "(small_buckets='drop'): %s. Use small_buckets='repeat' to keep them",
            epoch,
            len(whole_dropped),
            ", ".join(whole_dropped[:_LOG_BUCKETS])
            + (
                f" +{len(whole_dropped) - _LOG_BUCKETS} more"
                if len(whole_dropped) > _LOG_BUCKETS
                else ""
            ),
        )
    if partial:
        logger.info(
            "epoch %d plan: %d short batch(es) kept (small_buckets=%r), samples per bucket: %s",
            epoch,
            len(partial),
            mode,
            _summary(partial),
        )


def _stream_key(plan: EpochPlan, batch: PlannedBatch) -> str:
    # The rank is part of the key: positions repeat on every rank, and two ranks that both need
    # a replacement from one bucket should not pick the same sample.
    return f"rank:{plan.rank}/batch:{batch.position}/{_bucket_key(batch.bucket)}"


def replacement_candidates(plan: EpochPlan, batch: PlannedBatch, *, seed: int) -> Iterator[int]:
    """Other samples of the batch's bucket, in the order to try them when a member fails.

    Every index of ``plan.pools[batch.bucket]`` not in ``batch.members`` comes out exactly once,
    in an order seeded by (seed, epoch, rank, position, bucket). The order is produced lazily
    (Fisher-Yates, one swap per candidate taken), so a single failure costs one pass over the
    pool, not a full shuffle, and does not depend on how many candidates are consumed.

    To fill a batch of another bucket (see :func:`fallback_buckets`), pass
    ``dataclasses.replace(batch, bucket=other, members=(), repeats=0)``: its whole pool, in its
    own order.

    Raises:
        ValueError: the batch's bucket has no pool in this plan.
    """
    if batch.bucket not in plan.pools:
        raise ValueError(
            format_error("batch.bucket", str(batch.bucket), "has no pool in this epoch plan")
        )
    members = set(batch.members)
    pool = [i for i in plan.pools[batch.bucket].tolist() if i not in members]
    rng = sample_rng(seed, plan.epoch, _stream_key(plan, batch), "replace")
    for i in range(len(pool)):
        j = rng.randrange(i, len(pool))
        pool[i], pool[j] = pool[j], pool[i]
        yield pool[i]


def fallback_buckets(plan: EpochPlan, batch: PlannedBatch, *, seed: int) -> list[Bucket]:
    """Every other bucket of the plan, in a seeded order, for when a whole bucket is exhausted.

    When every candidate of the batch's own bucket failed, the consumer builds a whole
    replacement batch from the first of these buckets that can fill one, instead of yielding
    fewer batches than the other ranks (a DDP hang). Uniformly shuffled, seeded by (seed, epoch,
    rank, position), so the choice is the same on a resumed run.
    """
    others = sorted((b for b in plan.pools if b != batch.bucket), key=bucket_order)
    key = f"rank:{plan.rank}/batch:{batch.position}"
    sample_rng(seed, plan.epoch, key, "fallback").shuffle(others)
    return others


def shard_batches(plan: EpochPlan, worker: int, num_workers: int) -> tuple[PlannedBatch, ...]:
    """The batches DataLoader worker ``worker`` of ``num_workers`` produces: every n-th position.

    torch's DataLoader takes batches from ``IterableDataset`` workers round-robin, so when every
    worker yields exactly its share (failures replaced, never skipped) the loader yields the
    plan in position order, the same as ``num_workers=0``.

    Raises:
        ConfigError: ``num_workers`` < 1 or ``worker`` outside ``[0, num_workers)``.
    """
    if not _is_int(num_workers) or num_workers < 1:
        raise ConfigError(format_error("num_workers", num_workers, "must be an int >= 1"))
    if not _is_int(worker) or not 0 <= worker < num_workers:
        raise ConfigError(
            format_error("worker", worker, f"must be an int in [0, num_workers={num_workers})")
        )
    return plan.batches[worker::num_workers]
