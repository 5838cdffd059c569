"""What the walls cost: user-scoped portfolio calls against the raw driver, same run.

    python bench/bench_ownership.py            # a throwaway PostgreSQL
    python bench/bench_ownership.py --url postgresql://postgres@127.0.0.1/bench

Each call is one unit of work as an application does it: a session opened for
the user, one read (a portfolio with its positions) or one write (a buy of one
share: ``adjust_position``, a locked read and an update), commit; 1, 8 and 64
tasks at once, each call for a random one of the users. Four ways, interleaved
round by round:

- ``raw``: asyncpg from a pool, the equivalent SQL with the ownership condition
  written in (``... AND p.user_id = $1``), in a transaction;
- ``raw+rls``: the same plus the wall's ``set_config`` statement, under
  ``DB_ROW_SECURITY``-style role switching;
- ``repo, no user``: the repositories in a plain session (no ownership check),
  to show what the check itself costs;
- ``repo``: the repositories, ``get_async_session(user_id=...)``;
- ``repo+rls``: the same with ``row_security=True``.

Prints throughput (calls/s) per mode and ratios to ``raw``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import postgres
from database import DatabaseManager, migrate
from database.models import Portfolio, Position, User
from database.repositories import PortfolioRepository

USERS = 1_000
POSITIONS = 10
TICKERS = [f"T{n:03d}" for n in range(POSITIONS)]
portfolios = PortfolioRepository()

READ = """
SELECT p.id, p.name, s.ticker, s.shares FROM portfolios p
LEFT JOIN positions s ON s.portfolio_id = p.id
WHERE p.id = $1 AND p.user_id = $2
"""
WRITE = """
UPDATE positions SET shares = shares + 1, version = version + 1
WHERE portfolio_id = $1 AND ticker = $2
  AND portfolio_id IN (SELECT id FROM portfolios WHERE user_id = $3)
"""
ENTER = "SELECT set_config('role', 'buffetbot_user', true), set_config('app.user_id', $1, true)"


def fill(url: str) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """USERS users with one portfolio of POSITIONS positions each; (user, portfolio) pairs."""
    db = DatabaseManager(url)
    owners = []
    with db.get_session(system=True) as session:
        for n in range(USERS):
            user = User(email=f"u{n}@example.com", username=f"user{n}", hashed_password="x" * 40)
            portfolio = Portfolio(user_id=user.id, name="Core")
            session.add_all([user, portfolio])
            session.add_all(
                Position(portfolio_id=portfolio.id, ticker=t, shares=Decimal(1)) for t in TICKERS
            )
            owners.append((user.id, portfolio.id))
    db.close()
    return owners


Call = Callable[[uuid.UUID, uuid.UUID, str], Awaitable[Any]]


def raw_calls(pool: asyncpg.Pool, rls: bool) -> dict[str, Call]:
    async def read(user: uuid.UUID, portfolio: uuid.UUID, _ticker: str) -> Any:
        async with pool.acquire() as conn, conn.transaction():
            if rls:
                await conn.execute(ENTER, str(user))
            return await conn.fetch(READ, portfolio, user)

    async def write(user: uuid.UUID, portfolio: uuid.UUID, ticker: str) -> Any:
        async with pool.acquire() as conn, conn.transaction():
            if rls:
                await conn.execute(ENTER, str(user))
            return await conn.execute(WRITE, portfolio, ticker, user)

    return {"read": read, "write": write}


def repo_calls(db: DatabaseManager, scoped: bool = True) -> dict[str, Call]:
    def opened(user: uuid.UUID) -> Any:
        return db.get_async_session(user_id=user if scoped else None)

    async def read(user: uuid.UUID, portfolio: uuid.UUID, _ticker: str) -> Any:
        async with opened(user) as session:
            return await portfolios.async_get_with_positions(session, portfolio)

    async def write(user: uuid.UUID, portfolio: uuid.UUID, ticker: str) -> Any:
        async with opened(user) as session:
            return await portfolios.async_adjust_position(session, portfolio, ticker, shares=1)

    return {"read": read, "write": write}


async def throughput(
    call: Call, owners: list[tuple[uuid.UUID, uuid.UUID]], tasks: int, calls: int
) -> float:
    """Calls per second with ``tasks`` tasks making ``calls`` calls between them."""
    rng = random.Random(tasks)
    work = [(*rng.choice(owners), rng.choice(TICKERS)) for _ in range(calls)]
    queue = iter(work)

    async def worker() -> None:
        for user, portfolio, ticker in queue:
            await call(user, portfolio, ticker)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return calls / (time.perf_counter() - start)


async def measure(url: str, owners: list[tuple[uuid.UUID, uuid.UUID]], rounds: int) -> None:
    raw_url = url.replace("postgresql+psycopg://", "postgresql://")
    pool = await asyncpg.create_pool(raw_url, min_size=10, max_size=20)
    open_db = DatabaseManager(url, pool_size=10, max_overflow=10)
    walled_db = DatabaseManager(url, pool_size=10, max_overflow=10, row_security=True)
    modes = {
        "raw": raw_calls(pool, rls=False),
        "raw+rls": raw_calls(pool, rls=True),
        "repo, no user": repo_calls(open_db, scoped=False),
        "repo": repo_calls(open_db),
        "repo+rls": repo_calls(walled_db),
    }
    try:
        for kind in ("read", "write"):
            print(f"\n{kind}: calls/s (median of {rounds} rounds), and ratio of raw's time")
            print(f"  {'tasks':>5}" + "".join(f"{m:>18}" for m in modes))
            for tasks in (1, 8, 64):
                calls = 200 if tasks == 1 else 600
                results: dict[str, list[float]] = {m: [] for m in modes}
                for _ in range(rounds):
                    for mode, functions in modes.items():
                        results[mode].append(
                            await throughput(functions[kind], owners, tasks, calls)
                        )
                medians = {m: statistics.median(r) for m, r in results.items()}
                row = "".join(
                    f"{medians[m]:>9.0f} ({medians['raw'] / medians[m]:4.2f}x)" for m in modes
                )
                print(f"  {tasks:>5}{row}")
    finally:
        await pool.close()
        await open_db.aclose()
        await walled_db.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an empty PostgreSQL database (default: a throwaway one)")
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    with postgres(arguments.url) as url:
        migrate.upgrade(url)
        owners = fill(url)
        asyncio.run(measure(url, owners, arguments.rounds))


if __name__ == "__main__":
    main()
