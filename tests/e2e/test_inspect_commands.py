"""`buffetbot-db stats`, `health` and `demo` as a user sees them: the database's own
statement statistics, whole URLs in narrow terminals, sorted tickers, two-decimal money."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from rich.console import Console
from typer.testing import CliRunner

import database.cli.inspect_commands as inspect_commands
from database import DatabaseManager, migrate
from database.cli.app import app
from tests.conftest import recreate_database
from tests.integration.test_monitoring import require_preloaded

COMMAND = str(Path(sys.executable).with_name("buffetbot-db"))


def cli(
    url: str | None, *arguments: str, expect: int = 0, columns: int | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    # Tables as wide as a terminal's, whatever the runner's stdin is (xdist's is a pipe).
    environment["COLUMNS"] = str(columns or 160)
    command = [COMMAND, *(["--url", url] if url else []), *arguments]
    result = subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=300, check=False
    )
    assert result.returncode == expect, f"{arguments}: {result.stdout}\n{result.stderr}"
    return result


def flat(output: str) -> str:
    """The output with line breaks and runs of spaces made single spaces."""
    return " ".join(output.split())


@pytest.fixture
def long_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A migrated database whose URL is longer than a 120-column terminal."""
    if backend == "sqlite":
        folder = tmp_path / ("a-folder-with-a-rather-long-name-" * 3)
        folder.mkdir()
        url = f"sqlite:///{folder / 'buffetbot-database-with-a-long-file-name.db'}"
    else:
        url = recreate_database(request.getfixturevalue("postgres_server_url"), "buffetbot_long")
        url += "?application_name=buffetbot-inspect-commands-with-a-long-name&connect_timeout=10"
    assert len(url) > 120
    migrate.upgrade(url)
    return url


def shown(url: str) -> str:
    """The URL as the commands print it (the password hidden)."""
    manager = DatabaseManager(url)
    try:
        return manager.urls.safe()
    finally:
        manager.close()


def run_in(width: int, url: str, *arguments: str) -> tuple[int, str]:
    """Run a command in this process on a console ``width`` columns wide."""
    buffer = io.StringIO()
    original = inspect_commands.console
    inspect_commands.console = Console(file=buffer, width=width, color_system=None)
    try:
        result = CliRunner().invoke(app, ["--url", url, *arguments])
    finally:
        inspect_commands.console = original
    return result.exit_code, buffer.getvalue()


@pytest.mark.parametrize("columns", [80, 120])
def test_urls_are_printed_whole_in_narrow_terminals(long_url: str, columns: int) -> None:
    url = shown(long_url)
    for command in ("health", "stats"):
        assert url in cli(long_url, command, columns=columns).stdout.splitlines()[0]
        code, output = run_in(columns, long_url, command)
        assert code == 0, output
        assert url in output.splitlines()[0]  # one line, however long
        table_lines = output.splitlines()[1:]
        assert all(len(line) <= columns for line in table_lines), output


@pytest.mark.sqlite_only
@pytest.mark.parametrize("columns", [80, 120])
def test_the_in_memory_url_is_printed_whole(backend: str, columns: int) -> None:
    url = shown("sqlite://")  # a name of its own for each manager's in-memory database
    assert len(url) > 80
    whole = re.escape(url).replace(re.escape(url.split("buffetbot-")[1][:32]), "[0-9a-f]{32}")
    code, output = run_in(columns, "sqlite://", "health")
    assert code == 1  # a new in-memory database has no schema
    assert re.fullmatch(f"health of {whole}", output.splitlines()[0]), output
    assert "unhealthy" in output


def test_stats_lists_tickers_alphabetically_and_demo_money_with_two_decimals(
    empty_url: str,
) -> None:
    cli(empty_url, "upgrade")
    demo = cli(empty_url, "demo").stdout
    assert "51,379.70" in demo  # total market value
    assert "40,797.50" in demo  # total cost basis
    assert "+10,582.20" in demo  # total gain
    assert "90.00 + 10.00 cash" in demo
    assert re.search(r"\d\.\d{3,}", demo) is None, demo  # nothing like 2500.0000000000
    stats = json.loads(cli(empty_url, "stats", "--json").stdout)
    tickers = list(stats["freshness"]["latest_price_dates"])
    assert tickers == ["AAPL", "CALM", "GOOG"]
    text = cli(empty_url, "stats").stdout
    assert text.index("AAPL") < text.index("CALM") < text.index("GOOG")
    assert "statements of this process" in text


@pytest.mark.sqlite_only
def test_on_sqlite_stats_says_pg_stat_statements_is_postgresql_only(
    backend: str, empty_url: str
) -> None:
    cli(empty_url, "upgrade")
    assert "pg_stat_statements is PostgreSQL-only" in flat(cli(empty_url, "stats").stdout)
    found = json.loads(cli(empty_url, "stats", "--json").stdout)["database_statements"]
    assert found["available"] is False
    assert found["statements"] == []
    assert "PostgreSQL-only" in found["note"]


@pytest.mark.postgresql_only
def test_without_the_extension_stats_says_how_to_enable_it(backend: str, empty_url: str) -> None:
    cli(empty_url, "upgrade")
    output = flat(cli(empty_url, "stats").stdout)  # exit 0
    assert "shared_preload_libraries = 'pg_stat_statements'" in output
    assert "postgresql.conf" in output
    assert "CREATE EXTENSION pg_stat_statements;" in output
    found = json.loads(cli(empty_url, "stats", "--json").stdout)["database_statements"]
    assert found["available"] is False
    assert "CREATE EXTENSION pg_stat_statements;" in found["note"]


@pytest.mark.postgresql_only
def test_stats_shows_the_databases_statements_from_pg_stat_statements(
    backend: str, postgres_server_url: str
) -> None:
    require_preloaded(postgres_server_url)
    url = recreate_database(postgres_server_url, "buffetbot_inspect")
    cli(url, "upgrade")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")
    cli(url, "demo")  # the application's statements, in another process

    found = json.loads(cli(url, "stats", "--json", "--top", "5").stdout)["database_statements"]
    assert found["available"] is True
    assert 0 < len(found["statements"]) <= 5
    first = found["statements"][0]
    assert set(first) == {"query", "calls", "total_ms", "mean_ms", "rows"}
    assert all(s["calls"] > 0 and s["total_ms"] >= 0 for s in found["statements"])
    totals = [s["total_ms"] for s in found["statements"]]
    assert totals == sorted(totals, reverse=True)

    every = json.loads(cli(url, "stats", "--json", "--top", "100").stdout)["database_statements"]
    assert any("price_history" in s["query"] for s in every["statements"])

    for columns in (80, 120):
        code, output = run_in(columns, url, "stats", "--top", "100")
        assert code == 0, output
        assert "database statements, all processes (pg_stat_statements" in flat(output)
        assert "statements of this process" in flat(output)
        assert all(len(line) <= columns for line in output.splitlines()[1:]), output
        section = output[output.index("pg_stat_statements") : output.index("of this process")]
        rows = [line for line in section.splitlines() if line.startswith("│")]
        queries = [line.rsplit("│", 2)[1].strip() for line in rows]
        assert any("price_history" in query for query in queries), output
        words = {w.strip(",()") for s in every["statements"] for w in s["query"].split()}
        for query in queries:  # shortened between words, never cut inside one
            assert all(w.strip(",()") in words for w in query.rstrip("…").split()), query
