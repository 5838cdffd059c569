"""Daily price history: bulk upserts at driver speed, and the reads analyses need.

An upsert stages the bars in a temporary table (PostgreSQL: ``COPY``; SQLite:
batched ``executemany``), checks the batch for duplicate dates, then merges with
one ``INSERT ... SELECT ... ON CONFLICT (ticker, date) DO UPDATE`` that leaves
unchanged rows alone. It runs in a savepoint: if any bar is rejected, nothing
of the call is written.
"""

from __future__ import annotations

import builtins
import datetime as dt
import inspect
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pandas as pd
from sqlalchemy import Select, and_, exists, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.util import await_

from database.exceptions import is_unique_violation as _is_unique_violation
from database.models import PriceHistory
from database.models.base import utcnow
from database.prices import (
    BAR_FIELDS,
    PRICE_SCALE,
    YFINANCE_COLUMNS,
    PriceValidationError,
    RejectedBar,
    prepare_bars,
    staging_rows,
)
from database.repositories.base import BaseRepository
from database.repositories.raw import fetch_all
from database.repositories.upsert import dialect_name
from database.types import sqlite_timestamp
from database.validation import normalize_ticker

STAGING = "price_history_staging"
_VALUES = BAR_FIELDS[2:]
_COLUMNS = ", ".join(BAR_FIELDS)
_CHANGED = " OR ".join(f"p.{c} IS DISTINCT FROM excluded.{c}" for c in _VALUES)
_SET = ", ".join(f"{c} = excluded.{c}" for c in (*_VALUES, "data_source", "updated_at"))

_STAGING_DDL = {
    "postgresql": f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING} (ticker text, date date, "
    + ", ".join(f"{c} numeric" for c in _VALUES)
    + ") ON COMMIT DELETE ROWS",
    "sqlite": f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING} (ticker TEXT, date TEXT, "
    + ", ".join(f"{c} INTEGER" for c in _VALUES)
    + ")",
}
_CLEAR = {"postgresql": f"TRUNCATE {STAGING}", "sqlite": f"DELETE FROM {STAGING}"}
_DUPLICATES = text(
    f"SELECT ticker, date FROM {STAGING} GROUP BY ticker, date HAVING count(*) > 1 "
    "ORDER BY ticker, date LIMIT 20"
)
_MERGE = {
    # xmax = 0 marks a row this statement inserted rather than updated.
    "postgresql": text(
        f"WITH merged AS (INSERT INTO price_history AS p ({_COLUMNS}, data_source, created_at,"
        f" updated_at) SELECT {_COLUMNS}, :source, :now, :now FROM {STAGING}"
        f" ON CONFLICT (ticker, date) DO UPDATE SET {_SET} WHERE {_CHANGED}"
        " RETURNING (xmax = 0) AS inserted)"
        " SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merged"
    ),
    "sqlite": text(
        f"INSERT INTO price_history AS p ({_COLUMNS}, data_source, created_at, updated_at)"
        f" SELECT {_COLUMNS}, :source, :now, :now FROM {STAGING} WHERE true"
        f" ON CONFLICT (ticker, date) DO UPDATE SET {_SET} WHERE {_CHANGED}"
    ),
}
_NEW_KEYS = text(
    f"SELECT count(*) FROM {STAGING} s WHERE NOT EXISTS "
    "(SELECT 1 FROM price_history p WHERE p.ticker = s.ticker AND p.date = s.date)"
)
_STAMPS = ("data_source", "created_at", "updated_at")
_AS_FLOAT = {"postgresql": "{}::float8", "sqlite": f"{{}} / {10**PRICE_SCALE}.0"}
_FRAME_SQL = {
    dialect: "SELECT date, "
    + ", ".join("volume" if c == "volume" else cast.format(c) for c in _VALUES)
    + " FROM price_history WHERE ticker = ?"
    for dialect, cast in _AS_FLOAT.items()
}


@dataclass(frozen=True)
class UpsertResult:
    """What an upsert did; ``rejected`` is filled only with ``skip_invalid=True``."""

    inserted: int
    updated: int
    unchanged: int
    rejected: list[RejectedBar] = field(default_factory=list)


@dataclass(frozen=True)
class LatestClose:
    ticker: str
    date: dt.date
    close: Decimal


