"""One user never reaches another's portfolios, positions or portfolio analyses.

Every portfolio-scoped method, in both forms, on both backends: given another
user as the acting user (``user_id=`` or the session's user), the owner's rows
look exactly like missing ones, and nothing is changed.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest

from database import DatabaseManager, async_run_transaction, run_transaction
from database.exceptions import NotFoundError, ValidationError
from database.models import AnalysisResult, AnalysisType, Portfolio, Position, User
from database.repositories import AnalysisRepository, PortfolioRepository, UserRepository
from tests.conftest import RawSQL
from tests.integration.conftest import UnitOfWork

# Every PostgreSQL test here runs once more through PgBouncer (transaction pooling).
pytestmark = pytest.mark.pgbouncer

portfolios = PortfolioRepository()
positions = portfolios.positions
analyses = AnalysisRepository()


@pytest.fixture
def stranger(db: DatabaseManager) -> User:
    with db.get_session() as session:
        user = User(email="stranger@example.com", username="stranger", hashed_password="h")
        session.add(user)
    return user


@pytest.fixture
def held(db: DatabaseManager, portfolio: Portfolio) -> Position:
    with db.get_session() as session:
        position = Position(portfolio_id=portfolio.id, ticker="AAPL", shares=10, average_cost=100)
        session.add(position)
    return position


@pytest.fixture
def analysis(db: DatabaseManager, portfolio: Portfolio) -> AnalysisResult:
    with db.get_session() as session:
        result = AnalysisResult(
            portfolio_id=portfolio.id, ticker="AAPL", analysis_type=AnalysisType.RISK_ANALYSIS
        )
        session.add(result)
    return result


def snapshot(sql: RawSQL) -> list[Any]:
    """Everything a refused call could have changed, by plain SQL."""
    return [
        sql.rows("SELECT id, user_id, name, version FROM portfolios ORDER BY id"),
        sql.rows("SELECT id, portfolio_id, ticker, shares, version FROM positions ORDER BY id"),
        sql.rows("SELECT id, portfolio_id, expires_at, version FROM analysis_results ORDER BY id"),
    ]


# -- portfolios ----------------------------------------------------------------------------


async def test_another_users_portfolio_reads_as_missing(
    uow: UnitOfWork, portfolio: Portfolio, owner: User, stranger: User
) -> None:
    pid = portfolio.id
    assert await uow(portfolios.get_by_id, pid, user_id=stranger.id) is None
    assert await uow(portfolios.get_for_user, pid, stranger.id) is None
    assert await uow(portfolios.get_with_positions, pid, user_id=stranger.id) is None
    with pytest.raises(NotFoundError):
        await uow(portfolios.get_summary, pid, user_id=stranger.id)
    assert await uow(portfolios.get_user_portfolios, stranger.id) == []
    assert await uow(portfolios.list, user_id=stranger.id) == []
    assert await uow(portfolios.get_by_criteria, name="Core", user_id=stranger.id) == []
    assert await uow(portfolios.count, user_id=stranger.id) == 0
    assert await uow(portfolios.exists, id=pid, user_id=stranger.id) is False
    # The owner reaches it through every one of them.
    assert (await uow(portfolios.get_by_id, pid, user_id=owner.id)).id == pid
    assert (await uow(portfolios.get_with_positions, pid, user_id=owner.id)).id == pid
    assert (await uow(portfolios.get_summary, pid, user_id=owner.id)).name == "Core"
    assert await uow(portfolios.count, user_id=owner.id) == 1


async def test_another_users_portfolio_cannot_be_changed_or_deleted(
    uow: UnitOfWork, sql: RawSQL, portfolio: Portfolio, stranger: User
) -> None:
    before = snapshot(sql)
    with pytest.raises(NotFoundError):
        await uow(portfolios.update, portfolio.id, user_id=stranger.id, name="Mine now")
    with pytest.raises(NotFoundError):  # a copy of the object is checked as well
        await uow(portfolios.update, portfolio, user_id=stranger.id, name="Mine now")
    assert await uow(portfolios.delete, portfolio.id, user_id=stranger.id) is False
    assert await uow(portfolios.delete, portfolio, user_id=stranger.id) is False
    assert snapshot(sql) == before


async def test_a_missing_and_a_foreign_portfolio_get_the_same_answer(
    uow: UnitOfWork, portfolio: Portfolio, stranger: User
) -> None:
    missing = uuid.uuid4()
    for key in (missing, portfolio.id):
        with pytest.raises(NotFoundError) as caught:
            await uow(portfolios.update, key, user_id=stranger.id, name="x")
        assert caught.value.key == key
        assert await uow(portfolios.get_by_id, key, user_id=stranger.id) is None


async def test_the_owner_changes_and_deletes_their_portfolio(
    uow: UnitOfWork, sql: RawSQL, portfolio: Portfolio, owner: User
) -> None:
    updated = await uow(portfolios.update, portfolio.id, user_id=owner.id, name="Renamed")
    assert updated.name == "Renamed"
    assert await uow(portfolios.delete, portfolio.id, user_id=owner.id) is True
    assert sql.count("portfolios") == 0


async def test_a_session_opened_for_a_user_scopes_every_call(
    db: DatabaseManager, sql: RawSQL, portfolio: Portfolio, owner: User, stranger: User
) -> None:
    before = snapshot(sql)
    async with db.get_async_session(user_id=stranger.id) as session:
        assert await portfolios.async_get_by_id(session, portfolio.id) is None
        assert await portfolios.async_list(session) == []
        assert await portfolios.async_delete(session, portfolio.id) is False
        with pytest.raises(NotFoundError):
            await portfolios.async_create(session, user_id=owner.id, name="For someone else")
        # A user_id that disagrees with the session's sees nothing either.
        assert await portfolios.async_get_by_id(session, portfolio.id, user_id=owner.id) is None
    with db.get_session(user_id=owner.id) as session:
        assert portfolios.get_by_id(session, portfolio.id) is not None
        assert [p.id for p in portfolios.list(session)] == [portfolio.id]
        created = portfolios.create(session, user_id=owner.id, name="Second")
    assert snapshot(sql)[1:] == before[1:]
    assert sql.count("portfolios") == 2
    assert created.user_id == owner.id


async def test_a_session_user_must_be_a_uuid(db: DatabaseManager) -> None:
    with pytest.raises(ValidationError) as caught, db.get_session(user_id="nobody"):
        pass
    assert caught.value.field == "user_id"
    with pytest.raises(ValidationError), db.get_session(user_id=uuid.uuid4(), system=True):
        pass


async def test_a_users_session_reaches_its_own_account_only(
    db: DatabaseManager, sql: RawSQL, owner: User, stranger: User
) -> None:
    users = UserRepository()
    with db.get_session() as session:
        users.set_password(session, stranger.id, "stranger's long password")
    before = sql.rows("SELECT id, email, hashed_password, version FROM users ORDER BY id")
    with db.get_session(user_id=owner.id) as session:
        assert users.get_by_id(session, owner.id) is not None
        assert users.get_by_id(session, stranger.id) is None
        assert users.get_by_email(session, "stranger@example.com") is None
        assert [u.id for u in users.list(session)] == [owner.id]
        assert users.authenticate(session, "stranger", "stranger's long password") is None
        with pytest.raises(NotFoundError):
            users.update(session, stranger.id, first_name="Mallory")
        with pytest.raises(NotFoundError):
            users.set_password(session, stranger.id, "a new long password")
        assert users.delete(session, stranger.id) is False
        with pytest.raises(ValidationError):
            users.create_user(
                session, email="new@example.com", username="newcomer", password="long password"
            )
    async with db.get_async_session(user_id=owner.id) as session:
        assert await users.async_get_by_id(session, stranger.id) is None
        assert await users.async_delete(session, stranger) is False
    assert sql.rows("SELECT id, email, hashed_password, version FROM users ORDER BY id") == before
    with db.get_session() as session:  # sign-in, for no one yet: every account
        assert users.authenticate(session, "stranger", "stranger's long password") is not None


# -- positions -------------------------------------------------------------------------------


async def test_another_users_positions_read_as_missing(
    uow: UnitOfWork, portfolio: Portfolio, held: Position, stranger: User, owner: User
) -> None:
    assert await uow(positions.get_by_id, held.id, user_id=stranger.id) is None
    assert await uow(positions.list, portfolio_id=portfolio.id, user_id=stranger.id) == []
    assert await uow(positions.count, user_id=stranger.id) == 0
    assert await uow(positions.exists, ticker="AAPL", user_id=stranger.id) is False
    assert await uow(positions.get_by_id, held.id, user_id=owner.id) is not None
    assert await uow(positions.count, user_id=owner.id) == 1


async def test_another_users_positions_cannot_be_added_changed_or_removed(
    uow: UnitOfWork, sql: RawSQL, portfolio: Portfolio, held: Position, stranger: User
) -> None:
    before = snapshot(sql)
    pid = portfolio.id
    with pytest.raises(NotFoundError) as caught:
        await uow(portfolios.add_position, pid, user_id=stranger.id, ticker="MSFT", shares=1)
    assert caught.value.key == pid
    with pytest.raises(NotFoundError):
        await uow(positions.create, portfolio_id=pid, user_id=stranger.id, ticker="MSFT", shares=1)
    with pytest.raises(NotFoundError):
        await uow(
            positions.bulk_create,
            [{"portfolio_id": pid, "ticker": "MSFT", "shares": 1}],
            user_id=stranger.id,
        )
    with pytest.raises(NotFoundError):
        await uow(portfolios.update_position, pid, "AAPL", user_id=stranger.id, shares=0)
    with pytest.raises(NotFoundError):
        await uow(positions.update, held.id, user_id=stranger.id, shares=0)
    with pytest.raises(NotFoundError):
        await uow(portfolios.adjust_position, pid, "AAPL", shares=5, user_id=stranger.id)
    with pytest.raises(NotFoundError):  # a buy that would open a position
        await uow(portfolios.adjust_position, pid, "MSFT", shares=5, user_id=stranger.id)
    assert await uow(portfolios.remove_position, pid, "AAPL", user_id=stranger.id) is False
    assert await uow(positions.delete, held.id, user_id=stranger.id) is False
    assert await uow(positions.delete, held, user_id=stranger.id) is False
    assert snapshot(sql) == before


async def test_the_owner_manages_their_positions(
    uow: UnitOfWork, sql: RawSQL, portfolio: Portfolio, held: Position, owner: User
) -> None:
    pid = portfolio.id
    await uow(portfolios.add_position, pid, user_id=owner.id, ticker="MSFT", shares=1)
    updated = await uow(portfolios.update_position, pid, "AAPL", user_id=owner.id, shares=12)
    assert updated.shares == Decimal(12)
    adjusted = await uow(portfolios.adjust_position, pid, "AAPL", shares=3, user_id=owner.id)
    assert adjusted.shares == Decimal(15)
    assert await uow(portfolios.remove_position, pid, "MSFT", user_id=owner.id) is True
    assert sql.count("positions") == 1


async def test_rows_cannot_move_to_another_users_portfolio(
    uow: UnitOfWork,
    sql: RawSQL,
    db: DatabaseManager,
    held: Position,
    analysis: AnalysisResult,
    stranger: User,
    owner: User,
) -> None:
    with db.get_session() as session:
        theirs = Portfolio(user_id=stranger.id, name="Theirs")
        session.add(theirs)
    before = snapshot(sql)
    moves = [
        (positions.update, held.id),
        (analyses.update, analysis.id),
    ]
    for update, key in moves:
        with pytest.raises(ValidationError) as caught:
            await update_as(uow, update, key, owner, portfolio_id=theirs.id)
        assert caught.value.field == "portfolio_id"
    assert snapshot(sql) == before


async def update_as(uow: UnitOfWork, update: Any, key: Any, user: User, **values: Any) -> Any:
    return await uow(update, key, user_id=user.id, **values)


# -- analysis results ---------------------------------------------------------------------------


async def test_another_users_portfolio_analyses_are_hidden(
    uow: UnitOfWork,
    sql: RawSQL,
    portfolio: Portfolio,
    analysis: AnalysisResult,
    stranger: User,
    owner: User,
) -> None:
    shared = await uow(analyses.save, ticker="AAPL", analysis_type="risk_analysis")
    kind = AnalysisType.RISK_ANALYSIS
    found = await uow(
        analyses.get_latest_valid, "AAPL", kind, portfolio_id=portfolio.id, user_id=stranger.id
    )
    assert found is None
    history = await uow(analyses.get_history, "AAPL", user_id=stranger.id)
    assert [r.id for r in history] == [shared.id]  # shared results stay shared
    assert await uow(analyses.get_by_id, analysis.id, user_id=stranger.id) is None
    assert await uow(analyses.count, portfolio_id=portfolio.id, user_id=stranger.id) == 0
    before = snapshot(sql)
    assert await uow(analyses.invalidate, portfolio_id=portfolio.id, user_id=stranger.id) == 0
    with pytest.raises(NotFoundError):
        await uow(
            analyses.save,
            portfolio_id=portfolio.id,
            ticker="MSFT",
            analysis_type=kind,
            user_id=stranger.id,
        )
    assert await uow(analyses.delete, analysis.id, user_id=stranger.id) is False
    assert snapshot(sql) == before
    owned = await uow(
        analyses.get_latest_valid, "AAPL", kind, portfolio_id=portfolio.id, user_id=owner.id
    )
    assert owned is not None
    assert owned.id == analysis.id
    assert await uow(analyses.invalidate, portfolio_id=portfolio.id, user_id=owner.id) == 1


async def test_run_transaction_opens_every_attempt_for_the_user(
    db: DatabaseManager, portfolio: Portfolio, owner: User, stranger: User
) -> None:
    def read(session: Any) -> Portfolio | None:
        return portfolios.get_by_id(session, portfolio.id)

    async def async_read(session: Any) -> Portfolio | None:
        return await portfolios.async_get_by_id(session, portfolio.id)

    assert run_transaction(read, database=db, user_id=stranger.id) is None
    assert run_transaction(read, database=db, user_id=owner.id) is not None
    assert await async_run_transaction(async_read, database=db, user_id=stranger.id) is None
    found = await async_run_transaction(async_read, database=db, user_id=owner.id)
    assert found is not None


async def test_a_bulk_insert_into_one_portfolio_checks_its_owner_once(
    db: DatabaseManager, portfolio: Portfolio, owner: User, statements: list[str]
) -> None:
    rows = [{"portfolio_id": portfolio.id, "ticker": t, "shares": 1} for t in ("A", "B", "C")]
    with db.get_session() as session:
        created = positions.bulk_create(session, rows, user_id=owner.id)
    assert len(created) == 3
    checks = [s for s in statements if s.lstrip().upper().startswith("SELECT EXISTS")]
    assert len(checks) == 1
