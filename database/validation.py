"""Normalisers and validators shared by the models' attribute hooks and the types.

Each raises :class:`database.exceptions.ValidationError` naming the field and
the value, so bad input fails before anything reaches the database.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final

from email_validator import EmailNotValidError, validate_email

from database.exceptions import DatabaseError, ValidationError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

INTEGER_RANGE = (-(2**31), 2**31 - 1)
BIGINT_RANGE = (-(2**63), 2**63 - 1)
# Anything PostgreSQL's text cannot hold (NUL) or UTF-8 cannot encode (lone surrogates).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

# yfinance symbols: AAPL, BRK-B, BRK.B, ^GSPC, EURUSD=X, BTC-USD, ES=F, 0700.HK. ASCII
# only, matched before upper-casing: "\u00df".upper() is "SS", the dotless i's is "I".
_TICKER = re.compile(r"\^?[A-Za-z0-9]+(?:[.\-][A-Za-z0-9]+)*(?:=[A-Za-z0-9]+)?")
TICKER_MAX_LENGTH = 20
_ASCII_SPACE = " \t\n\r\x0b\x0c"
# JSON documents (preferences, metadata, parameters, cache payloads) nest at most this
# deep: far beyond any real document, far below the recursion limits of json, of the
# payload codec and of PostgreSQL's jsonb parser, so every backend gives one verdict.
MAX_JSON_DEPTH = 100


# -- exact built-in values --------------------------------------------------------------
# A subclass of str, int, dict or datetime may override any method (``strip`` that
# raises, comparisons that lie). These take the built-in value out of it through the
# built-in type's own slots, without calling anything the subclass defines.


def exact_str(value: str) -> str:
    """The exact ``str`` of a str (subclass): ``str.__str__`` copies the characters."""
    return value if type(value) is str else str.__str__(value)


def exact_int(value: int) -> int:
    return value if type(value) is int else int.__index__(value)


def exact_date(value: dt.date) -> dt.date:
    return value if type(value) is dt.date else dt.date.fromordinal(dt.date.toordinal(value))


def exact_datetime(value: dt.datetime) -> dt.datetime:
    """A plain datetime with the same fields (a pandas Timestamp loses its nanoseconds)."""
    if type(value) is dt.datetime:
        return value
    fields = ("year", "month", "day", "hour", "minute", "second", "microsecond", "tzinfo")
    # The C type's descriptors read the stored fields; a subclass's properties never run.
    values = [getattr(dt.datetime, name).__get__(value) for name in (*fields, "fold")]
    return dt.datetime(*values[:-1], fold=values[-1])


@contextmanager
def unreadable_as(field: str, value: Any, what: str) -> Iterator[None]:
    """Anything but a DatabaseError raised inside, while reading ``value``, as a
    ValidationError naming ``field`` and the exception's type: the last line behind
    the checks, for hostile objects whose methods raise whatever they like."""
    try:
        yield
    except DatabaseError:
        raise
    except Exception as error:
        raise ValidationError(field, value, f"{what} ({type(error).__name__}: {error})") from error


def to_text(value: Any, field: str, *, max_length: int | None = None) -> str:
    """A str that both backends store unchanged: no NUL, no lone surrogate, within the length.

    PostgreSQL refuses NUL in text, so it is refused on SQLite too: one verdict.
    """
    if not isinstance(value, str):
        raise ValidationError(field, value, "must be a string")
    text = exact_str(value)
    if _UNSTORABLE.search(text):
        raise ValidationError(
            field, value, "must not contain NUL characters or unpaired surrogates"
        )
    if max_length is not None and len(text) > max_length:
        raise ValidationError(field, value, f"is longer than {max_length} characters")
    return text


def to_bool(value: Any, field: str) -> bool:
    """Only True or False: ``""``, ``0`` or ``"yes"`` are not guessed at."""
    if not isinstance(value, bool):
        raise ValidationError(field, value, "must be True or False")
    return value


def to_int(value: Any, field: str, *, bounds: tuple[int, int] = BIGINT_RANGE) -> int:
    """A whole number (not a bool, not a float) that fits the column (INTEGER or BIGINT)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, value, "must be a whole number (int)")
    number = exact_int(value)  # an int subclass's comparisons may lie
    low, high = bounds
    if not low <= number <= high:
        raise ValidationError(field, value, f"must be between {low} and {high}")
    return number


