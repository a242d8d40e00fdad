"""The DataLoader side of ``WanVideoDataset``: its loader, and what its workers need first.

``WanVideoDataset.loader()`` returns a :class:`ProgressLoader`: a plain ``DataLoader`` that
also tells its dataset which batch the trainer has received (so ``state_dict()`` is exact with
any number of workers), counts what it hands over, runs the periodic metrics hook, and watches
its workers (a stuck or dead worker becomes an error naming the file it had in flight). Batches
arrive ready, so its ``collate_fn`` is :func:`keep_batch`. A forked worker first freezes the
objects it inherited (:func:`freeze_inherited_objects`).
"""

from __future__ import annotations

import gc
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

from wan_data.items import Batch
from wan_data.observe.heartbeat import (
    HeartbeatTable,
    WorkerError,
    WorkerSupervisor,
    defer_worker_errors,
)
from wan_data.observe.report import emit_metrics

__all__ = ["ProgressLoader", "WorkerError", "freeze_inherited_objects", "keep_batch"]

logger = logging.getLogger("wan_data")


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

    With workers it also watches them from this process (:class:`WorkerSupervisor`): a
    worker that makes no progress for ``AlertConfig.stall_seconds`` (frozen, or blocked in a
    stage) is killed and the loop raises :class:`WorkerError` naming its pid, stage and file;
    torch's ``DataLoader worker (pid(s) ...) exited unexpectedly`` becomes a
    :class:`WorkerError` naming the file the dead worker had in flight (the original chained).
    After such an error, persistent workers are shut down, so the next ``iter`` starts fresh.
    """

    _heartbeats: HeartbeatTable | None = None

    def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]
        from wan_data.dataset import WanVideoDataset  # the dataset module imports this one

        dataset = self.dataset
        assert isinstance(dataset, WanVideoDataset)
        progress = dataset._shared
        # Begin the pass here, in the main process, so the progress recorded below and every
        # worker agree on its epoch.
        dataset.set_epoch(dataset.next_epoch())
        dataset.check_ranks_once()  # before any worker: a mismatch is an error, not a DDP hang
        progress.record_progress(dataset.epoch, progress.start_position(dataset.epoch))
        every = dataset.metrics_every
        watch = dataset.metrics_enabled and (
            dataset.metrics_callback is not None or dataset.alert_monitor is not None
        )
        if self.num_workers > 0:
            # Before the workers exist: they find their slots through the shared progress.
            # Kept for the loader's life, since persistent workers keep the table they got.
            if self._heartbeats is None or self._heartbeats.size != self.num_workers:
                self._heartbeats = HeartbeatTable(self.num_workers)
            progress.heartbeats = self._heartbeats
        if self.num_workers > 0:
            dataset.plan()  # planned once here: forked workers read it (WanVideoDataset.plan)
        batches = super().__iter__()
        supervisor = self._supervisor(batches)
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
        count = 0
        try:
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except (RuntimeError, EOFError, ConnectionError) as exc:
                    error = supervisor.explain(exc) if supervisor is not None else None
                    if error is None:
                        raise
                    if error is exc:
                        raise
                    raise error from exc
                count += 1
                progress.record_progress(int(batch["epoch"]), int(batch["position"]) + 1)
                if counter is not None:
                    counter.record(len(batch["paths"]))
                if watch and count % every == 0:
                    emit_metrics(dataset)
                yield batch
        finally:
            if supervisor is not None:
                supervisor.stop()
                if supervisor.reported is not None:  # raised here or in the SIGCHLD handler
                    self._drop_workers(batches)
            if counter is not None:
                dataset._reporter.stop_counting(counter)
        if watch:
            emit_metrics(dataset)

    def _supervisor(self, batches: Any) -> WorkerSupervisor | None:
        """Watch the workers of ``batches`` (``None`` without workers or heartbeats)."""
        workers = getattr(batches, "_workers", None)
        if self._heartbeats is None or not workers:
            return None
        monitor = getattr(self.dataset, "alert_monitor", None)
        stall = monitor.config.stall_seconds if monitor is not None else None
        supervisor = WorkerSupervisor(self._heartbeats, workers, stall).start()
        defer_worker_errors()  # after torch installed its SIGCHLD handler, which it wraps
        return supervisor

    def _drop_workers(self, batches: Any) -> None:
        """After a worker failed: shut the others down, so the next ``iter`` starts afresh.

        torch keeps persistent workers across passes and cannot replace a dead one.
        """
        if getattr(self, "_iterator", None) is batches:
            self._iterator = None
        shutdown = getattr(batches, "_shutdown_workers", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception:  # the original error matters more
                logger.debug("shutting down DataLoader workers failed", exc_info=True)


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
