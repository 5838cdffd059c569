"""Soak: a realistic async workload while backends are killed and the server restarts.

    python bench/soak.py                       # throwaway server, 200 tasks, 30 s
    python bench/soak.py --tasks 64 --seconds 60 --kill-every 0.5 --restart-at 15
    python bench/soak.py --url postgresql://postgres@127.0.0.1/soak   # no restart

N tasks loop over a mix of what BuffetBot does (cache hits 40 %, position
buys 25 %, price upserts of overlapping bars 15 %, portfolio summaries 20 %),
each operation one unit of work through ``async_run_transaction`` (3 retries),
while a thread terminates random backends of the process and, on a server of
its own, stops and restarts PostgreSQL once. It prints operations done,
failures by type, untyped failures, hangs (an operation that took longer than
its deadline), lost updates (the shares stored against an independent count of
confirmed buys) and p50/p99 latency, and exits non-zero if anything was lost,
untyped or hung, or the process did not recover after the restart.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import random
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from database import DatabaseManager, async_run_transaction, migrate
from database.exceptions import DatabaseError, DatabaseUnavailableError
from database.models import Portfolio, User
from database.repositories import (
    MarketDataRepository,
    PortfolioRepository,
    PriceHistoryRepository,
)
from database.security import hash_password
from tests.conftest import recreate_database
from tests.pg_server import ThrowawayPostgres, throwaway_server

TICKERS = ("AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "META", "BRK-B", "JPM")
APP = "buffetbot-soak"
portfolios, prices, cache = PortfolioRepository(), PriceHistoryRepository(), MarketDataRepository()


@dataclass
class Tally:
    done: collections.Counter[str] = field(default_factory=collections.Counter)
    failed: collections.Counter[str] = field(default_factory=collections.Counter)
    examples: dict[str, str] = field(default_factory=dict)  # one message per failure type
    untyped: collections.Counter[str] = field(default_factory=collections.Counter)
    hangs: int = 0
    latencies: list[float] = field(default_factory=list)
    confirmed: collections.Counter[str] = field(default_factory=collections.Counter)
    unknown: collections.Counter[str] = field(default_factory=collections.Counter)  # lost at COMMIT
    successes: list[float] = field(default_factory=list)  # when each operation succeeded


def bars(ticker: str, start: int) -> pd.DataFrame:
    days = pd.bdate_range("2020-01-01", periods=400)[start : start + 20]
    close = [100.0 + (i % 7) for i in range(len(days))]
    return pd.DataFrame(
        {
            "Open": close,
            "High": [c + 1 for c in close],
            "Low": [c - 1 for c in close],
            "Close": close,
            "Volume": 1_000,
        },
        index=pd.DatetimeIndex(days, name="Date"),
    ).assign(Ticker=ticker)


def seed(manager: DatabaseManager) -> Portfolio:
    with manager.get_session() as session:
        user = User(
            email="soak@example.com",
            username="soak",
            hashed_password=hash_password("soak-password"),
        )
        session.add(user)
        session.flush()
        portfolio = Portfolio(user_id=user.id, name="Soak")
        session.add(portfolio)
        session.flush()
        for ticker in TICKERS:
            portfolios.add_position(session, portfolio.id, ticker=ticker, shares=0)
            cache.cache_market_data(session, ticker, "stock_info", {"symbol": ticker}, ttl=86_400)
            prices.upsert(session, bars(ticker, 0))
    return portfolio


async def operation(kind: str, portfolio: Portfolio, tally: Tally) -> None:
    ticker = random.choice(TICKERS)

    async def run(fn: Callable[[Any], Awaitable[Any]]) -> Any:
        return await async_run_transaction(fn, retries=3)

    if kind == "cache_hit":
        found = await run(lambda s: cache.async_get_cached_data(s, ticker, "stock_info"))
        assert found == {"symbol": ticker}, found
    elif kind == "buy":
        try:
            await run(lambda s: portfolios.async_adjust_position(s, portfolio.id, ticker, shares=1))
        except DatabaseUnavailableError as error:
            if not error.retryable:  # lost during COMMIT: it may or may not have happened
                tally.unknown[ticker] += 1
            raise
        tally.confirmed[ticker] += 1
    elif kind == "upsert":
        frame = bars(ticker, random.randrange(0, 380))
        await run(lambda s: prices.async_upsert(s, frame))
    else:
        summary = await run(lambda s: portfolios.async_get_summary(s, portfolio.id))
        assert summary.position_count == len(TICKERS)


MIX = (("cache_hit", 40), ("buy", 25), ("upsert", 15), ("summary", 20))


async def worker(portfolio: Portfolio, tally: Tally, until: float, deadline: float) -> None:
    kinds, weights = zip(*MIX, strict=True)
    while time.monotonic() < until:
        kind = random.choices(kinds, weights)[0]
        started = time.monotonic()
        try:
            await asyncio.wait_for(operation(kind, portfolio, tally), timeout=deadline)
        except TimeoutError:
            tally.hangs += 1
        except DatabaseError as error:
            tally.failed[type(error).__name__] += 1
            tally.examples.setdefault(type(error).__name__, str(error)[:200])
            await asyncio.sleep(0.05)
        except Exception as error:
            tally.untyped[f"{type(error).__module__}.{type(error).__name__}: {error}"[:160]] += 1
        else:
            tally.done[kind] += 1
            tally.latencies.append(time.monotonic() - started)
            tally.successes.append(time.monotonic())


def killer(url: str, every: float, stop: threading.Event, kills: list[int]) -> None:
    """Terminate one random backend of the workload every ``every`` seconds."""
    while not stop.wait(every):
        with contextlib.suppress(psycopg.Error), psycopg.connect(url, autocommit=True) as conn:
            pids = [
                row[0]
                for row in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (APP,)
                )
            ]
            if pids:
                conn.execute("SELECT pg_terminate_backend(%s)", (random.choice(pids),))
                kills.append(1)


def stored_shares(url: str) -> dict[str, Decimal]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT ticker, shares FROM positions").fetchall()
    return {str(ticker): Decimal(shares) for ticker, shares in rows}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


@contextlib.contextmanager
def database(url: str | None) -> Iterator[tuple[str, ThrowawayPostgres | None]]:
    if url:
        yield url, None
        return
    # Durable: a restart must not lose acknowledged commits, or a lost update
    # would be the server's configuration, not this library.
    with throwaway_server(durable=True) as server:
        yield recreate_database(server.url, "soak"), server


async def soak(args: argparse.Namespace, url: str, server: ThrowawayPostgres | None) -> int:
    migrate.upgrade(url)
    manager = DatabaseManager(url, application_name=APP, connect_timeout=5, pool_timeout=30)
    from database import session as process  # the helpers' process-wide manager

    process._manager = manager
    portfolio = await asyncio.to_thread(seed, manager)
    tally, kills, stop = Tally(), [], threading.Event()
    started = time.monotonic()
    until = started + args.seconds
    killing = threading.Thread(target=killer, args=(url, args.kill_every, stop, kills))
    killing.start()
    tasks = [
        asyncio.create_task(worker(portfolio, tally, until, args.deadline))
        for _ in range(args.tasks)
    ]
    back_at = None
    if server is not None and args.restart_at < args.seconds:
        await asyncio.sleep(args.restart_at)
        await asyncio.to_thread(server.stop, "immediate")
        print(f"server stopped at {time.monotonic() - started:.1f} s", flush=True)
        await asyncio.sleep(args.outage)
        await asyncio.to_thread(server.start)
        back_at = time.monotonic()
        print(f"server started again at {back_at - started:.1f} s", flush=True)
    await asyncio.gather(*tasks)
    stop.set()
    killing.join()
    await manager.aclose()

    stored = stored_shares(url)
    lost = {t: tally.confirmed[t] - stored[t] for t in TICKERS if stored[t] < tally.confirmed[t]}
    phantom = {
        t: stored[t] - tally.confirmed[t] - tally.unknown[t]
        for t in TICKERS
        if stored[t] > tally.confirmed[t] + tally.unknown[t]
    }
    recovered = back_at is None or any(when > back_at for when in tally.successes)
    first_after = min((w - back_at for w in tally.successes if back_at and w > back_at), default=0)
    total = sum(tally.done.values())
    print(f"tasks {args.tasks}, {args.seconds:g} s, backends killed: {len(kills)}")
    print(f"operations done: {total} ({total / args.seconds:.0f}/s): {dict(tally.done)}")
    print(f"failures (typed, after 3 retries): {sum(tally.failed.values())} {dict(tally.failed)}")
    for name, example in sorted(tally.examples.items()):
        print(f"  e.g. {name}: {example}")
    print(f"untyped failures: {sum(tally.untyped.values())} {dict(tally.untyped)}")
    print(f"hangs (> {args.deadline:g} s): {tally.hangs}")
    print(
        f"buys confirmed: {sum(tally.confirmed.values())}, outcome unknown (lost at COMMIT): "
        f"{sum(tally.unknown.values())}, stored: {sum(stored.values())}"
    )
    print(f"lost updates: {sum(lost.values())} {lost}; applied beyond confirmed: {phantom}")
    print(
        f"latency p50 {percentile(tally.latencies, 50) * 1000:.1f} ms, "
        f"p99 {percentile(tally.latencies, 99) * 1000:.1f} ms"
    )
    if back_at is not None:
        print(f"recovered after the restart: {'yes' if recovered else 'NO'}", end="")
        print(f" (first success {first_after:.2f} s after the server was back)")
    print("crashes: 0 (this process is still here)")
    bad = lost or phantom or tally.untyped or tally.hangs or not recovered
    return 1 if bad else 0


def main() -> int:
    logging.getLogger("database").setLevel(logging.ERROR)  # waits on locks are expected here
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a PostgreSQL database (default: a throwaway server)")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--kill-every", type=float, default=1.0, help="seconds between kills")
    parser.add_argument("--restart-at", type=float, default=10.0, help="own server only")
    parser.add_argument("--outage", type=float, default=2.0, help="seconds the server is down")
    parser.add_argument("--deadline", type=float, default=90.0, help="an operation's hang limit")
    args = parser.parse_args()
    with database(args.url) as (url, server):
        return asyncio.run(soak(args, url, server))


if __name__ == "__main__":
    sys.exit(main())
