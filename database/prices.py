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

from database.exceptions import DatabaseError, ValidationError
from database.validation import exact_date, exact_datetime, exact_str, normalize_ticker

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
    except DatabaseError:
        raise
    except Exception as e:  # whatever a hostile row's own methods raise, too
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
        key = _label(column).strip().lower()
        if key in _DROPPED:
            continue
        if key not in _ALIASES:
            raise ValidationError(_label(column), _label(column), "is not a price-history column")
        mapping[column] = _ALIASES[key]
    return mapping


def _label(column: Any) -> str:
    return exact_str(column) if isinstance(column, str) else str(column)


def _refuse_duplicate_columns(columns: Iterable[Any], mapping: dict[Any, str]) -> None:
    """Two columns of a frame for one field ("Close" twice, or "Close" and "close"):
    which to store is a guess, so neither is."""
    seen: dict[str, list[str]] = {}
    for column in columns:
        if column in mapping:
            seen.setdefault(mapping[column], []).append(_label(column))
    for field, labels in seen.items():
        if len(labels) > 1:
            raise ValidationError(field, labels, "is given by more than one column")


def _calendar_day(value: Any) -> Any:
    """The trading day a value names, as a midnight Timestamp, or NaT: a datetime's
    calendar date in its own time zone, a date, or text pandas reads as a date."""
    if isinstance(value, dt.datetime):
        return pd.Timestamp(exact_datetime(value).replace(tzinfo=None)).normalize()
    if isinstance(value, dt.date):
        return pd.Timestamp(exact_date(value))
    if isinstance(value, bool | int | float | complex):
        return pd.NaT  # not read as nanoseconds since 1970
    stamp = pd.Timestamp(exact_str(value) if isinstance(value, str) else value)
    return stamp.tz_localize(None).normalize() if stamp.tzinfo else stamp


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
            stamp = _calendar_day(value)
        except (ValueError, TypeError, OverflowError):
            stamp = pd.NaT  # out of pandas' range (1677-2262) or not a date: rejected
        if stamp is not pd.NaT and not 1 <= stamp.year <= 9999:
            stamp = pd.NaT  # "-0" parses as the year 0, which no date can hold
        converted.append(stamp)
    return pd.Series(pd.to_datetime(converted), index=values.index)


def trading_day(value: Any, field: str) -> dt.date:
    """A date argument of a read, meaning what it means in a bar's date column: a date;
    a datetime (or pandas Timestamp) stands for its calendar date in its own time zone
    (``2024-01-02 23:00-05:00`` is 2 January); text and ``numpy.datetime64`` as pandas
    reads them (``"2024-01-02"``). Numbers and anything else are refused."""
    if isinstance(value, dt.datetime):
        return exact_datetime(value).date()
    if isinstance(value, dt.date):
        return exact_date(value)
    try:
        stamp = _calendar_day(value)
        # "-0" parses as the year 0, which pandas holds and no date can.
        day: dt.date | None = stamp.date() if isinstance(stamp, pd.Timestamp) else None
    except Exception:
        day = None
    if day is None:
        raise ValidationError(
            field, value, "must be a date, a datetime or a date string such as 2024-01-02"
        )
    return day


def _numeric(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(float values with NaN for missing, mask of values that are not numbers at all)."""
    if pd.api.types.is_complex_dtype(values.dtype):
        # 10.5+7j is not a price of 10.5: complex numbers are refused, not truncated.
        return pd.Series(np.nan, index=values.index), values.notna()
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("float64"), pd.Series(False, index=values.index)
    missing = values.isna() | values.map(
        lambda v: isinstance(v, str) and str.lower(str.strip(v)) in {"", "null", "nan"}
    )
    # True is not a price of 1: bools, complex numbers (and anything else but real
    # numbers and text) are refused.
    wrong = values.map(
        lambda v: (
            isinstance(v, bool | np.bool_ | complex | np.complexfloating)
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
    mapping = _canonical_columns(frame.columns)
    if isinstance(data, pd.DataFrame):
        _refuse_duplicate_columns(frame.columns, mapping)
    frame = frame.rename(columns=mapping)
    if frame.columns.duplicated().any():  # dict rows spelled both ways: "Close", "close"
        frame = pd.DataFrame(
            {name: _one_spelling(frame.loc[:, [name]], name) for name in frame.columns.unique()}
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


def _one_spelling(columns: pd.DataFrame, field: str) -> pd.Series:
    """One field given under several keys by different dict rows; a row that gives it
    twice is refused (which to store would be a guess)."""
    given = columns.notna().sum(axis=1)
    if (given > 1).any():
        number = int(np.flatnonzero((given > 1).to_numpy())[0])
        raise ValidationError(field, f"row {number}", "is given twice in one row")
    return columns.bfill(axis=1).iloc[:, 0]


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
        # Stored to 6 places: 1e-7 would be stored as 0, which no price is.
        rounds_to_zero = (values > 0) & (np.rint(values * 10**PRICE_SCALE) == 0)
        checks.append(
            (rounds_to_zero, field, original[field], "must be greater than 0 at 6 decimal places")
        )
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
