"""Objects most integration tests start from."""

from __future__ import annotations

from typing import Any

import pytest

from database import DatabaseManager
from database.models import Portfolio, User


@pytest.fixture
def owner(db: DatabaseManager) -> User:
    with db.get_session() as session:
        user = User(email="owner@example.com", username="owner", hashed_password="hashed")
        session.add(user)
    return user


@pytest.fixture
def portfolio(db: DatabaseManager, owner: User) -> Portfolio:
    with db.get_session() as session:
        item = Portfolio(user_id=owner.id, name="Core", target_cash_percentage="5.00")
        session.add(item)
    return item


def row_count_statements(statements: list[str], verb: str, table: str) -> int:
    """How many of the captured statements are ``verb`` on ``table``."""
    return sum(1 for s in statements if s.lstrip().upper().startswith(verb) and table in s)


@pytest.fixture
def statements(db: DatabaseManager) -> list[str]:
    """Every SQL statement sent through either engine of ``db`` while the test runs."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    captured: list[str] = []

    def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        captured.append(statement)

    event.listen(Engine, "before_cursor_execute", capture)
    yield captured
    event.remove(Engine, "before_cursor_execute", capture)


class UnitOfWork:
    """Runs a repository method in its own committed session, in the sync or async form.

    ``await uow(repo.create, email=...)`` calls ``repo.create`` in a sync session or
    ``repo.async_create`` in an async one, so each test body covers both forms.
    """

    def __init__(self, db: DatabaseManager, mode: str) -> None:
        self.db = db
        self.mode = mode

    async def __call__(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "sync":
            with self.db.get_session() as session:
                return method(session, *args, **kwargs)
        twin = getattr(method.__self__, f"async_{method.__name__}")
        async with self.db.get_async_session() as session:
            return await twin(session, *args, **kwargs)


@pytest.fixture(params=["sync", "async"])
def uow(request: pytest.FixtureRequest, db: DatabaseManager) -> UnitOfWork:
    return UnitOfWork(db, request.param)
