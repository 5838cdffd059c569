"""Pooled connections are pinged at checkout only after sitting idle (DB_POOL_PING_AFTER).

A connection used again at once costs no round trip; one idle past the
threshold is checked first, and replaced without a word to the caller if it
died meanwhile. One that died under the threshold is found by the next
statement: a typed, retryable error, after which the next session works.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Dialect, text

from database import DatabaseManager
from database.exceptions import DatabaseError, DatabaseUnavailableError
from database.repositories import MarketDataRepository

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

IDLE = 0.2  # the threshold of the tests that wait past it (seconds)


@pytest.fixture
def app_name() -> str:
    return f"ping-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_manager(database_url: str, app_name: str) -> Iterator[Callable[..., DatabaseManager]]:
    """A manager with one pooled connection per engine, so that every session reuses it."""
    made: list[DatabaseManager] = []

    def make(**settings: Any) -> DatabaseManager:
        settings = {"pool_size": 1, "max_overflow": 0, **settings}
        manager = DatabaseManager(database_url, application_name=app_name, **settings)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.close()


class Pings:
    """Counts the round trips of ``dialect.do_ping`` (the pool's checks) on one engine."""

    def __init__(self, dialect: Dialect, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = dialect.do_ping

        def counting(dbapi_connection: Any) -> bool:
            self.count += 1
            return original(dbapi_connection)

        monkeypatch.setattr(dialect, "do_ping", counting)


def sync_select(manager: DatabaseManager) -> int:
    with manager.get_session() as session:
        return int(session.execute(text("SELECT 1")).scalar_one())


async def async_select(manager: DatabaseManager) -> int:
    async with manager.get_async_session() as session:
        return int((await session.execute(text("SELECT 1"))).scalar_one())


async def select_in(mode: str, manager: DatabaseManager) -> int:
    """``SELECT 1`` in a session of its own, of the sync or the async form."""
    if mode == "sync":
        return sync_select(manager)
    return await async_select(manager)


async def pings_of(mode: str, manager: DatabaseManager, monkeypatch: pytest.MonkeyPatch) -> Pings:
    """Count the pings of the engine of ``mode`` (opening it with a first session)."""
    await select_in(mode, manager)
    engine = manager.engine if mode == "sync" else manager.async_engine.sync_engine
    return Pings(engine.dialect, monkeypatch)


def kill_backends(url: str, app_name: str) -> int:
    """Terminate the app's PostgreSQL backends, waiting until they are gone."""
    with psycopg.connect(url, autocommit=True) as conn:
        pids = [
            row[0]
            for row in conn.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE application_name = %s AND pid <> pg_backend_pid()",
                (app_name,),
            ).fetchall()
        ]
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
    return len(pids)


def backend_pids(url: str, app_name: str) -> set[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app_name,)
        ).fetchall()
    return {int(row[0]) for row in rows}


