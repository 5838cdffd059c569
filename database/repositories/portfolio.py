"""Portfolios, their positions, and portfolio summaries."""

from __future__ import annotations

import builtins
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any

from sqlalchemy import ColumnElement, Insert, Row, Select, and_, exists, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, joinedload

from database.exceptions import NotFoundError, ValidationError
from database.models import Portfolio, Position
from database.models.portfolio import MONEY, SHARES
from database.repositories.base import BaseRepository
from database.repositories.criteria import to_uuid
from database.repositories.latest import last_bar
from database.repositories.twins import async_form
from database.repositories.upsert import dialect_name, native_insert
from database.transactions import begin_write
from database.validation import COMPUTED, normalize_ticker, to_date, to_decimal

# Valuation rounding: money to the MONEY column's 4 places, percentages to 2, by the
# named policy for computed figures (validation.COMPUTED: half up),
# once, from the exact products and sums (computed with room for 18 x 18 digits).
_EXACT = 60
_MONEY_PLACES = Decimal(1).scaleb(-MONEY.scale)
_PERCENT_PLACES = Decimal("0.01")


@dataclass(frozen=True)
class PortfolioSummary:
    """Counts and totals of a portfolio's active positions, from the stored rows only.

    No prices are read (see :meth:`PortfolioRepository.value_portfolio` for market
    values): ``position_count`` active positions, ``total_cost_basis`` the sum
    of shares x average cost over those with a known cost (not quantized),
    ``positions_without_cost`` those without, ``allocation_total`` the sum of
    their target ``allocation_percentage`` (a missing one counts as 0) and the
    portfolio's ``target_cash_percentage``. The positions themselves are not
    included: ``get_with_positions`` returns them.
    """

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
class PositionValue:
    """One active position valued at a close (money to 4 places, percentages to 2).

    A figure that cannot be known is None: ``cost_basis`` and the gain without
    an ``average_cost``; the close, ``market_value``, gain and allocation
    without a price on or before the valuation date.
    """

    ticker: str
    shares: Decimal
    average_cost: Decimal | None
    cost_basis: Decimal | None  # shares x average cost
    close: Decimal | None  # the latest close on or before the valuation date, as stored
    close_date: dt.date | None
    market_value: Decimal | None  # shares x close
    gain: Decimal | None  # market value - cost basis
    gain_percentage: Decimal | None  # gain / cost basis x 100 (None for a zero cost)
    allocation_percentage: Decimal | None  # market value / the portfolio's market value x 100
    target_allocation_percentage: Decimal | None  # the position's allocation_percentage


@dataclass(frozen=True)
class PortfolioValuation:
    """A portfolio valued at the latest close (``as_of`` None) or as of a date.

    Totals come from the exact figures, rounded once (so they may differ from
    the sum of the rounded positions by a few ten-thousandths, and the rounded
    allocations from 100.00 by a few hundredths): ``total_cost_basis`` over the
    positions with a cost, ``total_market_value`` over those with a price,
    ``total_gain`` and ``total_gain_percentage`` over those with both. A total
    no position contributes to (positions held, but none priced) is None, not 0;
    a portfolio without positions totals 0.
    """

    portfolio_id: uuid.UUID
    name: str
    as_of: dt.date | None
    positions: tuple[PositionValue, ...]  # by ticker
    total_cost_basis: Decimal | None
    total_market_value: Decimal | None
    total_gain: Decimal | None
    total_gain_percentage: Decimal | None
    positions_without_price: int
    positions_without_cost: int
    target_allocation_total: Decimal  # sum of the positions' allocation_percentage
    target_cash_percentage: Decimal


