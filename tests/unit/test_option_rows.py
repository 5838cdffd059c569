"""The vectorised chain checks (database.options.check_chain): one verdict per value
whichever way it comes in (a float frame, dict rows, text), in the column's units."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from database.models import OptionType
from database.options import SCALES, check_chain
from database.validation import FLOAT_SOURCE, to_decimal

EXPIRY = dt.date(2030, 1, 18)


def _frame(count: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ties = (rng.integers(0, 10**9, count) * 10 + 5) / 10**7  # 7 places ending in 5
    return pd.DataFrame(
        {
            "strike": np.round(1 + np.arange(count) * 0.5, 2),
            "lastPrice": ties,
            "bid": rng.uniform(0, 1e4, count),
            "impliedVolatility": rng.uniform(0, 5, count),
            "delta": rng.uniform(-1, 1, count),
            "volume": np.where(np.arange(count) % 7 == 0, np.nan, rng.integers(0, 10**6, count)),
        }
    )


def test_float_frames_and_exact_text_give_the_same_units() -> None:
    frame = _frame(500)
    from_frame = check_chain("AAPL", calls=frame, expiration=EXPIRY)
    # The same values as text: each goes through validation.to_decimal on its own.
    rows = [
        {k: (None if v != v else repr(v)) for k, v in record.items()} | {"option_type": "call"}
        for record in frame.to_dict(orient="records")
    ]
    from_rows = check_chain("AAPL", rows=rows, expiration=EXPIRY)
    assert from_frame.rejected == from_rows.rejected == []
    for field in ("strike", "last_price", "bid", "implied_volatility", "delta", "volume"):
        assert from_frame.contracts[field].tolist() == from_rows.contracts[field].tolist(), field
    for value, units in zip(frame["lastPrice"], from_frame.contracts["last_price"], strict=True):
        policy = to_decimal(value, "x", scale=6, precision=18, rounding=FLOAT_SOURCE)
        assert units == int(policy.scaleb(SCALES["last_price"]))


def test_values_are_model_values() -> None:
    frame = pd.DataFrame(
        {
            "contractSymbol": ["AAPL300118C00120000"],
            "strike": [120.0],
            "bid": [0.1234565],
            "lastTradeDate": pd.to_datetime(["2024-01-02 15:30"]).tz_localize("US/Eastern"),
        }
    )
    (values,) = check_chain("aapl", calls=frame).values()
    assert values == {
        "ticker": "AAPL",
        "contract_symbol": "AAPL300118C00120000",
        "option_type": OptionType.CALL,
        "expiration": EXPIRY,
        "last_trade_date": dt.datetime(2024, 1, 2, 20, 30, tzinfo=dt.UTC),
        "strike": Decimal("120"),
        "bid": Decimal("0.123456"),
    }
    assert values["option_type"] is OptionType.CALL


def test_a_frame_and_its_dict_rows_are_refused_alike() -> None:
    records: list[dict[str, Any]] = [
        {"strike": 120.0, "bid": -0.5},
        {"strike": 121.0, "volume": 1.5},
        {"strike": 122.0, "volume": float(2**63)},
        {"strike": 0.0},
        {"strike": float("nan")},
        {"strike": 1e12},
        {"strike": 123.0, "contractSymbol": "AAPL300118C00124000"},
        {"strike": 125.0, "delta": float("inf")},
        {"strike": 126.0, "contractSymbol": "AAPL301318C00126000"},
    ]
    frame = pd.DataFrame.from_records(records)
    by_frame = check_chain("AAPL", calls=frame, expiration=EXPIRY).rejected
    rows = [{**r, "option_type": "C"} for r in records]
    by_rows = check_chain("AAPL", rows=rows, expiration=EXPIRY).rejected
    shown = [(r.row, r.field, r.reason) for r in by_frame]
    assert shown == [
        (0, "bid", "must be at least 0"),
        (1, "volume", "must be a whole number"),
        (2, "volume", "must be between -9223372036854775808 and 9223372036854775807"),
        (3, "strike", "must be greater than 0"),
        (4, "strike", "is required"),
        (5, "strike", "has more than 12 integer digits"),
        (6, "contract_symbol", "is not for the row's strike 123.000000"),
        (7, "delta", "must be a finite number"),
        (8, "contract_symbol", "is not valid"),  # month 13
    ]
    assert [(r.row, r.field, r.reason) for r in by_rows] == shown
    assert by_frame[0].value == -0.5
    assert by_frame[6].contract_symbol == "AAPL300118C00124000"


def test_a_repeated_contract_is_reported_at_its_own_row() -> None:
    rows = [
        {"strike": 1, "bid": -1},
        {"strike": 120},
        {"strike": 121},
        {"strike": 120},
    ]
    checked = check_chain("AAPL", calls=pd.DataFrame.from_records(rows), expiration=EXPIRY)
    rejected = [(r.row, r.contract_symbol, r.reason) for r in checked.rejected]
    assert rejected == [
        (0, None, "must be at least 0"),
        (3, "AAPL300118C00120000", "appears more than once in the chain"),
    ]


def test_rows_are_numbered_across_calls_puts_and_rows() -> None:
    calls = pd.DataFrame({"strike": [1.0, 2.0]})
    puts = pd.DataFrame({"strike": [3.0]})
    rows = [{"strike": 4, "option_type": "put"}]
    checked = check_chain("AAPL", calls=calls, puts=puts, rows=rows, expiration=EXPIRY)
    assert checked.contracts["row"].tolist() == [0, 1, 2, 3]
    assert checked.contracts["option_type"].tolist() == [
        OptionType.CALL,
        OptionType.CALL,
        OptionType.PUT,
        OptionType.PUT,
    ]
    assert checked.contracts["contract_symbol"].tolist()[2] == "AAPL300118P00003000"
