"""PgBouncer in transaction pooling, a real ``pgbouncer`` the harness starts.

The repository modules run all their PostgreSQL tests through it (their
``pgbouncer`` runs); these tests show that it really multiplexes: many clients
on a few server connections, where prepared statements and start-up settings
would break, and that ``DB_PGBOUNCER`` is what keeps both drivers working.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from database import DatabaseManager
from database.exceptions import DatabaseError, StatementTimeoutError
from database.repositories import PriceHistoryRepository, UserRepository
from tests.conftest import require_pgbouncer
from tests.pg_server import ThrowawayPgBouncer, throwaway_pgbouncer

SERVER_CONNECTIONS = 3
CLIENTS = 12
ROUNDS = 25


@pytest.fixture(scope="module")
def small_bouncer(postgres_server_url: str, postgres_url: str) -> Iterator[ThrowawayPgBouncer]:
    """A PgBouncer with three server connections, for more clients than that."""
    require_pgbouncer()
    with throwaway_pgbouncer(postgres_server_url, pool_size=SERVER_CONNECTIONS) as bouncer:
        yield bouncer


@pytest.fixture
def bounced_url(small_bouncer: ThrowawayPgBouncer, postgres_url: str) -> Iterator[str]:
    """The suite's database through the small PgBouncer; emptied afterwards."""
    yield make_url(postgres_url).set(port=small_bouncer.port).render_as_string(False)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("TRUNCATE users, price_history CASCADE")


