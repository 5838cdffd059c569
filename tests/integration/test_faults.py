"""Faults on a real PostgreSQL: killed backends, a restarted server, timeouts, the budget.

These run on a throwaway server of their own (the harness starts it even when
TEST_DATABASE_URL is given), because they stop and start it. Every operation
either succeeds or fails with a typed, retryable-or-not error within its
timeouts; after the fault the same process works again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from sqlalchemy import event, text

from database import DatabaseManager, async_run_transaction, migrate, run_transaction
from database.exceptions import (
    DatabaseError,
    DatabaseUnavailableError,
    DeadlockError,
    PoolExhaustedError,
    QueryError,
    StatementTimeoutError,
)
from database.models import User
from database.repositories import MarketDataRepository, PriceHistoryRepository, UserRepository
from tests.conftest import recreate_database
from tests.pg_server import ThrowawayPostgres, throwaway_server

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def server() -> Iterator[ThrowawayPostgres]:
    with throwaway_server() as started:
        yield started


@pytest.fixture(scope="module")
def fault_url(server: ThrowawayPostgres) -> str:
    url = recreate_database(server.url, "faults")
    migrate.upgrade(url)
    return url


@pytest.fixture
def app_name() -> str:
    return f"faults-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def manager(fault_url: str, app_name: str) -> Iterator[DatabaseManager]:
    manager = DatabaseManager(
        fault_url, application_name=app_name, pool_size=3, max_overflow=2, pool_timeout=5
    )
    yield manager
    manager.close()
    with psycopg.connect(fault_url, autocommit=True) as conn:
        conn.execute("TRUNCATE users, price_history CASCADE")


def backends_of(url: str, app_name: str) -> list[tuple[int, str, str]]:
    """(pid, state, query) of the server's backends of ``app_name``."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, coalesce(state, ''), coalesce(query, '') FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (app_name,),
        ).fetchall()
    return [(int(pid), str(state), str(query)) for pid, state, query in rows]


