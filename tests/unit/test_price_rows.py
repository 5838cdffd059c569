"""Bars as driver rows: the "decimals" form sends floats whose text is the exact decimal;
rows kept as columns read as the list of tuples they stand for."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from database.driver import ColumnRows
from database.prices import EXACT_FLOAT_LIMIT, PRICE_SCALE, VALUE_FIELDS, staging_rows


def _bars(close: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(
        {"ticker": "T", "date": pd.Timestamp("2024-01-02")}, index=range(len(close))
    )
    for field in VALUE_FIELDS:
        frame[field] = close
    return frame


def test_decimal_floats_print_as_the_rounded_decimal() -> None:
    rng = np.random.default_rng(11)
    close = np.concatenate(
        [
            rng.uniform(0, 1, 20_000),
            rng.uniform(1, 1_000, 20_000),
            rng.uniform(1e3, EXACT_FLOAT_LIMIT * 0.999, 20_000),
            np.round(rng.uniform(0, 1e4, 20_000), 7),  # ties at the 7th place
            [1e-6, 5e-7, 0.1234565, 523.8320965, 209.419998000001, EXACT_FLOAT_LIMIT - 1e-6],
        ]
    )
    bars = _bars(close)
    units = staging_rows(bars, prices="units")
    decimals = staging_rows(bars, prices="decimals")
    close_at = 2 + VALUE_FIELDS.index("close")
    for as_units, as_float in zip(units, decimals, strict=True):
        exact = Decimal(as_units[close_at]).scaleb(-PRICE_SCALE)
        assert Decimal(repr(as_float[close_at])) == exact


def test_prices_beyond_the_limit_are_not_sent_as_floats() -> None:
    with pytest.raises(OverflowError):
        staging_rows(_bars(np.array([EXACT_FLOAT_LIMIT])), prices="decimals")


def test_missing_values_are_null_in_every_form() -> None:
    bars = _bars(np.array([np.nan, 1.5]))
    for form in ("units", "decimals", "floats"):
        rows = staging_rows(bars, prices=form, encode_date=dt.date.isoformat)  # type: ignore[arg-type]
        assert rows[0][2:] == (None,) * len(VALUE_FIELDS)
        assert rows[1][1] == "2024-01-02"


def test_column_rows_read_as_the_tuples_they_stand_for() -> None:
    columns = [["A", "B", "C"], [1, 2, None]]
    rows = ColumnRows(columns, 3, ("src", 0))
    expected = [("A", 1, "src", 0), ("B", 2, "src", 0), ("C", None, "src", 0)]
    assert list(rows) == expected
    assert list(rows) == expected  # iterated again: the constants repeat anew
    assert len(rows) == 3
    assert [rows[i] for i in range(-3, 3)] == expected * 2
    assert rows[1:] == expected[1:]
    assert rows[::-1] == expected[::-1]
    with pytest.raises(IndexError):
        rows[3]
    assert list(ColumnRows([], 2, ("x",))) == [("x",), ("x",)]
    assert list(ColumnRows([], 2)) == [(), ()]


def test_column_rows_refuse_columns_of_other_lengths() -> None:
    with pytest.raises(ValueError, match="one value per row"):
        ColumnRows([["A", "B"], [1]], 2)


def test_staging_rows_match_row_by_row_building() -> None:
    bars = _bars(np.array([1.5, np.nan, 2.25]))
    bars["ticker"] = ["T", "U", "T"]
    bars["date"] = pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-02"])
    rows = staging_rows(bars, prices="units", encode_date=dt.date.isoformat, extra=("yf",))
    units = [1_500_000, None, 2_250_000]
    volumes = [2, None, 2]  # volume in whole shares (1.5 and 2.25 round half to even)
    dates = ["2024-01-02", "2024-01-03", "2024-01-02"]
    for row, ticker, day, price, volume in zip(rows, "TUT", dates, units, volumes, strict=True):
        assert row[:2] == (ticker, day)
        assert row[-1] == "yf"
        by_field = dict(zip(VALUE_FIELDS, row[2:-1], strict=True))
        assert by_field.pop("volume") == volume
        assert set(by_field.values()) == {price}
