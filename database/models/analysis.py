"""Cached results of BuffetBot's analyses (DCF value, growth, health, risk, options)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from database import validation
from database.models.base import (
    Base,
    Timestamps,
    UUIDPrimaryKey,
    Versioned,
    checked_validator,
    enum_column_type,
    utcnow,
)
from database.models.enums import AnalysisType
from database.models.portfolio import within
from database.types import ExactDecimal, JSONObject, Ticker, UTCDateTime

if TYPE_CHECKING:
    from database.models.portfolio import Portfolio

FRACTION = ExactDecimal(5, 4, minimum=0, maximum=1)
SCORE = ExactDecimal(9, 4)


class _MetadataAlias:
    """``result.metadata`` reads the JSON column named ``metadata``.

    ``metadata`` is reserved on declarative classes for the ``MetaData``, so the
    column is mapped as ``analysis_metadata``; on the class this still returns
    the ``MetaData`` SQLAlchemy needs, on an instance it returns the JSON.
    """

    def __get__(self, instance: Any, owner: type[Any]) -> Any:
        if instance is None:
            return Base.metadata
        return instance.analysis_metadata

    def __set__(self, instance: Any, value: Any) -> None:
        instance.analysis_metadata = value


class AnalysisResult(UUIDPrimaryKey, Timestamps, Versioned, Base):
    __tablename__ = "analysis_results"
    __table_args__ = (
        Index(None, "ticker", "analysis_type", "calculated_at"),
        Index(None, "portfolio_id"),
        Index(None, "expires_at"),
        within("confidence_level", FRACTION),
        within("data_quality_score", FRACTION),
    )
    __attribute_aliases__: ClassVar[dict[str, str]] = {"metadata": "analysis_metadata"}

    portfolio_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("portfolios.id", ondelete="CASCADE")
    )
    ticker: Mapped[str] = mapped_column(Ticker)
    analysis_type: Mapped[AnalysisType] = mapped_column(
        enum_column_type(AnalysisType, "analysis_type")
    )
    strategy: Mapped[str | None] = mapped_column(String(50))
    score: Mapped[Decimal | None] = mapped_column(SCORE)
    analysis_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONObject)
    recommendation: Mapped[str | None] = mapped_column(String(50))
    confidence_level: Mapped[Decimal | None] = mapped_column(FRACTION)
    summary: Mapped[str | None] = mapped_column(Text)
    parameters: Mapped[dict[str, Any] | None] = mapped_column(JSONObject)
    data_quality_score: Mapped[Decimal | None] = mapped_column(FRACTION)
    calculated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    portfolio: Mapped[Portfolio | None] = relationship(back_populates="analysis_results")

    @checked_validator("analysis_metadata", "parameters")
    def _check_json(self, key: str, value: Any) -> dict[str, Any] | None:
        return validation.to_json_object(value, "metadata" if key == "analysis_metadata" else key)

    def is_expired(self, now: dt.datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or utcnow())

    def __repr__(self) -> str:
        return f"<AnalysisResult {self.ticker} {self.analysis_type} {self.calculated_at}>"


# Installed after mapping: declarative refuses a class attribute named ``metadata``.
AnalysisResult.metadata = _MetadataAlias()  # type: ignore[assignment]
