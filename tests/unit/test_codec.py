"""Cache payloads keep their types through JSON (no database needed)."""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from database import codec
from database.exceptions import ValidationError

DATA = Path(__file__).resolve().parents[1] / "data"


def round_trip(value: object) -> object:
    return codec.decode(json.loads(json.dumps(codec.encode(value), allow_nan=False)))


def statement_frame() -> pd.DataFrame:
    """A yfinance financial statement: line items as rows, Timestamps as columns, NaN cells."""
    frame = pd.read_csv(DATA / "fundamentals/NVDA-financials.csv", index_col=0)
    frame.columns = pd.to_datetime(frame.columns)
    return frame[frame.columns[::-1]]


def history_frame() -> pd.DataFrame:
    frame = pd.read_csv(DATA / "prices-history/CALM.csv", index_col=0)
    frame.index = pd.to_datetime(frame.index, utc=True).tz_convert("America/New_York")
    frame.index.name = "Date"
    return frame


@pytest.mark.parametrize(
    "value",
    [
        {
            "sector": "Technology",
            "beta": 1.2,
            "officers": [{"name": "Tim", "age": 63}],
            "none": None,
        },
        [1, "two", 3.5, None, True],
        {"price": Decimal("222.770000"), "ex_dividend": dt.date(2024, 8, 12)},
        {
            "at": dt.datetime(2024, 9, 3, 20, 0, tzinfo=dt.UTC),
            "naive": dt.datetime(2024, 1, 1, 9, 30),
        },
        {"window": dt.timedelta(days=2, seconds=5), "pair": (1, 2), "tags": {"a", "b"}},
        {5: "int key", (1, 2): "tuple key", "__type__": "a key that looks like a tag"},
        {"nan": float("inf"), "numpy": np.int64(7), "float32": np.float32(1.5)},
        pd.Timestamp("2024-01-29 00:00:00-05:00"),
    ],
)
def test_values_come_back_equal_and_of_the_same_type(value: object) -> None:
    back = round_trip(value)
    assert back == value
    assert type(back) is type(value)
    if isinstance(value, dict):
        assert {k: type(v) for k, v in back.items()} == {k: type(v) for k, v in value.items()}  # type: ignore[union-attr]


def test_nan_survives() -> None:
    back = round_trip([float("nan")])
    assert isinstance(back, list)
    assert math.isnan(back[0])


def test_a_statement_frame_with_timestamp_columns() -> None:
    frame = statement_frame()
    back = round_trip(frame)
    pd.testing.assert_frame_equal(back, frame)  # type: ignore[arg-type]
    assert isinstance(back.columns, pd.DatetimeIndex)  # type: ignore[union-attr]


def test_a_price_frame_with_a_tz_aware_index_and_a_series() -> None:
    frame = history_frame()
    pd.testing.assert_frame_equal(round_trip(frame), frame)  # type: ignore[arg-type]
    pd.testing.assert_series_equal(round_trip(frame["Close"]), frame["Close"])  # type: ignore[arg-type]


def test_frames_of_mixed_dtypes() -> None:
    frame = pd.DataFrame(
        {
            "when": pd.to_datetime(["2024-01-02", None]),
            "count": pd.array([1, None], dtype="Int64"),
            "flag": [True, False],
            "label": ["a", None],
            "amount": [Decimal("1.10"), Decimal("2.20")],
        },
        index=pd.Index(["x", "y"], name="key"),
    )
    pd.testing.assert_frame_equal(round_trip(frame), frame)  # type: ignore[arg-type]


def test_unsupported_payloads_are_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="object"):
        codec.encode({"handle": object()})


def test_unknown_tags_are_refused_rather_than_guessed() -> None:
    with pytest.raises(ValidationError, match=r"os\.system"):
        codec.decode({"__type__": "os.system", "value": "rm -rf /"})


def nested_lists(depth: int) -> list[object]:
    outer: list[object] = []
    inner = outer
    for _ in range(depth - 1):
        child: list[object] = []
        inner.append(child)
        inner = child
    return outer


def self_referential_list() -> list[object]:
    looped: list[object] = []
    looped.append(looped)
    return looped


def self_referential_dict() -> dict[str, object]:
    looped: dict[str, object] = {}
    looped["self"] = looped
    return looped


