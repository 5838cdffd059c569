"""Engines, sessions, event loops and closing, on both backends."""

from __future__ import annotations

import asyncio
import socket
import threading
import warnings
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

import database
from database import (
    DatabaseManager,
    get_async_database_session,
    get_database_session,
    init_database,
)
from database.exceptions import DatabaseUnavailableError
from database.models import User
from tests.conftest import RawSQL


def new_user(name: str = "investor") -> User:
    return User(email=f"{name}@example.com", username=name, hashed_password="hashed")


async def test_async_session_commits_on_success(db: DatabaseManager, sql: RawSQL) -> None:
    async with db.get_async_session() as session:
        session.add(new_user())
    assert sql.count("users") == 1


async def test_async_session_rolls_back_on_error(db: DatabaseManager, sql: RawSQL) -> None:
    with pytest.raises(RuntimeError):
        async with db.get_async_session() as session:
            session.add(new_user())
            await session.flush()
            raise RuntimeError("boom")
    assert sql.count("users") == 0


def test_sync_session_commits_and_rolls_back(db: DatabaseManager, sql: RawSQL) -> None:
    with db.get_session() as session:
        session.add(new_user("first"))
    with pytest.raises(RuntimeError, match="boom"), db.get_session() as session:
        session.add(new_user("second"))
        session.flush()
        raise RuntimeError("boom")
    assert sql.rows("SELECT username FROM users") == [("first",)]


async def test_no_transaction_is_begun_eagerly(db: DatabaseManager, sql: RawSQL) -> None:
    async with db.get_async_session() as session:
        assert not session.in_transaction()
        async with session.begin():  # the seed README's batch pattern
            session.add(new_user())
    assert sql.count("users") == 1


async def test_the_process_wide_session_uses_database_url(
    database_url: str, monkeypatch: pytest.MonkeyPatch, sql: RawSQL
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    database.close_database()
    async with get_async_database_session() as session:
        session.add(new_user())
    with get_database_session() as session:
        assert session.scalars(select(User.username)).all() == ["investor"]
    assert sql.count("users") == 1
    database.close_database()


async def test_both_engines_reach_the_same_database(db: DatabaseManager, backend: str) -> None:
    if backend == "postgresql":
        query = text("SELECT current_database()")
    else:
        query = text("SELECT file FROM pragma_database_list WHERE name = 'main'")
    async with db.get_async_session() as session:
        seen_async = await session.scalar(query)
    with db.get_session() as session:
        seen_sync = session.scalar(query)
    assert seen_async == seen_sync
    expected = make_url(str(db.urls.sync_url.render_as_string(hide_password=False))).database
    assert seen_sync is not None
    assert str(seen_sync).endswith(str(expected))


def test_the_manager_keeps_working_across_successive_event_loops(db: DatabaseManager) -> None:
    async def add(name: str) -> None:
        async with db.get_async_session() as session:
            session.add(new_user(name))

    async def count() -> int:
        async with db.get_async_session() as session:
            return len((await session.scalars(select(User))).all())

    asyncio.run(add("first"))
    asyncio.run(add("second"))
    assert asyncio.run(count()) == 2


async def test_an_async_only_process_never_creates_the_sync_engine(db: DatabaseManager) -> None:
    async with db.get_async_session() as session:
        await session.execute(text("SELECT 1"))
    assert not db.sync_engine_started


def test_init_database_with_other_settings_replaces_and_closes_the_previous_manager(
    database_url: str,
) -> None:
    first = init_database(database_url)
    with first.get_session() as session:
        session.execute(text("SELECT 1"))
    assert first.sync_engine_started
    assert init_database(database_url) is first  # the same settings: the live one
    second = init_database(database_url, pool_size=2)
    assert database.get_database() is second
    assert not first.sync_engine_started  # disposed, not kept
    database.close_database()


async def test_health_check_reports_round_trip(db: DatabaseManager) -> None:
    status = await db.health_check()
    assert status.ok
    assert status.latency_ms is not None
    assert status.latency_ms >= 0
    assert db.check_health().ok


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_server_names_host_and_port_but_not_the_password() -> None:
    port = unused_port()
    manager = DatabaseManager(
        f"postgresql://app:s3cret-pw@127.0.0.1:{port}/nowhere", connect_timeout=2
    )
    with pytest.raises(DatabaseUnavailableError) as caught:
        async with manager.get_async_session() as session:
            await session.execute(text("SELECT 1"))
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)
    with pytest.raises(DatabaseUnavailableError):
        manager.engine.connect()
    status = await manager.health_check()
    assert not status.ok
    assert "s3cret-pw" not in (status.error or "") + status.url
    manager.close()


@pytest.mark.sqlite_only
async def test_sqlite_connections_enforce_foreign_keys_wal_and_busy_timeout(
    backend: str, db: DatabaseManager
) -> None:
    async with db.get_async_session() as session:
        assert await session.scalar(text("PRAGMA foreign_keys")) == 1
        assert await session.scalar(text("PRAGMA journal_mode")) == "wal"
        assert (
            await session.scalar(text("PRAGMA busy_timeout")) == db.settings.sqlite_busy_timeout_ms
        )


