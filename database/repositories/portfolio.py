"""Portfolios, their positions, and portfolio summaries."""

from __future__ import annotations

import builtins
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, joinedload

from database.exceptions import NotFoundError
from database.models import Portfolio, Position
from database.repositories.base import BaseRepository
from database.repositories.criteria import to_uuid
from database.validation import normalize_ticker


@dataclass(frozen=True)
class PortfolioSummary:
    """Totals of a portfolio's active positions (exact decimals)."""

    portfolio_id: uuid.UUID
    name: str
    position_count: int
    total_cost_basis: Decimal
    positions_without_cost: int
    allocation_total: Decimal
    target_cash_percentage: Decimal

    @property
    def unallocated_percentage(self) -> Decimal:
        """What is left of 100 % after the positions' allocations and the cash target."""
        return Decimal(100) - self.allocation_total - self.target_cash_percentage

    @property
    def is_over_allocated(self) -> bool:
        return self.unallocated_percentage < 0


class PositionRepository(BaseRepository[Position]):
    def __init__(self) -> None:
        super().__init__(Position)


class PortfolioRepository(BaseRepository[Portfolio]):
    def __init__(self) -> None:
        super().__init__(Portfolio)
        self.positions = PositionRepository()

    # -- statements ------------------------------------------------------------------

    @staticmethod
    def _user_portfolios_statement(user_id: Any, include_inactive: bool) -> Select[Portfolio]:
        statement = select(Portfolio).where(Portfolio.user_id == to_uuid(user_id, "user_id"))
        if not include_inactive:
            statement = statement.where(Portfolio.is_active.is_(True))
        return statement.order_by(Portfolio.name)

    @staticmethod
    def _owned_statement(portfolio_id: Any, user_id: Any | None) -> Select[Portfolio]:
        statement = select(Portfolio).where(Portfolio.id == to_uuid(portfolio_id, "portfolio_id"))
        if user_id is not None:
            statement = statement.where(Portfolio.user_id == to_uuid(user_id, "user_id"))
        return statement

    def _with_positions_statement(
        self, portfolio_id: Any, user_id: Any | None
    ) -> Select[Portfolio]:
        # One round trip: the positions come in the same query (LEFT OUTER JOIN).
        return (
            self._owned_statement(portfolio_id, user_id)
            .options(joinedload(Portfolio.positions))
            .execution_options(populate_existing=True)
        )

    @staticmethod
    def _position_statement(portfolio_id: Any, ticker: str) -> Select[Position]:
        return select(Position).where(
            Position.portfolio_id == to_uuid(portfolio_id, "portfolio_id"),
            Position.ticker == normalize_ticker(ticker),
        )

    @staticmethod
    def _summarise(portfolio: Portfolio) -> PortfolioSummary:
        active = [p for p in portfolio.positions if p.is_active]
        costs = [p.cost_basis for p in active if p.cost_basis is not None]
        return PortfolioSummary(
            portfolio_id=portfolio.id,
            name=portfolio.name,
            position_count=len(active),
            total_cost_basis=sum(costs, Decimal(0)),
            positions_without_cost=len(active) - len(costs),
            allocation_total=sum(
                (p.allocation_percentage or Decimal(0) for p in active), Decimal(0)
            ),
            target_cash_percentage=portfolio.target_cash_percentage,
        )

    # -- portfolios ------------------------------------------------------------------

    def get_user_portfolios(
        self, session: Session, user_id: Any, *, include_inactive: bool = False
    ) -> builtins.list[Portfolio]:
        with self._translating():
            return builtins.list(
                session.scalars(self._user_portfolios_statement(user_id, include_inactive))
            )

    async def async_get_user_portfolios(
        self, session: AsyncSession, user_id: Any, *, include_inactive: bool = False
    ) -> builtins.list[Portfolio]:
        statement = self._user_portfolios_statement(user_id, include_inactive)
        with self._translating():
            return builtins.list(await session.scalars(statement))

    def get_for_user(self, session: Session, portfolio_id: Any, user_id: Any) -> Portfolio | None:
        """The portfolio if ``user_id`` owns it; another user's looks exactly like a missing one."""
        with self._translating():
            return session.scalars(self._owned_statement(portfolio_id, user_id)).first()

    async def async_get_for_user(
        self, session: AsyncSession, portfolio_id: Any, user_id: Any
    ) -> Portfolio | None:
        statement = self._owned_statement(portfolio_id, user_id)
        with self._translating():
            return (await session.scalars(statement)).first()

    def get_with_positions(
        self, session: Session, portfolio_id: Any, *, user_id: Any | None = None
    ) -> Portfolio | None:
        statement = self._with_positions_statement(portfolio_id, user_id)
        with self._translating():
            return session.scalars(statement).unique().first()

    async def async_get_with_positions(
        self, session: AsyncSession, portfolio_id: Any, *, user_id: Any | None = None
    ) -> Portfolio | None:
        statement = self._with_positions_statement(portfolio_id, user_id)
        with self._translating():
            return (await session.scalars(statement)).unique().first()

    def get_summary(
        self, session: Session, portfolio_id: Any, *, user_id: Any | None = None
    ) -> PortfolioSummary:
        portfolio = self.get_with_positions(session, portfolio_id, user_id=user_id)
        if portfolio is None:
            raise NotFoundError("Portfolio", portfolio_id)
        return self._summarise(portfolio)

    async def async_get_summary(
        self, session: AsyncSession, portfolio_id: Any, *, user_id: Any | None = None
    ) -> PortfolioSummary:
        portfolio = await self.async_get_with_positions(session, portfolio_id, user_id=user_id)
        if portfolio is None:
            raise NotFoundError("Portfolio", portfolio_id)
        return self._summarise(portfolio)

    # -- positions -------------------------------------------------------------------

    def add_position(self, session: Session, portfolio_id: Any, **values: Any) -> Position:
        """Add a holding; a second one for the same ticker is a DuplicateError."""
        return self.positions.create(
            session, portfolio_id=to_uuid(portfolio_id, "portfolio_id"), **values
        )

    async def async_add_position(
        self, session: AsyncSession, portfolio_id: Any, **values: Any
    ) -> Position:
        return await self.positions.async_create(
            session, portfolio_id=to_uuid(portfolio_id, "portfolio_id"), **values
        )

    def update_position(
        self, session: Session, portfolio_id: Any, ticker: str, **values: Any
    ) -> Position:
        with self._translating():
            position = session.scalars(self._position_statement(portfolio_id, ticker)).first()
        if position is None:
            raise NotFoundError("Position", f"{ticker} in portfolio {portfolio_id}")
        return self.positions.update(session, position, **values)

    async def async_update_position(
        self, session: AsyncSession, portfolio_id: Any, ticker: str, **values: Any
    ) -> Position:
        statement = self._position_statement(portfolio_id, ticker)
        with self._translating():
            position = (await session.scalars(statement)).first()
        if position is None:
            raise NotFoundError("Position", f"{ticker} in portfolio {portfolio_id}")
        return await self.positions.async_update(session, position, **values)

    def remove_position(self, session: Session, portfolio_id: Any, ticker: str) -> bool:
        """Delete the holding; False if the portfolio did not hold the ticker."""
        position = session.scalars(self._position_statement(portfolio_id, ticker)).first()
        return position is not None and self.positions.delete(session, position)

    async def async_remove_position(
        self, session: AsyncSession, portfolio_id: Any, ticker: str
    ) -> bool:
        position = (await session.scalars(self._position_statement(portfolio_id, ticker))).first()
        return position is not None and await self.positions.async_delete(session, position)
