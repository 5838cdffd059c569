"""Daily bars in, checked: yfinance DataFrames or dict rows become one clean frame.

``prepare_bars`` accepts ``Ticker.history()`` / ``download()`` frames (a ``Date``
or ``Datetime`` index, tz-aware or not; ``Adj Close`` or not; the actions
columns) and lists of dicts in either spelling (``"Adj Close"`` or
``adj_close``). It returns the bars in storage order with NaN as missing, and
the rows it rejected, each with ticker, date, field, value and reason.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from database.exceptions import ValidationError
from database.validation import normalize_ticker

PRICE_FIELDS = ("open", "high", "low", "close", "adj_close")
VALUE_FIELDS = (*PRICE_FIELDS, "volume", "dividends", "stock_splits")
BAR_FIELDS = ("ticker", "date", *VALUE_FIELDS)
PRICE_SCALE = 6  # NUMERIC(18, 6), as in the price_history table
# The frame that ``get_frame`` returns: yfinance's history() columns, "Date" as index.
YFINANCE_COLUMNS = [
    "Date",
    "Open",
    "High",
    "Low",
    "Close",
    "Adj Close",
    "Volume",
    "Dividends",
    "Stock Splits",
]
# What the columns hold: 12 integer digits for prices, 6 for split ratios, BIGINT volumes.
_LIMITS = {
    **dict.fromkeys((*PRICE_FIELDS, "dividends"), 1e12),
    "stock_splits": 1e6,
    "volume": 2.0**63,
}

_ALIASES = {
    "date": "date",
    "datetime": "date",
    "ticker": "ticker",
    "symbol": "ticker",
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "adj close": "adj_close",
    "adj_close": "adj_close",
    "adjclose": "adj_close",
    "volume": "volume",
    "dividends": "dividends",
    "stock splits": "stock_splits",
    "stock_splits": "stock_splits",
}
# yfinance columns that the price_history table does not keep.
_DROPPED = {"capital gains", "capital_gains", "repaired?"}


Problem = tuple["pd.Series[Any]", str, "pd.Series[Any]", str]  # (rows, field, values, reason)


@dataclass(frozen=True)
class RejectedBar:
    """A bar that failed a check: which, where, and why."""

    ticker: str
    date: dt.date | None
    field: str
    value: Any
    reason: str

    def __str__(self) -> str:
        return f"{self.ticker} {self.date}: {self.field}={self.value!r} {self.reason}"


class PriceValidationError(ValidationError):
    """Some bars are invalid; nothing was written. ``rejected`` lists every problem."""

    def __init__(self, rejected: list[RejectedBar]) -> None:
        first = rejected[0]
        more = f" (and {len(rejected) - 1} more)" if len(rejected) > 1 else ""
        super().__init__(
            first.field, first.value, f"{first.reason} for {first.ticker} on {first.date}{more}"
        )
        self.rejected = rejected


@contextmanager
def unreadable_as_validation_error(field: str = "data") -> Iterator[None]:
    """What pandas and numpy raise on input they cannot convert (an unhashable
    ticker, a date out of range, a signalling NaN...) as a ValidationError."""
    try:
        yield
    except ValidationError:
        raise
    except (
        TypeError,
        ValueError,
        OverflowError,
        KeyError,
        AttributeError,
        ArithmeticError,
        NotImplementedError,
    ) as e:
        raise ValidationError(
            field, type(e).__name__, f"cannot be read as price bars: {e}"
        ) from None


def check_bar_source(data: Any) -> None:
    """A yfinance DataFrame, or an iterable of dict rows (not a str, not one dict)."""
    if isinstance(data, pd.DataFrame):
        return
    if isinstance(data, str | bytes | Mapping) or not isinstance(data, Iterable):
        raise ValidationError(
            "data", type(data).__name__, "must be a DataFrame or an iterable of dict rows"
        )


def _canonical_columns(columns: Iterable[Any]) -> dict[Any, str]:
    mapping: dict[Any, str] = {}
    for column in columns:
        key = str(column).strip().lower()
        if key in _DROPPED:
            continue
        if key not in _ALIASES:
            raise ValidationError(str(column), str(column), "is not a price-history column")
        mapping[column] = _ALIASES[key]
    return mapping


def _as_dates(values: pd.Series) -> pd.Series:
    """Trading days: the calendar date of each timestamp in its own time zone."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_localize(None)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return pd.Series(values.dt.normalize(), index=values.index)
    converted: list[Any] = []
    for value in values:
        stamp: Any
        try:
            if isinstance(value, dt.datetime):
                stamp = pd.Timestamp(value.replace(tzinfo=None)).normalize()
            elif isinstance(value, dt.date):
                stamp = pd.Timestamp(value)
            elif isinstance(value, bool | int | float):
                stamp = pd.NaT  # not read as nanoseconds since 1970
            else:
                stamp = pd.Timestamp(value)
                stamp = stamp.tz_localize(None).normalize() if stamp.tzinfo else stamp
        except (ValueError, TypeError, OverflowError):
            stamp = pd.NaT  # out of pandas' range (1677-2262) or not a date: rejected
        if stamp is not pd.NaT and not 1 <= stamp.year <= 9999:
            stamp = pd.NaT  # "-0" parses as the year 0, which no date can hold
        converted.append(stamp)
    return pd.Series(pd.to_datetime(converted), index=values.index)


