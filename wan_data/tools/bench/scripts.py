"""The measuring functions of ``benchmarks/*.py``, imported from a source checkout.

Each benchmark script holds the definition of its baseline (what "bare" means, which files are
read, in which order) next to the options docs/performance.md quotes. The bench calls those
functions rather than copies of them, so a change to a baseline changes the script and the
bench alike. The scripts are not part of the installed package: outside a checkout the
measures that need them report ``SKIP`` with the reason.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["BenchmarksUnavailable", "benchmark_function", "benchmark_module", "benchmarks_dir"]


class BenchmarksUnavailable(RuntimeError):
    """The benchmark scripts (or one of their functions) are not where the bench looks."""


def benchmarks_dir() -> Path | None:
    """``benchmarks/`` beside the ``wan_data`` package, when this is a source checkout."""
    import wan_data

    folder = Path(wan_data.__file__).resolve().parents[1] / "benchmarks"
    return folder if (folder / "bench_cache.py").is_file() else None


def benchmark_module(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` (e.g. ``"bench_cache"``) as a module.

    The folder goes on ``sys.path`` because the scripts import each other by name
    (``bench_memory`` uses ``bench_cache``'s helpers).

    Raises:
        BenchmarksUnavailable: no ``benchmarks/`` folder, or the script does not import.
    """
    folder = benchmarks_dir()
    if folder is None:
        raise BenchmarksUnavailable(
            "benchmarks/ not found beside the wan_data package (run from a source checkout)"
        )
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(name)
    except Exception as exc:  # a script broken mid-edit must not take the other groups down
        raise BenchmarksUnavailable(
            f"benchmarks/{name}.py did not import: {type(exc).__name__}: {exc}"
        ) from exc


def benchmark_function(module: str, name: str) -> Any:
    """``benchmarks/<module>.py``'s ``name``; a clear error when a script no longer has it."""
    mod = benchmark_module(module)
    fn = getattr(mod, name, None)
    if fn is None:
        raise BenchmarksUnavailable(f"benchmarks/{module}.py has no {name}()")
    return fn
