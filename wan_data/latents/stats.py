"""Counters of a latent cache: hits, misses, corruption, writes, size.

:class:`CacheStats` is the cache's data-model record, kept by each
:class:`~wan_data.latents.store.LatentCache` and merged across DataLoader workers and ranks for
the run report and the alerts. It lives apart from the store because its readers (metrics,
alerts, the dataset's report) need the record, not the store.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["CacheStats"]


@dataclass
class CacheStats:
    """Cache counters (the spec's data model), mergeable across workers and ranks.

    ``hits``/``misses`` count :meth:`LatentCache.get` calls; a corrupt entry counts as a miss
    (the caller re-encodes it) and also in ``corruption_count``. ``quarantined`` counts files
    actually moved to ``quarantine/``. ``total_items`` and ``cache_size_mb`` describe the entries
    directory when :meth:`LatentCache.stats` was called.
    """

    hits: int = 0
    misses: int = 0
    corruption_count: int = 0
    writes: int = 0
    quarantined: int = 0
    total_items: int = 0
    cache_size_mb: float = 0.0
    access_seconds: float = 0.0

    @property
    def reads(self) -> int:
        """Lookups counted: ``hits + misses`` (a corrupt entry is a miss)."""
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        """Hits per read (0.0 before any read)."""
        return self.hits / self.reads if self.reads else 0.0

    @property
    def miss_rate(self) -> float:
        """Misses (absent or corrupt) per read (0.0 before any read)."""
        return self.misses / self.reads if self.reads else 0.0

    @property
    def avg_access_time(self) -> float:
        """Mean seconds per :meth:`LatentCache.get` (0.0 before any read)."""
        return self.access_seconds / self.reads if self.reads else 0.0

    def as_dict(self) -> dict[str, float | int]:
        """Plain JSON-serialisable dict, derived rates included."""
        out: dict[str, float | int] = dataclasses.asdict(self)
        out.update(
            hit_rate=self.hit_rate, miss_rate=self.miss_rate, avg_access_time=self.avg_access_time
        )
        return out

    def merge(self, other: CacheStats) -> CacheStats:
        """Combine two workers' stats: counters add; the directory description takes the larger.

        Workers and ranks share one cache directory, so adding their ``total_items`` would count
        each entry once per worker; the larger (later) observation is the best description.
        """
        return CacheStats(
            hits=self.hits + other.hits,
            misses=self.misses + other.misses,
            corruption_count=self.corruption_count + other.corruption_count,
            writes=self.writes + other.writes,
            quarantined=self.quarantined + other.quarantined,
            total_items=max(self.total_items, other.total_items),
            cache_size_mb=max(self.cache_size_mb, other.cache_size_mb),
            access_seconds=self.access_seconds + other.access_seconds,
        )
