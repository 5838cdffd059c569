"""Single flight and the get-or-fetch service, with fake fetches and no database.

The helpers (``SingleFlight`` for threads, ``AsyncSingleFlight`` for tasks) are
run with fake calls; the service (``database.services.get_or_fetch``) with an
in-memory stand-in for the repository's store and load.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from database import codec
from database.exceptions import ValidationError
from database.models import DataType
from database.monitoring import market_data_cache as statistics
from database.repositories import MarketDataRepository
from database.repositories.market_data import MISSING
from database.services import AsyncSingleFlight, SingleFlight, async_get_or_fetch, get_or_fetch
from database.services import market_data as service

THREADS = 8
SETTLE = 0.3  # long enough for every started caller to reach the flight and wait


class FetchError(Exception):
    pass


# -- threads ---------------------------------------------------------------------------


def in_threads(count: int, target: Callable[[], Any]) -> list[Any]:
    """Run ``target`` in ``count`` threads started together; their results or errors."""
    start = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = target()
        except BaseException as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()
    return results


def slow(value: Any, calls: list[int], error: BaseException | None = None) -> Callable[[], Any]:
    def call() -> Any:
        calls.append(1)
        time.sleep(SETTLE)
        if error is not None:
            raise error
        return value

    return call


def test_threads_asking_for_one_key_share_one_call() -> None:
    flight = SingleFlight()
    calls: list[int] = []
    value = {"price": 1}
    results = in_threads(THREADS, lambda: flight.run("AAPL", slow(value, calls)))
    assert len(calls) == 1
    assert all(result is value for result in results)
    assert flight.in_flight() == frozenset()


def test_threads_asking_for_other_keys_do_not_wait() -> None:
    flight = SingleFlight()
    release = threading.Event()
    holding = threading.Thread(target=flight.run, args=("a", lambda: release.wait(10)))
    holding.start()
    try:
        while "a" not in flight.in_flight():
            time.sleep(0.001)
        started = time.monotonic()
        assert flight.run("b", lambda: "b") == "b"
        assert time.monotonic() - started < 1
        assert flight.in_flight() == frozenset({"a"})
    finally:
        release.set()
        holding.join(timeout=10)
    assert flight.in_flight() == frozenset()


def test_an_error_reaches_every_waiting_thread_and_the_next_call_calls_again() -> None:
    flight = SingleFlight()
    calls: list[int] = []
    results = in_threads(THREADS, lambda: flight.run("k", slow(None, calls, FetchError("down"))))
    assert len(calls) == 1
    assert all(isinstance(result, FetchError) for result in results)
    assert flight.in_flight() == frozenset()
    assert flight.run("k", slow("back", calls)) == "back"
    assert len(calls) == 2
    assert flight.in_flight() == frozenset()


# -- tasks -----------------------------------------------------------------------------


class Gate:
    """A fake async call that counts its calls and returns once opened."""

    def __init__(self, value: Any = "value", error: BaseException | None = None) -> None:
        self.value = value
        self.error = error
        self.calls = 0
        self.opened = asyncio.Event()
        self.entered = asyncio.Event()

    async def __call__(self) -> Any:
        self.calls += 1
        self.entered.set()
        await self.opened.wait()
        if self.error is not None:
            raise self.error
        return (self.value, self.calls)


async def settle() -> None:
    for _ in range(5):  # let every task started run up to its first wait
        await asyncio.sleep(0)


async def test_tasks_asking_for_one_key_share_one_call() -> None:
    flight = AsyncSingleFlight()
    gate = Gate()
    tasks = [asyncio.create_task(flight.run("k", gate)) for _ in range(THREADS)]
    await settle()
    assert flight.in_flight() == frozenset({"k"})
    gate.opened.set()
    assert await asyncio.gather(*tasks) == [("value", 1)] * THREADS
    assert gate.calls == 1
    assert flight.in_flight() == frozenset()


async def test_tasks_asking_for_other_keys_do_not_wait() -> None:
    flight = AsyncSingleFlight()
    held = Gate()
    holding = asyncio.create_task(flight.run("a", held))
    await held.entered.wait()
    free = Gate()
    free.opened.set()
    assert await asyncio.wait_for(flight.run("b", free), timeout=1) == ("value", 1)
    assert flight.in_flight() == frozenset({"a"})
    held.opened.set()
    await holding
    assert flight.in_flight() == frozenset()


async def test_an_error_reaches_every_waiting_task_and_the_next_call_calls_again() -> None:
    flight = AsyncSingleFlight()
    gate = Gate(error=FetchError("rate limited"))
    tasks = [asyncio.create_task(flight.run("k", gate)) for _ in range(THREADS)]
    await settle()
    gate.opened.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert gate.calls == 1
    assert all(isinstance(result, FetchError) for result in results)
    assert flight.in_flight() == frozenset()
    gate.error = None
    assert await flight.run("k", gate) == ("value", 2)
    assert flight.in_flight() == frozenset()


async def test_a_cancelled_leader_hands_over_to_a_waiting_task() -> None:
    flight = AsyncSingleFlight()
    gate = Gate()
    leader = asyncio.create_task(flight.run("k", gate))
    await gate.entered.wait()
    waiting = [asyncio.create_task(flight.run("k", gate)) for _ in range(3)]
    await settle()
    leader.cancel()
    await settle()  # one waiting task is calling in the leader's place
    assert leader.cancelled()
    assert flight.in_flight() == frozenset({"k"})
    gate.opened.set()
    assert await asyncio.gather(*waiting) == [("value", 2)] * 3  # one call more, shared
    assert gate.calls == 2
    assert flight.in_flight() == frozenset()


async def test_a_cancelled_waiting_task_leaves_the_leader_and_the_others_alone() -> None:
    flight = AsyncSingleFlight()
    gate = Gate()
    leader = asyncio.create_task(flight.run("k", gate))
    await gate.entered.wait()
    quitter, staying = (asyncio.create_task(flight.run("k", gate)) for _ in range(2))
    await settle()
    quitter.cancel()
    await settle()
    assert quitter.cancelled()
    assert not leader.done()
    assert not staying.done()
    gate.opened.set()
    assert await leader == await staying == ("value", 1)
    assert gate.calls == 1
    assert flight.in_flight() == frozenset()


async def test_the_only_task_cancelled_leaves_nothing_in_flight() -> None:
    flight = AsyncSingleFlight()
    gate = Gate()
    leader = asyncio.create_task(flight.run("k", gate))
    await gate.entered.wait()
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert flight.in_flight() == frozenset()
    gate.opened.set()
    assert await flight.run("k", gate) == ("value", 2)


def test_each_loop_has_flights_of_its_own() -> None:
    flight = AsyncSingleFlight()

    async def ask() -> Any:
        gate = Gate()
        gate.opened.set()
        return await flight.run("k", gate)

    assert asyncio.run(ask()) == asyncio.run(ask()) == ("value", 1)


# -- the service, over an in-memory store -------------------------------------------


class InMemoryMarketData(MarketDataRepository):
    """The repository's store and load in a dict; its keys, checks and counting as they are."""

    def __init__(self) -> None:
        super().__init__()
        self.stored: dict[str, Any] = {}

    def get_cached_data(
        self, session: Any, ticker: str, data_type: Any, parameters: Any = None, default: Any = None
    ) -> Any:
        key = self.make_cache_key(ticker, data_type, parameters)
        rows = [(self.stored[key],)] if key in self.stored else []
        found = self._payload(data_type, rows)  # counts the hit or the miss
        return default if found is MISSING else found

    async def async_get_cached_data(  # type: ignore[override]
        self, session: Any, ticker: str, data_type: Any, parameters: Any = None, default: Any = None
    ) -> Any:
        await asyncio.sleep(0)
        return self.get_cached_data(session, ticker, data_type, parameters, default)

    def cache_market_data(
        self, session: Any, ticker: str, data_type: Any, data: Any, **options: Any
    ) -> None:
        key = self.make_cache_key(ticker, data_type, options.get("parameters"))
        self.stored[key] = {"payload": codec.encode(data)}

    async def async_cache_market_data(
        self, session: Any, ticker: str, data_type: Any, data: Any, **options: Any
    ) -> None:
        await asyncio.sleep(0)
        self.cache_market_data(session, ticker, data_type, data, **options)


