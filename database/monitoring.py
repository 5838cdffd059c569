"""The process's metrics, as prometheus_client counters and histograms.

Every engine a :class:`~database.connection.DatabaseManager` makes times its
statements into ``buffetbot_db_query_duration_seconds`` (a histogram, by table
and statement kind) and counts them in ``buffetbot_db_queries_total``; the
market-data cache and the analysis cache count their lookups and fetches.

The metrics live in prometheus_client's default registry (``REGISTRY``), so an
application exposes them with prometheus_client's own tools
(``start_http_server``, ``make_wsgi_app``, ``generate_latest(REGISTRY)``).
They work in its multiprocess mode too: set ``PROMETHEUS_MULTIPROC_DIR`` before
anything imports prometheus_client, and serve a registry holding a
``MultiProcessCollector`` (see the README).

``queries.snapshot()`` and the caches' ``snapshot()`` read this process's
values for the tools (``buffetbot-db stats``, tests); ``reset()`` takes a
baseline that later snapshots subtract. The Prometheus counters themselves are
never reset: they only grow, as Prometheus expects.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Histogram

# Statement latencies: half a millisecond to ten seconds (and +Inf).
QUERY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

query_duration = Histogram(
    "buffetbot_db_query_duration_seconds",
    "Statement execution time (cursor execute, as the driver reports it)",
    ["table", "kind"],
    buckets=QUERY_BUCKETS,
)
query_count = Counter(
    "buffetbot_db_queries", "Statements executed", ["table", "kind"]
)  # the same count as the histogram's _count, under its old name
cache_lookups = Counter(
    "buffetbot_db_cache_lookups", "Cache lookups", ["cache", "kind", "result"]
)  # result: hit or miss
cache_fetches = Counter(
    "buffetbot_db_cache_fetches", "Fetches of missing data on a cache miss", ["cache", "kind"]
)
cache_fetch_errors = Counter(
    "buffetbot_db_cache_fetch_errors", "Fetches that failed", ["cache", "kind"]
)


def _values(metric: Any, *names: str) -> dict[tuple[str, ...], dict[str, float]]:
    """This process's samples of a metric labelled ``names``: {label values: {suffix: value}}.

    A histogram's buckets are keyed ``le=<bound>``; ``_created`` samples are left out.
    """
    out: dict[tuple[str, ...], dict[str, float]] = {}
    for family in metric.collect():
        for sample in family.samples:
            suffix = sample.name[len(family.name) :]
            if suffix == "_created":
                continue
            if suffix == "_bucket":
                suffix = f"le={sample.labels['le']}"
            key = tuple(sample.labels[name] for name in names)
            out.setdefault(key, {})[suffix] = sample.value
    return out


def _minus(
    now: dict[tuple[str, ...], dict[str, float]], base: dict[tuple[str, ...], dict[str, float]]
) -> dict[tuple[str, ...], dict[str, float]]:
    result = {}
    for key, values in now.items():
        before = base.get(key, {})
        result[key] = {name: value - before.get(name, 0.0) for name, value in values.items()}
    return result


# -- caches --------------------------------------------------------------------------


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
    """Hit, miss and fetch counts of one cache, by data type; safe across threads.

    ``record(kind, event)`` increments a prometheus_client counter (event:
    ``hits``, ``misses``, ``fetches`` or ``fetch_errors``).
    """

    _EVENTS = ("hits", "misses", "fetches", "fetch_errors")

    def __init__(self, cache: str) -> None:
        self.cache = cache
        self._lock = threading.Lock()
        self._children: dict[tuple[str, str], Any] = {}
        self._baseline: dict[str, dict[str, float]] = {}

    def _child(self, kind: str, event: str) -> Any:
        if event == "hits":
            return cache_lookups.labels(self.cache, kind, "hit")
        if event == "misses":
            return cache_lookups.labels(self.cache, kind, "miss")
        if event == "fetches":
            return cache_fetches.labels(self.cache, kind)
        if event == "fetch_errors":
            return cache_fetch_errors.labels(self.cache, kind)
        raise ValueError(f"unknown cache event {event!r}; one of {self._EVENTS}")

    def record(self, kind: str, event: str) -> None:
        child = self._children.get((kind, event))
        if child is None:  # labels() returns the same child to racing threads
            child = self._children.setdefault((kind, event), self._child(kind, event))
        child.inc()

    def _totals(self) -> dict[str, dict[str, float]]:
        """This process's counts of this cache: {kind: {event: count}}."""
        totals: dict[str, dict[str, float]] = {}
        for (cache, kind, result), values in _values(
            cache_lookups, "cache", "kind", "result"
        ).items():
            if cache == self.cache:
                event = "hits" if result == "hit" else "misses"
                totals.setdefault(kind, {})[event] = values.get("_total", 0.0)
        for metric, event in ((cache_fetches, "fetches"), (cache_fetch_errors, "fetch_errors")):
            for (cache, kind), values in _values(metric, "cache", "kind").items():
                if cache == self.cache:
                    totals.setdefault(kind, {})[event] = values.get("_total", 0.0)
        return totals

    def snapshot(self) -> dict[str, CacheCounts]:
        """Counts since the last :meth:`reset` (or since the process started), by kind."""
        with self._lock:
            baseline = self._baseline
        result = {}
        for kind, counts in sorted(self._totals().items()):
            before = baseline.get(kind, {})
            since = {e: round(counts.get(e, 0.0) - before.get(e, 0.0)) for e in self._EVENTS}
            if any(since.values()):
                result[kind] = CacheCounts(**since)
        return result

    def reset(self) -> None:
        """Start later snapshots from zero (the Prometheus counters keep counting)."""
        totals = self._totals()
        with self._lock:
            self._baseline = totals