def array_holding_itself() -> np.ndarray[Any, Any]:
    array = np.empty(1, dtype=object)
    array[0] = [array]
    return array


@pytest.mark.parametrize(
    "payload",
    [self_referential_list, self_referential_dict, array_holding_itself],
    ids=["list", "dict", "ndarray"],
)
def test_a_payload_that_contains_itself_is_refused_on_data(payload: Any) -> None:
    with pytest.raises(ValidationError, match="contains itself") as caught:
        codec.encode({"wrapped": (payload(),)})
    assert caught.value.field == "data"


@pytest.mark.parametrize("depth", [codec.MAX_DEPTH + 1, 200_000])
def test_a_payload_nested_too_deeply_is_refused_on_data(depth: int) -> None:
    with pytest.raises(ValidationError, match="nested more than 100") as caught:
        codec.encode(nested_lists(depth))
    assert caught.value.field == "data"


def test_a_set_of_deeply_nested_frozensets_is_refused_before_it_is_sorted() -> None:
    nested: frozenset[object] = frozenset()
    for _ in range(5_000):  # its repr alone would exceed the recursion limit
        nested = frozenset([nested])
    with pytest.raises(ValidationError, match="nested"):
        codec.encode({nested, 1})


def test_a_payload_at_the_depth_limit_and_a_shared_part_are_kept() -> None:
    deepest = nested_lists(codec.MAX_DEPTH)
    assert round_trip(deepest) == deepest
    shared = [1, 2]
    assert round_trip({"a": shared, "b": shared}) == {"a": [1, 2], "b": [1, 2]}


@pytest.mark.parametrize(
    "number",
    [2**63 - 1, -(2**63), 2**64, -(10**5000), 10**400],
    ids=["int64-max", "int64-min", "2**64", "-10**5000", "10**400"],
)
def test_integers_of_any_size_come_back_through_json(number: int) -> None:
    back = round_trip({"n": number})
    assert back == {"n": number}


def test_application_types_are_stored_only_when_allowed() -> None:
    """Dataclasses and enums need allowing (see tests/unit/test_app_types.py); a named
    tuple or int enum that is not allowed is stored as its tuple or int, as before."""
    import enum
    from dataclasses import dataclass
    from typing import NamedTuple

    from database.datatypes import DataTypes

    class Pair(NamedTuple):
        a: int
        b: int

    class Size(enum.IntEnum):
        BIG = 2

    @dataclass
    class Point:
        x: float

    assert round_trip(Pair(1, 2)) == (1, 2)
    assert type(round_trip(Pair(1, 2))) is tuple
    assert round_trip(Size.BIG) == 2
    with pytest.raises(ValidationError, match="allow_types"):
        codec.encode({"p": Point(1.0)})
    types = DataTypes([Pair, Size, Point])
    stored = json.loads(json.dumps(codec.encode([Pair(1, 2), Size.BIG, Point(1.5)], types)))
    assert stored[2] == {
        "__type__": "dataclass",
        "name": Point.__module__ + "." + Point.__qualname__,
        "fields": {"x": 1.5},
    }
    assert codec.decode(stored, types) == [Pair(1, 2), Size.BIG, Point(1.5)]
    with pytest.raises(ValidationError, match="not an allowed"):
        codec.decode(stored)


@pytest.mark.parametrize(
    "value",
    [
        pd.Series(pd.Categorical(["b", "a"], categories=["c", "b", "a"], ordered=True)),
        pd.Series(["a", None], dtype="string[python]"),
        pd.Series(pd.to_datetime(["2024-01-01 10:00"], utc=True).as_unit("ms")),
        pd.Series(pd.date_range("2024-01-01", periods=2, tz="America/New_York")),
        pd.Series(["x", pd.NA], dtype=object),
        pd.Series([1, None], dtype="Int64"),
        pd.DataFrame(
            {"v": [1, 2]}, index=pd.CategoricalIndex(["x", "y"], categories=["y", "x", "z"])
        ),
    ],
    ids=[
        "ordered-categories",
        "python-strings",
        "ms-utc",
        "new-york",
        "na-object",
        "Int64",
        "categorical-index",
    ],
)
def test_dtypes_come_back_exactly(value: pd.Series | pd.DataFrame) -> None:
    back = codec.decode(json.loads(json.dumps(codec.encode(value))))
    if isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(back, value, check_dtype=True)
    else:
        pd.testing.assert_series_equal(back, value, check_dtype=True)