@pytest.fixture
def store() -> Iterator[InMemoryMarketData]:
    statistics.reset()
    yield InMemoryMarketData()
    assert service.thread_flights.in_flight() == frozenset()


def counts(kind: str = "stock_info") -> tuple[int, int, int, int]:
    c = statistics.snapshot()[kind]
    return (c.hits, c.misses, c.fetches, c.fetch_errors)


def test_the_service_fetches_on_a_miss_only_and_counts_as_the_repository_did(
    store: InMemoryMarketData,
) -> None:
    fetched: list[int] = []

    def fetch() -> dict[str, int]:
        fetched.append(1)
        return {"price": 100}

    for _ in range(2):
        assert get_or_fetch(None, "AAPL", "stock_info", fetch, repository=store) == {"price": 100}
    assert len(fetched) == 1
    assert len(store.stored) == 1
    assert counts() == (1, 1, 1, 0)


def test_a_stored_none_is_a_hit_not_a_miss(store: InMemoryMarketData) -> None:
    fetched: list[int] = []

    def fetch() -> None:
        fetched.append(1)

    for _ in range(3):
        assert get_or_fetch(None, "AAPL", DataType.NEWS, fetch, repository=store) is None
    assert len(fetched) == 1
    assert counts("news") == (2, 1, 1, 0)


