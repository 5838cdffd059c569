"""Password hashes: set only through the user repository, never read as a criterion."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from database import DatabaseManager
from database.exceptions import InvalidCriteriaError, ValidationError
from database.models import User
from database.repositories import UserRepository
from tests.conftest import RawSQL
from tests.integration.conftest import UnitOfWork

users = UserRepository()


async def test_set_password_replaces_the_hash_and_the_old_password_stops_working(
    uow: UnitOfWork, sql: RawSQL
) -> None:
    user = await uow(
        users.create_user, email="a@example.com", username="alice", password="first password"
    )
    before = sql.scalar("SELECT hashed_password FROM users")
    await uow(users.set_password, user.id, "second password")
    after = sql.scalar("SELECT hashed_password FROM users")
    assert after != before
    assert after.startswith("$argon2id$")
    assert await uow(users.authenticate, "alice", "first password") is None
    assert await uow(users.authenticate, "alice", "second password") is not None


async def test_a_weak_hash_is_replaced_at_login(
    db: DatabaseManager, uow: UnitOfWork, sql: RawSQL
) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("the password")
    with db.get_session() as session:
        session.add(User(email="b@example.com", username="bob", hashed_password=weak))
    assert await uow(users.authenticate, "bob", "the password") is not None
    assert sql.scalar("SELECT hashed_password FROM users") != weak


async def test_update_refuses_the_hash(uow: UnitOfWork, sql: RawSQL) -> None:
    user = await uow(
        users.create_user, email="c@example.com", username="carol", password="the password"
    )
    before = sql.scalar("SELECT hashed_password FROM users")
    with pytest.raises(ValidationError) as caught:
        await uow(users.update, user.id, hashed_password="$argon2id$forged")
    assert caught.value.field == "hashed_password"
    with pytest.raises(ValidationError, match="hashed_password"):
        await uow(
            users.create_user,
            email="d@example.com",
            username="dave",
            password="the password",
            hashed_password="x",
        )
    assert sql.scalar("SELECT hashed_password FROM users") == before
    assert sql.count("users") == 1


@pytest.mark.parametrize(
    "query",
    [
        {"hashed_password": "x"},
        {"hashed_password__contains": "$argon2"},
        {"hashed_password__isnull": False},
        {"order_by": "-hashed_password"},
    ],
)
async def test_the_hash_is_not_a_criterion_or_an_ordering(
    uow: UnitOfWork, query: dict[str, object]
) -> None:
    with pytest.raises(InvalidCriteriaError, match="secret"):
        await uow(users.list, **query)


async def test_hostile_logins_and_passwords_are_validation_errors(uow: UnitOfWork) -> None:
    for login, password in ((None, "x"), ("a\x00b", "x"), ("alice", None), ("alice", "\ud800")):
        with pytest.raises(ValidationError):
            await uow(users.authenticate, login, password)
