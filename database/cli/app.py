"""The command-line application: global options, error handling, and the commands."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from database import migrate
from database.connection import DatabaseManager

app = typer.Typer(
    name="buffetbot-db",
    help="Migrate, inspect, import and clean BuffetBot's database.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Tables need room: when the output is not a terminal, rich would assume 80 columns.
console = Console(width=None if sys.stdout.isatty() else 120)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 120)
T = TypeVar("T")


@dataclass
class Options:
    url: str | None
    debug: bool

    def manager(self) -> DatabaseManager:
        return DatabaseManager(self.url, pool_size=2, max_overflow=0)

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
        errors.print(f"[bold red]error:[/] {what} failed: {message}", highlight=False)
        raise typer.Exit(1) from None


def main() -> Any:
    # Imported for their @app.command() registrations.
    from database.cli import cache_commands, inspect_commands, migration_commands  # noqa: F401

    return app(prog_name="buffetbot-db", args=sys.argv[1:])
