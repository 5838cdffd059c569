"""Monitoring: statement timings, the slow-query log, pools, hit rates and freshness."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from sqlalchemy import text
from sqlalchemy.engine import make_url

from database import DatabaseManager, migrate, monitoring
from database.repositories import AnalysisRepository, MarketDataRepository, PriceHistoryRepository
from database.stats import (
    ENABLE_PG_STAT_STATEMENTS,
    POSTGRESQL_ONLY,
    DatabaseCollector,
    collect,
    read_database_statements,
    shorten,
)
from tests.conftest import RawSQL, recreate_database

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_counters() -> None:
    monitoring.queries.reset()
    monitoring.market_data_cache.reset()
    monitoring.analysis_cache.reset()


def test_statements_are_timed_by_table_and_kind(db: DatabaseManager) -> None:
    with db.get_session() as session:
        for _ in range(3):
            AnalysisRepository().count(session, ticker="AAPL")
    timing = next(
        q
        for q in monitoring.queries.snapshot()
        if (q.table, q.kind) == ("analysis_results", "SELECT")
    )
    assert timing.count == 3
    assert timing.total_ms > 0
    assert timing.mean_ms == pytest.approx(timing.total_ms / 3)
    assert timing.p50_ms is not None
    assert timing.p95_ms is not None
    assert 0 < timing.p50_ms <= timing.p95_ms


def test_statements_are_prometheus_histograms_in_the_default_registry(db: DatabaseManager) -> None:
    labels = {"table": "analysis_results", "kind": "SELECT"}
    before = REGISTRY.get_sample_value("buffetbot_db_query_duration_seconds_count", labels) or 0
    seconds = REGISTRY.get_sample_value("buffetbot_db_query_duration_seconds_sum", labels) or 0
    with db.get_session() as session:
        for _ in range(4):
            AnalysisRepository().count(session, ticker="AAPL")
    after = REGISTRY.get_sample_value("buffetbot_db_query_duration_seconds_count", labels)
    assert after == before + 4
    assert REGISTRY.get_sample_value("buffetbot_db_queries_total", labels) == after
    assert (REGISTRY.get_sample_value("buffetbot_db_query_duration_seconds_sum", labels) or 0) > (
        seconds
    )
    exposed = generate_latest(REGISTRY).decode()
    assert "# TYPE buffetbot_db_query_duration_seconds histogram" in exposed
    assert (
        'buffetbot_db_query_duration_seconds_bucket{kind="SELECT",le="0.0005",'
        'table="analysis_results"}' in exposed
    )
    assert 'le="10.0",table="analysis_results"}' in exposed
    assert "quantile" not in exposed  # no hand-computed percentiles


def test_reset_starts_snapshots_from_zero_but_the_counters_keep_counting(
    db: DatabaseManager,
) -> None:
    labels = {"table": "analysis_results", "kind": "SELECT"}
    with db.get_session() as session:
        AnalysisRepository().count(session, ticker="AAPL")
        AnalysisRepository().get_latest_valid(session, "AAPL", "risk_analysis")
    total = REGISTRY.get_sample_value("buffetbot_db_queries_total", labels)
    assert any(q.table == "analysis_results" for q in monitoring.queries.snapshot())
    assert monitoring.analysis_cache.snapshot()["risk_analysis"].misses == 1
    monitoring.queries.reset()
    monitoring.analysis_cache.reset()
    assert not any(q.table == "analysis_results" for q in monitoring.queries.snapshot())
    assert monitoring.analysis_cache.snapshot() == {}
    assert REGISTRY.get_sample_value("buffetbot_db_queries_total", labels) == total
    with db.get_session() as session:
        AnalysisRepository().get_latest_valid(session, "AAPL", "risk_analysis")
    assert monitoring.analysis_cache.snapshot()["risk_analysis"].misses == 1


def test_percentiles_are_estimated_from_the_buckets() -> None:
    # 10 observations: 4 up to 1 ms, 4 more up to 2 ms, 2 more up to 4 ms.
    buckets = [(0.001, 4.0), (0.002, 8.0), (0.004, 10.0), (float("inf"), 10.0)]
    assert monitoring.bucket_quantile(0.5, buckets) == pytest.approx(0.00125)
    assert monitoring.bucket_quantile(0.95, buckets) == pytest.approx(0.0035)
    assert monitoring.bucket_quantile(0.5, [(0.001, 0.0), (float("inf"), 0.0)]) is None
    assert monitoring.bucket_quantile(0.99, [(0.001, 1.0), (float("inf"), 10.0)]) is None


def test_an_unknown_cache_event_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown cache event"):
        monitoring.market_data_cache.record("news", "hit")


CHILD = textwrap.dedent(
    """
    import os, sys
    from sqlalchemy import text
    from prometheus_client import values
    from database import DatabaseManager, monitoring

    assert values.ValueClass is not values.MutexValue, "not in multiprocess mode"
    manager = DatabaseManager(sys.argv[1])
    with manager.get_session() as session:
        for _ in range(3):
            session.execute(text("SELECT count(*) FROM analysis_results"))
    manager.close()
    monitoring.analysis_cache.record("risk_analysis", "hits")
    mine = [q for q in monitoring.queries.snapshot() if q.table == "analysis_results"]
    print(os.getpid(), mine[0].count)
    """
)


def test_worker_processes_aggregate_in_multiprocess_mode(database_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DB_")}
    environment["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    pids = []
    for _ in range(2):  # two workers, one after the other (each its own process)
        result = subprocess.run(
            [sys.executable, "-c", CHILD, database_url],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        pid, own_count = result.stdout.split()
        assert own_count == "3"  # a worker's snapshot is its own statements
        pids.append(int(pid))
    assert len(list(folder.glob("histogram_*.db"))) == 2

    def scrape() -> CollectorRegistry:  # what the application's metrics endpoint does
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(folder))
        return registry

    labels = {"table": "analysis_results", "kind": "SELECT"}
    registry = scrape()
    assert registry.get_sample_value("buffetbot_db_query_duration_seconds_count", labels) == 6
    assert registry.get_sample_value("buffetbot_db_queries_total", labels) == 6
    assert (registry.get_sample_value("buffetbot_db_query_duration_seconds_sum", labels) or 0) > 0
    hits = {"cache": "analysis", "kind": "risk_analysis", "result": "hit"}
    assert registry.get_sample_value("buffetbot_db_cache_lookups_total", hits) == 2
    for pid in pids:  # gunicorn's child_exit hook: counters of dead workers stay counted
        mark_process_dead(pid, str(folder))
    assert scrape().get_sample_value("buffetbot_db_queries_total", labels) == 6
    assert 'le="0.0005"' in generate_latest(scrape()).decode()


def test_slow_statements_are_logged_without_their_parameters(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    manager = DatabaseManager(database_url, slow_query_ms=0.000001)
    caplog.set_level(logging.WARNING, logger="database.connection")
    with manager.get_session() as session:
        session.execute(
            text("SELECT count(*) FROM users WHERE email = :email"), {"email": "secret@example.com"}
        )
    manager.close()
    assert "slow query" in caplog.text
    assert "FROM users WHERE email" in caplog.text
    assert "secret@example.com" not in caplog.text


def test_pool_state_and_checkouts_at_capacity(database_url: str) -> None:
    manager = DatabaseManager(database_url, pool_size=1, max_overflow=0)
    with manager.get_session() as session:
        session.execute(text("SELECT 1"))
        busy = manager.pool_status()
    idle = manager.pool_status()
    manager.close()
    assert (busy.size, busy.checked_out) == (1, 1)
    assert idle.checked_out == 0
    assert idle.checkouts >= 1
    assert idle.checkouts_at_capacity >= 1  # the only connection was taken


def test_analysis_cache_hits_and_misses_are_counted(db: DatabaseManager) -> None:
    analyses = AnalysisRepository()
    with db.get_session() as session:
        assert analyses.get_latest_valid(session, "AAPL", "risk_analysis") is None
        analyses.save(session, ticker="AAPL", analysis_type="risk_analysis")
        assert analyses.get_latest_valid(session, "AAPL", "risk_analysis") is not None
    counts = monitoring.analysis_cache.snapshot()["risk_analysis"]
    assert (counts.hits, counts.misses, counts.hit_rate) == (1, 1, 0.5)


def test_a_snapshot_reads_freshness_and_renders(db: DatabaseManager, sql: RawSQL) -> None:
    yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    with db.get_session() as session:
        PriceHistoryRepository().upsert(
            session, [{"date": "2024-05-02", "close": 10}], ticker="AAPL"
        )
        MarketDataRepository().cache_market_data(session, "AAPL", "news", {"n": 1})
        MarketDataRepository().get_cached_data(session, "AAPL", "news")
        AnalysisRepository().save(
            session, ticker="AAPL", analysis_type="risk_analysis", expires_at=yesterday
        )
    snapshot = collect(db)
    assert snapshot.freshness.latest_price_dates == {"AAPL": dt.date(2024, 5, 2)}
    assert snapshot.freshness.expired_analysis_results == 1
    assert snapshot.freshness.expired_cache_entries == 0
    assert snapshot.freshness.oldest_cache_entry is not None
    assert snapshot.caches["market_data"]["news"].hits == 1
    data = json.loads(json.dumps(snapshot.to_dict()))
    assert data["freshness"]["latest_price_dates"] == {"AAPL": "2024-05-02"}
    assert data["caches"]["market_data"]["news"]["hit_rate"] == 1.0
    text_format = snapshot.to_prometheus()
    assert 'buffetbot_db_expired_rows{table="analysis_results"} 1.0' in text_format
    hit = 'buffetbot_db_cache_lookups_total{cache="market_data",kind="news",result="hit"}'
    assert hit in text_format
    assert "# TYPE buffetbot_db_query_duration_seconds histogram" in text_format


def test_tickers_are_listed_in_alphabetical_order(db: DatabaseManager) -> None:
    with db.get_session() as session:
        for ticker in ("^GSPC", "MSFT", "BRKA", "BRK-B", "AAPL"):
            PriceHistoryRepository().upsert(
                session, [{"date": "2024-05-02", "close": 10}], ticker=ticker
            )
    snapshot = collect(db)
    assert list(snapshot.freshness.latest_price_dates) == ["AAPL", "BRK-B", "BRKA", "MSFT", "^GSPC"]
    assert list(snapshot.to_dict()["freshness"]["latest_price_dates"]) == [
        "AAPL",
        "BRK-B",
        "BRKA",
        "MSFT",
        "^GSPC",
    ]


def test_an_application_registers_the_pool_and_freshness_gauges(db: DatabaseManager) -> None:
    with db.get_session() as session:
        PriceHistoryRepository().upsert(
            session, [{"date": "2024-05-02", "close": 10}], ticker="AAPL"
        )
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(db))  # read at scrape time
    latest = registry.get_sample_value("buffetbot_db_latest_price_timestamp", {"ticker": "AAPL"})
    assert latest == dt.datetime(2024, 5, 2, tzinfo=dt.UTC).timestamp()
    assert registry.get_sample_value("buffetbot_db_pool_connections", {"state": "size"}) == 5
    with db.get_session() as session:
        PriceHistoryRepository().upsert(
            session, [{"date": "2024-05-03", "close": 10}], ticker="AAPL"
        )
    latest = registry.get_sample_value("buffetbot_db_latest_price_timestamp", {"ticker": "AAPL"})
    assert latest == dt.datetime(2024, 5, 3, tzinfo=dt.UTC).timestamp()


def test_a_second_collector_of_the_same_metrics_is_refused(db: DatabaseManager) -> None:
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(db))
    # duplicates would make Prometheus reject every scrape of the process
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(DatabaseCollector(db))
    assert registry.get_sample_value("buffetbot_db_up") == 1


def test_an_unreachable_database_costs_the_scrape_only_its_freshness() -> None:
    down = DatabaseManager("postgresql://app@127.0.0.1:9/buffetbot", connect_timeout=2)
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(down))
    try:
        exposed = generate_latest(registry).decode()  # no error
    finally:
        down.close()
    assert registry.get_sample_value("buffetbot_db_up") == 0
    assert "buffetbot_db_pool_connections" in exposed
    assert "buffetbot_db_latest_price_timestamp" not in exposed


def test_long_statements_are_shortened_between_words() -> None:
    query = "SELECT price_history.ticker, price_history.close FROM price_history WHERE x = $1"
    short = shorten(query, 40)
    assert short == "SELECT price_history.ticker…"  # cut between words, no trailing comma
    assert len(short) <= 40
    assert shorten("SELECT   1\n  FROM t", 40) == "SELECT 1 FROM t"
    assert shorten("x" * 50, 10) == "x" * 9 + "…"


# -- the database's own statistics (pg_stat_statements) -------------------------------


def require_preloaded(server_url: str) -> None:
    """Fail under CI, else skip, when the server does not preload pg_stat_statements."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        row = conn.execute("SHOW shared_preload_libraries").fetchone()
    if row is not None and "pg_stat_statements" in row[0]:
        return
    reason = (
        "the PostgreSQL server of TEST_DATABASE_URL does not preload pg_stat_statements: "
        "add shared_preload_libraries = 'pg_stat_statements' to its postgresql.conf and restart"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def statements_url(postgres_server_url: str) -> str:
    """A migrated PostgreSQL database with the pg_stat_statements extension created."""
    require_preloaded(postgres_server_url)
    url = recreate_database(postgres_server_url, "buffetbot_statements")
    migrate.upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")  # the migration's are not the app's
    return url


@pytest.mark.postgresql_only
def test_postgresql_reports_every_process_statements(backend: str, statements_url: str) -> None:
    other = DatabaseManager(statements_url)  # another "process" of the application
    with other.get_session() as session:
        for ticker in ("AAPL", "MSFT", "GOOG"):
            session.execute(
                text("SELECT count(*) FROM analysis_results WHERE ticker = :t"), {"t": ticker}
            )
    other.close()
    manager = DatabaseManager(statements_url)
    try:
        found = read_database_statements(manager, top=50)
    finally:
        manager.close()
    assert found.available is True
    mine = [s for s in found.statements if "FROM analysis_results WHERE ticker" in s.query]
    assert len(mine) == 1  # normalised: one entry, its parameter as $1
    assert "$1" in mine[0].query
    assert mine[0].calls == 3
    assert mine[0].rows == 3
    assert mine[0].total_ms >= 0
    assert len(found.statements) <= 50
    totals = [s.total_ms for s in found.statements]
    assert totals == sorted(totals, reverse=True)


@pytest.mark.postgresql_only
def test_without_the_extension_the_report_says_how_to_enable_it(db: DatabaseManager) -> None:
    with psycopg.connect(
        db.urls.sync_url.set(drivername="postgresql").render_as_string(hide_password=False)
    ) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"
        ).fetchone() == (0,)
    found = read_database_statements(db)
    assert (found.available, found.statements) == (False, [])
    assert found.note == ENABLE_PG_STAT_STATEMENTS
    assert "shared_preload_libraries = 'pg_stat_statements'" in ENABLE_PG_STAT_STATEMENTS
    assert "CREATE EXTENSION pg_stat_statements;" in ENABLE_PG_STAT_STATEMENTS
    assert collect(db).to_dict()["database_statements"]["note"] == ENABLE_PG_STAT_STATEMENTS


