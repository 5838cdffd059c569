"""The checks every model runs when an attribute is set: no database needed."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest
from asyncpg.pgproto import pgproto
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.mutable import MutableDict

from database import options as option_chains
from database.exceptions import UnknownFieldError, ValidationError
from database.models import (
    AnalysisResult,
    OptionsData,
    Portfolio,
    Position,
    RiskTolerance,
    User,
)
from database.models.market import PRICE
from database.repositories.criteria import Criteria, check_page
from database.validation import (
    COMPUTED,
    EXACT,
    FLOAT_SOURCE,
    MAX_JSON_DEPTH,
    Rounding,
    normalize_ticker,
    parse_decimal,
    scaled_integers,
    scaled_units,
    to_decimal,
    to_uuid,
)
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


# -- the one decimal policy (issue 11 item 2) ----------------------------------------------

# (feed float, as FLOAT_SOURCE stores it at 6 places)
FEED_FLOATS = [
    (0.1234565, Decimal("0.123456")),  # a tie: half to even, down
    (0.1234575, Decimal("0.123458")),  # a tie: half to even, up
    (1e-7, Decimal("0")),
    (-1e-7, Decimal("0")),  # never -0
    (209.419998000001, Decimal("209.419998")),  # yfinance's SPY 2015-03-05 open
    (0.30000000000000004, Decimal("0.3")),
    (523.8320965, Decimal("523.832096")),  # np.rint(x * 1e6) says 523.832097
    # Its repr, not its binary value 2.67499999999999982236431605997495353221893310546875.
    (2.675, Decimal("2.675")),
]


def _price(value: Any, rounding: Rounding = EXACT) -> Decimal:
    return to_decimal(value, "close", scale=6, precision=18, minimum=Decimal(0), rounding=rounding)


@pytest.mark.parametrize(("value", "stored"), FEED_FLOATS)
def test_feed_floats_are_read_through_repr_and_rounded_half_even(
    value: float, stored: Decimal
) -> None:
    rounded = to_decimal(value, "bid", scale=6, precision=18, rounding=FLOAT_SOURCE)
    assert rounded == stored
    assert not rounded.is_signed()
    assert rounded.as_tuple().exponent == -6  # held with the column's places
    # np.float64 (a float subclass whose repr is "np.float64(...)") reads the same.
    assert (
        to_decimal(np.float64(value), "bid", scale=6, precision=18, rounding=FLOAT_SOURCE) == stored
    )


@pytest.mark.parametrize(
    "value", [0.1234565, Decimal("0.1234565"), "0.1234565", 209.419998000001, Decimal("1E-7")]
)
def test_domain_input_with_extra_places_is_refused_never_rounded(value: object) -> None:
    with pytest.raises(ValidationError, match="more than 6 decimal places") as caught:
        _price(value)
    assert (caught.value.field, caught.value.value) == ("close", value)


@pytest.mark.parametrize(
    ("value", "exact"),
    [
        (0.1, Decimal("0.1")),
        (np.float64(0.1), Decimal("0.1")),
        (Decimal("123456789012.123456"), Decimal("123456789012.123456")),
        ("  42.5 ", Decimal("42.5")),
        (7, Decimal(7)),
        (-0.0, Decimal(0)),
        (Decimal("-0.000000"), Decimal(0)),
    ],
)
def test_exact_values_are_held_exactly_by_either_policy(value: object, exact: Decimal) -> None:
    for rounding in (EXACT, FLOAT_SOURCE):
        held = to_decimal(value, "x", scale=6, precision=18, rounding=rounding)
        assert held == exact
        assert not held.is_signed()


@pytest.mark.parametrize("rounding", [EXACT, FLOAT_SOURCE, COMPUTED])
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (float("-inf"), "finite"),
        (Decimal("NaN"), "finite"),
        (Decimal("sNaN"), "finite"),
        ("inf", "finite"),
        (True, "must be a number"),
        (None, "must be a number"),
        ("1,5", "must be a number"),
        (np.int64(1), "must be a number"),
        (1e12, "more than 12 integer digits"),
        (Decimal("-1e12"), "more than 12 integer digits"),
        (Decimal("1e999999"), "more than 12 integer digits"),
        # Rounding may carry into a 13th integer digit: checked after it.
        ("999999999999.9999995", "more than 12 integer digits"),
    ],
)
def test_non_numbers_non_finite_and_overflow_are_refused_by_every_policy(
    value: object, reason: str, rounding: Rounding
) -> None:
    if rounding is EXACT and value == "999999999999.9999995":
        reason = "more than 6 decimal places"
    with pytest.raises(ValidationError, match=reason) as caught:
        to_decimal(value, "strike", scale=6, precision=18, rounding=rounding)
    assert caught.value.field == "strike"
    assert caught.value.value is value


def test_the_largest_value_that_fits_is_kept() -> None:
    largest = Decimal("999999999999.999999")
    assert _price(largest) == largest
    assert _price(str(largest), FLOAT_SOURCE) == largest


def test_bounds_are_checked_after_rounding() -> None:
    assert _price(-0.0000005, FLOAT_SOURCE) == 0  # rounds to 0, half to even: within
    with pytest.raises(ValidationError, match="at least 0") as caught:
        _price(-0.0000015, FLOAT_SOURCE)  # rounds to -0.000002
    assert caught.value.value == -0.0000015
    quality: dict[str, Any] = {"scale": 4, "precision": 5, "maximum": Decimal(1)}
    assert to_decimal(1.00005, "q", **quality, rounding=FLOAT_SOURCE) == 1  # half to even
    with pytest.raises(ValidationError, match="at most 1"):
        to_decimal(1.00005, "q", **quality, rounding=COMPUTED)  # half up: 1.0001


def test_computed_figures_round_half_up() -> None:
    assert to_decimal(Decimal("0.00005"), "cost", scale=4, precision=18, rounding=COMPUTED) == (
        Decimal("0.0001")
    )
    assert to_decimal(Decimal("0.00005"), "cost", scale=4, precision=18, rounding=FLOAT_SOURCE) == 0


def test_the_rounding_is_a_named_policy_not_a_string() -> None:
    assert FLOAT_SOURCE is Rounding.HALF_EVEN
    assert EXACT is Rounding.EXACT
    with pytest.raises(TypeError, match="Rounding"):
        to_decimal(1, "x", scale=6, precision=18, rounding="ROUND_HALF_EVEN")  # type: ignore[arg-type]


def test_parse_decimal_is_exact_and_unscaled() -> None:
    assert parse_decimal(0.1, "p") == Decimal("0.1")
    assert parse_decimal("0.1234565", "p") == Decimal("0.1234565")
    with pytest.raises(ValidationError, match="finite"):
        parse_decimal(float("nan"), "p")


# -- every entry point obeys it -------------------------------------------------------------


@pytest.mark.parametrize("value", [0.1234565, Decimal("0.1234565"), "0.1234565"])
def test_model_attributes_refuse_extra_places(value: object) -> None:
    for model, field in [
        (Position, "shares"),
        (Position, "average_cost"),
        (Portfolio, "target_cash_percentage"),
        (AnalysisResult, "confidence_level"),
        (OptionsData, "bid"),  # a model attribute is domain input, even on a market table
    ]:
        with pytest.raises(ValidationError, match="decimal places") as caught:
            model(**{field: value})
        assert (caught.value.field, caught.value.value) == (field, value)


@pytest.mark.parametrize("value", [0.1234565, Decimal("1e-7"), "0.1234565"])
def test_criteria_and_bound_parameters_refuse_extra_places(value: object) -> None:
    with pytest.raises(ValidationError, match="decimal places") as caught:
        Criteria(Position).where({"shares__gt": value})
    assert (caught.value.field, caught.value.value) == ("shares__gt", value)
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        with pytest.raises(ValidationError, match="decimal places"):
            PRICE.process_bind_param(value, dialect)
    assert PRICE.process_bind_param(0.1, sqlite.dialect()) == 100000
    assert PRICE.process_bind_param(-1, sqlite.dialect()) == -1000000  # criteria: no range


def test_criteria_keep_exact_values_without_range() -> None:
    assert Criteria(Position).where({"shares__gt": -1})
    assert Criteria(Position).where({"shares__in": [0.1, "2.000001"]})


def _chain_values(**numbers: Any) -> dict[str, Any]:
    row = {"strike": 120, "option_type": "call", "expiration": dt.date(2030, 1, 18), **numbers}
    contracts, rejected = option_chains.prepare_contracts("AAPL", rows=[row])
    assert not rejected, rejected
    return contracts[0]


@pytest.mark.parametrize(("value", "stored"), FEED_FLOATS)
def test_option_chains_round_their_feed_floats_half_even(value: float, stored: Decimal) -> None:
    if value < 0:
        assert _chain_values(delta=value)["delta"] == stored
        return
    values = _chain_values(bid=value, ask=value, delta=value, implied_volatility=value)
    assert values["bid"] == values["ask"] == values["delta"] == stored
    assert values["implied_volatility"] == stored
    frame = pd.DataFrame({"contractSymbol": ["AAPL300118C00120000"], "strike": [120.0]})
    frame["lastPrice"] = [value]
    contracts, rejected = option_chains.prepare_contracts("AAPL", calls=frame)
    assert not rejected
    assert contracts[0]["last_price"] == stored


def test_option_chains_round_text_and_numpy_numbers_the_same_way() -> None:
    assert _chain_values(bid="0.1234565")["bid"] == Decimal("0.123456")
    assert _chain_values(bid=np.float32(0.1))["bid"] == Decimal("0.1")
    assert _chain_values(volume=np.int64(5), bid=np.int64(2))["bid"] == Decimal(2)


@pytest.mark.parametrize(
    ("numbers", "field", "reason"),
    [
        ({"bid": float("inf")}, "bid", "finite"),
        ({"ask": "nan"}, "ask", "finite"),
        ({"bid": -0.0000015}, "bid", "at least 0"),
        ({"strike": 1e-7}, "strike", "greater than 0"),  # rounds to 0: no strike
        ({"strike": 1e12}, "strike", "integer digits"),
        ({"delta": 999999.9999995}, "delta", "integer digits"),  # RATIO: 6 integer digits
        ({"bid": True}, "bid", "must be a number"),
    ],
)
def test_option_chain_values_are_refused_by_the_same_policy(
    numbers: dict[str, Any], field: str, reason: str
) -> None:
    row = {"strike": 120, "option_type": "call", "expiration": dt.date(2030, 1, 18), **numbers}
    _, rejected = option_chains.prepare_contracts("AAPL", rows=[row])
    assert [(r.field, r.value) for r in rejected] == [(field, numbers[field])]
    assert reason in rejected[0].reason


def test_nan_in_a_chain_is_missing() -> None:
    values = _chain_values(bid=float("nan"), ask=np.float64("nan"))
    assert "bid" not in values
    assert "ask" not in values


def test_in_the_money_compares_the_price_exactly() -> None:
    put = OptionsData(option_type="put", strike=Decimal("120.1"))
    # Decimal(120.1) is 120.099999999999994315...: below the strike; the price is not.
    assert put.is_in_the_money(120.1) is False
    assert put.is_in_the_money(120.0999999) is True
    with pytest.raises(ValidationError):
        put.is_in_the_money(float("nan"))


# -- the vectorised twin (database.prices' float bars) ---------------------------------------


def test_scaled_units_round_like_to_decimal_where_np_rint_does_not() -> None:
    values = np.array([value for value, _ in FEED_FLOATS] + [np.nan, np.inf, -523.8320965])
    expected = [stored.scaleb(6) for _, stored in FEED_FLOATS]
    units = scaled_units(values, 6, FLOAT_SOURCE)
    assert units[: len(FEED_FLOATS)].tolist() == [float(e) for e in expected]
    assert np.isnan(units[-3])
    assert units[-2] == np.inf
    assert units[-1] == -523832096
    assert np.rint(523.8320965 * 1e6) == 523832097  # why np.rint alone is not the policy
    integers = scaled_integers(np.append(values[: len(FEED_FLOATS)], np.nan), 6)
    assert integers == [int(e) for e in expected] + [None]


def test_scaled_units_agree_with_to_decimal_on_ties_and_random_floats() -> None:
    rng = np.random.default_rng(11)
    ties = (rng.integers(0, 10**10, 20_000) * 10 + 5) / 10**7  # 7 places ending in 5
    noise = rng.uniform(0, 1e6, 20_000)
    huge = rng.uniform(1e9, 1e12, 2_000)  # beyond 2**52 millionths
    values = np.concatenate([ties, noise, huge, -ties])
    expected = [
        int(to_decimal(float(v), "x", scale=6, precision=40, rounding=FLOAT_SOURCE).scaleb(6))
        for v in values
    ]
    assert scaled_integers(values, 6, FLOAT_SOURCE) == expected
    assert scaled_integers(values, 2, COMPUTED) == [
        int(to_decimal(float(v), "x", scale=2, precision=40, rounding=COMPUTED).scaleb(2))
        for v in values
    ]


def test_scaled_units_never_apply_the_exact_policy() -> None:
    with pytest.raises(ValueError, match="EXACT"):
        scaled_units([0.1], 6, EXACT)
    with pytest.raises(ValueError, match="infinite"):
        scaled_integers([np.inf], 6)
