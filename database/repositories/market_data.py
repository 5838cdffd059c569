"""The market-data cache: one entry per (ticker, data type, parameters), with a TTL."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from sqlalchemy import Delete, Select, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from database.exceptions import InvalidCriteriaError, ValidationError
from database.models import DataType, MarketDataCache
from database.models.base import utcnow
from database.repositories.base import BaseRepository
from database.repositories.upsert import dialect_name, upsert_statement
from database.validation import normalize_ticker, to_json_object

DEFAULT_TTL = dt.timedelta(hours=1)
_REFRESHED = (
    "data",
    "data_source",
    "parameters",
    "cached_at",
    "expires_at",
    "data_quality_score",
    "updated_at",
)


def _data_type(value: DataType | str) -> DataType:
    try:
        return DataType(value.lower() if isinstance(value, str) else value)
    except ValueError:
        allowed = ", ".join(member.value for member in DataType)
        raise ValidationError("data_type", value, f"must be one of: {allowed}") from None


class MarketDataRepository(BaseRepository[MarketDataCache]):
    def __init__(self) -> None:
        super().__init__(MarketDataCache)

    @staticmethod
    def make_cache_key(
        ticker: str, data_type: DataType | str, parameters: dict[str, Any] | None = None
    ) -> str:
        """SHA-256 of the canonical key; no parameters and ``{}`` are the same key."""
        canonical = json.dumps(
            [
                normalize_ticker(ticker),
                _data_type(data_type).value,
                to_json_object(parameters, "parameters") or {},
            ],
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    # -- statements ------------------------------------------------------------------

    def _fresh_statement(
        self, ticker: str, data_type: DataType | str, parameters: dict[str, Any] | None
    ) -> Select[MarketDataCache]:
        return select(MarketDataCache).where(
            MarketDataCache.cache_key == self.make_cache_key(ticker, data_type, parameters),
            MarketDataCache.expires_at > utcnow(),
        )

    def _put_statement(
        self,
        dialect: str,
        ticker: str,
        data_type: DataType | str,
        data: dict[str, Any],
        parameters: dict[str, Any] | None,
        ttl: dt.timedelta,
        data_source: str,
        data_quality_score: Any,
    ) -> Any:
        if ttl <= dt.timedelta(0):
            raise ValidationError("ttl", ttl, "must be positive")
        now = utcnow()
        # Build (and so validate) a transient entry; its checked values go into the upsert.
        entry = MarketDataCache(
            cache_key=self.make_cache_key(ticker, data_type, parameters),
            ticker=ticker,
            data_type=_data_type(data_type),
            data=data,
            data_source=data_source,
            parameters=parameters,
            cached_at=now,
            expires_at=now + ttl,
            data_quality_score=data_quality_score,
        )
        values = {
            column: getattr(entry, column)
            for column in self.criteria.columns
            if column != "metadata"
        }
        values.update(created_at=now, updated_at=now)
        values.pop("id")
        statement = upsert_statement(
            dialect, MarketDataCache, values, conflict=["cache_key"], update=_REFRESHED
        )
        return statement.returning(MarketDataCache).execution_options(populate_existing=True)

    @staticmethod
    def _invalidate_statement(ticker: str | None, data_type: DataType | str | None) -> Delete:
        if ticker is None and data_type is None:
            raise InvalidCriteriaError(
                "MarketDataCache", "invalidate", "needs a ticker or a data type"
            )
        statement = delete(MarketDataCache)
        if ticker is not None:
            statement = statement.where(MarketDataCache.ticker == normalize_ticker(ticker))
        if data_type is not None:
            statement = statement.where(MarketDataCache.data_type == _data_type(data_type))
        return statement.execution_options(synchronize_session="fetch")

    @staticmethod
    def _expired_statement() -> Delete:
        return (
            delete(MarketDataCache)
            .where(MarketDataCache.expires_at <= utcnow())
            .execution_options(synchronize_session="fetch")
        )

    # -- operations ------------------------------------------------------------------

    def get_cached_data(
        self,
        session: Session,
        ticker: str,
        data_type: DataType | str,
        parameters: dict[str, Any] | None = None,
    ) -> MarketDataCache | None:
        """The fresh entry for the key, or None if absent or expired."""
        with self._translating():
            return session.scalars(self._fresh_statement(ticker, data_type, parameters)).first()

    async def async_get_cached_data(
        self,
        session: AsyncSession,
        ticker: str,
        data_type: DataType | str,
        parameters: dict[str, Any] | None = None,
    ) -> MarketDataCache | None:
        statement = self._fresh_statement(ticker, data_type, parameters)
        with self._translating():
            return (await session.scalars(statement)).first()

    def cache_market_data(
        self,
        session: Session,
        ticker: str,
        data_type: DataType | str,
        data: dict[str, Any],
        *,
        parameters: dict[str, Any] | None = None,
        ttl: dt.timedelta = DEFAULT_TTL,
        data_source: str = "yfinance",
        data_quality_score: Any = None,
    ) -> MarketDataCache:
        """Store or replace the entry for the key in one native upsert."""
        statement = self._put_statement(
            dialect_name(session),
            ticker,
            data_type,
            data,
            parameters,
            ttl,
            data_source,
            data_quality_score,
        )
        with self._translating():
            entry: MarketDataCache = session.scalars(statement).one()
            return entry

    async def async_cache_market_data(
        self,
        session: AsyncSession,
        ticker: str,
        data_type: DataType | str,
        data: dict[str, Any],
        *,
        parameters: dict[str, Any] | None = None,
        ttl: dt.timedelta = DEFAULT_TTL,
        data_source: str = "yfinance",
        data_quality_score: Any = None,
    ) -> MarketDataCache:
        statement = self._put_statement(
            dialect_name(session),
            ticker,
            data_type,
            data,
            parameters,
            ttl,
            data_source,
            data_quality_score,
        )
        with self._translating():
            entry: MarketDataCache = (await session.scalars(statement)).one()
            return entry

    def invalidate(
        self,
        session: Session,
        *,
        ticker: str | None = None,
        data_type: DataType | str | None = None,
    ) -> int:
        """Delete the entries of a ticker and/or data type; returns how many."""
        with self._translating():
            return int(session.execute(self._invalidate_statement(ticker, data_type)).rowcount)  # type: ignore[attr-defined]

    async def async_invalidate(
        self,
        session: AsyncSession,
        *,
        ticker: str | None = None,
        data_type: DataType | str | None = None,
    ) -> int:
        statement = self._invalidate_statement(ticker, data_type)
        with self._translating():
            return int((await session.execute(statement)).rowcount)  # type: ignore[attr-defined]

    def delete_expired(self, session: Session) -> int:
        with self._translating():
            return int(session.execute(self._expired_statement()).rowcount)  # type: ignore[attr-defined]

    async def async_delete_expired(self, session: AsyncSession) -> int:
        with self._translating():
            return int((await session.execute(self._expired_statement())).rowcount)  # type: ignore[attr-defined]
