"""`buffetbot-db` on a database whose schema is not this package's: missing, older, newer,
or a SQLite file that does not exist. Each says so, typed, with a non-zero exit."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from database import migrate
from tests.conftest import RawSQL
from tests.e2e.test_cli import cli, old_cache

HEAD = migrate.head_revision()
SCRIPTS = ScriptDirectory.from_config(migrate.alembic_config())
BEFORE_HEAD = SCRIPTS.get_revision(HEAD or "head").down_revision


def commands(tmp_path: Path) -> list[tuple[str, ...]]:
    """Every command that needs the schema at head."""
    folder = tmp_path / "cache"
    if not folder.exists():
        old_cache(folder)
    return [("stats",), ("cleanup",), ("import-cache", str(folder)), ("check",), ("current",)]


def touch(url: str) -> None:
    """Make the empty database exist: for SQLite, an empty file."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).touch()


def said(stderr: str) -> str:
    return " ".join(stderr.split())  # rich wraps long lines


def assert_no_driver_error(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert "OperationalError" not in stderr
    assert "no such table" not in stderr
    assert "UndefinedTable" not in stderr


def test_every_command_on_an_empty_database_says_run_upgrade(
    empty_url: str, tmp_path: Path
) -> None:
    touch(empty_url)
    for command in commands(tmp_path):
        failed = cli(empty_url, *command, expect=1)
        message = said(failed.stderr)
        assert f"no schema, this package needs {HEAD}: run `buffetbot-db upgrade`" in message
        assert_no_driver_error(failed.stderr)


def test_every_command_on_an_older_schema_names_both_revisions(
    empty_url: str, tmp_path: Path
) -> None:
    migrate.upgrade(empty_url, "0002")
    for command in commands(tmp_path):
        failed = cli(empty_url, *command, expect=1)
        message = said(failed.stderr)
        assert f"schema at 0002, this package needs {HEAD}: run `buffetbot-db upgrade`" in message
        assert_no_driver_error(failed.stderr)
    assert "0002 (behind head" in cli(empty_url, "current", expect=1).stdout
    raw = RawSQL(empty_url)
    try:
        assert raw.scalar("SELECT version_num FROM alembic_version") == "0002"  # nothing changed
    finally:
        raw.close()


def test_an_unknown_revision_is_reported_as_unknown_not_behind(
    empty_url: str, tmp_path: Path
) -> None:
    migrate.upgrade(empty_url)
    raw = RawSQL(empty_url)
    try:
        raw.execute("UPDATE alembic_version SET version_num = 'f00dcafe9999'")
    finally:
        raw.close()
    for command in commands(tmp_path):
        failed = cli(empty_url, *command, expect=1)
        message = said(failed.stderr)
        assert "schema at f00dcafe9999, a revision unknown to this package" in message
        assert f"this package knows up to {HEAD}" in message
        assert "behind" not in failed.stdout + message
    assert "unknown to this package" in cli(empty_url, "current", expect=1).stdout


@pytest.mark.sqlite_only  # a PostgreSQL database is never created by connecting
def test_no_command_but_upgrade_creates_a_mistyped_sqlite_file(
    backend: str, tmp_path: Path
) -> None:
    missing = tmp_path / "mistyped.db"
    url = f"sqlite:///{missing}"
    for command in [
        *commands(tmp_path),
        ("health",),
        ("health", "--json"),
        ("history",),
        ("downgrade",),
    ]:
        failed = cli(url, *command, expect=1)
        assert f"SQLite database file {missing} does not exist" in said(failed.stderr)
        assert not missing.exists(), command
    assert f"upgraded to {HEAD} (head)" in cli(url, "upgrade").stdout
    assert missing.exists()


def test_the_library_check_raises_the_typed_error(empty_url: str, tmp_path: Path) -> None:
    from database.exceptions import DatabaseFileMissingError, SchemaVersionError

    touch(empty_url)
    with pytest.raises(SchemaVersionError) as empty:
        migrate.require_current(empty_url)
    assert (empty.value.current, empty.value.required, empty.value.unknown) == (None, HEAD, False)
    migrate.upgrade(empty_url, "0002")
    with pytest.raises(SchemaVersionError) as older:
        migrate.require_current(empty_url)
    assert (older.value.current, older.value.required) == ("0002", HEAD)
    migrate.upgrade(empty_url)
    migrate.require_current(empty_url)  # at head: no error
    if empty_url.startswith("sqlite"):
        missing = tmp_path / "nowhere.db"
        with pytest.raises(DatabaseFileMissingError):
            migrate.require_current(f"sqlite:///{missing}")
        assert not missing.exists()


def test_version_prints_the_package_version() -> None:
    shown = cli(None, "--version").stdout
    assert shown.strip() == f"buffetbot-db {version('buffetbot-database')}"


def test_a_downgrade_by_steps_names_the_revision_it_reached(empty_url: str) -> None:
    cli(empty_url, "upgrade")
    reverted = cli(empty_url, "downgrade", "-1").stdout
    assert f"downgraded to {BEFORE_HEAD}" in reverted
    assert "-1" not in reverted
    assert "downgraded to base (no schema)" in cli(empty_url, "downgrade", "base").stdout


def test_import_cache_exits_3_when_it_rejected_a_file(empty_url: str, tmp_path: Path) -> None:
    cli(empty_url, "upgrade")
    folder = old_cache(tmp_path / "cache")  # two good entries and corrupt.cache
    rejected = cli(empty_url, "import-cache", str(folder), expect=3)
    assert "rejected corrupt.cache" in rejected.stderr
    assert "imported" in rejected.stdout
    (folder / "corrupt.cache").unlink()
    assert "already present" in cli(empty_url, "import-cache", str(folder)).stdout  # exit 0
    assert "Exit codes" in cli(None, "import-cache", "--help").stdout
