"""Option chains in, checked: yfinance ``option_chain()`` frames or dict rows become rows.

Contract symbols follow the OCC format (``NVDA241004C00120000``: root, expiry
YYMMDD, C or P, strike x 1000 in 8 digits). A missing symbol is derived from the
underlying, expiry, type and strike; a missing expiry or type is read from the
symbol. A given symbol must agree with its row: its root starts with the
underlying's (``SPXW`` for ``^SPX``, ``AAPL1`` for an adjusted AAPL contract), and
its expiry, type and strike are the row's. The two-digit year limits expirations
to 2000-2099.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import pandas as pd

from database.exceptions import DatabaseError, ValidationError
from database.models import OptionsData, OptionType
from database.types import ExactDecimal
from database.validation import (
    FLOAT_SOURCE,
    exact_str,
    normalize_ticker,
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


def _check_symbol(parsed: re.Match[str], underlying: str, values: dict[str, Any]) -> None:
    """A given symbol names this row's contract: same root, expiry, type and strike."""
    if not parsed["root"].startswith(occ_root(underlying)):
        raise ValueError(f"is not a contract of {underlying}")
    if _symbol_expiry(parsed["expiry"]) != values["expiration"]:
        raise ValueError(f"is not for the row's expiration {values['expiration']}")
    letter = "C" if values["option_type"] is OptionType.CALL else "P"
    if parsed["type"] != letter:
        raise ValueError(f"is not a {values['option_type'].value}, as its row is")
    if Decimal(int(parsed["strike"])) / 1000 != values["strike"]:
        raise ValueError(f"is not for the row's strike {values['strike']}")


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


_DECIMAL_TYPES = {field: _column_type(field) for field in _PRICES + _RATIOS}


def _decimal(value: Any, field: str) -> Decimal:
    """A chain's number as its column holds it, by the one decimal policy
    (``validation.to_decimal``) with this source's named rounding.

    yfinance's chains are float frames (``lastPrice`` 0.30000000000000004, greeks with
    15 digits), so they are read with ``FLOAT_SOURCE``: through ``repr``, then rounded
    half to even to the column's places (0.1234565 -> 0.123456, 1e-7 -> 0). The range
    is checked below, with the row's other rules; NaN is missing (see ``_missing``),
    an infinity refused.
    """
    if isinstance(value, np.generic):  # a NumPy scalar from a dict row: its Python value
        value = value.item()
    number = _DECIMAL_TYPES[field].coerce(value, field, rounding=FLOAT_SOURCE, bounded=False)
    if number is None:
        raise ValidationError(field, value, "is required")
    return number


