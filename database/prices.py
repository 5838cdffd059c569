"""Daily bars in, checked: yfinance DataFrames or dict rows become one clean frame.

``check_bars`` accepts ``Ticker.history()`` / ``download()`` frames (a ``Date``
or ``Datetime`` index, tz-aware or not; ``Adj Close`` or not; the actions
columns; ``yf.download()``'s two-level ``(Price, Ticker)`` or ``(Ticker, Price)``
columns) and lists of dicts in either spelling (``"Adj Close"`` or
``adj_close``). It returns the bars in storage order with NaN as missing, the
rows it rejected (ticker, date, field, value, reason) and the ranges it widened
(see ``REPAIR_TOLERANCE``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from database.driver import ColumnRows, storage_scale
from database.exceptions import DatabaseError, ValidationError
from database.models import PriceHistory
from database.validation import (
    FLOAT_SOURCE,
    exact_date,
    exact_datetime,
    exact_str,
    normalize_ticker,
    scaled_integers,
    scaled_units,
)

PRICE_FIELDS = ("open", "high", "low", "close", "adj_close")
VALUE_FIELDS = (*PRICE_FIELDS, "volume", "dividends", "stock_splits")
BAR_FIELDS = ("ticker", "date", *VALUE_FIELDS)
# Fields a source often lacks (yf.download() has no Dividends or Stock Splits
# without actions=True; auto_adjust=True has no Adj Close): a missing value (no
# such column or key, or NaN) keeps what is stored for that bar; a new bar gets
# NULL, or 0 for the actions. A bar's open, high, low and close are replaced
# together, so that its range stays its own.
KEPT_WHEN_MISSING = ("adj_close", "volume", "dividends", "stock_splits")
ACTION_FIELDS = ("dividends", "stock_splits")
# The decimal places each price column stores, read from the columns' own types:
# the vectorised paths below work in these integer units (millionths for
# NUMERIC(18, 6)), which is what SQLite stores and what the bulk path stages.
SCALES = {f: storage_scale(PriceHistory.__table__.c[f]) for f in (*PRICE_FIELDS, *ACTION_FIELDS)}
PRICE_SCALE = SCALES["close"]
if any(SCALES[f] != PRICE_SCALE for f in PRICE_FIELDS):  # compared with each other in units
    raise TypeError("price_history's price columns must share one scale")
# Bars are a float feed (yfinance): binary approximations such as 209.419998000001
# for 209.419998. They become column values by the one decimal policy with the
# feed's named rounding, validation.FLOAT_SOURCE: read through repr, rounded half to
# even to the column's places (as the option chains are). np.rint alone is half to
# even too, but of the binary product value * 10**scale, which differs from the
# policy on about 1 in 100 seven-place ties (523.8320965: np.rint gives 523832097
# millionths, the policy 523832096); validation.scaled_units and scaled_integers use
# np.rint where the two agree and the repr where they may not.
BAR_ROUNDING = FLOAT_SOURCE
# Yahoo's bars now and then have an open or close a little outside [low, high]
# (SPY 2015-03-05: open 209.419998, low 209.850006, 0.2% apart). Such a bar is
# kept and its range widened to the price, when the price is at most this
# fraction of the bound beyond it; farther out, the bar is refused.
REPAIR_TOLERANCE = 0.02
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


# (rows, field, values, reason); rows: a boolean Series or array, True where the bar fails
Problem = tuple["pd.Series[Any] | npt.NDArray[np.bool_]", str, "pd.Series[Any]", str]
_Repair = tuple[int, str, int, int, str]  # (row, field, old millionths, new millionths, reason)


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


@dataclass(frozen=True)
class RepairedBar:
    """A bar stored with its range widened: ``field`` (low or high) went from ``old``
    to ``new`` (as stored, to 6 places) because of ``reason``."""

    ticker: str
    date: dt.date
    field: str
    old: Decimal
    new: Decimal
    reason: str

    def __str__(self) -> str:
        return f"{self.ticker} {self.date}: {self.field} {self.old} -> {self.new} ({self.reason})"


@dataclass(frozen=True)
class CheckedBars:
    """``bars``: the valid bars (``BAR_FIELDS`` columns); ``rejected``: the bad ones;
    ``repaired``: the valid bars whose range was widened."""

    bars: pd.DataFrame
    rejected: list[RejectedBar]
    repaired: list[RepairedBar]


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
    if value is pd.NaT:  # a datetime subclass, whose date() is the year 1
        raise ValidationError(field, value, "is missing (NaT)")
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


def check_bars(
    data: pd.DataFrame | Iterable[Mapping[str, Any]],
    ticker: str | None = None,
    *,
    repair: bool = True,
) -> CheckedBars:
    """Normalise and check bars: the valid ones, the rejected, the repaired.

    The valid frame has the columns of ``BAR_FIELDS``: ``date`` as
    ``datetime64`` at midnight, prices and actions as float64 (NaN = missing),
    ``volume`` as float64 holding whole numbers. ``repair``: widen ``low`` /
    ``high`` to an open or close that lies outside them by at most
    ``REPAIR_TOLERANCE`` (else such a bar is rejected). Input it cannot read at
    all is a ValidationError.
    """
    check_bar_source(data)
    with unreadable_as_validation_error():
        return _check_bars(data, ticker, repair)


def prepare_bars(
    data: pd.DataFrame | Iterable[Mapping[str, Any]],
    ticker: str | None = None,
) -> tuple[pd.DataFrame, list[RejectedBar]]:
    """``check_bars`` as (valid bars, rejected bars)."""
    checked = check_bars(data, ticker)
    return checked.bars, checked.rejected


def _check_bars(
    data: pd.DataFrame | Iterable[Mapping[str, Any]], ticker: str | None, repair: bool
) -> CheckedBars:
    frame = data.copy() if isinstance(data, pd.DataFrame) else frame_from_rows(data)
    if isinstance(frame.columns, pd.MultiIndex):
        frame = _flat_download(frame, ticker)
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
        symbol = normalize_ticker(ticker)
        if "ticker" in frame:
            _refuse_other_tickers(frame["ticker"], symbol)
        symbols: npt.NDArray[np.object_] = np.full(len(frame), symbol, object)
    elif "ticker" not in frame:
        raise ValidationError("ticker", None, "is required: pass ticker= or a ticker column")
    else:
        # Each distinct symbol normalised once, then spread by position (no per-row map).
        codes, distinct = pd.factorize(frame["ticker"], use_na_sentinel=False)
        symbols = np.array([normalize_ticker(t) for t in distinct], dtype=object)[codes]
    if "date" not in frame:
        raise ValidationError("date", None, "is required: a Date index or a date column")
    if "close" not in frame:
        raise ValidationError("close", None, "is required")
    bars = pd.DataFrame(
        {
            "ticker": pd.Series(symbols, index=frame.index, dtype=object),
            "date": _as_dates(frame["date"]),
        }
    )
    problems: list[Problem] = []
    original: dict[str, pd.Series] = {}
    for field in VALUE_FIELDS:
        raw = frame[field] if field in frame else pd.Series(np.nan, index=frame.index)
        numbers, not_numbers = _numeric(raw)
        problems.append((not_numbers, field, raw, "is not a number"))
        original[field] = raw
        bars[field] = numbers
    repairs = _widen_ranges(bars) if repair else []
    problems += _checks(bars, original, repair=repair)
    problems.append((bars["date"].isna(), "date", frame["date"], "is not a date"))
    duplicated = bars.duplicated(subset=["ticker", "date"], keep=False) & bars["date"].notna()
    problems.append((duplicated, "date", bars["date"], "appears more than once in the batch"))
    bad, rejected = _rejected(bars, problems)
    repaired = [
        RepairedBar(
            ticker=str(bars["ticker"].iloc[row]),
            date=bars["date"].iloc[row].date(),
            field=field,
            old=Decimal(old).scaleb(-PRICE_SCALE),
            new=Decimal(new).scaleb(-PRICE_SCALE),
            reason=reason,
        )
        for row, field, old, new, reason in repairs
        if not bad[row]
    ]
    repaired.sort(key=lambda r: (r.ticker, r.date, r.field))
    return CheckedBars(bars[~bad].reset_index(drop=True), rejected, repaired)


def _refuse_other_tickers(column: pd.Series, ticker: str) -> None:
    """``ticker=`` with a ticker column: every row's symbol must be that ticker."""
    others = sorted({str(t) for t in column.unique() if _normalized_or_none(t) != ticker})
    if others:
        raise ValidationError(
            "ticker", ticker, f"does not match the ticker column's {', '.join(others[:5])}"
        )


