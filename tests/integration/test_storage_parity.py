"""The bulk paths store exactly what the ORM stores, for every column type, on both backends.

``database.driver`` sends rows below SQLAlchemy (COPY, executemany) with values
from each column's own type. These tests put the same model values in once

# Every PostgreSQL test here runs once more through PgBouncer (transaction pooling).
pytestmark = pytest.mark.pgbouncer
through the ORM and once through each bulk path, then compare what the database
holds, read as text by the bare driver (SQLite's ``quote()`` shows the storage
class too: ``1234567`` and ``'1.234567'`` differ).
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import JSON, BigInteger, Column, MetaData, Table, Uuid
from sqlalchemy.orm import registry
from sqlalchemy.types import TypeDecorator, TypeEngine

from database import DatabaseManager
from database.driver import async_write_rows, encode_rows, write_rows
from database.models import Base, OptionsData, OptionType, PriceHistory
from database.repositories import OptionsDataRepository, PriceHistoryRepository
from database.types import ExactDecimal
from tests.conftest import RawSQL

PARITY = "storage_parity"


def _type_key(column_type: TypeEngine[Any]) -> str:
    return repr(column_type)


def _column_types() -> list[TypeEngine[Any]]:
    """Every distinct column type of this package's tables (an ExactDecimal per scale
    and bounds, an enum per enum class...)."""
    found: dict[str, TypeEngine[Any]] = {}
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            found.setdefault(_type_key(column.type), column.type)
    return list(found.values())


def _sample(column_type: TypeEngine[Any]) -> Any:
    """A model value that uses everything the type stores: every decimal place, a
    time with microseconds, mixed case, nested JSON."""
    if isinstance(column_type, ExactDecimal):
        whole = 10 ** min(column_type.precision - column_type.scale - 1, 3) - 1
        value = Decimal(whole) + Decimal(1).scaleb(-column_type.scale) * 7
        if column_type.maximum is not None and value > column_type.maximum:
            value = column_type.maximum - Decimal(1).scaleb(-column_type.scale) * 3
        return value
    enum_class = getattr(column_type, "enum_class", None)
    if enum_class is not None and issubclass(enum_class, enum.Enum):
        return list(enum_class)[-1]
    if isinstance(column_type, JSON):
        return {"b": [1, 2.5, None, "é"], "a": {"nested": True}, "big": 10**20}
    python_type = column_type.python_type
    if isinstance(column_type, TypeDecorator) and python_type is object:
        python_type = column_type.impl_instance.python_type
    if isinstance(column_type, TypeDecorator) and type(column_type).__name__ == "Ticker":
        return " brk.b "
    if python_type is dt.datetime:
        return dt.datetime(
            2024, 3, 9, 23, 59, 58, 123456, tzinfo=dt.timezone(dt.timedelta(hours=-5))
        )
    if python_type is dt.date:
        return dt.date(2024, 2, 29)
    if python_type is bool:
        return True
    if python_type is int:  # not exact as a float / the largest INTEGER
        return 9_007_199_254_740_993 if isinstance(column_type, BigInteger) else 2**31 - 1
    if python_type is uuid.UUID:
        return uuid.UUID("12345678-1234-5678-1234-567812345678")
    if python_type is str:
        return "Mixed Case Ünïcode"
    raise AssertionError(f"no sample for {column_type!r}")


@pytest.fixture
def parity_table(db: DatabaseManager) -> Iterator[Table]:
    """A table with one column of each of the package's column types."""
    metadata = MetaData()
    columns = [Column(f"c{number}", t) for number, t in enumerate(_column_types())]
    table = Table(PARITY, metadata, Column("key", Uuid, primary_key=True), *columns)
    metadata.create_all(db.engine)
    yield table
    metadata.drop_all(db.engine)


def _stored(sql: RawSQL, table: str, columns: list[str], where: str, key: Any) -> list[Any]:
    """One row's columns as the database holds them, as text."""
    shown = ", ".join(f"quote({c})" if sql.backend == "sqlite" else f"{c}::text" for c in columns)
    row = sql.rows(f"SELECT {shown} FROM {table} WHERE {where} = :key", key=key)  # noqa: S608
    assert len(row) == 1
    return list(row[0])


def test_the_column_types_cover_the_package(parity_table: Table) -> None:
    kinds = {type(c.type).__name__ for c in parity_table.columns}
    # The types a bulk path carries: exact decimals, UTC times, dates, tickers, JSON, enums.
    assert {"ExactDecimal", "UTCDateTime", "Date", "Ticker", "Enum", "Uuid"} <= kinds
    assert any("JSON" in repr(c.type) for c in parity_table.columns)


