"""The main job of the README's first command: the quick start on real sample data.

``run_demo(manager)`` migrates the schema, then creates (or finds, when run
again) a user, a portfolio and its positions, loads the sample price history,
stores a DCF analysis result per position and a cache entry per ticker, and
returns the portfolio valued at the latest closes
(:meth:`PortfolioRepository.value_portfolio`). Running it twice gives the
same result and no duplicates. ``buffetbot-db demo`` prints it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pandas as pd
from sqlalchemy.orm import Session

from database import migrate
from database.connection import DatabaseManager
from database.models import AnalysisType, DataType, Portfolio, RiskTolerance, User
from database.repositories import (
    AnalysisRepository,
    MarketDataRepository,
    PortfolioRepository,
    PriceHistoryRepository,
    UserRepository,
)
from database.repositories.portfolio import PortfolioValuation

SAMPLE_DATA = Path(__file__).parent / "sample_data"
# (ticker, shares, average cost, target allocation %, sample file)
HOLDINGS = [
    ("AAPL", Decimal("100"), Decimal("150.0000"), Decimal("35.00"), "AAPL.csv"),
    ("GOOG", Decimal("20"), Decimal("950.5000"), Decimal("30.00"), "GOOG.csv"),
    ("CALM", Decimal("150"), Decimal("45.2500"), Decimal("25.00"), "CALM.csv"),
]
EMAIL = "investor@example.com"


@dataclass(frozen=True)
class DemoResult:
    user: User
    portfolio: Portfolio
    valuation: PortfolioValuation  # at the latest closes (PortfolioRepository.value_portfolio)
    bars_loaded: int
    analyses: int
    cache_entries: int


def _load_prices(session: Session, prices: PriceHistoryRepository) -> int:
    loaded = 0
    for ticker, *_, file in HOLDINGS:
        frame = pd.read_csv(SAMPLE_DATA / file, index_col=0)
        result = prices.upsert(session, frame, ticker=ticker, data_source="sample")
        loaded += result.inserted + result.updated + result.unchanged
    return loaded


def _account(
    session: Session, users: UserRepository, portfolios: PortfolioRepository
) -> tuple[User, Portfolio]:
    user = users.get_by_email(session, EMAIL) or users.create_user(
        session,
        email=EMAIL,
        username="investor",
        password="a long demo password",  # noqa: S106 - the demo's own account
        first_name="John",
        last_name="Doe",
        preferences={"theme": "dark", "notifications": True},
    )
    portfolio = next(
        (p for p in portfolios.get_user_portfolios(session, user.id) if p.name == "My Portfolio"),
        None,
    ) or portfolios.create(
        session,
        user_id=user.id,
        name="My Portfolio",
        description="The demo's value portfolio",
        risk_tolerance=RiskTolerance.MODERATE,
        target_cash_percentage=Decimal("10.00"),
    )
    for ticker, shares, cost, allocation, _ in HOLDINGS:
        values = {"shares": shares, "average_cost": cost, "allocation_percentage": allocation}
        if portfolios.positions.exists(
            session, portfolio_id=portfolio.id, ticker=ticker, user_id=user.id
        ):
            portfolios.update_position(session, portfolio.id, ticker, user_id=user.id, **values)
        else:
            portfolios.add_position(session, portfolio.id, user_id=user.id, ticker=ticker, **values)
    return user, portfolio


def run_demo(manager: DatabaseManager) -> DemoResult:
    """Migrate, fill and value the demo portfolio on ``manager``'s database."""
    migrate.upgrade(manager.urls.sync_url.render_as_string(hide_password=False))
    users, portfolios, prices = UserRepository(), PortfolioRepository(), PriceHistoryRepository()
    analyses, cache = AnalysisRepository(), MarketDataRepository()
    with manager.get_session(system=True) as session:
        bars = _load_prices(session, prices)
        user, portfolio = _account(session, users, portfolios)
        valuation = portfolios.value_portfolio(session, portfolio.id, user_id=user.id)
        for position in valuation.positions:
            ticker, close = position.ticker, position.close
            assert close is not None  # the sample data has bars for every holding
            if (
                analyses.get_latest_valid(
                    session, ticker, AnalysisType.VALUE_ANALYSIS, strategy="dcf"
                )
                is None
            ):
                analyses.save(
                    session,
                    portfolio_id=portfolio.id,
                    ticker=ticker,
                    analysis_type=AnalysisType.VALUE_ANALYSIS,
                    strategy="dcf",
                    score=Decimal("75.00"),
                    metadata={"intrinsic_value": float(close) * 1.2, "margin_of_safety": 0.167},
                    recommendation="buy",
                    confidence_level=Decimal("0.80"),
                )
            cache.cache_market_data(
                session,
                ticker,
                DataType.STOCK_INFO,
                {"symbol": ticker, "lastClose": close},
                ttl=dt.timedelta(days=1),
                data_source="sample",
            )
        analysis_count = analyses.count(session, portfolio_id=portfolio.id, user_id=user.id)
        cache_count = cache.count(session, data_source="sample")
    return DemoResult(user, portfolio, valuation, bars, analysis_count, cache_count)
