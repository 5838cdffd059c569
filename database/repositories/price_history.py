"""Daily price history: bulk upserts at driver speed, and the reads analyses need.

An upsert stages the bars in a temporary table (PostgreSQL: ``COPY``; SQLite:
batched ``executemany``), checks the batch for duplicate dates, then merges with
one ``INSERT ... SELECT ... ON CONFLICT (ticker, date) DO UPDATE`` that leaves
unchanged rows alone; when none of its tickers has rows yet, a plain ``INSERT
... SELECT``. On SQLite, bars of new tickers go straight into the table, and so
do the bars of stored ones when each carries all its values. It runs in a
savepoint: if any bar is rejected, nothing of the call is written.

Concurrent writers never deadlock: on PostgreSQL each takes a transaction-scoped
advisory lock per ticker, in ticker order, before it reads or writes any row of
those tickers, so writers of a ticker run one after another (and the rows need
no particular order: sorting them cost more than the insert); on SQLite the
transaction begins as a writer (``begin_write``), so writers queue for the lock.
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import pandas as pd
from sqlalchemy import Select, bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.types import Text

from database import partitions
from database.driver import (
    Read,
    column_encoder,
    execute_many,
    fetch_all,
    row_decoder,
    write_rows,
)
from database.exceptions import ValidationError
from database.exceptions import is_unique_violation as _is_unique_violation
from database.models import PriceHistory
from database.models.base import utcnow
from database.prices import (
    ACTION_FIELDS,
    BAR_FIELDS,
    KEPT_WHEN_MISSING,
    SCALES,
    YFINANCE_COLUMNS,
    PriceValidationError,
    RejectedBar,
    RepairedBar,
    check_bar_source,
    check_bars,
    download_tickers,
    staging_rows,
    trading_day,
    unreadable_as_validation_error,
)
from database.repositories.base import BaseRepository
from database.repositories.latest import latest_closes_statement, latest_dates_statement
from database.repositories.twins import async_form, off_greenlet
from database.repositories.upsert import dialect_name
from database.row_security import share_temporary_table
from database.transactions import begin_write, staging_table_ddl
from database.validation import normalize_ticker, to_text, unreadable_as

STAGING = "price_history_staging"
_VALUES = BAR_FIELDS[2:]
_COLUMNS = ", ".join(BAR_FIELDS)

# The staging table holds the bars as SQLite stores them: prices in millionths
# (BIGINT), so the two backends round alike, and both PostgreSQL drivers copy
# plain integers (asyncpg encodes a float into NUMERIC through Decimal, ten
# times slower than psycopg's COPY). PostgreSQL scales them back exactly.
_STAGING_DDL = {
    "postgresql": f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING} (ticker text, date date, "
    + ", ".join(f"{c} bigint" for c in _VALUES)
    + ") ON COMMIT DELETE ROWS",
    "sqlite": f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING} (ticker TEXT, date TEXT, "
    + ", ".join(f"{c} INTEGER" for c in _VALUES)
    + ")",
}


def _staged(column: str, dialect: str) -> str:
    """A staged value as the table takes it: scaled back on PostgreSQL; a missing
    dividend or split (a new bar's, after _KEEP_STORED) is 0."""
    value = (
        column if dialect == "sqlite" or column == "volume" else f"{column} * 1e-{SCALES[column]}"
    )
    return f"COALESCE({value}, 0)" if column in ACTION_FIELDS else value


_STAGED = {
    dialect: "ticker, date, " + ", ".join(_staged(c, dialect) for c in _VALUES)
    for dialect in ("postgresql", "sqlite")
}
_CLEAR = {"postgresql": f"TRUNCATE {STAGING}", "sqlite": f"DELETE FROM {STAGING}"}
_DUPLICATES = text(
    f"SELECT ticker, date FROM {STAGING} GROUP BY ticker, date HAVING count(*) > 1 "
    "ORDER BY ticker, date LIMIT 20"
)
_INSERT = f"INSERT INTO price_history AS p ({_COLUMNS}, data_source, created_at, updated_at)"
# Only when none of the (locked) tickers has rows: no conflict to look for.
_INSERT_NEW = {
    dialect: text(f"{_INSERT} SELECT {staged}, :source, :now, :now FROM {STAGING}")
    for dialect, staged in _STAGED.items()
}


_CHANGED = " OR ".join(f"p.{c} IS DISTINCT FROM excluded.{c}" for c in _VALUES)
_SET = ", ".join(f"{c} = excluded.{c}" for c in (*_VALUES, "data_source", "updated_at"))
_UPSERT = f" ON CONFLICT (ticker, date) DO UPDATE SET {_SET} WHERE {_CHANGED}"
# Its row count is the bars inserted and updated; those inserted are counted
# before it (_NEW_KEYS, under the ticker locks). RETURNING xmax would tell them
# apart in one statement, but a partitioned table cannot return a system column.
_MERGE = {
    "postgresql": text(
        f"{_INSERT} SELECT {_STAGED['postgresql']}, :source, :now, :now FROM {STAGING}{_UPSERT}"
    ),
    "sqlite": text(
        f"{_INSERT} SELECT {_STAGED['sqlite']}, :source, :now, :now FROM {STAGING} WHERE true"
        f"{_UPSERT}"
    ),
}
# Staged bars that lack a value of KEPT_WHEN_MISSING take the stored bar's, in the
# staging unit (millionths; volume as is), before the merge.
_UNSCALED = {"postgresql": "(p.{c} * 1e{scale})::bigint", "sqlite": "p.{c}"}
_KEEP_STORED = {
    dialect: text(
        f"UPDATE {STAGING} AS s SET "
        + ", ".join(
            f"{c} = COALESCE(s.{c}, "
            + ("p.volume" if c == "volume" else unscaled.format(c=c, scale=SCALES[c]))
            + ")"
            for c in KEPT_WHEN_MISSING
        )
        + " FROM price_history AS p WHERE p.ticker = s.ticker AND p.date = s.date AND ("
        + " OR ".join(f"s.{c} IS NULL" for c in KEPT_WHEN_MISSING)
        + ")"
    )
    for dialect, unscaled in _UNSCALED.items()
}


# SQLite's direct merge: the same upsert, a row at a time through executemany.
_MERGE_ROWS = f"{_INSERT} VALUES ({', '.join('?' * (len(BAR_FIELDS) + 3))}){_UPSERT}"
_COUNT_ROWS = text("SELECT count(*) FROM price_history WHERE ticker IN :tickers").bindparams(
    bindparam("tickers", expanding=True)
)
_TOTAL_CHANGES = text("SELECT total_changes()")


class _NeedsStagingError(Exception):
    """Raised inside the direct merge's savepoint to undo it: stage the bars instead."""


def _overlap(
    seen: dict[str, builtins.list[tuple[Any, Any]]], spans: dict[str, tuple[Any, Any]]
) -> bool:
    """Whether a ticker's dates in this batch overlap its dates in an earlier one
    (then recorded in ``seen``)."""
    for ticker, (first, last) in spans.items():
        earlier = seen.setdefault(ticker, [])
        if any(first <= end and start <= last for start, end in earlier):
            return True
        earlier.append((first, last))
    return False


# Point reads through the bare driver (see PriceHistoryRepository._last_bar).
_BAR_COLUMNS = tuple(column.name for column in PriceHistory.__table__.columns)
_LAST_BAR_SQL = {
    bounded: f"SELECT {', '.join(_BAR_COLUMNS)} FROM price_history WHERE ticker = ?"
    + (" AND date <= ?" if bounded else "")
    + " ORDER BY date DESC LIMIT 1"
    for bounded in (False, True)
}


def _bar_decoder(dialect: Any) -> Callable[[Any], dict[str, Any]]:
    return row_decoder(PriceHistory.__table__, _BAR_COLUMNS, dialect)


def _key_encoders(dialect: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    columns = PriceHistory.__table__.c
    return column_encoder(columns.ticker, dialect), column_encoder(columns.date, dialect)


_SEQSCAN = text("SELECT current_setting('enable_seqscan')")
# Until the transaction ends (or set again).
_SET_SEQSCAN = text("SELECT set_config('enable_seqscan', :value, true)")
_NEW_KEYS = text(
    f"SELECT count(*) FROM {STAGING} s WHERE NOT EXISTS "
    "(SELECT 1 FROM price_history p WHERE p.ticker = s.ticker AND p.date = s.date)"
)
# One lock per ticker, taken in code-point order (COLLATE "C", as Python sorts
# str), held until the transaction ends (a savepoint's rollback releases it too).
_LOCK_TICKERS = text(
    "SELECT pg_advisory_xact_lock(hashtext('price_history'), hashtext(t))"
    ' FROM unnest(:tickers) AS t ORDER BY t COLLATE "C"'
).bindparams(bindparam("tickers", type_=ARRAY(Text)))
_STAMPS = ("data_source", "created_at", "updated_at")
_AS_FLOAT = {"postgresql": "{c}::float8", "sqlite": "{c} / 1e{scale}"}
_FRAME_SQL = {
    dialect: "SELECT date, "
    + ", ".join("volume" if c == "volume" else cast.format(c=c, scale=SCALES[c]) for c in _VALUES)
    + " FROM price_history WHERE ticker = ?"
    for dialect, cast in _AS_FLOAT.items()
}


@dataclass(frozen=True)
class UpsertResult:
    """What an upsert did; ``rejected`` is filled only with ``skip_invalid=True``;
    ``repaired``: the stored bars whose low or high was widened to their open or close."""

    inserted: int
    updated: int
    unchanged: int
    rejected: list[RejectedBar] = field(default_factory=list)
    repaired: list[RepairedBar] = field(default_factory=list)


@dataclass(frozen=True)
class LatestClose:
    ticker: str
    date: dt.date
    close: Decimal


@dataclass(frozen=True)
class _Batch:
    rows: Sequence[tuple[Any, ...]]
    rejected: list[RejectedBar]
    repaired: list[RepairedBar]
    tickers: frozenset[str]
    missing: frozenset[str]  # of KEPT_WHEN_MISSING: the fields some bar lacks
    spans: dict[str, tuple[Any, Any]]  # per ticker, its first and last date (if asked for)


@dataclass(frozen=True)
class _Options:
    """How one upsert call reads its bars."""

    ticker: str | None
    skip_invalid: bool
    repair: bool
    data_source: str


class PriceHistoryRepository(BaseRepository[PriceHistory]):
    """Daily bars keyed by ``(ticker, date)``: ``get_by_id(session, ("AAPL", date))``."""

    batch_size = 100_000

    def __init__(self) -> None:
        super().__init__(PriceHistory)

    # -- writing -------------------------------------------------------------------------

    def _prepared_batches(
        self,
        session: Session,
        data: pd.DataFrame | Iterable[Mapping[str, Any]],
        options: _Options,
        *,
        extra: tuple[Any, ...] = (),
        fill_actions: bool = False,
        spans: bool = False,
        prices: Literal["units", "decimals"] = "units",
    ) -> Iterator[_Batch]:
        """Checked bars as driver rows (prices in millionths), batch by batch; raises
        at the first batch with a bad bar unless skipping."""
        encode_date = _date_encoder(session)
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
            checked = check_bars(chunk, options.ticker, repair=options.repair)
            if checked.rejected and not options.skip_invalid:
                raise PriceValidationError(checked.rejected)
            bars = checked.bars
            if fill_actions:  # rows straight into the table: a missing action is 0
                bars = bars.fillna(dict.fromkeys(ACTION_FIELDS, 0.0))
            rows = staging_rows(bars, prices=prices, encode_date=encode_date, extra=extra)
            tickers = frozenset(bars["ticker"].unique())
            missing = frozenset(f for f in KEPT_WHEN_MISSING if bars[f].isna().any())
            found: dict[str, tuple[Any, Any]] = {}
            if spans:
                dates = bars.groupby("ticker")["date"].agg(["min", "max"])
                found = {t: (lo, hi) for t, lo, hi in dates.itertuples()}
            yield _Batch(rows, checked.rejected, checked.repaired, tickers, missing, found)

    @staticmethod
    def _raise_duplicates(rows: list[Any]) -> None:
        if rows:
            days = [(t, d if isinstance(d, dt.date) else dt.date.fromisoformat(d)) for t, d in rows]
            rejected = [
                RejectedBar(t, day, "date", day, "appears more than once in the batch")
                for t, day in days
            ]
            raise PriceValidationError(rejected)

    def upsert(
        self,
        session: Session,
        data: pd.DataFrame | Iterable[Mapping[str, Any]],
        *,
        ticker: str | None = None,
        skip_invalid: bool = False,
        repair: bool = True,
        data_source: str = "yfinance",
    ) -> UpsertResult:
        """Insert or update bars from a yfinance DataFrame (``history()``, or
        ``download()`` with its two-level columns) or dict rows.

        ``ticker`` names the symbol of a single-ticker frame (else a ``ticker``
        column, or a ``download()`` frame's ticker level, which ``ticker`` must
        match). An open or close outside ``[low, high]`` by at most
        ``REPAIR_TOLERANCE`` widens the range to it (reported in ``repaired``)
        unless ``repair=False``. An invalid bar rejects the whole call, unless
        ``skip_invalid=True``: then the valid bars are written and the bad ones
        are returned in ``rejected``. Returns how many rows were inserted,
        updated, and found unchanged.
        """
        check_bar_source(data)
        ticker = None if ticker is None else normalize_ticker(ticker)
        to_text(data_source, "data_source", max_length=50)
        with self._translating():
            if (years := _frame_years(data)) is not None:  # dict rows: found while staged
                partitions.prepare(session, partitions.PRICE_HISTORY, years)
            begin_write(session)
            with session.begin_nested():
                tickers = off_greenlet(_known_tickers, data, ticker)
                # Locked before the emptiness check: a writer that waited for
                # another sees its rows, and merges.
                _lock_tickers(session, tickers)
                new = bool(tickers) and not session.scalar(
                    _any_rows(dialect_name(session), tickers)
                )
                options = _Options(ticker, skip_invalid, repair, data_source)
                direct = None
                if new and _driver_name(session) in ("pysqlite", "psycopg"):
                    direct = self._insert_into_empty(session, data, options)
                elif tickers and dialect_name(session) == "sqlite":
                    direct = self._merge_directly(session, data, options, tickers)
                if direct is not None:
                    return direct
                return self._through_staging(session, data, options, new=new)

    async_upsert = async_form(upsert)

    def _insert_into_empty(
        self,
        session: Session,
        data: pd.DataFrame | Iterable[Mapping[str, Any]],
        options: _Options,
    ) -> UpsertResult | None:
        """When none of the tickers has bars yet: rows straight into the table, with
        executemany (sqlite3: prices in their storage units) or a text COPY (psycopg:
        prices as floats whose text is the exact decimal; created_at and updated_at
        left to the columns' default, the transaction's time).

        Returns None if a key turned out to exist after all (a duplicate date in
        the batch), or a price is too large to be sent as a float; the savepoint
        then undoes it all.
        """
        sqlite = dialect_name(session) == "sqlite"
        now = _stamp(session)
        batches = self._prepared_batches(
            session,
            data,
            options,
            extra=(options.data_source, now, now) if sqlite else (options.data_source,),
            fill_actions=True,
            prices="units" if sqlite else "decimals",
        )
        columns = (*BAR_FIELDS, *(_STAMPS if sqlite else _STAMPS[:1]))
        rejected: list[RejectedBar] = []
        repaired: list[RepairedBar] = []
        total = 0
        try:
            with session.begin_nested():
                for batch in _each(batches):
                    rejected += batch.rejected
                    repaired += batch.repaired
                    total += len(batch.rows)
                    write_rows(session, "price_history", columns, batch.rows)
        except OverflowError:
            return None
        except Exception as error:
            if _is_unique_violation(error):
                return None
            raise
        return UpsertResult(total, 0, 0, rejected, repaired)

    def _merge_directly(
        self,
        session: Session,
        data: pd.DataFrame | Iterable[Mapping[str, Any]],
        options: _Options,
        tickers: builtins.list[str],
    ) -> UpsertResult | None:
        """SQLite, when the tickers have bars: each bar upserted straight into the table
        (one ``executemany``), counted from the tickers' rows and ``total_changes()``.

        Returns None, with nothing written, where staging is needed after all: a
        bar lacks a value that keeps the stored one, a ticker is not among those
        known, or two batches hold the same ticker's dates (a duplicate across
        batches would be an update instead of an error).
        """
        now = _stamp(session)
        batches = self._prepared_batches(
            session,
            data,
            options,
            extra=(options.data_source, now, now),
            spans=True,
        )
        known = frozenset(tickers)
        seen: dict[str, builtins.list[tuple[Any, Any]]] = {}
        rejected: list[RejectedBar] = []
        repaired: list[RepairedBar] = []
        total = 0
        before = session.scalar(_COUNT_ROWS, {"tickers": tickers}) or 0
        changes = session.scalar(_TOTAL_CHANGES) or 0
        try:
            with session.begin_nested():
                for batch in _each(batches):
                    if batch.missing or not batch.tickers <= known or _overlap(seen, batch.spans):
                        raise _NeedsStagingError
                    rejected += batch.rejected
                    repaired += batch.repaired
                    total += len(batch.rows)
                    execute_many(session, _MERGE_ROWS, batch.rows)
        except _NeedsStagingError:
            return None
        changed = (session.scalar(_TOTAL_CHANGES) or 0) - changes
        inserted = (session.scalar(_COUNT_ROWS, {"tickers": tickers}) or 0) - before
        return UpsertResult(inserted, changed - inserted, total - changed, rejected, repaired)

    def _through_staging(
        self,
        session: Session,
        data: pd.DataFrame | Iterable[Mapping[str, Any]],
        options: _Options,
        *,
        new: bool,
    ) -> UpsertResult:
        """Stage the bars, check them for duplicate dates, then insert them (``new``:
        none of the tickers has rows) or merge them."""
        dialect = dialect_name(session)
        session.execute(text(staging_table_ddl(session, _STAGING_DDL[dialect])))
        if dialect == "postgresql":
            share_temporary_table(session, STAGING)
        session.execute(text(_CLEAR[dialect]))
        batches = self._prepared_batches(
            session,
            data,
            options,
            spans=True,
        )
        rejected: list[RejectedBar] = []
        repaired: list[RepairedBar] = []
        tickers: set[str] = set()
        missing: set[str] = set()
        seen: dict[str, builtins.list[tuple[Any, Any]]] = {}
        overlapping = False
        total = 0
        for batch in _each(batches):
            overlapping = _overlap(seen, batch.spans) or overlapping
            rejected += batch.rejected
            repaired += batch.repaired
            total += len(batch.rows)
            tickers |= batch.tickers
            missing |= batch.missing
            write_rows(session, STAGING, BAR_FIELDS, batch.rows)
        if overlapping:  # else no date can repeat: check_bars refuses repeats in a batch
            self._raise_duplicates(list(session.execute(_DUPLICATES)))
        _lock_tickers(session, sorted(tickers))  # dict rows: first known here
        params = {"source": options.data_source, "now": _stamp(session)}
        result = _insert_new(session, dialect, params) if new else None
        if result is not None:
            inserted, updated = result, 0
        else:
            if missing:  # a missing value keeps the stored bar's (read under the locks)
                _keep_stored(session, dialect)
            inserted = session.scalar(_NEW_KEYS) or 0
            updated = session.execute(_MERGE[dialect], params).rowcount - inserted  # type: ignore[attr-defined]
        session.execute(text(_CLEAR[dialect]))
        return UpsertResult(inserted, updated, total - inserted - updated, rejected, repaired)

    # -- reading: statements -------------------------------------------------------------

    @staticmethod
    def _range_statement(
        ticker: str, start: dt.date | None, end: dt.date | None
    ) -> Select[PriceHistory]:
        start, end = _days(start=start, end=end)
        statement = select(PriceHistory).where(PriceHistory.ticker == normalize_ticker(ticker))
        if start is not None:
            statement = statement.where(PriceHistory.date >= start)
        if end is not None:
            statement = statement.where(PriceHistory.date <= end)
        return statement.order_by(PriceHistory.date)

    @staticmethod
    def _latest_closes_statement(
        dialect: str, tickers: Iterable[str]
    ) -> Select[str, dt.date, Decimal]:
        return latest_closes_statement(dialect, _tickers(tickers))

    @staticmethod
    def _freshness_statement(dialect: str, tickers: Iterable[str] | None) -> Select[str, dt.date]:
        return latest_dates_statement(dialect, None if tickers is None else _tickers(tickers))

    # -- reading: sync and async -------------------------------------------------------------

    def get_range(
        self,
        session: Session,
        ticker: str,
        start: dt.date | None = None,
        end: dt.date | None = None,
    ) -> builtins.list[PriceHistory]:
        """Bars of one ticker from ``start`` to ``end`` (inclusive), oldest first.

        Dates here and in the other reads are what a bar's date means on the way in
        (:func:`database.prices.trading_day`): a date; a datetime or Timestamp stands
        for its calendar date in its own time zone; a date string such as
        ``"2024-01-02"``. Anything else is a ValidationError, before any SQL.
        """
        with self._translating():
            return builtins.list(session.scalars(self._range_statement(ticker, start, end)))

    async_get_range = async_form(get_range)

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
        sql, params = _frame_query(dialect_name(session), ticker, start, end)
        with self._translating():
            rows = fetch_all(session, sql, params)
        return off_greenlet(_frame, rows)

    async_get_frame = async_form(get_frame)

    def _last_bar(
        self, session: Session, ticker: str, on_or_before: dt.date | None
    ) -> Read[PriceHistory | None]:
        """A point read at the driver's cost: one fixed statement through the bare driver
        (on asyncpg under READ COMMITTED no BEGIN or COMMIT round trip: see
        ``driver._driver_of``), the row decoded by the columns' own types into the
        session's instance of it."""
        dialect = session.get_bind().dialect
        encode = _key_encoders(dialect)
        params = [encode[0](normalize_ticker(ticker))]
        if on_or_before is not None:
            params.append(encode[1](on_or_before))
        decode = _bar_decoder(dialect)

        def bar(rows: builtins.list[tuple[Any, ...]]) -> PriceHistory | None:
            return self._persistent(session, decode(rows[0])) if rows else None

        return Read(_LAST_BAR_SQL[on_or_before is not None], params, bar)

    def get_latest(self, session: Session, ticker: str) -> PriceHistory | None:
        """The last stored bar of ``ticker``, or None."""
        return self._read(session, self._last_bar(session, ticker, None))

    async def async_get_latest(self, session: AsyncSession, ticker: str) -> PriceHistory | None:
        """The async form of :meth:`get_latest`: the same read, the driver awaited."""
        return await self._async_read(session, self._last_bar(session.sync_session, ticker, None))

    def get_close_as_of(self, session: Session, ticker: str, day: dt.date) -> PriceHistory | None:
        """The bar of the last trading day on or before ``day``."""
        return self._read(session, self._last_bar(session, ticker, _day(day, "day")))

    async def async_get_close_as_of(
        self, session: AsyncSession, ticker: str, day: dt.date
    ) -> PriceHistory | None:
        """The async form of :meth:`get_close_as_of`: the same read, the driver awaited."""
        read = self._last_bar(session.sync_session, ticker, _day(day, "day"))
        return await self._async_read(session, read)

    def get_latest_closes(self, session: Session, tickers: Iterable[str]) -> dict[str, LatestClose]:
        """The latest close of each ticker that has bars, in one query."""
        with self._translating():
            rows = session.execute(self._latest_closes_statement(dialect_name(session), tickers))
            return {t: LatestClose(t, d, c) for t, d, c in rows}

    async_get_latest_closes = async_form(get_latest_closes)

    def get_freshness(
        self, session: Session, tickers: Iterable[str] | None = None
    ) -> dict[str, dt.date]:
        """The last stored date per ticker (all tickers, or those given that have bars)."""
        with self._translating():
            return {
                t: d
                for t, d in session.execute(
                    self._freshness_statement(dialect_name(session), tickers)
                )
            }

    async_get_freshness = async_form(get_freshness)


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
    """The tickers of a call, sorted, when known without reading it all (else empty).

    Empty for a one-shot iterator too: SQLite's direct path may need to read it twice.
    """
    if isinstance(data, Iterator):
        return []
    if ticker is not None:
        return [normalize_ticker(ticker)]
    if isinstance(data, pd.DataFrame):
        downloaded = download_tickers(data)
        if downloaded is not None:
            return downloaded
        for column in data.columns:
            if str(column).strip().lower() in ("ticker", "symbol"):
                with unreadable_as_validation_error("ticker"):
                    return sorted({normalize_ticker(t) for t in data[column].unique()})
    return []


def _frame_years(data: Any) -> list[dt.date] | None:
    """The first day of each year the bars span, read before they are: a frame's from
    its datetime index or date column, a list's from each row's date; None for other
    iterables (their dates come as they are read) and for dates not yet parsed."""
    if isinstance(data, Sequence) and not isinstance(data, str):
        found = {_row_year(row) for row in data if isinstance(row, Mapping)}
        years = {y for y in found if y is not None}
    elif isinstance(data, pd.DataFrame) and not data.empty:
        column = next((c for c in ("date", "Date") if c in data.columns), None)
        dates = data.index if column is None else data[column]
        if pd.api.types.is_datetime64_any_dtype(dates):
            first, last = dates.min(), dates.max()
        elif dates.dtype == object:  # datetime.date values, say (text is left to the checks)
            try:
                first, last = dates.min(), dates.max()
            except TypeError:  # mixed types: the bar checks say which are bad
                return None
        else:
            return None
        if not (isinstance(first, dt.date) and isinstance(last, dt.date)):
            return None
        years = {y for y in (first.year, last.year) if isinstance(y, int)}  # NaT: NaN
    else:
        return None
    if not years:
        return None
    # A year either side: a time zone's day may be another's, near New Year. Only years
    # market data can have (from 1950 to next year): the dates are not checked yet,
    # and a hostile frame's would make a partition per year; others go to the default.
    low = max(min(years) - 1, _FIRST_MARKET_YEAR)
    high = min(max(years) + 1, dt.datetime.now(dt.UTC).year + 1)
    return [dt.date(y, 1, 1) for y in range(low, high + 1)] or None


_FIRST_MARKET_YEAR = 1950


def _row_year(row: Mapping[str, Any]) -> int | None:
    day = row.get("date", row.get("Date"))
    if isinstance(day, dt.date):
        year = day.year  # pandas' NaT is a datetime whose year is NaN
        return year if isinstance(year, int) else None
    if isinstance(day, str) and day[:4].isdigit():
        return int(day[:4])
    return None  # unreadable: the bar checks say why


def _insert_new(session: Session, dialect: str, params: dict[str, Any]) -> int | None:
    """Insert the staged bars; None if a key exists after all (written by code that
    does not take the ticker locks), to merge instead."""
    try:
        with session.begin_nested():
            return int(session.execute(_INSERT_NEW[dialect], params).rowcount)  # type: ignore[attr-defined]
    except IntegrityError as error:
        if error.orig is not None and _is_unique_violation(error.orig):
            return None
        raise


def _lock_tickers(session: Session, tickers: builtins.list[str]) -> None:
    """Take the PostgreSQL advisory lock of each ticker, in order, until the transaction ends.

    Every price-history writer takes them before it reads or writes the rows
    of those tickers, so writers of a ticker run one after another and never
    wait for each other in a cycle. SQLite has one writer at a time anyway.
    """
    if tickers and dialect_name(session) == "postgresql":
        session.execute(_LOCK_TICKERS, {"tickers": sorted(tickers)})


def _each(batches: Iterator[_Batch]) -> Iterator[_Batch]:
    """The batches, each one prepared on the thread's own stack."""
    while (batch := off_greenlet(next, batches, None)) is not None:
        yield batch


def _any_rows(dialect: str, tickers: builtins.list[str]) -> Select[bool]:
    """Whether any of ``tickers`` has bars: an index probe per ticker (as for the latest
    dates). ``EXISTS (... ticker IN (...))`` became a sequential scan of seconds when
    a bulk load of new tickers outran the table's statistics."""
    return select(latest_dates_statement(dialect, tickers).exists())


# More than either backend takes as bound parameters of one IN (SQLite 32766).
MAX_TICKERS = 10_000


def _day(value: Any, field: str) -> dt.date:
    if value is None:
        raise ValidationError(field, value, "is required")
    return trading_day(value, field)


def _days(**bounds: Any) -> builtins.list[dt.date | None]:
    return [None if v is None else trading_day(v, name) for name, v in bounds.items()]


def _tickers(tickers: Any) -> builtins.list[str]:
    """Sorted distinct tickers of an iterable (not a str, not a mapping) of tickers."""
    if isinstance(tickers, str | bytes | Mapping) or not isinstance(tickers, Iterable):
        raise ValidationError("tickers", tickers, "must be a list of tickers")
    with unreadable_as("tickers", type(tickers).__name__, "cannot be read as a list"):
        given = builtins.list(builtins.iter(tickers))
    if len(given) > MAX_TICKERS:
        raise ValidationError("tickers", tickers, f"has more than {MAX_TICKERS} tickers")
    return sorted({normalize_ticker(t, "tickers") for t in given})


def _frame_query(
    dialect: str, ticker: str, start: dt.date | None, end: dt.date | None
) -> tuple[str, builtins.list[Any]]:
    start, end = _days(start=start, end=end)
    sql = _FRAME_SQL[dialect]
    params: builtins.list[Any] = [normalize_ticker(ticker)]
    for bound, operator in ((start, ">="), (end, "<=")):
        if bound is not None:
            sql += f" AND date {operator} ?"
            params.append(bound.isoformat() if dialect == "sqlite" else bound)
    return sql + " ORDER BY date", params


def _frame(rows: builtins.list[tuple[Any, ...]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=YFINANCE_COLUMNS)
    frame["Date"] = pd.to_datetime(frame["Date"])
    frame["Volume"] = frame["Volume"].astype("Int64")
    return frame.set_index("Date")


def _keep_stored(session: Session, dialect: str) -> None:
    """Fill the staged bars' missing values from the stored bars, by index lookups.

    On PostgreSQL the join is planned with sequential scans off: statistics that
    lag the table (bars copied in moments ago, before autovacuum) made the planner
    take price_history for a few pages and scan all of it once per staged bar.
    """
    if dialect != "postgresql":
        session.execute(_KEEP_STORED[dialect])
        return
    previous = session.scalar(_SEQSCAN)
    session.execute(_SET_SEQSCAN, {"value": "off"})
    session.execute(_KEEP_STORED[dialect])
    session.execute(_SET_SEQSCAN, {"value": previous})


def _driver_name(session: Session) -> str:
    return session.get_bind().dialect.driver


def _stamp(session: Session) -> Any:
    """Now, as the timestamp columns store it on the session's backend."""
    return column_encoder(PriceHistory.__table__.c.created_at, session.get_bind().dialect)(utcnow())


def _date_encoder(session: Session) -> Callable[[dt.date], Any]:
    return column_encoder(PriceHistory.__table__.c.date, session.get_bind().dialect)
