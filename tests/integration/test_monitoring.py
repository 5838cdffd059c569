"""Monitoring: statement timings, the slow-query log, pools, hit rates and freshness."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
from sqlalchemy import text

from database import DatabaseManager, monitoring
from database.repositories import AnalysisRepository, MarketDataRepository, PriceHistoryRepository
from database.stats import collect
from tests.conftest import RawSQL


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
    assert 0 < timing.p50_ms <= timing.p95_ms <= timing.max_ms


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
    assert (
        'buffetbot_db_cache_lookups_total{cache="market_data",kind="news",result="hit"} 1.0'
        in text_format
    )
