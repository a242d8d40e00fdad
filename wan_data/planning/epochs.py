"""Which epoch a pass over the dataset uses, and how far the trainer got: in shared memory.

A dataset's epoch and progress must reach DataLoader workers that already exist
(``persistent_workers=True``), and every worker of one pass must agree on its epoch without
talking to the others. Both live in a few 64-bit integers of shared memory, allocated with
:func:`multiprocessing.sharedctypes.RawValue`: forked workers inherit the mapping, spawned
workers receive it (pickled while the worker is being spawned), and plain pickling (``copy``,
saving a dataset) carries the values instead, since shared memory cannot travel.

:class:`SharedProgress` holds them: the last pass and its epoch, the point
``load_state_dict`` resumes at, and the last batch the trainer received (what ``state_dict``
saves). It also carries the heartbeat table of the loader iterating the dataset
(:mod:`wan_data.observe.heartbeat`), so that its workers find their slots.
"""

from __future__ import annotations

import ctypes
from multiprocessing.context import get_spawning_popen
from multiprocessing.sharedctypes import RawValue
from typing import TYPE_CHECKING, Any

from wan_data.errors import format_error

if TYPE_CHECKING:
    from wan_data.observe.heartbeat import HeartbeatTable

__all__ = ["MAX_EPOCH", "SharedProgress", "pack_pass", "unpack_pass"]

# ``pass_and_epoch`` holds (pass id << 23) | (epoch + 1): one 64-bit value, so it changes
# atomically; pass id 0 means "no pass since set_epoch", and its epoch is then the one before
# the next.
_EPOCH_BITS = 23
MAX_EPOCH = (1 << _EPOCH_BITS) - 2
_PASS_ID_MASK = (1 << 40) - 1
_MAIN_PASS = 1  # an iteration in the main process; worker passes have bit 1 set


def pack_pass(pass_id: int, epoch: int) -> int:
    """One 64-bit value holding a pass id and its epoch."""
    return (pass_id << _EPOCH_BITS) | ((epoch + 1) & ((1 << _EPOCH_BITS) - 1))


def unpack_pass(value: int) -> tuple[int, int]:
    """``(pass id, epoch)``; pass id 0 means no pass since the last ``set_epoch``."""
    return value >> _EPOCH_BITS, (value & ((1 << _EPOCH_BITS) - 1)) - 1


class _Slots(ctypes.Structure):
    """The shared fields (module level: a spawned worker unpickles the type by name)."""

    _fields_ = [
        ("pass_and_epoch", ctypes.c_int64),
        ("resume_epoch", ctypes.c_int64),
        ("resume_position", ctypes.c_int64),
        ("progress_epoch", ctypes.c_int64),
        ("progress_position", ctypes.c_int64),
    ]
    pass_and_epoch: int  # the last pass and its epoch, packed by pack_pass
    resume_epoch: int  # the epoch load_state_dict resumes, -1 for none
    resume_position: int  # the first batch of that epoch to yield
    progress_epoch: int  # the epoch of the last batch the trainer received, -1 for unknown
    progress_position: int  # the batch after it


_FIELDS = tuple(field[0] for field in _Slots._fields_)
_INITIAL = (pack_pass(0, -1), -1, 0, -1, 0)


class SharedProgress:
    """The epoch of each pass, the resume point and the trainer's progress, shared by a
    dataset's copies in its DataLoader workers (see the module docstring).

    ``heartbeats`` is set by :class:`~wan_data.loader.ProgressLoader` before its workers
    start; workers publish what they have in flight there. It travels to spawned workers and
    is dropped by plain pickling, like the shared memory.
    """

    def __init__(self, values: tuple[int, ...] = _INITIAL) -> None:
        self._slots: _Slots = RawValue(_Slots, *values)
        self.heartbeats: HeartbeatTable | None = None

    def _values(self) -> tuple[int, ...]:
        return tuple(int(getattr(self._slots, name)) for name in _FIELDS)

    def __getstate__(self) -> dict[str, Any]:
        if get_spawning_popen() is None:
            # Plain pickling (not a worker being spawned): shared memory cannot travel, the
            # values can. A spawned worker receives the shared memory itself.
            return {"values": self._values()}
        return {"slots": self._slots, "heartbeats": self.heartbeats}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.heartbeats = state.get("heartbeats")
        if "slots" in state:
            self._slots = state["slots"]
        else:
            self._slots = RawValue(_Slots, *state["values"])

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self._slots, name)}" for name in _FIELDS)
        return f"SharedProgress({fields})"

    # -- epochs and passes ---------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The epoch of the current (or last) pass; before any pass, the one the next will use."""
        pass_id, epoch = unpack_pass(int(self._slots.pass_and_epoch))
        return epoch if pass_id else epoch + 1

    def next_epoch(self) -> int:
        """The epoch the next pass will use: one after the last pass (or the one set)."""
        return unpack_pass(int(self._slots.pass_and_epoch))[1] + 1

    def set_epoch(self, epoch: int) -> None:
        """Make ``epoch`` the epoch of the next pass (``ValueError`` outside the packable range)."""
        epoch = int(epoch)
        if not 0 <= epoch < MAX_EPOCH:
            raise ValueError(format_error("epoch", epoch, f"must be in [0, {MAX_EPOCH})"))
        self._slots.pass_and_epoch = pack_pass(0, epoch - 1)

    def begin_pass(self, info: Any, iterations: int) -> int:
        """The epoch of the iteration starting now, the same in every worker of one pass.

        ``info`` is the DataLoader's worker info (``None`` in the main process) and
        ``iterations`` the number of iterations this process has started, this one included.

        A pass is identified without any communication: every DataLoader worker of one
        ``iter(loader)`` has the same base seed (``info.seed - info.id``) and, with persistent
        workers, has run the same number of iterations. A worker that finds another pass
        recorded takes the next epoch and records its own pass; the others read it. The pass
        and its epoch share one 64-bit slot, written and read in one access, so two workers
        starting at once either both see the old pass (and both write the same new value) or
        one sees the other's. An iteration in the main process is always a pass of its own.
        """
        if info is None:
            epoch = self.next_epoch()
            self._slots.pass_and_epoch = pack_pass(_MAIN_PASS, epoch)
            return epoch
        pass_id = (hash((int(info.seed) - int(info.id), iterations)) & _PASS_ID_MASK) | 2
        recorded, epoch = unpack_pass(int(self._slots.pass_and_epoch))
        if recorded == pass_id:
            return epoch
        self._slots.pass_and_epoch = pack_pass(pass_id, epoch + 1)
        return epoch + 1

    # -- resume point and progress -------------------------------------------------------

    def resume_at(self, epoch: int, position: int) -> None:
        """Start ``epoch`` at batch ``position``, and count that as the progress made so far."""
        self._slots.resume_epoch = epoch
        self._slots.resume_position = position
        self.record_progress(epoch, position)

    def start_position(self, epoch: int) -> int:
        """The first batch of ``epoch`` to yield: the resume point's, else 0."""
        if int(self._slots.resume_epoch) == epoch:
            return int(self._slots.resume_position)
        return 0

    def record_progress(self, epoch: int, position: int) -> None:
        """The trainer has received the batches of ``epoch`` before ``position``."""
        self._slots.progress_epoch = epoch
        self._slots.progress_position = position

    def progress(self) -> tuple[int, int] | None:
        """``(epoch, position)`` recorded by :meth:`record_progress`; ``None`` if never."""
        epoch = int(self._slots.progress_epoch)
        if epoch < 0:
            return None
        return epoch, int(self._slots.progress_position)