class PriceHistoryRepository(BaseRepository[PriceHistory]):
    """Daily bars keyed by ``(ticker, date)``: ``get_by_id(session, ("AAPL", date))``."""

    batch_size = 100_000

    def __init__(self) -> None:
        super().__init__(PriceHistory)

    # -- writing -------------------------------------------------------------------------

    def _batches(
        self,
        data: pd.DataFrame | Iterable[Mapping[str, Any]],
        ticker: str | None,
        skip_invalid: bool,
    ) -> Iterator[tuple[pd.DataFrame, list[RejectedBar]]]:
        """Checked bars in batches; raises at the first batch with a bad bar unless skipping."""
        if isinstance(data, pd.DataFrame):
            chunks: Iterable[Any] = (
                data.iloc[start : start + self.batch_size]
                for start in range(0, max(len(data), 1), self.batch_size)
            )
        else:
            chunks = _chunked(data, self.batch_size)
        for chunk in chunks:
            if len(chunk) == 0:
                continue
            bars, rejected = prepare_bars(chunk, ticker)
            if rejected and not skip_invalid:
                raise PriceValidationError(rejected)
            yield bars, rejected

    @staticmethod
    def _raise_duplicates(rows: list[Any]) -> None:
        if rows:
            rejected = [
                RejectedBar(
                    t,
                    d if isinstance(d, dt.date) else dt.date.fromisoformat(d),
                    "date",
                    d,
                    "appears more than once in the batch",
                )
                for t, d in rows
            ]
            raise PriceValidationError(rejected)

    def upsert(
        self,
        session: Session,
        data: pd.DataFrame | Iterable[Mapping[str, Any]],
        *,
        ticker: str | None = None,
        skip_invalid: bool = False,
        data_source: str = "yfinance",
    ) -> UpsertResult:
        """Insert or update bars from a yfinance DataFrame or dict rows.

        ``ticker`` names the symbol of a single-ticker frame (else a ``ticker``
        column is required). An invalid bar rejects the whole call, unless
        ``skip_invalid=True``: then the valid bars are written and the bad ones
        are returned in ``rejected``. Returns how many rows were inserted,
        updated, and found unchanged.
        """
        with self._translating(), session.begin_nested():
            tickers = _known_tickers(data, ticker)
            if tickers and not session.scalar(_any_rows(tickers)):
                direct = self._copy_into_empty(session, data, ticker, skip_invalid, data_source)
                if direct is not None:
                    return direct
            return self._merge_through_staging(session, data, ticker, skip_invalid, data_source)

    async def async_upsert(
        self,
        session: AsyncSession,
        data: pd.DataFrame | Iterable[Mapping[str, Any]],
        *,
        ticker: str | None = None,
        skip_invalid: bool = False,
        data_source: str = "yfinance",
    ) -> UpsertResult:
        # One implementation: run_sync hands it a Session whose driver calls are
        # awaited for it (the COPY of asyncpg and aiosqlite through ``await_``).
        return await session.run_sync(
            lambda sync: self.upsert(
                sync, data, ticker=ticker, skip_invalid=skip_invalid, data_source=data_source
            )
        )

    def _copy_into_empty(
        self,
        session: Session,
        data: pd.DataFrame | Iterable[Mapping[str, Any]],
        ticker: str | None,
        skip_invalid: bool,
        data_source: str,
    ) -> UpsertResult | None:
        """Fast path when none of the tickers has bars yet: write straight into the table.

        Returns None if a key turned out to exist after all (a duplicate date in
        the batch, or a concurrent writer); the savepoint then undoes it all.
        """
        dialect = dialect_name(session)
        now = _now(dialect)
        extra = (data_source, now, now)
        rejected: list[RejectedBar] = []
        total = 0
        try:
            with session.begin_nested():
                driver = session.connection().connection.driver_connection
                for bars, bad in self._batches(data, ticker, skip_invalid):
                    rejected += bad
                    total += len(bars)
                    rows = staging_rows(bars, scaled=dialect == "sqlite", extra=extra)
                    _write(driver, dialect, "price_history", (*BAR_FIELDS, *_STAMPS), rows)
        except Exception as error:
            if _is_unique_violation(error):
                return None
            raise
        return UpsertResult(total, 0, 0, rejected)

    def _merge_through_staging(
        self,
        session: Session,
        data: pd.DataFrame | Iterable[Mapping[str, Any]],
        ticker: str | None,
        skip_invalid: bool,
        data_source: str,
    ) -> UpsertResult:
        dialect = dialect_name(session)
        session.execute(text(_STAGING_DDL[dialect]))
        session.execute(text(_CLEAR[dialect]))
        driver = session.connection().connection.driver_connection
        rejected: list[RejectedBar] = []
        total = 0
        for bars, bad in self._batches(data, ticker, skip_invalid):
            rejected += bad
            total += len(bars)
            _write(
                driver, dialect, STAGING, BAR_FIELDS, staging_rows(bars, scaled=dialect == "sqlite")
            )
        self._raise_duplicates(list(session.execute(_DUPLICATES)))
        params = {"source": data_source, "now": _now(dialect)}
        if dialect == "postgresql":
            inserted, updated = session.execute(_MERGE[dialect], params).one()
        else:
            inserted = session.scalar(_NEW_KEYS) or 0
            updated = session.execute(_MERGE[dialect], params).rowcount - inserted  # type: ignore[attr-defined]
        session.execute(text(_CLEAR[dialect]))
        return UpsertResult(inserted, updated, total - inserted - updated, rejected)

    # -- reading: statements -------------------------------------------------------------

    @staticmethod
    def _range_statement(
        ticker: str, start: dt.date | None, end: dt.date | None
    ) -> Select[PriceHistory]:
        statement = select(PriceHistory).where(PriceHistory.ticker == normalize_ticker(ticker))
        if start is not None:
            statement = statement.where(PriceHistory.date >= start)
        if end is not None:
            statement = statement.where(PriceHistory.date <= end)
        return statement.order_by(PriceHistory.date)

    @staticmethod
    def _latest_statement(ticker: str, on_or_before: dt.date | None) -> Select[PriceHistory]:
        statement = select(PriceHistory).where(PriceHistory.ticker == normalize_ticker(ticker))
        if on_or_before is not None:
            statement = statement.where(PriceHistory.date <= on_or_before)
        return statement.order_by(PriceHistory.date.desc()).limit(1)

    @staticmethod
    def _latest_closes_statement(tickers: Iterable[str]) -> Select[str, dt.date, Decimal]:
        wanted = sorted({normalize_ticker(t) for t in tickers})
        last = (
            select(PriceHistory.ticker, func.max(PriceHistory.date).label("date"))
            .where(PriceHistory.ticker.in_(wanted))
            .group_by(PriceHistory.ticker)
            .subquery()
        )
        return (
            select(PriceHistory.ticker, PriceHistory.date, PriceHistory.close)
            .join(
                last, and_(PriceHistory.ticker == last.c.ticker, PriceHistory.date == last.c.date)
            )
            .order_by(PriceHistory.ticker)
        )

    @staticmethod
    def _freshness_statement(tickers: Iterable[str] | None) -> Select[str, dt.date]:
        statement = select(PriceHistory.ticker, func.max(PriceHistory.date)).group_by(
            PriceHistory.ticker
        )
        if tickers is not None:
            statement = statement.where(
                PriceHistory.ticker.in_(sorted({normalize_ticker(t) for t in tickers}))
            )
        return statement.order_by(PriceHistory.ticker)

    # -- reading: sync and async -------------------------------------------------------------

    def get_range(
        self,
        session: Session,
        ticker: str,
        start: dt.date | None = None,
        end: dt.date | None = None,
    ) -> builtins.list[PriceHistory]:
        """Bars of one ticker from ``start`` to ``end`` (inclusive), oldest first."""
        with self._translating():
            return builtins.list(session.scalars(self._range_statement(ticker, start, end)))

    async def async_get_range(
        self,
        session: AsyncSession,
        ticker: str,
        start: dt.date | None = None,
        end: dt.date | None = None,
    ) -> builtins.list[PriceHistory]:
        with self._translating():
            return builtins.list(await session.scalars(self._range_statement(ticker, start, end)))

    def get_frame(
        self,
        session: Session,
        ticker: str,
        start: dt.date | None = None,
        end: dt.date | None = None,
    ) -> pd.DataFrame:
        """The bars as a yfinance-shaped frame: a ``Date`` index, ``Open`` to ``Stock Splits``.

        Read through the bare driver, with prices as floats (as yfinance has them).
        """
        dialect = dialect_name(session)
        sql = _FRAME_SQL[dialect]
        params: builtins.list[Any] = [normalize_ticker(ticker)]
        for bound, operator in ((start, ">="), (end, "<=")):
            if bound is not None:
                sql += f" AND date {operator} ?"
                params.append(bound.isoformat() if dialect == "sqlite" else bound)
        with self._translating():
            rows = fetch_all(session, sql + " ORDER BY date", params)
        frame = pd.DataFrame.from_records(rows, columns=YFINANCE_COLUMNS)
        frame["Date"] = pd.to_datetime(frame["Date"])
        frame["Volume"] = frame["Volume"].astype("Int64")
        return frame.set_index("Date")

    async def async_get_frame(
        self,
        session: AsyncSession,
        ticker: str,
        start: dt.date | None = None,
        end: dt.date | None = None,
    ) -> pd.DataFrame:
        return await session.run_sync(lambda sync: self.get_frame(sync, ticker, start, end))

    def get_latest(self, session: Session, ticker: str) -> PriceHistory | None:
        with self._translating():
            return session.scalars(self._latest_statement(ticker, None)).first()

    async def async_get_latest(self, session: AsyncSession, ticker: str) -> PriceHistory | None:
        with self._translating():
            return (await session.scalars(self._latest_statement(ticker, None))).first()

    def get_close_as_of(self, session: Session, ticker: str, day: dt.date) -> PriceHistory | None:
        """The bar of the last trading day on or before ``day``."""
        with self._translating():
            return session.scalars(self._latest_statement(ticker, day)).first()

    async def async_get_close_as_of(
        self, session: AsyncSession, ticker: str, day: dt.date
    ) -> PriceHistory | None:
        with self._translating():
            return (await session.scalars(self._latest_statement(ticker, day))).first()

    def get_latest_closes(self, session: Session, tickers: Iterable[str]) -> dict[str, LatestClose]:
        """The latest close of each ticker that has bars, in one query."""
        with self._translating():
            rows = session.execute(self._latest_closes_statement(tickers))
            return {t: LatestClose(t, d, c) for t, d, c in rows}

    async def async_get_latest_closes(
        self, session: AsyncSession, tickers: Iterable[str]
    ) -> dict[str, LatestClose]:
        with self._translating():
            rows = await session.execute(self._latest_closes_statement(tickers))
            return {t: LatestClose(t, d, c) for t, d, c in rows}

    def get_freshness(
        self, session: Session, tickers: Iterable[str] | None = None
    ) -> dict[str, dt.date]:
        """The last stored date per ticker (all tickers, or those given that have bars)."""
        with self._translating():
            return {t: d for t, d in session.execute(self._freshness_statement(tickers))}

    async def async_get_freshness(
        self, session: AsyncSession, tickers: Iterable[str] | None = None
    ) -> dict[str, dt.date]:
        with self._translating():
            return {t: d for t, d in await session.execute(self._freshness_statement(tickers))}


