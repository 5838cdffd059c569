"""Column types that behave the same on PostgreSQL and SQLite.

- :class:`ExactDecimal`: NUMERIC(p, s) on PostgreSQL; on SQLite a scaled
  64-bit integer (SQLite has no decimal type and SQLAlchemy's Numeric would go
  through float there), so sums, comparisons and ordering stay exact.
- :class:`UTCDateTime`: ``timestamptz`` on PostgreSQL; UTC text on SQLite; always
  read back as an aware UTC datetime.
- :class:`Ticker` and :class:`LowerCaseString`: normalise on write *and* on
  read, so criteria match whatever case the caller used.

Each type has ``coerce(value, field)``, which the models run when an attribute
is set, so bad input fails before any SQL is sent.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Dialect, Numeric, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.mutable import MutableDict
from sqlalchemy.types import TypeDecorator, TypeEngine

from database import validation


class ExactDecimal(TypeDecorator[Decimal]):
    """An exact decimal with ``scale`` places and optional bounds."""

    impl = Numeric
    cache_ok = True

    def __init__(
        self,
        precision: int,
        scale: int,
        *,
        minimum: Decimal | int | None = None,
        maximum: Decimal | int | None = None,
    ) -> None:
        super().__init__(precision=precision, scale=scale, asdecimal=True)
        self.precision = precision
        self.scale = scale
        self.minimum = None if minimum is None else Decimal(minimum)
        self.maximum = None if maximum is None else Decimal(maximum)

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(self.precision, self.scale, asdecimal=True))

    def coerce(
        self,
        value: Any,
        field: str,
        *,
        rounding: validation.Rounding = validation.EXACT,
        bounded: bool = True,
    ) -> Decimal | None:
        """``value`` as this column holds it, through :func:`validation.to_decimal`, the
        one decimal policy: extra places refused unless the source names a ``rounding``
        (``validation.FLOAT_SOURCE`` for a market-data feed's floats). ``bounded=False``
        skips the range, for a value compared with the column rather than stored in it
        (``shares__gt=-1`` is a fair question)."""
        if value is None:
            return None
        return validation.to_decimal(
            value,
            field,
            scale=self.scale,
            precision=self.precision,
            minimum=self.minimum if bounded else None,
            maximum=self.maximum if bounded else None,
            rounding=rounding,
        )

    def _to_storage(self, value: Any, dialect: Dialect) -> Decimal | int | None:
        # Criteria values are bound here too: checked by the same policy, without the range.
        number = self.coerce(value, "value", bounded=False)
        if number is None:
            return None
        if dialect.name == "sqlite":
            return int(number.scaleb(self.scale))
        return number

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return self._to_storage(value, dialect)

    def process_literal_param(self, value: Any, dialect: Dialect) -> str:
        # Renders CHECK-constraint bounds in the storage unit of each backend.
        return str(self._to_storage(value, dialect))

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-self.scale)
        return Decimal(value).quantize(Decimal(1).scaleb(-self.scale))

    @property
    def python_type(self) -> type[Decimal]:
        return Decimal


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC timestamps on both backends (naive input is taken as UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def coerce(self, value: Any, field: str) -> dt.datetime | None:
        return None if value is None else validation.to_utc(value, field)

    def process_bind_param(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        utc = validation.to_utc(value, "value")
        # SQLite stores text without an offset: keep it UTC so text order is time order.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)  # type: ignore[no-any-return]
        return value.astimezone(dt.UTC)  # type: ignore[no-any-return]


def sqlite_timestamp(value: dt.datetime) -> str:
    """A UTC datetime as the text :class:`UTCDateTime` stores on SQLite (sorts as time)."""
    return validation.to_utc(value, "value").strftime("%Y-%m-%d %H:%M:%S.%f")


class Ticker(TypeDecorator[str]):
    """A market symbol, stored and read stripped and upper-case."""

    impl = String(validation.TICKER_MAX_LENGTH)
    cache_ok = True

    def coerce(self, value: Any, field: str) -> str | None:
        return None if value is None else validation.normalize_ticker(value, field)

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        # str's own methods: a str subclass's overrides never run.
        return str.upper(str.strip(value)) if isinstance(value, str) else value

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return str.upper(str.strip(value)) if isinstance(value, str) else value


class LowerCaseString(TypeDecorator[str]):
    """Text compared case-insensitively by storing it lower-case (e-mail addresses)."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return str.lower(str.strip(value)) if isinstance(value, str) else value


# JSON objects: JSONB on PostgreSQL, JSON text on SQLite; edits in place are tracked.
JSONObject = MutableDict.as_mutable(JSON().with_variant(JSONB(), "postgresql"))
