"""Issue 11's targets: the library against the raw drivers, as ratios measured in one run.

    python bench/bench_targets.py                    # a throwaway PostgreSQL (+ a SQLite file)
    python bench/bench_targets.py --url postgresql://postgres@127.0.0.1/bench --rounds 5
    python bench/bench_targets.py --only options,latest --profile
    python bench/bench_targets.py --scale            # adds the 10x-bar latest-closes figures

Every ratio is ours / baseline: the median over --rounds of the library called the
way an application calls it, over the median of the raw driver doing the same work,
interleaved round by round in the same run. The workloads (names for --only):

options    ``store_chain`` of a 2,000-contract chain (yfinance ``option_chain`` frames:
           1,000 calls + 1,000 puts), a new ``fetched_at`` each time, vs psycopg: the
           frames' rows COPYed into a temp table + one ``INSERT ... SELECT ... ON
           CONFLICT (contract_symbol, fetched_at) DO NOTHING``.            <= 1.5
filecache  ``import_directory`` of 10,000 old-cache files (small dicts and small
           DataFrames) vs ``pickle.load`` of each + JSON + psycopg COPY into
           ``market_data_cache``; the table emptied before each.           <= 1.5
cache      a cache hit with a session per hit (``async_get_cached_data``) vs an
           asyncpg pool's ``acquire`` + ``fetchrow`` + ``json.loads``; --hits hits by
           1, 8 and 64 tasks, pools of 10 connections on both sides.      <= 2 each
asof       ``async_get_close_as_of`` with a session per read vs asyncpg, the same
           way (the same columns, ``ORDER BY date DESC LIMIT 1``).         <= 2.5 each
latest     ``get_latest_closes`` of 500 tickers at --bars bars (1,000 tickers) vs
           psycopg ``unnest`` + ``LATERAL (... ORDER BY date DESC LIMIT 1)``; with
           --scale also at 10x the bars (10x the days per ticker), and ours(10x) /
           ours(1x).                                                     <= 2, < 1.3
ingest     --bars bars (yfinance-shaped, a Ticker column) into an empty
           ``price_history``: ``upsert`` vs psycopg COPY of the rows pre-built as
           tuples (not timed), <= 1.11 (speed >= 0.9x); vs pandas ``to_sql`` with a
           COPY ``method`` on the frame renamed to the table's columns, <= 1.0;
           ``async_upsert`` vs ``upsert``, <= 1.10.
sqlite     the same bars into an empty table of a SQLite file, then again (every row
           conflicts): ``upsert`` vs ``sqlite3.executemany`` in one transaction
           (INSERT, then INSERT ... ON CONFLICT DO UPDATE).                <= 1.25 each

The bars for ``asof`` and ``latest`` are loaded with COPY, not the repository.
A session's time includes opening it and its commit. With --profile, the library's
side of each workload that misses is run once more under cProfile, and its top
lines (by own time) are printed; the async ones with 8 tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import hashlib
import io
import itertools
import json
import logging
import os
import pickle
import pstats
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import asyncpg
import numpy as np
import pandas as pd
import psycopg
import sqlalchemy
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_market_data import COLUMNS, bars_frame
from bench.common import postgres
from database import DatabaseManager, migrate
from database.filecache.importer import import_directory
from database.models import PriceHistory
from database.models.enums import DataType
from database.repositories import (
    MarketDataRepository,
    OptionsDataRepository,
    PriceHistoryRepository,
)

WORKLOADS = ("options", "filecache", "cache", "asof", "latest", "ingest", "sqlite")
TASKS = (1, 8, 64)
TICKERS = 1000
POOL = 10  # connections, on both sides of the async workloads

prices = PriceHistoryRepository()
cache = MarketDataRepository()
options = OptionsDataRepository()

BAR_COLUMNS = COLUMNS  # price_history's, in table order
FRAME_COLUMNS = {  # yfinance's names -> price_history's
    "Ticker": "ticker",
    "Date": "date",
    "Open": "open",
    "High": "high",
    "Low": "low",
    "Close": "close",
    "Adj Close": "adj_close",
    "Volume": "volume",
    "Dividends": "dividends",
    "Stock Splits": "stock_splits",
}
PRICE_COLUMNS = ("open", "high", "low", "close", "adj_close", "dividends", "stock_splits")


# -- measuring and reporting --------------------------------------------------------------


@dataclass
class Check:
    """One target: ``ours`` and ``baseline`` are median seconds (per call, or per hit)."""

    workload: str
    measure: str
    ours: float
    baseline: float
    limit: float
    strict: bool = False  # the ratio must be below the limit, not at most it
    # Runs ours under the profiler it is given (enabled around the measured part only).
    profile: Callable[[cProfile.Profile], Any] | None = field(default=None, repr=False)

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline

    @property
    def passed(self) -> bool:
        return self.ratio < self.limit if self.strict else self.ratio <= self.limit

    @property
    def target(self) -> str:
        return f"{'<' if self.strict else '<='} {self.limit:.2f}"


def shown(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def line(check: Check) -> str:
    verdict = "PASS" if check.passed else "MISS"
    return (
        f"  {check.workload:<10} {check.measure:<34} {shown(check.ours):>10} "
        f"{shown(check.baseline):>10} {check.ratio:>7.2f}  {check.target:<8} {verdict}"
    )


HEADER = (
    f"  {'workload':<10} {'measure':<34} {'ours':>10} {'baseline':>10} {'ratio':>7}"
    f"  {'target':<8} verdict"
)


def medians(rounds: int, sides: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Each side's median seconds, the sides run one after the other in each round."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, side in sides.items():
            times[name].append(side())
    return {name: statistics.median(values) for name, values in times.items()}


def timed(function: Callable[[], Any]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def each(function: Callable[[], Any], times: int) -> float:
    """Seconds per call of ``times`` calls one after the other."""
    started = time.perf_counter()
    for _ in range(times):
        function()
    return (time.perf_counter() - started) / times


def whole(function: Callable[[], Any]) -> Callable[[cProfile.Profile], Any]:
    """A profile of all of ``function``."""
    return lambda profiler: profiler.runcall(function)


def profiled(profile: Callable[[cProfile.Profile], Any], top: int = 25) -> str:
    profiler = cProfile.Profile()
    profile(profiler)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(top)
    return out.getvalue()


@dataclass
class Context:
    url: str  # postgresql://... (the drivers' form; the manager takes it too)
    rounds: int
    bars: int
    scale: bool
    hits: int
    files: int
    scratch: Path
    loaded: int = 0  # bars in price_history, loaded by load_bars (0: unknown or none)


def plain_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


# -- 1. an option chain -------------------------------------------------------------------

EXPIRATION = dt.date(2030, 1, 18)
OPTION_COLUMNS = (
    "ticker",
    "contract_symbol",
    "option_type",
    "strike",
    "expiration",
    "last_price",
    "bid",
    "ask",
    "volume",
    "open_interest",
    "implied_volatility",
    "last_trade_date",
    "fetched_at",
)
CHAIN_STAGING = """
CREATE TEMP TABLE chain_staging (
    ticker text, contract_symbol text, option_type text, strike numeric, expiration date,
    last_price numeric, bid numeric, ask numeric, volume bigint, open_interest bigint,
    implied_volatility numeric, last_trade_date timestamptz, fetched_at timestamptz
) ON COMMIT DROP
"""
CHAIN_INSERT = (
    f"INSERT INTO options_data (id, {', '.join(OPTION_COLUMNS)}) "
    f"SELECT gen_random_uuid(), {', '.join(OPTION_COLUMNS)} FROM chain_staging "
    "ON CONFLICT (contract_symbol, fetched_at) DO NOTHING"
)


def chain_frames(ticker: str, count: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``count`` calls and ``count`` puts of one expiration, shaped as yfinance's
    ``option_chain()`` frames, distinct strikes 0.5 apart."""
    rng = np.random.default_rng(11)
    strikes = np.round(5.0 + 0.5 * np.arange(count), 2)
    traded = pd.Timestamp("2029-12-31 20:00", tz="UTC")
    frames = []
    for letter in "CP":
        last = np.round(rng.uniform(0.01, 400, count), 2)
        volume = rng.integers(0, 20_000, count).astype("float64")
        volume[::7] = np.nan  # yfinance's volume has gaps
        frames.append(
            pd.DataFrame(
                {
                    "contractSymbol": [
                        f"{ticker}{EXPIRATION:%y%m%d}{letter}{round(s * 1000):08d}" for s in strikes
                    ],
                    "lastTradeDate": traded
                    - pd.to_timedelta(rng.integers(0, 5 * 86400, count), unit="s"),
                    "strike": strikes,
                    "lastPrice": last,
                    "bid": np.round(last * 0.99, 2),
                    "ask": np.round(last * 1.01, 2),
                    "change": np.round(rng.normal(0, 1, count), 6),
                    "percentChange": np.round(rng.normal(0, 5, count), 6),
                    "volume": volume,
                    "openInterest": rng.integers(0, 50_000, count),
                    "impliedVolatility": np.round(rng.uniform(0.05, 3.0, count), 8),
                    "inTheMoney": strikes < 250 if letter == "C" else strikes > 250,
                    "contractSize": "REGULAR",
                    "currency": "USD",
                }
            )
        )
    return frames[0], frames[1]