# -- closing, proved on the server ----------------------------------------------------


async def server_connections(url: str, application_name: str) -> int:
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(plain)
    try:
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
        return int(await connection.fetchval(query, application_name))
    finally:
        await connection.close()


@pytest.mark.postgresql_only
async def test_close_inside_a_running_loop_leaves_no_connection_open(
    backend: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_APPLICATION_NAME", "close-in-loop")
    manager = DatabaseManager(database_url)

    async def hold() -> None:
        async with manager.get_async_session() as session:
            await session.execute(text("SELECT pg_sleep(0.05)"))

    await asyncio.gather(*(hold() for _ in range(3)))
    assert await server_connections(database_url, "close-in-loop") == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manager.close()  # no await, as in the seed README's fixture
    for _ in range(50):
        if await server_connections(database_url, "close-in-loop") == 0:
            break
        await asyncio.sleep(0.02)
    assert await server_connections(database_url, "close-in-loop") == 0


@pytest.mark.postgresql_only
def test_close_outside_a_loop_and_at_loop_end_leave_no_connection_open(
    backend: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_APPLICATION_NAME", "close-outside")
    manager = DatabaseManager(database_url)

    async def use() -> int:
        async with manager.get_async_session() as session:
            await session.execute(text("SELECT 1"))
        return await server_connections(database_url, "close-outside")

    assert asyncio.run(use()) == 1
    # asyncio.run has ended that loop: its engine was disposed as the loop shut down.
    assert asyncio.run(server_connections(database_url, "close-outside")) == 0
    with manager.get_session() as session:
        session.execute(text("SELECT 1"))
    assert asyncio.run(server_connections(database_url, "close-outside")) == 1
    manager.close()
    assert asyncio.run(server_connections(database_url, "close-outside")) == 0


@pytest.mark.postgresql_only
async def test_aclose_awaits_the_async_pool(
    backend: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_APPLICATION_NAME", "aclose")
    manager = DatabaseManager(database_url)
    async with manager.get_async_session() as session:
        await session.execute(text("SELECT 1"))
    assert await server_connections(database_url, "aclose") == 1
    await manager.aclose()
    assert await server_connections(database_url, "aclose") == 0


@pytest.mark.postgresql_only
async def test_one_process_holds_one_pool_not_two(
    backend: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_APPLICATION_NAME", "one-pool")
    monkeypatch.setenv("DB_POOL_SIZE", "2")
    monkeypatch.setenv("DB_MAX_OVERFLOW", "1")
    manager = DatabaseManager(database_url)
    gate = asyncio.Event()

    async def hold() -> None:
        async with manager.get_async_session() as session:
            await session.execute(text("SELECT 1"))
            await gate.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(3)]
    await asyncio.sleep(0.3)
    assert await server_connections(database_url, "one-pool") == 3  # pool_size + max_overflow
    gate.set()
    await asyncio.gather(*tasks)
    assert not manager.sync_engine_started
    await manager.aclose()


@pytest.mark.sqlite_only
async def test_close_inside_a_running_loop_releases_the_sqlite_file(
    backend: str, database_url: str
) -> None:
    manager = DatabaseManager(database_url)
    wal = Path(str(make_url(database_url).database) + "-wal")
    async with manager.get_async_session() as session:
        session.add(new_user())
    assert wal.exists()  # open connections keep the write-ahead log
    manager.close()
    for _ in range(50):  # the last connection to close removes the log
        if not wal.exists():
            break
        await asyncio.sleep(0.02)
    assert not wal.exists()


@pytest.mark.postgresql_only
async def test_the_password_never_reaches_logs_or_reprs(
    backend: str, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    with_password = make_url(database_url).set(password="pw-s3cret-XYZ")  # trust auth ignores it
    manager = DatabaseManager(with_password.render_as_string(hide_password=False), echo="debug")
    async with manager.get_async_session() as session:
        await session.execute(text("SELECT 1"))
    with manager.get_session() as session:
        session.execute(text("SELECT 1"))
    await manager.aclose()
    assert "SELECT 1" in caplog.text  # the SQL was logged
    assert "pw-s3cret-XYZ" not in caplog.text
    assert "pw-s3cret-XYZ" not in repr(manager) + str(manager.settings) + manager.urls.safe()


def test_threads_starting_together_share_one_sync_engine(database_url: str) -> None:
    manager = DatabaseManager(database_url)
    start = threading.Barrier(8)
    engines: list[object] = []
    failures: list[BaseException] = []

    def use() -> None:
        start.wait()
        try:
            with manager.get_session() as session:
                session.execute(text("SELECT 1"))
            engines.append(manager.engine)
        except BaseException as error:  # collected and asserted on below
            failures.append(error)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    manager.close()
    assert failures == []
    assert len(engines) == 8
    assert len({id(engine) for engine in engines}) == 1


async def test_check_connection_is_the_health_checks_answer(db: DatabaseManager) -> None:
    assert db.check_connection() is True
    assert await db.async_check_connection() is True
    nowhere = DatabaseManager("postgresql://u:p@127.0.0.1:1/x", connect_timeout=1)
    try:
        assert nowhere.check_connection() is False
    finally:
        nowhere.close()