def to_date(value: Any, field: str) -> dt.date:
    if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
        raise ValidationError(field, value, "must be a date (not a datetime)")
    return exact_date(value)


def to_uuid(value: Any, field: str = "id") -> uuid.UUID:
    """A UUID, or its text form."""
    if type(value) is uuid.UUID:
        return value
    if isinstance(value, uuid.UUID):
        # A subclass (asyncpg returns its own, a C type that does not fill the
        # pure-Python slot: reading that slot directly would crash) is read
        # through its public ``int``; whatever a hostile one does there is typed.
        with unreadable_as(field, value, "is not a readable UUID"):
            return uuid.UUID(int=exact_int(value.int))
    if isinstance(value, str):
        try:
            return uuid.UUID(exact_str(value))
        except ValueError:
            pass
    raise ValidationError(field, value, "is not a UUID")


def normalize_ticker(value: Any, field: str = "ticker") -> str:
    """Stripped of ASCII spaces and upper-cased, after the (ASCII) pattern is checked."""
    if not isinstance(value, str):
        raise ValidationError(field, value, "must be a string")
    ticker = exact_str(value).strip(_ASCII_SPACE)
    if not ticker or len(ticker) > TICKER_MAX_LENGTH or not _TICKER.fullmatch(ticker):
        raise ValidationError(field, value, "is not a ticker symbol such as AAPL, BRK-B or ^GSPC")
    return ticker.upper()


def normalize_email(value: Any, field: str = "email") -> str:
    text = to_text(value, field)
    try:
        checked = validate_email(text.strip(), check_deliverability=False)
    except (EmailNotValidError, UnicodeError) as error:
        raise ValidationError(field, value, str(error)) from None
    return checked.normalized.lower()


# -- decimals: the one policy ------------------------------------------------------------
#
# Every value that becomes an exact-decimal model value goes through ``to_decimal``:
# model attributes (``ExactDecimal.coerce``), criteria and bound parameters
# (``ExactDecimal.coerce(..., bounded=False)``), repository create and update (through
# the models), option chains (``database.options``), and, vectorised, float columns such
# as the daily bars (:func:`scaled_units`, :func:`scaled_integers`). One policy:
#
# - A float is read through ``repr`` (its shortest round-trip text: ``0.1`` is
#   ``Decimal('0.1')``), never through ``Decimal(float)``'s exact binary expansion
#   (``0.1000000000000000055511151231257827...``).
# - By default (``EXACT``) a value with more decimal places than the column holds is
#   refused with a ValidationError naming the field and the value: money is never
#   rounded silently.
# - A source whose values are known to be approximations says so by passing a named
#   rounding (``FLOAT_SOURCE``), at that source and nowhere else.


class Rounding(enum.Enum):
    """What :func:`to_decimal` does with a value that has more places than the column.

    ``EXACT``: refuse it (ValidationError naming the field and the value).
    ``HALF_EVEN``: round it to the column's places, half to even (banker's rounding,
    ``decimal.ROUND_HALF_EVEN``, the IEEE 754 default and what ``np.rint`` does).
    ``HALF_UP``: round it, half away from zero (``decimal.ROUND_HALF_UP``), for figures
    computed from exact ones (an average cost), as accountants round.
    """

    EXACT = "EXACT"
    HALF_EVEN = ROUND_HALF_EVEN
    HALF_UP = ROUND_HALF_UP


EXACT: Final = Rounding.EXACT
"""Domain input (portfolios, positions, transactions, analyses, criteria): extra places
are refused, never rounded."""

FLOAT_SOURCE: Final = Rounding.HALF_EVEN
"""Floats from a market-data feed such as yfinance (prices, option chains, greeks).

They are binary approximations of decimal prices (``209.419998000001`` for
``209.419998``, ``0.30000000000000004`` for ``0.3``): read through ``repr``, they are
rounded half to even to the column's places (``0.1234565`` -> ``0.123456``,
``0.1234575`` -> ``0.123458``, ``1e-7`` -> ``0``). Half to even is also what
``np.rint`` does, so the vectorised paths (:func:`scaled_units`,
:func:`scaled_integers`) state the same policy; they round the value's ``repr``, not
the binary product ``value * 10**scale``, so they agree with :func:`to_decimal` on
every value."""

