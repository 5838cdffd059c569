"""The repositories' first use on an unmigrated or older database is a typed
SchemaVersionError that says to run `buffetbot-db upgrade`, never a raw driver error."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from database import DatabaseManager, migrate
from database.exceptions import QueryError, SchemaVersionError
from database.repositories import PortfolioRepository, UserRepository

HEAD = migrate.head_revision()


@pytest.fixture
def empty(empty_url: str) -> Iterator[DatabaseManager]:
    manager = DatabaseManager(empty_url)
    yield manager
    manager.close()


def test_an_unmigrated_database_says_run_upgrade(empty: DatabaseManager) -> None:
    with pytest.raises(SchemaVersionError) as raised, empty.get_session() as session:
        UserRepository().get_by_username(session, "ada")
    assert str(raised.value) == (
        f"table users does not exist: the schema is not this package's {HEAD}"
        " (never migrated, or older): run `buffetbot-db upgrade`"
    )
    assert (raised.value.current, raised.value.required) == (None, HEAD)
    assert raised.value.__cause__ is not None  # the driver's error, kept


async def test_the_async_form_says_the_same(empty: DatabaseManager) -> None:
    with pytest.raises(SchemaVersionError, match="table portfolios does not exist"):
        async with empty.get_async_session() as session:
            await PortfolioRepository().async_count(session)


def test_an_older_schema_names_the_missing_column(empty_url: str) -> None:
    migrate.upgrade(empty_url, "0002")  # before the version counters
    manager = DatabaseManager(empty_url)
    try:
        missing = r"column users\.version does not exist"
        with pytest.raises(SchemaVersionError, match=missing), manager.get_session() as session:
            UserRepository().get_by_username(session, "ada")
    finally:
        manager.close()


def test_the_applications_own_missing_table_stays_a_query_error(empty: DatabaseManager) -> None:
    with pytest.raises(QueryError) as raised, empty.get_session() as session:
        session.execute(text("SELECT * FROM watchlists"))
    assert not isinstance(raised.value, SchemaVersionError)
