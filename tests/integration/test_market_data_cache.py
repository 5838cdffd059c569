"""The market-data cache: typed payloads, get_or_fetch, and hit/miss counters, on both backends."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import threading
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from database import DatabaseManager
from database.models import DataType
from database.monitoring import market_data_cache as statistics
from database.repositories import MarketDataRepository
from database.services import get_or_fetch
from database.services import market_data as service
from tests.conftest import RawSQL
from tests.integration.conftest import UnitOfWork

# Every PostgreSQL test here runs once more through PgBouncer (transaction pooling).
pytestmark = pytest.mark.pgbouncer

DATA = Path(__file__).resolve().parents[1] / "data"
cache = MarketDataRepository()


@pytest.fixture(autouse=True)
def fresh_counters() -> None:
    statistics.reset()


def statement_frame() -> pd.DataFrame:
    frame = pd.read_csv(DATA / "fundamentals/NVDA-financials.csv", index_col=0)
    frame.columns = pd.to_datetime(frame.columns)
    return frame


async def test_a_financial_statement_frame_round_trips_through_the_database(
    uow: UnitOfWork,
) -> None:
    frame = statement_frame()
    await uow(
        cache.cache_market_data,
        "NVDA",
        DataType.INCOME_STATEMENT,
        frame,
        parameters={"freq": "yearly"},
    )
    back = await uow(cache.get_cached_data, "NVDA", DataType.INCOME_STATEMENT, {"freq": "yearly"})
    pd.testing.assert_frame_equal(back, frame)


async def test_info_dicts_with_decimals_and_dates_round_trip(uow: UnitOfWork) -> None:
    info = {"currentPrice": Decimal("222.77"), "exDividendDate": dt.date(2024, 8, 12), "beta": 1.24}
    await uow(cache.cache_market_data, "AAPL", "stock_info", info)
    assert await uow(cache.get_cached_data, "AAPL", "stock_info") == info


async def test_get_or_fetch_fetches_on_a_miss_and_not_on_a_hit(
    uow: UnitOfWork, sql: RawSQL
) -> None:
    calls: list[int] = []

    def fetch() -> dict[str, int]:
        calls.append(1)
        return {"price": 100}

    assert await uow(cache.get_or_fetch, "AAPL", "stock_info", fetch, ttl=60) == {"price": 100}
    assert await uow(cache.get_or_fetch, "AAPL", "stock_info", fetch, ttl=60) == {"price": 100}
    assert len(calls) == 1
    assert sql.count("market_data_cache") == 1
    counts = statistics.snapshot()["stock_info"]
    assert (counts.hits, counts.misses, counts.fetches, counts.fetch_errors) == (1, 1, 1, 0)
    assert counts.hit_rate == 0.5


async def test_an_expired_entry_is_fetched_again(uow: UnitOfWork, sql: RawSQL) -> None:
    values = iter([{"v": 1}, {"v": 2}])
    await uow(cache.get_or_fetch, "AAPL", "news", lambda: next(values))
    sql.execute("UPDATE market_data_cache SET expires_at = cached_at")
    assert await uow(cache.get_or_fetch, "AAPL", "news", lambda: next(values)) == {"v": 2}
    assert sql.count("market_data_cache") == 1


async def test_a_failing_fetch_stores_nothing_and_raises(uow: UnitOfWork, sql: RawSQL) -> None:
    def fetch() -> object:
        raise ConnectionError("yfinance is down")

    with pytest.raises(ConnectionError, match="down"):
        await uow(cache.get_or_fetch, "AAPL", "news", fetch)
    assert sql.count("market_data_cache") == 0
    assert statistics.snapshot()["news"].fetch_errors == 1


async def test_concurrent_tasks_share_one_fetch(db: DatabaseManager, sql: RawSQL) -> None:
    calls: list[int] = []

    async def fetch() -> pd.DataFrame:
        calls.append(1)
        await asyncio.sleep(0.1)
        return statement_frame()

    async def ask() -> pd.DataFrame:
        async with db.get_async_session() as session:
            frame: pd.DataFrame = await cache.async_get_or_fetch(
                session, "NVDA", "balance_sheet", fetch
            )
            return frame

    frames = await asyncio.gather(*(ask() for _ in range(5)))
    assert len(calls) == 1
    for frame in frames:
        pd.testing.assert_frame_equal(frame, statement_frame())
    assert sql.count("market_data_cache") == 1


async def test_concurrent_tasks_all_see_a_failing_fetch(db: DatabaseManager, sql: RawSQL) -> None:
    calls: list[int] = []

    async def fetch() -> object:
        calls.append(1)
        await asyncio.sleep(0.05)
        raise TimeoutError("rate limited")

    async def ask() -> object:
        async with db.get_async_session() as session:
            return await cache.async_get_or_fetch(session, "AAPL", "news", fetch)

    results = await asyncio.gather(*(ask() for _ in range(3)), return_exceptions=True)
    assert len(calls) == 1
    assert all(isinstance(r, TimeoutError) for r in results)
    assert sql.count("market_data_cache") == 0


def test_concurrent_threads_share_one_fetch(db: DatabaseManager, sql: RawSQL) -> None:
    calls: list[int] = []
    started = threading.Barrier(4)

    def fetch() -> dict[str, int]:
        calls.append(1)
        threading.Event().wait(0.2)
        return {"v": 1}

    results: list[object] = []

    def ask() -> None:
        started.wait()
        with db.get_session() as session:
            results.append(cache.get_or_fetch(session, "AAPL", "analyst_data", fetch))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [{"v": 1}] * 4
    assert len(calls) == 1
    assert sql.count("market_data_cache") == 1


async def test_hits_keep_working_across_commits_and_rollbacks_of_one_session(
    db: DatabaseManager,
) -> None:
    async with db.get_async_session() as session:
        await cache.async_cache_market_data(session, "AAPL", "news", {"n": 1})
        assert await cache.async_get_cached_data(session, "AAPL", "news") == {"n": 1}
        await session.commit()  # the transaction, and maybe the connection, changes
        assert await cache.async_get_cached_data(session, "AAPL", "news") == {"n": 1}
        await cache.async_cache_market_data(session, "AAPL", "news", {"n": 2})
        assert await cache.async_get_cached_data(session, "AAPL", "news") == {"n": 2}
        await session.rollback()
        assert await cache.async_get_cached_data(session, "AAPL", "news") == {"n": 1}


async def test_a_cancelled_fetching_task_does_not_cancel_those_waiting_for_it(
    db: DatabaseManager, sql: RawSQL
) -> None:
    calls: list[int] = []

    async def fetch() -> dict[str, int]:
        calls.append(1)
        await asyncio.sleep(0.2)
        return {"price": len(calls)}

    async def ask() -> object:
        async with db.get_async_session() as session:
            return await cache.async_get_or_fetch(session, "AAPL", "stock_info", fetch)

    first = asyncio.create_task(ask())
    await asyncio.sleep(0.05)  # the first task is fetching
    waiting = [asyncio.create_task(ask()) for _ in range(3)]
    await asyncio.sleep(0.05)
    first.cancel()
    results = await asyncio.gather(*waiting)
    assert first.cancelled()
    assert results == [{"price": 2}] * 3  # one of them fetched again; the others shared it
    assert len(calls) == 2
    assert sql.count("market_data_cache") == 1


@pytest.mark.parametrize("number", [1e16, 1.5e300, -1e-300, 2.5e-7, -0.0, 1e308, 5e-324])
def test_floats_come_back_as_the_same_floats(db: DatabaseManager, number: float) -> None:
    # jsonb keeps numbers as numeric: 1e16 read back as the int 10000000000000000
    market = MarketDataRepository()
    payload = {"x": number, "in_a_list": [number], "series": pd.Series([number, 1.0])}
    with db.get_session() as session:
        market.cache_market_data(session, "AAPL", "stock_info", payload)
    with db.get_session() as session:
        back = market.get_cached_data(session, "AAPL", "stock_info")
    for value in (back["x"], back["in_a_list"][0], back["series"].iloc[0]):
        assert type(value) in (float, np.float64)
        assert value == number
        assert math.copysign(1.0, value) == math.copysign(1.0, number)


async def test_a_stored_none_is_a_hit_and_not_fetched_again(uow: UnitOfWork) -> None:
    calls: list[int] = []

    def fetch() -> None:
        calls.append(1)

    for _ in range(2):
        assert await uow(cache.get_or_fetch, "AAPL", "news", fetch) is None
    assert len(calls) == 1
    counts = statistics.snapshot()["news"]
    assert (counts.hits, counts.misses, counts.fetches) == (1, 1, 1)


def test_the_service_is_the_repository_method_without_the_repository(
    db: DatabaseManager, sql: RawSQL
) -> None:
    with db.get_session() as session:
        assert get_or_fetch(session, "AAPL", "stock_info", lambda: {"v": 1}) == {"v": 1}
        assert cache.get_or_fetch(session, "AAPL", "stock_info", lambda: {"v": 2}) == {"v": 1}
    assert sql.count("market_data_cache") == 1
    assert service.thread_flights.in_flight() == frozenset()
