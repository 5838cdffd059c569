"""Normalisers and validators shared by the models' attribute hooks and the types.

Each raises :class:`database.exceptions.ValidationError` naming the field and
the value, so bad input fails before anything reaches the database.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from email_validator import EmailNotValidError, validate_email

from database.exceptions import ValidationError

INTEGER_RANGE = (-(2**31), 2**31 - 1)
BIGINT_RANGE = (-(2**63), 2**63 - 1)
# Anything PostgreSQL's text cannot hold (NUL) or UTF-8 cannot encode (lone surrogates).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

# yfinance symbols: AAPL, BRK-B, BRK.B, ^GSPC, EURUSD=X, BTC-USD, ES=F, 0700.HK
_TICKER = re.compile(r"^\^?[A-Z0-9]+(?:[.\-][A-Z0-9]+)*(?:=[A-Z0-9]+)?$")
TICKER_MAX_LENGTH = 20


def to_text(value: Any, field: str, *, max_length: int | None = None) -> str:
    """A str that both backends store unchanged: no NUL, no lone surrogate, within the length.

    PostgreSQL refuses NUL in text, so it is refused on SQLite too: one verdict.
    """
    if not isinstance(value, str):
        raise ValidationError(field, value, "must be a string")
    if _UNSTORABLE.search(value):
        raise ValidationError(
            field, value, "must not contain NUL characters or unpaired surrogates"
        )
    if max_length is not None and len(value) > max_length:
        raise ValidationError(field, value, f"is longer than {max_length} characters")
    return value


def to_bool(value: Any, field: str) -> bool:
    """Only True or False: ``""``, ``0`` or ``"yes"`` are not guessed at."""
    if not isinstance(value, bool):
        raise ValidationError(field, value, "must be True or False")
    return value


def to_int(value: Any, field: str, *, bounds: tuple[int, int] = BIGINT_RANGE) -> int:
    """A whole number (not a bool, not a float) that fits the column (INTEGER or BIGINT)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, value, "must be a whole number (int)")
    low, high = bounds
    if not low <= value <= high:
        raise ValidationError(field, value, f"must be between {low} and {high}")
    return int(value)


def to_date(value: Any, field: str) -> dt.date:
    if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
        raise ValidationError(field, value, "must be a date (not a datetime)")
    return value


def to_uuid(value: Any, field: str = "id") -> uuid.UUID:
    """A UUID, or its text form."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise ValidationError(field, value, "is not a UUID")


def normalize_ticker(value: Any, field: str = "ticker") -> str:
    if not isinstance(value, str):
        raise ValidationError(field, value, "must be a string")
    ticker = value.strip().upper()
    if not ticker or len(ticker) > TICKER_MAX_LENGTH or not _TICKER.match(ticker):
        raise ValidationError(field, value, "is not a ticker symbol such as AAPL, BRK-B or ^GSPC")
    return ticker


def normalize_email(value: Any, field: str = "email") -> str:
    to_text(value, field)
    try:
        checked = validate_email(value.strip(), check_deliverability=False)
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
    # pandas' NaT is a datetime that is not equal to itself.
    if not isinstance(value, dt.datetime) or value != value:
        raise ValidationError(field, value, "must be a datetime")
    try:
        if value.tzinfo is None or value.utcoffset() is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        raise ValidationError(field, value, "is outside the years 1 to 9999 in UTC") from None


def to_json_object(value: Any, field: str) -> dict[str, Any] | None:
    """Accept a dict or a JSON string holding an object; None stays None."""
    if value is None:
        return None
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as error:
            raise ValidationError(field, value, f"is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise ValidationError(field, value, "must be a JSON object (a dict)")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as error:
        raise ValidationError(field, value, f"is not JSON-serialisable: {error}") from None
    # PostgreSQL's jsonb refuses \u0000 and unpaired surrogates, in keys and values alike.
    if _has_unstorable_text(value):
        raise ValidationError(
            field, value, "must not contain NUL characters or unpaired surrogates"
        )
    return value


def _has_unstorable_text(value: Any) -> bool:
    if isinstance(value, str):
        return bool(_UNSTORABLE.search(value))
    if isinstance(value, dict):
        return any(_has_unstorable_text(k) or _has_unstorable_text(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_unstorable_text(item) for item in value)
    return False


def require_text(value: Any, field: str, *, max_length: int, allow_empty: bool = False) -> str:
    text = to_text(value, field).strip()
    if not text and not allow_empty:
        raise ValidationError(field, value, "must not be empty")
    if len(text) > max_length:
        raise ValidationError(field, value, f"is longer than {max_length} characters")
    return text
