"""Option chains: snapshots stored once per contract, read back as of a time.

A chain is checked vectorised (:func:`database.options.check_chain`) and staged in
a temporary table through the bare driver (``COPY`` on PostgreSQL, ``executemany``
on SQLite; see :mod:`database.driver`): decimals as integer units of their
column's scale (what SQLite stores; PostgreSQL scales them back exactly, as
``price_history`` does), every other value as its column's own encoder sends it
(only the columns some contract has a value in; the chain's ticker, ``fetched_at``
and stamps are parameters). One ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``
in conflict-key order then moves them, so concurrent writers of overlapping
contracts wait for each other's keys in one order and never deadlock.
"""

from __future__ import annotations

import builtins
import datetime as dt
import functools
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sqlalchemy import ColumnElement, Delete, Dialect, Select, TextClause, delete, select, text
from sqlalchemy.orm import Session

from database import partitions
from database.driver import column_encoder, write_rows
from database.models import OptionsData
from database.models.base import utcnow
from database.options import (
    DECIMAL_FIELDS,
    SCALES,
    OptionsValidationError,
    RejectedContract,
    check_chain,
)
from database.replicas import use_primary
from database.repositories.base import BaseRepository
from database.repositories.latest import latest_snapshot_time
from database.repositories.twins import async_form, off_greenlet
from database.repositories.upsert import dialect_name
from database.row_security import share_temporary_table
from database.transactions import begin_write, staging_table_ddl
from database.validation import normalize_ticker, to_date, to_utc

STAGING = "options_data_units"
# Each contract's values, staged in this order (a call stages those that some
# contract has); the decimals in integer units (BIGINT). The chain's constants
# (ticker, fetched_at, the stamps) are parameters of the move.
_PER_ROW = (
    "id",
    "contract_symbol",
    "option_type",
    "expiration",
    "last_trade_date",
    "volume",
    "open_interest",
    *DECIMAL_FIELDS,
)
_ALWAYS = ("id", "contract_symbol", "option_type", "expiration")
_CONSTANTS = ("ticker", "fetched_at", "created_at", "updated_at")
if {*_PER_ROW, *_CONSTANTS} != {column.name for column in OptionsData.__table__.columns}:
    raise TypeError("options_data's columns and the chain's staging columns differ")
_PG_TYPES = {
    "id": "uuid",
    "ticker": "text",
    "contract_symbol": "text",
    "option_type": "text",
    "expiration": "date",
    "last_trade_date": "timestamptz",
    "volume": "bigint",
    "open_interest": "bigint",
    **dict.fromkeys(DECIMAL_FIELDS, "bigint"),
    **dict.fromkeys(("fetched_at", "created_at", "updated_at"), "timestamptz"),
}
_STAGING_DDL = {
    "postgresql": f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING} ("
    + ", ".join(f"{c} {_PG_TYPES[c]}" for c in _PER_ROW)
    + ") ON COMMIT DELETE ROWS",
    # SQLite stores the decimals in these units already.
    "sqlite": f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING} AS SELECT {', '.join(_PER_ROW)}"
    " FROM options_data WHERE false",
}
# Before each chain: what an earlier chain of the transaction staged. (PostgreSQL's
# ON COMMIT DELETE ROWS empties it at the end; a DELETE of an empty table costs
# nothing, where a TRUNCATE makes a new file.)
_CLEAR = f"DELETE FROM {STAGING}"
# Rows are inserted (and their keys locked) in one order for every writer (one
# fetched_at per call: the contract symbols' order). A snapshot stored again
# inserts nothing: one row per (contract, fetched_at). (SQLite has one writer at
# a time.)
_KEY_ORDER = {"postgresql": ' ORDER BY contract_symbol COLLATE "C"', "sqlite": ""}


def _moved(column: str, dialect: str) -> str:
    """A staged value as the table takes it: decimals scaled back (exactly) on PostgreSQL;
    a constant is a parameter (typed on PostgreSQL, where a SELECT's parameter is text)."""
    if column in _CONSTANTS:
        return (
            f"CAST(:{column} AS {_PG_TYPES[column]})" if dialect == "postgresql" else f":{column}"
        )
    if dialect == "postgresql" and column in SCALES:
        return f"{column} * 1e-{SCALES[column]}"
    return column


@functools.lru_cache(maxsize=256)
def _move(dialect: str, staged: tuple[str, ...]) -> TextClause:
    names = (*staged, *_CONSTANTS)
    return text(
        f"INSERT INTO options_data ({', '.join(names)}) SELECT "
        + ", ".join(_moved(c, dialect) for c in names)
        + f" FROM {STAGING} WHERE true{_KEY_ORDER[dialect]}"
        " ON CONFLICT (contract_symbol, fetched_at) DO NOTHING"
    )


