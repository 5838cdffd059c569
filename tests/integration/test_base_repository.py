"""BaseRepository: every operation in its sync and async form, on both backends."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from database import DatabaseManager
from database.exceptions import (
    ConcurrencyError,
    DuplicateError,
    InvalidCriteriaError,
    NotFoundError,
    ValidationError,
)
from database.models import Portfolio, Position, User
from database.repositories import PositionRepository, UserRepository
from tests.conftest import RawSQL
from tests.integration.conftest import UnitOfWork, row_count_statements

# Every PostgreSQL test here runs once more through PgBouncer (transaction pooling).
pytestmark = pytest.mark.pgbouncer

users = UserRepository()
positions = PositionRepository()


def user_values(name: str) -> dict[str, str]:
    return {"email": f"{name}@example.com", "username": name, "hashed_password": "hashed"}


@pytest.fixture
async def holdings(uow: UnitOfWork, portfolio: Portfolio) -> list[Position]:
    rows = [
        {"portfolio_id": portfolio.id, "ticker": t, "shares": s, "average_cost": c, "notes": n}
        for t, s, c, n in [
            ("AAPL", "100", "150", "Core technology holding"),
            ("MSFT", "75", "300", "50% of Tech"),
            ("BRK-B", "10", None, "value_100"),
            ("GOOG", "0.5", "120", None),
        ]
    ]
    return await uow(positions.bulk_create, rows)  # type: ignore[no-any-return]


async def test_create_then_get_by_id(uow: UnitOfWork, sql: RawSQL) -> None:
    created = await uow(users.create, **user_values("alice"))
    assert isinstance(created.id, uuid.UUID)
    found = await uow(users.get_by_id, created.id)
    assert found.username == "alice"
    assert (await uow(users.get_by_id, str(created.id))).id == created.id
    assert await uow(users.get_by_id, uuid.uuid4()) is None
    assert sql.count("users") == 1


async def test_get_by_id_rejects_a_malformed_key(uow: UnitOfWork) -> None:
    with pytest.raises(ValidationError, match="not a UUID"):
        await uow(users.get_by_id, "1 OR 1=1")


async def test_criteria_operators(uow: UnitOfWork, holdings: list[Position]) -> None:
    async def tickers(**criteria: object) -> list[str]:
        return sorted(p.ticker for p in await uow(positions.get_by_criteria, **criteria))

    assert await tickers(ticker="aapl") == ["AAPL"]
    assert await tickers(ticker__in=["AAPL", "goog"]) == ["AAPL", "GOOG"]
    assert await tickers(ticker__ne="AAPL") == ["BRK-B", "GOOG", "MSFT"]
    assert await tickers(shares__gt=Decimal("10")) == ["AAPL", "MSFT"]
    assert await tickers(shares__gte=10) == ["AAPL", "BRK-B", "MSFT"]
    assert await tickers(shares__lt="10") == ["GOOG"]
    assert await tickers(shares__lte="0.5") == ["GOOG"]
    assert await tickers(average_cost__isnull=True) == ["BRK-B"]
    assert await tickers(notes__isnull=False, shares__gt=50) == ["AAPL", "MSFT"]
    assert await tickers(notes__contains="Tech") == ["MSFT"]
    assert await tickers(notes__icontains="TECH") == ["AAPL", "MSFT"]
    assert await tickers(average_cost=None) == ["BRK-B"]


async def test_like_wildcards_in_values_are_literal(
    uow: UnitOfWork, holdings: list[Position]
) -> None:
    found = await uow(positions.get_by_criteria, notes__contains="50%")
    assert [p.ticker for p in found] == ["MSFT"]
    found = await uow(positions.get_by_criteria, notes__contains="_100")
    assert [p.ticker for p in found] == ["BRK-B"]
    assert await uow(positions.count, notes__contains="e_1") == 1
    assert await uow(positions.count, notes__icontains="%tech") == 0


@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        ({"tickr": "AAPL"}, "no such field"),
        ({"ticker__startswith": "A"}, "no such field"),
        ({"shares__contains": "1"}, "needs a text field"),
        ({"portfolio": "x"}, "no such field"),
        ({"hashed_password; DROP TABLE users": "x"}, "no such field"),
    ],
)
async def test_unknown_fields_and_operators_raise_instead_of_matching_everything(
    uow: UnitOfWork, holdings: list[Position], criteria: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidCriteriaError, match=message):
        await uow(positions.get_by_criteria, **criteria)
    with pytest.raises(InvalidCriteriaError):
        await uow(positions.count, **criteria)


@pytest.mark.parametrize(
    ("criteria", "field"),
    [
        ({"shares__gt": "lots"}, "shares__gt"),
        ({"ticker__in": "AAPL"}, "ticker__in"),
        ({"notes__isnull": "yes"}, "notes__isnull"),
        ({"portfolio_id": "not-a-uuid"}, "portfolio_id"),
    ],
)
async def test_criteria_values_of_the_wrong_type_name_the_criterion(
    uow: UnitOfWork, holdings: list[Position], criteria: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await uow(positions.get_by_criteria, **criteria)
    assert caught.value.field == field


async def test_get_one_count_and_exists(uow: UnitOfWork, holdings: list[Position]) -> None:
    assert (await uow(positions.get_one_by_criteria, ticker="MSFT")).shares == Decimal("75")
    assert await uow(positions.get_one_by_criteria, ticker="TSLA") is None
    assert await uow(positions.count) == 4
    assert await uow(positions.count, shares__gt=1) == 3
    assert await uow(positions.exists, ticker="GOOG") is True
    assert await uow(positions.exists, ticker="TSLA") is False


async def test_list_orders_and_pages(uow: UnitOfWork, holdings: list[Position]) -> None:
    page = await uow(positions.list, order_by="-shares", limit=2)
    assert [p.ticker for p in page] == ["AAPL", "MSFT"]
    page = await uow(positions.list, order_by="-shares", offset=2, limit=2)
    assert [p.ticker for p in page] == ["BRK-B", "GOOG"]
    page = await uow(positions.list, order_by=["ticker"], shares__gt=1)
    assert [p.ticker for p in page] == ["AAPL", "BRK-B", "MSFT"]
    with pytest.raises(InvalidCriteriaError, match="colour"):
        await uow(positions.list, order_by="-colour")
    with pytest.raises(ValidationError, match="offset"):
        await uow(positions.list, offset=-1)


async def test_update_changes_only_the_given_fields(
    uow: UnitOfWork, holdings: list[Position], sql: RawSQL
) -> None:
    target = holdings[0]
    before = sql.rows(
        "SELECT ticker, average_cost, notes FROM positions WHERE id = :id", id=sql.key(target.id)
    )
    updated = await uow(positions.update, target.id, shares=Decimal("120"))
    assert updated.shares == Decimal("120")
    after = sql.rows(
        "SELECT ticker, average_cost, notes FROM positions WHERE id = :id", id=sql.key(target.id)
    )
    assert after == before
    assert updated.updated_at >= target.updated_at


async def test_update_rejects_bad_values_and_unknown_fields_leaving_the_row(
    uow: UnitOfWork, holdings: list[Position], sql: RawSQL
) -> None:
    target = holdings[0]
    with pytest.raises(ValidationError, match="shares"):
        await uow(positions.update, target.id, shares=Decimal("-5"))
    with pytest.raises(ValidationError, match="colour"):
        await uow(positions.update, target.id, colour="red")
    with pytest.raises(NotFoundError):
        await uow(positions.update, uuid.uuid4(), shares=1)
    stored = sql.scalar("SELECT shares FROM positions WHERE id = :id", id=sql.key(target.id))
    assert Decimal(stored) == (
        Decimal("100") * 10**6 if sql.backend == "sqlite" else Decimal("100")
    )


async def test_delete_by_id_and_by_object(
    uow: UnitOfWork, holdings: list[Position], sql: RawSQL
) -> None:
    assert await uow(positions.delete, holdings[0].id) is True
    assert await uow(positions.delete, holdings[0].id) is False
    loaded = await uow(positions.get_by_id, holdings[1].id)
    assert await uow(positions.delete, loaded) is True
    assert sql.count("positions") == 2


async def test_bulk_create_sends_one_insert_per_batch(
    uow: UnitOfWork, portfolio: Portfolio, statements: list[str], sql: RawSQL
) -> None:
    rows = [{"portfolio_id": portfolio.id, "ticker": f"T{i}", "shares": i} for i in range(200)]
    created = await uow(positions.bulk_create, rows)
    assert len(created) == 200
    assert sql.count("positions") == 200
    assert row_count_statements(statements, "INSERT", "positions") == 1


async def test_bulk_create_with_one_bad_row_writes_nothing(
    uow: UnitOfWork, portfolio: Portfolio, sql: RawSQL
) -> None:
    rows = [{"portfolio_id": portfolio.id, "ticker": f"T{i}", "shares": i} for i in range(5)]
    rows.append({"portfolio_id": portfolio.id, "ticker": "BAD", "shares": -1})
    with pytest.raises(ValidationError, match="shares"):
        await uow(positions.bulk_create, rows)
    assert sql.count("positions") == 0


async def test_duplicates_name_the_field_and_leave_no_row(uow: UnitOfWork, sql: RawSQL) -> None:
    await uow(users.create, **user_values("alice"))
    with pytest.raises(DuplicateError) as caught:
        await uow(users.create, **{**user_values("alice2"), "email": "ALICE@example.com"})
    assert caught.value.field == "email"
    with pytest.raises(DuplicateError) as caught:
        await uow(users.create, **{**user_values("other"), "username": "alice"})
    assert caught.value.field == "username"
    assert sql.count("users") == 1


async def test_a_failed_write_rolls_back_the_whole_unit_of_work(
    db: DatabaseManager, sql: RawSQL
) -> None:
    with pytest.raises(DuplicateError):
        async with db.get_async_session() as session:
            await users.async_create(session, **user_values("alice"))
            await users.async_create(session, **user_values("bob"))
            await users.async_create(session, **{**user_values("carol"), "username": "alice"})
    assert sql.count("users") == 0


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"username": "a b"}, "username"),
        ({"preferences": "{broken"}, "preferences"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_input_is_a_validation_error_naming_the_field(
    uow: UnitOfWork, sql: RawSQL, values: dict[str, str], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await uow(users.create, **{**user_values("alice"), **values})
    assert caught.value.field == field
    assert sql.count("users") == 0


async def test_updating_a_row_deleted_meanwhile_is_a_concurrency_error(
    db: DatabaseManager, owner: User, sql: RawSQL
) -> None:
    with pytest.raises(ConcurrencyError):
        async with db.get_async_session() as session:
            user = await users.async_get_by_id(session, owner.id)
            sql.execute("DELETE FROM users WHERE id = :id", id=sql.key(owner.id))
            await users.async_update(session, user, first_name="Ghost")