# The market-data cache's counters (by DataType value).
market_data_cache = CacheStatistics("market_data")


# Results served by AnalysisRepository.get_latest_valid (a hit) or not (a miss).
analysis_cache = CacheStatistics("analysis")


# -- statements ----------------------------------------------------------------------


@dataclass(frozen=True)
class QueryTiming:
    """Statements of one kind on one table, since the last reset, in this process.

    ``p50_ms`` and ``p95_ms`` are estimates from the histogram's buckets (linear
    interpolation within a bucket, as Prometheus' ``histogram_quantile`` does),
    not exact percentiles; ``None`` beyond the last finite bucket (10 s).
    """

    table: str
    kind: str
    count: int
    total_ms: float
    mean_ms: float
    p50_ms: float | None
    p95_ms: float | None


_KIND = re.compile(r"^\s*(\w+)")
_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE|JOIN)\s+"?(\w+)', re.IGNORECASE)


# The start of a statement names its table: the cache keeps no more of it than this.
_SHAPE_PREFIX = 2000


def statement_shape(statement: str) -> tuple[str, str]:
    """(table, kind) of a SQL statement: ("users", "SELECT"); "-" when there is no table,
    "other" for a table that is not this package's (labels stay few, whatever SQL an
    application runs)."""
    return _shape(statement[:_SHAPE_PREFIX])


@functools.lru_cache(maxsize=4096)  # statements repeat: parse each text once
def _shape(statement: str) -> tuple[str, str]:
    kind = (_KIND.match(statement) or ["", "OTHER"])[1].upper()
    table = _TABLE.search(statement)
    if table is None:
        return "-", kind
    name = table[1].lower()
    return (name if name in _known_tables() else "other"), kind


@functools.cache
def _known_tables() -> frozenset[str]:
    from database.models.base import Base  # imported late: the models import this module

    return frozenset({*Base.metadata.tables, "price_history_staging", "alembic_version"})


def bucket_quantile(fraction: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Estimate a quantile from cumulative (upper bound, count) buckets, like
    Prometheus' ``histogram_quantile``; ``None`` when empty or in the +Inf bucket."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = fraction * ordered[-1][1]
    lower, below = 0.0, 0.0
    for upper, cumulative in ordered:
        if cumulative >= rank and cumulative > below:
            if math.isinf(upper):
                return None
            return lower + (upper - lower) * (rank - below) / (cumulative - below)
        lower, below = upper, cumulative
    return None


class QueryStatistics:
    """Statement counts and latencies per (table, kind), in prometheus_client metrics.

    ``record`` costs a cached parse of the statement's shape, a dictionary
    look-up and two metric updates. Statements slower than the manager's
    ``slow_query_ms`` are logged by :class:`DatabaseManager` (without their
    parameters).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._baseline: dict[tuple[str, ...], dict[str, float]] = {}

    def record(self, statement: str, seconds: float) -> None:
        if not 0 <= seconds < math.inf:  # NaN or a clock that went back: not a duration
            return
        key = statement_shape(statement)
        children = self._children.get(key)
        if children is None:  # labels() returns the same children to racing threads
            children = self._children.setdefault(
                key, (query_duration.labels(*key), query_count.labels(*key))
            )
        children[0].observe(seconds)
        children[1].inc()

    def snapshot(self) -> list[QueryTiming]:
        """Per (table, kind): count, total and mean since the last :meth:`reset`, and
        p50/p95 estimated from the histogram's buckets."""
        with self._lock:
            baseline = self._baseline
        timings = []
        for (table, kind), values in sorted(
            _minus(_values(query_duration, "table", "kind"), baseline).items()
        ):
            count = round(values.get("_count", 0.0))
            if count <= 0:
                continue
            seconds = max(values.get("_sum", 0.0), 0.0)
            buckets = [
                (float(name[3:]), value) for name, value in values.items() if name.startswith("le=")
            ]
            p50, p95 = bucket_quantile(0.50, buckets), bucket_quantile(0.95, buckets)
            timings.append(
                QueryTiming(
                    table=table,
                    kind=kind,
                    count=count,
                    total_ms=seconds * 1000,
                    mean_ms=seconds * 1000 / count,
                    p50_ms=None if p50 is None else p50 * 1000,
                    p95_ms=None if p95 is None else p95 * 1000,
                )
            )
        return timings

    def reset(self) -> None:
        """Start later snapshots from zero (the Prometheus metrics keep counting)."""
        values = _values(query_duration, "table", "kind")
        with self._lock:
            self._baseline = values


# Every engine a DatabaseManager makes reports here.
queries = QueryStatistics()
