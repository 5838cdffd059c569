"""What the operators look at: query timings, pools, cache hit rates and data freshness.

``collect(manager)`` gathers a typed :class:`Snapshot`; it renders as a dict
(for JSON) or as Prometheus text. Query timings and hit rates are counted in
this process (``database.monitoring``); freshness is read from the database.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select

from database import monitoring
from database.connection import DatabaseManager, PoolStatus
from database.models import AnalysisResult, MarketDataCache, PriceHistory
from database.models.base import utcnow
from database.monitoring import CacheCounts, QueryTiming


@dataclass(frozen=True)
class Freshness:
    latest_price_dates: dict[str, dt.date]
    oldest_cache_entry: dt.datetime | None
    newest_cache_entry: dt.datetime | None
    expired_cache_entries: int
    expired_analysis_results: int


@dataclass(frozen=True)
class Snapshot:
    backend: str
    url: str
    collected_at: dt.datetime
    queries: list[QueryTiming]
    pool: PoolStatus
    caches: dict[str, dict[str, CacheCounts]]
    freshness: Freshness

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (dates as ISO strings, hit rates included)."""
        data: dict[str, Any] = _jsonable(dataclasses.asdict(self))
        for cache, kinds in self.caches.items():
            for kind, counts in kinds.items():
                data["caches"][cache][kind]["hit_rate"] = counts.hit_rate
        return data

    def to_prometheus(self) -> str:
        """The snapshot in Prometheus' text exposition format."""
        registry = CollectorRegistry()
        registry.register(_Collector(self))
        return generate_latest(registry).decode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


class _Collector:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Any:
        s = self.snapshot
        count = CounterMetricFamily(
            "buffetbot_db_queries", "Statements executed", labels=["table", "kind"]
        )
        latency = GaugeMetricFamily(
            "buffetbot_db_query_seconds", "Statement latency", labels=["table", "kind", "quantile"]
        )
        for q in s.queries:
            count.add_metric([q.table, q.kind], q.count)
            for quantile, value in (("0.5", q.p50_ms), ("0.95", q.p95_ms), ("1", q.max_ms)):
                latency.add_metric([q.table, q.kind, quantile], value / 1000)
        yield count
        yield latency
        pool = GaugeMetricFamily(
            "buffetbot_db_pool_connections", "Pool connections", labels=["state"]
        )
        pool.add_metric(["size"], s.pool.size)
        pool.add_metric(["checked_out"], s.pool.checked_out)
        pool.add_metric(["overflow"], s.pool.overflow)
        yield pool
        at_capacity = CounterMetricFamily(
            "buffetbot_db_pool_checkouts_at_capacity",
            "Checkouts that took the last free connection",
        )
        at_capacity.add_metric([], s.pool.checkouts_at_capacity)
        yield at_capacity
        lookups = CounterMetricFamily(
            "buffetbot_db_cache_lookups", "Cache lookups", labels=["cache", "kind", "result"]
        )
        for cache, kinds in s.caches.items():
            for kind, counts in kinds.items():
                lookups.add_metric([cache, kind, "hit"], counts.hits)
                lookups.add_metric([cache, kind, "miss"], counts.misses)
        yield lookups
        latest = GaugeMetricFamily(
            "buffetbot_db_latest_price_timestamp",
            "Latest price date (epoch seconds)",
            labels=["ticker"],
        )
        for ticker, day in s.freshness.latest_price_dates.items():
            latest.add_metric([ticker], dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())
        yield latest
        expired = GaugeMetricFamily(
            "buffetbot_db_expired_rows", "Expired rows awaiting cleanup", labels=["table"]
        )
        expired.add_metric(["market_data_cache"], s.freshness.expired_cache_entries)
        expired.add_metric(["analysis_results"], s.freshness.expired_analysis_results)
        yield expired


def collect(manager: DatabaseManager) -> Snapshot:
    """Take a snapshot (freshness queries run on ``manager``'s sync engine)."""
    now = utcnow()
    with manager.get_session(system=True) as session:
        latest = dict(
            session.execute(
                select(PriceHistory.ticker, func.max(PriceHistory.date)).group_by(
                    PriceHistory.ticker
                )
            ).all()
        )
        oldest, newest, expired_cache = session.execute(
            select(
                func.min(MarketDataCache.cached_at),
                func.max(MarketDataCache.cached_at),
                func.count().filter(MarketDataCache.expires_at <= now),
            )
        ).one()
        expired_analyses = session.scalar(
            select(func.count()).select_from(AnalysisResult).where(AnalysisResult.expires_at <= now)
        )
    return Snapshot(
        backend=manager.backend,
        url=manager.urls.safe(),
        collected_at=now,
        queries=monitoring.queries.snapshot(),
        pool=manager.pool_status(),
        caches={
            "market_data": monitoring.market_data_cache.snapshot(),
            "analysis": monitoring.analysis_cache.snapshot(),
        },
        freshness=Freshness(
            latest, oldest, newest, int(expired_cache or 0), int(expired_analyses or 0)
        ),
    )
