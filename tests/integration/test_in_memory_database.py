"""``sqlite://`` (and ``sqlite:///:memory:``): one in-memory database per manager, that
the sync and async engines, every thread and every event loop share while it lives."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, select

import database
from database import (
    DatabaseManager,
    get_async_database_session,
    get_database_session,
    init_database,
    migrate,
)
from database.exceptions import ConfigurationError
from database.models import User

IN_MEMORY = ("sqlite://", "sqlite:///:memory:")


@pytest.fixture(autouse=True)
def no_process_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)  # a stray ./buffetbot.db would show up here
    monkeypatch.delenv("DATABASE_URL", raising=False)
    database.close_database()
    yield
    database.close_database()
    assert not (tmp_path / "buffetbot.db").exists()


def new_user(name: str) -> User:
    return User(email=f"{name}@example.com", username=name, hashed_password="hashed")


def tables(uri: str) -> list[str]:
    """The tables of the database at ``uri``, through a bare sqlite3 connection."""
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as raw:
        return [r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]


@pytest.mark.parametrize("url", IN_MEMORY)
async def test_a_migrated_in_memory_database_is_shared_by_sync_and_async_sessions(
    url: str,
) -> None:
    init_database(url)
    migrate.upgrade()
    assert migrate.current_revision() == migrate.head_revision()
    with get_database_session() as session:
        session.add(new_user("sync"))
    async with get_async_database_session() as session:
        seen = (await session.scalars(select(User.username))).all()
        session.add(new_user("async"))
    assert seen == ["sync"]
    with get_database_session() as session:
        assert sorted(session.scalars(select(User.username))) == ["async", "sync"]


@pytest.mark.parametrize("url", IN_MEMORY)
async def test_health_is_ok_on_both_engines(url: str) -> None:
    manager = DatabaseManager(url)
    try:
        assert manager.check_health().ok, manager.check_health().error
        status = await manager.health_check()
        assert status.ok, status.error
    finally:
        manager.close()


@pytest.mark.parametrize("url", IN_MEMORY)
async def test_create_tables_async_and_sync(url: str) -> None:
    made_async, made_sync = DatabaseManager(url), DatabaseManager(url)
    try:
        await made_async.create_tables()
        made_sync.create_tables_sync()
        for manager in (made_async, made_sync):
            assert "users" in tables(manager.urls.sqlite_uri())
            with manager.get_session() as session:
                assert "users" in inspect(session.connection()).get_table_names()
        await made_async.drop_tables()
        assert "users" not in tables(made_async.urls.sqlite_uri())
    finally:
        made_async.close()
        made_sync.close()


def test_two_managers_on_sqlite_are_separate_databases() -> None:
    first, second = DatabaseManager("sqlite://"), DatabaseManager("sqlite://")
    try:
        first.create_tables_sync()
        with first.get_session() as session:
            session.add(new_user("first"))
        assert "users" not in tables(second.urls.sqlite_uri())
        second.create_tables_sync()
        with second.get_session() as session:
            assert session.scalars(select(User)).all() == []
    finally:
        first.close()
        second.close()


def test_close_releases_the_database() -> None:
    manager = DatabaseManager("sqlite://")
    manager.create_tables_sync()
    uri = manager.urls.sqlite_uri()
    assert "users" in tables(uri)
    manager.close()
    assert tables(uri) == []  # the last connection closed: the database is gone


def test_the_database_outlives_pools_event_loops_and_threads() -> None:
    manager = init_database("sqlite://")
    migrate.upgrade()

    async def add(name: str) -> None:
        async with get_async_database_session() as session:
            session.add(new_user(name))

    asyncio.run(add("first"))  # this loop's engine is disposed as the loop ends
    asyncio.run(add("second"))
    names: list[str] = []

    def read() -> None:
        with get_database_session() as session:
            names.extend(session.scalars(select(User.username).order_by(User.username)))

    reader = threading.Thread(target=read)
    reader.start()
    reader.join()
    assert names == ["first", "second"]
    assert database.get_database() is manager


def test_a_refused_engine_option_is_a_configuration_error() -> None:
    manager = DatabaseManager("sqlite://", no_such_option=1)
    try:
        with pytest.raises(ConfigurationError, match="no_such_option"):
            manager.create_tables_sync()
        status = manager.check_health()
        assert not status.ok
        assert "no_such_option" in (status.error or "")
    finally:
        manager.close()


COMMAND = str(Path(sys.executable).with_name("buffetbot-db"))


def cli(*arguments: str, expect: int) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    result = subprocess.run(
        [COMMAND, "--url", "sqlite://", *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
    assert result.returncode == expect, f"{arguments}: {result.stdout}\n{result.stderr}"
    return result


def test_the_cli_health_and_demo_work_in_memory(tmp_path: Path) -> None:
    health = cli("health", "--json", expect=1)  # reachable, but a new database has no schema
    assert '"reachable": true' in health.stdout
    demo = cli("demo", expect=0)
    assert "price bars" in demo.stdout
    assert list(tmp_path.iterdir()) == []