async def test_bulk_rows_store_what_the_orm_stores(
    db: DatabaseManager, parity_table: Table, sql: RawSQL
) -> None:
    names = [c.name for c in parity_table.columns if c.name != "key"]
    values = {c.name: _sample(c.type) for c in parity_table.columns if c.name != "key"}

    class Parity:
        pass

    mapper_registry = registry()
    mapper_registry.map_imperatively(Parity, parity_table)
    try:
        through_orm = uuid.uuid4()
        with db.get_session(system=True) as session:
            item = Parity()
            for name, value in {"key": through_orm, **values}.items():
                setattr(item, name, value)
            session.add(item)

        columns = ["key", *names]
        through_sync = uuid.uuid4()
        with db.get_session(system=True) as session:
            dialect = session.get_bind().dialect
            rows = encode_rows(parity_table, columns, dialect, [{"key": through_sync, **values}])
            write_rows(session, PARITY, columns, rows)

        through_async = uuid.uuid4()
        async with db.get_async_session(system=True) as session:
            dialect = session.get_bind().dialect
            rows = encode_rows(parity_table, columns, dialect, [{"key": through_async, **values}])
            await async_write_rows(session, PARITY, columns, rows)
    finally:
        mapper_registry.dispose()

    def stored(key: uuid.UUID) -> list[Any]:
        return _stored(sql, PARITY, names, "key", sql.key(key))

    orm = stored(through_orm)
    assert None not in orm
    assert stored(through_sync) == orm
    assert stored(through_async) == orm


def _bar_columns() -> list[str]:
    return [c.name for c in PriceHistory.__table__.columns if c.name not in ("ticker",)]


@pytest.mark.parametrize("missing_actions", [False, True])
async def test_upserted_bars_store_what_the_orm_stores(
    db: DatabaseManager, sql: RawSQL, missing_actions: bool
) -> None:
    """Both the staging path (a ticker with bars) and the straight path (a new ticker)."""
    bar = {
        "open": 187.149994,
        "high": 188.440002,
        "low": 183.889999,
        "close": 185.639999,
        "adj_close": 184.290405,
        "volume": 82488700,
        "dividends": 0.24,
        "stock_splits": 0.0,
    }
    day = dt.date(2024, 1, 2)
    exact = {k: v if k == "volume" else Decimal(repr(v)) for k, v in bar.items()}
    if missing_actions:  # a new bar's missing actions are 0, as the model's defaults
        exact = {k: v for k, v in exact.items() if k not in ("dividends", "stock_splits")}
    with db.get_session() as session:
        session.add(PriceHistory(ticker="ORM", date=day, data_source="parity", **exact))
        # A bar on another day gives NEWS and ASYNC history: their upserts merge.
        for ticker in ("OLDS", "OLDA"):
            session.add(PriceHistory(ticker=ticker, date=dt.date(2023, 1, 3), close=Decimal(1)))

    frame = pd.DataFrame([{"Date": pd.Timestamp(day), **{_yahoo(k): v for k, v in bar.items()}}])
    if missing_actions:
        frame = frame.drop(columns=["Dividends", "Stock Splits"])
    prices = PriceHistoryRepository()
    with db.get_session() as session:
        for ticker in ("NEWS", "OLDS"):
            prices.upsert(session, frame, ticker=ticker, data_source="parity")
    async with db.get_async_session() as session:
        for ticker in ("NEWA", "OLDA"):
            await prices.async_upsert(session, frame, ticker=ticker, data_source="parity")

    columns = [c for c in _bar_columns() if c not in ("created_at", "updated_at")]
    where = "date = '2024-01-02' AND ticker"
    orm = _stored(sql, "price_history", columns, where, "ORM")
    for ticker in ("NEWS", "OLDS", "NEWA", "OLDA"):
        assert _stored(sql, "price_history", columns, where, ticker) == orm, ticker


def _yahoo(field: str) -> str:
    return {"adj_close": "Adj Close", "stock_splits": "Stock Splits"}.get(field, field.title())


async def test_stored_chains_store_what_the_orm_stores(db: DatabaseManager, sql: RawSQL) -> None:
    fetched = dt.datetime(2024, 10, 1, 15, 30, 0, 250000, tzinfo=dt.UTC)
    contract = {
        "ticker": "NVDA",
        "option_type": OptionType.CALL,
        "strike": Decimal("120"),
        "expiration": dt.date(2024, 10, 4),
        "last_price": Decimal("1.25"),
        "bid": Decimal("1.2"),
        "ask": Decimal("1.3"),
        "volume": 1500,
        "open_interest": 20000,
        "implied_volatility": Decimal("0.523438"),
        "last_trade_date": dt.datetime(2024, 10, 1, 19, 59, 59, tzinfo=dt.UTC),
        "underlying_price": Decimal("118.85"),
    }
    symbol = "NVDA241004C00120000"
    with db.get_session() as session:
        session.add(OptionsData(contract_symbol=symbol, fetched_at=fetched, **contract))
    repository = OptionsDataRepository()
    row = {k: v for k, v in contract.items() if k != "ticker"}
    row.update(contract_symbol=symbol, option_type="call")
    later = {"sync": fetched + dt.timedelta(seconds=1), "async": fetched + dt.timedelta(seconds=2)}
    with db.get_session() as session:
        repository.store_chain(session, "NVDA", rows=[row], fetched_at=later["sync"])
    async with db.get_async_session() as session:
        await repository.async_store_chain(session, "NVDA", rows=[row], fetched_at=later["async"])

    skipped = ("id", "fetched_at", "created_at", "updated_at")
    columns = [c.name for c in OptionsData.__table__.columns if c.name not in skipped]

    def stored(moment: dt.datetime) -> list[Any]:
        shown = moment if sql.backend == "postgresql" else moment.strftime("%Y-%m-%d %H:%M:%S.%f")
        return _stored(sql, "options_data", columns, "fetched_at", shown)

    orm = stored(fetched)
    assert stored(later["sync"]) == orm
    assert stored(later["async"]) == orm