def kill(url: str, app_name: str, *, running: str | None = None, wait: float = 10.0) -> int:
    """Terminate the app's backends (only those running ``running``, once one is)."""
    deadline = time.monotonic() + wait
    while True:
        pids = [
            pid
            for pid, state, query in backends_of(url, app_name)
            if running is None or (state == "active" and query.lstrip().startswith(running))
        ]
        if pids or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    with psycopg.connect(url, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    return len(pids)


def killing_soon(url: str, app_name: str, running: str) -> threading.Thread:
    thread = threading.Thread(target=kill, args=(url, app_name), kwargs={"running": running})
    thread.start()
    return thread


def count(url: str, table: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
    assert row is not None
    return int(row[0])


def new_user(name: str) -> User:
    return User(email=f"{name}@example.com", username=name, hashed_password="hashed")


def assert_unavailable(error: BaseException, *, retryable: bool = True) -> None:
    assert isinstance(error, DatabaseUnavailableError), repr(error)
    assert error.retryable is retryable
    assert error.__cause__ is not None
    assert "127.0.0.1" in str(error)


def execute_sync(manager: DatabaseManager, *statements: str) -> None:
    """Run statements in one session of the sync form, and commit."""
    with manager.get_session() as session:
        for statement in statements:
            session.execute(text(statement))


async def execute(mode: str, manager: DatabaseManager, *statements: str) -> None:
    """Run statements in one session of the sync or the async form, and commit."""
    if mode == "sync":
        execute_sync(manager, *statements)
        return
    async with manager.get_async_session() as session:
        for statement in statements:
            await session.execute(text(statement))


# -- backends terminated ---------------------------------------------------------------


def test_a_backend_killed_between_statements_sync(
    manager: DatabaseManager, fault_url: str, app_name: str
) -> None:
    with pytest.raises(DatabaseError) as caught, manager.get_session() as session:
        session.execute(text("SELECT 1"))
        assert kill(fault_url, app_name) == 1
        session.execute(text("SELECT 1"))
    assert_unavailable(caught.value)
    with manager.get_session() as session:  # the same process works again at once
        assert session.execute(text("SELECT 1")).scalar() == 1


async def test_a_backend_killed_between_statements_async(
    manager: DatabaseManager, fault_url: str, app_name: str
) -> None:
    with pytest.raises(DatabaseError) as caught:
        async with manager.get_async_session() as session:
            await session.execute(text("SELECT 1"))
            assert await asyncio.to_thread(kill, fault_url, app_name) == 1
            await session.execute(text("SELECT 1"))
    assert_unavailable(caught.value)
    async with manager.get_async_session() as session:
        assert (await session.execute(text("SELECT 1"))).scalar() == 1


def seed_bar(manager: DatabaseManager) -> None:
    with manager.get_session() as session:
        PriceHistoryRepository().upsert(
            session,
            [
                {
                    "ticker": "AAPL",
                    "date": "2024-01-02",
                    "open": 1,
                    "high": 2,
                    "low": 1,
                    "close": 1.5,
                    "volume": 10,
                }
            ],
        )


def test_a_backend_killed_under_a_point_read_is_not_pooled_again_sync(
    manager: DatabaseManager, fault_url: str, app_name: str
) -> None:
    prices, cache = PriceHistoryRepository(), MarketDataRepository()
    seed_bar(manager)
    with manager.get_session() as session:
        session.connection()
        assert kill(fault_url, app_name) == 1
        with pytest.raises(DatabaseUnavailableError) as caught:
            prices.get_latest(session, "AAPL")
        assert caught.value.retryable
        session.rollback()  # the dead connection was invalidated: nothing left to fail
        assert prices.get_latest(session, "AAPL") is not None  # on a new connection
    for _ in range(3):  # the pool handed it out no more
        with manager.get_session() as session:
            assert prices.get_close_as_of(session, "AAPL", "2024-01-05") is not None
            assert cache.get_cached_data(session, "AAPL", "price_history") is None


async def test_a_backend_killed_under_a_point_read_is_not_pooled_again_async(
    manager: DatabaseManager, fault_url: str, app_name: str
) -> None:
    prices, cache = PriceHistoryRepository(), MarketDataRepository()
    await asyncio.to_thread(seed_bar, manager)
    async with manager.get_async_session() as session:
        await session.connection()
        assert await asyncio.to_thread(kill, fault_url, app_name) >= 1
        with pytest.raises(DatabaseUnavailableError) as caught:
            await cache.async_get_cached_data(session, "AAPL", "price_history")
        assert caught.value.retryable
        await session.rollback()
        assert await prices.async_get_latest(session, "AAPL") is not None
    for _ in range(3):
        async with manager.get_async_session() as session:
            assert await prices.async_get_close_as_of(session, "AAPL", "2024-01-05") is not None


def test_a_backend_killed_mid_transaction_writes_nothing(
    manager: DatabaseManager, fault_url: str, app_name: str
) -> None:
    users = UserRepository()
    with pytest.raises(DatabaseError) as caught, manager.get_session() as session:
        users.create(session, email="a@example.com", username="alice", hashed_password="h")
        kill(fault_url, app_name)
        users.create(session, email="b@example.com", username="bob", hashed_password="h")
    assert_unavailable(caught.value)
    assert count(fault_url, "users") == 0


async def test_a_backend_killed_mid_transaction_writes_nothing_async(
    manager: DatabaseManager, fault_url: str, app_name: str
) -> None:
    users = UserRepository()
    with pytest.raises(DatabaseError) as caught:
        async with manager.get_async_session() as session:
            await users.async_create(
                session, email="a@example.com", username="alice", hashed_password="h"
            )
            await asyncio.to_thread(kill, fault_url, app_name)
            await users.async_get_by_criteria(session, username="alice")
    assert_unavailable(caught.value)
    assert count(fault_url, "users") == 0


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_backend_killed_mid_statement(
    mode: str, manager: DatabaseManager, fault_url: str, app_name: str
) -> None:
    killer = killing_soon(fault_url, app_name, "SELECT pg_sleep")
    with pytest.raises(DatabaseError) as caught:
        await execute(mode, manager, "SELECT pg_sleep(20)")
    killer.join()
    assert_unavailable(caught.value)


@pytest.fixture
def slow_commit(fault_url: str) -> Iterator[None]:
    """A table whose deferred trigger sleeps at COMMIT, so a kill lands during it."""
    with psycopg.connect(fault_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS commit_probe (x int)")
        conn.execute(
            "CREATE OR REPLACE FUNCTION sleep_at_commit() RETURNS trigger LANGUAGE plpgsql "
            "AS $$ BEGIN PERFORM pg_sleep(20); RETURN NULL; END $$"
        )
        conn.execute(
            "CREATE CONSTRAINT TRIGGER commit_probe_sleep AFTER INSERT ON commit_probe "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sleep_at_commit()"
        )
    yield
    with psycopg.connect(fault_url, autocommit=True) as conn:
        conn.execute("DROP TABLE commit_probe")
        conn.execute("DROP FUNCTION sleep_at_commit()")


@pytest.mark.usefixtures("slow_commit")
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_backend_killed_at_commit_is_not_retryable(
    mode: str, manager: DatabaseManager, fault_url: str, app_name: str
) -> None:
    killer = killing_soon(fault_url, app_name, "COMMIT")
    with pytest.raises(DatabaseError) as caught:
        await execute(mode, manager, "INSERT INTO commit_probe VALUES (1)")
    killer.join()
    # The outcome of an interrupted COMMIT is unknown: running it again could apply it twice.
    assert_unavailable(caught.value, retryable=False)
    assert "may or may not" in str(caught.value)


def bars(rows: int) -> pd.DataFrame:
    days = pd.bdate_range("1990-01-01", periods=rows // 4)
    frames = []
    for ticker in ("AAA", "BBB", "CCC", "DDD"):
        close = 100 + np.arange(len(days)) % 50
        frames.append(
            pd.DataFrame(
                {
                    "ticker": ticker,
                    "Date": days,
                    "Open": close,
                    "High": close + 1.0,
                    "Low": close - 1.0,
                    "Close": close + 0.5,
                    "Volume": 1_000_000,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_backend_killed_mid_copy_writes_nothing(
    mode: str, manager: DatabaseManager, fault_url: str, app_name: str
) -> None:
    frame = bars(400_000)
    prices = PriceHistoryRepository()
    killer = killing_soon(fault_url, app_name, "COPY")
    with pytest.raises(DatabaseError) as caught:
        if mode == "sync":
            with manager.get_session() as session:
                prices.upsert(session, frame)
        else:
            async with manager.get_async_session() as session:
                await prices.async_upsert(session, frame)
    killer.join()
    assert_unavailable(caught.value)
    assert count(fault_url, "price_history") == 0
    with manager.get_session() as session:
        assert prices.upsert(session, frame.head(100)).inserted == 100


# -- timeouts, deadlocks, the budget -----------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_statement_timeout_is_typed_on_both_drivers(mode: str, fault_url: str) -> None:
    manager = DatabaseManager(fault_url, statement_timeout_ms=100)
    try:
        with pytest.raises(StatementTimeoutError) as caught:
            await execute(mode, manager, "SELECT pg_sleep(5)")
        assert not caught.value.retryable
        assert caught.value.__cause__ is not None
        with manager.get_session() as session:
            assert session.execute(text("SHOW statement_timeout")).scalar() == "100ms"
    finally:
        manager.close()


async def test_past_the_budget_callers_wait_then_get_a_typed_pool_error(fault_url: str) -> None:
    manager = DatabaseManager(fault_url, pool_size=1, max_overflow=0, pool_timeout=0.3)
    try:
        with manager.get_session() as held:
            held.execute(text("SELECT 1"))
            started = time.monotonic()
            with pytest.raises(PoolExhaustedError) as caught:
                async with manager.get_async_session() as session:
                    await session.execute(text("SELECT 1"))
            waited = time.monotonic() - started
            with pytest.raises(PoolExhaustedError), manager.get_session() as other:
                other.execute(text("SELECT 1"))  # the sync pool's own second connection
        assert waited >= 0.3
        assert (caught.value.pool_size, caught.value.max_overflow) == (1, 0)
        assert "DB_POOL_SIZE=1" in str(caught.value)
        assert "0.3 s" in str(caught.value)
        async with manager.get_async_session() as session:  # the idle sync one is reclaimed
            assert (await session.execute(text("SELECT 1"))).scalar() == 1
    finally:
        manager.close()


def test_one_budget_covers_sync_async_and_every_event_loop(fault_url: str, app_name: str) -> None:
    manager = DatabaseManager(
        fault_url, application_name=app_name, pool_size=2, max_overflow=1, pool_timeout=20
    )
    peak = 0
    stop = threading.Event()
    failures: list[BaseException] = []

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, len(backends_of(fault_url, app_name)))
            time.sleep(0.005)

    def sync_worker() -> None:
        try:
            for _ in range(5):
                with manager.get_session() as session:
                    session.execute(text("SELECT pg_sleep(0.02)"))
        except BaseException as error:
            failures.append(error)

    def loop_worker() -> None:
        async def task() -> None:
            for _ in range(5):
                async with manager.get_async_session() as session:
                    await session.execute(text("SELECT pg_sleep(0.02)"))

        async def main() -> None:
            await asyncio.gather(*(task() for _ in range(4)))

        try:
            asyncio.run(main())
        except BaseException as error:
            failures.append(error)

    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [threading.Thread(target=sync_worker) for _ in range(4)]
    workers += [threading.Thread(target=loop_worker) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    stop.set()
    watcher.join()
    manager.close()
    assert failures == []
    assert 2 <= peak <= 3  # the workers did contend, and never past the budget
    assert manager.open_connections == 0


def test_a_deadlock_is_typed_and_retryable(fault_url: str) -> None:
    manager = DatabaseManager(fault_url)
    with psycopg.connect(fault_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS lock_probe (id int PRIMARY KEY, n int)")
        conn.execute("INSERT INTO lock_probe VALUES (1, 0), (2, 0) ON CONFLICT DO NOTHING")
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    bump = text("UPDATE lock_probe SET n = n + 1 WHERE id = :id")

    def worker(first: int, second: int) -> None:
        try:
            with manager.get_session() as session:
                session.execute(bump, {"id": first})
                barrier.wait(timeout=10)
                session.execute(bump, {"id": second})
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=pair) for pair in ((1, 2), (2, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    manager.close()
    assert len(errors) == 1
    assert isinstance(errors[0], DeadlockError)
    assert errors[0].retryable
    assert errors[0].__cause__ is not None


# -- the server stopped and started again ---------------------------------------------


async def test_the_process_recovers_after_a_server_restart(
    server: ThrowawayPostgres, fault_url: str
) -> None:
    manager = DatabaseManager(fault_url, connect_timeout=3, pool_timeout=3)
    users = UserRepository()
    outcomes: dict[str, int] = {"ok": 0, "typed": 0}
    untyped: list[BaseException] = []
    stop = asyncio.Event()

    async def worker(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                async with manager.get_async_session() as session:
                    await users.async_create(
                        session,
                        email=f"w{n}-{i}@example.com",
                        username=f"w{n}-{i}",
                        hashed_password="h",
                    )
                outcomes["ok"] += 1
            except DatabaseError:
                outcomes["typed"] += 1
                await asyncio.sleep(0.02)
            except Exception as error:
                untyped.append(error)

    def sync_worker() -> None:
        while not stop.is_set():
            try:
                with manager.get_session() as session:
                    session.execute(text("SELECT 1"))
                outcomes["ok"] += 1
            except DatabaseError:
                outcomes["typed"] += 1
                time.sleep(0.02)
            except Exception as error:
                untyped.append(error)

    tasks = [asyncio.create_task(worker(n)) for n in range(8)]
    threads = [threading.Thread(target=sync_worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    await asyncio.sleep(0.5)
    await asyncio.to_thread(server.stop, "immediate")
    await asyncio.sleep(0.5)
    await asyncio.to_thread(server.start)
    await asyncio.sleep(1.5)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    for thread in threads:
        thread.join(timeout=30)
    assert untyped == []
    assert outcomes["typed"] > 0  # the outage was seen...
    before = outcomes["ok"]
    # ...and afterwards the same manager works, in both forms, without a restart.
    async with manager.get_async_session() as session:
        assert (await session.execute(text("SELECT 1"))).scalar() == 1
    with manager.get_session() as session:
        assert session.execute(text("SELECT 1")).scalar() == 1
    assert before > 0
    await manager.aclose()
    with contextlib.suppress(Exception):
        async with DatabaseManager(fault_url).get_async_session() as session:
            await session.execute(text("SELECT 1"))


async def test_a_stopped_server_fails_fast_and_typed(
    server: ThrowawayPostgres, fault_url: str
) -> None:
    manager = DatabaseManager(fault_url, connect_timeout=2, pool_timeout=2)
    with manager.get_session() as session:
        session.execute(text("SELECT 1"))
    await asyncio.to_thread(server.stop)
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError) as sync_error, manager.get_session() as s:
            s.execute(text("SELECT 1"))
        with pytest.raises(DatabaseUnavailableError) as async_error:
            async with manager.get_async_session() as session:
                await session.execute(text("SELECT 1"))
        assert time.monotonic() - started < 10
        for caught in (sync_error, async_error):
            assert caught.value.retryable
            assert caught.value.port == server.port
    finally:
        await asyncio.to_thread(server.start)
    with manager.get_session() as session:
        assert session.execute(text("SELECT 1")).scalar() == 1
    await manager.aclose()


# -- what an attack on the first version found -------------------------------------------


def test_a_connection_that_fails_in_set_up_gives_its_place_back(
    fault_url: str, app_name: str
) -> None:
    manager = DatabaseManager(
        fault_url, application_name=app_name, pool_size=1, max_overflow=1, pool_timeout=1
    )
    failures = 3

    def fail_in_set_up(dbapi_connection: Any, _record: Any) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise RuntimeError("set-up interrupted")

    event.listen(manager.engine, "connect", fail_in_set_up)
    for _ in range(3):
        with pytest.raises(RuntimeError), manager.get_session() as session:
            session.execute(text("SELECT 1"))
    # Three connections were opened and never handed out: none may hold a place.
    with manager.get_session() as session:
        assert session.execute(text("SELECT 1")).scalar() == 1
    assert manager.open_connections == 1
    assert len(backends_of(fault_url, app_name)) == 1
    manager.close()
    assert manager.open_connections == 0


def test_closing_while_sessions_are_in_use_never_exceeds_the_budget(
    fault_url: str, app_name: str
) -> None:
    manager = DatabaseManager(
        fault_url, application_name=app_name, pool_size=1, max_overflow=0, pool_timeout=5
    )
    peak = 0
    for _ in range(4):
        busy = threading.Thread(target=execute_sync, args=(manager, "SELECT pg_sleep(0.3)"))
        busy.start()
        time.sleep(0.1)
        manager.close()  # under the running session's feet
        peak = max(peak, len(backends_of(fault_url, app_name)))
        busy.join()
        with manager.get_session() as session:  # the same manager opens a new pool
            session.execute(text("SELECT 1"))
            peak = max(peak, len(backends_of(fault_url, app_name)))
    manager.close()
    assert peak == 1
    assert backends_of(fault_url, app_name) == []  # closed as they came back, not left to GC
    assert manager.open_connections == 0


@pytest.mark.usefixtures("slow_commit")
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_commit_lost_inside_the_block_is_not_run_again(
    mode: str, manager: DatabaseManager, fault_url: str, app_name: str
) -> None:
    attempts: list[int] = []
    insert = text("INSERT INTO commit_probe VALUES (1)")

    def sync_unit(session: Any) -> None:
        attempts.append(1)
        with session.begin():  # commits inside the block, as the seed's samples do
            session.execute(insert)

    async def async_unit(session: Any) -> None:
        attempts.append(1)
        async with session.begin():
            await session.execute(insert)

    killer = killing_soon(fault_url, app_name, "COMMIT")
    with pytest.raises(DatabaseUnavailableError) as caught:
        if mode == "sync":
            await asyncio.to_thread(run_transaction, sync_unit, retries=3, database=manager)
        else:
            await async_run_transaction(async_unit, retries=3, database=manager)
    killer.join()
    assert caught.value.retryable is False
    assert attempts == [1]


async def test_a_killed_connection_under_a_bare_driver_read_is_unavailable(
    manager: DatabaseManager, fault_url: str, app_name: str
) -> None:
    cache = MarketDataRepository()
    async with manager.get_async_session() as session:
        await cache.async_cache_market_data(session, "AAPL", "stock_info", {"price": 1})
    with pytest.raises(DatabaseError) as caught:
        async with manager.get_async_session() as session:
            assert await cache.async_get_cached_data(session, "AAPL", "stock_info")
            await asyncio.to_thread(kill, fault_url, app_name)
            await cache.async_get_cached_data(session, "AAPL", "stock_info")
    assert_unavailable(caught.value)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_server_error_is_not_mistaken_for_a_lost_connection(
    mode: str, manager: DatabaseManager
) -> None:
    # 55000 (object not in prerequisite state): psycopg raises it as an OperationalError.
    with pytest.raises(QueryError) as caught:
        await execute(mode, manager, "SELECT currval(pg_get_serial_sequence('x', 'y'))")
    with pytest.raises(QueryError) as caught:
        await execute(mode, manager, "CREATE TEMPORARY SEQUENCE probe", "SELECT currval('probe')")
    assert not caught.value.retryable


@pytest.mark.parametrize("mode", ["threads", "tasks"])
async def test_waiting_callers_are_served_in_turn_not_starved(mode: str, fault_url: str) -> None:
    manager = DatabaseManager(fault_url, pool_size=2, max_overflow=2, pool_timeout=5)
    statement = "SELECT pg_sleep(0.02)"

    async def task() -> None:
        for _ in range(5):
            await execute("async", manager, statement)

    def thread() -> None:
        for _ in range(5):
            execute_sync(manager, statement)

    try:
        if mode == "tasks":
            await asyncio.gather(*(task() for _ in range(16)))
        else:
            await asyncio.gather(*(asyncio.to_thread(thread) for _ in range(16)))
    finally:
        await manager.aclose()
    assert manager.open_connections == 0


def test_a_small_pool_for_a_migration_is_not_blocked_by_a_busy_application(
    fault_url: str,
) -> None:
    application = DatabaseManager(fault_url, pool_size=2, max_overflow=0, pool_timeout=1)
    try:
        with application.get_session() as session:
            session.execute(text("SELECT 1"))  # holds one of the application's connections
            assert migrate.current_revision(fault_url) == migrate.head_revision()
    finally:
        application.close()
