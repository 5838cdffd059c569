"""Portfolios and the positions they hold."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import CheckConstraint, ForeignKey, String, Text, UniqueConstraint, column, true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from database.models.base import Base, Timestamps, UUIDPrimaryKey, Versioned, enum_column_type
from database.models.enums import RiskTolerance
from database.types import ExactDecimal, Ticker

if TYPE_CHECKING:
    from database.models.analysis import AnalysisResult
    from database.models.user import User

PERCENTAGE = ExactDecimal(5, 2, minimum=0, maximum=100)
SHARES = ExactDecimal(18, 6, minimum=0)
MONEY = ExactDecimal(18, 4, minimum=0)


def within(name: str, column_type: ExactDecimal) -> CheckConstraint:
    """A CHECK that mirrors the type's bounds, rendered in each backend's storage unit."""
    value = column(name, column_type)
    condition = value >= column_type.minimum
    if column_type.maximum is not None:
        condition = condition & (value <= column_type.maximum)
    return CheckConstraint(condition, name=f"{name}_range")


class Portfolio(UUIDPrimaryKey, Timestamps, Versioned, Base):
    __tablename__ = "portfolios"
    __table_args__ = (
        UniqueConstraint("user_id", "name"),
        within("target_cash_percentage", PERCENTAGE),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    risk_tolerance: Mapped[RiskTolerance] = mapped_column(
        enum_column_type(RiskTolerance, "risk_tolerance"), default=RiskTolerance.MODERATE
    )
    target_cash_percentage: Mapped[Decimal] = mapped_column(PERCENTAGE, default=Decimal("0.00"))
    is_active: Mapped[bool] = mapped_column(default=True, server_default=true())

    user: Mapped[User] = relationship(back_populates="portfolios")
    positions: Mapped[list[Position]] = relationship(
        back_populates="portfolio",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Position.ticker",
    )
    analysis_results: Mapped[list[AnalysisResult]] = relationship(
        back_populates="portfolio", cascade="all, delete-orphan", passive_deletes=True
    )

    def __repr__(self) -> str:
        return f"<Portfolio {self.id} {self.name!r}>"


class Position(UUIDPrimaryKey, Timestamps, Versioned, Base):
    __tablename__ = "positions"
    __table_args__ = (
        # Leads with portfolio_id, so it also serves the foreign key's lookups.
        UniqueConstraint("portfolio_id", "ticker"),
        within("shares", SHARES),
        within("average_cost", MONEY),
        within("allocation_percentage", PERCENTAGE),
    )

    portfolio_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("portfolios.id", ondelete="CASCADE"))
    ticker: Mapped[str] = mapped_column(Ticker)
    shares: Mapped[Decimal] = mapped_column(SHARES)
    average_cost: Mapped[Decimal | None] = mapped_column(MONEY)
    allocation_percentage: Mapped[Decimal | None] = mapped_column(PERCENTAGE)
    notes: Mapped[str | None] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(default=True, server_default=true())

    portfolio: Mapped[Portfolio] = relationship(back_populates="positions")

    @property
    def cost_basis(self) -> Decimal | None:
        """shares times average cost, or None when the cost is unknown."""
        if self.average_cost is None:
            return None
        return self.shares * self.average_cost

    def __repr__(self) -> str:
        return f"<Position {self.ticker} {self.shares}>"
