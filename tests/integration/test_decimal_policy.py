"""One decimal policy through every entry point, on both backends (issue 11 item 2).

Domain input (model attributes, repository create and update, criteria) is kept
exactly or refused with a ValidationError naming the field and the value: money is
never rounded silently. Option chains are a float feed (yfinance): their values are
read through ``repr`` and rounded half to even to the column's places, by the named
policy ``validation.FLOAT_SOURCE``, at that source only.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest

from database.exceptions import ValidationError
from database.models import AnalysisType, Portfolio
from database.options import OptionsValidationError
from database.repositories import AnalysisRepository, OptionsDataRepository, PortfolioRepository
from tests.conftest import RawSQL
from tests.integration.conftest import UnitOfWork

# Every PostgreSQL test here runs once more through PgBouncer (transaction pooling).
pytestmark = pytest.mark.pgbouncer

portfolios = PortfolioRepository()
analyses = AnalysisRepository()
options = OptionsDataRepository()
EXPIRY = dt.date(2030, 1, 18)
SNAPSHOT = dt.datetime(2029, 12, 31, 21, 0, tzinfo=dt.UTC)
EXTRA_PLACES = [0.1234565, Decimal("0.1234565"), "0.1234565", Decimal("1E-7")]


def stored(sql: RawSQL, query: str, scale: int) -> Decimal:
    """A decimal as the backend stores it: SQLite's scaled integer, PostgreSQL's NUMERIC."""
    raw = sql.scalar(query)
    if sql.backend == "sqlite":
        assert isinstance(raw, int)
        return Decimal(raw).scaleb(-scale)
    assert isinstance(raw, Decimal)
    return raw


def contract(strike: Any = 120, **values: Any) -> dict[str, Any]:
    return {"strike": strike, "option_type": "call", "expiration": EXPIRY, **values}


# -- domain input: exact, or refused -------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "exact"),
    [
        (0.1, Decimal("0.1")),  # through repr, not Decimal(0.1)'s binary expansion
        ("123456789012.123456", Decimal("123456789012.123456")),
        (Decimal("0.000001"), Decimal("0.000001")),
        (-0.0, Decimal(0)),
    ],
)
async def test_exact_values_are_stored_exactly(
    uow: UnitOfWork, portfolio: Portfolio, sql: RawSQL, given: Any, exact: Decimal
) -> None:
    created = await uow(portfolios.add_position, portfolio.id, ticker="AAPL", shares=given)
    assert created.shares == exact
    assert stored(sql, "SELECT shares FROM positions", 6) == exact
    # The same value is found by a criterion, compared exactly in SQL.
    assert await uow(portfolios.positions.count, shares=given) == 1
    assert await uow(portfolios.positions.count, shares__in=[given, 1]) == 1
    # Update with a dict of values: the same checks.
    updated = await uow(
        portfolios.update_position, portfolio.id, "AAPL", shares=1, **{"average_cost": 0.1}
    )
    assert (updated.shares, updated.average_cost) == (1, Decimal("0.1"))
    assert stored(sql, "SELECT average_cost FROM positions", 4) == Decimal("0.1")
    updated = await uow(portfolios.update_position, portfolio.id, "AAPL", **{"shares": given})
    assert updated.shares == exact
    assert stored(sql, "SELECT shares FROM positions", 6) == exact


@pytest.mark.parametrize("value", EXTRA_PLACES)
async def test_domain_input_with_extra_places_is_refused_everywhere(
    uow: UnitOfWork, portfolio: Portfolio, sql: RawSQL, value: Any
) -> None:
    async def refused(field: str, method: Any, *args: Any, **values: Any) -> None:
        with pytest.raises(ValidationError, match="decimal places") as caught:
            await uow(method, *args, **values)
        assert (caught.value.field, caught.value.value) == (field, value)

    await refused("shares", portfolios.add_position, portfolio.id, ticker="AAPL", shares=value)
    await uow(portfolios.add_position, portfolio.id, ticker="AAPL", shares="1")
    await refused(
        "average_cost", portfolios.update_position, portfolio.id, "AAPL", average_cost=value
    )
    await refused("shares__gt", portfolios.positions.count, shares__gt=value)
    await refused("shares__in", portfolios.positions.count, shares__in=[1, value])
    await refused(
        "target_cash_percentage",
        portfolios.create,
        user_id=portfolio.user_id,
        name="Other",
        target_cash_percentage=value,
    )
    await refused(
        "confidence_level",
        analyses.save,
        ticker="AAPL",
        analysis_type=AnalysisType.VALUE_ANALYSIS,
        confidence_level=value,
    )
    # An options row created through the repository is domain input too: the feed's
    # rounding belongs to store_chain, the chain source.
    symbol = "AAPL300118C00120000"
    await refused(
        "bid", options.create, ticker="AAPL", contract_symbol=symbol, **contract(bid=value)
    )
    assert stored(sql, "SELECT shares FROM positions", 6) == 1
    assert sql.count("options_data") == 0
    assert sql.count("analysis_results") == 0
    assert sql.count("portfolios") == 1


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("shares", -0.000001, "at least 0"),
        ("shares", Decimal("1e12"), "more than 12 integer digits"),
        ("shares", float("nan"), "finite"),
        ("shares", float("inf"), "finite"),
        ("allocation_percentage", "100.01", "at most 100"),
        ("average_cost", "99999999999999.99995", "more than 4 decimal places"),
        ("average_cost", "100000000000000", "more than 14 integer digits"),
    ],
)
async def test_bounds_precision_and_non_finite_values_are_refused(
    uow: UnitOfWork, portfolio: Portfolio, sql: RawSQL, field: str, value: Any, reason: str
) -> None:
    values = {"shares": 1, field: value}
    with pytest.raises(ValidationError, match=reason) as caught:
        await uow(portfolios.add_position, portfolio.id, ticker="AAPL", **values)
    assert caught.value.field == field
    assert sql.count("positions") == 0


async def test_the_largest_values_that_fit_are_stored(
    uow: UnitOfWork, portfolio: Portfolio, sql: RawSQL
) -> None:
    await uow(
        portfolios.add_position,
        portfolio.id,
        ticker="AAPL",
        shares="999999999999.999999",
        average_cost="99999999999999.9999",
        allocation_percentage=100,
    )
    assert stored(sql, "SELECT shares FROM positions", 6) == Decimal("999999999999.999999")
    assert stored(sql, "SELECT average_cost FROM positions", 4) == Decimal("99999999999999.9999")


# -- the float feed: rounded half to even at the option-chain source ---------------------------


FEED = {
    "bid": (0.1234565, Decimal("0.123456")),  # a tie: to even, down
    "ask": (0.1234575, Decimal("0.123458")),  # a tie: to even, up
    "delta": (1e-7, Decimal("0")),
    "gamma": (-1e-7, Decimal("0")),  # never -0
    "last_price": (209.419998000001, Decimal("209.419998")),
    "implied_volatility": (523.8320965, Decimal("523.832096")),  # np.rint(x*1e6): ...097
    "theta": (-0.30000000000000004, Decimal("-0.3")),
}


async def test_option_chain_floats_are_rounded_half_even_at_the_source(
    uow: UnitOfWork, sql: RawSQL
) -> None:
    given = {field: value for field, (value, _) in FEED.items()}
    row = contract(120.0, **given)  # a dict row
    frame = pd.DataFrame([{"strike": 125.0, "expiration": EXPIRY, **given}])  # a calls frame
    result = await uow(options.store_chain, "AAPL", rows=[row], calls=frame, fetched_at=SNAPSHOT)
    assert result.inserted == 2
    chain = await uow(options.get_chain, "AAPL", EXPIRY)
    assert [c.strike for c in chain] == [Decimal(120), Decimal(125)]
    for item in chain:
        for field, (_, expected) in FEED.items():
            assert getattr(item, field) == expected, field
            assert not getattr(item, field).is_signed() or expected < 0
    for symbol in ("AAPL300118C00120000", "AAPL300118C00125000"):
        for field, (_, expected) in FEED.items():
            query = f"SELECT {field} FROM options_data WHERE contract_symbol = '{symbol}'"  # noqa: S608
            assert stored(sql, query, 6) == expected, field


async def test_option_chain_values_the_columns_cannot_hold_are_refused(
    uow: UnitOfWork, sql: RawSQL
) -> None:
    rows = [
        contract(120, bid=float("inf")),
        contract(121, ask="-inf"),
        contract(1e12),
        contract(122, delta=999999.9999995),  # rounds up into a 7th integer digit
        contract(1e-7),  # rounds to 0: no strike
        contract(123, bid=-0.0000015),  # rounds to -0.000002
        contract(124, bid=float("nan"), ask=None),  # missing, as before
    ]
    with pytest.raises(OptionsValidationError) as caught:
        await uow(options.store_chain, "AAPL", rows=rows, fetched_at=SNAPSHOT)
    rejected = [(r.row, r.field, r.reason) for r in caught.value.rejected]
    assert rejected == [
        (0, "bid", "must be a finite number"),
        (1, "ask", "must be a finite number"),
        (2, "strike", "has more than 12 integer digits"),
        (3, "delta", "has more than 6 integer digits"),
        (4, "strike", "must be greater than 0"),
        (5, "bid", "must be at least 0"),
    ]
    assert caught.value.rejected[0].value == float("inf")
    assert sql.count("options_data") == 0
    result = await uow(
        options.store_chain, "AAPL", rows=rows, fetched_at=SNAPSHOT, skip_invalid=True
    )
    assert result.inserted == 1
    assert sql.rows("SELECT bid, ask FROM options_data") == [(None, None)]


async def test_a_float_is_the_same_value_through_the_model_and_the_feed(
    uow: UnitOfWork, portfolio: Portfolio
) -> None:
    # 0.1 has one place: exact under both policies, read through repr by both.
    position = await uow(portfolios.add_position, portfolio.id, ticker="AAPL", shares=0.1)
    await uow(options.store_chain, "AAPL", rows=[contract(0.1, bid=0.1)], fetched_at=SNAPSHOT)
    (item,) = await uow(options.get_chain, "AAPL", EXPIRY)
    assert position.shares == item.strike == item.bid == Decimal("0.1")
    assert await uow(options.count, bid=0.1, strike__lte=0.1) == 1
