"""The application's own dataclasses, named tuples and enums, allowed by name only."""

from __future__ import annotations

import datetime as dt
import enum
import json
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

import pytest

from database import codec
from database.datatypes import DATA_TYPES, DataTypes, allow_types, enum_member, type_name
from database.exceptions import ValidationError
from database.filecache import UnsafePickleError, safe_loads


class Rating(enum.Enum):
    BUY = "buy"
    HOLD = "hold"
    SELL = "sell"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Band(NamedTuple):
    low: float
    high: float


@dataclass(frozen=True)
class Metric:
    name: str
    value: Decimal


@dataclass
class ValuationResult:
    """Like BuffetBot's analyzer results, cached as ``list[ValuationResult]``."""

    ticker: str
    intrinsic_value: float
    margin_of_safety: float
    rating: Rating
    as_of: dt.datetime
    metric: Metric
    band: Band
    level: Level = Level.LOW
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class Slotted:
    x: int
    y: str = "y"


@dataclass
class NotAllowed:
    x: int


class Plain:
    pass


APP_TYPES = (Rating, Level, Band, Metric, ValuationResult, Slotted)


def results() -> list[ValuationResult]:
    return [
        ValuationResult(
            ticker=ticker,
            intrinsic_value=value,
            margin_of_safety=0.25,
            rating=rating,
            as_of=dt.datetime(2024, 9, 27, 20, 0, tzinfo=dt.UTC),
            metric=Metric("roe", Decimal("0.1520")),
            band=Band(value * 0.8, value * 1.2),
            level=Level.HIGH,
            notes=["moat", "buybacks"],
        )
        for ticker, value, rating in (
            ("AAPL", 182.5, Rating.HOLD),
            ("NVDA", 95.25, Rating.SELL),
            ("CALM", 71.89, Rating.BUY),
        )
    ]


@pytest.fixture
def allowed() -> Iterator[None]:
    allow_types(*APP_TYPES)
    yield
    DATA_TYPES.forget(*APP_TYPES)


def round_trip(value: object, types: DataTypes | None = None) -> object:
    stored = json.dumps(codec.encode(value, types), allow_nan=False)
    return codec.decode(json.loads(stored), types)


@pytest.mark.usefixtures("allowed")
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_list_of_results_round_trips_through_a_pickle(protocol: int) -> None:
    data = results()
    loaded = safe_loads(pickle.dumps({"data": data}, protocol=protocol))["data"]
    assert loaded == data
    assert all(type(item) is ValuationResult for item in loaded)
    assert type(loaded[0].band) is Band
    assert loaded[0].rating is Rating.HOLD


@pytest.mark.usefixtures("allowed")
def test_slotted_frozen_dataclasses_and_enums_round_trip_through_pickles() -> None:
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        value = [Slotted(1), Slotted(2, "z"), Level.HIGH]
        loaded = safe_loads(pickle.dumps(value, protocol=protocol))
        assert loaded == value
        assert type(loaded[0]) is Slotted


@pytest.mark.usefixtures("allowed")
def test_a_list_of_results_round_trips_through_the_codec() -> None:
    data = results()
    assert round_trip(data) == data
    assert round_trip(Level.HIGH) is Level.HIGH
    assert type(round_trip(Band(1.0, 2.0))) is Band


def test_a_registry_of_its_own_is_independent_of_the_process_wide_one() -> None:
    mine = DataTypes([Metric])
    assert Metric in mine
    assert Metric not in DATA_TYPES
    value = Metric("pe", Decimal("31.2"))
    assert round_trip(value, mine) == value
    assert safe_loads(pickle.dumps(value), types=mine) == value
    with pytest.raises(UnsafePickleError):
        safe_loads(pickle.dumps(value))
    with pytest.raises(ValidationError):
        codec.encode(value)


def test_unregistered_classes_are_refused() -> None:
    with pytest.raises(UnsafePickleError, match="NotAllowed"):
        safe_loads(pickle.dumps(NotAllowed(1)))
    with pytest.raises(UnsafePickleError, match="Rating"):
        safe_loads(pickle.dumps(Rating.BUY))
    with pytest.raises(ValidationError, match="NotAllowed"):
        codec.encode([NotAllowed(1)])
    with pytest.raises(ValidationError):
        codec.encode(Rating.BUY)
    encoded = {"__type__": "dataclass", "name": f"{__name__}.NotAllowed", "fields": {"x": 1}}
    with pytest.raises(ValidationError, match="not an allowed dataclass"):
        codec.decode(encoded)


@pytest.mark.parametrize("bad", [int, Plain, Decimal, dt.datetime, NotAllowed(1), "Rating"])
def test_only_dataclasses_named_tuples_and_enums_can_be_allowed(bad: Any) -> None:
    with pytest.raises(TypeError, match="not a dataclass, NamedTuple or Enum"):
        allow_types(bad)
    assert len(DATA_TYPES) == 0


