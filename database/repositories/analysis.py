"""The cache of analysis results: latest still-valid result, history, invalidation."""

from __future__ import annotations

import builtins
import datetime as dt
import uuid
from typing import Any

from sqlalchemy import ColumnElement, Delete, Select, Update, delete, exists, or_, select, update
from sqlalchemy.orm import Session

from database.exceptions import InvalidCriteriaError, NotFoundError
from database.models import AnalysisResult, AnalysisType, Portfolio
from database.models.base import utcnow
from database.monitoring import analysis_cache
from database.repositories.base import BaseRepository
from database.repositories.portfolio import owned_portfolios
from database.repositories.twins import async_form
from database.validation import to_utc


def _counted(
    analysis_type: AnalysisType | str, found: AnalysisResult | None
) -> AnalysisResult | None:
    """Count a cached-result lookup as a hit or a miss, by analysis type."""
    kind = str(analysis_type.value if isinstance(analysis_type, AnalysisType) else analysis_type)
    analysis_cache.record(kind.lower(), "misses" if found is None else "hits")
    return found


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


class AnalysisRepository(BaseRepository[AnalysisResult]):
    """Cached analysis results.

    A result with a ``portfolio_id`` belongs to that portfolio's owner: with an
    acting user (``user_id=`` or the session's), every method sees the user's
    portfolios' results and the shared ones (no portfolio), may add either, and
    changes, invalidates or deletes only the user's own.
    """

    _scoped = True
    _owner_columns = frozenset({"portfolio_id"})

    def __init__(self) -> None:
        super().__init__(AnalysisResult)

    def _owned_by(self, user: uuid.UUID, *, writing: bool = False) -> ColumnElement[bool]:
        owned = AnalysisResult.portfolio_id.in_(owned_portfolios(user))
        # Shared results (no portfolio) are read by every user, changed by none.
        return owned if writing else or_(AnalysisResult.portfolio_id.is_(None), owned)

    def _owned_new(self, user: uuid.UUID, instance: AnalysisResult) -> Select[Any] | bool:
        if instance.portfolio_id is None:
            return True
        return select(
            exists().where(Portfolio.id == instance.portfolio_id, Portfolio.user_id == user)
        )

    def _refuse(self, instance: AnalysisResult) -> None:
        raise NotFoundError("Portfolio", instance.portfolio_id)

    # -- statements ------------------------------------------------------------------

    def _latest_statement(
        self,
        ticker: str,
        analysis_type: AnalysisType | str,
        portfolio_id: Any | None,
        strategy: str | None,
        now: dt.datetime | None,
        scope: builtins.list[ColumnElement[bool]],
    ) -> Select[AnalysisResult]:
        moment = to_utc(now, "now") if now is not None else utcnow()
        criteria: dict[str, Any] = {"ticker": ticker, "analysis_type": analysis_type}
        if portfolio_id is not None:
            criteria["portfolio_id"] = portfolio_id
        if strategy is not None:
            criteria["strategy"] = strategy
        return (
            select(AnalysisResult)
            .where(*self.criteria.where(criteria), *scope)
            .where(or_(AnalysisResult.expires_at.is_(None), AnalysisResult.expires_at > moment))
            .order_by(AnalysisResult.calculated_at.desc(), AnalysisResult.id)
            .limit(1)
        )

    def _history_statement(
        self,
        ticker: str,
        analysis_type: AnalysisType | str | None,
        limit: int,
        scope: builtins.list[ColumnElement[bool]],
    ) -> Select[AnalysisResult]:
        criteria: dict[str, Any] = {"ticker": ticker}
        if analysis_type is not None:
            criteria["analysis_type"] = analysis_type
        return self._select_statement(criteria, order_by="-calculated_at", limit=limit, scope=scope)

    def _invalidate_statement(
        self, scope: builtins.list[ColumnElement[bool]], **given: Any
    ) -> Update:
        filters = {k: v for k, v in given.items() if v is not None}
        if not filters:
            raise InvalidCriteriaError(
                "AnalysisResult",
                "invalidate",
                "needs at least one filter; it never expires everything",
            )
        now = utcnow()
        return (
            update(AnalysisResult)
            .where(*self.criteria.where(filters), *scope)
            .where(or_(AnalysisResult.expires_at.is_(None), AnalysisResult.expires_at > now))
            .values(expires_at=now, updated_at=now, version=AnalysisResult.version + 1)
            .execution_options(synchronize_session="fetch")
        )

    @staticmethod
    def _expired_statement(
        now: dt.datetime | None, scope: builtins.list[ColumnElement[bool]]
    ) -> Delete:
        moment = to_utc(now, "now") if now is not None else utcnow()
        return (
            delete(AnalysisResult)
            .where(AnalysisResult.expires_at <= moment, *scope)
            .execution_options(synchronize_session="fetch")
        )

    # -- operations ------------------------------------------------------------------

    def save(self, session: Session, /, **values: Any) -> AnalysisResult:
        """Store a result; one for a portfolio needs the acting user to own it."""
        return self.create(session, **values)

    async_save = async_form(save)

    def get_latest_valid(
        self,
        session: Session,
        ticker: str,
        analysis_type: AnalysisType | str,
        *,
        portfolio_id: Any | None = None,
        strategy: str | None = None,
        now: dt.datetime | None = None,
        user_id: Any = None,
    ) -> AnalysisResult | None:
        """The newest result that has not expired (``expires_at`` unset or in the future)."""
        statement = self._latest_statement(
            ticker, analysis_type, portfolio_id, strategy, now, self._scope(session, user_id)
        )
        with self._translating():
            return _counted(analysis_type, session.scalars(statement).first())

    async_get_latest_valid = async_form(get_latest_valid)

    def get_history(
        self,
        session: Session,
        ticker: str,
        analysis_type: AnalysisType | str | None = None,
        *,
        limit: int = 50,
        user_id: Any = None,
    ) -> builtins.list[AnalysisResult]:
        """Results for a ticker, newest first, expired ones included."""
        scope = self._scope(session, user_id)
        statement = self._history_statement(ticker, analysis_type, limit, scope)
        with self._translating():
            return builtins.list(session.scalars(statement))

    async_get_history = async_form(get_history)

    def invalidate(
        self,
        session: Session,
        *,
        ticker: str | None = None,
        analysis_type: AnalysisType | str | None = None,
        portfolio_id: Any | None = None,
        strategy: str | None = None,
        user_id: Any = None,
    ) -> int:
        """Expire the matching still-valid results now; returns how many."""
        statement = self._invalidate_statement(
            self._scope(session, user_id, writing=True),
            ticker=ticker,
            analysis_type=analysis_type,
            portfolio_id=portfolio_id,
            strategy=strategy,
        )
        with self._translating():
            return _rowcount(session.execute(statement))

    async_invalidate = async_form(invalidate)

    def delete_expired(
        self, session: Session, *, now: dt.datetime | None = None, user_id: Any = None
    ) -> int:
        """Delete every expired result in one statement; returns how many."""
        statement = self._expired_statement(now, self._scope(session, user_id, writing=True))
        with self._translating():
            return _rowcount(session.execute(statement))

    async_delete_expired = async_form(delete_expired)