def _chunked(
    rows: Iterable[Mapping[str, Any]], size: int
) -> Iterator[builtins.list[Mapping[str, Any]]]:
    batch: builtins.list[Mapping[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _known_tickers(
    data: pd.DataFrame | Iterable[Mapping[str, Any]], ticker: str | None
) -> list[str]:
    """The tickers of a call, when known without reading it all (else empty)."""
    if ticker is not None:
        return [normalize_ticker(ticker)]
    if isinstance(data, pd.DataFrame):
        for column in data.columns:
            if str(column).strip().lower() in ("ticker", "symbol"):
                return sorted({normalize_ticker(t) for t in data[column].unique()})
    return []


def _any_rows(tickers: builtins.list[str]) -> Select[bool]:
    return select(exists().where(PriceHistory.ticker.in_(tickers)))


def _write(
    driver: Any, dialect: str, table: str, columns: tuple[str, ...], rows: builtins.list[Any]
) -> None:
    """Send rows through the bare driver: COPY on PostgreSQL, executemany on SQLite."""
    names = ", ".join(columns)
    if dialect == "postgresql":
        if hasattr(driver, "copy_records_to_table"):  # asyncpg, under run_sync
            await_(driver.copy_records_to_table(table, records=rows, columns=list(columns)))
            return
        with driver.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    placeholders = ", ".join("?" * len(columns))
    result = driver.executemany(f"INSERT INTO {table} ({names}) VALUES ({placeholders})", rows)
    if inspect.isawaitable(result):  # aiosqlite, under run_sync
        await_(result)


def _now(dialect: str) -> Any:
    now = utcnow()
    return sqlite_timestamp(now) if dialect == "sqlite" else now
