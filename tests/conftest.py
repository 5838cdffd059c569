"""Test harness: every integration test runs on SQLite and on a real PostgreSQL.

PostgreSQL comes from ``TEST_DATABASE_URL`` when set; otherwise a throwaway
server is started from the installed binaries for the session. If neither
works, the PostgreSQL tests fail: they are never skipped.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from database import DatabaseManager, close_database, migrate
from database.models import Base
from tests.pg_server import pgbouncer_binary, throwaway_pgbouncer, throwaway_postgres

BACKENDS = ("sqlite", "postgresql")
# The id of the PostgreSQL runs that go through PgBouncer (the backend is still "postgresql").
PGBOUNCER = "pgbouncer"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker
        backends: list[Any] = list(BACKENDS)
        if marker("postgresql_only"):
            backends = ["postgresql"]
        if marker("sqlite_only"):
            backends = ["sqlite"]
        elif marker("pgbouncer") and not marker("not_through_pgbouncer"):
            # A repository test runs a third time, through PgBouncer in transaction mode.
            backends.append(
                pytest.param("postgresql", id=PGBOUNCER, marks=pytest.mark.through_pgbouncer)
            )
        metafunc.parametrize("backend", backends, scope="session")


def through_pgbouncer(request: pytest.FixtureRequest) -> bool:
    """Whether the test runs through PgBouncer (its PostgreSQL run with the pgbouncer id)."""
    return request.node.get_closest_marker("through_pgbouncer") is not None


# -- PostgreSQL server and databases ------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL of a PostgreSQL database on the server the tests may create databases in."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    with throwaway_postgres() as url:
        yield url


def recreate_database(server_url: str, name: str) -> str:
    """Drop and create ``name`` on the server; return its URL (plain postgresql://).

    Under pytest-xdist the worker's id is appended, so workers sharing a server
    (``TEST_DATABASE_URL``) never drop each other's databases.
    """
    if worker := os.environ.get("PYTEST_XDIST_WORKER"):
        name = f"{name}_{worker}"
    url = make_url(server_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_url(postgres_server_url: str) -> str:
    """The suite's PostgreSQL database, migrated to head once."""
    url = recreate_database(postgres_server_url, "buffetbot_test")
    migrate.upgrade(url)
    return url


def require_pgbouncer() -> None:
    """Skip, saying why, without the ``pgbouncer`` binary; fail instead under ``CI=true``."""
    if pgbouncer_binary() is None:
        reason = "pgbouncer is not installed (apt-get install pgbouncer): PgBouncer tests not run"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def pgbouncer_url(postgres_server_url: str, postgres_url: str) -> Iterator[str]:
    """``postgres_url`` through a PgBouncer (transaction pooling) the harness starts.

    Without the binary the PgBouncer runs are skipped, saying why; under CI
    (``CI=true``) that is a failure instead.
    """
    require_pgbouncer()
    with throwaway_pgbouncer(postgres_server_url) as bouncer:
        yield make_url(postgres_url).set(port=bouncer.port).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def database_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of the backend under test."""
    if backend == "sqlite":
        path = tmp_path / "test.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    direct = request.getfixturevalue("postgres_url")
    if through_pgbouncer(request):
        monkeypatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setenv("DB_PGBOUNCER", "true")
        yield request.getfixturevalue("pgbouncer_url")
    else:
        yield direct
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with psycopg.connect(direct, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {tables} CASCADE")


@pytest.fixture
def empty_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty database (no schema) of the backend under test."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return recreate_database(request.getfixturevalue("postgres_server_url"), "buffetbot_empty")


@pytest.fixture
def db(database_url: str) -> Iterator[DatabaseManager]:
    manager = DatabaseManager(database_url, pool_size=5, max_overflow=5)
    yield manager
    manager.close()
    close_database()


# -- plain SQL, to check what the code under test stored ------------------------------


class RawSQL:
    """Queries through the bare driver (sqlite3 / psycopg), written with ``:name`` params."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.backend = parsed.get_backend_name()
        self._connection: Any
        if self.backend == "sqlite":
            self._connection = sqlite3.connect(parsed.database or "", isolation_level=None)
        else:
            self._connection = psycopg.connect(
                parsed.set(drivername="postgresql").render_as_string(hide_password=False),
                autocommit=True,
                prepare_threshold=None,  # it may go through PgBouncer (transaction pooling)
            )

    def _query(self, query: str) -> str:
        return query if self.backend == "sqlite" else re.sub(r"(?<!:):(\w+)", r"%(\1)s", query)

    def key(self, value: uuid.UUID) -> str:
        """A UUID as the backend stores it."""
        return value.hex if self.backend == "sqlite" else str(value)

    def execute(self, query: str, **params: Any) -> None:
        self._connection.execute(self._query(query), params)

    def rows(self, query: str, **params: Any) -> list[tuple[Any, ...]]:
        return list(self._connection.execute(self._query(query), params).fetchall())

    def scalar(self, query: str, **params: Any) -> Any:
        row = self._connection.execute(self._query(query), params).fetchone()
        return None if row is None else row[0]

    def count(self, table: str) -> int:
        return int(self.scalar(f"SELECT count(*) FROM {table}"))  # noqa: S608 - test tables

    def close(self) -> None:
        self._connection.close()


@pytest.fixture
def sql(database_url: str) -> Iterator[RawSQL]:
    raw = RawSQL(database_url)
    yield raw
    raw.close()


# -- a visible account of what ran on which backend ------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Carried in each test's report, so the summary counts them under xdist too.
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "backend" in callspec.params:
            backend = PGBOUNCER if through_pgbouncer_item(item) else callspec.params["backend"]
            item.user_properties.append(("backend", backend))


def through_pgbouncer_item(item: pytest.Item) -> bool:
    return item.get_closest_marker("through_pgbouncer") is not None


def _backend_of(report: Any) -> str | None:
    for name, value in getattr(report, "user_properties", ()):
        if name == "backend":
            return str(value)
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: one worker per core, but one in all on a shared server
    (``TEST_DATABASE_URL``): cluster-wide objects such as roles are not per database."""
    return 1 if os.environ.get("TEST_DATABASE_URL") else None


def pytest_terminal_summary(terminalreporter: Any) -> None:
    outcomes: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            backend = _backend_of(report)
            if backend is not None and getattr(report, "when", "call") in ("call", "setup"):
                if outcome == "passed" and report.when != "call":
                    continue
                outcomes[backend][outcome] += 1
    terminalreporter.section("integration tests per backend")
    for backend in (*BACKENDS, PGBOUNCER):
        counts = ", ".join(f"{n} {o}" for o, n in sorted(outcomes[backend].items()))
        terminalreporter.write_line(f"{backend}: {counts or 'none ran'}")