def test_a_failing_fetch_stores_nothing_counts_an_error_and_is_fetched_again(
    store: InMemoryMarketData,
) -> None:
    def failing() -> Any:
        raise FetchError("yfinance is down")

    with pytest.raises(FetchError):
        get_or_fetch(None, "AAPL", "stock_info", failing, repository=store)
    assert store.stored == {}
    assert get_or_fetch(None, "AAPL", "stock_info", lambda: 1, repository=store) == 1
    assert counts() == (0, 2, 2, 1)


@pytest.mark.parametrize("fetch", [5, None, "fetch"], ids=repr)
def test_a_fetch_that_is_not_callable_is_refused(store: InMemoryMarketData, fetch: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        get_or_fetch(None, "AAPL", "stock_info", fetch, repository=store)
    assert caught.value.field == "fetch"


def test_threads_share_one_fetch_through_the_service(store: InMemoryMarketData) -> None:
    fetched: list[int] = []
    fetch = slow({"v": 1}, fetched)
    results = in_threads(
        THREADS,
        lambda: get_or_fetch(None, "AAPL", "analyst_data", fetch, repository=store),
    )
    assert results == [{"v": 1}] * THREADS
    assert len(fetched) == 1
    assert counts("analyst_data")[2:] == (1, 0)


async def test_tasks_share_one_fetch_through_the_service(store: InMemoryMarketData) -> None:
    gate = Gate({"v": 1})

    async def ask() -> Any:
        return await async_get_or_fetch(None, "AAPL", "news", gate, repository=store)

    tasks = [asyncio.create_task(ask()) for _ in range(THREADS)]
    await settle()
    gate.opened.set()
    assert await asyncio.gather(*tasks) == [({"v": 1}, 1)] * THREADS
    assert gate.calls == 1
    assert await ask() == ({"v": 1}, 1)  # stored: a hit, not a fetch
    assert counts("news") == (1, 1, 1, 0)
    assert service.task_flights.in_flight() == frozenset()


async def test_an_async_fetch_error_reaches_every_task_and_nothing_is_stored(
    store: InMemoryMarketData,
) -> None:
    gate = Gate(error=FetchError("rate limited"))

    async def ask() -> Any:
        return await async_get_or_fetch(None, "AAPL", "news", gate, repository=store)

    tasks = [asyncio.create_task(ask()) for _ in range(3)]
    await settle()
    gate.opened.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(result, FetchError) for result in results)
    assert gate.calls == 1
    assert store.stored == {}
    assert counts("news")[2:] == (1, 1)
    assert service.task_flights.in_flight() == frozenset()


async def test_a_plain_function_is_a_fetch_for_the_async_service(store: InMemoryMarketData) -> None:
    found = await async_get_or_fetch(None, "AAPL", "news", lambda: [1, 2], repository=store)
    assert found == [1, 2]


def test_the_repository_methods_delegate_to_the_service(store: InMemoryMarketData) -> None:
    assert store.get_or_fetch(None, "AAPL", "stock_info", lambda: {"a": 1}, ttl=60) == {"a": 1}
    assert store.get_or_fetch(None, "AAPL", "stock_info", lambda: {"a": 2}) == {"a": 1}
    assert asyncio.run(store.async_get_or_fetch(None, "MSFT", "news", lambda: 3)) == 3
    assert counts() == (1, 1, 1, 0)
