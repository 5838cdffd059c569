"""Normalisers and validators shared by the models' attribute hooks and the types.

Each raises :class:`database.exceptions.ValidationError` naming the field and
the value, so bad input fails before anything reaches the database.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from typing import Any

from email_validator import EmailNotValidError, validate_email

from database.exceptions import DatabaseError, ValidationError

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


def to_decimal(
    value: Any,
    field: str,
    *,
    scale: int,
    precision: int,
    minimum: Decimal | None = None,
    maximum: Decimal | None = None,
) -> Decimal:
    """Coerce to an exact Decimal that fits NUMERIC(precision, scale) and the range.

    Floats go through ``repr`` (``0.1`` becomes ``Decimal('0.1')``), and a value
    with more decimal places than the column keeps is rejected, never rounded.
    """
    if not isinstance(value, Decimal | int | float | str) or isinstance(value, bool):
        raise ValidationError(field, value, "must be a number")
    if isinstance(value, str):
        value = exact_str(value)
    elif isinstance(value, int):
        value = exact_int(value)
    try:
        # float.__repr__: numpy's float64 repr is "np.float64(0.1)".
        number = Decimal(float.__repr__(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValidationError(field, value, "must be a number") from None
    if not number.is_finite():
        raise ValidationError(field, value, "must be a finite number")
    if number and number.adjusted() >= precision - scale:
        raise ValidationError(field, value, f"has more than {precision - scale} integer digits")
    try:
        quantized = number.quantize(Decimal(1).scaleb(-scale))
    except InvalidOperation:
        raise ValidationError(field, value, f"has more than {scale} decimal places") from None
    if quantized != number:
        raise ValidationError(field, value, f"has more than {scale} decimal places")
    # -0 is stored as 0 on both backends: hold it as 0 too.
    number = quantized.copy_abs() if quantized.is_zero() else quantized
    if minimum is not None and number < minimum:
        raise ValidationError(field, value, f"must be at least {minimum}")
    if maximum is not None and number > maximum:
        raise ValidationError(field, value, f"must be at most {maximum}")
    return number


def to_utc(value: Any, field: str) -> dt.datetime:
    """Aware datetimes are converted to UTC; naive ones are taken to be UTC already
    (``datetime.utcnow()`` is common in callers)."""
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