@pytest.mark.sqlite_only
def test_on_sqlite_the_database_statements_are_postgresql_only(db: DatabaseManager) -> None:
    found = collect(db).database_statements
    assert (found.available, found.note, found.statements) == (False, POSTGRESQL_ONLY, [])


@pytest.mark.postgresql_only
def test_other_roles_statements_show_as_hidden(backend: str, statements_url: str) -> None:
    reader = "buffetbot_stats_reader"
    with psycopg.connect(statements_url, autocommit=True) as conn:
        conn.execute("SELECT count(*) FROM users")  # a statement of the superuser
        try:
            conn.execute(f"DROP ROLE IF EXISTS {reader}")
            conn.execute(f"CREATE ROLE {reader} LOGIN")
        except psycopg.errors.InsufficientPrivilege:
            pytest.skip("the test role may not create roles")
    manager = DatabaseManager(make_url(statements_url).set(username=reader))
    try:
        found = read_database_statements(manager, top=100)
    finally:
        manager.close()
        with psycopg.connect(statements_url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {reader}")
    assert found.available is True
    assert any(s.hidden for s in found.statements)
    assert found.note is not None
    assert "pg_read_all_stats" in found.note


def test_labels_stay_few_whatever_sql_the_application_runs() -> None:
    before = len(monitoring.queries.snapshot())
    template = "SELECT * FROM app_table_N WHERE x = 1"  # 300 tables of an application's
    for n in range(300):
        monitoring.queries.record(template.replace("N", str(n)), 0.001)
    monitoring.queries.record("SELECT 1 FROM users " + "x" * 5_000_000, 0.001)  # huge text
    monitoring.queries.record("SELECT * FROM users", float("nan"))  # not a duration
    shapes = {(q.table, q.kind): q for q in monitoring.queries.snapshot()}
    assert len(shapes) <= before + 2
    assert shapes[("other", "SELECT")].count == 300
    assert shapes[("users", "SELECT")].count == 1
    assert shapes[("users", "SELECT")].total_ms == pytest.approx(1.0)
