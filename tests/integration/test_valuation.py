"""Portfolio valuation at the latest close or as of a date, on both backends and in both forms.

Expected figures are worked out by hand from the bars inserted below (money to 4
places, percentages to 2, half up, once from the exact products).
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest

from database import DatabaseManager
from database.exceptions import NotFoundError, ValidationError
from database.models import Portfolio, PriceHistory, User
from database.repositories import PortfolioRepository, UserRepository
from database.repositories.portfolio import PortfolioValuation, PositionValue
from tests.integration.conftest import UnitOfWork, row_count_statements

# Every PostgreSQL test here runs once more through PgBouncer (transaction pooling).
pytestmark = pytest.mark.pgbouncer

portfolios = PortfolioRepository()
users = UserRepository()

BARS = [  # (ticker, date, close)
    ("AAPL", dt.date(2024, 1, 2), "180.123456"),
    ("AAPL", dt.date(2024, 1, 3), "181.5"),
    ("AAPL", dt.date(2024, 1, 5), "179.000001"),
    ("MSFT", dt.date(2024, 1, 2), "370.1"),
    ("MSFT", dt.date(2024, 1, 4), "372.6545"),  # x 0.5 = 186.32725: a tie at the 5th place
    ("BRK-B", dt.date(2024, 1, 3), "360"),
    ("OLD", dt.date(2024, 1, 5), "100"),  # held by an inactive position only
    ("ZZZ", dt.date(2024, 1, 6), "1"),  # held by nobody
]


@pytest.fixture
def held(db: DatabaseManager, portfolio: Portfolio) -> Portfolio:
    """The ``portfolio`` fixture (cash target 5.00 %) holding four active positions and an
    inactive one, with the bars above stored."""
    with db.get_session() as session:
        session.add_all(
            PriceHistory(ticker=t, date=d, open=c, high=c, low=c, close=c, volume=1)
            for t, d, c in BARS
        )
    positions: list[dict[str, Any]] = [
        {"ticker": "AAPL", "shares": "10", "average_cost": "150.25", "allocation_percentage": "40"},
        {"ticker": "MSFT", "shares": "0.5", "average_cost": "300", "allocation_percentage": "30.5"},
        {"ticker": "BRK-B", "shares": "3"},  # no cost, no target
        {"ticker": "NOPE", "shares": "7", "average_cost": "10", "allocation_percentage": "10"},
        {"ticker": "OLD", "shares": "5", "average_cost": "1", "is_active": False},
    ]
    with db.get_session() as session:
        for values in positions:
            portfolios.add_position(session, portfolio.id, **values)
    return portfolio


def by_ticker(valuation: PortfolioValuation) -> dict[str, PositionValue]:
    return {p.ticker: p for p in valuation.positions}


async def test_values_at_the_latest_close(uow: UnitOfWork, held: Portfolio, owner: User) -> None:
    valuation = await uow(portfolios.value_portfolio, held.id, user_id=owner.id)
    assert (valuation.portfolio_id, valuation.name, valuation.as_of) == (held.id, "Core", None)
    assert [p.ticker for p in valuation.positions] == ["AAPL", "BRK-B", "MSFT", "NOPE"]
    aapl, brk, msft, nope = valuation.positions
    assert aapl == PositionValue(
        ticker="AAPL",
        shares=Decimal("10"),
        average_cost=Decimal("150.25"),
        cost_basis=Decimal("1502.5000"),  # 10 x 150.25
        close=Decimal("179.000001"),
        close_date=dt.date(2024, 1, 5),
        market_value=Decimal("1790.0000"),  # 1790.00001
        gain=Decimal("287.5000"),  # 287.50001
        gain_percentage=Decimal("19.13"),  # 287.50001 / 1502.5 = 19.1348 %
        allocation_percentage=Decimal("58.57"),  # 1790.00001 / 3056.32726 = 58.567 %
        target_allocation_percentage=Decimal("40.00"),
    )
    assert (msft.close, msft.close_date) == (Decimal("372.6545"), dt.date(2024, 1, 4))
    assert msft.market_value == Decimal("186.3273")  # 186.32725, half up (half even: ...72)
    assert msft.gain == Decimal("36.3273")
    assert msft.gain_percentage == Decimal("24.22")  # 36.32725 / 150
    assert msft.allocation_percentage == Decimal("6.10")  # 186.32725 / 3056.32726
    assert (brk.cost_basis, brk.gain, brk.gain_percentage) == (None, None, None)
    assert (brk.market_value, brk.allocation_percentage) == (Decimal("1080.0000"), Decimal("35.34"))
    assert brk.target_allocation_percentage is None
    assert (nope.close, nope.close_date, nope.market_value) == (None, None, None)
    assert (nope.gain, nope.allocation_percentage) == (None, None)
    assert nope.cost_basis == Decimal("70.0000")

    assert valuation.total_market_value == Decimal("3056.3273")  # 3056.32726, one rounding
    assert valuation.total_cost_basis == Decimal("1722.5000")  # 1502.5 + 150 + 70
    assert valuation.total_gain == Decimal("323.8273")  # AAPL and MSFT: price and cost
    assert valuation.total_gain_percentage == Decimal("19.60")  # 323.82726 / 1652.5
    assert (valuation.positions_without_price, valuation.positions_without_cost) == (1, 1)
    assert valuation.target_allocation_total == Decimal("80.50")
    assert valuation.target_cash_percentage == Decimal("5.00")


async def test_as_of_takes_the_last_close_on_or_before_the_date(
    uow: UnitOfWork, held: Portfolio
) -> None:
    valuation = await uow(portfolios.value_portfolio, held.id, as_of=dt.date(2024, 1, 3))
    assert valuation.as_of == dt.date(2024, 1, 3)
    closes = {p.ticker: (p.close, p.close_date) for p in valuation.positions}
    assert closes == {
        "AAPL": (Decimal("181.5"), dt.date(2024, 1, 3)),  # on the date
        "MSFT": (Decimal("370.1"), dt.date(2024, 1, 2)),  # the day before: none on the 3rd
        "BRK-B": (Decimal("360"), dt.date(2024, 1, 3)),
        "NOPE": (None, None),
    }
    aapl, msft = by_ticker(valuation)["AAPL"], by_ticker(valuation)["MSFT"]
    assert (aapl.market_value, aapl.gain, aapl.gain_percentage) == (
        Decimal("1815.0000"),
        Decimal("312.5000"),
        Decimal("20.80"),  # 312.5 / 1502.5 = 20.7987 %
    )
    assert (msft.market_value, msft.gain, msft.gain_percentage) == (
        Decimal("185.0500"),
        Decimal("35.0500"),
        Decimal("23.37"),  # 35.05 / 150 = 23.3667 %
    )
    assert [p.allocation_percentage for p in valuation.positions] == [
        Decimal("58.93"),  # 1815 / 3080.05
        Decimal("35.06"),  # 1080 / 3080.05
        Decimal("6.01"),  # 185.05 / 3080.05
        None,
    ]
    assert valuation.total_market_value == Decimal("3080.0500")
    assert valuation.total_gain == Decimal("347.5500")
    assert valuation.total_gain_percentage == Decimal("21.03")  # 347.55 / 1652.5


async def test_before_any_bar_every_position_is_without_a_price(
    uow: UnitOfWork, held: Portfolio
) -> None:
    valuation = await uow(portfolios.value_portfolio, held.id, as_of=dt.date(2024, 1, 1))
    assert valuation.positions_without_price == 4
    assert all(p.close is None and p.allocation_percentage is None for p in valuation.positions)
    # unknown, not 0: held, but no position has a price yet
    assert (valuation.total_market_value, valuation.total_gain) == (None, None)
    assert valuation.total_gain_percentage is None
    assert valuation.total_cost_basis == Decimal("1722.5000")


async def test_an_empty_portfolio_is_valued_at_zero(
    uow: UnitOfWork, portfolio: Portfolio, owner: User
) -> None:
    valuation = await uow(portfolios.value_portfolio, portfolio.id, user_id=owner.id)
    assert valuation.positions == ()
    assert (valuation.total_cost_basis, valuation.total_market_value) == (Decimal(0), Decimal(0))
    assert (valuation.positions_without_price, valuation.positions_without_cost) == (0, 0)
    assert valuation.target_cash_percentage == Decimal("5.00")


async def test_another_users_portfolio_is_not_found_like_a_missing_one(
    uow: UnitOfWork, db: DatabaseManager, held: Portfolio
) -> None:
    stranger = await uow(
        users.create, email="s@example.com", username="stranger", hashed_password="x"
    )
    with pytest.raises(NotFoundError) as theirs:
        await uow(portfolios.value_portfolio, held.id, user_id=stranger.id)
    unknown = uuid.uuid4()
    with pytest.raises(NotFoundError) as missing:
        await uow(portfolios.value_portfolio, unknown, user_id=stranger.id)
    assert type(theirs.value) is type(missing.value)
    assert str(theirs.value).replace(str(held.id), "?") == str(missing.value).replace(
        str(unknown), "?"
    )
    with db.get_session(user_id=stranger.id) as session, pytest.raises(NotFoundError):
        portfolios.value_portfolio(session, held.id)  # the session's user, not only user_id=


async def test_a_missing_portfolio_is_not_found(uow: UnitOfWork) -> None:
    with pytest.raises(NotFoundError):
        await uow(portfolios.value_portfolio, uuid.uuid4())


async def test_a_datetime_as_of_is_refused(uow: UnitOfWork, held: Portfolio) -> None:
    with pytest.raises(ValidationError) as caught:
        await uow(portfolios.value_portfolio, held.id, as_of=dt.datetime(2024, 1, 3, tzinfo=dt.UTC))
    assert caught.value.field == "as_of"


async def test_valuation_is_one_query(
    uow: UnitOfWork, held: Portfolio, owner: User, statements: list[str]
) -> None:
    statements.clear()
    await uow(portfolios.value_portfolio, held.id, user_id=owner.id)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1
    assert row_count_statements(selects, "SELECT", "price_history") == 1
