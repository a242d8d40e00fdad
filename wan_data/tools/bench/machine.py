"""The machine a bench ran on, written into its JSON.

Ratios are comparable across machines only roughly: two cores or sixteen, a GPU or none, the
FFmpeg build torchcodec links against all move them. Every JSON therefore says what it ran on,
so a number can be put next to the one it is compared with.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from importlib import metadata
from typing import Any

__all__ = ["machine_info", "two_process_scaling"]

_PACKAGES = ("torch", "torchcodec", "diffusers", "transformers", "numpy", "av", "opencv-python")


def machine_info() -> dict[str, Any]:
    """CPU count and model, RAM, Python and package versions, FFmpeg, GPU (if any)."""
    import torch

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_gb": _ram_gb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "packages": {name: _version(name) for name in _PACKAGES},
        "ffmpeg": _ffmpeg_version(),
        "gpu": _gpu(),
    }
    return info


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        if name == "opencv-python":
            return _version("opencv-python-headless")
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        return None


def _ffmpeg_version() -> dict[str, Any]:
    """The ``ffmpeg`` command's first line, and the FFmpeg libraries torchcodec loaded.

    They can differ (torchcodec links whichever ``libavcodec`` the loader finds), and the
    libraries are the ones that decode in the pipeline.
    """
    out: dict[str, Any] = {"cli": None, "torchcodec_libraries": None}
    exe = shutil.which("ffmpeg")
    if exe is not None:
        try:
            text = subprocess.run(
                [exe, "-hide_banner", "-version"],
                capture_output=True,
                text=True,
                timeout=20,
                stdin=subprocess.DEVNULL,
            ).stdout
            out["cli"] = text.split("\n", 1)[0]
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        from torchcodec._core import get_ffmpeg_library_versions

        out["torchcodec_libraries"] = {k: str(v) for k, v in get_ffmpeg_library_versions().items()}
    except Exception:
        pass
    return out


def _gpu() -> dict[str, Any] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {
        "name": props.name,
        "count": torch.cuda.device_count(),
        "memory_gb": round(props.total_memory / 2**30, 1),
        "cuda": torch.version.cuda,
        "capability": f"{props.major}.{props.minor}",
    }


def two_process_scaling(*, quick: bool = False) -> dict[str, float]:
    """How much two processes get done at once against one alone, on this machine.

    The ceiling of ``num_workers=2`` against ``num_workers=0``: two cores give two processes
    of pure Python close to 2x, but memory-bound work (decoding, resizing and converting
    frames is much of it) shares the memory system and gets less. Measured with forked
    processes (spawned where fork is missing): a Python loop and a 64 MB ``copy_`` on one torch
    thread; each value is ``2 * alone / slowest of the pair``, best of a few tries.
    """
    import multiprocessing

    work = {"python_loop": _python_loop, "memory_copy": _memory_copy}
    size = 1 if quick else 8
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    out: dict[str, float] = {}
    for name, fn in work.items():
        alone = min(fn(size) for _ in range(3))
        with context.Pool(2) as pool:
            pool.map(fn, [1, 1])  # start both processes before the clock
            pair = min(max(pool.map(fn, [size, size])) for _ in range(2))
        out[name] = round(2 * alone / pair, 3) if pair > 0 else 0.0
    return out


def _python_loop(size: int) -> float:
    started = time.perf_counter()
    total = 0
    for i in range(1_000_000 * size):
        total += i * i
    return time.perf_counter() - started


def _memory_copy(size: int) -> float:
    import torch

    torch.set_num_threads(1)
    source = torch.ones(64 << 20, dtype=torch.uint8)
    target = torch.empty_like(source)
    started = time.perf_counter()
    for _ in range(5 * size):
        target.copy_(source)
    return time.perf_counter() - started
