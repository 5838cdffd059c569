"""Process-wide counters that the monitoring tools read."""

from __future__ import annotations

import functools
import re
import threading
from collections import defaultdict, deque
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


# Results served by AnalysisRepository.get_latest_valid (a hit) or not (a miss).
analysis_cache = CacheStatistics()


@dataclass(frozen=True)
class QueryTiming:
    """Timings of one kind of statement on one table (milliseconds)."""

    table: str
    kind: str
    count: int
    p50_ms: float
    p95_ms: float
    max_ms: float


_KIND = re.compile(r"^\s*(\w+)")
_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE|JOIN)\s+"?(\w+)', re.IGNORECASE)


@functools.lru_cache(maxsize=4096)  # statements repeat: parse each text once
def statement_shape(statement: str) -> tuple[str, str]:
    """(table, kind) of a SQL statement: ("users", "SELECT"); "-" when there is no table."""
    kind = (_KIND.match(statement) or ["", "OTHER"])[1].upper()
    table = _TABLE.search(statement)
    return (table[1].lower() if table else "-"), kind


class QueryStatistics:
    """Per-statement timings, kept per (table, kind): count, max, and a sample of the
    last ``sample`` durations for the percentiles. Statements slower than the
    manager's ``slow_query_ms`` are logged by :class:`DatabaseManager` (without
    their parameters)."""

    def __init__(self, sample: int = 2000) -> None:
        self._lock = threading.Lock()
        self._sample = sample
        self._durations: dict[tuple[str, str], deque[float]] = {}
        self._counts: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._max: defaultdict[tuple[str, str], float] = defaultdict(float)

    def record(self, statement: str, seconds: float) -> None:
        key = statement_shape(statement)
        with self._lock:
            self._durations.setdefault(key, deque(maxlen=self._sample)).append(seconds)
            self._counts[key] += 1
            self._max[key] = max(self._max[key], seconds)

    def snapshot(self) -> list[QueryTiming]:
        with self._lock:
            items = [(key, sorted(values)) for key, values in self._durations.items()]
            counts, maxima = dict(self._counts), dict(self._max)
        return [
            QueryTiming(
                table=table,
                kind=kind,
                count=counts[(table, kind)],
                p50_ms=_percentile(values, 0.50) * 1000,
                p95_ms=_percentile(values, 0.95) * 1000,
                max_ms=maxima[(table, kind)] * 1000,
            )
            for (table, kind), values in sorted(items)
        ]

    def reset(self) -> None:
        with self._lock:
            self._durations.clear()
            self._counts.clear()
            self._max.clear()


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# Every engine a DatabaseManager makes reports here.
queries = QueryStatistics()
