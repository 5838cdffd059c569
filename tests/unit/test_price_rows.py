"""Bars as driver rows: the "decimals" form sends floats whose text is the exact decimal."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

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