def _money(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(_MONEY_PLACES, COMPUTED.value)


def _total(figures: Sequence[Decimal | None]) -> Decimal | None:
    """The sum of the known figures; None when there are figures but none is known."""
    known = [f for f in figures if f is not None]
    return sum(known, Decimal(0)) if known or not figures else None


def _percentage(part: Decimal | None, whole: Decimal | None) -> Decimal | None:
    if part is None or not whole:
        return None
    return (part * 100 / whole).quantize(_PERCENT_PLACES, COMPUTED.value)


def _valuation(rows: Sequence[Row[Any]], as_of: dt.date | None) -> PortfolioValuation:
    """The figures of :meth:`PortfolioRepository.value_portfolio` from its one query's rows."""
    held = [row for row in rows if row.ticker is not None]  # no position: one row of NULLs
    with localcontext(prec=_EXACT):
        costs = [r.shares * r.average_cost if r.average_cost is not None else None for r in held]
        values = [r.shares * r.close if r.close is not None else None for r in held]
        gains = [
            None if value is None or cost is None else value - cost
            for value, cost in zip(values, costs, strict=True)
        ]
        total_value = _total(values)
        total_cost = _total(costs)
        total_gain = _total(gains)
        gained_cost = sum(
            (c for c, g in zip(costs, gains, strict=True) if c is not None and g is not None),
            Decimal(0),
        )
        positions = tuple(
            PositionValue(
                ticker=row.ticker,
                shares=row.shares,
                average_cost=row.average_cost,
                cost_basis=_money(cost),
                close=row.close,
                close_date=row.close_date,
                market_value=_money(value),
                gain=_money(gain),
                gain_percentage=_percentage(gain, cost),
                allocation_percentage=_percentage(value, total_value),
                target_allocation_percentage=row.allocation_percentage,
            )
            for row, cost, value, gain in zip(held, costs, values, gains, strict=True)
        )
        return PortfolioValuation(
            portfolio_id=rows[0].portfolio_id,
            name=rows[0].name,
            as_of=as_of,
            positions=positions,
            total_cost_basis=_money(total_cost),
            total_market_value=_money(total_value),
            total_gain=_money(total_gain),
            total_gain_percentage=_percentage(total_gain, gained_cost),
            positions_without_price=sum(1 for v in values if v is None),
            positions_without_cost=sum(1 for c in costs if c is None),
            target_allocation_total=sum(
                (r.allocation_percentage or Decimal(0) for r in held), Decimal(0)
            ),
            target_cash_percentage=rows[0].target_cash_percentage,
        )


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
                    cost = total / after
                # A computed figure: rounded by the named policy, then checked as stored.
                position.average_cost = MONEY.coerce(cost, "average_cost", rounding=COMPUTED)
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
    def _valuation_statement(
        dialect: str,
        portfolio_id: Any,
        as_of: dt.date | None,
        scope: builtins.list[ColumnElement[bool]],
    ) -> Select[*tuple[Any, ...]]:
        """The owned portfolio, its active positions and each one's close, in one query.

        The close is the latest bar on or before ``as_of`` per ticker
        (:func:`database.repositories.latest.last_bar`): a LATERAL subquery on
        PostgreSQL; on SQLite, which has no LATERAL, a join on the correlated
        ``max(date)``. Both seek the (ticker, date) primary key once per position.
        """
        bar = last_bar(dialect, Position.ticker, on_or_before=as_of, correlate=Position)
        assert bar.close is not None
        return (
            select(
                Portfolio.id.label("portfolio_id"),
                Portfolio.name,
                Portfolio.target_cash_percentage,
                Position.ticker,
                Position.shares,
                Position.average_cost,
                Position.allocation_percentage,
                bar.date.label("close_date"),
                bar.close.label("close"),
            )
            .select_from(Portfolio)
            .outerjoin(
                Position,
                and_(Position.portfolio_id == Portfolio.id, Position.is_active.is_(True)),
            )
            .outerjoin(bar.source, bar.on)
            .where(Portfolio.id == to_uuid(portfolio_id, "portfolio_id"), *scope)
            .order_by(Position.ticker)
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

    async_get_user_portfolios = async_form(get_user_portfolios)

    def get_for_user(self, session: Session, portfolio_id: Any, user_id: Any) -> Portfolio | None:
        """The portfolio if ``user_id`` owns it; another user's looks exactly like a missing one."""
        return self.get_by_id(session, portfolio_id, user_id=_required(user_id))

    async_get_for_user = async_form(get_for_user)

    def get_with_positions(
        self, session: Session, portfolio_id: Any, *, user_id: Any | None = None
    ) -> Portfolio | None:
        statement = self._with_positions_statement(portfolio_id, self._scope(session, user_id))
        with self._translating():
            return session.scalars(statement).unique().first()

    async_get_with_positions = async_form(get_with_positions)

    def get_summary(
        self, session: Session, portfolio_id: Any, *, user_id: Any | None = None
    ) -> PortfolioSummary:
        """A :class:`PortfolioSummary`: the active positions' count, exact total cost
        basis, count without a cost and target allocations, with the cash target.

        It reads no prices and returns no positions (``value_portfolio`` values
        them; ``get_with_positions`` loads them). NotFoundError for a missing
        portfolio or another user's.
        """
        portfolio = self.get_with_positions(session, portfolio_id, user_id=user_id)
        if portfolio is None:
            raise NotFoundError("Portfolio", portfolio_id)
        return self._summarise(portfolio)

    async_get_summary = async_form(get_summary)

    def value_portfolio(
        self,
        session: Session,
        portfolio_id: Any,
        *,
        as_of: dt.date | None = None,
        user_id: Any | None = None,
    ) -> PortfolioValuation:
        """The active positions valued at their latest close on or before ``as_of``
        (the latest close of all when None), in one query.

        Money is rounded to 4 places and percentages to 2, half up, once, from
        exact figures (see :class:`PortfolioValuation`). A position with no bar
        on or before ``as_of`` is counted in ``positions_without_price``.
        NotFoundError for a missing portfolio or another user's.
        """
        day = None if as_of is None else to_date(as_of, "as_of")
        statement = self._valuation_statement(
            dialect_name(session), portfolio_id, day, self._scope(session, user_id)
        )
        with self._translating():
            rows = session.execute(statement).all()
        if not rows:
            raise NotFoundError("Portfolio", portfolio_id)
        return _valuation(rows, day)

    async_value_portfolio = async_form(value_portfolio)

    # -- compatibility names (BuffetBot's examples) ---------------------------------------

    def get_portfolio_with_positions(
        self, session: Session, portfolio_id: Any, *, user_id: Any | None = None
    ) -> Portfolio | None:
        """Alias of :meth:`get_with_positions`, the name BuffetBot's examples use."""
        return self.get_with_positions(session, portfolio_id, user_id=user_id)

    async_get_portfolio_with_positions = async_form(get_portfolio_with_positions)

    # -- positions -------------------------------------------------------------------

    def add_position(
        self, session: Session, portfolio_id: Any, /, *, user_id: Any = None, **values: Any
    ) -> Position:
        """Add a holding; a second one for the same ticker is a DuplicateError."""
        return self.positions.create(
            session, portfolio_id=to_uuid(portfolio_id, "portfolio_id"), user_id=user_id, **values
        )

    async_add_position = async_form(add_position)

    def _held(
        self, session: Session | AsyncSession, portfolio_id: Any, ticker: str, user_id: Any
    ) -> Select[Position]:
        return self._position_statement(
            portfolio_id, ticker, self.positions._scope(session, user_id)
        )

    def get_position_by_ticker(
        self, session: Session, portfolio_id: Any, ticker: str, *, user_id: Any = None
    ) -> Position | None:
        """The portfolio's position in ``ticker`` (active or not); None if the (owned)
        portfolio does not hold it. BuffetBot's examples call it by this name."""
        statement = self._held(session, portfolio_id, ticker, user_id)
        with self._translating():
            return session.scalars(statement).first()

    async_get_position_by_ticker = async_form(get_position_by_ticker)

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

    async_update_position = async_form(update_position)

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

    async_adjust_position = async_form(adjust_position)

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

    async_remove_position = async_form(remove_position)
