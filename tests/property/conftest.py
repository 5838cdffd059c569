"""Property tests of hostile input: hypothesis profiles, both backends at once, a count.

Each generated input runs against a SQLite and a PostgreSQL database in the same
example (:class:`Pair`), so the two verdicts can be compared directly. Accepted
calls are rolled back, so the seeded rows stay as they were and every example
starts from the same state; the plain-SQL snapshot of every table is checked
against that state after each call.

Profiles (``HYPOTHESIS_PROFILE``): ``ci`` (the default, sized to run the suite
in about a minute and a half on two cores) and ``deep`` (many more examples).
No example database is written into the tree (``database=None``).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings

from database import DatabaseManager
from database.exceptions import (
    DatabaseError,
    IntegrityError,
    InvalidCriteriaError,
    NotFoundError,
    ValidationError,
)
from database.models import Base
from tests.conftest import RawSQL

_HEALTH = [
    HealthCheck.function_scoped_fixture,  # the pair of databases is shared by every example
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.large_base_example,
]
settings.register_profile(
    "ci", max_examples=500, deadline=None, database=None, suppress_health_check=_HEALTH
)
settings.register_profile(
    "deep", max_examples=5000, deadline=None, database=None, suppress_health_check=_HEALTH
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

TABLES = [table.name for table in Base.metadata.sorted_tables]
# What a bad input may be told: the value is wrong, the row is not there, or a
# constraint the checks cannot know in advance (a duplicate) refused it.
INPUT_ERRORS = (ValidationError, InvalidCriteriaError, NotFoundError, IntegrityError)

_tried = {"inputs": 0, "accepted": 0, "rejected": 0}
_verdicts: collections.Counter[str] = collections.Counter()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _tried["inputs"]:
        terminalreporter.section("hostile input (property tests)")
        terminalreporter.write_line(
            f"{_tried['inputs']} generated inputs tried on SQLite and PostgreSQL each: "
            f"{_tried['accepted']} accepted, {_tried['rejected']} rejected with a typed error "
            f"(profile {settings.get_current_profile_name()})"
        )
        shown = ", ".join(f"{name} {count}" for name, count in _verdicts.most_common())
        terminalreporter.write_line(f"verdicts by test: {shown}")


@dataclass
class Verdict:
    """What one backend made of one call: accepted (``error`` None) or the error raised."""

    error: BaseException | None = None

    @property
    def name(self) -> str:
        return "accepted" if self.error is None else type(self.error).__name__


@dataclass
class Pair:
    """A SQLite and a PostgreSQL database with the same seeded rows."""

    managers: dict[str, DatabaseManager]
    raw: dict[str, RawSQL]
    loop: asyncio.AbstractEventLoop
    baseline: dict[str, str] = field(default_factory=dict)

    def seed(self, seeding: Callable[[DatabaseManager], Any]) -> list[Any]:
        """Run ``seeding(db)`` on both (committed); returns each backend's result."""
        results = [seeding(self.managers[name]) for name in ("sqlite", "postgresql")]
        self.baseline = {name: self.snapshot(name) for name in self.managers}
        return results

    def snapshot(self, backend: str) -> str:
        """A digest of every row of every table, read with plain SQL."""
        digest = hashlib.sha256()
        raw = self.raw[backend]
        for table in TABLES:
            rows = raw.rows(f"SELECT * FROM {table}")  # noqa: S608 - the models' own tables
            digest.update(table.encode())
            for row in sorted(repr(row) for row in rows):
                digest.update(row.encode())
        return digest.hexdigest()

    def _run(self, backend: str, mode: str, call: Callable[..., Any]) -> Verdict:
        db = self.managers[backend]
        try:
            if mode == "sync":
                with db.get_session() as session:
                    call(session, "")
                    session.rollback()  # accepted: undone, so every example sees the seed
            else:

                async def run() -> None:
                    async with db.get_async_session() as session:
                        await call(session, "async_")
                        await session.rollback()

                self.loop.run_until_complete(run())
        except BaseException as error:  # the verdict is what is checked
            if not isinstance(error, Exception):
                raise
            return Verdict(error)
        return Verdict()

    def check(
        self, mode: str, call: Callable[[Any, str], Any], *, names: set[str] | None = None
    ) -> Verdict:
        """Run ``call(session, prefix)`` on both backends and check the invariants.

        ``prefix`` is ``""`` or ``"async_"``: the call picks the method form with it
        (and awaits it in the async form). ``names``: what a ValidationError or an
        InvalidCriteriaError may name (the keywords, criteria and fields given).
        """
        verdicts = {backend: self._run(backend, mode, call) for backend in self.managers}
        _tried["inputs"] += 1
        for backend, verdict in verdicts.items():
            error = verdict.error
            if error is not None and not isinstance(error, DatabaseError):
                raise AssertionError(f"{backend} ({mode}): untyped {error!r}") from error
            if error is not None and not isinstance(error, INPUT_ERRORS):
                raise AssertionError(
                    f"{backend} ({mode}): not an input error: {error!r}"
                ) from error
            if names is not None and error is not None:
                named = _named(error)
                assert named is None or _matches(named, names), (
                    f"{backend}: {error!r} names {named!r}, not one of {sorted(names)[:20]}"
                )
            after = self.snapshot(backend)
            assert after == self.baseline[backend], (
                f"{backend} ({mode}): rows changed after {verdict.name}: {error!r}"
            )
        sqlite, postgresql = verdicts["sqlite"], verdicts["postgresql"]
        assert sqlite.name == postgresql.name, (
            f"different verdicts ({mode}): SQLite {sqlite.error!r}, PostgreSQL {postgresql.error!r}"
        )
        _tried["accepted" if sqlite.error is None else "rejected"] += 1
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]
        _verdicts[f"{test.removeprefix('test_')[:24]}:{sqlite.name}"] += 1
        return sqlite


def _named(error: BaseException) -> str | None:
    if isinstance(error, InvalidCriteriaError):
        return error.name
    if isinstance(error, ValidationError):
        return error.field
    return None


def _matches(named: str, names: set[str]) -> bool:
    """The error names one of ``names``, or a part of one (``shares`` of ``shares__gt``)."""
    return any(
        named == name or (named and named in name) or (name and name in named) for name in names
    )


@pytest.fixture
def pair(sqlite_template: Path, postgres_url: str, tmp_path: Path) -> Iterator[Pair]:
    path = tmp_path / "property.db"
    shutil.copy(sqlite_template, path)
    urls = {"sqlite": f"sqlite:///{path}", "postgresql": postgres_url}
    _truncate(postgres_url)
    loop = asyncio.new_event_loop()
    managers = {
        name: DatabaseManager(url, pool_size=2, max_overflow=2) for name, url in urls.items()
    }
    raw = {name: RawSQL(url) for name, url in urls.items()}
    try:
        yield Pair(managers, raw, loop)
    finally:
        for manager in managers.values():
            loop.run_until_complete(_aclose(manager))
            manager.close()
        for connection in raw.values():
            connection.close()
        loop.close()
        _truncate(postgres_url)


async def _aclose(manager: DatabaseManager) -> None:
    await manager.aclose()


def _truncate(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
