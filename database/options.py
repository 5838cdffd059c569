"""Option chains in, checked: yfinance ``option_chain()`` frames or dict rows become rows.

Contract symbols follow the OCC format (``NVDA241004C00120000``: root, expiry
YYMMDD, C or P, strike x 1000 in 8 digits). A missing symbol is derived from the
underlying, expiry, type and strike; a missing expiry or type is read from the
symbol. A given symbol must agree with its row: its root starts with the
underlying's (``SPXW`` for ``^SPX``, ``AAPL1`` for an adjusted AAPL contract), and
its expiry, type and strike are the row's. The two-digit year limits expirations
to 2000-2099.

The checks are vectorised, as ``database.prices`` checks bars: the calls, the puts
and the dict rows (made into a frame) each become one frame of the chain's fields,
checked column by column with masks. Numeric columns are read with numpy, decimal
ones in integer units of their column's scale (``SCALES``) by the one decimal policy
with this source's named rounding (``validation.FLOAT_SOURCE``, through
``validation.scaled_units`` / ``scaled_integers``); a cell that is not a plain float
(a Decimal, text, a NumPy scalar in a dict row) goes through
``validation.to_decimal`` itself, so it keeps its exact semantics. Each bad row is
reported once, with its first problem in the order the checks are listed in
:func:`_check_source`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from database.driver import storage_scale
from database.exceptions import DatabaseError, ValidationError
from database.models import OptionsData, OptionType
from database.types import ExactDecimal
from database.validation import (
    BIGINT_RANGE,
    FLOAT_SOURCE,
    exact_str,
    normalize_ticker,
    scaled_integers,
    scaled_units,
    to_expiration,
    to_utc,
    unreadable_as,
)

OCC_SYMBOL = re.compile(
    r"^(?P<root>[A-Z0-9]{1,6})(?P<expiry>\d{6})(?P<type>[CP])(?P<strike>\d{8})$"
)

_ALIASES = {
    "contractsymbol": "contract_symbol",
    "contract_symbol": "contract_symbol",
    "lasttradedate": "last_trade_date",
    "last_trade_date": "last_trade_date",
    "strike": "strike",
    "lastprice": "last_price",
    "last_price": "last_price",
    "bid": "bid",
    "ask": "ask",
    "volume": "volume",
    "openinterest": "open_interest",
    "open_interest": "open_interest",
    "impliedvolatility": "implied_volatility",
    "implied_volatility": "implied_volatility",
    "expiration": "expiration",
    "option_type": "option_type",
    "type": "option_type",
    "underlying_price": "underlying_price",
    **{greek: greek for greek in ("delta", "gamma", "theta", "vega", "rho")},
}
# yfinance columns that are derived or constant, and so not stored.
_DROPPED = {"change", "percentchange", "inthemoney", "contractsize", "currency"}
_PRICES = ("strike", "last_price", "bid", "ask", "underlying_price")
_RATIOS = ("implied_volatility", "delta", "gamma", "theta", "vega", "rho")
_COUNTS = ("volume", "open_interest")
DECIMAL_FIELDS = _PRICES + _RATIOS
# The columns of CheckedChain.contracts, after ``row``.
CONTRACT_FIELDS = (
    "contract_symbol",
    "option_type",
    "expiration",
    "last_trade_date",
    *_COUNTS,
    *DECIMAL_FIELDS,
)
# Fields that must not be negative, in the order they are checked.
_NOT_NEGATIVE = (*_PRICES, "implied_volatility", *_COUNTS)
_SYMBOL_REASON = "is not an OCC contract symbol such as NVDA241004C00120000"
_FROM_SYMBOL = "is required (or a contract symbol to read it from)"
_LETTERS = {OptionType.CALL: "C", OptionType.PUT: "P"}


@dataclass(frozen=True)
class RejectedContract:
    row: int
    contract_symbol: str | None
    field: str
    value: Any
    reason: str


class OptionsValidationError(ValidationError):
    """Some contracts are invalid; nothing was written. ``rejected`` lists every problem."""

    def __init__(self, rejected: list[RejectedContract]) -> None:
        first = rejected[0]
        where = first.contract_symbol or f"row {first.row}"
        more = f" (and {len(rejected) - 1} more)" if len(rejected) > 1 else ""
        super().__init__(first.field, first.value, f"{first.reason} for {where}{more}")
        self.rejected = rejected


def occ_root(ticker: str) -> str:
    return ticker.lstrip("^").replace(".", "").replace("-", "")[:6]


def occ_symbol(ticker: str, expiration: dt.date, option_type: OptionType, strike: Decimal) -> str:
    root = occ_root(ticker)
    letter = "C" if option_type is OptionType.CALL else "P"
    return f"{root}{expiration:%y%m%d}{letter}{int(strike * 1000):08d}"


def _symbol_expiry(digits: str) -> dt.date:
    """YYMMDD of an OCC symbol: the years 2000-2099 (strptime's %y would make 70-99 the 1900s)."""
    return dt.date(2000 + int(digits[:2]), int(digits[2:4]), int(digits[4:]))


def _missing(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or value is pd.NaT
        or (isinstance(value, str) and str.strip(value) == "")
    )


def _column_type(field: str) -> ExactDecimal:
    column_type = OptionsData.__table__.c[field].type
    if not isinstance(column_type, ExactDecimal):
        raise TypeError(f"options_data.{field} is not an ExactDecimal column")
    return column_type


_DECIMAL_TYPES = {field: _column_type(field) for field in DECIMAL_FIELDS}
# The integer unit of each decimal column (millionths for NUMERIC(18, 6)): the checks
# work in it, the repository stages it, SQLite stores it.
SCALES = {field: storage_scale(OptionsData.__table__.c[field]) for field in DECIMAL_FIELDS}
# A value of this many units or more has more integer digits than its column holds.
_UNIT_LIMITS = {field: 10.0 ** _DECIMAL_TYPES[field].precision for field in DECIMAL_FIELDS}


@dataclass(frozen=True)
class CheckedChain:
    """A checked chain.

    ``contracts``: one row per valid contract, in input order, with the columns
    ``row`` (its input row) and ``CONTRACT_FIELDS``: ``contract_symbol``,
    ``option_type`` (an OptionType), ``expiration`` (a date), ``last_trade_date``
    (a UTC datetime or None), ``volume`` and ``open_interest`` (int or None), and each
    decimal field as an int in units of its column's scale (``SCALES``) or None.
    ``rejected``: every problem, one per bad row in row order, then the duplicates.
    """

    ticker: str
    contracts: pd.DataFrame
    rejected: list[RejectedContract]

    def values(self) -> list[dict[str, Any]]:
        """The valid contracts as model values (Decimals for the decimal fields); a
        field without a value is left out."""
        columns = {name: self.contracts[name].tolist() for name in CONTRACT_FIELDS}
        contracts: list[dict[str, Any]] = []
        for position in range(len(self.contracts)):
            values: dict[str, Any] = {"ticker": self.ticker}
            for name, cells in columns.items():
                cell = cells[position]
                if cell is None:
                    continue
                values[name] = Decimal(cell).scaleb(-SCALES[name]) if name in SCALES else cell
            contracts.append(values)
        return contracts


# -- reading the sources -----------------------------------------------------------------


def _label(key: Any) -> str:
    return exact_str(key) if isinstance(key, str) else str(key)


def _field_of(key: Any) -> str | None:
    """The chain field a column or key names, None for one that is not stored."""
    name = _label(key).strip()
    lowered = name.lower()
    if lowered in _DROPPED or lowered.startswith("unnamed:"):
        return None
    if lowered not in _ALIASES:
        raise ValidationError(name, name, "is not an option-chain column")
    return _ALIASES[lowered]


@dataclass(frozen=True)
class _Source:
    """One frame of a chain (the calls, the puts, or the dict rows): its fields'
    columns (RangeIndex), the option type its frame implies, its first row number."""

    columns: dict[str, pd.Series]
    length: int
    option_type: OptionType | None
    first_row: int


def _frame_source(frame: pd.DataFrame, option_type: OptionType, first_row: int) -> _Source:
    length = len(frame)
    columns: dict[str, pd.Series] = {}
    if length:  # a frame without rows has nothing to read
        for position, key in enumerate(frame.columns):
            field = _field_of(key)
            if field is not None:  # a field given twice: the last column, as a dict's last key
                columns[field] = _native_column(frame.iloc[:, position])
    return _Source(columns, length, option_type, first_row)


def _numeric_dtype(dtype: Any) -> bool:
    """A NumPy int or float dtype (not bool, not complex, not a nullable extension)."""
    return isinstance(dtype, np.dtype) and (
        pd.api.types.is_float_dtype(dtype) or pd.api.types.is_integer_dtype(dtype)
    )


def _native_column(series: pd.Series) -> pd.Series:
    """A frame's column with a RangeIndex; one of objects holds each cell as the
    Python value ``DataFrame.to_dict`` gives (NumPy scalars unboxed, ``pd.NA`` None)."""
    dtype = series.dtype
    if (
        _numeric_dtype(dtype)
        or pd.api.types.is_datetime64_any_dtype(dtype)
        or isinstance(dtype, pd.StringDtype)  # str cells, or NaN
    ):
        return series.reset_index(drop=True)
    cells = np.empty(len(series), dtype=object)
    for position, cell in enumerate(series.tolist()):
        cells[position] = _native(cell)
    return pd.Series(cells, dtype=object, copy=False)


def _native(value: Any) -> Any:
    if pd.api.types.is_float(value):
        return float(value)
    if pd.api.types.is_integer(value):
        return int(value)
    if pd.api.types.is_bool(value):
        return bool(value)
    if isinstance(value, np.datetime64):
        return pd.Timestamp(value)
    if isinstance(value, np.timedelta64):
        return pd.Timedelta(value)
    return None if value is pd.NA else value


def _canonical(row: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in row.items():
        field = _field_of(key)
        if field is not None:
            clean[field] = None if _missing(value) else value
    return clean


def _rows_source(rows: Iterable[Mapping[str, Any]], first_row: int) -> _Source:
    """Dict rows as one frame of object columns (so every value stays as given)."""
    if isinstance(rows, str | bytes | Mapping) or not isinstance(rows, Iterable):
        raise ValidationError("rows", type(rows).__name__, "must be an iterable of dict rows")
    records: list[dict[str, Any]] = []
    with unreadable_as("rows", type(rows).__name__, "cannot be read as dict rows"):
        for number, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise ValidationError(f"rows[{number}]", type(row).__name__, "must be a dict")
            with unreadable_as(f"rows[{number}]", type(row).__name__, "cannot be read as a dict"):
                records.append(dict(row))
    canonical: list[dict[str, Any]] = []
    for number, record in enumerate(records, start=first_row):
        with unreadable_as(f"row {number}", type(record).__name__, "cannot be read"):
            canonical.append(_canonical(record))
    fields = list(dict.fromkeys(field for row in canonical for field in row))
    columns: dict[str, pd.Series] = {}
    for field in fields:
        cells = np.empty(len(canonical), dtype=object)
        for position, row in enumerate(canonical):
            cells[position] = row.get(field)  # one object per cell, never unpacked
        columns[field] = pd.Series(cells, dtype=object, copy=False)
    return _Source(columns, len(canonical), None, first_row)


def _sources(
    calls: pd.DataFrame | None, puts: pd.DataFrame | None, rows: Iterable[Mapping[str, Any]] | None
) -> list[_Source]:
    sources: list[_Source] = []
    first_row = 0
    for option_type, frame in ((OptionType.CALL, calls), (OptionType.PUT, puts)):
        name = option_type.value + "s"
        if frame is not None and not isinstance(frame, pd.DataFrame):
            raise ValidationError(name, type(frame).__name__, "must be a DataFrame")
        if frame is not None:
            with unreadable_as(name, type(frame).__name__, "cannot be read as an option chain"):
                sources.append(_frame_source(frame, option_type, first_row))
            first_row += sources[-1].length
    if rows is not None:
        sources.append(_rows_source(rows, first_row))
    return sources


# -- one column --------------------------------------------------------------------------


Array = npt.NDArray[Any]


def _reason(error: Exception) -> str:
    """Why a value was refused: a ValidationError's reason; what a value's own methods
    raised, as a reason ("must ..." and "is ..." messages kept)."""
    if isinstance(error, ValidationError):
        return error.reason
    known = isinstance(error, ValueError | InvalidOperation | TypeError | OverflowError)
    if known and str(error).startswith(("must", "is ")):
        return str(error)
    return "is not valid" if known else f"is not valid ({type(error).__name__})"


def _each(
    cells: list[Any], positions: Iterable[int], read: Callable[[Any], Any]
) -> tuple[Array, Array]:
    """``read`` of each cell at ``positions``: (values, reasons), None where there is none."""
    values = np.full(len(cells), None, dtype=object)
    reasons = np.full(len(cells), None, dtype=object)
    for position in positions:
        try:
            values[position] = read(cells[position])
        except ValidationError as error:
            reasons[position] = error.reason
        except DatabaseError:
            raise
        except Exception as error:  # a hostile value's own methods may raise anything
            reasons[position] = _reason(error)
    return values, reasons


class _Column:
    """A field's column of one source: its cells, which are missing, and (for a real
    numeric dtype) its values as float64."""

    def __init__(self, series: pd.Series, first_row: int) -> None:
        self.series = series
        dtype = series.dtype
        self.numeric = _numeric_dtype(dtype)
        self.integers = self.numeric and pd.api.types.is_integer_dtype(dtype)
        self.datetimes = pd.api.types.is_datetime64_any_dtype(dtype)
        self._cells: list[Any] | None = None
        if self.numeric:
            self.floats = series.to_numpy(dtype=np.float64)
            self.missing = np.isnan(self.floats)
        elif self.datetimes:
            self.floats = np.empty(0)
            self.missing = series.isna().to_numpy()
        else:
            self.floats = np.empty(0)
            self.missing = np.zeros(len(series), dtype=bool)
            position = 0
            try:
                for position, cell in enumerate(self.cells):
                    self.missing[position] = _missing(cell)
            except DatabaseError:
                raise
            except Exception as error:  # as unreadable_as says it, for the row
                reason = f"cannot be read ({type(error).__name__}: {error})"
                raise ValidationError(f"row {first_row + position}", "dict", reason) from error

    @property
    def cells(self) -> list[Any]:
        if self._cells is None:
            self._cells = self.series.tolist()
        return self._cells

    def given(self) -> Array:
        return np.flatnonzero(~self.missing)

    def cell(self, position: int) -> Any:
        """The cell as given (a numeric column's as a Python number), None if missing."""
        if self.missing[position]:
            return None
        if not (self.numeric or self.datetimes):
            return self.cells[position]
        value = self.series.iloc[position]
        return value.item() if isinstance(value, np.generic) else value


def _units_of(value: Any, field: str) -> int:
    """One cell of a decimal field in units of its column, by the one decimal policy
    (``validation.to_decimal``) with the feed's rounding, range unchecked."""
    if isinstance(value, np.generic):  # a NumPy scalar from a dict row: its Python value
        value = value.item()
    number = _DECIMAL_TYPES[field].coerce(value, field, rounding=FLOAT_SOURCE, bounded=False)
    if number is None:
        raise ValidationError(field, value, "is required")
    return int(number.scaleb(SCALES[field]))


def _decimal_column(column: _Column, field: str) -> tuple[Array, Array]:
    """A decimal field in units of its column's scale, and the reasons of the refused cells.

    yfinance's chains are float frames (``lastPrice`` 0.30000000000000004, greeks with
    15 digits): floats are read by ``FLOAT_SOURCE``, through their ``repr``, rounded
    half to even to the column's places (0.1234565 -> 0.123456, 1e-7 -> 0), vectorised
    (``scaled_units``, which agrees with ``to_decimal`` on every float). Any other cell
    (a Decimal, text, an int in an object column) goes through ``to_decimal``. NaN is
    missing, an infinity refused; the range is checked with the row's other rules.
    """
    length = len(column.missing)
    if column.numeric:
        floats_at = column.given()
        floats = column.floats[floats_at]
        others: list[int] = []
    else:
        cells = column.cells
        floats_at = np.array(
            [p for p in column.given().tolist() if type(cells[p]) is float], dtype=np.intp
        )
        others = [p for p in column.given().tolist() if type(cells[p]) is not float]
        floats = np.array([cells[p] for p in floats_at.tolist()], dtype=np.float64)
    units, reasons = _each(column.cells if others else [None] * length, others, _cell_reader(field))
    scale = SCALES[field]
    infinite = np.isinf(floats)
    reasons[floats_at[infinite]] = "must be a finite number"
    finite_at, finite = floats_at[~infinite], floats[~infinite]
    digits = _DECIMAL_TYPES[field].precision - scale
    # Too many integer digits before rounding (10**digits is a float exactly, and a
    # float's repr is on the same side of it as the float), or after (it may carry).
    too_large = np.abs(finite) >= 10.0**digits
    too_large[~too_large] = (
        np.abs(scaled_units(finite[~too_large], scale, FLOAT_SOURCE)) >= _UNIT_LIMITS[field]
    )
    reasons[finite_at[too_large]] = f"has more than {digits} integer digits"
    fitting_at = finite_at[~too_large]
    if len(fitting_at):
        units[fitting_at] = scaled_integers(finite[~too_large], scale, FLOAT_SOURCE)
    return units, reasons


def _cell_reader(field: str) -> Callable[[Any], int]:
    return lambda value: _units_of(value, field)


def _whole(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a whole number")
    number = float(value)
    if not number.is_integer():
        raise ValueError("must be a whole number")
    return int(number)


def _count_column(column: _Column) -> tuple[Array, Array]:
    """A count (volume, open interest) as whole numbers, and the reasons of the refused."""
    length = len(column.missing)
    if not column.numeric:
        return _each(column.cells, column.given().tolist(), _whole)
    counts = np.full(length, None, dtype=object)
    reasons = np.full(length, None, dtype=object)
    if column.integers:
        counts[:] = column.cells  # exact ints, any size
        return counts, reasons
    floats = column.floats
    with np.errstate(invalid="ignore"):
        fractional = ~column.missing & (~np.isfinite(floats) | (np.floor(floats) != floats))
    reasons[fractional] = "must be a whole number"
    whole_at = np.flatnonzero(~column.missing & ~fractional)
    whole = floats[whole_at]
    small = np.abs(whole) < 2.0**63
    if small.any():
        counts[whole_at[small]] = whole[small].astype(np.int64).tolist()
    for position in whole_at[~small].tolist():
        counts[position] = int(floats[position])
    return counts, reasons


def _timestamp(value: Any) -> dt.datetime:
    stamp = pd.Timestamp(value)
    return to_utc(stamp.to_pydatetime(), "last_trade_date")


def _timestamp_column(column: _Column) -> tuple[Array, Array]:
    """Last trade times as UTC datetimes (naive ones taken as UTC)."""
    if not column.datetimes:
        return _each(column.cells, column.given().tolist(), _timestamp)
    series = column.series
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        utc = series.dt.tz_convert("UTC")
    else:
        utc = series.dt.tz_localize("UTC")
    # A time with nanoseconds goes the cell's own way (pandas warns that they are dropped).
    exact = ~column.missing & (utc.dt.nanosecond.to_numpy() == 0)
    stamps, reasons = _each(column.cells, np.flatnonzero(~column.missing & ~exact), _timestamp)
    exact_at = np.flatnonzero(exact)
    if len(exact_at):  # datetimes in datetime.UTC, as to_utc gives them
        stamps[exact_at] = pd.DatetimeIndex(utc.iloc[exact_at]).to_pydatetime()
    return stamps, reasons


def _option_type(value: Any) -> OptionType:
    kind = _label(value)
    return OptionType({"C": "call", "P": "put"}.get(kind.upper(), kind.lower()))


def _truthy(value: Any) -> bool:
    return bool(value)


def _expiration(value: Any) -> dt.date:
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        value = pd.Timestamp(value).date()
    return to_expiration(value, "expiration")


# -- the checks --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    underlying: str
    expiration: dt.date | None
    underlying_price: Any  # the argument, as given
    underlying_units: int | None
    underlying_reason: str | None


# (rows, field, reason per row or one for all, value reported where the row has none)
_Problem = tuple[Array, str, "Array | str", Any]


def _check_source(
    source: _Source, context: _Context
) -> tuple[pd.DataFrame, list[RejectedContract]]:
    """The valid contracts of one source, and its rejected rows (each with its first
    problem, in the order below: the order a contract's values are read in)."""
    length = source.length
    columns = {field: _Column(series, source.first_row) for field, series in source.columns.items()}
    nothing = np.full(length, None, dtype=object)
    problems: list[_Problem] = []

    # The contract symbol, if given: an OCC symbol, read into its parts.
    given = np.full(length, None, dtype=object)
    parsed = np.zeros(length, dtype=bool)
    parts = np.full((length, 4), None, dtype=object)  # root, expiry, type, strike
    if "contract_symbol" in columns:
        symbols = columns["contract_symbol"]
        given[:] = [
            None if missing or not isinstance(cell, str) else exact_str(cell).strip().upper()
            for cell, missing in zip(symbols.cells, symbols.missing.tolist(), strict=True)
        ]
        matches = [None if g is None else OCC_SYMBOL.fullmatch(g) for g in given.tolist()]
        parsed[:] = [match is not None for match in matches]
        at = np.flatnonzero(parsed)
        if len(at):
            parts[at] = [matches[p].groups() for p in at.tolist()]  # type: ignore[union-attr]
        problems.append((~symbols.missing & ~parsed, "contract_symbol", _SYMBOL_REASON, None))
    roots, expiries, letters, strikes = parts[:, 0], parts[:, 1], parts[:, 2], parts[:, 3]

    # The numbers.
    values: dict[str, Array] = {}
    for field in DECIMAL_FIELDS:
        if field in columns:
            values[field], reasons = _decimal_column(columns[field], field)
            problems.append((reasons != None, field, reasons, None))  # noqa: E711
        else:
            values[field] = nothing.copy()
    for field in _COUNTS:
        if field in columns:
            values[field], reasons = _count_column(columns[field])
            problems.append((reasons != None, field, reasons, None))  # noqa: E711
        else:
            values[field] = nothing.copy()
    strike = values["strike"]
    problems.append((strike == None, "strike", "is required", None))  # noqa: E711

    # The option type: the row's, else its frame's, else the symbol's.
    kinds, reasons = nothing.copy(), nothing.copy()
    if "option_type" in columns:
        column = columns["option_type"]
        truthy, reasons = _each(column.cells, column.given().tolist(), _truthy)
        chosen = np.flatnonzero(truthy == True).tolist()  # noqa: E712
        kinds, chosen_reasons = _each(column.cells, chosen, _option_type)
        reasons = np.where(chosen_reasons == None, reasons, chosen_reasons)  # noqa: E711
    unread = (kinds == None) & (reasons == None)  # noqa: E711
    if source.option_type is not None:
        kinds[unread] = source.option_type
    else:
        for letter, kind in (("C", OptionType.CALL), ("P", OptionType.PUT)):
            kinds[unread & (letters == letter)] = kind
        reasons[unread & ~parsed] = _FROM_SYMBOL
    problems.append((reasons != None, "option_type", reasons, None))  # noqa: E711

    # The expiration: the row's, else the argument, else the symbol's.
    expirations, reasons = nothing.copy(), nothing.copy()
    if "expiration" in columns:
        column = columns["expiration"]
        truthy, reasons = _each(column.cells, column.given().tolist(), _truthy)
        chosen = np.flatnonzero(truthy == True).tolist()  # noqa: E712
        expirations, chosen_reasons = _each(column.cells, chosen, _expiration)
        reasons = np.where(chosen_reasons == None, reasons, chosen_reasons)  # noqa: E711
    unread = (expirations == None) & (reasons == None)  # noqa: E711
    symbol_days, symbol_day_reasons = _symbol_days(expiries)
    if context.expiration is not None:
        expirations[unread] = context.expiration
    else:
        expirations[unread] = symbol_days[unread]
        reasons[unread] = np.where(parsed[unread], symbol_day_reasons[unread], _FROM_SYMBOL)
    problems.append((reasons != None, "expiration", reasons, None))  # noqa: E711

    stamps = nothing.copy()
    if "last_trade_date" in columns:
        stamps, reasons = _timestamp_column(columns["last_trade_date"])
        problems.append((reasons != None, "last_trade_date", reasons, None))  # noqa: E711

    # The underlying's price, for the rows without their own.
    if context.underlying_price is not None:
        without = values["underlying_price"] == None  # noqa: E711
        if "underlying_price" in columns:
            without &= columns["underlying_price"].missing
        if context.underlying_reason is not None:
            problem = (
                without,
                "underlying_price",
                context.underlying_reason,
                context.underlying_price,
            )
            problems.append(problem)
        else:
            values["underlying_price"][without] = context.underlying_units

    # The ranges.
    for field in _NOT_NEGATIVE:
        problems.append((_compared(values[field], np.less, 0), field, "must be at least 0", None))
    zero = _compared(strike, np.equal, 0)
    problems.append((zero, "strike", "must be greater than 0", None))

    # A given symbol names the row's contract: root, expiry, type and strike.
    problems += _symbol_problems(
        context, parsed, roots, symbol_days, symbol_day_reasons, expirations, kinds, letters
    )
    # Decimal(symbol strike) / 1000 != strike, in units of the strike's scale.
    other_strike = np.zeros(length, dtype=bool)
    shown = nothing.copy()
    at = np.flatnonzero(parsed & (strike != None))  # noqa: E711
    factor = 10 ** SCALES["strike"]
    other_strike[at] = [
        int(digits) * factor != units * 1000
        for digits, units in zip(strikes[at].tolist(), strike[at].tolist(), strict=True)
    ]
    for position in np.flatnonzero(other_strike).tolist():
        row_strike = Decimal(strike[position]).scaleb(-SCALES["strike"])
        shown[position] = f"is not for the row's strike {row_strike}"
    problems.append((other_strike, "contract_symbol", shown, None))

    # What BIGINT holds.
    low, high = BIGINT_RANGE
    for field in _COUNTS:
        beyond = _compared(values[field], np.greater, high)
        problems.append((beyond, field, f"must be between {low} and {high}", None))

    bad, rejected = _rejected(source, columns, given, problems)
    good = np.flatnonzero(~bad)
    symbols_out = [
        given[p] if parsed[p] else _derived(context.underlying, expirations[p], kinds[p], strike[p])
        for p in good.tolist()
    ]
    cells: dict[str, Any] = {
        "contract_symbol": symbols_out,
        "option_type": kinds[good],
        "expiration": expirations[good],
        "last_trade_date": stamps[good],
        **{field: values[field][good] for field in (*_COUNTS, *DECIMAL_FIELDS)},
    }
    contracts = pd.DataFrame(
        {
            "row": pd.Series(good + source.first_row, dtype=np.int64),
            # object columns: values as they are (pandas would make OptionTypes str).
            **{name: pd.Series(cells[name], dtype=object) for name in CONTRACT_FIELDS},
        }
    )
    return contracts, rejected


def _compared(values: Array, compare: Any, bound: int) -> Array:
    """``compare(value, bound)`` for each value that is there (False for None)."""
    there = values != None  # noqa: E711
    result = np.zeros(len(values), dtype=bool)
    result[there] = compare(values[there], bound).astype(bool)
    return result


def _symbol_days(expiries: Array) -> tuple[Array, Array]:
    """Each symbol's expiry as a date, or the reason it is none (13 months...)."""
    days = np.full(len(expiries), None, dtype=object)
    reasons = np.full(len(expiries), None, dtype=object)
    known: dict[str, tuple[dt.date | None, str | None]] = {}
    for position in np.flatnonzero(expiries != None).tolist():  # noqa: E711
        digits = expiries[position]
        if digits not in known:
            try:
                known[digits] = (_symbol_expiry(digits), None)
            except Exception as error:
                known[digits] = (None, _reason(error))
        days[position], reasons[position] = known[digits]
    return days, reasons


def _symbol_problems(
    context: _Context,
    parsed: Array,
    roots: Array,
    symbol_days: Array,
    symbol_day_reasons: Array,
    expirations: Array,
    kinds: Array,
    letters: Array,
) -> list[_Problem]:
    length = len(parsed)
    root = occ_root(context.underlying)
    at = np.flatnonzero(parsed)
    foreign = np.zeros(length, dtype=bool)
    foreign[at] = [not symbol_root.startswith(root) for symbol_root in roots[at].tolist()]
    # The symbol's expiry is no date (13 months...), or not the row's.
    unreadable_day = parsed & (symbol_day_reasons != None)  # noqa: E711
    known = parsed & ~unreadable_day & (expirations != None)  # noqa: E711
    other_day = unreadable_day.copy()
    other_day[known] = symbol_days[known] != expirations[known]
    day_reasons = symbol_day_reasons.copy()
    for position in np.flatnonzero(other_day & ~unreadable_day).tolist():
        day_reasons[position] = f"is not for the row's expiration {expirations[position]}"
    typed = parsed & (kinds != None)  # noqa: E711
    other_type = np.zeros(length, dtype=bool)
    other_type[typed] = [
        letter != _LETTERS[kind]
        for letter, kind in zip(letters[typed].tolist(), kinds[typed].tolist(), strict=True)
    ]
    type_reasons = np.full(length, None, dtype=object)
    for position in np.flatnonzero(other_type).tolist():
        type_reasons[position] = f"is not a {kinds[position].value}, as its row is"
    reason = f"is not a contract of {context.underlying}"
    return [
        (foreign, "contract_symbol", reason, None),
        (other_day, "contract_symbol", day_reasons, None),
        (other_type, "contract_symbol", type_reasons, None),
    ]


def _derived(underlying: str, expiration: dt.date, kind: OptionType, strike_units: int) -> str:
    thousandths = strike_units * 1000 // 10 ** SCALES["strike"]
    return f"{occ_root(underlying)}{expiration:%y%m%d}{_LETTERS[kind]}{thousandths:08d}"


def _rejected(
    source: _Source, columns: dict[str, _Column], given: Array, problems: list[_Problem]
) -> tuple[Array, list[RejectedContract]]:
    """(mask of the bad rows, one report per bad row: its first problem, in row order)."""
    length = source.length
    first = np.full(length, -1, dtype=np.intp)
    for number, (mask, _field, _reasons, _value) in enumerate(problems):
        first[mask & (first < 0)] = number
    rejected: list[RejectedContract] = []
    for position in np.flatnonzero(first >= 0).tolist():
        mask, field, reasons, fallback = problems[first[position]]
        reason = reasons if isinstance(reasons, str) else reasons[position]
        column = columns.get(field)
        value = column.cell(position) if column is not None else None
        rejected.append(
            RejectedContract(
                source.first_row + position,
                given[position],
                field,
                fallback if value is None else value,
                reason,
            )
        )
    return first >= 0, rejected


def check_chain(
    ticker: str,
    *,
    calls: pd.DataFrame | None = None,
    puts: pd.DataFrame | None = None,
    rows: Iterable[Mapping[str, Any]] | None = None,
    expiration: dt.date | None = None,
    underlying_price: Any = None,
) -> CheckedChain:
    """The chain's valid contracts (see :class:`CheckedChain`) and its rejected rows.

    Rows are numbered across the calls, then the puts, then the dict rows. A
    contract symbol that appears more than once among the valid contracts is
    reported at each repetition (its own row number)."""
    underlying = normalize_ticker(ticker)
    if expiration is not None:
        expiration = to_expiration(expiration, "expiration")
    units: int | None = None
    reason: str | None = None
    if underlying_price is not None:
        units_of, reasons = _each([underlying_price], [0], _cell_reader("underlying_price"))
        units, reason = units_of[0], reasons[0]
    context = _Context(underlying, expiration, underlying_price, units, reason)
    parts: list[pd.DataFrame] = []
    rejected: list[RejectedContract] = []
    for source in _sources(calls, puts, rows):
        contracts, refused = _check_source(source, context)
        parts.append(contracts)
        rejected += refused
    if parts:
        contracts = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    else:
        contracts = pd.DataFrame({name: [] for name in ("row", *CONTRACT_FIELDS)}, dtype=object)
    repeated = contracts["contract_symbol"].duplicated(keep="first").to_numpy()
    for position in np.flatnonzero(repeated).tolist():
        symbol = contracts["contract_symbol"].iloc[position]
        row = int(contracts["row"].iloc[position])
        reason_text = "appears more than once in the chain"
        rejected.append(RejectedContract(row, symbol, "contract_symbol", symbol, reason_text))
    return CheckedChain(underlying, contracts, rejected)


def prepare_contracts(
    ticker: str,
    *,
    calls: pd.DataFrame | None = None,
    puts: pd.DataFrame | None = None,
    rows: Iterable[Mapping[str, Any]] | None = None,
    expiration: dt.date | None = None,
    underlying_price: Any = None,
) -> tuple[list[dict[str, Any]], list[RejectedContract]]:
    """Checked contract values ready for ``options_data`` (model values), and the
    rejected rows: :func:`check_chain` as dicts."""
    checked = check_chain(
        ticker,
        calls=calls,
        puts=puts,
        rows=rows,
        expiration=expiration,
        underlying_price=underlying_price,
    )
    return checked.values(), checked.rejected