def _normalized_or_none(value: Any) -> str | None:
    try:
        return normalize_ticker(value)
    except ValidationError:
        return None


# -- yf.download()'s two-level columns ------------------------------------------------


def _flat_download(frame: pd.DataFrame, ticker: str | None) -> pd.DataFrame:
    """A ``yf.download()`` frame, columns ``(Price, Ticker)`` or ``(Ticker, Price)``,
    as one row per ticker and day with a ``ticker`` column. A day on which every value
    of a ticker is missing is no bar of it (a download of several tickers spans the
    union of their days) and is left out; ``ticker=``, if given, must be the one
    ticker of the frame."""
    frame = _date_column_as_index(frame)
    level = _price_level(frame.columns)
    symbols = frame.columns.get_level_values(1 - level)
    tickers = {symbol: normalize_ticker(symbol) for symbol in symbols.unique()}
    if ticker is not None and set(tickers.values()) != {normalize_ticker(ticker)}:
        found = ", ".join(sorted(set(tickers.values()))) or "none"
        raise ValidationError(
            "ticker", ticker, f"does not match the tickers of the frame's columns: {found}"
        )
    parts: list[pd.DataFrame] = []
    for symbol, name in tickers.items():
        part = frame.loc[:, symbols == symbol]
        part.columns = part.columns.get_level_values(level)
        mapping = _canonical_columns(part.columns)
        _refuse_duplicate_columns(part.columns, mapping)
        if "ticker" in mapping.values():
            raise ValidationError("ticker", name, "comes from the column level, not a column")
        part = part.dropna(how="all")
        if not isinstance(part.index, pd.RangeIndex):
            part = part.reset_index()
        parts.append(part.assign(ticker=name))
    if not parts:
        return pd.DataFrame({"ticker": []})
    return pd.concat(parts, ignore_index=True)