@dataclass(frozen=True)
class ChainResult:
    """What storing a chain did; ``rejected`` is filled only with ``skip_invalid=True``."""

    fetched_at: dt.datetime
    inserted: int
    already_stored: int
    rejected: list[RejectedContract] = field(default_factory=list)


@dataclass(frozen=True)
class _Staged:
    fetched_at: dt.datetime
    columns: tuple[str, ...]  # of _PER_ROW, in its order
    rows: list[tuple[Any, ...]]  # driver rows of those columns
    constants: dict[str, Any]  # driver values of _CONSTANTS
    rejected: list[RejectedContract]


def _encoded(values: list[Any], column: ColumnElement[Any], dialect: Dialect) -> list[Any]:
    """Each value as its column stores it (None as NULL), each distinct value encoded once
    (by ``driver.column_encoder``; not at all where the column's type has no bind
    processing, which the encoder then leaves the values as they are)."""
    if column.type.dialect_impl(dialect).bind_processor(dialect) is None:
        return values
    encode = column_encoder(column, dialect)
    known: dict[Any, Any] = {}
    encoded: list[Any] = []
    for value in values:
        if value is None:
            encoded.append(None)
        elif value in known:
            encoded.append(known[value])
        else:
            encoded.append(known.setdefault(value, encode(value)))
    return encoded


def _new_ids(count: int) -> list[uuid.UUID]:
    """``count`` random (version 4) UUIDs, as ``uuid.uuid4`` makes them, from one read
    of the system's random source."""
    random = os.urandom(16 * count)
    return [uuid.UUID(bytes=random[i : i + 16], version=4) for i in range(0, 16 * count, 16)]


