"""The checks every model runs when an attribute is set: no database needed."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from asyncpg.pgproto import pgproto
from sqlalchemy.ext.mutable import MutableDict

from database.exceptions import UnknownFieldError, ValidationError
from database.models import (
    AnalysisResult,
    OptionsData,
    Portfolio,
    Position,
    RiskTolerance,
    User,
)
from database.repositories.criteria import Criteria, check_page
from database.validation import MAX_JSON_DEPTH, normalize_ticker, to_uuid
from tests.property.strategies import (
    HostileStr,
    IncomparableDatetime,
    LyingInt,
    RaisingZone,
    TextZone,
    UnreadableDict,
    nested,
)


class LyingIntComparisons(int):
    """Within every bound, by its own word (its conversions work)."""

    def __ge__(self, other: object) -> bool:
        return True

    __le__ = __ge__


class UnreadableSet(set[Any]):
    def __iter__(self) -> Any:
        raise RuntimeError("iter")

    def __len__(self) -> int:
        raise RuntimeError("len")


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


# -- hostile values: subclasses whose methods raise or lie, documents too deep ----------


@pytest.mark.parametrize("depth", [101, 340, 500, 5000])
@pytest.mark.parametrize("container", ["dict", "list"])
def test_json_nested_too_deeply_is_refused_not_a_recursion_error(
    depth: int, container: str
) -> None:
    with pytest.raises(ValidationError, match="nested too deeply") as caught:
        User(preferences=nested(depth, container))
    assert caught.value.field == "preferences"
    with pytest.raises(ValidationError, match="nested too deeply") as caught:
        AnalysisResult(metadata=nested(depth, container))
    assert caught.value.field == "metadata"


def test_json_as_deep_as_the_limit_is_accepted() -> None:
    document = nested(MAX_JSON_DEPTH)
    assert User(preferences=document).preferences == document
    with pytest.raises(ValidationError, match="nested too deeply"):
        User(preferences=json.dumps(nested(MAX_JSON_DEPTH + 1)))


def test_json_is_copied_to_exact_built_in_values() -> None:
    stored = User(preferences={HostileStr("k"): [HostileStr("v"), LyingInt(3), (1, 2.5)]})
    assert stored.preferences == {"k": ["v", 3, [1, 2.5]]}
    (key,) = stored.preferences
    assert type(key) is str
    assert [type(v) for v in stored.preferences["k"]] == [str, int, list]


def test_json_stays_tracked_for_edits_in_place() -> None:
    user = User(preferences={"theme": "dark"})
    assert isinstance(user.preferences, MutableDict)


def test_a_dict_subclass_whose_items_raise_is_read_without_calling_them() -> None:
    assert User(preferences=UnreadableDict(a=1)).preferences == {"a": 1}


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        (Position, "ticker", HostileStr("MSFT")),
        (Position, "notes", HostileStr("a note")),
        (User, "email", HostileStr("q@example.com")),
        (User, "username", HostileStr("someone")),
        (Portfolio, "risk_tolerance", HostileStr("moderate")),
        (OptionsData, "contract_symbol", HostileStr("NVDA241004C00120000")),
    ],
    ids=["ticker", "notes", "email", "username", "risk_tolerance", "contract_symbol"],
)
def test_a_str_subclass_is_taken_as_its_characters(model: Any, field: str, value: str) -> None:
    stored = getattr(model(**{field: value}), field)
    assert str.__str__(value).lower() in str(stored).lower()
    assert type(stored) in (str, RiskTolerance)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("last_login_at", dt.datetime(2020, 1, 1, tzinfo=RaisingZone()), "time zone"),
        ("last_login_at", dt.datetime(2020, 1, 1, tzinfo=TextZone()), "time zone"),
        ("preferences", {"a": 10.5 + 7j}, "JSON"),
        ("preferences", {"a": np.float64("nan")}, "JSON"),
    ],
)
def test_hostile_values_are_validation_errors_naming_the_field(
    field: str, value: object, reason: str
) -> None:
    with pytest.raises(ValidationError, match=reason) as caught:
        User(**{field: value})
    assert caught.value.field == field


def test_a_datetime_subclass_with_raising_comparisons_is_read_by_its_fields() -> None:
    login = User(last_login_at=IncomparableDatetime(2020, 1, 1, 12)).last_login_at
    assert type(login) is dt.datetime
    assert login == dt.datetime(2020, 1, 1, 12, tzinfo=dt.UTC)


def test_an_int_subclass_cannot_lie_its_way_past_a_bound() -> None:
    with pytest.raises(ValidationError, match="between") as caught:
        OptionsData(volume=LyingIntComparisons(2**70))
    assert caught.value.field == "volume" or "volume" in str(caught.value)
    with pytest.raises(ValidationError, match="between"):
        check_page(0, LyingIntComparisons(2**70))


class Exploding:
    def __hash__(self) -> int:
        raise RuntimeError("boom")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("boom")


def test_any_exception_from_a_columns_check_becomes_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="RuntimeError") as caught:
        Portfolio(risk_tolerance=Exploding())
    assert caught.value.field == "risk_tolerance"


def test_a_criterion_value_that_raises_is_a_validation_error() -> None:
    criteria = Criteria(Portfolio)
    with pytest.raises(ValidationError, match="RuntimeError") as caught:
        criteria.where({"risk_tolerance__in": [Exploding()]})
    assert caught.value.field == "risk_tolerance__in"
    # A set subclass is read through set's own iteration, a str subclass as its characters.
    assert Criteria(Position).where({"ticker__in": UnreadableSet({"AAPL"})})
    assert Criteria(Position).where({"ticker__contains": HostileStr("AA")})


@pytest.mark.parametrize("ticker", ["\u00df", "\u0131", "\uff21\uff21\uff30\uff2c", "AAPL\u0663"])
def test_non_ascii_tickers_are_refused_before_upper_casing(ticker: str) -> None:
    with pytest.raises(ValidationError) as caught:
        normalize_ticker(ticker)
    assert caught.value.field == "ticker"


@pytest.mark.parametrize("year", [1999, 2100, 9999])
def test_option_expirations_outside_the_occ_years_are_refused(year: int) -> None:
    with pytest.raises(ValidationError, match="2000 to 2099") as caught:
        OptionsData(expiration=dt.date(year, 1, 1))
    assert caught.value.field == "expiration"


def test_asyncpg_uuids_are_read_through_their_public_value() -> None:
    """asyncpg's UUID is a C subclass of uuid.UUID that does not fill the pure-Python
    slot: reading that slot directly crashed the interpreter."""
    text = "12345678-1234-5678-1234-567812345678"
    checked = to_uuid(pgproto.UUID(text), "portfolio_id")
    assert type(checked) is uuid.UUID
    assert str(checked) == text