def download_tickers(frame: pd.DataFrame) -> list[str] | None:
    """The sorted tickers of a two-level ``yf.download()`` frame (None for other frames)."""
    if not isinstance(frame.columns, pd.MultiIndex):
        return None
    with unreadable_as_validation_error("ticker"):
        columns = _date_column_as_index(frame.iloc[:0]).columns
        symbols = columns.get_level_values(1 - _price_level(columns))
        return sorted({normalize_ticker(symbol) for symbol in symbols.unique()})


def _blank(label: Any) -> bool:
    """An empty level of a column label: ``reset_index()`` writes "", and pandas reads
    it back from CSV as ``Unnamed: 0_level_1``."""
    if label is None or (isinstance(label, float) and math.isnan(label)):
        return True
    text = _label(label).strip()
    return text == "" or (text.startswith("Unnamed: ") and "_level_" in text)


def _date_column_as_index(frame: pd.DataFrame) -> pd.DataFrame:
    """A download whose index was reset has its date in a column ``("Date", "")``
    (or ``("", "Date")``): make it the index again."""
    if frame.columns.nlevels != 2:
        raise ValidationError(
            "columns",
            f"{frame.columns.nlevels} levels",
            "must be one level, or two (price fields and tickers) as yf.download() gives",
        )
    dates: dict[int, str] = {}
    for position, column in enumerate(frame.columns):
        named = [part for part in column if not _blank(part)]
        if len(named) == 1 and _label(named[0]).strip().lower() in ("date", "datetime"):
            dates[position] = _label(named[0])
    if not dates:
        return frame
    rest = frame.iloc[:, [i for i in range(frame.shape[1]) if i not in dates]]
    arrays = [frame.iloc[:, i] for i in dates]
    if len(arrays) == 1:
        index: pd.Index = pd.Index(arrays[0], name=next(iter(dates.values())))
    else:  # reset to columns, these two are refused as one field given twice
        index = pd.MultiIndex.from_arrays(arrays, names=list(dates.values()))
    return rest.set_axis(index, axis=0)


def _price_level(columns: pd.Index) -> int:
    """Which level holds the price fields: the one yfinance names ``Price`` (or not
    ``Ticker``), else the only one whose labels are all price-history fields."""
    names = [None if n is None else _label(n).strip().lower() for n in columns.names]
    if "price" in names:
        return names.index("price")
    if "ticker" in names:
        return 1 - names.index("ticker")

    def fields_only(level: int) -> bool:
        labels = columns.get_level_values(level).unique()
        return all(
            isinstance(label, str) and label.strip().lower() in {*_ALIASES, *_DROPPED}
            for label in labels
        )

    fits = [fields_only(0), fields_only(1)]
    if fits.count(True) != 1:
        raise ValidationError(
            "columns",
            list(columns.names),
            "has two levels but no level of price fields alone: name them Price and Ticker",
        )
    return fits.index(True)


