"""Repository vs plain SQLAlchemy ORM vs the raw driver, measured in the same run.

    python bench/bench_repository.py            # SQLite file + a throwaway PostgreSQL
    python bench/bench_repository.py --url postgresql://postgres@127.0.0.1/bench

Each operation is one unit of work as an application does it: open a session,
do the one thing, commit. The ORM column does the same work by hand
(``session.get``, ``select(...).where``, ``add`` + ``flush``); the raw column
sends the equivalent SQL through asyncpg / aiosqlite (async) or psycopg /
sqlite3 (sync). Prints per-operation medians of several rounds and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import psycopg
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import postgres
from database import DatabaseManager, migrate
from database.models import User
from database.repositories import UserRepository

OPERATIONS = ("create", "get_by_id", "get_by_criteria", "update")
repository = UserRepository()


def user_values(tag: str) -> dict[str, Any]:
    return {"email": f"{tag}@example.com", "username": tag, "hashed_password": "x" * 40}


class Fixture:
    """Rows to read and update, and fresh names to create."""

    def __init__(self, ids: list[uuid.UUID], names: list[str]) -> None:
        self.ids = ids
        self.names = names
        self.counter = 0

    def fresh(self) -> str:
        self.counter += 1
        return f"u{uuid.uuid4().hex[:12]}{self.counter}"


# -- the three ways of doing each operation (async) -----------------------------------------


def async_repository(
    db: DatabaseManager, fx: Fixture
) -> dict[str, Callable[[int], Awaitable[Any]]]:
    async def create(i: int) -> Any:
        async with db.get_async_session() as session:
            return await repository.async_create(session, **user_values(fx.fresh()))

    async def get_by_id(i: int) -> Any:
        async with db.get_async_session() as session:
            return await repository.async_get_by_id(session, fx.ids[i % len(fx.ids)])

    async def get_by_criteria(i: int) -> Any:
        async with db.get_async_session() as session:
            return await repository.async_get_by_criteria(
                session, username=fx.names[i % len(fx.names)]
            )

    async def update(i: int) -> Any:
        async with db.get_async_session() as session:
            return await repository.async_update(
                session, fx.ids[i % len(fx.ids)], first_name=f"n{i}"
            )

    return locals() | {}


def async_orm(db: DatabaseManager, fx: Fixture) -> dict[str, Callable[[int], Awaitable[Any]]]:
    async def create(i: int) -> Any:
        async with db.get_async_session() as session:
            user = User(**user_values(fx.fresh()))
            session.add(user)
            await session.flush()
            return user

    async def get_by_id(i: int) -> Any:
        async with db.get_async_session() as session:
            return await session.get(User, fx.ids[i % len(fx.ids)])

    async def get_by_criteria(i: int) -> Any:
        async with db.get_async_session() as session:
            statement = select(User).where(User.username == fx.names[i % len(fx.names)])
            return (await session.scalars(statement)).all()

    async def update(i: int) -> Any:
        async with db.get_async_session() as session:
            user = await session.get(User, fx.ids[i % len(fx.ids)])
            assert user is not None
            user.first_name = f"n{i}"
            await session.flush()
            return user

    return locals() | {}


COLUMNS = (
    "id, email, username, hashed_password, first_name, last_name, preferences, is_active, "
    "is_verified, last_login_at, created_at, updated_at"
)


def async_raw_postgres(
    pool: asyncpg.Pool, fx: Fixture
) -> dict[str, Callable[[int], Awaitable[Any]]]:
    async def create(i: int) -> Any:
        tag = fx.fresh()
        async with pool.acquire() as conn, conn.transaction():
            return await conn.execute(
                "INSERT INTO users (id, email, username, hashed_password, is_active, is_verified,"
                " created_at, updated_at) VALUES ($1, $2, $3, $4, true, false, now(), now())",
                uuid.uuid4(),
                f"{tag}@example.com",
                tag,
                "x" * 40,
            )

    async def get_by_id(i: int) -> Any:
        async with pool.acquire() as conn:
            return await conn.fetchrow(
                f"SELECT {COLUMNS} FROM users WHERE id = $1", fx.ids[i % len(fx.ids)]
            )

    async def get_by_criteria(i: int) -> Any:
        async with pool.acquire() as conn:
            return await conn.fetch(
                f"SELECT {COLUMNS} FROM users WHERE username = $1", fx.names[i % len(fx.names)]
            )

    async def update(i: int) -> Any:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT {COLUMNS} FROM users WHERE id = $1", fx.ids[i % len(fx.ids)]
            )
            return await conn.execute(
                "UPDATE users SET first_name = $1, updated_at = now() WHERE id = $2",
                f"n{i}",
                row["id"],
            )

    return locals() | {}


def async_raw_sqlite(
    conn: aiosqlite.Connection, fx: Fixture
) -> dict[str, Callable[[int], Awaitable[Any]]]:
    async def create(i: int) -> Any:
        tag = fx.fresh()
        await conn.execute(
            "INSERT INTO users (id, email, username, hashed_password, is_active, is_verified) "
            "VALUES (?, ?, ?, ?, 1, 0)",
            (uuid.uuid4().hex, f"{tag}@example.com", tag, "x" * 40),
        )
        await conn.commit()

    async def get_by_id(i: int) -> Any:
        async with conn.execute(
            f"SELECT {COLUMNS} FROM users WHERE id = ?", (fx.ids[i % len(fx.ids)].hex,)
        ) as c:
            return await c.fetchone()

    async def get_by_criteria(i: int) -> Any:
        query = f"SELECT {COLUMNS} FROM users WHERE username = ?"
        async with conn.execute(query, (fx.names[i % len(fx.names)],)) as c:
            return await c.fetchall()

    async def update(i: int) -> Any:
        key = fx.ids[i % len(fx.ids)].hex
        async with conn.execute(f"SELECT {COLUMNS} FROM users WHERE id = ?", (key,)) as c:
            await c.fetchone()
        await conn.execute("UPDATE users SET first_name = ? WHERE id = ?", (f"n{i}", key))
        await conn.commit()

    return locals() | {}


# -- sync ---------------------------------------------------------------------------------


def sync_repository(db: DatabaseManager, fx: Fixture) -> dict[str, Callable[[int], Any]]:
    def create(i: int) -> Any:
        with db.get_session() as session:
            return repository.create(session, **user_values(fx.fresh()))

    def get_by_id(i: int) -> Any:
        with db.get_session() as session:
            return repository.get_by_id(session, fx.ids[i % len(fx.ids)])

    def get_by_criteria(i: int) -> Any:
        with db.get_session() as session:
            return repository.get_by_criteria(session, username=fx.names[i % len(fx.names)])

    def update(i: int) -> Any:
        with db.get_session() as session:
            return repository.update(session, fx.ids[i % len(fx.ids)], first_name=f"n{i}")

    return locals() | {}


def sync_orm(db: DatabaseManager, fx: Fixture) -> dict[str, Callable[[int], Any]]:
    def create(i: int) -> Any:
        with db.get_session() as session:
            user = User(**user_values(fx.fresh()))
            session.add(user)
            session.flush()
            return user

    def get_by_id(i: int) -> Any:
        with db.get_session() as session:
            return session.get(User, fx.ids[i % len(fx.ids)])

    def get_by_criteria(i: int) -> Any:
        with db.get_session() as session:
            return session.scalars(
                select(User).where(User.username == fx.names[i % len(fx.names)])
            ).all()

    def update(i: int) -> Any:
        with db.get_session() as session:
            user = session.get(User, fx.ids[i % len(fx.ids)])
            assert user is not None
            user.first_name = f"n{i}"
            session.flush()
            return user

    return locals() | {}


def sync_raw(conn: Any, fx: Fixture, sqlite: bool) -> dict[str, Callable[[int], Any]]:
    p = "?" if sqlite else "%s"

    def key(i: int) -> Any:
        value = fx.ids[i % len(fx.ids)]
        return value.hex if sqlite else value

    def create(i: int) -> Any:
        tag = fx.fresh()
        conn.execute(
            "INSERT INTO users (id, email, username, hashed_password, is_active, is_verified) "
            f"VALUES ({p}, {p}, {p}, {p}, {'1, 0' if sqlite else 'true, false'})",
            (uuid.uuid4().hex if sqlite else uuid.uuid4(), f"{tag}@example.com", tag, "x" * 40),
        )
        conn.commit()

    def get_by_id(i: int) -> Any:
        row = conn.execute(f"SELECT {COLUMNS} FROM users WHERE id = {p}", (key(i),)).fetchone()
        conn.commit()
        return row

    def get_by_criteria(i: int) -> Any:
        rows = conn.execute(
            f"SELECT {COLUMNS} FROM users WHERE username = {p}", (fx.names[i % len(fx.names)],)
        )
        result = rows.fetchall()
        conn.commit()
        return result

    def update(i: int) -> Any:
        conn.execute(f"SELECT {COLUMNS} FROM users WHERE id = {p}", (key(i),)).fetchone()
        conn.execute(f"UPDATE users SET first_name = {p} WHERE id = {p}", (f"n{i}", key(i)))
        conn.commit()

    return locals() | {}


# -- measuring ------------------------------------------------------------------------------


def only_operations(functions: dict[str, Any]) -> dict[str, Any]:
    return {name: functions[name] for name in OPERATIONS}


async def time_async(kinds: dict[str, Any], operation: str, count: int) -> dict[str, float]:
    """Mean µs per call of each kind, interleaved call by call so drift hits all alike."""
    spent = dict.fromkeys(kinds, 0.0)
    order = list(kinds)
    for i in range(count):
        for kind in order[i % 3 :] + order[: i % 3]:
            started = time.perf_counter()
            await kinds[kind][operation](i)
            spent[kind] += time.perf_counter() - started
    return {kind: total / count * 1e6 for kind, total in spent.items()}


def time_sync(kinds: dict[str, Any], operation: str, count: int) -> dict[str, float]:
    spent = dict.fromkeys(kinds, 0.0)
    order = list(kinds)
    for i in range(count):
        for kind in order[i % 3 :] + order[: i % 3]:
            started = time.perf_counter()
            kinds[kind][operation](i)
            spent[kind] += time.perf_counter() - started
    return {kind: total / count * 1e6 for kind, total in spent.items()}


def report(title: str, results: dict[str, dict[str, list[float]]]) -> None:
    print(f"\n{title}")
    print(
        f"  {'operation':<16}{'raw µs':>9}{'ORM µs':>9}{'repo µs':>9}{'repo/ORM':>10}{'ORM/raw':>9}"
    )
    for operation in OPERATIONS:
        raw, orm, repo = (
            statistics.median(results[kind][operation]) for kind in ("raw", "orm", "repo")
        )
        print(
            f"  {operation:<16}{raw:>9.0f}{orm:>9.0f}{repo:>9.0f}"
            f"{repo / orm:>10.2f}{orm / raw:>9.2f}"
        )


async def seed(db: DatabaseManager, rows: int) -> Fixture:
    names = [f"seed{i}" for i in range(rows)]
    async with db.get_async_session() as session:
        users = await repository.async_bulk_create(session, [user_values(n) for n in names])
    return Fixture([u.id for u in users], names)


async def bench_async(url: str, rounds: int, count: int) -> None:
    db = DatabaseManager(url, pool_size=2, max_overflow=0)
    fx = await seed(db, 1000)
    plain = db.urls.sync_url.set(drivername=db.backend).render_as_string(hide_password=False)
    raw_resource: Any
    if db.backend == "postgresql":
        raw_resource = await asyncpg.create_pool(plain, min_size=2, max_size=2)
        raw = async_raw_postgres(raw_resource, fx)
    else:
        raw_resource = await aiosqlite.connect(db.urls.sync_url.database or "")
        await raw_resource.execute("PRAGMA foreign_keys = ON")
        raw = async_raw_sqlite(raw_resource, fx)
    kinds = {
        "raw": only_operations(raw),
        "orm": only_operations(async_orm(db, fx)),
        "repo": only_operations(async_repository(db, fx)),
    }
    results: dict[str, dict[str, list[float]]] = {k: {o: [] for o in OPERATIONS} for k in kinds}
    for operation in OPERATIONS:
        await time_async(kinds, operation, 30)  # warm-up
    for _ in range(rounds):
        for operation in OPERATIONS:
            for kind, mean in (await time_async(kinds, operation, count)).items():
                results[kind][operation].append(mean)
    await raw_resource.close()
    await db.aclose()
    driver = "asyncpg" if db.backend == "postgresql" else "aiosqlite"
    report(
        f"{db.backend}, async (raw = {driver}); median of {rounds} rounds x {count} ops", results
    )


def bench_sync(url: str, rounds: int, count: int) -> None:
    db = DatabaseManager(url, pool_size=2, max_overflow=0)
    fx = asyncio.run(seed(db, 1000))
    plain = db.urls.sync_url.set(drivername=db.backend).render_as_string(hide_password=False)
    is_sqlite = db.backend == "sqlite"
    connection: Any = (
        sqlite3.connect(db.urls.sync_url.database or "") if is_sqlite else psycopg.connect(plain)
    )
    kinds = {
        "raw": only_operations(sync_raw(connection, fx, is_sqlite)),
        "orm": only_operations(sync_orm(db, fx)),
        "repo": only_operations(sync_repository(db, fx)),
    }
    results: dict[str, dict[str, list[float]]] = {k: {o: [] for o in OPERATIONS} for k in kinds}
    for operation in OPERATIONS:
        time_sync(kinds, operation, 30)  # warm-up
    for _ in range(rounds):
        for operation in OPERATIONS:
            for kind, mean in time_sync(kinds, operation, count).items():
                results[kind][operation].append(mean)
    connection.close()
    db.close()
    driver = "sqlite3" if is_sqlite else "psycopg"
    report(f"{db.backend}, sync (raw = {driver}); median of {rounds} rounds x {count} ops", results)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url", help="PostgreSQL URL of an empty database (default: a throwaway server)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=300, help="operations per round")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, postgres(arguments.url) as pg_url:
        for url in (f"sqlite:///{folder}/bench.db", pg_url):
            migrate.downgrade(url, "base", force=True)
            migrate.upgrade(url)
            asyncio.run(bench_async(url, arguments.rounds, arguments.count))
            migrate.downgrade(url, "base", force=True)
            migrate.upgrade(url)
            bench_sync(url, arguments.rounds, arguments.count)
            migrate.downgrade(url, "base", force=True)


if __name__ == "__main__":
    main()
