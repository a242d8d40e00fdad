"""The DataLoader side of ``WanVideoDataset``: its loader, and what its workers need first.

``WanVideoDataset.loader()`` returns a :class:`ProgressLoader`: a plain ``DataLoader`` that
also tells its dataset which batch the trainer has received (so ``state_dict()`` is exact with
any number of workers), counts what it hands over, and runs the periodic metrics hook. Batches
arrive ready, so its ``collate_fn`` is :func:`keep_batch`. A forked worker first freezes the
objects it inherited (:func:`freeze_inherited_objects`).
"""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Iterator

from torch.utils.data import DataLoader

from wan_data.items import Batch
from wan_data.observe.report import emit_metrics

__all__ = ["ProgressLoader", "freeze_inherited_objects", "keep_batch"]


def keep_batch(batch: Batch) -> Batch:
    """The ``collate_fn`` of :meth:`WanVideoDataset.loader`: batches arrive ready."""
    return batch


class ProgressLoader(DataLoader[Batch]):
    """A DataLoader that tells its dataset which batch the trainer has received.

    It also counts what it hands to the trainer (``batches_yielded``/``samples_yielded`` in
    :meth:`WanVideoDataset.report`): with workers, their own counts include the batches they
    prefetched, which the trainer may never take (it stops mid-epoch, or the epoch ends with
    batches in flight). With ``num_workers=0`` the dataset iterates in this process and hands
    each batch over as it makes it, so its own counts are already what the trainer received.
    """

    def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]
        from wan_data.dataset import WanVideoDataset  # the dataset module imports this one

        dataset = self.dataset
        assert isinstance(dataset, WanVideoDataset)
        progress = dataset._shared
        # Begin the pass here, in the main process, so the progress recorded below and every
        # worker agree on its epoch.
        dataset.set_epoch(dataset.next_epoch())
        progress.record_progress(dataset.epoch, progress.start_position(dataset.epoch))
        every = dataset.metrics_every
        watch = dataset.metrics_enabled and (
            dataset.metrics_callback is not None or dataset.alert_monitor is not None
        )
        batches = super().__iter__()
        counter = None
        if dataset.metrics_enabled and self.num_workers > 0:
            # The workers exist once the iterator does; naming them tells the merge that
            # their production is accounted for by this counter.
            host = socket.gethostname()
            workers = [
                (host, int(w.pid)) for w in getattr(batches, "_workers", []) if w.pid is not None
            ]
            rank, _ = dataset.rank_and_world_size()
            counter = dataset._reporter.count_yields(dataset.epoch, rank, workers)
        try:
            for count, batch in enumerate(batches, start=1):
                progress.record_progress(int(batch["epoch"]), int(batch["position"]) + 1)
                if counter is not None:
                    counter.record(len(batch["paths"]))
                if watch and count % every == 0:
                    emit_metrics(dataset)
                yield batch
        finally:
            if counter is not None:
                dataset._reporter.stop_counting(counter)
        if watch:
            emit_metrics(dataset)


_FROZEN_IN_PID: int | None = None


def freeze_inherited_objects() -> None:
    """Keep a forked worker's garbage collector away from objects inherited from the parent.

    The parent may hold unreachable video decoders (its own or a user's) that still own FFmpeg
    thread pools; collecting their copies in the child deadlocks, because the threads were not
    forked. Freezing also avoids copy-on-write of every inherited object (Python's ``gc``
    documentation recommends it for fork-based workers).
    """
    global _FROZEN_IN_PID
    if _FROZEN_IN_PID != os.getpid():
        gc.freeze()
        _FROZEN_IN_PID = os.getpid()
