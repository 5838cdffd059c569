"""No lost update: concurrent writers through the public API, on both backends."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal

import pytest

from database import DatabaseManager, async_run_transaction, run_transaction
from database.exceptions import (
    ConcurrencyError,
    DatabaseError,
    NotFoundError,
    StaleDataError,
    ValidationError,
)
from database.models import Portfolio, Position, User
from database.repositories import AnalysisRepository, PortfolioRepository, UserRepository
from tests.conftest import RawSQL

# Every PostgreSQL test here runs once more through PgBouncer (transaction pooling).
pytestmark = pytest.mark.pgbouncer

TASKS, INCREMENTS = 20, 100


@pytest.fixture
def position(db: DatabaseManager, portfolio: Portfolio) -> Position:
    with db.get_session() as session:
        return PortfolioRepository().add_position(
            session, portfolio.id, ticker="AAPL", shares=0, average_cost="100.0000"
        )


def stored_shares(sql: RawSQL, position: Position) -> Decimal:
    value = sql.scalar("SELECT shares FROM positions WHERE id = :id", id=sql.key(position.id))
    return Decimal(value).scaleb(-6) if sql.backend == "sqlite" else Decimal(value)


async def test_concurrent_async_adjustments_all_count(
    db: DatabaseManager, portfolio: Portfolio, position: Position, sql: RawSQL
) -> None:
    portfolios = PortfolioRepository()

    async def buyer() -> None:
        for _ in range(INCREMENTS):
            async with db.get_async_session() as session:
                await portfolios.async_adjust_position(session, portfolio.id, "AAPL", shares=1)

    await asyncio.gather(*(buyer() for _ in range(TASKS)))
    assert stored_shares(sql, position) == TASKS * INCREMENTS
    assert sql.scalar("SELECT version FROM positions") == 1 + TASKS * INCREMENTS


def test_concurrent_threaded_adjustments_all_count(
    db: DatabaseManager, portfolio: Portfolio, position: Position, sql: RawSQL
) -> None:
    portfolios = PortfolioRepository()
    errors: list[BaseException] = []

    def buyer() -> None:
        try:
            for _ in range(INCREMENTS):
                with db.get_session() as session:
                    portfolios.adjust_position(session, portfolio.id, "AAPL", shares=1)
        except BaseException as error:  # reported below, in the test's own thread
            errors.append(error)

    threads = [threading.Thread(target=buyer) for _ in range(TASKS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert stored_shares(sql, position) == TASKS * INCREMENTS


async def test_read_modify_write_through_run_transaction_loses_nothing(
    db: DatabaseManager, portfolio: Portfolio, position: Position, sql: RawSQL
) -> None:
    portfolios = PortfolioRepository()

    async def increment(session: object) -> None:
        assert hasattr(session, "execute")
        current = await portfolios.async_get_with_positions(session, portfolio.id)
        assert current is not None
        held = current.positions[0].shares
        await portfolios.async_update_position(session, portfolio.id, "AAPL", shares=held + 1)

    async def worker() -> None:
        for _ in range(5):
            await async_run_transaction(increment, retries=200, database=db)

    await asyncio.gather(*(worker() for _ in range(8)))
    assert stored_shares(sql, position) == 40


async def test_a_stale_read_modify_write_fails_rather_than_losing_an_update(
    db: DatabaseManager, portfolio: Portfolio, position: Position, sql: RawSQL
) -> None:
    portfolios = PortfolioRepository()
    done: list[int] = []
    refused: list[DatabaseError] = []

    async def increment_once() -> None:
        try:
            async with db.get_async_session() as session:
                found = await portfolios.async_get_with_positions(session, portfolio.id)
                assert found is not None
                await asyncio.sleep(0.01)  # let the others read the same version
                held = found.positions[0].shares
                await portfolios.async_update_position(
                    session, portfolio.id, "AAPL", shares=held + 1
                )
            done.append(1)
        except ConcurrencyError as error:
            refused.append(error)

    await asyncio.gather(*(increment_once() for _ in range(TASKS)))
    assert len(done) + len(refused) == TASKS
    assert stored_shares(sql, position) == len(done)  # every success counted, none lost
    assert all(error.retryable for error in refused)


def test_two_sessions_updating_a_stale_copy_one_wins(
    db: DatabaseManager, owner: User, sql: RawSQL
) -> None:
    users = UserRepository()
    with db.get_session() as first:
        mine = users.get_by_id(first, owner.id)
    with db.get_session() as second:
        theirs = users.get_by_id(second, owner.id)
    with db.get_session() as third:
        also_stale = users.get_by_id(third, owner.id)
    assert mine is not None
    assert theirs is not None
    assert also_stale is not None
    with db.get_session() as session:
        users.update(session, mine, first_name="Ada")
    with pytest.raises(StaleDataError) as caught, db.get_session() as session:
        users.update(session, theirs, first_name="Grace")
    assert caught.value.table == "users"
    assert caught.value.key == owner.id
    assert str(owner.id) in str(caught.value)
    assert isinstance(caught.value, ConcurrencyError)
    assert caught.value.retryable
    assert caught.value.__cause__ is not None
    assert sql.scalar("SELECT first_name FROM users") == "Ada"
    with pytest.raises(StaleDataError), db.get_session() as session:
        users.delete(session, also_stale)
    assert sql.count("users") == 1


def test_a_stale_change_flushed_by_the_session_is_refused(
    backend: str, db: DatabaseManager, portfolio: Portfolio, sql: RawSQL
) -> None:
    # Changed in place and flushed by the session's commit, not by a repository.
    with pytest.raises(ConcurrencyError) as caught, db.get_session() as session:
        stale = session.get(Portfolio, portfolio.id)
        assert stale is not None
        sql.execute("UPDATE portfolios SET name = 'Elsewhere', version = version + 1")
        stale.name = "Mine"
    if backend == "postgresql":
        assert isinstance(caught.value, StaleDataError)
        assert (caught.value.table, caught.value.key) == ("portfolios", portfolio.id)
    else:  # SQLite refuses the write of a transaction whose snapshot is stale
        assert "locked" in str(caught.value)
    assert sql.scalar("SELECT name FROM portfolios") == "Elsewhere"


async def test_adjusting_a_position_keeps_a_weighted_average_cost(
    db: DatabaseManager, portfolio: Portfolio, owner: User, uow: object, sql: RawSQL
) -> None:
    portfolios = PortfolioRepository()
    call = uow  # sync or async form, its own committed session

    opened = await call(portfolios.adjust_position, portfolio.id, "msft", shares="10", price="300")
    assert (opened.ticker, opened.shares, opened.average_cost) == ("MSFT", 10, Decimal("300.0000"))
    bought = await call(portfolios.adjust_position, portfolio.id, "MSFT", shares=5, price="330.01")
    # (10 * 300 + 5 * 330.01) / 15 = 310.003333... -> 310.0033
    assert bought.average_cost == Decimal("310.0033")
    assert bought.shares == 15
    sold = await call(portfolios.adjust_position, portfolio.id, "MSFT", shares=-15, price="1")
    assert sold.shares == 0
    assert sold.average_cost == Decimal("310.0033")
    with pytest.raises(ValidationError) as caught:
        await call(portfolios.adjust_position, portfolio.id, "MSFT", shares=-1)
    assert caught.value.field == "shares"
    assert "holds 0" in str(caught.value)
    with pytest.raises(NotFoundError):
        await call(portfolios.adjust_position, portfolio.id, "NVDA", shares=-1)
    with pytest.raises(ValidationError):
        await call(portfolios.adjust_position, portfolio.id, "MSFT", shares=0)
    assert sql.count("positions") == 1
    stranger = UserRepository()
    with db.get_session() as session:
        other = stranger.create(
            session, email="other@example.com", username="other", hashed_password="x"
        )
    with pytest.raises(NotFoundError):
        await call(portfolios.adjust_position, portfolio.id, "MSFT", shares=1, user_id=other.id)
    with pytest.raises(NotFoundError):
        await call(portfolios.adjust_position, portfolio.id, "AMZN", shares=1, user_id=other.id)
    assert sql.count("positions") == 1


def test_run_transaction_retries_only_what_is_safe_to_retry(
    db: DatabaseManager, owner: User, sql: RawSQL
) -> None:
    attempts: list[int] = []

    def conflicted_twice(session: object) -> str:
        attempts.append(1)
        UserRepository().update(session, owner.id, first_name=f"try{len(attempts)}")
        if len(attempts) < 3:
            raise StaleDataError("users", owner.id)
        return "done"

    assert run_transaction(conflicted_twice, retries=3, backoff=0.001, database=db) == "done"
    assert len(attempts) == 3
    assert sql.scalar("SELECT first_name FROM users") == "try3"  # the failed tries rolled back

    attempts.clear()

    def invalid(session: object) -> None:
        attempts.append(1)
        UserRepository().update(session, owner.id, email="not an email")

    with pytest.raises(ValidationError):
        run_transaction(invalid, retries=5, database=db)
    assert len(attempts) == 1

    attempts.clear()

    def always_conflicted(session: object) -> None:
        attempts.append(1)
        raise StaleDataError("users", owner.id)

    with pytest.raises(StaleDataError):
        run_transaction(always_conflicted, retries=2, backoff=0.001, database=db)
    assert len(attempts) == 3
    with pytest.raises(ValidationError):
        run_transaction(always_conflicted, retries=-1, database=db)


def test_a_stale_copy_stays_stale_when_written_again(
    db: DatabaseManager, portfolio: Portfolio, position: Position, sql: RawSQL
) -> None:
    portfolios = PortfolioRepository()
    with db.get_session() as session:
        mine = portfolios.positions.get_by_id(session, position.id)
    assert mine is not None
    with db.get_session() as session:
        portfolios.adjust_position(session, portfolio.id, "AAPL", shares=5)
    for _ in range(2):  # the decision was made on stale data: it never wins
        with pytest.raises(StaleDataError), db.get_session() as session:
            portfolios.positions.update(session, mine, shares=11)
    assert stored_shares(sql, position) == 5


def test_invalidating_analyses_makes_copies_read_before_stale(
    db: DatabaseManager, sql: RawSQL
) -> None:
    analyses = AnalysisRepository()
    with db.get_session() as session:
        result = analyses.save(session, ticker="AAPL", analysis_type="risk_analysis")
    with db.get_session() as session:
        assert analyses.invalidate(session, ticker="AAPL") == 1
    assert sql.scalar("SELECT version FROM analysis_results") == 2
    with pytest.raises(StaleDataError), db.get_session() as session:
        analyses.update(session, result, summary="still valid, surely")
    assert sql.scalar("SELECT summary FROM analysis_results") is None


def test_a_stale_copy_of_a_deleted_row_stays_stale(
    db: DatabaseManager, position: Position, sql: RawSQL
) -> None:
    positions = PortfolioRepository().positions
    with db.get_session() as session:
        mine = positions.get_by_id(session, position.id)
    assert mine is not None
    sql.execute("DELETE FROM positions")
    for _ in range(2):
        with pytest.raises(StaleDataError) as caught, db.get_session() as session:
            positions.update(session, mine, shares=11)
        assert caught.value.table == "positions"
    assert sql.count("positions") == 0


def test_run_transaction_refuses_an_async_function(db: DatabaseManager) -> None:
    async def unit(session: object) -> None:
        raise AssertionError("never run")

    with pytest.raises(ValidationError, match="async_run_transaction"):
        run_transaction(unit, database=db)
