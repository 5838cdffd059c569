"""One database per process: ``init_database`` and every helper act on the same one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text

import database
from database import get_async_database_session, get_database_session, init_database, migrate
from database.models import User
from database.session import active_database
from tests.conftest import RawSQL


@pytest.fixture(autouse=True)
def no_process_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No manager before or after; the environment names a database that must stay untouched."""
    monkeypatch.chdir(tmp_path)
    environment = tmp_path / "environment.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{environment}")
    database.close_database()
    yield environment
    database.close_database()


def new_user(name: str) -> User:
    return User(email=f"{name}@example.com", username=name, hashed_password="hashed")


def test_migrate_acts_on_the_active_managers_database(
    empty_url: str, no_process_database: Path
) -> None:
    init_database(empty_url)
    migrate.upgrade()
    assert migrate.current_revision() == migrate.head_revision()
    assert migrate.current_revision(empty_url) == migrate.head_revision()
    migrate.check()
    migrate.downgrade(revision="base")
    assert migrate.current_revision(empty_url) is None
    assert not no_process_database.exists()
    assert not (Path.cwd() / "buffetbot.db").exists()


def test_the_migrated_database_is_the_one_the_sessions_use(empty_url: str) -> None:
    init_database(empty_url)
    migrate.upgrade()
    with get_database_session() as session:
        session.add(new_user("ada"))
    raw = RawSQL(empty_url)
    try:
        assert raw.count("users") == 1
    finally:
        raw.close()


def test_an_explicit_url_wins_over_the_active_manager(empty_url: str, tmp_path: Path) -> None:
    active = f"sqlite:///{tmp_path / 'active.db'}"
    init_database(active)
    migrate.upgrade(empty_url)
    assert migrate.current_revision(empty_url) == migrate.head_revision()
    assert migrate.current_revision() is None
    assert migrate.current_revision(active) is None


def test_without_a_manager_migrate_uses_the_environment(no_process_database: Path) -> None:
    migrate.upgrade()
    assert active_database() is None  # migrating made no process-wide manager
    assert migrate.current_revision() == migrate.head_revision()
    raw = RawSQL(f"sqlite:///{no_process_database}")
    try:
        assert raw.count("users") == 0
    finally:
        raw.close()


def test_init_database_with_the_same_settings_returns_the_live_manager(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = init_database(database_url, pool_size=3, echo=False)
    with first.get_session() as session:
        session.add(new_user("first"))
    again = init_database(database_url, pool_size=3, echo=False)
    assert again is first
    assert first.sync_engine_started  # its pool was kept, not closed
    with get_database_session() as session:
        assert session.scalars(select(User.username)).all() == ["first"]
    monkeypatch.setenv("DATABASE_URL", database_url)
    from_environment = init_database()
    assert from_environment is not first  # other settings (the default pool size)
    assert init_database() is from_environment


async def test_reinitialising_with_the_same_settings_leaves_open_sessions_working(
    database_url: str,
) -> None:
    manager = init_database(database_url)
    async with get_async_database_session() as session:
        session.add(new_user("ada"))
        await session.flush()
        assert init_database(database_url) is manager  # a re-run of the script, mid-request
        assert (await session.scalars(select(User.username))).all() == ["ada"]
    with manager.get_session() as session:
        assert session.scalar(select(User.username)) == "ada"


def test_other_settings_or_another_url_replace_and_close_the_manager(
    database_url: str, tmp_path: Path
) -> None:
    first = init_database(database_url, pool_size=3)
    with first.get_session() as session:
        session.execute(text("SELECT 1"))
    second = init_database(database_url, pool_size=4)
    assert second is not first
    assert database.get_database() is second
    assert not first.sync_engine_started  # disposed, not kept
    with second.get_session() as session:
        session.execute(text("SELECT 1"))
    third = init_database(f"sqlite:///{tmp_path / 'other.db'}", pool_size=4)
    assert third is not second
    assert not second.sync_engine_started