@pytest.mark.parametrize(
    "stored",
    [
        {"__type__": "numpy", "dtype": "U500000000", "value": "x"},  # 2 GB for one string
        {"__type__": "ndarray", "dtype": "S900000000", "shape": [1], "value": ["x"]},
        {"__type__": "numpy", "dtype": "no such dtype", "value": 1},
        {"__type__": "dataframe", "index": {"kind": "range"}, "columns": {}, "data": []},
        {"__type__": "timedelta", "value": "x"},
    ],
    ids=["huge-str", "huge-bytes", "unknown-dtype", "broken-frame", "broken-timedelta"],
)
def test_a_stored_value_no_encode_wrote_is_a_validation_error(stored: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        codec.decode(stored)


def test_the_encoded_form_is_the_one_already_stored() -> None:
    """Entries written by earlier versions are read back by the same decoder: the faster
    encoder writes exactly what the earlier one did (DST folds, floats at the edges of
    the exact range, keys that force the tagged dict)."""
    index = pd.DatetimeIndex(["2024-11-03 01:30", "2024-11-03 01:30"], name="Date")
    frame = pd.DataFrame(
        [[1.5, 700], [0.0, 800]],
        index=index.tz_localize("America/New_York", ambiguous=[True, False]).as_unit("us"),
    )
    series = pd.Series([1e16, -0.0, float("nan"), 1e-4, 9.999999999999999e-05], name="x")
    other = {"a": [1, 2**63, "t\x00", (1.0,)], 7: {"__type__": 1}, "np": np.float64(0.5)}
    assert json.loads(json.dumps(codec.encode(frame))) == {
        "__type__": "dataframe",
        "index": {
            "kind": "index",
            "name": "Date",
            "dtype": "datetime64[us, America/New_York]",
            "values": ["2024-11-03T01:30:00-04:00", "2024-11-03T01:30:00-05:00"],
        },
        "columns": {"kind": "range", "start": 0, "stop": 2, "step": 1, "name": None},
        "data": [
            {"dtype": "float64", "values": [1.5, 0.0]},
            {"dtype": "int64", "values": [700, 800]},
        ],
    }
    assert json.dumps(codec.encode(series), allow_nan=False) == (
        '{"__type__": "series", "name": "x", "index": {"kind": "range", "start": 0, "stop": 5, '
        '"step": 1, "name": null}, "data": {"dtype": "float64", "values": [{"__type__": '
        '"float", "value": "1e+16"}, {"__type__": "float", "value": "-0.0"}, {"__type__": '
        '"float", "value": "nan"}, 0.0001, {"__type__": "float", "value": '
        '"9.999999999999999e-05"}]}}'
    )
    assert codec.encode(other) == {
        "__type__": "dict",
        "value": [
            [
                "a",
                [
                    1,
                    {"__type__": "int", "value": "8000000000000000"},
                    {"__type__": "str", "value": [116, 0]},
                    {"__type__": "tuple", "value": [1.0]},
                ],
            ],
            [7, {"__type__": "dict", "value": [["__type__", 1]]}],
            ["np", {"__type__": "numpy", "dtype": "float64", "value": 0.5}],
        ],
    }


def test_floats_are_tagged_exactly_when_json_would_not_give_them_back() -> None:
    """The encoder's shortcut (a magnitude in [1e-4, 1e16) is a plain JSON number) agrees
    with the full test on every float around the edges, and on random ones."""
    edges = []
    for edge in (1e-4, 1e16, 0.0, 5e-324):
        below = above = edge
        for _ in range(3):
            below, above = float(np.nextafter(below, -np.inf)), float(np.nextafter(above, np.inf))
            edges += [below, above, -below, -above]
    randoms = np.random.default_rng(11).standard_normal(20_000) * 10.0 ** np.arange(-10, 30, 0.002)
    for number in [*edges, *randoms.tolist(), math.inf, -math.inf, math.nan, -0.0]:
        plain = codec._json_exact(number)
        assert (codec.encode([number])[0] == number and plain) or not plain
        assert ("__type__" in str(codec.encode(number))) is not plain
        assert plain is (
            "e" not in repr(number) and math.isfinite(number) and repr(number) != "-0.0"
        )
