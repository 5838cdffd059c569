"""Market data: the fetched-data cache, daily price history and options chains."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Date, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from database import validation
from database.exceptions import ValidationError
from database.models.base import (
    Base,
    Timestamps,
    UUIDPrimaryKey,
    checked_validator,
    enum_column_type,
    utcnow,
)
from database.models.enums import DataType, OptionType
from database.models.portfolio import within
from database.types import ExactDecimal, JSONObject, Ticker, UTCDateTime

PRICE = ExactDecimal(18, 6, minimum=0)
RATIO = ExactDecimal(12, 6)
QUALITY = ExactDecimal(5, 4, minimum=0, maximum=1)


class MarketDataCache(UUIDPrimaryKey, Timestamps, Base):
    """One cached payload per (ticker, data type, parameters), found by ``cache_key``.

    ``cache_key`` is a digest of the canonical key (see
    ``MarketDataRepository.make_cache_key``), never NULL, so entries without
    parameters cannot be duplicated and writes can be native upserts.
    """

    __tablename__ = "market_data_cache"
    __table_args__ = (
        UniqueConstraint("cache_key"),
        Index(None, "ticker", "data_type"),
        Index(None, "expires_at"),
        within("data_quality_score", QUALITY),
    )

    cache_key: Mapped[str] = mapped_column(String(64))
    ticker: Mapped[str] = mapped_column(Ticker)
    data_type: Mapped[DataType] = mapped_column(enum_column_type(DataType, "data_type"))
    data: Mapped[dict[str, Any]] = mapped_column(JSONObject)
    data_source: Mapped[str] = mapped_column(String(50), default="yfinance")
    parameters: Mapped[dict[str, Any] | None] = mapped_column(JSONObject)
    cached_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    data_quality_score: Mapped[Decimal | None] = mapped_column(QUALITY)

    @checked_validator("data", "parameters")
    def _check_json(self, key: str, value: Any) -> dict[str, Any] | None:
        return validation.to_json_object(value, key)

    def is_expired(self, now: dt.datetime | None = None) -> bool:
        return self.expires_at <= (now or utcnow())


class PriceHistory(Timestamps, Base):
    """One daily bar; the natural key (ticker, date) is the primary key."""

    __tablename__ = "price_history"
    __table_args__ = (
        within("open", PRICE),
        within("high", PRICE),
        within("low", PRICE),
        within("close", PRICE),
        within("adj_close", PRICE),
        CheckConstraint("volume >= 0", name="volume_range"),
        CheckConstraint("low <= high", name="low_not_above_high"),
    )

    ticker: Mapped[str] = mapped_column(Ticker, primary_key=True)
    date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    open: Mapped[Decimal | None] = mapped_column(PRICE)
    high: Mapped[Decimal | None] = mapped_column(PRICE)
    low: Mapped[Decimal | None] = mapped_column(PRICE)
    close: Mapped[Decimal] = mapped_column(PRICE)
    adj_close: Mapped[Decimal | None] = mapped_column(PRICE)
    volume: Mapped[int | None] = mapped_column(BigInteger)
    dividends: Mapped[Decimal] = mapped_column(PRICE, default=Decimal(0))
    stock_splits: Mapped[Decimal] = mapped_column(RATIO, default=Decimal(0))
    data_source: Mapped[str] = mapped_column(String(50), default="yfinance")

    @checked_validator("date")
    def _check_date(self, _key: str, value: Any) -> dt.date:
        return validation.to_date(value, "date")

    @checked_validator("volume")
    def _check_volume(self, _key: str, value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("volume", value, "must be a whole number")
        volume = validation.exact_int(value)
        if volume < 0:
            raise ValidationError("volume", value, "must be at least 0")
        return volume

    def __repr__(self) -> str:
        return f"<PriceHistory {self.ticker} {self.date} close={self.close}>"


class OptionsData(UUIDPrimaryKey, Timestamps, Base):
    """One option contract as seen in one chain snapshot (``fetched_at``)."""

    __tablename__ = "options_data"
    __table_args__ = (
        UniqueConstraint("contract_symbol", "fetched_at"),
        Index(None, "ticker", "expiration", "fetched_at"),
        within("strike", PRICE),
        CheckConstraint("volume >= 0", name="volume_range"),
        CheckConstraint("open_interest >= 0", name="open_interest_range"),
    )

    ticker: Mapped[str] = mapped_column(Ticker)
    contract_symbol: Mapped[str] = mapped_column(String(32))
    option_type: Mapped[OptionType] = mapped_column(enum_column_type(OptionType, "option_type"))
    strike: Mapped[Decimal] = mapped_column(PRICE)
    expiration: Mapped[dt.date] = mapped_column(Date)
    last_price: Mapped[Decimal | None] = mapped_column(PRICE)
    bid: Mapped[Decimal | None] = mapped_column(PRICE)
    ask: Mapped[Decimal | None] = mapped_column(PRICE)
    volume: Mapped[int | None] = mapped_column(BigInteger)
    open_interest: Mapped[int | None] = mapped_column(BigInteger)
    implied_volatility: Mapped[Decimal | None] = mapped_column(RATIO)
    delta: Mapped[Decimal | None] = mapped_column(RATIO)
    gamma: Mapped[Decimal | None] = mapped_column(RATIO)
    theta: Mapped[Decimal | None] = mapped_column(RATIO)
    vega: Mapped[Decimal | None] = mapped_column(RATIO)
    rho: Mapped[Decimal | None] = mapped_column(RATIO)
    underlying_price: Mapped[Decimal | None] = mapped_column(PRICE)
    last_trade_date: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    fetched_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    @checked_validator("contract_symbol")
    def _check_symbol(self, _key: str, value: Any) -> str:
        return validation.require_text(value, "contract_symbol", max_length=32).upper()

    @checked_validator("expiration")
    def _check_expiration(self, _key: str, value: Any) -> dt.date:
        return validation.to_expiration(value, "expiration")

    def days_to_expiry(self, on: dt.date | None = None) -> int:
        """Calendar days from ``on`` (today, UTC) to expiration; negative once expired."""
        return (self.expiration - (on or utcnow().date())).days

    def is_in_the_money(
        self, underlying_price: Decimal | float | int | str | None = None
    ) -> bool | None:
        """Against ``underlying_price`` (else the one stored with the snapshot); None if unknown."""
        price = underlying_price if underlying_price is not None else self.underlying_price
        if price is None:
            return None
        # Exact, floats through repr (never Decimal(float)'s binary expansion).
        price = validation.parse_decimal(price, "underlying_price")
        if self.option_type is OptionType.CALL:
            return price > self.strike
        return price < self.strike

    def __repr__(self) -> str:
        return f"<OptionsData {self.contract_symbol} {self.fetched_at}>"
