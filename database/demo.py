"""The README's first command: the quick start, end to end, on the configured database.

``python -m database.demo`` (or ``scripts/demo``) migrates the schema, then
creates (or finds, when run again) a user, a portfolio and its positions, stores
a DCF analysis result, and prints what the database holds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from database import get_async_database_session, get_database, migrate
from database.models import AnalysisResult, AnalysisType, Portfolio, RiskTolerance, User
from database.repositories import (
    AnalysisRepository,
    PortfolioRepository,
    PortfolioSummary,
    UserRepository,
)

HOLDINGS = [
    ("AAPL", Decimal("100"), Decimal("150.0000"), Decimal("25.00")),
    ("MSFT", Decimal("75"), Decimal("310.5000"), Decimal("30.00")),
    ("BRK-B", Decimal("40"), Decimal("350.2500"), Decimal("20.00")),
]


async def _user(users: UserRepository, session: AsyncSession) -> User:
    user = await users.async_get_by_email(session, "investor@example.com")
    if user is None:
        user = await users.async_create_user(
            session,
            email="investor@example.com",
            username="investor",
            password="a long demo password",  # noqa: S106 - the demo's own account
            first_name="John",
            last_name="Doe",
            preferences={"theme": "dark", "notifications": True},
        )
    return user


async def run() -> None:
    manager = get_database()
    print(f"database: {manager}")
    migrate.upgrade()  # the same environment-configured database
    users, portfolios, analyses = UserRepository(), PortfolioRepository(), AnalysisRepository()

    async with get_async_database_session() as session:
        user = await _user(users, session)
        portfolio = next(
            (
                p
                for p in await portfolios.async_get_user_portfolios(session, user.id)
                if p.name == "My Portfolio"
            ),
            None,
        ) or await portfolios.async_create(
            session,
            user_id=user.id,
            name="My Portfolio",
            risk_tolerance=RiskTolerance.MODERATE,
            target_cash_percentage=Decimal("5.00"),
        )
        for ticker, shares, cost, allocation in HOLDINGS:
            values = {"shares": shares, "average_cost": cost, "allocation_percentage": allocation}
            if await portfolios.positions.async_exists(
                session, portfolio_id=portfolio.id, ticker=ticker
            ):
                await portfolios.async_update_position(session, portfolio.id, ticker, **values)
            else:
                await portfolios.async_add_position(session, portfolio.id, ticker=ticker, **values)
        await analyses.async_save(
            session,
            portfolio_id=portfolio.id,
            ticker="AAPL",
            analysis_type=AnalysisType.VALUE_ANALYSIS,
            strategy="dcf",
            score=Decimal("85.50"),
            metadata={"intrinsic_value": 180.0, "margin_of_safety": 0.167},
            recommendation="buy",
            confidence_level=Decimal("0.90"),
            expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=24),
        )

    async with get_async_database_session() as session:
        summary = await portfolios.async_get_summary(session, portfolio.id)
        loaded = await portfolios.async_get_with_positions(session, portfolio.id)
        latest = await analyses.async_get_latest_valid(session, "AAPL", AnalysisType.VALUE_ANALYSIS)
        analysis_count = await analyses.async_count(session, ticker="AAPL")
    _print(user, loaded, summary, latest, analysis_count)
    await manager.aclose()


def _print(
    user: User,
    portfolio: Portfolio | None,
    summary: PortfolioSummary,
    latest: AnalysisResult | None,
    count: int,
) -> None:
    assert portfolio is not None
    print(f"user:      {user.username} <{user.email}> (id {user.id})")
    print(
        f"portfolio: {portfolio.name}, risk {portfolio.risk_tolerance.value}, cash target "
        f"{portfolio.target_cash_percentage}%"
    )
    print(f"  {'ticker':<8}{'shares':>14}{'avg cost':>12}{'cost basis':>14}{'alloc %':>9}")
    for position in portfolio.positions:
        cost = "-" if position.average_cost is None else f"{position.average_cost:,.2f}"
        basis = "-" if position.cost_basis is None else f"{position.cost_basis:,.2f}"
        print(
            f"  {position.ticker:<8}{position.shares:>14,.4f}{cost:>12}{basis:>14}"
            f"{position.allocation_percentage!s:>9}"
        )
    print(
        f"  total cost basis {summary.total_cost_basis:,.2f}; allocated "
        f"{summary.allocation_total}%, unallocated {summary.unallocated_percentage}%"
    )
    if latest is not None and latest.expires_at is not None:
        print(
            f"analysis:  {latest.ticker} {latest.analysis_type.value}/{latest.strategy} "
            f"score {latest.score}, {latest.recommendation}, "
            f"expires {latest.expires_at:%Y-%m-%d %H:%M} UTC ({count} stored for AAPL)"
        )


if __name__ == "__main__":
    asyncio.run(run())
