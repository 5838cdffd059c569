"""What the operators look at: query timings, pools, cache hit rates and data freshness.

``collect(manager)`` gathers a typed :class:`Snapshot`; it renders as a dict
(for JSON) or as Prometheus text. Query timings and hit rates are counted in
this process (``database.monitoring``, prometheus_client metrics); freshness is
read from the database, and on PostgreSQL so are the database's own statement
statistics (``pg_stat_statements``, every process's statements, when the
extension is installed).

An application that serves its metrics registers :class:`DatabaseCollector`
to add the pool and freshness gauges, read at scrape time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import bindparam, func, select, text

from database import monitoring
from database.connection import DatabaseManager, PoolStatus
from database.exceptions import DatabaseError
from database.models import AnalysisResult, MarketDataCache
from database.models.base import utcnow
from database.monitoring import CacheCounts, QueryTiming
from database.replicas import ReplicaStatus
from database.repositories.latest import latest_dates_statement
from database.repositories.upsert import dialect_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Freshness:
    latest_price_dates: dict[str, dt.date]  # by ticker, in alphabetical order
    oldest_cache_entry: dt.datetime | None
    newest_cache_entry: dt.datetime | None
    expired_cache_entries: int
    expired_analysis_results: int


ENABLE_PG_STAT_STATEMENTS = """pg_stat_statements is not installed in this database. To enable it:
  1. in postgresql.conf: shared_preload_libraries = 'pg_stat_statements'
  2. restart PostgreSQL
  3. in this database: CREATE EXTENSION pg_stat_statements;"""
POSTGRESQL_ONLY = "pg_stat_statements is PostgreSQL-only: SQLite keeps no statement statistics."
HIDDEN_TEXT = "<insufficient privilege>"  # what PostgreSQL shows for other roles' statements


@dataclass(frozen=True)
class DatabaseStatement:
    """One normalised statement as pg_stat_statements counts it (all processes, all roles)."""

    query: str  # whitespace collapsed; HIDDEN_TEXT when the role may not read it
    calls: int
    total_ms: float
    mean_ms: float
    rows: int

    @property
    def hidden(self) -> bool:
        return self.query == HIDDEN_TEXT


@dataclass(frozen=True)
class DatabaseStatements:
    """The database's own view of the statements run in it: ``available`` is False on
    SQLite and where the extension is missing, and ``note`` then says why (how to
    enable it); ``statements`` are the top ones by total execution time."""

    available: bool
    note: str | None
    statements: list[DatabaseStatement]


@dataclass(frozen=True)
class Snapshot:
    backend: str
    url: str
    collected_at: dt.datetime
    queries: list[QueryTiming]  # this process's statements
    pool: PoolStatus
    caches: dict[str, dict[str, CacheCounts]]
    freshness: Freshness
    database_statements: DatabaseStatements
    replicas: list[ReplicaStatus] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (dates as ISO strings, hit rates included)."""
        data: dict[str, Any] = _jsonable(dataclasses.asdict(self))
        for cache, kinds in self.caches.items():
            for kind, counts in kinds.items():
                data["caches"][cache][kind]["hit_rate"] = counts.hit_rate
        return data

    def to_prometheus(self) -> str:
        """Prometheus' text format: this process's metrics (``database.monitoring``, as
        the default registry exposes them) and the snapshot's pool and freshness gauges."""
        registry = CollectorRegistry()
        for metric in (
            monitoring.query_count,
            monitoring.query_duration,
            monitoring.cache_lookups,
            monitoring.cache_fetches,
            monitoring.cache_fetch_errors,
        ):
            registry.register(metric)
        registry.register(_Gauges(self.pool, self.freshness, self.replicas))
        return generate_latest(registry).decode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


class _Gauges:
    """Pool and freshness, as metric families of values read beforehand."""

    def __init__(
        self,
        pool: PoolStatus,
        freshness: Freshness | None,
        replicas: Sequence[ReplicaStatus] = (),
    ) -> None:
        self.pool, self.freshness = pool, freshness  # freshness None: it could not be read
        self.replicas = replicas

    def collect(self) -> Iterator[Metric]:
        pool = GaugeMetricFamily(
            "buffetbot_db_pool_connections", "Pool connections", labels=["state"]
        )
        pool.add_metric(["size"], self.pool.size)
        pool.add_metric(["checked_out"], self.pool.checked_out)
        pool.add_metric(["overflow"], self.pool.overflow)
        yield pool
        at_capacity = CounterMetricFamily(
            "buffetbot_db_pool_checkouts_at_capacity",
            "Checkouts that took the last free connection",
        )
        at_capacity.add_metric([], self.pool.checkouts_at_capacity)
        yield at_capacity
        usable = GaugeMetricFamily(
            "buffetbot_db_replica_usable",
            "1 when readonly sessions may use the replica (current, reachable), else 0",
            labels=["replica", "state"],
        )
        lag = GaugeMetricFamily(
            "buffetbot_db_replica_lag_seconds",
            "Seconds the replica was behind the primary at its last check",
            labels=["replica"],
        )
        for replica in self.replicas:
            usable.add_metric([replica.url, replica.state], 1 if replica.state == "ok" else 0)
            if replica.lag_s is not None:
                lag.add_metric([replica.url], replica.lag_s)
        yield usable
        yield lag
        if self.freshness is None:
            return
        latest = GaugeMetricFamily(
            "buffetbot_db_latest_price_timestamp",
            "Latest price date (epoch seconds)",
            labels=["ticker"],
        )
        for ticker, day in self.freshness.latest_price_dates.items():
            latest.add_metric([ticker], dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())
        yield latest
        expired = GaugeMetricFamily(
            "buffetbot_db_expired_rows", "Expired rows awaiting cleanup", labels=["table"]
        )
        expired.add_metric(["market_data_cache"], self.freshness.expired_cache_entries)
        expired.add_metric(["analysis_results"], self.freshness.expired_analysis_results)
        yield expired


