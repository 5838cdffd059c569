"""PostgreSQL's row-level security (``DB_ROW_SECURITY=on``): the second wall.

Raw SQL in a session opened for one user cannot read, insert, update or delete
another user's portfolios, positions or portfolio analyses; a plain session
sees none of them; a system session sees them all; shared tables stay shared;
the maintenance commands still work. The repositories' own checks are not in
play here: everything goes through ``text()``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from database import DatabaseManager, migrate
from database.exceptions import ConfigurationError, PermissionDeniedError, ValidationError
from database.models import AnalysisResult, AnalysisType, Portfolio, Position, User
from database.repositories import (
    AnalysisRepository,
    PortfolioRepository,
    PriceHistoryRepository,
)
from tests.conftest import RawSQL, recreate_database

# Its tests run through PgBouncer (transaction pooling) too: the wall is per transaction.
pytestmark = [pytest.mark.postgresql_only, pytest.mark.pgbouncer]

OWNED_TABLES = ("portfolios", "positions", "analysis_results")


@pytest.fixture
def walled(database_url: str) -> Iterator[DatabaseManager]:
    manager = DatabaseManager(database_url, row_security=True, pool_size=3, max_overflow=2)
    yield manager
    manager.close()


@pytest.fixture
def two_users(db: DatabaseManager) -> dict[str, Any]:
    """Ada and Bob, each with a portfolio, a position and a portfolio analysis; one shared one."""
    made: dict[str, Any] = {}
    with db.get_session() as session:
        for name in ("ada", "bob"):
            user = User(email=f"{name}@example.com", username=f"{name}_{name}", hashed_password="h")
            session.add(user)
            session.flush()
            portfolio = Portfolio(user_id=user.id, name=f"{name}'s")
            session.add(portfolio)
            session.flush()
            session.add(Position(portfolio_id=portfolio.id, ticker="AAPL", shares=10))
            session.add(
                AnalysisResult(
                    portfolio_id=portfolio.id,
                    ticker="AAPL",
                    analysis_type=AnalysisType.RISK_ANALYSIS,
                    summary=name,
                )
            )
            made[name], made[f"{name}_portfolio"] = user, portfolio
        session.add(
            AnalysisResult(ticker="AAPL", analysis_type=AnalysisType.VALUE_ANALYSIS, summary="all")
        )
    return made


def everything(sql: RawSQL) -> list[Any]:
    """Every row of the owned tables, read by the superuser (whom no policy limits)."""
    return [sql.rows(f"SELECT * FROM {table} ORDER BY id") for table in OWNED_TABLES]  # noqa: S608


def visible(session: Any) -> dict[str, list[str]]:
    return {
        "portfolios": list(session.scalars(text("SELECT name FROM portfolios ORDER BY name"))),
        "positions": [str(p) for p in session.scalars(text("SELECT portfolio_id FROM positions"))],
        "analysis_results": list(
            session.scalars(text("SELECT summary FROM analysis_results ORDER BY summary"))
        ),
    }


def test_a_users_session_sees_only_their_rows_and_the_shared_ones(
    walled: DatabaseManager, two_users: dict[str, Any]
) -> None:
    with walled.get_session(user_id=two_users["ada"].id) as session:
        seen = visible(session)
        assert seen["portfolios"] == ["ada's"]
        assert seen["positions"] == [str(two_users["ada_portfolio"].id)]
        assert seen["analysis_results"] == ["ada", "all"]
        # A user's session reaches its own account only.
        assert list(session.scalars(text("SELECT username FROM users"))) == ["ada_ada"]


async def test_the_async_form_is_walled_as_well(
    walled: DatabaseManager, two_users: dict[str, Any]
) -> None:
    async with walled.get_async_session(user_id=two_users["bob"].id) as session:
        names = (await session.scalars(text("SELECT name FROM portfolios"))).all()
        summaries = (await session.scalars(text("SELECT summary FROM analysis_results"))).all()
    assert names == ["bob's"]
    assert sorted(summaries) == ["all", "bob"]


def test_raw_sql_cannot_change_another_users_rows(
    walled: DatabaseManager, two_users: dict[str, Any], sql: RawSQL
) -> None:
    before = everything(sql)
    bob, bobs = two_users["bob"], two_users["bob_portfolio"]
    with walled.get_session(user_id=two_users["ada"].id) as session:
        changes = [
            session.execute(
                text("UPDATE portfolios SET name = 'taken' WHERE user_id = :u"), {"u": bob.id}
            ),
            session.execute(
                text("UPDATE positions SET shares = 0 WHERE portfolio_id = :p"), {"p": bobs.id}
            ),
            session.execute(
                text("DELETE FROM analysis_results WHERE portfolio_id = :p"), {"p": bobs.id}
            ),
            session.execute(text("DELETE FROM positions")),
            session.execute(text("DELETE FROM portfolios WHERE user_id = :u"), {"u": bob.id}),
        ]
        assert [change.rowcount for change in changes] == [0, 0, 0, 1, 0]  # only ada's position
        session.rollback()
    assert everything(sql) == before


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO portfolios (id, user_id, name, risk_tolerance, target_cash_percentage)"
        " VALUES (gen_random_uuid(), :bob, 'planted', 'moderate', 0)",
        "INSERT INTO positions (id, portfolio_id, ticker, shares)"
        " VALUES (gen_random_uuid(), :bobs, 'MSFT', 1)",
        "INSERT INTO analysis_results (id, portfolio_id, ticker, analysis_type, calculated_at)"
        " VALUES (gen_random_uuid(), :bobs, 'MSFT', 'risk_analysis', now())",
        # Moving one's own row into another user's portfolio is an insert there too.
        "UPDATE positions SET portfolio_id = :bobs",
        "UPDATE portfolios SET user_id = :bob",
    ],
)
def test_raw_sql_cannot_plant_rows_for_another_user(
    walled: DatabaseManager, two_users: dict[str, Any], sql: RawSQL, statement: str
) -> None:
    before = everything(sql)
    params = {"bob": two_users["bob"].id, "bobs": two_users["bob_portfolio"].id}
    with (
        pytest.raises(PermissionDeniedError) as caught,
        walled.get_session(user_id=two_users["ada"].id) as session,
    ):
        session.execute(text(statement), params)
    assert "row-level security" in str(caught.value)
    assert everything(sql) == before


def test_a_plain_session_sees_no_user_owned_rows(
    walled: DatabaseManager, two_users: dict[str, Any], sql: RawSQL
) -> None:
    with walled.get_session() as session:
        assert visible(session) == {"portfolios": [], "positions": [], "analysis_results": ["all"]}
        assert session.execute(text("DELETE FROM portfolios")).rowcount == 0
        assert PortfolioRepository().list(session) == []
    assert sql.count("portfolios") == 2


def test_a_system_session_sees_every_row(
    walled: DatabaseManager, two_users: dict[str, Any]
) -> None:
    with walled.get_session(system=True) as session:
        seen = visible(session)
        assert seen["portfolios"] == ["ada's", "bob's"]
        assert len(seen["positions"]) == 2
        assert seen["analysis_results"] == ["ada", "all", "bob"]
        assert session.scalar(text("SELECT current_user")) != "buffetbot_user"


def test_nothing_outlives_the_transaction_on_a_pooled_connection(
    walled: DatabaseManager, two_users: dict[str, Any]
) -> None:
    for _ in range(3):  # one connection, reused: the role and user go with each COMMIT
        with walled.get_session(user_id=two_users["ada"].id) as session:
            assert session.scalar(text("SELECT current_user")) == "buffetbot_user"
        with walled.get_session(system=True) as session:
            assert session.scalar(text("SELECT current_setting('app.user_id', true)")) in (
                None,
                "",
            )
            assert session.scalar(text("SELECT current_user")) != "buffetbot_user"
    assert walled.engine.pool.checkedin() == 1  # type: ignore[attr-defined]


def test_the_repositories_work_inside_the_wall(
    walled: DatabaseManager, two_users: dict[str, Any]
) -> None:
    ada = two_users["ada"]
    portfolios, analyses = PortfolioRepository(), AnalysisRepository()
    with walled.get_session(user_id=ada.id) as session:
        mine = portfolios.create(session, user_id=ada.id, name="Second")
        portfolios.add_position(session, mine.id, ticker="MSFT", shares=5, average_cost=100)
        portfolios.adjust_position(session, mine.id, "MSFT", shares=5, price=200)
        analyses.save(session, portfolio_id=mine.id, ticker="MSFT", analysis_type="risk_analysis")
        summary = portfolios.get_summary(session, mine.id)
        assert summary.total_cost_basis == 1500
        assert [p.name for p in portfolios.get_user_portfolios(session, ada.id)] == [
            "Second",
            "ada's",
        ]
        # Shared market data is written through COPY and a temporary table, as the role.
        bars = [
            {"ticker": "MSFT", "date": "2024-01-02", "open": 1, "high": 2, "low": 1, "close": 2}
        ]
        assert PriceHistoryRepository().upsert(session, bars).inserted == 1
        assert portfolios.get_by_id(session, two_users["bob_portfolio"].id) is None


async def test_the_repositories_work_inside_the_wall_async(
    walled: DatabaseManager, two_users: dict[str, Any]
) -> None:
    bob = two_users["bob"]
    portfolios = PortfolioRepository()
    async with walled.get_async_session(user_id=bob.id) as session:
        mine = await portfolios.async_create(session, user_id=bob.id, name="Async")
        await portfolios.async_adjust_position(session, mine.id, "NVDA", shares=2, price=10)
        found = await portfolios.async_get_with_positions(session, mine.id)
        assert found is not None
        assert [p.ticker for p in found.positions] == ["NVDA"]
        theirs = two_users["ada_portfolio"].id
        assert await portfolios.async_get_with_positions(session, theirs) is None
    await asyncio.sleep(0)


def test_a_database_without_the_policies_is_refused(
    postgres_server_url: str,
) -> None:
    url = recreate_database(postgres_server_url, "buffetbot_no_wall")
    migrate.upgrade(url, "0003")
    manager = DatabaseManager(url, row_security=True)
    try:
        with pytest.raises(ConfigurationError) as caught, manager.get_session() as session:
            session.execute(text("SELECT 1"))
        assert "buffetbot-db upgrade" in str(caught.value)
    finally:
        manager.close()


def test_the_maintenance_commands_work_inside_the_wall(
    database_url: str, db: DatabaseManager, two_users: dict[str, Any], tmp_path: Path
) -> None:
    with db.get_session() as session:  # a user's expired result, for cleanup to find
        session.add(
            AnalysisResult(
                portfolio_id=two_users["ada_portfolio"].id,
                ticker="MSFT",
                analysis_type=AnalysisType.RISK_ANALYSIS,
                expires_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
            )
        )
    command = str(Path(sys.executable).with_name("buffetbot-db"))
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_"))}
    environment["DB_ROW_SECURITY"] = "on"
    cache = tmp_path / "cache"
    cache.mkdir()

    def run(*arguments: str) -> str:
        result = subprocess.run(
            [command, "--url", database_url, *arguments],
            capture_output=True,
            text=True,
            env=environment,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"{arguments}: {result.stdout}\n{result.stderr}"
        return result.stdout

    assert json.loads(run("stats", "--json"))["freshness"]["expired_analysis_results"] == 1
    assert json.loads(run("cleanup", "--json"))["analysis_results"] == 1
    run("import-cache", str(cache))
    assert "My Portfolio" in run("demo")


def test_accounts_are_walled_too(
    walled: DatabaseManager, two_users: dict[str, Any], sql: RawSQL
) -> None:
    ada, bob = two_users["ada"], two_users["bob"]
    before = sql.rows("SELECT id, email, hashed_password FROM users ORDER BY id")
    with walled.get_session(user_id=ada.id) as session:
        taken = session.execute(
            text("UPDATE users SET email = 'mine@example.com' WHERE id = :b"), {"b": bob.id}
        )
        gone = session.execute(text("DELETE FROM users WHERE id = :b"), {"b": bob.id})
        assert (taken.rowcount, gone.rowcount) == (0, 0)
    # A session for no user signs users in and up (it reads and updates
    # accounts) but deletes none, so no cascade reaches anyone's portfolios.
    with walled.get_session() as session:
        assert session.scalar(text("SELECT count(*) FROM users")) == 2
        assert session.execute(text("DELETE FROM users")).rowcount == 0
    assert sql.rows("SELECT id, email, hashed_password FROM users ORDER BY id") == before
    assert sql.count("portfolios") == 2
    with walled.get_session(user_id=bob.id) as session:  # one's own account, though
        assert session.execute(text("DELETE FROM users WHERE id = :b"), {"b": bob.id}).rowcount


def test_shared_results_are_read_and_added_by_users_but_changed_by_none(
    walled: DatabaseManager, two_users: dict[str, Any], sql: RawSQL
) -> None:
    analyses = AnalysisRepository()
    with walled.get_session(user_id=two_users["ada"].id) as session:
        assert analyses.invalidate(session, ticker="AAPL") == 1  # ada's own result only
        assert analyses.count(session, summary="all") == 1
        shared_id = analyses.get_one_by_criteria(session, summary="all").id
        assert analyses.delete(session, shared_id) is False
        changed = session.execute(text("UPDATE analysis_results SET summary = 'x'"))
        assert changed.rowcount == 1  # ada's own result, not the shared one
        analyses.save(session, ticker="MSFT", analysis_type="value_analysis", summary="new")
        session.rollback()
    assert sql.scalar("SELECT count(*) FROM analysis_results WHERE expires_at IS NULL") == 3


def test_a_plain_session_given_a_user_id_says_how_to_open_one(
    walled: DatabaseManager, two_users: dict[str, Any]
) -> None:
    portfolios = PortfolioRepository()
    ada = two_users["ada"].id
    calls = [
        lambda s: portfolios.get_by_id(s, two_users["ada_portfolio"].id, user_id=ada),
        lambda s: portfolios.get_user_portfolios(s, ada),
        lambda s: portfolios.get_by_criteria(s, user_id=ada),
        lambda s: portfolios.create(s, user_id=ada, name="Plain"),
        lambda s: portfolios.add_position(
            s, two_users["ada_portfolio"].id, user_id=ada, ticker="MSFT", shares=1
        ),
    ]
    for call in calls:
        with pytest.raises(ValidationError) as caught, walled.get_session() as session:
            call(session)
        assert "get_session(user_id=" in str(caught.value)


def test_autocommit_cannot_bypass_the_wall(database_url: str, two_users: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        DatabaseManager(database_url, row_security=True, isolation_level="AUTOCOMMIT")
    manager = DatabaseManager(database_url, row_security=True)
    try:
        with (
            pytest.raises(ConfigurationError),
            manager.get_session(user_id=two_users["ada"].id) as session,
        ):
            session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    finally:
        manager.close()


def test_an_application_role_without_createrole_migrates_and_is_told_what_to_grant(
    postgres_server_url: str, postgres_url: str
) -> None:
    """The usual production set-up: the application's role owns its database, no more."""
    # postgres_url is migrated: buffetbot_user exists on the cluster.
    server = make_url(postgres_server_url).set(drivername="postgresql")
    role, name = "buffetbot_app_owner", "buffetbot_app_db"
    admin = server.render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"CREATE DATABASE {name} OWNER {role}")
    url = server.set(username=role, password=None, database=name)
    app_url = url.render_as_string(hide_password=False)
    try:
        migrate.upgrade(app_url)  # without CREATEROLE or admin on buffetbot_user
        manager = DatabaseManager(app_url, row_security=True)
        try:
            with pytest.raises(ConfigurationError) as caught, manager.get_session() as session:
                session.execute(text("SELECT 1"))
            assert "GRANT buffetbot_user TO" in str(caught.value)
        finally:
            manager.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"GRANT buffetbot_user TO {role}")
        manager = DatabaseManager(app_url, row_security=True)
        try:
            with manager.get_session() as session:
                assert session.scalar(text("SELECT current_user")) == "buffetbot_user"
                assert session.scalar(text("SELECT count(*) FROM portfolios")) == 0
        finally:
            manager.close()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"REVOKE buffetbot_user FROM {role}")
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_system_upsert_leaves_the_pooled_connection_usable_inside_the_wall(
    database_url: str, two_users: dict[str, Any]
) -> None:
    """The staging table of price upserts outlives the transaction on its connection."""
    prices = PriceHistoryRepository()
    manager = DatabaseManager(database_url, row_security=True, pool_size=1, max_overflow=0)

    def bars(ticker: str) -> list[dict[str, Any]]:
        return [
            {"ticker": ticker, "date": "2024-01-02", "open": 1, "high": 2, "low": 1, "close": 2}
        ]

    async def system_then_user() -> list[int]:  # one loop: one async pool, one connection
        inserted = []
        for ticker, opened in (("NVDA", {"system": True}), ("AMZN", {"user_id": bob})):
            async with manager.get_async_session(**opened) as session:
                inserted.append((await prices.async_upsert(session, bars(ticker))).inserted)
        return inserted

    bob = two_users["bob"].id

    try:
        with manager.get_session(system=True) as session:
            assert prices.upsert(session, bars("MSFT")).inserted == 1
        with manager.get_session(user_id=two_users["ada"].id) as session:
            assert prices.upsert(session, bars("AAPL")).inserted == 1
        assert asyncio.run(system_then_user()) == [1, 1]
    finally:
        manager.close()


def test_a_role_without_its_grants_is_refused_with_the_sql_to_run(
    postgres_server_url: str,
) -> None:
    """As when the role was missing at migration time and an administrator made it later."""
    url = recreate_database(postgres_server_url, "buffetbot_no_grants")
    migrate.upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("REVOKE ALL ON users, portfolios, price_history FROM buffetbot_user")
    manager = DatabaseManager(url, row_security=True)
    try:
        with pytest.raises(ConfigurationError) as caught, manager.get_session() as session:
            session.execute(text("SELECT 1"))
        message = str(caught.value)
        assert "its grants" in message
        assert "GRANT SELECT, INSERT, UPDATE, DELETE ON users, portfolios" in message
    finally:
        manager.close()