def admin(bouncer: ThrowawayPgBouncer | str, command: str) -> list[dict[str, Any]]:
    """A ``SHOW`` of PgBouncer's console (which speaks the simple query protocol only);
    ``bouncer`` or the URL of a database through it."""
    url = (
        bouncer.admin_url
        if isinstance(bouncer, ThrowawayPgBouncer)
        else make_url(bouncer).set(database="pgbouncer").render_as_string(False)
    )
    with (
        psycopg.connect(url, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn,
        conn.cursor() as cursor,
    ):
        cursor.execute(command)
        names = [column.name for column in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def transactions_served(bouncer: ThrowawayPgBouncer | str, database: str) -> int:
    rows = admin(bouncer, "SHOW STATS")
    return sum(int(r["total_xact_count"]) for r in rows if r["database"] == database)


def work(manager: DatabaseManager, name: str) -> None:
    """One client's round of repository calls, the same statements again and again."""
    users = UserRepository()
    prices = PriceHistoryRepository()
    for round_ in range(ROUNDS):
        with manager.get_session() as session:
            if round_ == 0:
                users.create(session, email=f"{name}@example.com", username=name,
                             hashed_password="hashed")  # fmt: skip
            assert users.get_by_username(session, name) is not None
            prices.get_latest(session, "AAPL")


async def async_work(manager: DatabaseManager, name: str) -> None:
    users = UserRepository()
    prices = PriceHistoryRepository()
    for round_ in range(ROUNDS):
        async with manager.get_async_session() as session:
            if round_ == 0:
                await users.async_create(session, email=f"{name}@example.com", username=name,
                                         hashed_password="hashed")  # fmt: skip
            assert await users.async_get_by_username(session, name) is not None
            await prices.async_get_latest(session, "AAPL")


def run_clients(manager: DatabaseManager, prefix: str) -> list[BaseException]:
    """CLIENTS threads and CLIENTS tasks at once; the errors they met."""
    errors: list[BaseException] = []

    def thread_client(number: int) -> None:
        try:
            work(manager, f"{prefix}thread{number}")
        except Exception as error:
            errors.append(error)

    async def async_clients() -> None:
        results = await asyncio.gather(
            *(async_work(manager, f"{prefix}task{n}") for n in range(CLIENTS)),
            return_exceptions=True,
        )
        errors.extend(r for r in results if isinstance(r, BaseException))

    threads = [threading.Thread(target=thread_client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    asyncio.run(async_clients())
    for thread in threads:
        thread.join()
    return errors


def test_the_harness_pools_transactions_and_the_repository_runs_go_through_it(
    pgbouncer_url: str,
) -> None:
    config = {row["key"]: row["value"] for row in admin(pgbouncer_url, "SHOW CONFIG")}
    assert config["pool_mode"] == "transaction"
    database = make_url(pgbouncer_url).database or ""
    before = transactions_served(pgbouncer_url, database)
    manager = DatabaseManager(pgbouncer_url, pgbouncer=True)
    try:
        assert manager.behind_pgbouncer
        with manager.get_session() as session:
            assert session.scalar(text("SELECT current_database()")) == database
    finally:
        manager.close()
    assert transactions_served(pgbouncer_url, database) > before


def test_many_clients_share_three_server_connections_on_both_drivers(
    small_bouncer: ThrowawayPgBouncer, bounced_url: str
) -> None:
    database = make_url(bounced_url).database or ""
    before = transactions_served(small_bouncer, database)
    manager = DatabaseManager(bounced_url, pgbouncer=True, pool_size=CLIENTS, max_overflow=0)
    try:
        errors = run_clients(manager, "ok")
    finally:
        manager.close()
    assert errors == []
    served = transactions_served(small_bouncer, database) - before
    assert served >= 2 * CLIENTS * ROUNDS  # every session's transaction went through it
    pools = [p for p in admin(small_bouncer, "SHOW POOLS") if p["database"] == database]
    server_side = sum(int(p["sv_active"]) + int(p["sv_idle"]) + int(p["sv_used"]) for p in pools)
    assert 0 < server_side <= SERVER_CONNECTIONS


def test_without_the_setting_prepared_statements_break_under_transaction_pooling(
    small_bouncer: ThrowawayPgBouncer, bounced_url: str
) -> None:
    # What DB_PGBOUNCER prevents: psycopg prepares a statement run five times on its
    # connection, and a later transaction lands on a server connection without it.
    manager = DatabaseManager(bounced_url, pgbouncer=False, pool_size=CLIENTS, max_overflow=0)
    try:
        errors = run_clients(manager, "raw")
    finally:
        manager.close()
    assert errors, "expected prepared-statement errors without DB_PGBOUNCER"
    assert all(isinstance(e, DatabaseError) for e in errors)
    assert any("prepared statement" in str(e) for e in errors)


@pytest.mark.parametrize("form", ["sync", "async"])
def test_the_statement_timeout_is_set_per_transaction(
    small_bouncer: ThrowawayPgBouncer, bounced_url: str, form: str
) -> None:
    # PgBouncer refuses the start-up setting (and libpq's ``options``): SET LOCAL instead.
    manager = DatabaseManager(bounced_url, pgbouncer=True, statement_timeout_ms=300)

    def sync_round() -> str:
        with manager.get_session() as session:
            shown = str(session.scalar(text("SHOW statement_timeout")))
        with pytest.raises(StatementTimeoutError), manager.get_session() as session:
            session.execute(text("SELECT pg_sleep(3)"))
        return shown

    async def async_round() -> str:
        async with manager.get_async_session() as session:
            shown = str(await session.scalar(text("SHOW statement_timeout")))
        with pytest.raises(StatementTimeoutError):
            async with manager.get_async_session() as session:
                await session.execute(text("SELECT pg_sleep(3)"))
        return shown

    try:
        started = dt.datetime.now()
        shown = sync_round() if form == "sync" else asyncio.run(async_round())
        assert shown == "300ms"
        assert dt.datetime.now() - started < dt.timedelta(seconds=2.5)
    finally:
        manager.close()
    # Nothing of it stays on the server connections PgBouncer hands to others.
    with psycopg.connect(bounced_url, autocommit=True, prepare_threshold=None) as conn:
        for _ in range(2 * SERVER_CONNECTIONS):
            assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)