class DatabaseCollector:
    """A prometheus_client collector of the pool and freshness gauges of ``manager``,
    read at scrape time: ``REGISTRY.register(DatabaseCollector(manager))``.

    Each scrape runs the freshness queries (three SELECTs, each index-bounded). The pool
    gauges are those of the process that answers the scrape.
    """

    def __init__(self, manager: DatabaseManager) -> None:
        self.manager = manager

    def describe(self) -> list[Metric]:
        """The metric names, without a query: the registry refuses a second collector
        of the same names (a duplicate would make Prometheus reject every scrape)."""
        empty = Freshness({}, None, None, 0, 0)
        return [*_Gauges(PoolStatus(0, 0, 0, 0, 0), empty).collect(), self._up(True)]

    def collect(self) -> Iterator[Metric]:
        """The gauges; with the database unreachable, the pool's and ``up`` 0 (never
        an error: it would cost the scrape every other metric of the process)."""
        try:
            freshness: Freshness | None = read_freshness(self.manager)
        except DatabaseError as error:
            logger.warning("metrics without freshness: %s", error)
            freshness = None
        replicas = self.manager.replica_status()  # as last checked by the sessions
        yield from _Gauges(self.manager.pool_status(), freshness, replicas).collect()
        yield self._up(freshness is not None)

    @staticmethod
    def _up(reachable: bool) -> Metric:
        up = GaugeMetricFamily(
            "buffetbot_db_up", "1 when the last scrape could read the database, else 0"
        )
        up.add_metric([], 1 if reachable else 0)
        return up


def read_freshness(manager: DatabaseManager) -> Freshness:
    """The latest price per ticker (alphabetical), cache ages and expired rows."""
    now = utcnow()
    with manager.get_session(system=True) as session:
        # A loose index scan: one seek per ticker, however long the history.
        latest = dict(session.execute(latest_dates_statement(dialect_name(session), None)).all())
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
    return Freshness(
        dict(sorted(latest.items())),  # the same order whatever the backend's collation
        oldest,
        newest,
        int(expired_cache or 0),
        int(expired_analyses or 0),
    )


def read_database_statements(manager: DatabaseManager, top: int = 10) -> DatabaseStatements:
    """The ``top`` statements of this database by total execution time, from
    ``pg_stat_statements``; never raises for a missing extension or privilege."""
    if manager.backend != "postgresql":
        return DatabaseStatements(False, POSTGRESQL_ONLY, [])
    try:
        with manager.get_session(system=True) as session:
            schema = session.scalar(
                text(
                    "SELECT n.nspname FROM pg_extension e "
                    "JOIN pg_namespace n ON n.oid = e.extnamespace "
                    "WHERE e.extname = 'pg_stat_statements'"
                )
            )
            if schema is None:
                return DatabaseStatements(False, ENABLE_PG_STAT_STATEMENTS, [])
            old = int(session.scalar(text("SHOW server_version_num")) or 0) < 130000
            total, mean = (
                ("total_time", "mean_time") if old else ("total_exec_time", "mean_exec_time")
            )
            view = '"' + str(schema).replace('"', '""') + '".pg_stat_statements'
            # The identifiers come from the catalog and constants.
            query = (
                f"SELECT query, calls, {total}, {mean}, rows FROM {view} "  # noqa: S608
                "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                f"ORDER BY {total} DESC LIMIT :top"
            )
            rows = session.execute(text(query).bindparams(bindparam("top", top))).all()
    except Exception as error:  # loaded too late, no privilege: say so, do not fail
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "shared_preload_libraries" in reason:
            return DatabaseStatements(False, ENABLE_PG_STAT_STATEMENTS, [])
        return DatabaseStatements(False, f"pg_stat_statements could not be read: {reason}", [])
    statements = [
        DatabaseStatement(
            query=" ".join(str(query or HIDDEN_TEXT).split()),
            calls=int(calls),
            total_ms=float(total_ms),
            mean_ms=float(mean_ms),
            rows=int(count),
        )
        for query, calls, total_ms, mean_ms, count in rows
    ]
    note = None
    if any(s.hidden for s in statements):
        note = (
            "some statements are other roles': their text is hidden unless this role "
            "has pg_read_all_stats (GRANT pg_read_all_stats TO <role>;)"
        )
    return DatabaseStatements(True, note, statements)


def shorten(query: str, width: int) -> str:
    """``query`` on one line in at most ``width`` characters, cut between words (an
    ellipsis marks the cut; a single word longer than ``width`` is cut inside)."""
    flat = " ".join(query.split())
    if len(flat) <= width:
        return flat
    cut = flat[: max(width - 1, 1)]
    if flat[len(cut)] != " " and " " in cut:
        cut = cut[: cut.rindex(" ")]
    return re.sub(r"[\s,(]+$", "", cut) + "…"


def collect(manager: DatabaseManager, *, top_statements: int = 10) -> Snapshot:
    """Take a snapshot (the queries run on ``manager``'s sync engine)."""
    freshness = read_freshness(manager)
    return Snapshot(
        backend=manager.backend,
        url=manager.urls.safe(),
        collected_at=utcnow(),
        queries=monitoring.queries.snapshot(),
        pool=manager.pool_status(),
        caches={
            "market_data": monitoring.market_data_cache.snapshot(),
            "analysis": monitoring.analysis_cache.snapshot(),
        },
        freshness=freshness,
        database_statements=read_database_statements(manager, top_statements),
        replicas=manager.replica_status(check=True),
    )
