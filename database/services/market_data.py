"""Get-or-fetch over the market-data cache: look up, on a miss fetch once, store.

The repository (:class:`~database.repositories.MarketDataRepository`) only
stores and loads; this module decides when to call the fetcher. Callers in one
process asking for the same key at the same time share one call of it (threads
through :class:`SingleFlight`, the tasks of a loop through
:class:`AsyncSingleFlight`). Lookups are counted as hits or misses by the
repository, fetches and failed fetches here, in
``database.monitoring.market_data_cache``.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from database.exceptions import ValidationError
from database.models import DataType
from database.monitoring import market_data_cache as statistics
from database.repositories.market_data import (
    DEFAULT_TTL,
    MISSING,
    MarketDataRepository,
    data_kind,
)
from database.services.single_flight import AsyncSingleFlight, SingleFlight

# Process-wide: every repository and session of the process shares them.
thread_flights = SingleFlight()
task_flights = AsyncSingleFlight()
_repository = MarketDataRepository()


def _check_fetch(fetch: Any) -> None:
    if not callable(fetch):
        raise ValidationError("fetch", fetch, "must be a callable that returns the data")


@contextmanager
def _counted(kind: str) -> Iterator[None]:
    """Count a fetch, and a fetch error if the block raises."""
    statistics.record(kind, "fetches")
    try:
        yield
    except BaseException:
        statistics.record(kind, "fetch_errors")
        raise


def get_or_fetch(
    session: Session,
    ticker: str,
    data_type: DataType | str,
    fetch: Callable[[], Any],
    *,
    parameters: dict[str, Any] | None = None,
    ttl: dt.timedelta | float = DEFAULT_TTL,
    data_source: str = "yfinance",
    repository: MarketDataRepository | None = None,
) -> Any:
    """The fresh payload, or ``fetch()``'s result, stored for ``ttl``.

    Threads asking for the same key at once share one call of ``fetch``. If it
    raises, nothing is stored and every waiting caller gets the error.
    """
    _check_fetch(fetch)
    market = _repository if repository is None else repository
    key = market.make_cache_key(ticker, data_type, parameters)

    def load_or_fetch() -> Any:
        found = market.get_cached_data(session, ticker, data_type, parameters, MISSING)
        if found is MISSING:
            with _counted(data_kind(data_type)):
                found = fetch()
            store(session, ticker, data_type, found)
        return found

    store = functools.partial(
        market.cache_market_data, parameters=parameters, ttl=ttl, data_source=data_source
    )
    return thread_flights.run(key, load_or_fetch)


async def async_get_or_fetch(
    session: AsyncSession,
    ticker: str,
    data_type: DataType | str,
    fetch: Callable[[], Any | Awaitable[Any]],
    *,
    parameters: dict[str, Any] | None = None,
    ttl: dt.timedelta | float = DEFAULT_TTL,
    data_source: str = "yfinance",
    repository: MarketDataRepository | None = None,
) -> Any:
    """As :func:`get_or_fetch`; ``fetch`` may be a coroutine function. Tasks share one fetch.

    If the task fetching is cancelled, those waiting for it are not: one of them
    fetches in its place.
    """
    _check_fetch(fetch)
    market = _repository if repository is None else repository
    key = market.make_cache_key(ticker, data_type, parameters)

    async def load_or_fetch() -> Any:
        found = await market.async_get_cached_data(session, ticker, data_type, parameters, MISSING)
        if found is MISSING:
            with _counted(data_kind(data_type)):
                result = fetch()
                found = await result if inspect.isawaitable(result) else result
            await store(session, ticker, data_type, found)
        return found

    store = functools.partial(
        market.async_cache_market_data, parameters=parameters, ttl=ttl, data_source=data_source
    )
    return await task_flights.run(key, load_or_fetch)