def _whole(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a whole number")
    number = float(value)
    if not number.is_integer():
        raise ValueError("must be a whole number")
    return int(number)


def _timestamp(value: Any) -> dt.datetime:
    stamp = pd.Timestamp(value)
    return to_utc(stamp.to_pydatetime(), "last_trade_date")


def _as_stored(values: dict[str, Any]) -> dict[str, Any]:
    """The values as the ``options_data`` columns hold them, through the model's own
    checks (lengths, NUL, precision, ranges), so both backends get the same values."""
    contract = OptionsData(**values)
    return {name: getattr(contract, name) for name in values}


def _records(
    calls: pd.DataFrame | None, puts: pd.DataFrame | None, rows: Iterable[Mapping[str, Any]] | None
) -> list[tuple[OptionType | None, dict[str, Any]]]:
    records: list[tuple[OptionType | None, dict[str, Any]]] = []
    for option_type, frame in ((OptionType.CALL, calls), (OptionType.PUT, puts)):
        name = option_type.value + "s"
        if frame is not None and not isinstance(frame, pd.DataFrame):
            raise ValidationError(name, type(frame).__name__, "must be a DataFrame")
        if frame is not None:
            with unreadable_as(name, type(frame).__name__, "cannot be read as an option chain"):
                records += [
                    (option_type, {_label(k): v for k, v in row.items()})
                    for row in frame.to_dict(orient="records")
                ]
    if rows is None:
        return records
    if isinstance(rows, str | bytes | Mapping) or not isinstance(rows, Iterable):
        raise ValidationError("rows", type(rows).__name__, "must be an iterable of dict rows")
    with unreadable_as("rows", type(rows).__name__, "cannot be read as dict rows"):
        for number, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise ValidationError(f"rows[{number}]", type(row).__name__, "must be a dict")
            with unreadable_as(f"rows[{number}]", type(row).__name__, "cannot be read as a dict"):
                records.append((None, dict(row)))
    return records


def _label(key: Any) -> str:
    return exact_str(key) if isinstance(key, str) else str(key)


def _canonical(row: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in row.items():
        name = _label(key).strip()
        lowered = name.lower()
        if lowered in _DROPPED or lowered.startswith("unnamed:"):
            continue
        if lowered not in _ALIASES:
            raise ValidationError(name, name, "is not an option-chain column")
        clean[_ALIASES[lowered]] = None if _missing(value) else value
    return clean


def prepare_contracts(
    ticker: str,
    *,
    calls: pd.DataFrame | None = None,
    puts: pd.DataFrame | None = None,
    rows: Iterable[Mapping[str, Any]] | None = None,
    expiration: dt.date | None = None,
    underlying_price: Any = None,
) -> tuple[list[dict[str, Any]], list[RejectedContract]]:
    """Checked contract values ready for ``options_data``, and the rejected rows."""
    underlying = normalize_ticker(ticker)
    if expiration is not None:
        expiration = to_expiration(expiration, "expiration")
    contracts: list[dict[str, Any]] = []
    rejected: list[RejectedContract] = []
    for number, (frame_type, raw) in enumerate(_records(calls, puts, rows)):
        with unreadable_as(f"row {number}", type(raw).__name__, "cannot be read"):
            row = _canonical(raw)
        given = row.get("contract_symbol")
        symbol = exact_str(given).strip().upper() if isinstance(given, str) else None
        parsed = OCC_SYMBOL.fullmatch(symbol) if symbol else None
        field = "contract_symbol"
        try:
            if given is not None and parsed is None:
                raise ValueError("is not an OCC contract symbol such as NVDA241004C00120000")
            values: dict[str, Any] = {"ticker": underlying}
            for field in _PRICES + _RATIOS:
                if row.get(field) is not None:
                    values[field] = _decimal(row[field], field)
            for field in _COUNTS:
                if row.get(field) is not None:
                    values[field] = _whole(row[field])
            field = "strike"
            if values.get("strike") is None:
                raise ValueError("is required")
            field = "option_type"
            kind = row.get("option_type") or frame_type or (parsed and parsed["type"])
            if kind is None:
                raise ValueError("is required (or a contract symbol to read it from)")
            kind = _label(kind)
            values["option_type"] = OptionType(
                {"C": "call", "P": "put"}.get(kind.upper(), kind.lower())
            )
            field = "expiration"
            expiry = row.get("expiration") or expiration
            if expiry is None and parsed:
                expiry = _symbol_expiry(parsed["expiry"])
            if expiry is None:
                raise ValueError("is required (or a contract symbol to read it from)")
            if not isinstance(expiry, dt.date) or isinstance(expiry, dt.datetime):
                expiry = pd.Timestamp(expiry).date()
            values["expiration"] = to_expiration(expiry, "expiration")
            field = "last_trade_date"
            if row.get("last_trade_date") is not None:
                values["last_trade_date"] = _timestamp(row["last_trade_date"])
            if underlying_price is not None and "underlying_price" not in values:
                field = "underlying_price"
                values["underlying_price"] = _decimal(underlying_price, field)
            field = "contract_symbol"
            values["contract_symbol"] = symbol or occ_symbol(
                underlying, values["expiration"], values["option_type"], values["strike"]
            )
            for field in (*_PRICES, *_RATIOS[:1], *_COUNTS):
                if values.get(field) is not None and values[field] < 0:
                    raise ValueError("must be at least 0")
            if values["strike"] == 0:
                field = "strike"
                raise ValueError("must be greater than 0")
            if parsed is not None:
                field = "contract_symbol"
                _check_symbol(parsed, underlying, values)
            values = _as_stored(values)
        except ValidationError as error:
            value = row.get(error.field, error.value)
            rejected.append(RejectedContract(number, symbol, error.field, value, error.reason))
            continue
        except DatabaseError:
            raise
        except Exception as error:  # a hostile value's own methods may raise anything
            known = isinstance(error, ValueError | InvalidOperation | TypeError | OverflowError)
            if known and str(error).startswith(("must", "is ")):
                reason = str(error)
            else:
                reason = "is not valid" if known else f"is not valid ({type(error).__name__})"
            rejected.append(RejectedContract(number, symbol, field, row.get(field), reason))
            continue
        contracts.append(values)
    seen: set[str] = set()
    for number, values in enumerate(contracts):
        if values["contract_symbol"] in seen:
            rejected.append(
                RejectedContract(
                    number,
                    values["contract_symbol"],
                    "contract_symbol",
                    values["contract_symbol"],
                    "appears more than once in the chain",
                )
            )
        seen.add(values["contract_symbol"])
    return contracts, rejected
