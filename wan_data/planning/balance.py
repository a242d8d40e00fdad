"""What each concept asks of the epoch plan: its share of the epoch, its batch size, its weight.

Three per-concept options act on the plan rather than on a source's pixels:

- **fractional repeats** (``Concept(repeats=2.5)``): collect yields ``ceil(repeats)`` copies of
  every source; the last copy (repeat index ``ceil(repeats) - 1``) is planned for a seeded
  share ``repeats - floor(repeats)`` of the sources, drawn again every epoch. The number drawn
  is ``floor(f * n + u)`` with ``u`` uniform in [0, 1) per epoch, so it is ``f * n`` on
  average over epochs and within one of it in every epoch;
- **samples per epoch** (``Concept(samples_per_epoch=K)``): exactly ``K`` of the concept's
  samples per epoch, from a seeded permutation (cycling through further permutations when
  the concept has fewer than ``K``);
- **batch size** (``Concept(batch_size=...)``, ``frame_batch_sizes``): the batch size of each
  sample, which the planner batches apart.

Everything is a pure function of (seed, epoch, the sample list), like the rest of the plan: every
rank and DataLoader worker computes the same selection without communicating, so balancing is
identical for any ``num_workers`` and a resumed run replans the same epoch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from wan_data.items import PlanSample
from wan_data.media.sampling import sample_rng
from wan_data.planning.plan import seeded_permutation
from wan_data.sources.concepts import Concept

__all__ = ["Balancing", "sample_batch_sizes"]


@dataclass(frozen=True)
class _Rule:
    """One balanced concept: its samples and how many of them an epoch takes."""

    name: str
    samples: tuple[int, ...]  # indices into the sample list, ascending
    fixed: tuple[int, ...]  # fractional repeats: the samples always planned
    optional: tuple[tuple[int, ...], ...]  # fractional repeats: the last copy's samples per source
    fraction: float  # fractional repeats: the share of ``optional`` planned each epoch
    samples_per_epoch: int | None


@dataclass(frozen=True)
class Balancing:
    """The epoch selection of a sample list whose concepts balance (see the module docstring).

    Build it with :meth:`from_samples` (``None`` when no concept balances: every sample is
    planned once per epoch, as without balancing).
    """

    seed: int
    total: int
    rules: tuple[_Rule, ...]
    unbalanced: tuple[int, ...]  # the samples of every other concept, planned once

    @classmethod
    def from_samples(
        cls, samples: Sequence[PlanSample], concepts: Sequence[Concept], *, seed: int
    ) -> Balancing | None:
        """The balancing of ``samples`` by the balanced concepts, drawn with ``seed``; ``None`` when
        no concept balances.
        """
        balanced = {c.name: c for c in concepts if c.balanced}
        if not balanced:
            return None
        by_concept: dict[str, list[int]] = {name or "": [] for name in balanced}
        unbalanced: list[int] = []
        for index, sample in enumerate(samples):
            members = by_concept.get(sample.probed.source.concept)
            (members if members is not None else unbalanced).append(index)
        rules = []
        for name, indices in by_concept.items():
            concept = balanced[name]
            fraction = 0.0
            fixed: list[int] = []
            optional: dict[str, list[int]] = {}
            if concept.samples_per_epoch is None:
                fraction = concept.repeats - math.floor(concept.repeats)
                last = concept.copies - 1
                for index in indices:
                    source = samples[index].probed.source
                    if source.repeat == last:
                        optional.setdefault(source.key, []).append(index)
                    else:
                        fixed.append(index)
            rules.append(
                _Rule(
                    name=name,
                    samples=tuple(indices),
                    fixed=tuple(fixed),
                    optional=tuple(tuple(v) for _, v in sorted(optional.items())),
                    fraction=fraction,
                    samples_per_epoch=concept.samples_per_epoch,
                )
            )
        return cls(seed=seed, total=len(samples), rules=tuple(rules), unbalanced=tuple(unbalanced))

    def selection(self, epoch: int) -> list[int]:
        """The samples epoch ``epoch`` plans, ascending (a sample drawn twice is listed twice)."""
        chosen: list[int] = list(self.unbalanced)
        for rule in self.rules:
            key = f"concept:{rule.name}"
            if rule.samples_per_epoch is not None:
                chosen += _draw(rule.samples, rule.samples_per_epoch, self.seed, epoch, key)
                continue
            chosen += rule.fixed
            n = len(rule.optional)
            u = sample_rng(self.seed, epoch, key, "repeats_round").random()
            count = min(n, math.floor(rule.fraction * n + u))
            for source in seeded_permutation(n, self.seed, epoch, key, "repeats")[:count]:
                chosen += rule.optional[source]
        chosen.sort()
        return chosen


def _draw(indices: Sequence[int], k: int, seed: int, epoch: int, key: str) -> list[int]:
    """``k`` of ``indices``: a seeded permutation, then further ones while ``k`` is larger."""
    if not indices:
        return []
    out: list[int] = []
    round_ = 0
    while len(out) < k:
        perm = seeded_permutation(len(indices), seed, epoch, key, f"samples_per_epoch:{round_}")
        out += [indices[i] for i in perm[: k - len(out)]]
        round_ += 1
    return out


def sample_batch_sizes(
    samples: Sequence[PlanSample],
    concepts: Sequence[Concept],
    *,
    batch_size: int,
    frame_batch_sizes: Mapping[int, int],
) -> list[int] | None:
    """Each sample's batch size: its concept's ``batch_size``, else ``frame_batch_sizes`` of
    its bucket's frame count, else ``batch_size``; ``None`` when all are ``batch_size``."""
    own = {c.name or "": c.batch_size for c in concepts if c.batch_size is not None}
    if not own and not frame_batch_sizes:
        return None
    return [
        own.get(s.probed.source.concept) or frame_batch_sizes.get(s.bucket.frames) or batch_size
        for s in samples
    ]
