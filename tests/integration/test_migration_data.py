"""Migrations keep data: a downgrade that would destroy rows refuses unless forced.

Every table gets rows through plain SQL, and every check reads them back the
same way. The walk over the script directory holds for revisions added later.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from decimal import Decimal
from typing import Any

import pytest
from alembic.script import ScriptDirectory

from database import migrate
from database.exceptions import DataLossError
from database.migrations.guard import Rows
from tests.conftest import RawSQL
from tests.integration.test_migrations import ROOT, table_names

FILE_CACHE = "1 row of market_data_cache with data_type 'file_cache'"


def revisions_newest_first() -> list[tuple[str, str | None]]:
    """(revision, the revision below it) for every script, head first."""
    walked: list[tuple[str, str | None]] = []
    for script in ScriptDirectory.from_config(migrate.alembic_config()).walk_revisions():
        below = script.down_revision
        assert below is None or isinstance(below, str), "a merge: walk it by hand"
        walked.append((script.revision, below))
    return walked


def seed(raw: RawSQL) -> None:
    """Rows in every table of revision 0002: 1 user, ..., 3 cache entries (one file_cache)."""

    def number(text: str, scale: int) -> Any:
        # SQLite stores ExactDecimal as a scaled integer; PostgreSQL as NUMERIC.
        value = Decimal(text)
        return int(value.scaleb(scale)) if raw.backend == "sqlite" else value

    def insert(table: str, **values: Any) -> None:
        names = ", ".join(values)
        params = ", ".join(f":{name}" for name in values)
        raw.execute(f"INSERT INTO {table} ({names}) VALUES ({params})", **values)  # noqa: S608

    user, portfolio = raw.key(uuid.uuid4()), raw.key(uuid.uuid4())
    when = "2024-01-02 03:04:05.000000"
    insert(
        "users",
        id=user,
        email="keeper@example.com",
        username="keeper",
        hashed_password="hashed",
        preferences='{"theme": "dark"}',
        last_login_at=when,
    )
    insert(
        "portfolios",
        id=portfolio,
        user_id=user,
        name="Core",
        risk_tolerance="moderate",
        target_cash_percentage=number("5.25", 2),
    )
    for ticker in ("AAPL", "MSFT"):
        insert(
            "positions",
            id=raw.key(uuid.uuid4()),
            portfolio_id=portfolio,
            ticker=ticker,
            shares=number("10.5", 6),
            average_cost=number("150.1234", 4),
            allocation_percentage=number("12.5", 2),
            notes="kept",
        )
    insert(
        "analysis_results",
        id=raw.key(uuid.uuid4()),
        portfolio_id=portfolio,
        ticker="AAPL",
        analysis_type="value_analysis",
        score=number("7.5", 4),
        metadata='{"pe": 20}',
        confidence_level=number("0.8", 4),
        calculated_at=when,
    )
    for key, data_type in (("a", "stock_info"), ("b", "news"), ("c", "file_cache")):
        insert(
            "market_data_cache",
            id=raw.key(uuid.uuid4()),
            cache_key=key,
            ticker="AAPL",
            data_type=data_type,
            data='{"price": 222.77}',
            data_source="test",
            cached_at=when,
            expires_at="2099-01-01 00:00:00.000000",
        )
    for day in ("2024-01-02", "2024-01-03"):
        insert(
            "price_history",
            ticker="AAPL",
            date=day,
            open=number("185.5", 6),
            high=number("186", 6),
            low=number("184", 6),
            close=number("185.64", 6),
            volume=82_488_700,
            dividends=number("0", 6),
            stock_splits=number("0", 6),
            data_source="test",
        )
    insert(
        "options_data",
        id=raw.key(uuid.uuid4()),
        ticker="AAPL",
        contract_symbol="AAPL240119C00190000",
        option_type="call",
        strike=number("190", 6),
        expiration="2024-01-19",
        implied_volatility=number("0.25", 6),
        fetched_at=when,
    )


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order."""
    raw = RawSQL(url)
    try:
        return {
            table: sorted(raw.rows(f"SELECT * FROM {table}"), key=repr)  # noqa: S608
            for table in sorted(table_names(url))
        }
    finally:
        raw.close()


def count(url: str, rows: Rows) -> int:
    raw = RawSQL(url)
    try:
        if rows.column is None:
            return raw.count(rows.table)
        query = f"SELECT count(*) FROM {rows.table} WHERE {rows.column} = :value"  # noqa: S608
        return int(raw.scalar(query, value=rows.value))
    finally:
        raw.close()


@pytest.fixture
def filled_url(empty_url: str) -> str:
    """A database at head with rows in every table."""
    migrate.upgrade(empty_url)
    raw = RawSQL(empty_url)
    try:
        seed(raw)
    finally:
        raw.close()
    return empty_url


def step_down(url: str) -> DataLossError | None:
    """Downgrade one revision, unforced; the refusal if it refused."""
    try:
        migrate.downgrade(url, "-1")
    except DataLossError as refused:
        return refused
    return None


def test_each_step_down_either_refuses_and_changes_nothing_or_keeps_every_row(
    filled_url: str,
) -> None:
    for revision, below in revisions_newest_first():
        assert migrate.current_revision(filled_url) == revision
        before = snapshot(filled_url)
        refused = step_down(filled_url)
        if refused is None:
            # Nothing was destroyed: going back up restores every row as it was.
            migrate.upgrade(filled_url, revision)
            assert snapshot(filled_url) == before
            migrate.downgrade(filled_url, "-1")
        else:
            assert refused.revision == revision
            assert refused.losses
            for rows, lost in refused.losses:
                assert lost == count(filled_url, rows) > 0
                assert f"{lost} row" in str(refused)
                assert f"of {rows.table}" in str(refused)
            assert migrate.current_revision(filled_url) == revision
            assert snapshot(filled_url) == before
            migrate.downgrade(filled_url, "-1", force=True)
        assert migrate.current_revision(filled_url) == below
    assert table_names(filled_url) == set()


