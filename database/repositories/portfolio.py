"""Portfolios, their positions, and portfolio summaries."""

from __future__ import annotations

import builtins
import uuid
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from sqlalchemy import ColumnElement, Insert, Select, exists, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, joinedload

from database.exceptions import NotFoundError, ValidationError
from database.models import Portfolio, Position
from database.models.portfolio import MONEY, SHARES
from database.repositories.base import BaseRepository
from database.repositories.criteria import to_uuid
from database.repositories.upsert import dialect_name, native_insert
from database.transactions import async_begin_write, begin_write
from database.validation import normalize_ticker, to_decimal


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


@dataclass(frozen=True)
class Trade:
    """A checked change of a position: ``shares`` bought (> 0) or sold (< 0), at ``price``."""

    ticker: str
    shares: Decimal
    price: Decimal | None

    @classmethod
    def of(cls, ticker: str, shares: Any, price: Any) -> Trade:
        delta = to_decimal(shares, "shares", scale=SHARES.scale, precision=SHARES.precision)
        if delta == 0:
            raise ValidationError("shares", shares, "must not be 0: buy (> 0) or sell (< 0)")
        return cls(normalize_ticker(ticker), delta, MONEY.coerce(price, "price"))

    def apply(self, position: Position) -> None:
        """New shares and weighted average cost (buys at a price move it; sells do not)."""
        held = position.shares
        after = held + self.shares
        if after < 0:
            raise ValidationError(
                "shares",
                self.shares,
                f"cannot sell {-self.shares} {self.ticker}: the position holds {held}",
            )
        if self.shares > 0 and self.price is not None:
            if held == 0:
                position.average_cost = self.price
            elif position.average_cost is not None:  # an unknown cost stays unknown
                # Exact products (up to 18 + 18 digits) before the one rounding, half up.
                with localcontext(prec=60):
                    total = held * position.average_cost + self.shares * self.price
                    places = Decimal(1).scaleb(-MONEY.scale)
                    position.average_cost = (total / after).quantize(places, ROUND_HALF_UP)
        position.shares = after


def _required(user_id: Any) -> Any:
    if user_id is None:
        raise ValidationError("user_id", user_id, "is required: whose portfolio is it?")
    return user_id


def owned_portfolios(user: uuid.UUID) -> Select[uuid.UUID]:
    """The ids of the portfolios ``user`` owns, as a subquery of a scoped statement."""
    return select(Portfolio.id).where(Portfolio.user_id == user)


class PositionRepository(BaseRepository[Position]):
    """Positions; a user reaches only those in their own portfolios."""

    _scoped = True
    _owner_columns = frozenset({"portfolio_id"})

    def __init__(self) -> None:
        super().__init__(Position)

    def _owned_by(self, user: uuid.UUID, *, writing: bool = False) -> ColumnElement[bool]:
        return Position.portfolio_id.in_(owned_portfolios(user))

    def _owned_new(self, user: uuid.UUID, instance: Position) -> Select[Any] | bool:
        return select(
            exists().where(Portfolio.id == instance.portfolio_id, Portfolio.user_id == user)
        )

    def _refuse(self, instance: Position) -> None:
        raise NotFoundError("Portfolio", instance.portfolio_id)


