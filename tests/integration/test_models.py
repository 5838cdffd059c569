"""What the models store and read back, checked with plain SQL where it matters."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from database import DatabaseManager
from database.exceptions import IntegrityError
from database.models import (
    AnalysisResult,
    AnalysisType,
    Portfolio,
    Position,
    RiskTolerance,
    User,
)
from database.repositories import (
    AnalysisRepository,
    PositionRepository,
    PriceHistoryRepository,
    UserRepository,
)
from tests.conftest import RawSQL

# Every PostgreSQL test here runs once more through PgBouncer (transaction pooling).
pytestmark = pytest.mark.pgbouncer

EXACT_VALUES = [
    Decimal("0.000001"),
    Decimal("0.1"),
    Decimal("123456789012.123456"),
    Decimal("1e-6"),
]


@pytest.mark.parametrize("shares", EXACT_VALUES)
async def test_decimals_round_trip_exactly(
    db: DatabaseManager, portfolio: Portfolio, shares: Decimal
) -> None:
    async with db.get_async_session() as session:
        session.add(Position(portfolio_id=portfolio.id, ticker="AAPL", shares=shares))
    async with db.get_async_session() as session:
        stored = await session.scalar(select(Position.shares))
    assert stored == shares
    assert isinstance(stored, Decimal)


async def test_decimal_sums_and_comparisons_are_exact_in_sql(
    db: DatabaseManager, portfolio: Portfolio
) -> None:
    async with db.get_async_session() as session:
        for ticker in ("A", "B", "C"):
            session.add(Position(portfolio_id=portfolio.id, ticker=ticker, shares="0.1"))
    async with db.get_async_session() as session:
        assert await session.scalar(select(func.sum(Position.shares))) == Decimal("0.3")
        bigger = await session.scalars(
            select(Position.ticker).where(Position.shares > Decimal("0.09"))
        )
        assert sorted(bigger) == ["A", "B", "C"]


async def test_timestamps_are_aware_utc_on_both_backends(db: DatabaseManager) -> None:
    before = dt.datetime.now(dt.UTC)
    naive_expiry = dt.datetime.utcnow() + dt.timedelta(hours=24)
    async with db.get_async_session() as session:
        session.add(
            AnalysisResult(ticker="AAPL", analysis_type="value_analysis", expires_at=naive_expiry)
        )
    async with db.get_async_session() as session:
        result = await session.scalar(select(AnalysisResult))
    assert result is not None
    for moment in (result.created_at, result.updated_at, result.calculated_at, result.expires_at):
        assert moment is not None
        assert moment.utcoffset() == dt.timedelta(0)
    assert result.created_at >= before - dt.timedelta(seconds=1)
    assert result.expires_at == naive_expiry.replace(tzinfo=dt.UTC)
    assert not result.is_expired()  # aware vs aware: no TypeError


async def test_database_side_defaults_fill_raw_inserts(db: DatabaseManager, sql: RawSQL) -> None:
    sql.execute(
        "INSERT INTO users (id, email, username, hashed_password) VALUES (:id, :e, :u, :p)",
        id=sql.key(uuid.uuid4()),
        e="raw@example.com",
        u="raw",
        p="x",
    )
    async with db.get_async_session() as session:
        user = await session.scalar(select(User))
    assert user is not None
    assert user.is_active is True
    assert user.is_verified is False
    assert user.created_at.tzinfo is not None


async def test_enums_read_back_as_enums(db: DatabaseManager, owner: User, sql: RawSQL) -> None:
    async with db.get_async_session() as session:
        session.add(
            Portfolio(user_id=owner.id, name="Growth", risk_tolerance=RiskTolerance.AGGRESSIVE)
        )
    async with db.get_async_session() as session:
        stored = await session.scalar(select(Portfolio.risk_tolerance))
    assert stored is RiskTolerance.AGGRESSIVE
    assert sql.scalar("SELECT risk_tolerance FROM portfolios") == "aggressive"


async def test_metadata_keyword_is_stored_and_queryable(db: DatabaseManager, sql: RawSQL) -> None:
    repository = AnalysisRepository()
    payload = {"intrinsic_value": 180.0, "assumptions": {"growth_rate": 0.05}}
    async with db.get_async_session() as session:
        await repository.async_create(
            session, ticker="AAPL", analysis_type=AnalysisType.VALUE_ANALYSIS, metadata=payload
        )
    async with db.get_async_session() as session:
        found = await repository.async_get_by_criteria(session, metadata__isnull=False)
    assert [r.metadata for r in found] == [payload]
    assert "intrinsic_value" in str(sql.scalar("SELECT metadata FROM analysis_results"))


async def test_json_edits_in_place_are_saved(db: DatabaseManager) -> None:
    async with db.get_async_session() as session:
        user = User(
            email="j@example.com",
            username="json",
            hashed_password="x",
            preferences='{"theme": "dark"}',
        )
        session.add(user)
    async with db.get_async_session() as session:
        loaded = await session.get(User, user.id)
        assert loaded is not None
        assert loaded.preferences is not None
        loaded.preferences["notifications"] = True
    async with db.get_async_session() as session:
        reloaded = await session.get(User, user.id)
        assert reloaded is not None
        assert reloaded.preferences == {"theme": "dark", "notifications": True}


async def test_tickers_and_emails_are_normalised_on_write(
    db: DatabaseManager, portfolio: Portfolio, sql: RawSQL
) -> None:
    async with db.get_async_session() as session:
        session.add(Position(portfolio_id=portfolio.id, ticker=" brk-b ", shares=1))
        session.add(User(email="MiXeD@Example.COM", username="mixed", hashed_password="x"))
    assert sql.scalar("SELECT ticker FROM positions") == "BRK-B"
    assert sql.scalar("SELECT email FROM users WHERE username = 'mixed'") == "mixed@example.com"
    async with db.get_async_session() as session:
        found = await PositionRepository().async_get_by_criteria(session, ticker="brk-b")
    assert [p.ticker for p in found] == ["BRK-B"]


async def test_lower_case_raw_tickers_read_back_upper_case(
    db: DatabaseManager, portfolio: Portfolio, sql: RawSQL
) -> None:
    sql.execute(
        "INSERT INTO positions (id, portfolio_id, ticker, shares) VALUES (:id, :p, 'msft', 1)",
        id=sql.key(uuid.uuid4()),
        p=sql.key(portfolio.id),
    )
    async with db.get_async_session() as session:
        assert await session.scalar(select(Position.ticker)) == "MSFT"


async def test_volumes_beyond_32_bits_are_stored(db: DatabaseManager) -> None:
    spx_volume = 9_976_520_000  # ^SPX, 2023: larger than 2**31 - 1
    repository = PriceHistoryRepository()
    day = dt.date(2023, 3, 13)
    async with db.get_async_session() as session:
        await repository.async_create(
            session, ticker="^spx", date=day, close="3855.76", volume=spx_volume
        )
    async with db.get_async_session() as session:
        bar = await repository.async_get_by_id(session, ("^SPX", day))
    assert bar is not None
    assert bar.volume == spx_volume


@pytest.mark.parametrize(
    ("column", "value"),
    [("shares", -1), ("allocation_percentage", 101), ("average_cost", -1)],
)
async def test_check_constraints_hold_against_raw_sql(
    db: DatabaseManager, portfolio: Portfolio, sql: RawSQL, column: str, value: int
) -> None:
    scale = {"shares": 6, "average_cost": 4, "allocation_percentage": 2}[column]
    values = {"shares": 1, column: value * (10**scale if sql.backend == "sqlite" else 1)}
    with pytest.raises(Exception, match=r"(?i)check"):
        sql.execute(
            "INSERT INTO positions (id, portfolio_id, ticker, shares, average_cost, "
            "allocation_percentage) VALUES (:id, :p, 'AAPL', :shares, :cost, :allocation)",
            id=sql.key(uuid.uuid4()),
            p=sql.key(portfolio.id),
            shares=values["shares"],
            cost=values.get("average_cost"),
            allocation=values.get("allocation_percentage"),
        )
    assert sql.count("positions") == 0


async def test_valid_boundaries_pass_the_check_constraints(
    db: DatabaseManager, portfolio: Portfolio
) -> None:
    async with db.get_async_session() as session:
        session.add(
            Position(
                portfolio_id=portfolio.id,
                ticker="AAPL",
                shares=0,
                average_cost=0,
                allocation_percentage=100,
            )
        )
    async with db.get_async_session() as session:
        position = await session.scalar(select(Position))
    assert position is not None
    assert position.allocation_percentage == Decimal("100.00")


async def test_deleting_a_user_cascades_to_portfolios_and_positions(
    db: DatabaseManager, owner: User, portfolio: Portfolio, sql: RawSQL
) -> None:
    async with db.get_async_session() as session:
        session.add(Position(portfolio_id=portfolio.id, ticker="AAPL", shares=1))
        session.add(
            AnalysisResult(portfolio_id=portfolio.id, ticker="AAPL", analysis_type="risk_analysis")
        )
    async with db.get_async_session() as session:
        assert await UserRepository().async_delete(session, owner.id)
    assert (sql.count("portfolios"), sql.count("positions"), sql.count("analysis_results")) == (
        0,
        0,
        0,
    )


async def test_a_missing_parent_is_an_integrity_error(db: DatabaseManager, sql: RawSQL) -> None:
    with pytest.raises(IntegrityError):
        async with db.get_async_session() as session:
            await PositionRepository().async_create(
                session, portfolio_id=uuid.uuid4(), ticker="AAPL", shares=1
            )
    assert sql.count("positions") == 0


async def test_new_objects_can_read_their_collections_without_lazy_loading(
    db: DatabaseManager, owner: User
) -> None:
    from database.repositories import PortfolioRepository

    async with db.get_async_session() as session:
        created = await PortfolioRepository().async_create(session, user_id=owner.id, name="Fresh")
        assert created.positions == []  # no MissingGreenlet
    assert created.analysis_results == []
