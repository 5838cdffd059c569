"""The checks every model runs when an attribute is set: no database needed."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from database.exceptions import UnknownFieldError, ValidationError
from database.models import (
    AnalysisResult,
    OptionsData,
    Portfolio,
    Position,
    RiskTolerance,
    User,
)


@pytest.mark.parametrize(
    "ticker", ["AAPL", "brk-b", " BRK.B ", "^GSPC", "EURUSD=X", "BTC-USD", "0700.HK", "ES=F"]
)
def test_yfinance_ticker_forms_are_accepted_and_normalised(ticker: str) -> None:
    position = Position(ticker=ticker, shares=1)
    assert position.ticker == ticker.strip().upper()


@pytest.mark.parametrize("ticker", ["", "   ", "AA PL", "AAPL;DROP", "A" * 21, "--", 42])
def test_malformed_tickers_name_the_field_and_value(ticker: object) -> None:
    with pytest.raises(ValidationError) as caught:
        Position(ticker=ticker, shares=1)
    assert caught.value.field == "ticker"
    assert caught.value.value == ticker


def test_emails_are_validated_and_stored_lower_case() -> None:
    assert User(email="  Investor@Example.COM ").email == "investor@example.com"
    with pytest.raises(ValidationError, match="email"):
        User(email="not-an-email")


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("shares", Decimal("-1"), "at least 0"),
        ("shares", "abc", "must be a number"),
        ("shares", Decimal("1.1234567"), "more than 6 decimal places"),
        ("shares", Decimal("1e15"), "integer digits"),
        ("shares", float("nan"), "finite"),
        ("average_cost", Decimal("-0.01"), "at least 0"),
        ("allocation_percentage", Decimal("100.01"), "at most 100"),
        ("allocation_percentage", Decimal("-5"), "at least 0"),
    ],
)
def test_out_of_range_or_inexact_numbers_are_rejected(
    field: str, value: object, reason: str
) -> None:
    with pytest.raises(ValidationError, match=reason) as caught:
        Position(ticker="AAPL", **{field: value})
    assert caught.value.field == field


def test_numbers_are_coerced_exactly() -> None:
    position = Position(ticker="AAPL", shares=100, average_cost=0.1)
    assert position.shares == Decimal("100")
    assert position.average_cost == Decimal("0.1")  # through repr(), not binary float


def test_enums_accept_members_and_values_and_reject_others() -> None:
    assert Portfolio(risk_tolerance="AGGRESSIVE").risk_tolerance is RiskTolerance.AGGRESSIVE
    with pytest.raises(ValidationError, match="conservative, moderate, aggressive"):
        Portfolio(risk_tolerance="reckless")


def test_required_fields_cannot_be_set_to_none() -> None:
    with pytest.raises(ValidationError, match="required"):
        Portfolio(name=None)


def test_long_strings_are_rejected_with_their_limit() -> None:
    with pytest.raises(ValidationError, match="longer than 100"):
        Portfolio(name="x" * 101)


def test_metadata_keyword_is_the_json_column() -> None:
    result = AnalysisResult(ticker="AAPL", metadata={"intrinsic_value": 180.0})
    assert result.metadata == {"intrinsic_value": 180.0}
    assert result.analysis_metadata == {"intrinsic_value": 180.0}
    assert AnalysisResult.metadata is not None  # the class still exposes its MetaData
    assert "analysis_results" in AnalysisResult.metadata.tables


@pytest.mark.parametrize("bad", ['{"unterminated"', "[1, 2]", 5])
def test_json_objects_must_be_objects(bad: object) -> None:
    with pytest.raises(ValidationError, match="preferences"):
        User(preferences=bad)


def test_naive_datetimes_are_taken_as_utc_and_aware_ones_converted() -> None:
    naive = dt.datetime(2026, 1, 1, 12, 0)
    assert AnalysisResult(expires_at=naive).expires_at == naive.replace(tzinfo=dt.UTC)
    eastern = dt.datetime(2026, 1, 1, 7, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert AnalysisResult(expires_at=eastern).expires_at == dt.datetime(
        2026, 1, 1, 12, 0, tzinfo=dt.UTC
    )
    with pytest.raises(ValidationError, match="expires_at"):
        AnalysisResult(expires_at="tomorrow")


def test_unknown_constructor_keywords_are_refused() -> None:
    with pytest.raises(ValidationError, match="tickr") as caught:
        Position(tickr="AAPL")
    assert caught.value.field == "tickr"


@pytest.mark.parametrize(
    "name",
    ["metadata", "registry", "__table__", "__mapper__", "__init__", "portfolio", "version"],
)
def test_relationship_dunder_and_registry_keywords_are_refused(name: str) -> None:
    with pytest.raises(UnknownFieldError) as caught:
        Position(ticker="AAPL", **{name: None})
    assert caught.value.field == name


_PLUS_FIVE = dt.timezone(dt.timedelta(hours=5))


def test_every_column_type_is_checked_when_set() -> None:
    checks: list[tuple[type[Any], str, object]] = [
        (User, "is_active", ""),
        (User, "is_active", 1),
        (Portfolio, "user_id", ""),
        (Portfolio, "description", "a\x00b"),
        (Position, "notes", 5),
        (Position, "notes", "\ud800"),
        (OptionsData, "volume", 2**63),
        (OptionsData, "volume", 1.0),
        (OptionsData, "expiration", dt.datetime(2026, 1, 1)),
        (User, "preferences", {"a": "\x00"}),
        (AnalysisResult, "expires_at", dt.datetime.min.replace(tzinfo=_PLUS_FIVE)),
    ]
    for model, field, value in checks:
        with pytest.raises(ValidationError) as caught:
            model(**{field: value})
        assert caught.value.field == field, (model, field, value)


def test_negative_zero_is_held_as_zero() -> None:
    shares = Position(ticker="AAPL", shares=Decimal("-0")).shares
    assert shares == 0
    assert not shares.is_signed()


def test_a_huge_value_is_cut_short_in_the_message() -> None:
    error = ValidationError("notes", "x" * 1_000_000, "is too long")
    assert len(str(error)) < 300
    assert "(1000002 chars)" in str(error)
    assert error.value == "x" * 1_000_000  # the value itself is kept whole