@pytest.mark.usefixtures("allowed")
def test_state_that_is_not_a_field_is_refused() -> None:
    item = Metric("roe", Decimal(1))
    object.__setattr__(item, "command", "rm -rf /")
    with pytest.raises(ValidationError, match="no field 'command'"):
        safe_loads(pickle.dumps(item))
    encoded = codec.encode(Metric("roe", Decimal(1)))
    encoded["fields"]["extra"] = 1
    with pytest.raises(ValidationError, match="no field 'extra'"):
        codec.decode(encoded)


def forged_new(qualname: str, args: tuple[Any, ...] = (), *state: Any) -> bytes:
    """A pickle creating ``qualname`` empty (NEWOBJ) and giving it each of ``state`` (BUILD)."""
    out = b"\x80\x02" + f"c{__name__}\n{qualname}\n".encode()
    out += pickle.dumps(args, protocol=2)[2:-1] + b"\x81"
    for item in state:
        out += pickle.dumps(item, protocol=2)[2:-1] + b"b"
    return out + b"."


@pytest.mark.usefixtures("allowed")
def test_a_dataclass_without_its_fields_or_with_odd_state_is_refused() -> None:
    assert safe_loads(forged_new("Metric", (), {"name": "x", "value": 1})) == Metric("x", 1)  # type: ignore[arg-type]
    with pytest.raises(UnsafePickleError, match="without its fields"):
        safe_loads(forged_new("Metric"))
    with pytest.raises(ValidationError, match="lacks its field 'value'"):
        safe_loads(forged_new("Metric", (), {"name": "x"}))
    with pytest.raises(ValidationError, match="malformed"):
        safe_loads(forged_new("Metric", (), "state"))
    with pytest.raises(UnsafePickleError, match="with arguments"):
        safe_loads(forged_new("Metric", ("x",), {"name": "x", "value": 1}))
    with pytest.raises(UnsafePickleError, match="state twice"):
        state = {"name": "x", "value": 1}
        safe_loads(forged_new("Metric", (), state, {"name": "y", "value": 2}))


@pytest.mark.usefixtures("allowed")
def test_a_missing_field_with_a_default_takes_it() -> None:
    loaded = safe_loads(forged_new("Slotted", (), (None, {"x": 3})))
    assert loaded == Slotted(3)


def forged_call(qualname: str, *args: Any) -> bytes:
    body = pickle.dumps(args, protocol=2)[2:-1]
    return b"\x80\x02" + f"c{__name__}\n{qualname}\n".encode() + body + b"R."


@pytest.mark.usefixtures("allowed")
def test_an_enum_value_not_in_the_enum_is_refused() -> None:
    assert safe_loads(forged_call("Rating", "buy")) is Rating.BUY
    with pytest.raises(ValidationError, match="has no member 'strong buy'"):
        safe_loads(forged_call("Rating", "strong buy"))
    with pytest.raises(ValidationError, match="has no member"):
        codec.decode({"__type__": "enum", "name": f"{__name__}.Rating", "value": "x"})
    with pytest.raises(ValidationError, match="has no member 'MISSING'"):
        safe_loads(b"\x80\x02" + f"c{__name__}\nRating.MISSING\n.".encode())
    assert safe_loads(b"\x80\x02" + f"c{__name__}\nRating.SELL\n.".encode()) is Rating.SELL


@pytest.mark.usefixtures("allowed")
def test_a_named_tuple_with_the_wrong_number_of_items_is_refused() -> None:
    with pytest.raises(ValidationError, match="takes 2 items, not 3"):
        safe_loads(forged_call("Band", 1.0, 2.0, 3.0))
    with pytest.raises(ValidationError, match="takes 2 items"):
        codec.decode({"__type__": "namedtuple", "name": f"{__name__}.Band", "value": [1]})


@pytest.mark.usefixtures("allowed")
def test_a_registered_class_does_not_open_its_module() -> None:
    with pytest.raises(UnsafePickleError):
        safe_loads(forged_call("results"))
    with pytest.raises(UnsafePickleError):
        safe_loads(forged_call("ValuationResult.__init__", 1))


class Lenient(enum.Enum):
    """An enum whose _missing_ hook would accept (and run on) any value."""

    KNOWN = "known"

    @classmethod
    def _missing_(cls, value: object) -> Lenient:
        raise AssertionError(f"_missing_ ran for {value!r}")


def test_an_unknown_enum_value_is_refused_without_running_its_hook() -> None:
    types = DataTypes()
    types.allow(Lenient)
    assert enum_member(Lenient, "known") is Lenient.KNOWN
    with pytest.raises(ValidationError, match="has no member 'other'"):
        enum_member(Lenient, "other")


@dataclass
class First:
    x: int


@dataclass
class Other:
    y: int


def test_allowing_is_all_or_nothing() -> None:
    types = DataTypes()
    types.allow(First)
    namesake = dataclass(
        type(
            "First",
            (),
            {"__annotations__": {"x": int}, "__module__": __name__, "__qualname__": "First"},
        )
    )
    with pytest.raises(TypeError, match="already allowed"):
        types.allow(Other, namesake)
    assert types.get(type_name(Other)) is None  # not half-allowed
    assert types.get(type_name(First)) is First
