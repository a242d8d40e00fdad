"""The planner's per-sample inputs: batch sizes and the epoch's selection, grouped.

``plan_epoch`` batches samples per bucket; with per-sample batch sizes (a concept's
``batch_size``, ``frame_batch_sizes``) and an epoch selection (balancing), a bucket's samples
are first narrowed to the selection and split by batch size, so each (bucket, size) group is
cut into batches as a whole bucket is. Kept apart from ``plan.py`` so the planner reads as its
algorithm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wan_data.errors import format_error
from wan_data.items import Bucket

__all__ = ["batch_groups", "check_per_sample"]


def check_per_sample(
    n: int, batch_sizes: Sequence[int] | None, selection: Sequence[int] | None
) -> list[str]:
    """Problems of the per-sample inputs (checked with numpy: they are as long as the list)."""
    problems = []
    if batch_sizes is not None:
        sizes = np.asarray(batch_sizes)
        if sizes.shape != (n,) or (n and (sizes.dtype.kind not in "iu" or sizes.min() < 1)):
            problems.append(
                format_error(
                    "batch_sizes",
                    f"{sizes.dtype}{list(sizes.shape)}",
                    f"must hold one int >= 1 per sample ({n})",
                )
            )
    if selection is not None:
        chosen = np.asarray(selection)
        if chosen.ndim != 1 or (
            chosen.size and (chosen.dtype.kind not in "iu" or chosen.min() < 0 or chosen.max() >= n)
        ):
            problems.append(
                format_error(
                    "selection",
                    f"{chosen.dtype}{list(chosen.shape)}",
                    f"must be indices in [0, {n})",
                )
            )
    return problems


def batch_groups(
    groups: dict[Bucket, np.ndarray],
    buckets: Sequence[Bucket],
    batch_size: int,
    batch_sizes: Sequence[int] | None,
    selection: Sequence[int] | None,
) -> dict[tuple[Bucket, int], Sequence[int] | np.ndarray]:
    """The samples planned per (bucket, batch size), in bucket order then size order, indices
    ascending: every sample once, or the epoch's ``selection`` (with its repeats)."""
    if selection is None and batch_sizes is None:
        return {(b, batch_size): indices for b, indices in groups.items()}
    per_bucket: dict[Bucket, Sequence[int] | np.ndarray]
    if selection is None:
        per_bucket = dict(groups)
    else:
        chosen: dict[Bucket, list[int]] = {b: [] for b in groups}
        for index in sorted(int(i) for i in selection):
            chosen[buckets[index]].append(index)
        per_bucket = {b: v for b, v in chosen.items() if v}
    out: dict[tuple[Bucket, int], Sequence[int] | np.ndarray] = {}
    for bucket, indices in per_bucket.items():
        if batch_sizes is None:
            out[(bucket, batch_size)] = indices
            continue
        by_size: dict[int, list[int]] = {}
        for index in np.asarray(indices).tolist():
            by_size.setdefault(int(batch_sizes[index]), []).append(index)
        for size in sorted(by_size):
            out[(bucket, size)] = by_size[size]
    return out