def _numeric(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(float values with NaN for missing, mask of values that are not numbers at all)."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("float64"), pd.Series(False, index=values.index)
    missing = values.isna() | values.map(
        lambda v: isinstance(v, str) and v.strip().lower() in {"", "null", "nan"}
    )
    # True is not a price of 1: bools (and anything else but numbers and text) are refused.
    wrong = values.map(
        lambda v: (
            isinstance(v, bool | np.bool_)
            or not isinstance(v, str | int | float | Decimal | np.number)
        )
    )
    usable = values.where(~missing & ~wrong)
    numbers = pd.to_numeric(usable.astype(object), errors="coerce")
    return numbers.astype("float64"), (numbers.isna() | wrong) & ~missing


def frame_from_rows(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    rows = list(rows)
    for number, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValidationError(f"row {number}", type(row).__name__, "must be a dict")
    frame = pd.DataFrame.from_records(rows)
    for column in frame.columns:
        if frame[column].map(lambda v: isinstance(v, Decimal)).any():
            frame[column] = frame[column].map(lambda v: float(v) if isinstance(v, Decimal) else v)
    return frame


def prepare_bars(
    data: pd.DataFrame | Iterable[Mapping[str, Any]],
    ticker: str | None = None,
) -> tuple[pd.DataFrame, list[RejectedBar]]:
    """Normalise and check bars; return (valid bars, rejected bars).

    The valid frame has the columns of ``BAR_FIELDS``: ``date`` as
    ``datetime64`` at midnight, prices and actions as float64 (NaN = missing),
    ``volume`` as float64 holding whole numbers. Input it cannot read at all is
    a ValidationError.
    """
    check_bar_source(data)
    with unreadable_as_validation_error():
        return _prepare_bars(data, ticker)


def _prepare_bars(
    data: pd.DataFrame | Iterable[Mapping[str, Any]], ticker: str | None
) -> tuple[pd.DataFrame, list[RejectedBar]]:
    frame = data.copy() if isinstance(data, pd.DataFrame) else frame_from_rows(data)
    if isinstance(data, pd.DataFrame) and not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    frame = frame.rename(columns=_canonical_columns(frame.columns))
    if frame.columns.duplicated().any():  # rows spelled both ways: "Close" and "close"
        frame = pd.DataFrame(
            {name: frame.loc[:, [name]].bfill(axis=1).iloc[:, 0] for name in frame.columns.unique()}
        )
    if ticker is not None:
        frame["ticker"] = normalize_ticker(ticker)
    elif "ticker" not in frame:
        raise ValidationError("ticker", None, "is required: pass ticker= or a ticker column")
    else:
        tickers = {t: normalize_ticker(t) for t in frame["ticker"].unique()}
        frame["ticker"] = frame["ticker"].map(tickers)
    if "date" not in frame:
        raise ValidationError("date", None, "is required: a Date index or a date column")
    if "close" not in frame:
        raise ValidationError("close", None, "is required")
    bars = pd.DataFrame(
        {"ticker": frame["ticker"].astype(object), "date": _as_dates(frame["date"])}
    )
    problems: list[Problem] = []
    original: dict[str, pd.Series] = {}
    for field in VALUE_FIELDS:
        raw = frame[field] if field in frame else pd.Series(np.nan, index=frame.index)
        numbers, not_numbers = _numeric(raw)
        problems.append((not_numbers, field, raw, "is not a number"))
        original[field] = raw
        bars[field] = numbers
    for field in ("dividends", "stock_splits"):
        bars[field] = bars[field].fillna(0.0)
    problems += _checks(bars, original)
    problems.append((bars["date"].isna(), "date", frame["date"], "is not a date"))
    duplicated = bars.duplicated(subset=["ticker", "date"], keep=False) & bars["date"].notna()
    problems.append((duplicated, "date", bars["date"], "appears more than once in the batch"))
    return _split(bars, problems)


def _checks(
    bars: pd.DataFrame, original: dict[str, pd.Series]
) -> list[tuple[pd.Series, str, pd.Series, str]]:
    checks: list[tuple[pd.Series, str, pd.Series, str]] = []
    close = bars["close"]
    checks.append((close.isna(), "close", original["close"], "is required"))
    for field in PRICE_FIELDS:
        values = bars[field]
        checks.append(
            (~np.isfinite(values) & values.notna(), field, original[field], "must be finite")
        )
        checks.append((values <= 0, field, original[field], "must be greater than 0"))
        checks.append((values >= _LIMITS[field], field, original[field], "is too large"))
    low, high = bars["low"], bars["high"]
    for field in ("open", "close"):
        checks.append((bars[field] < low, field, original[field], "is below the low"))
        checks.append((bars[field] > high, field, original[field], "is above the high"))
    checks.append((low > high, "low", original["low"], "is above the high"))
    volume = bars["volume"]
    checks.append((volume < 0, "volume", original["volume"], "must be at least 0"))
    checks.append(
        (volume.notna() & (volume % 1 != 0), "volume", original["volume"], "must be a whole number")
    )
    checks.append((volume >= _LIMITS["volume"], "volume", original["volume"], "is too large"))
    for field in ("dividends", "stock_splits"):
        checks.append((bars[field] < 0, field, original[field], "must be at least 0"))
        checks.append((bars[field] >= _LIMITS[field], field, original[field], "is too large"))
        checks.append((~np.isfinite(bars[field]), field, original[field], "must be finite"))
    return checks


def _split(bars: pd.DataFrame, problems: list[Problem]) -> tuple[pd.DataFrame, list[RejectedBar]]:
    bad = pd.Series(False, index=bars.index)
    rejected: list[RejectedBar] = []
    seen: set[Any] = set()
    for mask, field, values, reason in problems:
        mask = mask.fillna(False).astype(bool)
        if not mask.any():
            continue
        bad |= mask
        for position in np.flatnonzero(mask.to_numpy()):
            if position in seen:
                continue  # one report per row: its first problem
            seen.add(position)
            day = bars["date"].iloc[position]
            value = values.iloc[position]
            if isinstance(value, np.generic):
                value = value.item()
            rejected.append(
                RejectedBar(
                    ticker=str(bars["ticker"].iloc[position]),
                    date=None if pd.isna(day) else day.date(),
                    field=field,
                    value=None
                    if value is None or (isinstance(value, float) and math.isnan(value))
                    else value,
                    reason=reason,
                )
            )
    rejected.sort(key=lambda r: (r.ticker, r.date or dt.date.min))
    return bars[~bad].reset_index(drop=True), rejected


def staging_rows(
    bars: pd.DataFrame, *, scaled: bool, text_dates: bool, extra: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    """Bars as driver rows in ``BAR_FIELDS`` order (then ``extra``), None for missing.

    ``scaled``: prices as integers in millionths, rounded half to even (the
    SQLite storage unit, and the staging unit on both backends); otherwise
    floats, which PostgreSQL rounds into NUMERIC(18, 6). ``text_dates``: days
    as ISO text (SQLite) rather than ``datetime.date``.
    """
    # A batch holds few distinct days: convert each once.
    days = bars["date"].to_numpy().astype("datetime64[D]")
    distinct, positions = np.unique(days, return_inverse=True)
    converted = distinct.astype(str).tolist() if text_dates else distinct.tolist()
    columns: list[Iterable[Any]] = [
        bars["ticker"].tolist(),
        [converted[i] for i in positions.tolist()],
    ]
    for field in VALUE_FIELDS:
        values = bars[field].to_numpy(dtype="float64")
        missing = np.isnan(values)
        if field == "volume" or scaled:
            factor = 1 if field == "volume" else 10**PRICE_SCALE
            cells = np.rint(np.where(missing, 0.0, values) * factor).astype(np.int64).tolist()
        else:
            cells = values.tolist()
        for position in np.flatnonzero(missing):
            cells[position] = None
        columns.append(cells)
    columns += [itertools.repeat(value, len(bars)) for value in extra]
    return list(zip(*columns, strict=False))  # the repeats are endless