class PortfolioRepository(BaseRepository[Portfolio]):
    """Portfolios and their positions, scoped to the acting user.

    Every method takes ``user_id=`` (the acting user; the session's user by
    default, see :mod:`database.ownership`) and checks ownership in the SQL
    statement that reads or changes the rows: another user's portfolio or
    position looks exactly like a missing one (None, False or NotFoundError).
    """

    _scoped = True
    _owner_columns = frozenset({"user_id"})

    def __init__(self) -> None:
        super().__init__(Portfolio)
        self.positions = PositionRepository()

    def _owned_by(self, user: uuid.UUID, *, writing: bool = False) -> ColumnElement[bool]:
        return Portfolio.user_id == user

    def _owned_new(self, user: uuid.UUID, instance: Portfolio) -> Select[Any] | bool:
        return instance.user_id == user

    def _refuse(self, instance: Portfolio) -> None:
        raise NotFoundError("User", instance.user_id)

    # -- statements ------------------------------------------------------------------

    def _user_portfolios_statement(
        self, scope: builtins.list[ColumnElement[bool]], user_id: Any, include_inactive: bool
    ) -> Select[Portfolio]:
        statement = select(Portfolio).where(
            Portfolio.user_id == to_uuid(user_id, "user_id"), *scope
        )
        if not include_inactive:
            statement = statement.where(Portfolio.is_active.is_(True))
        return statement.order_by(Portfolio.name)

    @staticmethod
    def _owned_statement(
        portfolio_id: Any, scope: builtins.list[ColumnElement[bool]]
    ) -> Select[Portfolio]:
        return select(Portfolio).where(
            Portfolio.id == to_uuid(portfolio_id, "portfolio_id"), *scope
        )

    def _with_positions_statement(
        self, portfolio_id: Any, scope: builtins.list[ColumnElement[bool]]
    ) -> Select[Portfolio]:
        # One round trip: the positions come in the same query (LEFT OUTER JOIN).
        return (
            self._owned_statement(portfolio_id, scope)
            .options(joinedload(Portfolio.positions))
            .execution_options(populate_existing=True)
        )

    @staticmethod
    def _position_statement(
        portfolio_id: Any, ticker: str, scope: builtins.list[ColumnElement[bool]]
    ) -> Select[Position]:
        return select(Position).where(
            Position.portfolio_id == to_uuid(portfolio_id, "portfolio_id"),
            Position.ticker == normalize_ticker(ticker),
            *scope,
        )

    @staticmethod
    def _locked_position_statement(
        portfolio_id: Any, ticker: str, scope: builtins.list[ColumnElement[bool]]
    ) -> Select[Position]:
        # FOR UPDATE on PostgreSQL; on SQLite the transaction holds the write lock.
        return (
            select(Position)
            .where(
                Position.portfolio_id == to_uuid(portfolio_id, "portfolio_id"),
                Position.ticker == ticker,
                *scope,
            )
            .with_for_update(of=Position)
            .execution_options(populate_existing=True)
        )

    @staticmethod
    def _open_position_statement(dialect: str, portfolio_id: Any, ticker: str) -> Insert:
        """An empty position to trade into, unless one exists (a concurrent buyer's)."""
        return (
            native_insert(dialect, Position)
            .values(
                id=uuid.uuid4(),
                portfolio_id=to_uuid(portfolio_id, "portfolio_id"),
                ticker=ticker,
                shares=Decimal(0),
            )
            .on_conflict_do_nothing(index_elements=["portfolio_id", "ticker"])
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
        statement = self._user_portfolios_statement(
            self._scope(session, user_id), user_id, include_inactive
        )
        with self._translating():
            return builtins.list(session.scalars(statement))

    async def async_get_user_portfolios(
        self, session: AsyncSession, user_id: Any, *, include_inactive: bool = False
    ) -> builtins.list[Portfolio]:
        statement = self._user_portfolios_statement(
            self._scope(session, user_id), user_id, include_inactive
        )
        with self._translating():
            return builtins.list(await session.scalars(statement))

    def get_for_user(self, session: Session, portfolio_id: Any, user_id: Any) -> Portfolio | None:
        """The portfolio if ``user_id`` owns it; another user's looks exactly like a missing one."""
        return self.get_by_id(session, portfolio_id, user_id=_required(user_id))

    async def async_get_for_user(
        self, session: AsyncSession, portfolio_id: Any, user_id: Any
    ) -> Portfolio | None:
        return await self.async_get_by_id(session, portfolio_id, user_id=_required(user_id))

    def get_with_positions(
        self, session: Session, portfolio_id: Any, *, user_id: Any | None = None
    ) -> Portfolio | None:
        statement = self._with_positions_statement(portfolio_id, self._scope(session, user_id))
        with self._translating():
            return session.scalars(statement).unique().first()

    async def async_get_with_positions(
        self, session: AsyncSession, portfolio_id: Any, *, user_id: Any | None = None
    ) -> Portfolio | None:
        statement = self._with_positions_statement(portfolio_id, self._scope(session, user_id))
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

    def add_position(
        self, session: Session, portfolio_id: Any, /, *, user_id: Any = None, **values: Any
    ) -> Position:
        """Add a holding; a second one for the same ticker is a DuplicateError."""
        return self.positions.create(
            session, portfolio_id=to_uuid(portfolio_id, "portfolio_id"), user_id=user_id, **values
        )

    async def async_add_position(
        self, session: AsyncSession, portfolio_id: Any, /, *, user_id: Any = None, **values: Any
    ) -> Position:
        return await self.positions.async_create(
            session, portfolio_id=to_uuid(portfolio_id, "portfolio_id"), user_id=user_id, **values
        )

    def _held(
        self, session: Session | AsyncSession, portfolio_id: Any, ticker: str, user_id: Any
    ) -> Select[Position]:
        return self._position_statement(
            portfolio_id, ticker, self.positions._scope(session, user_id)
        )

    def update_position(
        self,
        session: Session,
        portfolio_id: Any,
        ticker: str,
        /,
        *,
        user_id: Any = None,
        **values: Any,
    ) -> Position:
        """Change a holding's fields; NotFoundError if the (owned) portfolio does not hold it."""
        statement = self._held(session, portfolio_id, ticker, user_id)
        with self._translating():
            position = session.scalars(statement).first()
        if position is None:
            raise NotFoundError("Position", f"{ticker} in portfolio {portfolio_id}")
        return self.positions._change(session, position, values)

    async def async_update_position(
        self,
        session: AsyncSession,
        portfolio_id: Any,
        ticker: str,
        /,
        *,
        user_id: Any = None,
        **values: Any,
    ) -> Position:
        statement = self._held(session, portfolio_id, ticker, user_id)
        with self._translating():
            position = (await session.scalars(statement)).first()
        if position is None:
            raise NotFoundError("Position", f"{ticker} in portfolio {portfolio_id}")
        return await self.positions._async_change(session, position, values)

    def adjust_position(
        self,
        session: Session,
        portfolio_id: Any,
        ticker: str,
        *,
        shares: Any,
        price: Any = None,
        user_id: Any = None,
    ) -> Position:
        """Buy (``shares`` > 0) or sell (< 0) atomically; safe under any concurrency.

        The row is locked while it changes, so concurrent trades all count. A buy
        at ``price`` moves the weighted average cost; a buy into a ticker the
        portfolio does not hold opens the position. Selling more than is held
        raises ValidationError; selling a ticker not held, NotFoundError.
        """
        trade = Trade.of(ticker, shares, price)
        scope = self.positions._scope(session, user_id)
        begin_write(session)
        statement = self._locked_position_statement(portfolio_id, trade.ticker, scope)
        with self._translating():
            position = session.scalars(statement).first()
            if (
                position is None
                and trade.shares > 0
                and self._may_open(session, portfolio_id, user_id)
            ):
                session.execute(
                    self._open_position_statement(dialect_name(session), portfolio_id, trade.ticker)
                )
                position = session.scalars(statement).first()
        if position is None:
            raise NotFoundError("Position", f"{trade.ticker} in portfolio {portfolio_id}")
        trade.apply(position)
        with self.positions._writing(position):
            session.flush()
        return position

    async def async_adjust_position(
        self,
        session: AsyncSession,
        portfolio_id: Any,
        ticker: str,
        *,
        shares: Any,
        price: Any = None,
        user_id: Any = None,
    ) -> Position:
        trade = Trade.of(ticker, shares, price)  # checked before the session is touched
        self.positions._scope(session, user_id)  # and the acting user
        await async_begin_write(session)
        return await session.run_sync(
            lambda sync: self.adjust_position(
                sync, portfolio_id, trade.ticker, shares=trade.shares, price=price, user_id=user_id
            )
        )

    def _may_open(self, session: Session, portfolio_id: Any, user_id: Any) -> bool:
        """Whether a position may be opened in the portfolio (one the acting user owns)."""
        scope = self._scope(session, user_id)
        if not scope:
            return True  # the foreign key rejects a missing portfolio
        return session.scalars(self._owned_statement(portfolio_id, scope)).first() is not None

    def remove_position(
        self, session: Session, portfolio_id: Any, ticker: str, *, user_id: Any = None
    ) -> bool:
        """Delete the holding; False if the (owned) portfolio did not hold the ticker."""
        statement = self._held(session, portfolio_id, ticker, user_id)
        with self._translating():
            position = session.scalars(statement).first()
        return position is not None and self.positions._remove(session, position)

    async def async_remove_position(
        self, session: AsyncSession, portfolio_id: Any, ticker: str, *, user_id: Any = None
    ) -> bool:
        statement = self._held(session, portfolio_id, ticker, user_id)
        with self._translating():
            position = (await session.scalars(statement)).first()
        return position is not None and await self.positions._async_remove(session, position)