COMPUTED: Final = Rounding.HALF_UP
"""Figures computed from exact values that must fit a column (an average cost, a total
divided by shares): rounded once, half away from zero."""


def to_decimal(
    value: Any,
    field: str,
    *,
    scale: int,
    precision: int,
    minimum: Decimal | None = None,
    maximum: Decimal | None = None,
    rounding: Rounding = EXACT,
) -> Decimal:
    """The one way input becomes an exact decimal that fits NUMERIC(precision, scale).

    Accepts a Decimal, an int, a float (through ``repr``) or numeric text; not a bool.
    A value with more than ``scale`` decimal places is refused unless ``rounding``
    names how its source is rounded (see :data:`EXACT`, :data:`FLOAT_SOURCE`); then
    the integer digits (at most ``precision - scale``, checked after rounding, which
    may carry) and the range (``minimum``, ``maximum``) are checked. NaN and
    infinities are refused; ``-0`` is held as ``0``, as both backends store it.
    Every refusal is a :class:`ValidationError` naming ``field`` and ``value``.
    """
    if not isinstance(rounding, Rounding):
        raise TypeError(f"rounding must be a Rounding, not {rounding!r}")
    number = parse_decimal(value, field)
    integer_digits = precision - scale
    if number and number.adjusted() >= integer_digits:
        raise ValidationError(field, value, f"has more than {integer_digits} integer digits")
    rounded = _rounded(number, scale, precision, rounding)
    if rounding is EXACT and rounded != number:
        raise ValidationError(field, value, f"has more than {scale} decimal places")
    if rounded and rounded.adjusted() >= integer_digits:  # 999.9999995 rounds up to 1000
        raise ValidationError(field, value, f"has more than {integer_digits} integer digits")
    # -0 is stored as 0 on both backends: hold it as 0 too.
    rounded = rounded.copy_abs() if rounded.is_zero() else rounded
    if minimum is not None and rounded < minimum:
        raise ValidationError(field, value, f"must be at least {minimum}")
    if maximum is not None and rounded > maximum:
        raise ValidationError(field, value, f"must be at most {maximum}")
    return rounded


def parse_decimal(value: Any, field: str) -> Decimal:
    """The exact decimal a Decimal, int, float (its ``repr``) or numeric text stands for;
    finite; any number of places. :func:`to_decimal`'s first step, alone for a value
    that is compared, never stored (an exact comparison needs no rounding)."""
    if not isinstance(value, Decimal | int | float | str) or isinstance(value, bool):
        raise ValidationError(field, value, "must be a number")
    try:
        if isinstance(value, float):
            # float.__repr__: numpy's float64 repr is "np.float64(0.1)".
            number = Decimal(float.__repr__(value))
        elif isinstance(value, str):
            number = Decimal(exact_str(value))
        elif isinstance(value, int):
            number = Decimal(exact_int(value))
        else:
            number = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValidationError(field, value, "must be a number") from None
    if not number.is_finite():
        raise ValidationError(field, value, "must be a finite number")
    return number


def _rounded(number: Decimal, scale: int, precision: int, rounding: Rounding) -> Decimal:
    """``number`` to ``scale`` places, rounded as ``rounding`` says (half to even for
    EXACT, whose caller refuses any change). ``number`` has at most ``precision - scale``
    integer digits, so the result has at most ``precision + 1`` digits (a carry)."""
    mode = ROUND_HALF_EVEN if rounding is EXACT else rounding.value
    context = Context(prec=precision + 1, rounding=mode, traps=[InvalidOperation])
    return number.quantize(Decimal(1).scaleb(-scale), context=context)


# -- the same policy, vectorised (for float columns of market data) -----------------------

# Beyond this many units a float64 holds only whole units (or fewer): every such value is
# rounded through its repr, one by one.
_WHOLE_UNITS = 2.0**52