def test_downgrading_0002_refuses_to_delete_file_cache_entries(filled_url: str) -> None:
    before = snapshot(filled_url)
    with pytest.raises(DataLossError, match=FILE_CACHE) as refused:
        migrate.downgrade(filled_url, "0001")
    assert refused.value.revision == "0002"
    assert [(rows.table, lost) for rows, lost in refused.value.losses] == [("market_data_cache", 1)]
    assert migrate.current_revision(filled_url) == migrate.head_revision()
    assert snapshot(filled_url) == before

    migrate.downgrade(filled_url, "0001", force=True)
    assert migrate.current_revision(filled_url) == "0001"
    after = snapshot(filled_url)
    assert len(after["market_data_cache"]) == 2  # only the file_cache entry went
    assert all("file_cache" not in row for row in after["market_data_cache"])
    for table in ("users", "portfolios", "positions", "price_history", "options_data"):
        assert len(after[table]) == len(before[table])


def test_downgrading_0001_names_every_table_and_its_row_count(filled_url: str) -> None:
    migrate.downgrade(filled_url, "0001", force=True)
    with pytest.raises(DataLossError) as refused:
        migrate.downgrade(filled_url, "base")
    message = str(refused.value)
    for expected in (
        "1 row of users",
        "1 row of portfolios",
        "2 rows of positions",
        "1 row of analysis_results",
        "2 rows of market_data_cache",
        "2 rows of price_history",
        "1 row of options_data",
    ):
        assert expected in message
    assert "file_cache" not in message
    assert migrate.current_revision(filled_url) == "0001"
    assert len(table_names(filled_url)) == 7


def test_a_refused_downgrade_of_several_steps_undoes_the_steps_it_took(filled_url: str) -> None:
    raw = RawSQL(filled_url)
    try:
        raw.execute("DELETE FROM market_data_cache WHERE data_type = 'file_cache'")
    finally:
        raw.close()
    before = snapshot(filled_url)
    # Every step above 0001 now loses nothing and runs; 0001 refuses: all of it rolls back.
    with pytest.raises(DataLossError, match=r"downgrading 0001 would destroy .*1 row of users"):
        migrate.downgrade(filled_url, "base")
    assert migrate.current_revision(filled_url) == migrate.head_revision()
    assert snapshot(filled_url) == before
    raw = RawSQL(filled_url)
    try:  # 0002's check is still the one in force
        raw.execute("UPDATE market_data_cache SET data_type = 'file_cache' WHERE cache_key = 'a'")
    finally:
        raw.close()


def test_a_downgrade_that_destroys_nothing_needs_no_force(filled_url: str) -> None:
    raw = RawSQL(filled_url)
    try:
        raw.execute("DELETE FROM market_data_cache WHERE data_type = 'file_cache'")
    finally:
        raw.close()
    before = snapshot(filled_url)
    migrate.downgrade(filled_url, "0001")
    migrate.upgrade(filled_url)
    assert snapshot(filled_url) == before


def test_an_empty_database_steps_down_to_base_without_force(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    for _, below in revisions_newest_first():
        migrate.downgrade(empty_url, "-1")
        assert migrate.current_revision(empty_url) == below
    assert table_names(empty_url) == set()


def alembic(url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic", *arguments],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_the_alembic_command_refuses_unless_given_x_force(filled_url: str) -> None:
    before = snapshot(filled_url)
    refused = alembic(filled_url, "downgrade", "base")
    assert refused.returncode != 0
    assert f"FAILED: downgrading 0002 would destroy {FILE_CACHE}" in refused.stdout
    assert "Traceback" not in refused.stderr
    assert migrate.current_revision(filled_url) == migrate.head_revision()
    assert snapshot(filled_url) == before

    forced = alembic(filled_url, "-x", "force=true", "downgrade", "base")
    assert forced.returncode == 0, forced.stderr
    assert "downgrading 0001 (forced): destroying" in forced.stderr  # said, not silent
    assert "2 rows of positions" in forced.stderr
    assert table_names(filled_url) == set()


def test_the_alembic_command_rejects_a_force_that_is_not_a_boolean(filled_url: str) -> None:
    result = alembic(filled_url, "-x", "force=perhaps", "downgrade", "base")
    assert result.returncode != 0
    assert "-x force='perhaps': expected true or false" in result.stderr
    assert migrate.current_revision(filled_url) == migrate.head_revision()


# Offline (--sql) batch migrations on SQLite need a live connection: alembic cannot run them.
@pytest.mark.postgresql_only
def test_an_offline_script_that_may_destroy_rows_needs_force(filled_url: str) -> None:
    refused = alembic(filled_url, "downgrade", "0002:0001", "--sql")
    assert refused.returncode != 0
    assert "may destroy rows of market_data_cache with data_type 'file_cache'" in refused.stdout
    forced = alembic(filled_url, "-x", "force=true", "downgrade", "0002:0001", "--sql")
    assert forced.returncode == 0, forced.stderr
    assert "DELETE FROM market_data_cache WHERE data_type = 'file_cache'" in forced.stdout