# -- Yahoo's small range inconsistencies ----------------------------------------------


def _widen_ranges(bars: pd.DataFrame) -> list[_Repair]:
    """Widen ``low`` / ``high`` (in place) to an open or close just outside them.

    Only for bars whose prices are all finite and positive with ``low <= high``;
    compared as stored, in millionths, so float noise below 6 places is no
    inconsistency; the price may lie at most ``REPAIR_TOLERANCE`` of the bound
    beyond it. Every other bar is left for the checks to refuse.
    """
    units = {
        f: scaled_units(bars[f].to_numpy(dtype="float64"), PRICE_SCALE, BAR_ROUNDING)
        for f in ("open", "high", "low", "close")
    }
    with np.errstate(invalid="ignore", over="ignore"):
        sound = (units["low"] > 0) & (units["high"] >= units["low"]) & (units["high"] < 1e18)
        for f in ("open", "close"):
            sound &= np.isnan(units[f]) | ((units[f] > 0) & (units[f] < 1e18))
        repairs: list[_Repair] = []
        for bound, extreme, beyond in (("low", np.fmin, "below"), ("high", np.fmax, "above")):
            limit = units[bound]
            price = extreme(units["open"], units["close"])
            gap = np.abs(price - limit) / limit
            outside = (price < limit) if bound == "low" else (price > limit)
            needed = sound & outside & (gap <= REPAIR_TOLERANCE)
            from_open = units["open"] == price
            for row in np.flatnonzero(needed):
                source = "open" if from_open[row] else "close"
                repairs.append(
                    (
                        int(row),
                        bound,
                        int(limit[row]),
                        int(price[row]),
                        f"the {source} is {beyond} the {bound}",
                    )
                )
            widened = np.where(from_open, bars["open"], bars["close"])
            bars[bound] = np.where(needed, widened, bars[bound])
    return repairs


def _one_spelling(columns: pd.DataFrame, field: str) -> pd.Series:
    """One field given under several keys by different dict rows; a row that gives it
    twice is refused (which to store would be a guess)."""
    given = columns.notna().sum(axis=1)
    if (given > 1).any():
        number = int(np.flatnonzero((given > 1).to_numpy())[0])
        raise ValidationError(field, f"row {number}", "is given twice in one row")
    return columns.bfill(axis=1).iloc[:, 0]


def _checks(bars: pd.DataFrame, original: dict[str, pd.Series], *, repair: bool) -> list[Problem]:
    """The value checks, on the columns' numpy arrays (NaN, a missing value, fails none
    of the comparisons)."""
    checks: list[Problem] = []
    column = {f: bars[f].to_numpy(dtype="float64") for f in VALUE_FIELDS}
    with np.errstate(invalid="ignore", over="ignore"):
        checks.append((np.isnan(column["close"]), "close", original["close"], "is required"))
        for field in PRICE_FIELDS:
            values = column[field]
            checks.append((np.isinf(values), field, original[field], "must be finite"))
            checks.append((values <= 0, field, original[field], "must be greater than 0"))
            # Stored to 6 places: 1e-7 would be stored as 0, which no price is.
            units = scaled_units(values, SCALES[field], BAR_ROUNDING)
            rounds_to_zero = (values > 0) & (units == 0)
            checks.append(
                (
                    rounds_to_zero,
                    field,
                    original[field],
                    f"must be greater than 0 at {PRICE_SCALE} decimal places",
                )
            )
            checks.append((values >= _LIMITS[field], field, original[field], "is too large"))
        # Compared as stored (to 6 places): float noise beyond them is no inconsistency.
        stored = {
            f: scaled_units(column[f], PRICE_SCALE, BAR_ROUNDING)
            for f in ("open", "high", "low", "close")
        }
        low, high = stored["low"], stored["high"]
        checks.append((low > high, "low", original["low"], "is above the high"))
        # Left after the repair (if any): beyond the tolerance, or in a bar it cannot mend.
        farther = f" by more than {REPAIR_TOLERANCE:.0%}" if repair else ""
        for field in ("open", "close"):
            below, above = stored[field] < low, stored[field] > high
            checks.append((below, field, original[field], f"is below the low{farther}"))
            checks.append((above, field, original[field], f"is above the high{farther}"))
        volume = column["volume"]
        checks.append((volume < 0, "volume", original["volume"], "must be at least 0"))
        fraction = ~np.isnan(volume) & (np.mod(volume, 1) != 0)
        checks.append((fraction, "volume", original["volume"], "must be a whole number"))
        checks.append((volume >= _LIMITS["volume"], "volume", original["volume"], "is too large"))
        for field in ("dividends", "stock_splits"):
            values = column[field]
            checks.append((values < 0, field, original[field], "must be at least 0"))
            checks.append((values >= _LIMITS[field], field, original[field], "is too large"))
            checks.append((np.isinf(values), field, original[field], "must be finite"))
    return checks


