"""Read replicas against real streaming standbys the harness starts.

A throwaway primary and hot standbys cloned from it with ``pg_basebackup -R``:
two current ones, and one that applies WAL a minute late
(``recovery_min_apply_delay``). Which server ran a statement is read from the
servers themselves: ``pg_is_in_recovery()`` and ``pg_stat_activity``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg.sql
import pytest
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url

from database import (
    DatabaseManager,
    close_database,
    get_async_database_session,
    get_database_session,
    init_database,
    migrate,
)
from database.exceptions import ConfigurationError
from database.models import User
from database.replicas import use_primary
from database.repositories import PriceHistoryRepository, UserRepository
from tests.conftest import recreate_database
from tests.pg_server import ThrowawayPostgres, throwaway_server, throwaway_standby

# The standbys share one worker: they are started once for the module.
pytestmark = pytest.mark.xdist_group("replicas")

APP = "buffetbot-replica-test"
MAX_LAG_S = 1.0
INTERVAL_S = 0.3


APP_DATABASE = ["app"]  # its name as made (tests.conftest.recreate_database adds the worker)


def app_url(server: ThrowawayPostgres) -> str:
    """The URL of the test database on ``server`` (the same name on the standbys)."""
    url = make_url(server.url).set(database=APP_DATABASE[0])
    return url.render_as_string(hide_password=False)


class Cluster:
    def __init__(self, primary: ThrowawayPostgres, standbys: list[ThrowawayPostgres]) -> None:
        self.primary, self.standbys = primary, standbys
        self.delayed: ThrowawayPostgres | None = None

    def url(self, server: ThrowawayPostgres) -> str:
        return app_url(server)

    def manager(self, *replicas: ThrowawayPostgres, **options: Any) -> DatabaseManager:
        options.setdefault("replica_max_lag_s", MAX_LAG_S)
        options.setdefault("replica_check_interval_s", INTERVAL_S)
        return DatabaseManager(
            self.url(self.primary),
            replica_urls=[self.url(r) for r in replicas or self.standbys],
            application_name=APP,
            **options,
        )

    def caught_up(self) -> None:
        """Wait until every current standby streams from the primary and has replayed
        all it wrote."""
        with psycopg.connect(self.url(self.primary), autocommit=True) as conn:
            target = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        for standby in self.standbys:
            with psycopg.connect(self.url(standby), autocommit=True) as conn:
                for _ in range(200):
                    row = conn.execute(
                        "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn AND EXISTS"
                        " (SELECT FROM pg_stat_wal_receiver WHERE status = 'streaming')",
                        target,
                    ).fetchone()
                    if row and row[0]:
                        break
                    time.sleep(0.025)
                else:
                    raise AssertionError(f"standby on {standby.port} did not catch up")

    def sessions_of_app(self, server: ThrowawayPostgres) -> int:
        with psycopg.connect(self.url(server), autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                " AND state = 'idle in transaction'",
                (APP,),
            ).fetchone()
        return int(row[0]) if row else 0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with throwaway_server() as primary:
        APP_DATABASE[0] = make_url(recreate_database(primary.url, "app")).database or "app"
        migrate.upgrade(app_url(primary))
        with (
            throwaway_standby(primary) as first,
            throwaway_standby(primary) as second,
            throwaway_standby(primary, "recovery_min_apply_delay=60s") as delayed,
        ):
            found = Cluster(primary, [first, second])
            found.delayed = delayed
            found.caught_up()
            yield found


@pytest.fixture
def fresh(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster with empty tables, caught up; every standby running."""
    for standby in cluster.standbys:
        if not _running(standby):
            standby.start()
    with psycopg.connect(cluster.url(cluster.primary), autocommit=True) as conn:
        conn.execute("TRUNCATE users, price_history CASCADE")
    cluster.caught_up()
    yield cluster
    close_database()


