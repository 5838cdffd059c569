"""The market-data cache given hostile input: typed errors, nothing written, both backends."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from database.exceptions import ValidationError
from database.repositories import MarketDataRepository
from database.repositories.market_data import ttl_delta
from database.validation import MAX_JSON_DEPTH
from tests.conftest import RawSQL
from tests.integration.conftest import UnitOfWork
from tests.property.strategies import LyingInt, RaisingZone, UnreadableDict, nested

# Every PostgreSQL test here runs once more through PgBouncer (transaction pooling).
pytestmark = pytest.mark.pgbouncer

market = MarketDataRepository()


@pytest.mark.parametrize("fetch", [5, None, "fetch", {"a": 1}], ids=repr)
async def test_a_fetch_that_is_not_callable_is_refused(
    uow: UnitOfWork, sql: RawSQL, fetch: Any
) -> None:
    with pytest.raises(ValidationError) as caught:
        await uow(market.get_or_fetch, "AAPL", "stock_info", fetch)
    assert caught.value.field == "fetch"
    assert sql.count("market_data_cache") == 0


async def test_an_error_of_the_fetch_itself_passes_through(uow: UnitOfWork) -> None:
    def failing() -> Any:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await uow(market.get_or_fetch, "AAPL", "stock_info", failing)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 400, 5000])
async def test_documents_nested_too_deeply_are_refused(
    uow: UnitOfWork, sql: RawSQL, depth: int
) -> None:
    with pytest.raises(ValidationError, match="nested too deeply") as caught:
        await uow(
            market.cache_market_data, "AAPL", "stock_info", {"a": 1}, parameters=nested(depth)
        )
    assert caught.value.field == "parameters"
    with pytest.raises(ValidationError, match="nested") as caught:
        await uow(market.cache_market_data, "AAPL", "stock_info", nested(depth))
    assert caught.value.field == "data"
    assert sql.count("market_data_cache") == 0


@pytest.mark.parametrize(
    ("kind", "value", "field"),
    [
        ("parameters", UnreadableDict(a=1), None),
        ("ttl", LyingInt(10**30), "ttl"),
        ("data", {"at": dt.datetime(2024, 1, 1, tzinfo=RaisingZone())}, "data"),
    ],
    ids=["dict-subclass-parameters", "lying-int-ttl", "failing-time-zone"],
)
async def test_hostile_objects_are_validation_errors_or_read_exactly(
    uow: UnitOfWork, kind: str, value: Any, field: str | None
) -> None:
    call: dict[str, Any] = {"parameters": None, "ttl": 60, "data": {"a": 1}}
    call[kind] = value
    data = call.pop("data")
    if field is None:  # read through dict's own items: the same key as a plain dict
        await uow(market.cache_market_data, "AAPL", "stock_info", data, **call)
        found = await uow(market.get_cached_data, "AAPL", "stock_info", {"a": 1})
        assert found == {"a": 1}
        return
    with pytest.raises(ValidationError) as caught:
        await uow(market.cache_market_data, "AAPL", "stock_info", data, **call)
    assert caught.value.field == field


def test_a_ttl_too_large_for_a_float_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as caught:
        ttl_delta(10**400)
    assert caught.value.field == "ttl"