def _rejected(
    bars: pd.DataFrame, problems: list[Problem]
) -> tuple[npt.NDArray[np.bool_], list[RejectedBar]]:
    """(mask of the bad rows, one report per bad row: its first problem)."""
    bad = np.zeros(len(bars), dtype=bool)
    rejected: list[RejectedBar] = []
    seen: set[Any] = set()
    for rows, field, values, reason in problems:
        mask = rows.fillna(False).to_numpy(dtype=bool) if isinstance(rows, pd.Series) else rows
        if not mask.any():
            continue
        bad |= mask
        for position in np.flatnonzero(mask):
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
    return bad, rejected


# Below this magnitude a price rounded to 6 places is exactly the repr of the float
# nearest to it: floats are then closer together than 1e-6, so no other decimal of
# 6 places or fewer digits maps to that float.
EXACT_FLOAT_LIMIT = 2.0**33


def staging_rows(
    bars: pd.DataFrame,
    *,
    prices: Literal["units", "decimals", "floats"],
    encode_date: Callable[[dt.date], Any] | None = None,
    extra: tuple[Any, ...] = (),
) -> ColumnRows:
    """Bars as driver rows in ``BAR_FIELDS`` order (then ``extra``), None for missing;
    kept as columns, each row made as the driver takes it (see ``ColumnRows``).

    ``prices``: ``"units"``, integers in units of their column's scale (``SCALES``),
    rounded by ``BAR_ROUNDING`` (the SQLite storage unit, and the staging unit on
    both backends); ``"decimals"``, the same values as floats whose text (``repr``)
    is exactly the rounded decimal, for a text ``COPY`` straight into NUMERIC columns
    (OverflowError at ``EXACT_FLOAT_LIMIT`` or beyond); ``"floats"``, the bars'
    floats as they are, which is not the policy: PostgreSQL rounds floats into
    NUMERIC its own way (15 significant digits, then half away from zero).
    ``encode_date``: how the date column stores a day on the target backend (see
    ``database.driver.column_encoder``); ``datetime.date`` if not given.
    """
    # A batch holds few distinct days: convert each once.
    days = bars["date"].to_numpy().astype("datetime64[D]")
    distinct, positions = np.unique(days, return_inverse=True)
    converted = distinct.tolist()
    if encode_date is not None:
        converted = [encode_date(day) for day in converted]
    columns: list[list[Any]] = [
        bars["ticker"].tolist(),
        np.array(converted, dtype=object)[positions].tolist(),
    ]
    for field in VALUE_FIELDS:
        values = bars[field].to_numpy(dtype="float64")
        if prices == "units" and field != "volume":
            columns.append(scaled_integers(values, SCALES[field], BAR_ROUNDING))  # None: NaN
            continue
        if prices == "decimals" and field != "volume":
            units = scaled_units(values, SCALES[field], BAR_ROUNDING)
            with np.errstate(invalid="ignore"):
                if (np.abs(units) >= EXACT_FLOAT_LIMIT * 10 ** SCALES[field]).any():
                    raise OverflowError(f"{field} is too large to be sent as a float")
            values = units / 10 ** SCALES[field]  # correctly rounded: the nearest float
        missing = np.isnan(values)
        if field == "volume":
            cells = np.rint(np.where(missing, 0.0, values)).astype(np.int64).tolist()
        else:
            cells = values.tolist()
        for position in np.flatnonzero(missing):
            cells[position] = None
        columns.append(cells)
    return ColumnRows(columns, len(bars), extra)
