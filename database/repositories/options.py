"""Option chains: snapshots stored once per contract, read back as of a time.

A chain is staged in a temporary table through the bare driver (``COPY`` on
PostgreSQL, ``executemany`` on SQLite; see :mod:`database.driver`), then moved
with one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` in conflict-key order,
so concurrent writers of overlapping contracts wait for each other's keys in
one order and never deadlock.
"""

from __future__ import annotations

import builtins
import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sqlalchemy import Delete, Select, delete, select, text
from sqlalchemy.orm import Session

from database.driver import encode_rows, write_rows
from database.models import OptionsData
from database.models.base import utcnow
from database.options import OptionsValidationError, RejectedContract, prepare_contracts
from database.repositories.base import BaseRepository
from database.repositories.latest import latest_snapshot_time
from database.repositories.twins import async_form, off_greenlet
from database.row_security import share_temporary_table
from database.transactions import begin_write
from database.validation import normalize_ticker, to_date, to_utc

STAGING = "options_data_staging"
_COLUMNS = tuple(column.name for column in OptionsData.__table__.columns)
_NAMES = ", ".join(_COLUMNS)
_STAGING_DDL = {
    "postgresql": f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING} (LIKE options_data)"
    " ON COMMIT DELETE ROWS",
    "sqlite": f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING} AS SELECT * FROM options_data"
    " WHERE false",
}
_CLEAR = {"postgresql": f"TRUNCATE {STAGING}", "sqlite": f"DELETE FROM {STAGING}"}
# Rows are inserted (and their keys locked) in one order for every writer. A
# snapshot stored again inserts nothing: one row per (contract, fetched_at).
# (SQLite has one writer at a time.)
_KEY_ORDER = {"postgresql": ' ORDER BY contract_symbol COLLATE "C", fetched_at', "sqlite": ""}
_MOVE = {
    dialect: text(
        f"INSERT INTO options_data ({_NAMES}) SELECT {_NAMES} FROM {STAGING} WHERE true"
        f"{order} ON CONFLICT (contract_symbol, fetched_at) DO NOTHING"
    )
    for dialect, order in _KEY_ORDER.items()
}


@dataclass(frozen=True)
class ChainResult:
    """What storing a chain did; ``rejected`` is filled only with ``skip_invalid=True``."""

    fetched_at: dt.datetime
    inserted: int
    already_stored: int
    rejected: list[RejectedContract] = field(default_factory=list)


class OptionsDataRepository(BaseRepository[OptionsData]):
    def __init__(self) -> None:
        super().__init__(OptionsData)

    # -- statements ------------------------------------------------------------------

    def _prepare(
        self,
        ticker: str,
        calls: pd.DataFrame | None,
        puts: pd.DataFrame | None,
        rows: Iterable[Mapping[str, Any]] | None,
        expiration: dt.date | None,
        underlying_price: Any,
        fetched_at: dt.datetime | None,
        skip_invalid: bool,
    ) -> tuple[dt.datetime, builtins.list[dict[str, Any]], builtins.list[RejectedContract]]:
        moment = to_utc(fetched_at, "fetched_at") if fetched_at is not None else utcnow()
        contracts, rejected = prepare_contracts(
            ticker,
            calls=calls,
            puts=puts,
            rows=rows,
            expiration=expiration,
            underlying_price=underlying_price,
        )
        if rejected and not skip_invalid:
            raise OptionsValidationError(rejected)
        bad = {r.contract_symbol for r in rejected if r.field == "contract_symbol"}
        contracts = [
            dict(c, fetched_at=moment) for c in contracts if c["contract_symbol"] not in bad
        ]
        return moment, contracts, rejected

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
        prepared = off_greenlet(  # pandas work (see twins.off_greenlet)
            self._prepare,
            ticker,
            calls,
            puts,
            rows,
            expiration,
            underlying_price,
            fetched_at,
            skip_invalid,
        )
        return self._store(session, *prepared)

    async_store_chain = async_form(store_chain)

    def _store(
        self,
        session: Session,
        moment: dt.datetime,
        contracts: builtins.list[dict[str, Any]],
        rejected: builtins.list[RejectedContract],
    ) -> ChainResult:
        if not contracts:
            return ChainResult(moment, 0, 0, rejected)
        dialect = session.get_bind().dialect
        now = utcnow()
        stamps = {"created_at": now, "updated_at": now}
        in_key_order = sorted(contracts, key=lambda c: c["contract_symbol"])
        rows = encode_rows(
            OptionsData.__table__,
            _COLUMNS,
            dialect,
            ({"id": uuid.uuid4(), **stamps, **contract} for contract in in_key_order),
        )
        with self._translating():
            begin_write(session)
            session.execute(text(_STAGING_DDL[dialect.name]))
            if dialect.name == "postgresql":
                share_temporary_table(session, STAGING)
            session.execute(text(_CLEAR[dialect.name]))
            write_rows(session, STAGING, _COLUMNS, rows)
            inserted = int(session.execute(_MOVE[dialect.name]).rowcount)  # type: ignore[attr-defined]
            session.execute(text(_CLEAR[dialect.name]))
        return ChainResult(moment, inserted, len(contracts) - inserted, rejected)

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
        """Delete contracts that expired before ``today`` in one statement; returns how many."""
        with self._translating():
            return int(session.execute(self._expired_statement(today)).rowcount)  # type: ignore[attr-defined]

    async_purge_expired = async_form(purge_expired)
