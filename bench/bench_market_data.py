"""Market data at driver speed: the repositories against the raw driver, in the same run.

    python bench/bench_market_data.py                 # SQLite file + a throwaway PostgreSQL
    python bench/bench_market_data.py --url postgresql://postgres@127.0.0.1/bench --bars 200000

Measures, with medians of --rounds runs each:
1. N daily bars (1,000 tickers x N/1,000 days) into an empty table: ``upsert`` of a
   DataFrame vs raw psycopg ``COPY`` (PostgreSQL) or ``sqlite3.executemany`` in one
   transaction (SQLite) of the same rows, pre-built as tuples (not timed);
2. the same bars again (every row conflicts) vs the same raw baseline;
   both also through ``async_upsert`` (asyncpg / aiosqlite), against ``upsert``;
3. one ticker's 5,000 bars read as a DataFrame: ``get_frame`` vs the raw driver's
   fetch + ``DataFrame.from_records``;
4. 20,000 cache hits by key: ``async_get_cached_data`` vs raw asyncpg / aiosqlite
   ``SELECT`` by key (one session, one connection, for all of them).
The peak memory allocated during an ingest (tracemalloc) is reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import numpy as np
import pandas as pd
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import postgres
from database import DatabaseManager, migrate
from database.prices import YFINANCE_COLUMNS, prepare_bars, staging_rows
from database.repositories import MarketDataRepository, PriceHistoryRepository
from database.types import sqlite_timestamp

prices = PriceHistoryRepository()
cache = MarketDataRepository()
COLUMNS = (
    "ticker",
    "date",
    "open",
    "high",
    "low",
    "close",
    "adj_close",
    "volume",
    "dividends",
    "stock_splits",
    "data_source",
    "created_at",
    "updated_at",
)


def bars_frame(count: int, tickers: int = 1000) -> pd.DataFrame:
    days = max(count // tickers, 1)
    dates = pd.bdate_range("2000-01-03", periods=days)
    rng = np.random.default_rng(7)
    close = np.round(rng.uniform(5, 900, tickers * days), 4)
    return pd.DataFrame(
        {
            "Ticker": np.repeat([f"T{i:04d}" for i in range(tickers)], days),
            "Date": np.tile(dates.values, tickers),
            "Open": close,
            "High": np.round(close * 1.02, 4),
            "Low": np.round(close * 0.98, 4),
            "Close": close,
            "Adj Close": close,
            "Volume": rng.integers(0, 50_000_000, tickers * days).astype("float64"),
            "Dividends": 0.0,
            "Stock Splits": 0.0,
        }
    )


def timed(function: Callable[[], Any]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def reset(url: str) -> None:
    migrate.downgrade(url, "base", force=True)  # a scratch database
    migrate.upgrade(url)


def raw_rows(frame: pd.DataFrame, sqlite: bool) -> list[tuple[Any, ...]]:
    bars, _ = prepare_bars(frame)
    now = dt.datetime.now(dt.UTC)
    stamp: Any = sqlite_timestamp(now) if sqlite else now
    day: Any = dt.date.isoformat if sqlite else None
    return staging_rows(
        bars,
        prices="units" if sqlite else "floats",
        encode_date=day,
        extra=("yfinance", stamp, stamp),
    )


def raw_ingest(url: str, backend: str, rows: list[tuple[Any, ...]]) -> float:
    names = ", ".join(COLUMNS)
    if backend == "sqlite":
        connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        started = time.perf_counter()
        connection.execute("BEGIN")
        connection.executemany(
            f"INSERT INTO price_history ({names}) VALUES ({', '.join('?' * len(COLUMNS))})", rows
        )
        connection.execute("COMMIT")
        elapsed = time.perf_counter() - started
        connection.close()
        return elapsed
    with psycopg.connect(url) as connection:
        started = time.perf_counter()
        with (
            connection.cursor() as cursor,
            cursor.copy(f"COPY price_history ({names}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        connection.commit()
        return time.perf_counter() - started


def truncate(url: str, backend: str) -> None:
    if backend == "sqlite":
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as connection:
            connection.execute("DELETE FROM price_history")
            connection.commit()
    else:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("TRUNCATE price_history")


def ingest_memory_growth(url: str, backend: str, frame: pd.DataFrame) -> float:
    """Peak memory allocated during one ingest into an empty table (tracemalloc:
    Python objects and numpy/pandas buffers; the drivers' C buffers are not seen)."""
    truncate(url, backend)
    db = DatabaseManager(url, pool_size=1, max_overflow=0)
    with db.get_session() as session:
        tracemalloc.start()
        prices.upsert(session, frame)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    db.close()
    return peak / 2**20


async def async_ingest(db: DatabaseManager, frame: pd.DataFrame) -> tuple[float, float]:
    """``async_upsert`` into the empty table, then again: the seconds of each call."""
    async with db.get_async_session() as session:
        started = time.perf_counter()
        await prices.async_upsert(session, frame)
        empty = time.perf_counter() - started
    async with db.get_async_session() as session:
        started = time.perf_counter()
        await prices.async_upsert(session, frame)
        again = time.perf_counter() - started
    return empty, again  # the loop's engine is disposed as asyncio.run closes the loop


def bench_ingest(url: str, backend: str, frame: pd.DataFrame, rounds: int) -> None:
    growth = ingest_memory_growth(url, backend, frame)
    rows = raw_rows(frame, backend == "sqlite")
    db = DatabaseManager(url, pool_size=1, max_overflow=0)
    raw, empty, again, async_empty, async_again = [], [], [], [], []
    for _ in range(rounds):
        truncate(url, backend)
        raw.append(raw_ingest(url, backend, rows))
        truncate(url, backend)
        with db.get_session() as session:
            empty.append(timed(lambda: prices.upsert(session, frame)))
        with db.get_session() as session:
            again.append(timed(lambda: prices.upsert(session, frame)))
        truncate(url, backend)
        first, second = asyncio.run(async_ingest(db, frame))
        async_empty.append(first)
        async_again.append(second)
    db.close()
    n = len(frame)
    baseline = "psycopg COPY" if backend == "postgresql" else "sqlite3.executemany"
    r, e, a, ae, aa = (statistics.median(x) for x in (raw, empty, again, async_empty, async_again))
    print(f"  raw {baseline:<22} {n / r:>10,.0f} rows/s")
    print(f"  upsert, empty table        {n / e:>10,.0f} rows/s   ratio to raw {r / e:.2f}")
    print(f"  upsert, every row conflicts {n / a:>9,.0f} rows/s   ratio to raw {r / a:.2f}")
    print(f"  async_upsert, empty table  {n / ae:>10,.0f} rows/s   ratio to upsert {e / ae:.2f}")
    print(f"  async_upsert, all conflict {n / aa:>10,.0f} rows/s   ratio to upsert {a / aa:.2f}")
    print(f"  peak memory allocated during an ingest: {growth:.0f} MB (tracemalloc)")


def bench_frame_read(url: str, backend: str, rounds: int) -> None:
    frame = bars_frame(5000, tickers=1).assign(Ticker="READ")
    db = DatabaseManager(url, pool_size=1, max_overflow=0)
    with db.get_session() as session:
        prices.upsert(session, frame)
    query = (
        "SELECT date, open, high, low, close, adj_close, volume, dividends, stock_splits "
        "FROM price_history WHERE ticker = {} ORDER BY date"
    )
    names = YFINANCE_COLUMNS
    ours, raw = [], []
    if backend == "postgresql":
        connection: Any = psycopg.connect(url)
        placeholder = "%s"
    else:
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        placeholder = "?"

    def raw_read() -> pd.DataFrame:
        rows = connection.execute(query.format(placeholder), ("READ",)).fetchall()
        return pd.DataFrame.from_records(rows, columns=names).set_index("Date")

    with db.get_session() as session:
        for _ in range(rounds * 5):
            raw.append(timed(raw_read))
            ours.append(timed(lambda: prices.get_frame(session, "READ")))
    connection.close()
    db.close()
    r, o = statistics.median(raw), statistics.median(ours)
    print(
        f"  5,000-bar DataFrame: raw {r * 1e3:.1f} ms, get_frame {o * 1e3:.1f} ms,"
        f" ratio {o / r:.2f}"
    )


async def bench_cache_hits(url: str, backend: str, rounds: int, hits: int = 20_000) -> None:
    db = DatabaseManager(url, pool_size=1, max_overflow=0)
    keys = [f"K{i:03d}" for i in range(100)]
    async with db.get_async_session() as session:
        for ticker in keys:
            await cache.async_cache_market_data(
                session, ticker, "stock_info", {"price": 1.5, "name": ticker}
            )
    query = "SELECT data FROM market_data_cache WHERE cache_key = {} AND expires_at > {}"
    digests = [cache.make_cache_key(k, "stock_info") for k in keys]
    ours, raw = [], []
    if backend == "postgresql":
        plain = db.urls.sync_url.set(drivername="postgresql").render_as_string(hide_password=False)
        connection: Any = await asyncpg.connect(plain)

        async def raw_hits() -> None:
            now = dt.datetime.now(dt.UTC)
            for i in range(hits):
                await connection.fetchrow(query.format("$1", "$2"), digests[i % 100], now)
    else:
        connection = await aiosqlite.connect(db.urls.sync_url.database or "")

        async def raw_hits() -> None:
            now = sqlite_timestamp(dt.datetime.now(dt.UTC))
            for i in range(hits):
                async with connection.execute(
                    query.format("?", "?"), (digests[i % 100], now)
                ) as cursor:
                    await cursor.fetchone()

    async def our_hits() -> None:
        async with db.get_async_session() as session:
            for i in range(hits):
                await cache.async_get_cached_data(session, keys[i % 100], "stock_info")

    for _ in range(rounds):
        started = time.perf_counter()
        await raw_hits()
        raw.append((time.perf_counter() - started) / hits)
        started = time.perf_counter()
        await our_hits()
        ours.append((time.perf_counter() - started) / hits)
    await connection.close()
    await db.aclose()
    r, o = statistics.median(raw), statistics.median(ours)
    print(
        f"  cache hit by key: raw {r * 1e6:.0f} µs, async_get_cached_data {o * 1e6:.0f} µs,"
        f" ratio {o / r:.2f}"
    )


def main() -> None:
    # A million-bar merge is slow by design: keep the slow-query log out of the figures.
    logging.getLogger("database").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url", help="PostgreSQL URL of an empty database (default: a throwaway server)"
    )
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    arguments = parser.parse_args()
    frame = bars_frame(arguments.bars)
    with tempfile.TemporaryDirectory() as folder, postgres(arguments.url) as pg_url:
        targets = {"sqlite": f"sqlite:///{folder}/bench.db", "postgresql": pg_url}
        for backend, url in targets.items():
            if arguments.only and backend != arguments.only:
                continue
            print(f"\n{backend}: {len(frame):,} bars, median of {arguments.rounds} rounds")
            reset(url)
            bench_ingest(url, backend, frame, arguments.rounds)
            reset(url)
            bench_frame_read(url, backend, arguments.rounds)
            reset(url)
            asyncio.run(bench_cache_hits(url, backend, arguments.rounds))
            migrate.downgrade(url, "base", force=True)  # a scratch database


if __name__ == "__main__":
    main()
