"""Latest-per-ticker reads whose cost stays flat as history grows.

Each statement reads about one index entry per ticker, whatever the number of
bars: it seeks the end of each ticker's range of the ``(ticker, date)`` primary
key (``options_data``: of the ``(ticker, expiration, fetched_at)`` index)
instead of grouping every bar of the tickers.

- The tickers asked for are one bound parameter, never SQL text: a ``text[]``
  through ``unnest`` on PostgreSQL, a JSON array through ``json_each`` on SQLite.
- All tickers (no list) are found by a loose index scan: a recursive CTE that
  seeks the next ticker after the last one (``min(ticker) WHERE ticker > ?``),
  one probe per distinct ticker rather than a read of every bar.
- The last bar of a ticker is, on PostgreSQL, a ``LATERAL`` subquery ``ORDER BY
  date DESC LIMIT 1`` (a backward index scan stopped at its first row); SQLite has
  no LATERAL, so there the bar is joined on ``date = (SELECT max(date) ... WHERE
  ticker = ?)``, which SQLite answers with a single seek of the index.

The rows are the model's columns (``PriceHistory.ticker``, ``.date``, ``.close``),
so they come back as the ORM types them: a normalised ticker, a ``date``, the
close as an exact ``Decimal``. Ordered by ticker; tickers without bars are absent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BindParameter,
    ColumnElement,
    FromClause,
    ScalarSelect,
    Select,
    and_,
    bindparam,
    func,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.types import Text, TypeEngine

from database.models import OptionsData, PriceHistory
from database.validation import normalize_ticker, to_date, to_utc

__all__ = [
    "LastBar",
    "last_bar",
    "latest_closes_statement",
    "latest_dates_statement",
    "latest_snapshot_time",
]


@dataclass(frozen=True)
class LastBar:
    """The last bar of a ticker (on or before a day), to join to rows that have the ticker.

    Join ``source`` on ``on``: on PostgreSQL a LATERAL subquery, ``ON true``; on
    SQLite an alias of ``price_history``, on the ticker and the correlated
    ``max(date)``. ``ticker``, ``date`` and ``close`` are its columns, typed as the
    model's; ``close`` is None when not asked for (PostgreSQL then reads the
    index alone).
    """

    source: FromClause
    on: ColumnElement[bool]
    ticker: ColumnElement[str]
    date: ColumnElement[dt.date]
    close: ColumnElement[Decimal] | None


def last_bar(
    dialect: str,
    ticker: ColumnElement[Any] | QueryableAttribute[Any],
    *,
    on_or_before: dt.date | None = None,
    correlate: Any = None,
    with_close: bool = True,
    name: str = "bar",
) -> LastBar:
    """The last bar of ``ticker``, a column of the rows it is joined to: one index seek each.

    ``correlate``: the table ``ticker`` belongs to when it is one of the enclosing
    query (``Position``); needed on SQLite only, where the ``max(date)`` subquery
    would otherwise not know which FROM is outside it.
    """
    bounded = [] if on_or_before is None else [PriceHistory.date <= on_or_before]
    if dialect == "postgresql":
        close = [PriceHistory.close] if with_close else []
        lateral = (
            select(PriceHistory.ticker, PriceHistory.date, *close)
            .where(PriceHistory.ticker == ticker, *bounded)
            .order_by(PriceHistory.date.desc())
            .limit(1)
            .lateral(name)
        )
        return LastBar(
            lateral,
            true(),
            lateral.c.ticker,
            lateral.c.date,
            lateral.c.close if with_close else None,
        )
    bar = PriceHistory.__table__.alias(name)
    last_day = select(func.max(PriceHistory.date)).where(PriceHistory.ticker == ticker, *bounded)
    if correlate is not None:
        last_day = last_day.correlate(correlate)
    on = and_(bar.c.ticker == ticker, bar.c.date == last_day.scalar_subquery())
    return LastBar(bar, on, bar.c.ticker, bar.c.date, bar.c.close if with_close else None)


def _wanted(tickers: Iterable[str]) -> list[str]:
    return sorted({normalize_ticker(t, "tickers") for t in tickers})


def _requested(dialect: str, tickers: Iterable[str]) -> tuple[FromClause, ColumnElement[Any]]:
    """The tickers asked for as a one-column FROM (one bound parameter)."""
    wanted = _wanted(tickers)
    if dialect == "postgresql":
        text_array: TypeEngine[Any] = ARRAY(Text)
        array: BindParameter[Any] = bindparam("tickers", wanted, type_=text_array)
        listed = func.unnest(array).table_valued("ticker").render_derived(name="wanted")
        return listed, listed.c.ticker
    as_json: BindParameter[Any] = bindparam("tickers", wanted, type_=JSON)
    listed = func.json_each(as_json).table_valued("value", name="wanted")
    return listed, listed.c.value


def _every_ticker() -> tuple[FromClause, ColumnElement[Any]]:
    """Every ticker of ``price_history`` by a loose index scan (a recursive CTE):
    the first ticker, then repeatedly the next one after it, each one index seek."""
    first = select(func.min(PriceHistory.ticker).label("ticker")).cte("tickers", recursive=True)
    following = select(func.min(PriceHistory.ticker)).where(PriceHistory.ticker > first.c.ticker)
    found = first.union_all(select(following.scalar_subquery()).where(first.c.ticker.is_not(None)))
    return found, found.c.ticker


def latest_closes_statement(dialect: str, tickers: Iterable[str]) -> Select[str, dt.date, Decimal]:
    """``(ticker, date, close)`` of the last bar of each of ``tickers`` that has bars."""
    listed, ticker = _requested(dialect, tickers)
    bar = last_bar(dialect, ticker)
    assert bar.close is not None
    return (
        select(bar.ticker, bar.date, bar.close)
        .select_from(listed)
        .join(bar.source, bar.on)
        .order_by(bar.ticker)
    )


def latest_dates_statement(dialect: str, tickers: Iterable[str] | None) -> Select[str, dt.date]:
    """``(ticker, last date)`` of each of ``tickers`` that has bars, or of every
    ticker of ``price_history`` when ``tickers`` is None (data freshness)."""
    listed, ticker = _every_ticker() if tickers is None else _requested(dialect, tickers)
    bar = last_bar(dialect, ticker, with_close=False)
    statement = select(bar.ticker, bar.date).select_from(listed).join(bar.source, bar.on)
    if tickers is None:  # the skip scan ends on a NULL: no bar to look for
        statement = statement.where(ticker.is_not(None))
    return statement.order_by(bar.ticker)


def latest_snapshot_time(
    ticker: str, expiration: dt.date, as_of: dt.datetime | None
) -> ScalarSelect[dt.datetime]:
    """The ``fetched_at`` of the last options snapshot of ``(ticker, expiration)`` at
    or before ``as_of`` (any time zone; naive is UTC): the first entry of a backward
    scan of the ``(ticker, expiration, fetched_at)`` index. NULL when there is none."""
    statement = select(OptionsData.fetched_at).where(
        OptionsData.ticker == normalize_ticker(ticker),
        OptionsData.expiration == to_date(expiration, "expiration"),
    )
    if as_of is not None:
        statement = statement.where(OptionsData.fetched_at <= to_utc(as_of, "as_of"))
    return statement.order_by(OptionsData.fetched_at.desc()).limit(1).scalar_subquery()