class OptionsDataRepository(BaseRepository[OptionsData]):
    def __init__(self) -> None:
        super().__init__(OptionsData)

    # -- statements ------------------------------------------------------------------

    def _prepare(
        self,
        dialect: Dialect,
        ticker: str,
        calls: pd.DataFrame | None,
        puts: pd.DataFrame | None,
        rows: Iterable[Mapping[str, Any]] | None,
        expiration: dt.date | None,
        underlying_price: Any,
        fetched_at: dt.datetime | None,
        skip_invalid: bool,
    ) -> _Staged:
        """The chain checked, as driver rows for the staging table (see ``_STAGED``)."""
        moment = to_utc(fetched_at, "fetched_at") if fetched_at is not None else utcnow()
        checked = check_chain(
            ticker,
            calls=calls,
            puts=puts,
            rows=rows,
            expiration=expiration,
            underlying_price=underlying_price,
        )
        rejected = checked.rejected
        if rejected and not skip_invalid:
            raise OptionsValidationError(rejected)
        contracts = checked.contracts
        bad = {r.contract_symbol for r in rejected if r.field == "contract_symbol"}
        if bad:
            contracts = contracts[~contracts["contract_symbol"].isin(bad)]
        count = len(contracts)
        columns = OptionsData.__table__.c
        now = utcnow()
        constants = {"ticker": checked.ticker, "fetched_at": moment, "created_at": now}
        constants["updated_at"] = now
        cells: dict[str, list[Any]] = {"id": _encoded(_new_ids(count), columns.id, dialect)}
        for name in _PER_ROW[1:]:
            values = contracts[name].tolist()
            if name in _ALWAYS or values.count(None) < count:
                # The decimals as they are: integer units, the staging unit.
                cells[name] = values if name in SCALES else _encoded(values, columns[name], dialect)
        staged = tuple(name for name in _PER_ROW if name in cells)
        driver_rows = list(zip(*(cells[name] for name in staged), strict=True))
        encoded_constants = {
            name: column_encoder(columns[name], dialect)(value) for name, value in constants.items()
        }
        return _Staged(moment, staged, driver_rows, encoded_constants, rejected)

    @staticmethod
    def _snapshot(ticker: str, expiration: dt.date, as_of: dt.datetime | None) -> Any:
        return latest_snapshot_time(ticker, expiration, as_of)

    def _chain_statement(
        self, ticker: str, expiration: dt.date, as_of: dt.datetime | None
    ) -> Select[OptionsData]:
        expiration = to_date(expiration, "expiration")
        return (
            select(OptionsData)
            .where(
                OptionsData.ticker == normalize_ticker(ticker),
                OptionsData.expiration == expiration,
                OptionsData.fetched_at == self._snapshot(ticker, expiration, as_of),
            )
            .order_by(OptionsData.option_type, OptionsData.strike)
        )

    @staticmethod
    def _expirations_statement(ticker: str, today: dt.date | None) -> Select[dt.date]:
        today = None if today is None else to_date(today, "today")
        return (
            select(OptionsData.expiration)
            .where(
                OptionsData.ticker == normalize_ticker(ticker),
                OptionsData.expiration >= (today or utcnow().date()),
            )
            .distinct()
            .order_by(OptionsData.expiration)
        )

    @staticmethod
    def _expired_statement(today: dt.date | None) -> Delete:
        today = None if today is None else to_date(today, "today")
        return (
            delete(OptionsData)
            .where(OptionsData.expiration < (today or utcnow().date()))
            .execution_options(synchronize_session="fetch")
        )

    # -- operations ------------------------------------------------------------------

    def store_chain(
        self,
        session: Session,
        ticker: str,
        *,
        calls: pd.DataFrame | None = None,
        puts: pd.DataFrame | None = None,
        rows: Iterable[Mapping[str, Any]] | None = None,
        expiration: dt.date | None = None,
        underlying_price: Any = None,
        fetched_at: dt.datetime | None = None,
        skip_invalid: bool = False,
    ) -> ChainResult:
        """Store one chain snapshot from yfinance's ``calls``/``puts`` frames or dict rows.

        Every contract gets ``fetched_at`` (default: now); storing the same
        snapshot again inserts nothing. A bad contract (a missing strike, a
        negative bid...) rejects the call unless ``skip_invalid=True``.
        """
        dialect = session.get_bind().dialect
        staged = off_greenlet(  # pandas work (see twins.off_greenlet)
            self._prepare,
            dialect,
            ticker,
            calls,
            puts,
            rows,
            expiration,
            underlying_price,
            fetched_at,
            skip_invalid,
        )
        return self._store(session, dialect.name, staged)

    async_store_chain = async_form(store_chain)

    def _store(self, session: Session, dialect: str, staged: _Staged) -> ChainResult:
        if not staged.rows:
            return ChainResult(staged.fetched_at, 0, 0, staged.rejected)
        with self._translating():
            fetched_day = staged.fetched_at.astimezone(dt.UTC).date()
            if dialect == "postgresql" and 1950 <= fetched_day.year <= utcnow().year + 1:
                # Its monthly partition, made before the rows come (only for times a
                # snapshot can have: others go to the default partition).
                partitions.prepare(session, partitions.OPTIONS_DATA, [fetched_day])
            begin_write(session)
            session.execute(text(staging_table_ddl(session, _STAGING_DDL[dialect])))
            if dialect == "postgresql":
                share_temporary_table(session, STAGING)
            session.execute(text(_CLEAR))
            write_rows(session, STAGING, staged.columns, staged.rows)
            move = _move(dialect, staged.columns)
            inserted = int(session.execute(move, staged.constants).rowcount)  # type: ignore[attr-defined]
        already = len(staged.rows) - inserted
        return ChainResult(staged.fetched_at, inserted, already, staged.rejected)

    def get_chain(
        self,
        session: Session,
        ticker: str,
        expiration: dt.date,
        *,
        as_of: dt.datetime | None = None,
    ) -> builtins.list[OptionsData]:
        """The latest snapshot (at or before ``as_of``) of one expiration, calls then puts."""
        with self._translating():
            return builtins.list(session.scalars(self._chain_statement(ticker, expiration, as_of)))

    async_get_chain = async_form(get_chain)

    def get_expirations(
        self, session: Session, ticker: str, *, today: dt.date | None = None
    ) -> builtins.list[dt.date]:
        """Expirations on or after ``today`` (UTC) with stored contracts, soonest first."""
        with self._translating():
            return builtins.list(session.scalars(self._expirations_statement(ticker, today)))

    async_get_expirations = async_form(get_expirations)

    def purge_expired(self, session: Session, *, today: dt.date | None = None) -> int:
        """Delete contracts that expired before ``today`` (UTC); returns how many.

        On PostgreSQL's partitioned table a month of snapshots whose contracts all
        expired is dropped whole (DETACH and DROP, no row-by-row DELETE); the rest
        go in one DELETE.
        """
        day = utcnow().date() if today is None else to_date(today, "today")
        use_primary(session)  # a write, even in a readonly session
        with self._translating():
            dropped = 0
            if dialect_name(session) == "postgresql":
                dropped = partitions.drop_expired_options(session.connection(), day)
            return dropped + int(session.execute(self._expired_statement(day)).rowcount)  # type: ignore[attr-defined]

    async_purge_expired = async_form(purge_expired)
