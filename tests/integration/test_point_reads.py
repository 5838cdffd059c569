"""Point reads (get_latest, get_close_as_of, get_cached_data) behave as ORM queries do.

They run one statement through the bare driver, the async form awaiting it on the
event loop; these tests hold them to what a query through the session gives, in
both forms: pending changes flushed first, an instance the session holds filled
from the row when expired, the transaction's snapshot kept under SERIALIZABLE.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest

from database import DatabaseManager
from database.exceptions import ValidationError
from database.models import DataType, PriceHistory
from database.repositories import MarketDataRepository, PriceHistoryRepository
from tests.conftest import RawSQL

# Every PostgreSQL test here runs once more through PgBouncer (transaction pooling).
pytestmark = pytest.mark.pgbouncer

prices = PriceHistoryRepository()
cache = MarketDataRepository()
FIRST = dt.date(2024, 1, 2)


def bar(day: dt.date, close: float, ticker: str = "AAPL") -> dict[str, Any]:
    return {"ticker": ticker, "date": day, "open": close, "high": close, "low": close,
            "close": close, "volume": 100}  # fmt: skip


@pytest.fixture
def stored(db: DatabaseManager) -> None:
    with db.get_session() as session:
        prices.upsert(session, [bar(FIRST, 10.5), bar(FIRST + dt.timedelta(days=1), 11.25)])


def newer(day: int = 7, close: str = "12.000000") -> PriceHistory:
    return PriceHistory(
        ticker="AAPL",
        date=FIRST + dt.timedelta(days=day),
        open=Decimal(close),
        high=Decimal(close),
        low=Decimal(close),
        close=Decimal(close),
        volume=5,
    )


@pytest.mark.usefixtures("stored")
async def test_pending_changes_are_flushed_before_a_point_read(db: DatabaseManager) -> None:
    with db.get_session() as session:
        added = newer()
        session.add(added)
        assert prices.get_latest(session, "AAPL") is added
        session.delete(added)
        assert prices.get_latest(session, "AAPL").date == FIRST + dt.timedelta(days=1)
        session.rollback()
    async with db.get_async_session() as session:
        added = newer(day=8)
        session.add(added)
        assert await prices.async_get_latest(session, "AAPL") is added
        assert await prices.async_get_close_as_of(session, "AAPL", FIRST) is not added
        await session.delete(added)
        latest = await prices.async_get_latest(session, "AAPL")
        assert latest is not None
        assert latest.date == FIRST + dt.timedelta(days=1)
        await session.rollback()


def set_close(db: DatabaseManager, day: dt.date, close: str) -> None:
    """Another session changes a stored close (committed)."""
    with db.get_session() as other:
        stored = other.get(PriceHistory, ("AAPL", day))
        assert stored is not None
        stored.close = Decimal(close)


@pytest.mark.usefixtures("stored")
async def test_an_expired_instance_is_filled_from_the_row_it_was_read_from(
    db: DatabaseManager,
) -> None:
    day = FIRST + dt.timedelta(days=1)
    with db.get_session() as session:
        first = prices.get_latest(session, "AAPL")
        session.commit()
        session.expire_all()
        set_close(db, day, "11.5")
        again = prices.get_latest(session, "AAPL")
        assert again is first
        assert again is not None
        assert again.close == Decimal("11.500000")
    async with db.get_async_session() as session:
        first = await prices.async_get_latest(session, "AAPL")
        await session.commit()
        session.expire_all()
        set_close(db, day, "11.75")
        again = await prices.async_get_close_as_of(session, "AAPL", day)
        assert again is first
        # Filled from the row: no lazy load, which an AsyncSession cannot do here.
        assert again is not None
        assert again.close == Decimal("11.750000")
        assert again.volume == 100


@pytest.mark.usefixtures("stored")
async def test_a_loaded_instance_keeps_its_unflushed_changes(db: DatabaseManager) -> None:
    with db.get_session() as session, session.no_autoflush:
        first = prices.get_latest(session, "AAPL")
        assert first is not None
        first.close = Decimal("99.000000")
        assert prices.get_latest(session, "AAPL") is first
        assert first.close == Decimal("99.000000")
        session.rollback()


def add_bar(db: DatabaseManager, day: dt.date) -> None:
    """Another session stores a newer bar (committed)."""
    with db.get_session() as other:
        prices.upsert(other, [bar(day, 13.0)])


@pytest.mark.usefixtures("stored")
async def test_point_reads_keep_a_serializable_snapshot(db: DatabaseManager, sql: RawSQL) -> None:
    later = FIRST + dt.timedelta(days=20)
    with db.get_session() as session:
        session.connection(execution_options={"isolation_level": "SERIALIZABLE"})
        seen = prices.get_latest(session, "AAPL")
        add_bar(db, later)
        assert prices.get_latest(session, "AAPL") is seen  # the snapshot of its first read
    sql.execute("DELETE FROM price_history WHERE date > :day", day=FIRST + dt.timedelta(days=1))
    async with db.get_async_session() as session:
        await session.connection(execution_options={"isolation_level": "SERIALIZABLE"})
        seen = await prices.async_get_latest(session, "AAPL")
        add_bar(db, later)
        assert await prices.async_get_latest(session, "AAPL") is seen
        assert await prices.async_get_close_as_of(session, "AAPL", later) is seen


async def test_a_cache_read_sees_the_entry_its_session_wrote(db: DatabaseManager) -> None:
    async with db.get_async_session() as session:
        await cache.async_cache_market_data(session, "MSFT", DataType.STOCK_INFO, {"a": 1})
        assert await cache.async_get_cached_data(session, "MSFT", DataType.STOCK_INFO) == {"a": 1}
    with db.get_session() as session:
        assert cache.get_cached_data(session, "MSFT", DataType.STOCK_INFO) == {"a": 1}


async def test_a_missing_day_is_refused(db: DatabaseManager) -> None:
    with db.get_session() as session, pytest.raises(ValidationError, match="day"):
        prices.get_close_as_of(session, "AAPL", pd.NaT)
    async with db.get_async_session() as session:
        with pytest.raises(ValidationError, match="NaT"):
            await prices.async_get_close_as_of(session, "AAPL", pd.NaT)
    with db.get_session() as session, pytest.raises(ValidationError, match="start"):
        prices.get_range(session, "AAPL", start=pd.NaT)


def test_ticker_must_agree_with_a_ticker_column(db: DatabaseManager, sql: RawSQL) -> None:
    frame = pd.DataFrame([bar(FIRST, 10.0, "TSLA"), bar(FIRST, 20.0, "NVDA")])
    with db.get_session() as session, pytest.raises(ValidationError) as caught:
        prices.upsert(session, frame, ticker="TSLA")
    assert caught.value.field == "ticker"
    assert "NVDA" in str(caught.value)
    assert sql.count("price_history") == 0
    same = pd.DataFrame([bar(FIRST, 10.0, " tsla"), bar(FIRST + dt.timedelta(days=1), 11, "TSLA")])
    with db.get_session() as session:
        assert prices.upsert(session, same, ticker="tsla").inserted == 2
    assert sql.rows("SELECT DISTINCT ticker FROM price_history") == [("TSLA",)]
