"""The market-data cache: one entry per (ticker, data type, parameters), with a TTL.

Payloads keep their types (DataFrames, Series, Decimals, dates...: see
``database.codec``). The repository stores and loads; deciding when to fetch
(``get_or_fetch``: one fetch however many callers in the process ask for the
same key at the same time) is :mod:`database.services.market_data`'s, to which
the methods of that name delegate. Hits and misses are counted in
``database.monitoring``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import math
from collections.abc import Callable
from typing import Any

from sqlalchemy import Delete, Dialect, Select, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from database import codec
from database.driver import Read, column_encoder
from database.exceptions import InvalidCriteriaError, ValidationError
from database.models import DataType, MarketDataCache
from database.models.base import utcnow
from database.monitoring import market_data_cache as statistics
from database.repositories.base import BaseRepository
from database.repositories.twins import async_form, off_greenlet
from database.repositories.upsert import dialect_name, upsert_statement
from database.transactions import begin_write
from database.validation import (
    exact_int,
    exact_str,
    normalize_ticker,
    to_json_object,
    unreadable_as,
)

DEFAULT_TTL = dt.timedelta(hours=1)
_HIT_SQL = "SELECT data FROM market_data_cache WHERE cache_key = ? AND expires_at > ?"
MISSING: Any = object()
"""What the lookup returns on a miss: a stored None is a hit."""
_REFRESHED = (
    "data",
    "data_source",
    "parameters",
    "cached_at",
    "expires_at",
    "data_quality_score",
    "updated_at",
)


# Far enough for any cache, near enough that now + ttl stays a datetime.
MAX_TTL = dt.timedelta(days=365 * 1000)


def ttl_delta(value: dt.timedelta | float) -> dt.timedelta:
    """A time to live as a timedelta: positive, at most MAX_TTL; a ValidationError if not."""
    # Exact built-in values first: a subclass's comparisons may lie.
    if isinstance(value, dt.timedelta):
        ttl = dt.timedelta.__add__(value, dt.timedelta(0))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = exact_int(value) if isinstance(value, int) else float.__float__(value)
        finite = not isinstance(seconds, float) or math.isfinite(seconds)  # ints: any size
        if not finite or not 0 < seconds <= MAX_TTL.total_seconds():
            raise ValidationError("ttl", value, f"must be positive and at most {MAX_TTL.days} days")
        ttl = dt.timedelta(seconds=seconds)
    else:
        raise ValidationError("ttl", value, "must be a number of seconds or a timedelta")
    if not dt.timedelta(0) < ttl <= MAX_TTL:
        raise ValidationError("ttl", value, f"must be positive and at most {MAX_TTL.days} days")
    return ttl


def _encoded(data: Any) -> Any:
    """The payload as the codec stores it; whatever a hostile object in it raises on
    the way (a time zone that fails, a method that lies) as a ValidationError."""
    with unreadable_as("data", type(data).__name__, "cannot be cached"):
        return codec.encode(data)


@functools.lru_cache(maxsize=8192)
def _digest(ticker: str, kind: str, canonical_parameters: str) -> str:
    # Cached: a cache hit is a hot path, and tickers x kinds are few.
    key = f"{normalize_ticker(ticker)}|{kind}|{canonical_parameters}"
    return hashlib.sha256(key.encode()).hexdigest()


def _data_type(value: DataType | str) -> DataType:
    try:
        return DataType(str.lower(exact_str(value)) if isinstance(value, str) else value)
    except Exception:  # a hostile value's hash or equality may raise anything
        allowed = ", ".join(member.value for member in DataType)
        raise ValidationError("data_type", value, f"must be one of: {allowed}") from None


def data_kind(data_type: DataType | str) -> str:
    """The data type's value, as the statistics count it; a ValidationError if none."""
    return _data_type(data_type).value


@functools.lru_cache(maxsize=8)
def _expires_at_encoder(dialect: Dialect) -> Callable[[Any], Any]:
    return column_encoder(MarketDataCache.__table__.c.expires_at, dialect)


