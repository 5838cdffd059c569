"""The CLI edges a newcomer hit (issue 9): help in groups with the exit codes, messages
that name the flag or variable actually used and the SQLite path, one-line errors,
and the revision an upgrade reached."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from database import migrate
from tests.e2e.test_cli import COMMAND, cli

HEAD = migrate.head_revision()


def run(*arguments: str, expect: int, **variables: str) -> subprocess.CompletedProcess[str]:
    """The CLI with exactly ``variables`` as its database configuration."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    environment.update(variables)
    result = subprocess.run(
        [COMMAND, *arguments],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=60,
    )
    assert result.returncode == expect, f"{arguments}: {result.stdout}\n{result.stderr}"
    return result


def test_help_lists_the_commands_in_groups_and_the_exit_codes() -> None:
    shown = run("--help", expect=0, COLUMNS="100").stdout
    groups = [shown.index(f"─ {title} ") for title in ("Schema", "Data", "Inspect")]
    assert groups == sorted(groups)
    for title, names in (
        ("Schema", ("upgrade", "downgrade", "current", "history", "check")),
        ("Data", ("import-cache", "cleanup", "demo")),
        ("Inspect", ("health", "stats")),
    ):
        start = shown.index(f"─ {title} ")
        places = [shown.index(f" {name} ", start) for name in names]
        assert places == sorted(places), title
        end = min((g for g in groups if g > start), default=len(shown))
        assert all(place < end for place in places), f"{title}: a command outside its group"
    flat = " ".join(shown.split())
    assert "Exit codes:" in flat
    assert "3 import-cache rejected (with --dry-run: would reject) some files" in flat


@pytest.mark.parametrize(
    ("arguments", "variables", "blamed"),
    [
        (("--url", "foo", "current"), {}, "--url"),
        (("current",), {"DATABASE_URL": "foo"}, "DATABASE_URL"),
        # the flag wins over the variable, and so is the one blamed
        (("--url", "::", "current"), {"DATABASE_URL": "sqlite:///x.db"}, "--url"),
    ],
)
def test_a_bad_url_is_blamed_on_where_it_came_from(
    arguments: tuple[str, ...], variables: dict[str, str], blamed: str
) -> None:
    failed = run(*arguments, expect=1, **variables)
    assert f"{blamed} is not a valid database URL" in failed.stderr
    wrong = {"--url", "DATABASE_URL"} - {blamed}
    assert not any(f"{name} is not" in failed.stderr for name in wrong)
    assert "Traceback" not in failed.stderr


def test_a_bad_setting_names_its_variable() -> None:
    failed = run("current", expect=1, DB_PORT="fifty")
    assert "DB_PORT" in failed.stderr
    assert "Traceback" not in failed.stderr


@pytest.mark.parametrize("where", ["missing folder", "folder is a file"])
def test_an_unwritable_sqlite_path_is_named(tmp_path: Path, where: str) -> None:
    if where == "missing folder":
        path = tmp_path / "no" / "such" / "folder" / "app.db"
    else:
        (tmp_path / "plain-file").write_text("not a folder")
        path = tmp_path / "plain-file" / "app.db"
    failed = cli(f"sqlite:///{path}", "upgrade", expect=1)
    assert str(path) in failed.stderr
    assert failed.stderr.count("\n") == 1, "one line"
    assert "Traceback" not in failed.stderr
    assert not path.exists()


def test_a_long_error_is_one_line_even_in_a_narrow_terminal(tmp_path: Path) -> None:
    path = tmp_path / ("a-rather-long-folder-name-" * 4) / "missing-folder" / "app.db"
    failed = run("--url", f"sqlite:///{path}", "upgrade", expect=1, COLUMNS="40")
    assert failed.stderr.count("\n") == 1
    assert str(path) in failed.stderr


def test_upgrade_prints_the_revision_it_reached(empty_url: str) -> None:
    assert cli(empty_url, "upgrade", "0002").stdout.strip() == "upgraded to 0002"
    assert cli(empty_url, "upgrade").stdout.strip() == f"upgraded to {HEAD} (head)"
    assert cli(empty_url, "upgrade").stdout.strip() == f"already at {HEAD} (head)"


def test_a_usage_error_exits_2_and_a_failure_1(empty_url: str) -> None:
    assert "No such command" in " ".join(cli(empty_url, "upgrayed", expect=2).stderr.split())
    cli(empty_url, "current", expect=1)  # exists (or not), but not migrated


@pytest.mark.parametrize("name", ["[/x]", "[red]x"])
def test_brackets_in_a_message_are_printed_as_they_are(tmp_path: Path, name: str) -> None:
    path = tmp_path / name / "app.db"  # rich would read "[/x]" and "[red]" as markup
    failed = cli(f"sqlite:///{path}", "current", expect=1)
    assert str(path) in failed.stderr
    assert "Traceback" not in failed.stderr
    assert failed.stderr.count("\n") == 1


def test_health_of_an_unreachable_server_does_not_claim_no_schema() -> None:
    url = "postgresql://app:secret@127.0.0.1:9/buffetbot"
    shown = " ".join(cli(url, "health", expect=1).stdout.split())
    assert "schema │ unknown: not reachable" in shown
    assert "no schema" not in shown
    assert "secret" not in shown


def test_import_cache_prints_bracketed_file_names_as_they_are(
    empty_url: str, tmp_path: Path
) -> None:
    cli(empty_url, "upgrade")
    folder = tmp_path / "[red]cache"
    folder.mkdir()
    (folder / "[bold]x.cache").write_bytes(b"not a pickle")
    failed = cli(empty_url, "import-cache", str(folder), expect=3)
    assert "rejected [bold]x.cache:" in failed.stderr
    assert f"import of {folder}\n" in failed.stdout  # whole, on a line of its own


def test_import_cache_of_a_missing_folder_says_so_without_a_progress_bar(
    empty_url: str, tmp_path: Path
) -> None:
    cli(empty_url, "upgrade")
    failed = cli(empty_url, "import-cache", str(tmp_path / "nope"), expect=1)
    assert failed.stderr.count("\n") == 1
    assert "is not a directory" in failed.stderr


@pytest.mark.parametrize("columns", ["999999999999", "0", "-5", "abc"])
def test_any_columns_value_gives_the_help(columns: str) -> None:
    # rich builds lines as wide as COLUMNS: a huge one hung or ran out of memory
    shown = run("--help", expect=0, COLUMNS=columns).stdout
    assert "import-cache" in shown
    assert max(len(line) for line in shown.splitlines()) <= 1000


def test_control_characters_in_file_names_are_shown_escaped(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "\x1b[2Jclear.cache").write_bytes(b"not a pickle")
    (folder / "fake.cache: ok\nrejected x.cache").write_bytes(b"not a pickle")
    shown = run("import-cache", "--dry-run", str(folder), expect=3).stderr
    assert "\x1b" not in shown
    assert "\\x1b[2Jclear.cache" in shown
    assert "fake.cache: ok\\nrejected x.cache" in shown
