"""memory.py: measuring one process without touching CUDA, and merging per-process numbers."""

from __future__ import annotations

import json
import os
import pickle
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from wan_data.observe import memory
from wan_data.observe.memory import MemoryStats, merge_memory


def test_measure_reads_host_memory() -> None:
    stats = MemoryStats.measure()
    assert stats.pid == os.getpid()
    assert stats.rss_bytes is not None and stats.rss_bytes > 1 << 20
    assert stats.peak_rss_bytes is not None
    assert stats.total_bytes is not None and stats.available_bytes is not None
    assert 0 < stats.available_bytes <= stats.total_bytes
    assert stats.swap_total_bytes is not None and stats.swap_used_bytes is not None
    assert stats.used_fraction is not None and 0.0 <= stats.used_fraction < 1.0


def test_peak_rss_is_bytes_not_kib() -> None:
    # ru_maxrss is KiB on Linux; left unconverted, the peak would be ~1000x below the RSS.
    stats = MemoryStats.measure()
    assert stats.rss_bytes is not None and stats.peak_rss_bytes is not None
    # (the kernel updates the high-water mark lazily, so it may lag the RSS by a few pages)
    assert stats.peak_rss_bytes >= 0.9 * stats.rss_bytes


def test_no_cuda_context_means_no_gpu_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("measure() must not touch CUDA before it is initialised")

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    for name in ("is_available", "current_device", "memory_allocated", "init"):
        monkeypatch.setattr(torch.cuda, name, forbidden)
    stats = MemoryStats.measure()
    assert stats.gpu_allocated_bytes is None
    assert stats.gpu_peak_allocated_bytes is None
    assert stats.gpu_reserved_bytes is None
    assert stats.gpu_total_bytes is None
    assert stats.gpu_fraction is None
    assert stats.rss_bytes is not None


def test_gpu_fields_when_cuda_initialised(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = torch.cuda
    monkeypatch.setattr(cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "current_device", lambda: 1)
    monkeypatch.setattr(cuda, "memory_allocated", lambda d: 100 + d)
    monkeypatch.setattr(cuda, "max_memory_allocated", lambda d: 300 + d)
    monkeypatch.setattr(cuda, "memory_reserved", lambda d: 200 + d)
    monkeypatch.setattr(
        cuda, "get_device_properties", lambda d: SimpleNamespace(total_memory=1000 + d)
    )
    stats = MemoryStats.measure()
    assert stats.gpu_allocated_bytes == 101
    assert stats.gpu_peak_allocated_bytes == 301
    assert stats.gpu_reserved_bytes == 201
    assert stats.gpu_total_bytes == 1001
    assert stats.gpu_fraction == pytest.approx(101 / 1001)


def test_a_failing_reader_gives_none_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> Any:
        raise PermissionError("no /proc here")

    monkeypatch.setattr(memory.psutil, "virtual_memory", broken)
    monkeypatch.setattr(memory.psutil, "swap_memory", broken)
    stats = MemoryStats.measure()
    assert stats.available_bytes is None and stats.total_bytes is None
    assert stats.swap_used_bytes is None and stats.swap_total_bytes is None
    assert stats.used_fraction is None
    assert stats.rss_bytes is not None


def test_as_dict_is_json_and_round_trips() -> None:
    stats = MemoryStats.measure()
    d = stats.as_dict()
    assert set(d) == {
        "rss_bytes",
        "peak_rss_bytes",
        "available_bytes",
        "total_bytes",
        "swap_used_bytes",
        "swap_total_bytes",
        "gpu_allocated_bytes",
        "gpu_peak_allocated_bytes",
        "gpu_reserved_bytes",
        "gpu_total_bytes",
        "pid",
    }
    assert MemoryStats(**json.loads(json.dumps(d))) == stats
    assert pickle.loads(pickle.dumps(stats)) == stats


def test_derived_fractions() -> None:
    s = MemoryStats(available_bytes=25, total_bytes=100, gpu_allocated_bytes=3, gpu_total_bytes=4)
    assert s.used_fraction == pytest.approx(0.75)
    assert s.gpu_fraction == pytest.approx(0.75)
    assert MemoryStats(available_bytes=1, total_bytes=0).used_fraction is None


def test_merge_sums_rss_and_keeps_the_worst_of_the_rest() -> None:
    parts = [
        MemoryStats(
            rss_bytes=100,
            peak_rss_bytes=500,
            available_bytes=4000,
            total_bytes=10000,
            swap_used_bytes=10,
            swap_total_bytes=99,
            pid=1,
        ).as_dict(),
        MemoryStats(
            rss_bytes=300,
            peak_rss_bytes=350,
            available_bytes=3000,
            total_bytes=10000,
            swap_used_bytes=30,
            swap_total_bytes=99,
            gpu_allocated_bytes=7,
            gpu_peak_allocated_bytes=9,
            gpu_reserved_bytes=8,
            gpu_total_bytes=80,
            pid=2,
        ).as_dict(),
        {"rss_bytes": 50, "available_bytes": None},  # partial dicts (older parts) are fine
    ]
    merged = merge_memory(parts)
    assert merged == {
        "processes": 3,
        "rss_bytes_total": 450,
        "rss_bytes_max": 300,
        "peak_rss_bytes": 500,
        "available_bytes": 3000,
        "total_bytes": 10000,
        "swap_used_bytes": 30,
        "swap_total_bytes": 99,
        "gpu_allocated_bytes": 7,
        "gpu_peak_allocated_bytes": 9,
        "gpu_reserved_bytes": 8,
        "gpu_total_bytes": 80,
    }


def test_merge_of_nothing() -> None:
    merged = merge_memory([])
    assert merged["processes"] == 0
    assert all(v is None for k, v in merged.items() if k != "processes")