def scaled_units(
    values: npt.ArrayLike, scale: int, rounding: Rounding = FLOAT_SOURCE
) -> npt.NDArray[np.float64]:
    """Float values in units of ``10**-scale`` (millionths for scale 6), rounded to whole
    units as :func:`to_decimal` rounds them: the vectorised twin of
    ``to_decimal(v, ..., scale=scale, rounding=FLOAT_SOURCE) * 10**scale``.

    ``np.rint(values * 10**scale)`` alone is half to even too, but of the binary
    product, not of the value: ``523.8320965 * 1e6`` is ``523832096.50000006``, which
    ``np.rint`` makes 523832097 where the policy (``repr`` first, then half to even)
    gives 523832096. So the product is rounded with ``np.rint`` only where it is more
    than a few ulps from a half unit (the repr and the binary value then round alike);
    the few values near a half unit, and those beyond 2**52 units, are rounded through
    their ``repr``, one by one. NaN and infinities are returned as they are: whether
    they are missing or refused is the caller's decision, as are the bounds.
    Above 2**53 units a float64 cannot hold every whole number: use
    :func:`scaled_integers` for exact integers.
    """
    import numpy as np

    if rounding is EXACT:
        raise ValueError("EXACT refuses extra places rather than rounding: use to_decimal")
    floats = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        product = floats * 10.0**scale
        units = np.rint(product)
        magnitude = np.abs(product)
        # The repr and the product differ by at most 1.5 ulps of the product, and an ulp
        # is at most 2**-52 of it: 2**-50 of it is a margin to spare.
        doubtful = np.abs(np.abs(product - units) - 0.5) <= magnitude * 2.0**-50
        doubtful |= magnitude >= _WHOLE_UNITS
    for position in np.flatnonzero(doubtful):
        value = float(floats.flat[position])
        if math.isfinite(value):
            units.flat[position] = float(_repr_units(value, scale, rounding))
    return units


def scaled_integers(
    values: npt.ArrayLike, scale: int, rounding: Rounding = FLOAT_SOURCE
) -> list[int | None]:
    """:func:`scaled_units` as exact Python ints (what SQLite stores, what the bulk paths
    stage), None for NaN; exact beyond 2**53 units too. Infinities are refused
    (ValueError): check them before."""
    import numpy as np

    floats = np.asarray(values, dtype=np.float64).ravel()
    units = scaled_units(floats, scale, rounding)
    if np.isinf(units).any():
        raise ValueError("infinite values have no units")
    missing = np.isnan(units)
    whole = np.abs(units) >= _WHOLE_UNITS  # float64 may not hold them: one by one
    cells: list[int | None] = np.where(missing | whole, 0.0, units).astype(np.int64).tolist()
    for position in np.flatnonzero(whole):
        cells[position] = _repr_units(float(floats[position]), scale, rounding)
    for position in np.flatnonzero(missing):
        cells[position] = None
    return cells


def _repr_units(value: float, scale: int, rounding: Rounding) -> int:
    """One finite float in whole units of ``10**-scale``, through its repr (the policy)."""
    number = Decimal(float.__repr__(value))
    digits = max(number.adjusted() + 1, 0) + scale + 1
    return int(_rounded(number, scale, digits, rounding).scaleb(scale))


def to_utc(value: Any, field: str) -> dt.datetime:
    """Aware datetimes are converted to UTC; naive ones are taken to be UTC already
    (``datetime.utcnow()`` is common in callers)."""
    if type(value) is dt.datetime and value.tzinfo is dt.UTC and not value.fold:
        return value  # already an exact UTC datetime: the common case, in bulk
    if not isinstance(value, dt.datetime) or _is_nat(value):
        raise ValidationError(field, value, "must be a datetime")
    moment = exact_datetime(value)
    try:
        # The time zone's own code runs here: it may raise anything, or return a str.
        offset = moment.utcoffset()
    except Exception as error:
        raise ValidationError(
            field, value, f"has a time zone that fails ({type(error).__name__})"
        ) from None
    naive = moment.replace(tzinfo=None)
    if offset is None:
        return naive.replace(tzinfo=dt.UTC)
    try:
        return (naive - dt.timedelta.__add__(offset, dt.timedelta(0))).replace(tzinfo=dt.UTC)
    except OverflowError:
        raise ValidationError(field, value, "is outside the years 1 to 9999 in UTC") from None