def chain_rows(
    ticker: str, frame: pd.DataFrame, kind: str, fetched_at: dt.datetime
) -> list[tuple[Any, ...]]:
    """What a hand-written loader sends for one frame: a row per contract."""
    count = len(frame)
    volume = [None if v != v else int(v) for v in frame["volume"].tolist()]
    return list(
        zip(
            itertools.repeat(ticker, count),
            frame["contractSymbol"].tolist(),
            itertools.repeat(kind, count),
            frame["strike"].tolist(),
            itertools.repeat(EXPIRATION, count),
            frame["lastPrice"].tolist(),
            frame["bid"].tolist(),
            frame["ask"].tolist(),
            volume,
            frame["openInterest"].tolist(),
            frame["impliedVolatility"].tolist(),
            frame["lastTradeDate"].tolist(),
            itertools.repeat(fetched_at, count),
            strict=True,
        )
    )


def bench_options(ctx: Context, contracts: int = 2000, repeat: int = 5) -> list[Check]:
    calls, puts = chain_frames("NVDA", contracts // 2)
    db = DatabaseManager(ctx.url, pool_size=1, max_overflow=0)
    connection = psycopg.connect(ctx.url)
    moments = (
        dt.datetime(2030, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=n) for n in itertools.count()
    )

    def ours() -> None:
        with db.get_session() as session:
            stored = options.store_chain(
                session, "NVDA", calls=calls, puts=puts, fetched_at=next(moments)
            )
        assert stored.inserted == contracts, stored

    def raw() -> None:
        moment = next(moments)
        rows = chain_rows("NVDA", calls, "call", moment) + chain_rows("NVDA", puts, "put", moment)
        with connection.cursor() as cursor:
            cursor.execute(CHAIN_STAGING)
            with cursor.copy("COPY chain_staging FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(CHAIN_INSERT)
            assert cursor.rowcount == contracts
        connection.commit()

    ours()
    raw()  # warm: pools, prepared statements, the table's first pages
    found = medians(
        ctx.rounds,
        {
            "raw": lambda: each(raw, repeat),
            "ours": lambda: each(ours, repeat),
        },
    )
    connection.close()
    return [
        Check(
            "options",
            f"store_chain, {contracts:,} contracts",
            found["ours"],
            found["raw"],
            1.5,
            profile=whole(ours),
        )
    ]


# -- 2. the old file cache ----------------------------------------------------------------

CACHE_COPY = (
    "COPY market_data_cache (id, cache_key, ticker, data_type, data, data_source, "
    "parameters, cached_at, expires_at) FROM STDIN"
)


def write_cache_folder(folder: Path, count: int) -> None:
    """``count`` files in BuffetBot's old cache format: a pickle of
    ``{"data", "timestamp", "expiration"}``; every other one's data a small DataFrame."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    now = time.time()
    index = pd.date_range("2024-01-02", periods=5, freq="B", tz="America/New_York", name="Date")
    for n in range(count):
        if n % 2:
            close = np.round(rng.uniform(5, 900, 5), 4)
            data: Any = pd.DataFrame(
                {
                    "Open": close,
                    "High": np.round(close * 1.01, 4),
                    "Low": np.round(close * 0.99, 4),
                    "Close": close,
                    "Volume": rng.integers(0, 10_000_000, 5),
                },
                index=index,
            )
        else:
            data = {
                "symbol": f"T{n:05d}",
                "price": float(np.round(rng.uniform(5, 900), 2)),
                "pe": float(np.round(rng.uniform(5, 60), 2)),
                "sector": "Technology",
                "tags": ["large-cap", "dividend"],
            }
        key = hashlib.md5(f"get_stock_info|T{n:05d}".encode(), usedforsecurity=False).hexdigest()
        payload = {"data": data, "timestamp": now, "expiration": 30 * 86400}
        (folder / f"{key}.cache").write_bytes(
            pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        )


def raw_import(connection: psycopg.Connection[Any], folder: Path) -> int:
    """The baseline: unpickle each file, its data as JSON, one COPY."""
    count = 0
    with connection.cursor() as cursor, cursor.copy(CACHE_COPY) as copy:
        for entry in os.scandir(folder):
            if not entry.name.endswith(".cache"):
                continue
            with open(entry.path, "rb") as file:
                cached = pickle.load(file)  # noqa: S301 - the baseline: what a trusting loader does
            data = cached["data"]
            if isinstance(data, pd.DataFrame):
                encoded = data.to_json(orient="split", date_format="iso")
            else:
                encoded = json.dumps(data)
            key = entry.name.removesuffix(".cache")
            stamp = dt.datetime.fromtimestamp(cached["timestamp"], dt.UTC)
            copy.write_row(
                (
                    uuid.uuid4(),
                    hashlib.sha256(key.encode()).hexdigest(),
                    "FILECACHE",
                    "file_cache",
                    f'{{"payload": {encoded}}}',
                    "file_cache",
                    json.dumps({"key": key}),
                    stamp,
                    stamp + dt.timedelta(seconds=cached["expiration"]),
                )
            )
            count += 1
    connection.commit()
    return count


def bench_filecache(ctx: Context) -> list[Check]:
    files = ctx.files
    folder = ctx.scratch / "filecache"
    write_cache_folder(folder, files)
    db = DatabaseManager(ctx.url, pool_size=1, max_overflow=0)
    connection = psycopg.connect(ctx.url)

    def empty() -> None:
        execute(ctx.url, "TRUNCATE market_data_cache")

    def ours() -> float:
        empty()
        took = time.perf_counter()
        report = import_directory(db, folder)
        took = time.perf_counter() - took
        assert not report.rejected, report.rejected[:3]
        assert report.imported == files, report
        return took

    def raw() -> float:
        empty()
        took = time.perf_counter()
        assert raw_import(connection, folder) == files
        return time.perf_counter() - took

    found = medians(ctx.rounds, {"raw": raw, "ours": ours})
    connection.close()
    db.close()
    return [
        Check(
            "filecache",
            f"import_directory, {files:,} files",
            found["ours"],
            found["raw"],
            1.5,
            profile=whole(ours),
        )
    ]


# -- the async read workloads: a session (or a pool connection) per call -------------------


async def per_call(call: Callable[[Any], Awaitable[Any]], work: Sequence[Any], tasks: int) -> float:
    """Seconds per call with ``tasks`` tasks making the calls of ``work`` between them."""
    queue = iter(work)

    async def worker() -> None:
        for item in queue:
            await call(item)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return (time.perf_counter() - started) / len(work)


async def concurrent_checks(
    workload: str,
    measure: str,
    limit: float,
    rounds: int,
    ours: Callable[[Any], Awaitable[Any]],
    raw: Callable[[Any], Awaitable[Any]],
    work: Sequence[Any],
) -> list[tuple[str, float, float]]:
    """(measure, ours, raw) per number of tasks, medians of ``rounds``, interleaved."""
    await per_call(raw, work[:200], 8)
    await per_call(ours, work[:200], 8)  # warm: both pools full, statements prepared
    found = []
    for tasks in TASKS:
        times: dict[str, list[float]] = {"raw": [], "ours": []}
        for _ in range(rounds):
            times["raw"].append(await per_call(raw, work, tasks))
            times["ours"].append(await per_call(ours, work, tasks))
        found.append(
            (
                f"{measure}, {tasks} task{'s' if tasks > 1 else ''}",
                statistics.median(times["ours"]),
                statistics.median(times["raw"]),
            )
        )
        print(line(Check(workload, found[-1][0], found[-1][1], found[-1][2], limit)), flush=True)
    return found


HIT_SQL = "SELECT data FROM market_data_cache WHERE cache_key = $1 AND expires_at > $2"
PARAMETERS = {"period": "1y", "interval": "1d"}


def cache_tickers() -> list[str]:
    return [f"C{n:03d}" for n in range(100)]


async def fill_cache(db: DatabaseManager) -> None:
    async with db.get_async_session() as session:
        for ticker in cache_tickers():
            await cache.async_cache_market_data(
                session,
                ticker,
                DataType.PRICE_HISTORY,
                {"ticker": ticker, "close": 101.25, "currency": "USD"},
                parameters=PARAMETERS,
            )


def cache_calls(
    db: DatabaseManager, pool: asyncpg.Pool | None
) -> tuple[Callable[[str], Awaitable[Any]], Callable[[str], Awaitable[Any]]]:
    digests = {
        t: cache.make_cache_key(t, DataType.PRICE_HISTORY, PARAMETERS) for t in cache_tickers()
    }

    async def ours(ticker: str) -> Any:
        async with db.get_async_session() as session:
            found = await cache.async_get_cached_data(
                session, ticker, DataType.PRICE_HISTORY, PARAMETERS
            )
        assert found is not None
        return found

    async def raw(ticker: str) -> Any:
        assert pool is not None
        async with pool.acquire() as connection:
            row = await connection.fetchrow(HIT_SQL, digests[ticker], dt.datetime.now(dt.UTC))
        return json.loads(row["data"])

    return ours, raw


def bench_cache(ctx: Context) -> list[Check]:
    tickers = cache_tickers()
    rng = random.Random(5)
    work = [rng.choice(tickers) for _ in range(ctx.hits)]

    async def run() -> list[tuple[str, float, float]]:
        db = DatabaseManager(ctx.url, pool_size=POOL, max_overflow=0)
        pool = await asyncpg.create_pool(ctx.url, min_size=POOL, max_size=POOL)
        try:
            await fill_cache(db)
            ours, raw = cache_calls(db, pool)
            return await concurrent_checks("cache", "cache hit", 2.0, ctx.rounds, ours, raw, work)
        finally:
            await pool.close()
            await db.aclose()

    async def profile_run(profiler: cProfile.Profile) -> None:
        db = DatabaseManager(ctx.url, pool_size=POOL, max_overflow=0)
        try:
            await fill_cache(db)  # another workload's profile may have emptied the table
            ours, _ = cache_calls(db, None)
            await per_call(ours, work[:200], 8)  # warm
            profiler.enable()
            await per_call(ours, work, 8)
            profiler.disable()
        finally:
            await db.aclose()

    def profile(profiler: cProfile.Profile) -> None:
        asyncio.run(profile_run(profiler))

    return [Check("cache", m, o, r, 2.0, profile=profile) for m, o, r in asyncio.run(run())]


ASOF_SQL = (
    f"SELECT {', '.join(BAR_COLUMNS)} FROM price_history "
    "WHERE ticker = $1 AND date <= $2 ORDER BY date DESC LIMIT 1"
)


def asof_calls(
    db: DatabaseManager, pool: asyncpg.Pool | None
) -> tuple[Callable[[Any], Awaitable[Any]], Callable[[Any], Awaitable[Any]]]:
    async def ours(item: tuple[str, dt.date]) -> Any:
        async with db.get_async_session() as session:
            bar = await prices.async_get_close_as_of(session, *item)
        assert bar is not None
        return bar

    async def raw(item: tuple[str, dt.date]) -> Any:
        assert pool is not None
        async with pool.acquire() as connection:
            return await connection.fetchrow(ASOF_SQL, *item)

    return ours, raw


def bench_asof(ctx: Context) -> list[Check]:
    load_bars(ctx, ctx.bars)
    days = pd.bdate_range("2000-01-03", periods=ctx.bars // TICKERS).date
    rng = random.Random(9)
    work = [
        (f"T{rng.randrange(TICKERS):04d}", days[rng.randrange(len(days))] + dt.timedelta(days=1))
        for _ in range(ctx.hits)
    ]

    async def run() -> list[tuple[str, float, float]]:
        db = DatabaseManager(ctx.url, pool_size=POOL, max_overflow=0)
        pool = await asyncpg.create_pool(ctx.url, min_size=POOL, max_size=POOL)
        try:
            ours, raw = asof_calls(db, pool)
            return await concurrent_checks("asof", "close as of", 2.5, ctx.rounds, ours, raw, work)
        finally:
            await pool.close()
            await db.aclose()

    async def profile_run(profiler: cProfile.Profile) -> None:
        db = DatabaseManager(ctx.url, pool_size=POOL, max_overflow=0)
        try:
            ours, _ = asof_calls(db, None)
            await per_call(ours, work[:200], 8)  # warm
            profiler.enable()
            await per_call(ours, work, 8)
            profiler.disable()
        finally:
            await db.aclose()

    def profile(profiler: cProfile.Profile) -> None:
        load_bars(ctx, ctx.bars)  # another workload's profile may have emptied the table
        asyncio.run(profile_run(profiler))

    return [Check("asof", m, o, r, 2.5, profile=profile) for m, o, r in asyncio.run(run())]


# -- bars: built, loaded by COPY ----------------------------------------------------------


def load_bars(ctx: Context, count: int) -> None:
    """``count`` bars (TICKERS tickers) in an otherwise empty price_history, by COPY of CSV
    made a block of tickers at a time; then VACUUM ANALYZE, as autovacuum would."""
    if ctx.loaded == count:
        return
    started = time.perf_counter()
    days = count // TICKERS
    execute(ctx.url, "TRUNCATE price_history")
    block = max(1, 1_000_000 // days)  # tickers per CSV block: ~1M rows
    names = ", ".join(BAR_COLUMNS[:11])
    with (
        psycopg.connect(ctx.url) as connection,
        connection.cursor() as cursor,
        cursor.copy(f"COPY price_history ({names}) FROM STDIN (FORMAT csv)") as copy,
    ):
        for first in range(0, TICKERS, block):
            frame = bars_frame(days * min(block, TICKERS - first), min(block, TICKERS - first))
            frame["Ticker"] = np.repeat(
                [f"T{i:04d}" for i in range(first, min(first + block, TICKERS))], days
            )
            frame["Volume"] = frame["Volume"].astype("int64")
            frame["data_source"] = "yfinance"
            copy.write(frame.to_csv(header=False, index=False, date_format="%Y-%m-%d"))
    execute(ctx.url, "VACUUM ANALYZE price_history")
    ctx.loaded = count
    print(f"  ({count:,} bars loaded by COPY in {time.perf_counter() - started:.0f} s)")


# -- 3. the latest closes -----------------------------------------------------------------

LATEST_SQL = (
    "SELECT t, p.date, p.close FROM unnest(%s::text[]) t CROSS JOIN LATERAL "
    "(SELECT date, close FROM price_history WHERE ticker = t ORDER BY date DESC LIMIT 1) p"
)


def bench_latest(ctx: Context, wanted: int = 500, repeat: int = 10) -> list[Check]:
    tickers = [f"T{n:04d}" for n in range(0, TICKERS, TICKERS // wanted)][:wanted]
    db = DatabaseManager(ctx.url, pool_size=1, max_overflow=0)
    connection = psycopg.connect(ctx.url, autocommit=True)

    def ours() -> None:
        with db.get_session() as session:
            closes = prices.get_latest_closes(session, tickers)
        assert len(closes) == wanted

    def raw() -> None:
        rows = connection.execute(LATEST_SQL, (tickers,)).fetchall()
        assert len(rows) == wanted

    def measure(bars: int) -> Check:
        load_bars(ctx, bars)
        ours()
        raw()
        found = medians(
            ctx.rounds,
            {
                "raw": lambda: each(raw, repeat),
                "ours": lambda: each(ours, repeat),
            },
        )

        def profile(profiler: cProfile.Profile) -> None:
            load_bars(ctx, bars)  # another workload's profile may have emptied the table
            profiler.runcall(each, ours, repeat)

        check = Check(
            "latest",
            f"get_latest_closes, {wanted} of {bars:,}",
            found["ours"],
            found["raw"],
            2.0,
            profile=profile,
        )
        print(line(check), flush=True)
        return check

    checks = [measure(ctx.bars)]
    if ctx.scale:
        checks.append(measure(ctx.bars * 10))
        checks.append(
            Check(
                "latest",
                "growth: ours(10x bars) / ours(1x)",
                checks[1].ours,
                checks[0].ours,
                1.3,
                strict=True,
            )
        )
    connection.close()
    db.close()
    return checks


# -- 6. and 7. bars into an empty table ---------------------------------------------------


def raw_bar_rows(frame: pd.DataFrame, sqlite: bool) -> list[tuple[Any, ...]]:
    """The frame's rows as the driver takes them for ``price_history``: on SQLite, as the
    table stores them (prices as integers in units of 10^-scale, dates and times as
    text); on PostgreSQL, floats (rounded by NUMERIC) and dates."""
    now = dt.datetime.now(dt.UTC)
    count = len(frame)
    columns: list[Any] = [frame["Ticker"].tolist()]
    dates = pd.DatetimeIndex(frame["Date"])
    columns.append(dates.strftime("%Y-%m-%d").tolist() if sqlite else list(dates.date))
    table = PriceHistory.__table__
    for yahoo, name in FRAME_COLUMNS.items():
        if name in ("ticker", "date"):
            continue
        values = frame[yahoo].to_numpy()
        if name == "volume":
            columns.append(values.astype("int64").tolist())
        elif sqlite:
            scale = 10 ** (cast(sqlalchemy.Numeric[Any], table.c[name].type).scale or 0)
            columns.append(np.rint(values * scale).astype("int64").tolist())
        else:
            columns.append(values.tolist())
    stamp: Any = now.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else now
    for value in ("yfinance", stamp, stamp):
        columns.append(itertools.repeat(value, count))
    return list(zip(*columns, strict=False))


def copy_bars(url: str, rows: list[tuple[Any, ...]]) -> float:
    with psycopg.connect(url) as connection:
        started = time.perf_counter()
        with (
            connection.cursor() as cursor,
            cursor.copy(f"COPY price_history ({', '.join(BAR_COLUMNS)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        connection.commit()
        return time.perf_counter() - started


def pandas_copy(table: Any, connection: Any, keys: list[str], rows: Any) -> None:
    """The ``method`` a pandas user passes to ``to_sql``: COPY through psycopg."""
    columns = ", ".join(f'"{key}"' for key in keys)
    with (
        connection.connection.cursor() as cursor,
        cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)


def pandas_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as a pandas user makes it fit the table: renamed, integer volumes, a
    data_source (created_at and updated_at come from the table's defaults)."""
    renamed = frame.rename(columns=FRAME_COLUMNS)
    renamed["volume"] = renamed["volume"].astype("int64")
    renamed["data_source"] = "yfinance"
    return renamed


def bench_ingest(ctx: Context) -> list[Check]:
    frame = bars_frame(ctx.bars)
    count = len(frame)
    rows = raw_bar_rows(frame, sqlite=False)
    renamed = pandas_frame(frame)
    db = DatabaseManager(ctx.url, pool_size=1, max_overflow=0)
    engine = sqlalchemy.create_engine(make_url(ctx.url).set(drivername="postgresql+psycopg"))

    def empty() -> None:
        execute(ctx.url, "TRUNCATE price_history")
        ctx.loaded = 0

    def ours() -> float:
        empty()
        started = time.perf_counter()
        with db.get_session() as session:
            result = prices.upsert(session, frame)
        took = time.perf_counter() - started
        assert result.inserted == count, result
        return took

    def raw() -> float:
        empty()
        return copy_bars(ctx.url, rows)

    def to_sql() -> float:
        empty()
        started = time.perf_counter()
        renamed.to_sql("price_history", engine, if_exists="append", index=False, method=pandas_copy)
        return time.perf_counter() - started

    async def async_once() -> float:
        started = time.perf_counter()
        async with db.get_async_session() as session:
            result = await prices.async_upsert(session, frame)
        took = time.perf_counter() - started
        assert result.inserted == count, result
        return took

    def async_ours() -> float:
        empty()
        return asyncio.run(async_once())

    found = medians(ctx.rounds, {"raw": raw, "ours": ours, "to_sql": to_sql, "async": async_ours})
    empty()
    engine.dispose()
    db.close()
    return [
        Check(
            "ingest",
            f"upsert {count:,}, empty / COPY",
            found["ours"],
            found["raw"],
            1 / 0.9,
            profile=whole(ours),
        ),
        Check(
            "ingest",
            "upsert / pandas to_sql (COPY)",
            found["ours"],
            found["to_sql"],
            1.0,
            profile=whole(ours),
        ),
        Check(
            "ingest",
            "async_upsert / upsert",
            found["async"],
            found["ours"],
            1.10,
            profile=whole(async_ours),
        ),
    ]


def sqlite_statement(conflict: bool) -> str:
    insert = (
        f"INSERT INTO price_history ({', '.join(BAR_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(BAR_COLUMNS))})"
    )
    if not conflict:
        return insert
    updated = ", ".join(f"{c} = excluded.{c}" for c in BAR_COLUMNS[2:] if c != "created_at")
    return f"{insert} ON CONFLICT (ticker, date) DO UPDATE SET {updated}"


def bench_sqlite(ctx: Context) -> list[Check]:
    path = ctx.scratch / "targets.db"
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    frame = bars_frame(ctx.bars)
    count = len(frame)
    rows = raw_bar_rows(frame, sqlite=True)
    db = DatabaseManager(url, pool_size=1, max_overflow=0)

    def empty() -> None:
        with contextlib.closing(sqlite3.connect(path)) as connection:
            connection.execute("DELETE FROM price_history")
            connection.commit()

    def raw(conflict: bool) -> float:
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            started = time.perf_counter()
            connection.execute("BEGIN")
            connection.executemany(sqlite_statement(conflict), rows)
            connection.execute("COMMIT")
            return time.perf_counter() - started
        finally:
            connection.close()

    def ours(conflict: bool) -> float:
        started = time.perf_counter()
        with db.get_session() as session:
            result = prices.upsert(session, frame)
        took = time.perf_counter() - started
        assert result.inserted == (0 if conflict else count), result
        return took

    def both(name: str) -> float:
        empty()
        first = raw(False) if name == "raw" else ours(False)
        again = raw(True) if name == "raw" else ours(True)
        both_times[name].append(again)
        return first

    both_times: dict[str, list[float]] = {"raw": [], "ours": []}
    found = medians(ctx.rounds, {"raw": lambda: both("raw"), "ours": lambda: both("ours")})

    def profile_empty(profiler: cProfile.Profile) -> None:
        empty()
        profiler.runcall(ours, False)

    def profile_again(profiler: cProfile.Profile) -> None:
        # The table holds the bars: the last round's, or profile_empty's.
        profiler.runcall(ours, True)

    return [
        Check(
            "sqlite",
            f"upsert {count:,}, empty table",
            found["ours"],
            found["raw"],
            1.25,
            profile=profile_empty,
        ),
        Check(
            "sqlite",
            f"upsert {count:,}, all conflict",
            statistics.median(both_times["ours"]),
            statistics.median(both_times["raw"]),
            1.25,
            profile=profile_again,
        ),
    ]


RUNNERS: dict[str, Callable[[Context], list[Check]]] = {
    "options": bench_options,
    "filecache": bench_filecache,
    "cache": bench_cache,
    "asof": bench_asof,
    "latest": bench_latest,
    "ingest": bench_ingest,
    "sqlite": bench_sqlite,
}


def workloads(text: str | None) -> list[str]:
    if not text:
        return list(WORKLOADS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown workload {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}"
        )
    return [name for name in WORKLOADS if name in names]


def main() -> None:
    # Million-bar merges are slow by design: keep the slow-query log out of the figures.
    logging.getLogger("database").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url", help="PostgreSQL URL of an empty, scratch database (default: a throwaway server)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bars", type=int, default=1_000_000, help="bars of latest and ingest")
    parser.add_argument("--hits", type=int, default=5000, help="calls of cache and asof")
    parser.add_argument("--files", type=int, default=10_000, help="files of filecache")
    parser.add_argument("--scale", action="store_true", help="latest closes at 10x --bars too")
    parser.add_argument("--only", type=workloads, help=f"some of: {','.join(WORKLOADS)}")
    parser.add_argument("--profile", action="store_true", help="cProfile ours where it misses")
    arguments = parser.parse_args()
    chosen = arguments.only or list(WORKLOADS)
    began = time.perf_counter()
    checks: list[Check] = []
    with tempfile.TemporaryDirectory() as scratch, postgres(arguments.url) as server:
        url = plain_url(server)
        migrate.downgrade(url, "base", force=True)  # a scratch database
        migrate.upgrade(url)
        ctx = Context(
            url,
            arguments.rounds,
            arguments.bars,
            arguments.scale,
            arguments.hits,
            arguments.files,
            Path(scratch),
        )
        print(f"median of {ctx.rounds} rounds; ratio = ours / baseline (time)")
        for name in chosen:
            print(f"\n{name}:", flush=True)
            started = time.perf_counter()
            found = RUNNERS[name](ctx)
            checks += found
            if name not in ("cache", "asof", "latest"):  # those print as they go
                for check in found:
                    print(line(check))
            print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
        print(f"\n{HEADER}")
        for check in checks:
            print(line(check))
        missed = [c for c in checks if not c.passed]
        print(
            f"\n{len(checks) - len(missed)} PASS, {len(missed)} MISS; "
            f"{time.perf_counter() - began:.0f} s in all"
        )
        if arguments.profile:
            profiled_already: set[int] = set()
            for check in missed:
                if check.profile is None or id(check.profile) in profiled_already:
                    continue
                profiled_already.add(id(check.profile))
                shared = [c.measure for c in missed if c.profile is check.profile]
                about = shared[0] if len(shared) == 1 else f"{len(shared)} misses"
                print(f"\nprofile of ours, {check.workload} ({about}):")
                print(profiled(check.profile))
        migrate.downgrade(url, "base", force=True)


if __name__ == "__main__":
    main()
