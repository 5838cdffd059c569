"""The command-line application: global options, error handling, and the commands."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Annotated, Any, TextIO, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from database import migrate
from database.config import parse_url
from database.connection import DatabaseManager

EXIT_CODES = "\n\n".join(
    (
        "Exit codes:",
        "0  success;",
        "1  the command failed (one line on stderr; the traceback with --debug),"
        " or health, current or check found the database not ready;",
        "2  a usage error (unknown command or option, bad value);",
        "3  import-cache rejected (with --dry-run: would reject) some files;"
        " the others were imported.",
    )
)

app = typer.Typer(
    name="buffetbot-db",
    help="Migrate, inspect, import and clean BuffetBot's database.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _sane_columns() -> None:
    """Keep COLUMNS, which rich reads for every console (typer's help included),
    within 20..1000: a huge value makes it build lines that wide (a hang, or
    MemoryError), 0 prints nothing; a value that is not a number is dropped."""
    value = os.environ.get("COLUMNS")
    if value is None:
        return
    try:
        columns = int(value)
    except ValueError:
        del os.environ["COLUMNS"]
        return
    os.environ["COLUMNS"] = str(min(max(columns, 20), 1000))


def _width(stream: TextIO) -> int | None:
    """The terminal's width, or COLUMNS; else 120 (rich would assume 80 for a pipe)."""
    return None if stream.isatty() or os.environ.get("COLUMNS") else 120


_sane_columns()
console = Console(width=_width(sys.stdout))
errors = Console(stderr=True, width=_width(sys.stderr))
T = TypeVar("T")


@dataclass
class Options:
    url: str | None
    debug: bool

    def manager(self) -> DatabaseManager:
        # Parsed here so that a bad value is blamed on the flag, not on DATABASE_URL.
        url = None if self.url is None else parse_url(self.url, "--url")
        return DatabaseManager(url, pool_size=2, max_overflow=0)

    def existing_manager(self) -> DatabaseManager:
        """A manager for a database that must exist: a missing SQLite file is an error,
        never created."""
        manager = self.manager()
        try:
            migrate.require_existing(manager.urls)
        except BaseException:
            manager.close()
            raise
        return manager

    def current_manager(self) -> DatabaseManager:
        """A manager for a database that exists and whose schema is this package's head."""
        manager = self.existing_manager()
        try:
            migrate.require_current(manager.urls.sync_url.render_as_string(hide_password=False))
        except BaseException:
            manager.close()
            raise
        return manager


def _print_version(value: bool) -> None:
    if value:
        console.print(f"buffetbot-db {version('buffetbot-database')}", highlight=False)
        raise typer.Exit()


@app.callback()
def options(
    context: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help="Database URL (default: DATABASE_URL, DB_* or the embedded SQLite file)."
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the package version and exit.",
        ),
    ] = False,
) -> None:
    context.obj = Options(url, debug)


def run(context: typer.Context, what: str, action: Callable[[Options], T]) -> T:
    """Run ``action``; without --debug, a failure is one line on stderr and exit code 1."""
    options: Options = context.obj
    try:
        return action(options)
    except typer.Exit:
        raise
    except Exception as error:
        if options.debug:
            raise
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        # soft_wrap: one line, never broken inside a path or a URL.
        errors.print(
            f"[bold red]error:[/] {what} failed: {escape(message)}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None


# The help lists the commands in these groups, in this order.
HELP_GROUPS = {
    "Schema": ("upgrade", "downgrade", "current", "history", "check"),
    "Data": ("import-cache", "cleanup", "demo"),
    "Inspect": ("health", "stats"),
}


def _arrange_help() -> None:
    order = [name for names in HELP_GROUPS.values() for name in names]
    group = {name: title for title, names in HELP_GROUPS.items() for name in names}
    commands = app.registered_commands
    for command in commands:
        name = command.name or (command.callback.__name__ if command.callback else "")
        command.name = name
        command.rich_help_panel = group[name]
    commands.sort(key=lambda command: order.index(command.name or ""))


def main() -> Any:
    # Imported for their @app.command() registrations.
    from database.cli import (  # noqa: F401
        cache_commands,
        inspect_commands,
        migration_commands,
        partition_commands,
    )

    _arrange_help()
    return app(prog_name="buffetbot-db", args=sys.argv[1:])
