"""A missing adjusted close, volume, dividend or split (no such column, no such key in a
row, NaN) never erases the stored bar's; a new bar gets NULL, or 0 for the actions."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from database import DatabaseManager
from database.repositories import PriceHistoryRepository
from tests.conftest import RawSQL

# Every PostgreSQL test here runs once more through PgBouncer (transaction pooling).
pytestmark = pytest.mark.pgbouncer

DAYS = [dt.date(2024, 5, day) for day in (1, 2, 3, 6, 7)]
FULL = [
    {
        "date": day.isoformat(),
        "open": 10,
        "high": 12,
        "low": 9,
        "close": 11,
        "adj_close": 10.5,
        "volume": 1000,
        "dividends": 0.25,
        "stock_splits": 2,
    }
    for day in DAYS
]


def stored(sql: RawSQL) -> list[tuple[Any, ...]]:
    rows = sql.rows(
        "SELECT close, adj_close, volume, dividends, stock_splits FROM price_history"
        " WHERE ticker = 'AAPL' ORDER BY date"
    )
    scale = Decimal(10**6) if sql.backend == "sqlite" else Decimal(1)

    def price(value: Any) -> Decimal | None:
        return None if value is None else Decimal(value) / scale

    return [(price(c), price(a), v, price(d), price(s)) for c, a, v, d, s in rows]


KEPT = (Decimal(12), Decimal("10.5"), 1000, Decimal("0.25"), Decimal(2))


def prices_only(close: float = 12) -> list[dict[str, Any]]:
    return [
        {"date": day.isoformat(), "open": 10, "high": 12, "low": 9, "close": close} for day in DAYS
    ]


def test_rows_without_some_keys_keep_those_stored_values(db: DatabaseManager, sql: RawSQL) -> None:
    history = PriceHistoryRepository()
    with db.get_session() as session:
        history.upsert(session, FULL, ticker="AAPL")
    rows = prices_only()
    rows[0] |= {"volume": 5, "dividends": 0.5}  # one row has them, the others not
    with db.get_session() as session:
        result = history.upsert(session, rows, ticker="AAPL")
    assert (result.inserted, result.updated, result.unchanged) == (0, 5, 0)
    assert stored(sql)[0] == (Decimal(12), Decimal("10.5"), 5, Decimal("0.5"), Decimal(2))
    assert stored(sql)[1:] == [KEPT] * 4


def test_nan_in_a_given_column_keeps_the_stored_value(db: DatabaseManager, sql: RawSQL) -> None:
    history = PriceHistoryRepository()
    with db.get_session() as session:
        history.upsert(session, FULL, ticker="AAPL")
    rows = [row | {"volume": float("nan"), "dividends": None} for row in prices_only()]
    with db.get_session() as session:
        history.upsert(session, rows, ticker="AAPL")
    assert stored(sql) == [KEPT] * 5


@pytest.mark.parametrize("later_has_actions", [False, True])
def test_batches_with_different_columns_keep_what_each_row_lacks(
    db: DatabaseManager, sql: RawSQL, later_has_actions: bool
) -> None:
    history = PriceHistoryRepository()
    history.batch_size = 2  # three batches: rows 0-1, 2-3, 4
    with db.get_session() as session:
        history.upsert(session, FULL, ticker="AAPL")
    rows = prices_only()
    if later_has_actions:
        rows[4] |= {"dividends": 0.75}
    with db.get_session() as session:
        history.upsert(session, iter(rows), ticker="AAPL")
    expected = [KEPT] * 5
    if later_has_actions:
        expected[4] = (*KEPT[:3], Decimal("0.75"), KEPT[4])
    assert stored(sql) == expected


def test_new_bars_without_them_get_null_and_zero_actions(db: DatabaseManager, sql: RawSQL) -> None:
    history = PriceHistoryRepository()
    with db.get_session() as session:
        history.upsert(session, FULL[:1], ticker="AAPL")  # the ticker exists: the merge path
        history.upsert(session, prices_only(), ticker="AAPL")
    assert stored(sql)[1:] == [(Decimal(12), None, None, Decimal(0), Decimal(0))] * 4


async def test_the_async_form_keeps_them_too(db: DatabaseManager, sql: RawSQL) -> None:
    history = PriceHistoryRepository()
    async with db.get_async_session() as session:
        await history.async_upsert(session, FULL, ticker="AAPL")
    async with db.get_async_session() as session:
        result = await history.async_upsert(session, prices_only(), ticker="AAPL")
    assert result.updated == 5
    assert stored(sql) == [KEPT] * 5
