"""Latest-per-ticker reads (database.repositories.latest): the naive queries' results,
on both backends, from plans that read about one index entry per ticker.

The naive forms (GROUP BY ticker / max(date)) read every bar of the tickers, so
their cost grows with history; the plans asserted here do not.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy import Select, and_, func, select
from sqlalchemy.dialects import postgresql, sqlite

from database import DatabaseManager
from database.models import OptionsData, PriceHistory
from database.models.enums import OptionType
from database.partitions import PARTITION_NAME
from database.repositories.latest import (
    latest_closes_statement,
    latest_dates_statement,
    latest_snapshot_time,
)
from tests.conftest import RawSQL

# Every PostgreSQL test here runs once more through PgBouncer (transaction pooling).
pytestmark = pytest.mark.pgbouncer

START = dt.date(2024, 1, 1)
# Bars per ticker: several lengths, one ticker with a single bar, one whose history
# ended earlier than the others'.
LENGTHS = {"AAPL": 40, "MSFT": 25, "BRK.B": 1, "KO": 12, "XOM": 3}
ENDED_EARLY = "KO"
ASKED = ["msft", " aapl", "NOPE", "BRK.B", "KO", "AAPL", "ZZZZ", "XOM"]


def _close(ticker: str, day: int) -> Decimal:
    exact = Decimal(100 + len(ticker)) + Decimal(day) / 7 + Decimal("0.000001")
    return exact.quantize(Decimal("0.000001"))


@pytest.fixture
def bars(db: DatabaseManager) -> None:
    with db.get_session() as session:
        for ticker, length in LENGTHS.items():
            first = START - dt.timedelta(days=30) if ticker == ENDED_EARLY else START
            session.add_all(
                PriceHistory(
                    ticker=ticker,
                    date=first + dt.timedelta(days=day),
                    close=_close(ticker, day),
                )
                for day in range(length)
            )


def _naive_last() -> Any:
    return (
        select(PriceHistory.ticker, func.max(PriceHistory.date).label("date"))
        .group_by(PriceHistory.ticker)
        .subquery()
    )


def _naive_closes(tickers: list[str]) -> Select[*tuple[Any, ...]]:
    last = _naive_last()
    return (
        select(PriceHistory.ticker, PriceHistory.date, PriceHistory.close)
        .join(last, and_(PriceHistory.ticker == last.c.ticker, PriceHistory.date == last.c.date))
        .where(PriceHistory.ticker.in_(tickers))
        .order_by(PriceHistory.ticker)
    )


def _naive_dates(tickers: list[str] | None) -> Select[*tuple[Any, ...]]:
    statement = select(PriceHistory.ticker, func.max(PriceHistory.date)).group_by(
        PriceHistory.ticker
    )
    if tickers is not None:
        statement = statement.where(PriceHistory.ticker.in_(tickers))
    return statement.order_by(PriceHistory.ticker)


NORMALISED = sorted({t.strip().upper() for t in ASKED})


@pytest.mark.usefixtures("bars")
def test_latest_closes_and_dates_equal_the_naive_queries(db: DatabaseManager, backend: str) -> None:
    with db.get_session() as session:
        closes = session.execute(latest_closes_statement(backend, ASKED)).all()
        assert closes == session.execute(_naive_closes(NORMALISED)).all()
        for tickers in (ASKED, None):
            dates = session.execute(latest_dates_statement(backend, tickers)).all()
            wanted = None if tickers is None else NORMALISED
            assert dates == session.execute(_naive_dates(wanted)).all()
        assert session.execute(latest_closes_statement(backend, [])).all() == []
        assert session.execute(latest_dates_statement(backend, [])).all() == []
    assert [ticker for ticker, _, _ in closes] == ["AAPL", "BRK.B", "KO", "MSFT", "XOM"]
    last = {ticker: (day, close) for ticker, day, close in closes}
    assert last["BRK.B"] == (START, _close("BRK.B", 0))
    assert last["KO"][0] == START - dt.timedelta(days=30 - 11)
    assert last["AAPL"] == (START + dt.timedelta(days=39), Decimal("109.571430"))
    for _, day, close in closes:  # the ORM's types: a date, an exact Decimal
        assert type(day) is dt.date
        assert isinstance(close, Decimal)
        assert close.as_tuple().exponent == -6


def test_latest_reads_of_an_empty_table(db: DatabaseManager, backend: str) -> None:
    with db.get_session() as session:
        assert session.execute(latest_closes_statement(backend, ["AAPL"])).all() == []
        assert session.execute(latest_dates_statement(backend, None)).all() == []


@pytest.mark.usefixtures("bars")
async def test_the_async_drivers_bind_the_ticker_list(db: DatabaseManager, backend: str) -> None:
    async with db.get_async_session() as session:
        closes = (await session.execute(latest_closes_statement(backend, ["aapl", "NOPE"]))).all()
        dates = (await session.execute(latest_dates_statement(backend, None))).all()
    assert closes == [("AAPL", START + dt.timedelta(days=39), Decimal("109.571430"))]
    assert [ticker for ticker, _ in dates] == sorted(LENGTHS)


def test_the_latest_options_snapshot_time(db: DatabaseManager, backend: str) -> None:
    expiration = dt.date(2026, 6, 19)
    moments = [dt.datetime(2026, 1, 2, 15, tzinfo=dt.UTC) + dt.timedelta(hours=h) for h in (0, 3)]
    with db.get_session() as session:
        for moment in moments:
            for ticker, when in (
                ("SPY", expiration),
                ("SPY", dt.date(2026, 7, 17)),
                ("QQQ", expiration),
            ):
                session.add(
                    OptionsData(
                        ticker=ticker,
                        contract_symbol=f"{ticker}{when:%y%m%d}C{moment:%H}",
                        option_type=OptionType.CALL,
                        strike=Decimal(500),
                        expiration=when,
                        fetched_at=moment if ticker == "SPY" else moment - dt.timedelta(days=1),
                    )
                )
    with db.get_session() as session:

        def latest(as_of: dt.datetime | None) -> Any:
            return session.scalar(select(latest_snapshot_time("spy", expiration, as_of)))

        assert latest(None) == moments[1]
        assert latest(moments[1] - dt.timedelta(seconds=1)) == moments[0]
        assert latest(moments[0].astimezone(dt.timezone(dt.timedelta(hours=-5)))) == moments[0]
        assert latest(moments[0] - dt.timedelta(microseconds=1)) is None


@pytest.mark.sqlite_only
@pytest.mark.usefixtures("bars")
def test_sqlite_plans_search_the_primary_key(db: DatabaseManager, backend: str) -> None:
    statements = [
        latest_closes_statement("sqlite", ASKED),
        latest_dates_statement("sqlite", ASKED),
        latest_dates_statement("sqlite", None),
    ]
    with db.get_session() as session:
        connection = session.connection()
        for statement in statements:
            compiled = statement.compile(dialect=sqlite.dialect())
            values = compiled.construct_params()
            params = tuple(
                json.dumps(values[key]) if isinstance(values[key], list) else values[key]
                for key in compiled.positiontup or ()
            )
            plan = [
                row[3]
                for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params)
            ]
            reads = [step for step in plan if "price_history" in step or " bar " in step]
            assert reads, plan
            assert all(step.startswith("SEARCH") for step in reads), plan
            assert all("USING" in step and "INDEX" in step for step in reads), plan


_SQLITE_BARS = (
    "WITH RECURSIVE t(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM t WHERE i < 19),"
    " d(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM d WHERE i < :last)"
    " INSERT INTO price_history"
    " (ticker, date, close, dividends, stock_splits, data_source, created_at, updated_at)"
    " SELECT 'T' || printf('%03d', t.i), date('2015-01-01', '+' || d.i || ' days'),"
    " 10000000 + d.i, 0, 0, 'test', '2025-01-01 00:00:00.000000', '2025-01-01 00:00:00.000000'"
    " FROM t, d"
)


@pytest.mark.sqlite_only
def test_sqlite_work_stays_flat_as_history_grows(
    db: DatabaseManager, backend: str, sql: RawSQL
) -> None:
    """SQLite's virtual-machine steps per statement: the same with 20 or 2,000 bars
    a ticker (the group-by they replace: 100 times as many)."""
    asked = [f"T{t:03d}" for t in range(0, 20, 2)] + ["NOPE"]
    statements: dict[str, Select[*tuple[Any, ...]]] = {
        "closes": latest_closes_statement(backend, asked),
        "dates": latest_dates_statement(backend, asked),
        "every": latest_dates_statement(backend, None),
        "naive": _naive_dates(None),
    }

    ticks = [0]

    def tick() -> int:
        ticks[0] += 1
        return 0  # go on

    def steps() -> dict[str, int]:
        counted = {}
        with db.get_session() as session:
            driver: Any = session.connection().connection.driver_connection
            driver.set_progress_handler(tick, 10)
            try:
                for name, statement in statements.items():
                    ticks[0] = 0
                    rows = session.execute(statement).all()
                    counted[name] = ticks[0]
                    assert len(rows) == (20 if name in ("every", "naive") else 10)
            finally:
                driver.set_progress_handler(None, 0)
        return counted

    sql.execute(_SQLITE_BARS, first=0, last=19)
    short = steps()
    sql.execute(_SQLITE_BARS, first=20, last=1999)
    long = steps()
    for name in ("closes", "dates", "every"):
        assert long[name] <= short[name] * 1.5 + 10, (name, short, long)
    assert long["naive"] >= short["naive"] * 50, (short, long)


# -- PostgreSQL: the plans on a history of 200 tickers ---------------------------------

TICKERS = 200
DAYS = 2000
SNAPSHOTS = 200  # per expiration, of CONTRACTS each
CONTRACTS = 20


@pytest.fixture
def pg(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def pg_bars(pg: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """T000..T199 with 2,000 down to 1,005 daily bars, and ONE with a single bar (in
    their years' partitions, as the repository would have made them)."""
    for year in range(2015, 2021):
        pg.execute(
            f"CREATE TABLE IF NOT EXISTS price_history_{year} PARTITION OF price_history"
            f" FOR VALUES FROM ('{year}-01-01') TO ('{year + 1}-01-01')"
        )
    pg.execute(
        "INSERT INTO price_history (ticker, date, close, dividends, stock_splits, data_source)"
        " SELECT 'T' || lpad(t::text, 3, '0'), date '2015-01-01' + d, 100 + t + d * 0.01,"
        " 0, 0, 'test' FROM generate_series(0, %(last)s) t,"
        " LATERAL generate_series(0, %(days)s - 1 - t * 5) d"
        " UNION ALL SELECT 'ONE', date '2020-02-02', 1, 0, 0, 'test'",
        {"last": TICKERS - 1, "days": DAYS},
    )
    pg.execute("VACUUM ANALYZE price_history")
    return pg


@pytest.fixture
def pg_options(pg: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """10 expirations x 200 hourly snapshots x 20 contracts of T000 (in their month's
    partition, as the repository would have made it)."""
    pg.execute(
        "CREATE TABLE IF NOT EXISTS options_data_2025_01 PARTITION OF options_data"
        " FOR VALUES FROM ('2025-01-01 00:00+00') TO ('2025-02-01 00:00+00')"
    )
    pg.execute(
        "INSERT INTO options_data (id, ticker, contract_symbol, option_type, strike,"
        " expiration, fetched_at)"
        " SELECT gen_random_uuid(), 'T000', 'T000' || e || 'C' || k, 'call', 100 + k,"
        " date '2026-01-16' + 7 * e, timestamptz '2025-01-01 00:00+00' + s * interval '1 hour'"
        " FROM generate_series(0, 9) e, generate_series(0, %(snapshots)s - 1) s,"
        " generate_series(0, %(contracts)s - 1) k",
        {"snapshots": SNAPSHOTS, "contracts": CONTRACTS},
    )
    pg.execute("VACUUM ANALYZE options_data")
    return pg


def _plan(conn: psycopg.Connection[Any], statement: Select[*tuple[Any, ...]]) -> dict[str, Any]:
    compiled = statement.compile(
        dialect=postgresql.psycopg.dialect(),  # type: ignore[no-untyped-call]
        compile_kwargs={"render_postcompile": True},
    )
    row = conn.execute(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + str(compiled), compiled.params
    ).fetchone()
    assert row is not None
    return row[0][0]["Plan"]  # type: ignore[no-any-return]


def _partitions(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass", (table,)
    ).fetchone()
    return max(1, int(row[0]) if row else 1)


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def _of(node: dict[str, Any], table: str) -> bool:
    """Whether ``node`` scans ``table`` or one of its partitions (``price_history_2024``)."""
    name = str(node.get("Relation Name", ""))
    return name == table or (name.startswith(table + "_") and bool(PARTITION_NAME.match(name)))


def _rows_read(plan: dict[str, Any], table: str) -> int:
    """Rows the plan's scans of ``table`` (or its partitions) returned, over all their loops."""
    scans = [n for n in _nodes(plan) if _of(n, table)]
    assert scans, f"no scan of {table}"
    return sum(int(n["Actual Rows"]) * int(n["Actual Loops"]) for n in scans)


def _reads(plan: dict[str, Any], table: str) -> int:
    """Like _rows_read, and every scan of ``table`` is an index scan (no Seq Scan, but of
    an empty partition: the planner's cheapest way to find nothing there)."""
    kinds = {
        n["Node Type"]
        for n in _nodes(plan)
        if _of(n, table) and (n["Actual Rows"] or n.get("Rows Removed by Filter"))
    }
    assert kinds <= {"Index Scan", "Index Only Scan"}, kinds
    return _rows_read(plan, table)


@pytest.mark.postgresql_only
def test_postgresql_reads_one_index_entry_per_ticker(
    pg_bars: psycopg.Connection[Any], backend: str
) -> None:
    pg = pg_bars
    asked = [f"T{t:03d}" for t in range(0, TICKERS, 4)] + ["ONE", "NOPE"]  # 50 + 2
    # (Actual Rows is a per-loop average, rounded: the missing ticker may count as 1.)
    # Each yearly partition's index is probed once per ticker (the default partition
    # keeps PostgreSQL from reading the partitions newest first and stopping).
    years = _partitions(pg, "price_history")
    closes = _plan(pg, latest_closes_statement(backend, asked))
    assert closes["Actual Rows"] == 51
    assert _reads(closes, "price_history") <= len(asked) * years

    dates = _plan(pg, latest_dates_statement(backend, asked))
    assert dates["Actual Rows"] == 51
    assert _reads(dates, "price_history") <= len(asked) * years

    every = _plan(pg, latest_dates_statement(backend, None))
    assert every["Actual Rows"] == TICKERS + 1
    # The skip scan's first and next-ticker probes, then one last bar per ticker.
    assert _reads(every, "price_history") <= (2 * (TICKERS + 1) + 2) * years

    # What the group-by it replaces reads, measured the same way: every bar.
    naive = _plan(pg, _naive_dates(asked))
    assert _rows_read(naive, "price_history") > 50 * 1000


@pytest.mark.postgresql_only
def test_postgresql_reads_one_options_snapshot(
    pg_options: psycopg.Connection[Any], backend: str
) -> None:
    pg = pg_options
    expiration = dt.date(2026, 1, 16) + dt.timedelta(days=21)
    as_of = dt.datetime(2025, 1, 5, 12, 30, tzinfo=dt.UTC)  # snapshot 108 is the last one
    for moment in (as_of, None):
        chain = (
            select(OptionsData)
            .where(
                OptionsData.ticker == "T000",
                OptionsData.expiration == expiration,
                OptionsData.fetched_at == latest_snapshot_time("T000", expiration, moment),
            )
            .order_by(OptionsData.option_type, OptionsData.strike)
        )
        plan = _plan(pg, chain)
        assert plan["Actual Rows"] == CONTRACTS
        # One index entry for the snapshot time, then its contracts.
        assert _reads(plan, "options_data") <= CONTRACTS + 1
