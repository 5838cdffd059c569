"""Normalisers and validators shared by the models' attribute hooks and the types.

Each raises :class:`database.exceptions.ValidationError` naming the field and
the value, so bad input fails before anything reaches the database.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from email_validator import EmailNotValidError, validate_email

from database.exceptions import ValidationError

# yfinance symbols: AAPL, BRK-B, BRK.B, ^GSPC, EURUSD=X, BTC-USD, ES=F, 0700.HK
_TICKER = re.compile(r"^\^?[A-Z0-9]+(?:[.\-][A-Z0-9]+)*(?:=[A-Z0-9]+)?$")
TICKER_MAX_LENGTH = 20


def normalize_ticker(value: Any, field: str = "ticker") -> str:
    if not isinstance(value, str):
        raise ValidationError(field, value, "must be a string")
    ticker = value.strip().upper()
    if not ticker or len(ticker) > TICKER_MAX_LENGTH or not _TICKER.match(ticker):
        raise ValidationError(field, value, "is not a ticker symbol such as AAPL, BRK-B or ^GSPC")
    return ticker


def normalize_email(value: Any, field: str = "email") -> str:
    if not isinstance(value, str):
        raise ValidationError(field, value, "must be a string")
    try:
        checked = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as error:
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
    if isinstance(value, bool):
        raise ValidationError(field, value, "must be a number")
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValidationError(field, value, "must be a number") from None
    if not number.is_finite():
        raise ValidationError(field, value, "must be a finite number")
    if number and number.adjusted() >= precision - scale:
        raise ValidationError(field, value, f"has more than {precision - scale} integer digits")
    quantized = number.quantize(Decimal(1).scaleb(-scale))
    if quantized != number:
        raise ValidationError(field, value, f"has more than {scale} decimal places")
    number = quantized
    if minimum is not None and number < minimum:
        raise ValidationError(field, value, f"must be at least {minimum}")
    if maximum is not None and number > maximum:
        raise ValidationError(field, value, f"must be at most {maximum}")
    return number


def to_utc(value: Any, field: str) -> dt.datetime:
    """Aware datetimes are converted to UTC; naive ones are taken to be UTC already
    (``datetime.utcnow()`` is common in callers)."""
    if not isinstance(value, dt.datetime):
        raise ValidationError(field, value, "must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def to_json_object(value: Any, field: str) -> dict[str, Any] | None:
    """Accept a dict or a JSON string holding an object; None stays None."""
    if value is None:
        return None
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except ValueError as error:
            raise ValidationError(field, value, f"is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise ValidationError(field, value, "must be a JSON object (a dict)")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValidationError(field, value, f"is not JSON-serialisable: {error}") from None
    return value


def require_text(value: Any, field: str, *, max_length: int, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, value, "must be a string")
    text = value.strip()
    if not text and not allow_empty:
        raise ValidationError(field, value, "must not be empty")
    if len(text) > max_length:
        raise ValidationError(field, value, f"is longer than {max_length} characters")
    return text