class MarketDataRepository(BaseRepository[MarketDataCache]):
    def __init__(self) -> None:
        super().__init__(MarketDataCache)

    @staticmethod
    def make_cache_key(
        ticker: str, data_type: DataType | str, parameters: dict[str, Any] | None = None
    ) -> str:
        """SHA-256 of the canonical key; no parameters and ``{}`` are the same key."""
        canonical = "{}"
        checked = None if parameters is None else to_json_object(parameters, "parameters")
        if checked:
            try:
                canonical = json.dumps(checked, sort_keys=True, separators=(",", ":"))
            except TypeError as error:  # keys of mixed types cannot be sorted
                raise ValidationError("parameters", parameters, str(error)) from None
        return _digest(normalize_ticker(ticker), _data_type(data_type).value, canonical)

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
        session: Session | AsyncSession,
        ticker: str,
        data_type: DataType | str,
        data: Any,
        parameters: dict[str, Any] | None,
        ttl: dt.timedelta | float,
        data_source: str,
        data_quality_score: Any,
    ) -> Any:
        expires = ttl_delta(ttl)
        now = utcnow()
        # Build (and so validate) a transient entry; its checked values go into the upsert.
        entry = MarketDataCache(
            cache_key=self.make_cache_key(ticker, data_type, parameters),
            ticker=ticker,
            data_type=_data_type(data_type),
            data={"payload": _encoded(data)},
            data_source=data_source,
            parameters=parameters,
            cached_at=now,
            expires_at=now + expires,
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
            dialect_name(session),
            MarketDataCache,
            values,
            conflict=["cache_key"],
            update=_REFRESHED,
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

    @staticmethod
    def _hit_params(session: Session | AsyncSession, key: str) -> list[Any]:
        return [key, _expires_at_encoder(session.get_bind().dialect)(utcnow())]

    @staticmethod
    def _payload(data_type: DataType | str, rows: list[tuple[Any, ...]]) -> Any:
        """The decoded payload of a hit, or ``MISSING``; counts the lookup."""
        statistics.record(_data_type(data_type).value, "hits" if rows else "misses")
        if not rows:
            return MISSING
        stored = rows[0][0]
        entry = json.loads(stored) if isinstance(stored, str | bytes) else stored
        return codec.decode(entry["payload"])

    def _lookup(
        self, session: Session, ticker: str, data_type: DataType | str, parameters: Any
    ) -> Read[Any]:
        """The read of a fresh payload (MISSING if none), counted as a hit or a miss: the
        hot path, one fixed statement through the bare driver."""
        key = self.make_cache_key(ticker, data_type, parameters)

        def payload(rows: list[tuple[Any, ...]]) -> Any:
            return off_greenlet(self._payload, data_type, rows)  # decoding: numpy and pandas

        return Read(_HIT_SQL, self._hit_params(session, key), payload)

    def get_cached_entry(
        self,
        session: Session,
        ticker: str,
        data_type: DataType | str,
        parameters: dict[str, Any] | None = None,
    ) -> MarketDataCache | None:
        """The fresh entry (a model, payload still encoded), or None; not counted."""
        with self._translating():
            return session.scalars(self._fresh_statement(ticker, data_type, parameters)).first()

    async_get_cached_entry = async_form(get_cached_entry)

    def get_cached_data(
        self,
        session: Session,
        ticker: str,
        data_type: DataType | str,
        parameters: dict[str, Any] | None = None,
        default: Any = None,
    ) -> Any:
        """The cached payload if fresh, else ``default``; counted as a hit or a miss."""
        found = self._read(session, self._lookup(session, ticker, data_type, parameters))
        return default if found is MISSING else found

    async def async_get_cached_data(
        self,
        session: AsyncSession,
        ticker: str,
        data_type: DataType | str,
        parameters: dict[str, Any] | None = None,
        default: Any = None,
    ) -> Any:
        """The async form of :meth:`get_cached_data`: the same read, the driver awaited."""
        read = self._lookup(session.sync_session, ticker, data_type, parameters)
        found = await self._async_read(session, read)
        return default if found is MISSING else found

    def cache_market_data(
        self,
        session: Session,
        ticker: str,
        data_type: DataType | str,
        data: Any,
        *,
        parameters: dict[str, Any] | None = None,
        ttl: dt.timedelta | float = DEFAULT_TTL,
        data_source: str = "yfinance",
        data_quality_score: Any = None,
    ) -> MarketDataCache:
        """Store or replace the entry in one native upsert; ``ttl``: seconds or a timedelta."""
        statement = off_greenlet(  # encoding: numpy and pandas
            self._put_statement,
            session,
            ticker,
            data_type,
            data,
            parameters,
            ttl,
            data_source,
            data_quality_score,
        )
        with self._translating():
            begin_write(session)
            entry: MarketDataCache = session.scalars(statement).one()
            return entry

    async_cache_market_data = async_form(cache_market_data)

    def get_or_fetch(
        self,
        session: Session,
        ticker: str,
        data_type: DataType | str,
        fetch: Callable[[], Any],
        **options: Any,
    ) -> Any:
        """The fresh payload, or ``fetch()``'s result, stored for ``ttl``: a shortcut to
        :func:`database.services.get_or_fetch` (``parameters=``, ``ttl=``,
        ``data_source=``), which owns the orchestration. Threads asking for the same
        key at once share one call of ``fetch``; if it raises, nothing is stored and
        every waiting caller gets the error."""
        from database.services.market_data import get_or_fetch  # it imports this module

        return get_or_fetch(session, ticker, data_type, fetch, repository=self, **options)

    async def async_get_or_fetch(
        self,
        session: AsyncSession,
        ticker: str,
        data_type: DataType | str,
        fetch: Any,
        **options: Any,
    ) -> Any:
        """:func:`database.services.async_get_or_fetch`: ``fetch`` may be a coroutine
        function; the tasks of one event loop share one fetch."""
        from database.services.market_data import async_get_or_fetch

        return await async_get_or_fetch(
            session, ticker, data_type, fetch, repository=self, **options
        )

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

    async_invalidate = async_form(invalidate)

    def delete_expired(self, session: Session) -> int:
        with self._translating():
            return int(session.execute(self._expired_statement()).rowcount)  # type: ignore[attr-defined]

    async_delete_expired = async_form(delete_expired)