# -- no round trip for a connection used again at once ------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_back_to_back_sessions_send_no_ping(
    mode: str, make_manager: Callable[..., DatabaseManager], monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = make_manager()  # the default threshold: 5 s
    pings = await pings_of(mode, manager, monkeypatch)
    for _ in range(20):
        assert await select_in(mode, manager) == 1
    assert pings.count == 0
    status = manager.pool_status()
    assert (status.pings, status.pings_failed) == (0, 0)
    assert status.checkouts == 21  # the same connection, checked out 21 times


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_threshold_of_zero_pings_every_checkout_as_pre_ping_did(
    mode: str, make_manager: Callable[..., DatabaseManager], monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = make_manager(pool_ping_after=0)
    pings = await pings_of(mode, manager, monkeypatch)  # a new connection: not pinged
    for _ in range(5):
        await select_in(mode, manager)
    assert pings.count == 5
    assert manager.pool_status().pings == 5


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_pool_pre_ping_off_never_pings(
    mode: str, make_manager: Callable[..., DatabaseManager], monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = make_manager(pool_pre_ping=False, pool_ping_after=0)
    pings = await pings_of(mode, manager, monkeypatch)
    for _ in range(3):
        await select_in(mode, manager)
    assert pings.count == 0


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_connection_idle_past_the_threshold_is_pinged_once(
    mode: str, make_manager: Callable[..., DatabaseManager], monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = make_manager(pool_ping_after=IDLE)
    pings = await pings_of(mode, manager, monkeypatch)
    await asyncio.sleep(IDLE * 1.5)
    assert await select_in(mode, manager) == 1  # idle past the threshold: pinged
    assert await select_in(mode, manager) == 1  # used again at once: not pinged
    assert pings.count == 1
    assert (manager.pool_status().pings, manager.pool_status().pings_failed) == (1, 0)


async def test_the_repositories_cache_hit_in_a_session_of_its_own_sends_no_ping(
    make_manager: Callable[..., DatabaseManager], monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = make_manager()
    cache = MarketDataRepository()
    async with manager.get_async_session() as session:
        await cache.async_cache_market_data(session, "AAPL", "stock_info", {"price": 1})
    pings = Pings(manager.async_engine.sync_engine.dialect, monkeypatch)
    for _ in range(10):
        async with manager.get_async_session() as session:
            assert await cache.async_get_cached_data(session, "AAPL", "stock_info") == {"price": 1}
    assert pings.count == 0


# -- dropped connections -----------------------------------------------------------------


@pytest.mark.postgresql_only
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_connection_killed_while_idle_is_replaced_without_an_error(
    mode: str,
    backend: str,
    database_url: str,
    app_name: str,
    make_manager: Callable[..., DatabaseManager],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manager = make_manager(pool_ping_after=IDLE)
    pings = await pings_of(mode, manager, monkeypatch)
    before = backend_pids(database_url, app_name)
    assert await asyncio.to_thread(kill_backends, database_url, app_name) == 1
    await asyncio.sleep(IDLE * 1.5)
    assert await select_in(mode, manager) == 1  # no error: the pool replaced it
    assert pings.count == 1
    assert (manager.pool_status().pings, manager.pool_status().pings_failed) == (1, 1)
    after = backend_pids(database_url, app_name)
    assert len(after) == 1
    assert after.isdisjoint(before)
    assert manager.open_connections == 1  # the dead one gave its place back


@pytest.mark.postgresql_only
async def test_a_cache_hit_after_an_idle_kill_is_served_without_an_error(
    backend: str,
    database_url: str,
    app_name: str,
    make_manager: Callable[..., DatabaseManager],
) -> None:
    manager = make_manager(pool_ping_after=IDLE)
    cache = MarketDataRepository()
    async with manager.get_async_session() as session:
        await cache.async_cache_market_data(session, "MSFT", "stock_info", {"price": 2})
    assert await asyncio.to_thread(kill_backends, database_url, app_name) == 1
    await asyncio.sleep(IDLE * 1.5)
    async with manager.get_async_session() as session:
        assert await cache.async_get_cached_data(session, "MSFT", "stock_info") == {"price": 2}
    assert manager.pool_status().pings_failed == 1


@pytest.mark.postgresql_only
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_connection_killed_under_the_threshold_fails_typed_and_retryable(
    mode: str,
    backend: str,
    database_url: str,
    app_name: str,
    make_manager: Callable[..., DatabaseManager],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manager = make_manager(pool_ping_after=60)
    pings = await pings_of(mode, manager, monkeypatch)
    assert await asyncio.to_thread(kill_backends, database_url, app_name) == 1
    with pytest.raises(DatabaseError) as caught:
        await select_in(mode, manager)
    error = caught.value
    assert isinstance(error, DatabaseUnavailableError), repr(error)
    assert error.retryable
    assert error.__cause__ is not None
    assert await select_in(mode, manager) == 1  # the next session reconnects
    assert pings.count == 0
    assert manager.open_connections == 1


@pytest.mark.postgresql_only
def test_both_engines_each_replace_their_own_dead_connection(
    backend: str,
    database_url: str,
    app_name: str,
    make_manager: Callable[..., DatabaseManager],
) -> None:
    manager = make_manager(pool_ping_after=IDLE, pool_size=2)  # a budget for both engines
    assert sync_select(manager) == 1
    assert asyncio.run(async_select(manager)) == 1  # this loop's engine ends with the loop

    async def two_sessions() -> list[int]:
        first = await async_select(manager)
        assert kill_backends(database_url, app_name) == 2  # the sync and the async one
        await asyncio.sleep(IDLE * 1.5)
        return [first, await async_select(manager)]

    assert asyncio.run(two_sessions()) == [1, 1]
    time.sleep(IDLE * 1.5)
    assert sync_select(manager) == 1
    assert manager.pool_status().pings_failed == 2