def _running(server: ThrowawayPostgres) -> bool:
    try:
        psycopg.connect(server.url, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def test_readonly_sessions_run_on_the_standbys_in_read_only_transactions(fresh: Cluster) -> None:
    manager = fresh.manager()
    try:
        with manager.get_session(readonly=True) as session:
            assert session.scalar(text("SELECT pg_is_in_recovery()")) is True, (
                manager.replica_status()
            )
            assert session.scalar(text("SHOW transaction_read_only")) == "on"
            on_standbys = sum(fresh.sessions_of_app(s) for s in fresh.standbys)
            assert on_standbys == 1
            assert fresh.sessions_of_app(fresh.primary) == 0
        with manager.get_session() as session:  # not readonly: the primary
            assert session.scalar(text("SELECT pg_is_in_recovery()")) is False
        assert manager.open_connections <= 2  # that one, and the lag checks' reading
    finally:
        manager.close()


async def test_async_readonly_sessions_run_on_the_standbys(fresh: Cluster) -> None:
    manager = fresh.manager()
    try:
        async with manager.get_async_session(readonly=True) as session:
            assert await session.scalar(text("SELECT pg_is_in_recovery()")) is True
            assert await session.scalar(text("SHOW transaction_read_only")) == "on"
            assert sum(fresh.sessions_of_app(s) for s in fresh.standbys) == 1
        async with manager.get_async_session() as session:
            assert await session.scalar(text("SELECT pg_is_in_recovery()")) is False
    finally:
        await manager.aclose()


def test_sessions_take_the_standbys_in_turn(fresh: Cluster) -> None:
    manager = fresh.manager()
    try:
        for _ in range(10):
            with manager.get_session(readonly=True) as session:
                session.execute(text("SELECT 1"))
        served = [status.sessions for status in manager.replica_status()]
        assert served == [5, 5]
    finally:
        manager.close()


def test_a_readonly_session_that_writes_moves_to_the_primary_and_reads_its_writes(
    fresh: Cluster,
) -> None:
    users, prices = UserRepository(), PriceHistoryRepository()
    manager = fresh.manager()
    try:
        with manager.get_session(readonly=True) as session:
            assert users.get_by_username(session, "writer") is None  # read on a standby
            assert session.scalar(text("SELECT pg_is_in_recovery()")) is True, (
                manager.replica_status()
            )
            users.create(session, email="w@example.com", username="writer", hashed_password="h")
            # From its first write on, the session is on the primary and sees it.
            assert session.scalar(text("SELECT pg_is_in_recovery()")) is False
            assert users.get_by_username(session, "writer") is not None
        with manager.get_session(readonly=True) as session:
            session.execute(
                insert(User).values(email="c@example.com", username="core", hashed_password="h")
            )
            assert session.scalar(text("SELECT count(*) FROM users")) == 2
        with manager.get_session(readonly=True) as session:
            bars = [{"date": dt.date(2024, 1, 2), "open": 1, "high": 2, "low": 1, "close": 2,
                     "volume": 10}]  # fmt: skip
            assert prices.upsert(session, bars, ticker="AAPL").inserted == 1
            assert prices.get_latest(session, "AAPL") is not None
        with manager.get_session(readonly=True) as session:
            use_primary(session)  # raw SQL that writes: say so first
            session.execute(text("UPDATE users SET username = 'renamed' WHERE username = 'core'"))
    finally:
        manager.close()
    with psycopg.connect(fresh.url(fresh.primary)) as conn:
        names = {row[0] for row in conn.execute("SELECT username FROM users")}
    assert names == {"writer", "renamed"}


async def test_an_async_readonly_session_that_writes_reads_its_writes(fresh: Cluster) -> None:
    users = UserRepository()
    manager = fresh.manager()
    try:
        async with manager.get_async_session(readonly=True) as session:
            assert await session.scalar(text("SELECT pg_is_in_recovery()")) is True
            session.add(User(email="a@example.com", username="async", hashed_password="h"))
            await session.flush()
            assert await session.scalar(text("SELECT pg_is_in_recovery()")) is False
            assert await users.async_get_by_username(session, "async") is not None
    finally:
        await manager.aclose()


def test_a_raw_write_on_a_standby_is_refused_not_lost(fresh: Cluster) -> None:
    from database.exceptions import DatabaseError

    manager = fresh.manager()
    try:
        with (
            pytest.raises(DatabaseError, match="read-only"),
            manager.get_session(readonly=True) as session,
        ):
            session.execute(text("DELETE FROM users"))
    finally:
        manager.close()


def test_a_stopped_standby_falls_back_with_no_failed_request(
    fresh: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    manager = fresh.manager()
    first, second = fresh.standbys
    try:
        for _ in range(4):  # both standbys have pooled connections now
            with manager.get_session(readonly=True) as session:
                session.execute(text("SELECT 1"))
        first.stop()
        where = []
        with caplog.at_level(logging.WARNING, logger="database.replicas"):
            for _ in range(10):
                with manager.get_session(readonly=True) as session:
                    where.append(session.scalar(text("SELECT inet_server_port()")))
        assert set(where) == {second.port}  # every request answered, none by the stopped one
        assert any("is down" in r.getMessage() for r in caplog.records)
        states = {s.url: s.state for s in manager.replica_status()}
        assert list(states.values()) == ["down", "ok"]
        second.stop()
        with caplog.at_level(logging.WARNING, logger="database.connection"):
            for _ in range(4):
                with manager.get_session(readonly=True) as session:
                    where.append(session.scalar(text("SELECT inet_server_port()")))
        assert where[-4:] == [fresh.primary.port] * 4  # then the primary
        assert any("no replica" in r.getMessage() for r in caplog.records)
        first.start()
        second.start()
        fresh.caught_up()
        time.sleep(INTERVAL_S)  # the next check finds them back
        with manager.get_session(readonly=True) as session:
            assert session.scalar(text("SELECT pg_is_in_recovery()")) is True, (
                manager.replica_status()
            )
    finally:
        manager.close()


async def test_a_stopped_standby_falls_back_with_no_failed_async_request(fresh: Cluster) -> None:
    manager = fresh.manager()
    first, second = fresh.standbys
    try:
        for _ in range(4):
            async with manager.get_async_session(readonly=True) as session:
                await session.execute(text("SELECT 1"))
        first.stop()

        async def read() -> int:
            async with manager.get_async_session(readonly=True) as session:
                return int(await session.scalar(text("SELECT inet_server_port()")))

        where = await asyncio.gather(*(read() for _ in range(16)))
        assert set(where) == {second.port}
        health = await manager.health_check()
        assert [r.state for r in health.replicas] == ["down", "ok"]
    finally:
        await manager.aclose()


def test_a_delayed_standby_is_skipped_as_lagging(
    fresh: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    assert fresh.delayed is not None
    manager = fresh.manager(fresh.delayed)
    try:
        with psycopg.connect(fresh.url(fresh.primary), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO users (id, email, username, hashed_password, is_active, created_at,"
                " updated_at) VALUES (gen_random_uuid(), 'l@example.com', 'late', 'h', true,"
                " now(), now())"
            )
        time.sleep(MAX_LAG_S + 0.2)
        with (
            caplog.at_level(logging.WARNING, logger="database.replicas"),
            manager.get_session(readonly=True) as session,
        ):
            assert session.scalar(text("SELECT pg_is_in_recovery()")) is False
            assert UserRepository().get_by_username(session, "late") is not None
        assert any("behind the primary" in r.getMessage() for r in caplog.records)
        (status,) = manager.check_health().replicas
        assert status.state == "lagging"
    finally:
        manager.close()


def test_the_lag_is_read_every_few_seconds_not_per_session(fresh: Cluster) -> None:
    manager = fresh.manager(replica_check_interval_s=60)
    statements: list[str] = []
    try:
        from sqlalchemy import event

        for replica in manager.replicas:
            event.listen(
                replica.engine,
                "before_cursor_execute",
                lambda _c, _k, statement, *_: statements.append(statement),
            )
        for _ in range(20):
            with manager.get_session(readonly=True) as session:
                session.execute(text("SELECT 1"))
    finally:
        manager.close()
    assert sum("pg_last_xact_replay_timestamp" in s for s in statements) == 2  # once each


def test_the_budget_covers_each_replica(fresh: Cluster) -> None:
    manager = fresh.manager(pool_size=2, max_overflow=1, pool_timeout=5)

    async def read() -> None:
        async with manager.get_async_session(readonly=True) as session:
            await session.execute(text("SELECT pg_sleep(0.05)"))

    async def main() -> None:
        await asyncio.gather(*(read() for _ in range(20)))
        for status in manager.replica_status():
            assert status.connection_budget == 3
            assert 1 <= status.open_connections <= 3
        # The primary: nothing read there but its WAL position, by each replica's check.
        assert manager.open_connections <= len(manager.replicas)

    try:
        asyncio.run(main())
    finally:
        manager.close()


def test_the_process_wide_helpers_and_the_environment_take_replicas(
    fresh: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", fresh.url(fresh.primary))
    monkeypatch.setenv("DB_REPLICA_URLS", ",".join(fresh.url(s) for s in fresh.standbys))
    close_database()
    with get_database_session(readonly=True) as session:
        assert session.scalar(text("SELECT pg_is_in_recovery()")) is True

    async def read() -> bool:
        async with get_async_database_session(readonly=True) as session:
            return bool(await session.scalar(text("SELECT pg_is_in_recovery()")))

    assert asyncio.run(read()) is True
    manager = init_database(fresh.url(fresh.primary), replica_urls=[fresh.url(fresh.standbys[0])])
    assert [r.urls.sync_url.port for r in manager.replicas] == [fresh.standbys[0].port]


def test_replica_settings_are_checked(tmp_path: Any) -> None:
    with pytest.raises(ConfigurationError, match="SQLite has no replicas"):
        DatabaseManager(f"sqlite:///{tmp_path / 'a.db'}", replica_urls="postgresql://h/db")
    with pytest.raises(ConfigurationError, match="PostgreSQL URLs only"):
        DatabaseManager("postgresql://h/db", replica_urls=f"sqlite:///{tmp_path / 'b.db'}")
    with pytest.raises(ConfigurationError, match="DB_REPLICA_MAX_LAG_S"):
        DatabaseManager("postgresql://h/db", replica_max_lag_s=-1)


def test_health_and_stats_show_each_replica(fresh: Cluster) -> None:
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    assert fresh.delayed is not None
    command = str(Path(sys.executable).with_name("buffetbot-db"))
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE"))}
    environment["DB_REPLICA_URLS"] = f"{fresh.url(fresh.standbys[0])},{fresh.url(fresh.delayed)}"
    environment["DB_REPLICA_MAX_LAG_S"] = str(MAX_LAG_S)
    environment["COLUMNS"] = "160"
    with psycopg.connect(fresh.url(fresh.primary), autocommit=True) as conn:
        conn.execute("SELECT pg_current_wal_lsn()")
        conn.execute("CREATE TEMPORARY TABLE t AS SELECT 1")  # WAL the delayed one waits on
    time.sleep(MAX_LAG_S + 0.2)

    def run(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [command, "--url", fresh.url(fresh.primary), *arguments],
            capture_output=True, text=True, env=environment, timeout=120, check=False,
        )  # fmt: skip

    health = run("health", "--json")
    assert health.returncode == 0, health.stderr  # the primary is well: healthy
    replicas = json.loads(health.stdout)["replicas"]
    assert [r["state"] for r in replicas] == ["ok", "lagging"]
    assert replicas[0]["lag_s"] == 0
    assert replicas[0]["url"].endswith(f":{fresh.standbys[0].port}/{APP_DATABASE[0]}")
    shown = run("health").stdout
    assert "ok, 0.00 s behind" in shown
    assert "lagging" in shown
    stats = json.loads(run("stats", "--json").stdout)
    assert [r["state"] for r in stats["replicas"]] == ["ok", "lagging"]


async def test_an_async_readonly_session_reads_its_write_through_the_point_reads(
    fresh: Cluster,
) -> None:
    prices = PriceHistoryRepository()
    manager = fresh.manager()
    bars = [{"ticker": "PNT", "date": dt.date(2024, 1, 2), "open": 1, "high": 2, "low": 1,
             "close": 2, "volume": 5}]  # fmt: skip
    try:
        async with manager.get_async_session(readonly=True) as session:
            assert await prices.async_get_latest(session, "PNT") is None  # on a standby
            assert (await prices.async_upsert(session, bars)).inserted == 1
            latest = await prices.async_get_latest(session, "PNT")  # now on the primary
            assert latest is not None
            assert latest.date == dt.date(2024, 1, 2)
    finally:
        await manager.aclose()


def test_purging_in_a_readonly_session_runs_on_the_primary(fresh: Cluster) -> None:
    from database.repositories import OptionsDataRepository

    options = OptionsDataRepository()
    manager = fresh.manager()
    when = dt.datetime(2019, 3, 5, tzinfo=dt.UTC)
    rows = [{"strike": 10, "option_type": "call", "expiration": dt.date(2019, 3, 15)}]
    try:
        with manager.get_session() as session:
            options.store_chain(session, "PRG", rows=rows, fetched_at=when)
        fresh.caught_up()
        with manager.get_session(readonly=True) as session:
            assert options.purge_expired(session, today=dt.date(2020, 1, 1)) == 1
    finally:
        manager.close()


def test_a_standby_cut_off_from_its_primary_is_skipped_once_the_primary_writes(
    fresh: Cluster,
) -> None:
    first, _ = fresh.standbys
    manager = fresh.manager(first)
    try:
        with psycopg.connect(first.url, autocommit=True) as conn:  # no WAL from the primary
            row = conn.execute("SHOW primary_conninfo").fetchone()
            original = row[0] if row else ""
            conn.execute("ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=1'")
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)
        with psycopg.connect(fresh.url(fresh.primary), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO users (id, email, username, hashed_password, is_active, created_at,"
                " updated_at) VALUES (gen_random_uuid(), 'cut@example.com', 'cut', 'h', true,"
                " now(), now())"
            )
        time.sleep(MAX_LAG_S + 0.3)
        with manager.get_session(readonly=True) as session:
            assert UserRepository().get_by_username(session, "cut") is not None
            assert session.scalar(text("SELECT pg_is_in_recovery()")) is False
        assert [r.state for r in manager.replica_status()] == ["lagging"]
    finally:
        manager.close()
        with psycopg.connect(first.url, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(original))
            conn.execute("SELECT pg_reload_conf()")
        fresh.caught_up()