def _is_nat(value: dt.datetime) -> bool:
    """pandas' NaT: a datetime that is not equal to itself (without trusting the
    comparisons of any other subclass)."""
    return type(value).__name__ == "NaTType" and value != value


def to_json_object(value: Any, field: str) -> dict[str, Any] | None:
    """Accept a dict or a JSON string holding an object; None stays None.

    Returns a copy made of exact built-in values (dict, list, str, int, float, bool,
    None; tuples become lists), at most ``MAX_JSON_DEPTH`` deep.
    """
    if value is None:
        return None
    if isinstance(value, str | bytes):
        try:
            value = json.loads(exact_str(value) if isinstance(value, str) else bytes(value))
        except (ValueError, RecursionError) as error:
            raise ValidationError(field, value, f"is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise ValidationError(field, value, "must be a JSON object (a dict)")
    document = _plain_json(value, field)
    try:
        json.dumps(document, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as error:
        raise ValidationError(field, value, f"is not JSON-serialisable: {error}") from None
    return document


def _plain_json(value: dict[Any, Any], field: str) -> dict[str, Any]:
    """An exact copy of a JSON document, built without recursion (so a deep document
    is refused, not a RecursionError) and without calling any subclass's methods."""
    root: dict[Any, Any] = {}
    # (source container, its copy, depth of the copy)
    pending: list[tuple[Any, Any, int]] = [(value, root, 1)]
    while pending:
        source, copy, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValidationError(
                field, value, f"is nested too deeply (more than {MAX_JSON_DEPTH} levels)"
            )
        pairs = dict.items(source) if isinstance(copy, dict) else enumerate(_items(source))
        for key, item in pairs:
            plain = _plain_scalar(item, field, value)
            if plain is _CONTAINER:
                plain = {} if isinstance(item, dict) else []
                pending.append((item, plain, depth + 1))
            if isinstance(copy, dict):
                copy[_plain_key(key, field, value)] = plain
            else:
                copy.append(plain)
    return root


_CONTAINER: Any = object()


def _items(sequence: list[Any] | tuple[Any, ...]) -> Iterator[Any]:
    return list.__iter__(sequence) if isinstance(sequence, list) else tuple.__iter__(sequence)


def _plain_scalar(item: Any, field: str, document: Any) -> Any:
    if item is None or isinstance(item, bool):
        return item
    if isinstance(item, str):
        text = exact_str(item)
        if _UNSTORABLE.search(text):
            # PostgreSQL's jsonb refuses \u0000 and unpaired surrogates, in keys and values.
            raise ValidationError(
                field, document, "must not contain NUL characters or unpaired surrogates"
            )
        return text
    if isinstance(item, int):
        return exact_int(item)
    if isinstance(item, float):
        return float.__float__(item)
    if isinstance(item, dict | list | tuple):
        return _CONTAINER
    raise ValidationError(
        field,
        document,
        f"is not JSON-serialisable: Object of type {type(item).__name__} is not JSON serializable",
    )


def _plain_key(key: Any, field: str, document: Any) -> Any:
    if isinstance(key, dict | list | tuple):
        raise ValidationError(
            field,
            document,
            "is not JSON-serialisable: keys must be str, int, float, bool or None, "
            f"not {type(key).__name__}",
        )
    return _plain_scalar(key, field, document)


def require_text(value: Any, field: str, *, max_length: int, allow_empty: bool = False) -> str:
    text = to_text(value, field).strip()
    if not text and not allow_empty:
        raise ValidationError(field, value, "must not be empty")
    if len(text) > max_length:
        raise ValidationError(field, value, f"is longer than {max_length} characters")
    return text


# The OCC contract symbol writes the expiry year in two digits.
OCC_YEARS = (2000, 2099)


def to_expiration(value: Any, field: str) -> dt.date:
    """An option's expiration: a date an OCC contract symbol can name (2000-2099)."""
    day = to_date(value, field)
    first, last = OCC_YEARS
    if not first <= day.year <= last:
        raise ValidationError(
            field, value, f"must be in the years {first} to {last} (OCC symbols have 2-digit years)"
        )
    return day
