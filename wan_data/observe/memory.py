"""Memory of one process (host RAM, swap, GPU) and its aggregation across processes.

A video pipeline dies of memory more often than of bad files: decoded frames are large, every
DataLoader worker holds its own prefetched batches, and the OOM killer ends the run without a
Python traceback. Measuring is therefore cheap and never fails (a missing value is ``None``), so
it can run in every worker after every snapshot, and :func:`merge_memory` turns the per-process
numbers into the one report a person reads.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

import psutil
import torch

__all__ = ["MemoryStats", "merge_memory"]

logger = logging.getLogger("wan_data")

_GPU_FIELDS = (
    "gpu_allocated_bytes",
    "gpu_peak_allocated_bytes",
    "gpu_reserved_bytes",
    "gpu_total_bytes",
)


@dataclass(frozen=True)
class MemoryStats:
    """One process's memory at one moment; every field is ``None`` when it cannot be read.

    Args:
        rss_bytes: resident set size of this process now.
        peak_rss_bytes: the highest resident set size this process reached (``ru_maxrss``),
            because a leak or a huge clip shows in the peak long after the memory was freed.
        available_bytes: RAM the kernel can still hand out without swapping (whole machine).
        total_bytes: physical RAM of the machine.
        swap_used_bytes: swap in use (whole machine); growing swap precedes an OOM kill.
        swap_total_bytes: swap configured.
        gpu_allocated_bytes: bytes held by live tensors on this process's current CUDA device.
        gpu_peak_allocated_bytes: the highest allocation since start or the last peak reset.
        gpu_reserved_bytes: bytes held by PyTorch's caching allocator (allocated + cached).
        gpu_total_bytes: the device's memory.
        pid: the process measured, so merged reports and messages can name it.
    """

    rss_bytes: int | None = None
    peak_rss_bytes: int | None = None
    available_bytes: int | None = None
    total_bytes: int | None = None
    swap_used_bytes: int | None = None
    swap_total_bytes: int | None = None
    gpu_allocated_bytes: int | None = None
    gpu_peak_allocated_bytes: int | None = None
    gpu_reserved_bytes: int | None = None
    gpu_total_bytes: int | None = None
    pid: int | None = None

    @classmethod
    def measure(cls) -> MemoryStats:
        """Read the current process's memory; never raises.

        GPU fields are filled only when this process has already initialised CUDA: measuring
        must not create a CUDA context (hundreds of MiB per process, and a forked DataLoader
        worker that touches CUDA after its parent did fails), so a worker reports ``None``.
        """
        rss = peak = available = total = swap_used = swap_total = None
        try:
            rss = int(psutil.Process().memory_info().rss)
        except Exception as exc:  # a sandbox may hide /proc; the other numbers still help
            logger.debug("memory: cannot read RSS: %s", exc)
        peak = _peak_rss_bytes()
        try:
            vm = psutil.virtual_memory()
            available, total = int(vm.available), int(vm.total)
        except Exception as exc:
            logger.debug("memory: cannot read virtual memory: %s", exc)
        try:
            swap = psutil.swap_memory()
            swap_used, swap_total = int(swap.used), int(swap.total)
        except Exception as exc:
            logger.debug("memory: cannot read swap: %s", exc)
        gpu = _gpu_memory()
        return cls(
            rss_bytes=rss,
            peak_rss_bytes=peak,
            available_bytes=available,
            total_bytes=total,
            swap_used_bytes=swap_used,
            swap_total_bytes=swap_total,
            gpu_allocated_bytes=gpu[0],
            gpu_peak_allocated_bytes=gpu[1],
            gpu_reserved_bytes=gpu[2],
            gpu_total_bytes=gpu[3],
            pid=os.getpid(),
        )

    @property
    def used_fraction(self) -> float | None:
        """Fraction of the machine's RAM in use, ``(total - available) / total``."""
        if self.total_bytes is None or self.available_bytes is None or self.total_bytes <= 0:
            return None
        return (self.total_bytes - self.available_bytes) / self.total_bytes

    @property
    def gpu_fraction(self) -> float | None:
        """Fraction of the device's memory held by live tensors, ``allocated / total``."""
        if (
            self.gpu_allocated_bytes is None
            or self.gpu_total_bytes is None
            or self.gpu_total_bytes <= 0
        ):
            return None
        return self.gpu_allocated_bytes / self.gpu_total_bytes

    def as_dict(self) -> dict[str, int | None]:
        """Plain JSON-serialisable dict (the format :func:`merge_memory` reads)."""
        return dataclasses.asdict(self)


def _peak_rss_bytes() -> int | None:
    """``ru_maxrss`` in bytes: KiB on Linux, bytes on macOS, absent on Windows."""
    try:
        import resource
    except ImportError:
        return None
    try:
        peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    except Exception as exc:
        logger.debug("memory: cannot read ru_maxrss: %s", exc)
        return None
    return peak if sys.platform == "darwin" else peak * 1024


def _gpu_memory() -> tuple[int | None, int | None, int | None, int | None]:
    """Allocator numbers of the current CUDA device, or ``None`` without a CUDA context.

    ``is_initialized`` is asked first because ``is_available`` may itself initialise the CUDA
    driver, which is exactly what a forked worker must not do.
    """
    try:
        cuda = torch.cuda
        if not cuda.is_initialized() or not cuda.is_available():
            return None, None, None, None
        device = cuda.current_device()
        return (
            int(cuda.memory_allocated(device)),
            int(cuda.max_memory_allocated(device)),
            int(cuda.memory_reserved(device)),
            int(cuda.get_device_properties(device).total_memory),
        )
    except Exception as exc:
        logger.debug("memory: cannot read CUDA memory: %s", exc)
        return None, None, None, None


def _values(parts: list[dict[str, Any]], key: str) -> list[int]:
    return [int(p[key]) for p in parts if p.get(key) is not None]


def merge_memory(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine per-process :meth:`MemoryStats.as_dict` dicts into one report.

    DataLoader workers are separate processes, each with its own RSS, so the memory the data
    pipeline costs is the sum of theirs (``rss_bytes_total``; it overstates a little, because
    pages a forked worker shares copy-on-write with its parent count in both). Peaks happened at
    different moments and cannot be added, so the largest is kept. The machine-wide numbers were
    seen by every process at different moments; the worst observation is kept (the least
    ``available_bytes``, the most swap), and for GPU fields the largest, since each process
    describes its own device or context. A field no process could read stays ``None``.

    Args:
        parts: one dict per process; missing keys and ``None`` values are ignored.

    Returns:
        ``processes``, ``rss_bytes_total``, ``rss_bytes_max``, ``peak_rss_bytes``,
        ``available_bytes``, ``total_bytes``, ``swap_used_bytes``, ``swap_total_bytes`` and the
        four ``gpu_*`` fields.
    """
    rss = _values(parts, "rss_bytes")
    merged: dict[str, Any] = {
        "processes": len(parts),
        "rss_bytes_total": sum(rss) if rss else None,
        "rss_bytes_max": max(rss) if rss else None,
    }
    for key, pick in (
        ("peak_rss_bytes", max),
        ("available_bytes", min),
        ("total_bytes", max),
        ("swap_used_bytes", max),
        ("swap_total_bytes", max),
        *((name, max) for name in _GPU_FIELDS),
    ):
        values = _values(parts, key)
        merged[key] = pick(values) if values else None
    return merged
