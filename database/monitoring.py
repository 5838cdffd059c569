"""Process-wide counters that the monitoring tools read."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class CacheCounts:
    hits: int = 0
    misses: int = 0
    fetches: int = 0
    fetch_errors: int = 0

    @property
    def hit_rate(self) -> float | None:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else None


class CacheStatistics:
    """Hit, miss and fetch counts of a cache, by data type; safe across threads."""

    _FIELDS = ("hits", "misses", "fetches", "fetch_errors")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: defaultdict[str, dict[str, int]] = defaultdict(
            lambda: dict.fromkeys(self._FIELDS, 0)
        )

    def record(self, kind: str, event: str) -> None:
        with self._lock:
            self._counts[kind][event] += 1

    def snapshot(self) -> dict[str, CacheCounts]:
        with self._lock:
            return {kind: CacheCounts(**counts) for kind, counts in sorted(self._counts.items())}

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


# The market-data cache's counters (by DataType value).
market_data_cache = CacheStatistics()
