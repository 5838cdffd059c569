"""A trade's arithmetic: shares and the weighted average cost, exact then rounded once."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest

from database.exceptions import ValidationError
from database.models import Position
from database.repositories.portfolio import Trade


def position(shares: str, average_cost: str | None) -> Position:
    return Position(ticker="AAPL", shares=shares, average_cost=average_cost)


@pytest.mark.parametrize(
    ("held", "cost", "bought", "price"),
    [
        ("10", "300", "5", "330.01"),
        ("1", "1.0000", "1", "1.0001"),  # exactly half a unit: rounds up
        ("999999999.999999", "99999999999.9999", "0.000001", "0.0001"),  # near the limits
        ("123456.789012", "9876.5432", "654321.098765", "1234.5678"),
        # equal lots at a tie, with products past 28 digits: one rounding, at the end
        ("999999999.999999", "99999999999.9999", "999999999.999999", "99999999999.9998"),
        (
            "469300823840.935542",
            "85670750087236.0159",
            "469300823840.935542",
            "85670750087236.0164",
        ),
    ],
)
def test_a_buy_moves_the_average_cost_to_the_exact_weighted_mean_rounded_half_up(
    held: str, cost: str, bought: str, price: str
) -> None:
    target = position(held, cost)
    Trade.of("AAPL", bought, price).apply(target)
    exact = (Fraction(held) * Fraction(cost) + Fraction(bought) * Fraction(price)) / (
        Fraction(held) + Fraction(bought)
    )
    units = math.floor(exact * 10_000 + Fraction(1, 2))  # half up, in exact arithmetic
    assert target.average_cost == Decimal(units).scaleb(-4)
    assert target.shares == Decimal(held) + Decimal(bought)


def test_a_sale_keeps_the_average_cost_and_cannot_go_below_zero() -> None:
    target = position("10", "300")
    Trade.of("AAPL", "-4", "999").apply(target)
    assert (target.shares, target.average_cost) == (Decimal(6), Decimal(300))
    with pytest.raises(ValidationError, match="holds 6"):
        Trade.of("AAPL", "-7", None).apply(target)
    assert target.shares == 6


def test_an_unknown_cost_stays_unknown_and_a_first_buy_sets_it() -> None:
    unknown = position("10", None)
    Trade.of("AAPL", "5", "100").apply(unknown)
    assert unknown.average_cost is None
    empty = position("0", "250")
    Trade.of("AAPL", "5", "100").apply(empty)
    assert empty.average_cost == Decimal(100)


@pytest.mark.parametrize("shares", ["0", "1.0000001", "nan", "inf", None, True, "ten"])
def test_a_trade_of_no_or_malformed_shares_is_refused(shares: object) -> None:
    with pytest.raises(ValidationError) as caught:
        Trade.of("AAPL", shares, None)
    assert caught.value.field == "shares"
