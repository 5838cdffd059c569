"""Alembic's commands, on the package's own migration scripts (no alembic.ini)."""

from __future__ import annotations

from typing import Annotated

import typer
from alembic import command
from alembic.config import Config

from database import migrate
from database.cli.app import Options, app, console, run
from database.exceptions import SchemaVersionError


def _url(options: Options, *, existing: bool = True) -> str:
    """The URL to hand Alembic; unless ``existing`` is False, a missing SQLite file is an
    error (Alembic would create it)."""
    manager = options.existing_manager() if existing else options.manager()
    try:
        return manager.urls.sync_url.render_as_string(hide_password=False)
    finally:
        manager.close()


def _config(options: Options, *, existing: bool = True) -> Config:
    return migrate.alembic_config(_url(options, existing=existing))


@app.command()
def upgrade(
    context: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply migrations up to REVISION (default: head); prints the revision reached."""

    def apply(options: Options) -> tuple[str | None, str | None]:
        url = _url(options, existing=False)
        before = migrate.current_revision(url)
        command.upgrade(migrate.alembic_config(url), revision)
        return before, migrate.current_revision(url)

    before, reached = run(context, "upgrade", apply)
    head = " (head)" if reached == migrate.head_revision() else ""
    done = "already at" if reached == before else "upgraded to"
    console.print(f"{done} {reached or 'base (no schema)'}{head}", highlight=False)


# "-1" is a revision, not an option.
@app.command(context_settings={"ignore_unknown_options": True})
def downgrade(
    context: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision, or -N steps back.")] = "-1",
    force: Annotated[
        bool, typer.Option("--force", help="Downgrade even if it destroys rows.")
    ] = False,
) -> None:
    """Revert migrations down to REVISION (default: one step).

    A step that would destroy rows refuses (naming them, exit 1) unless --force.
    """

    def revert(options: Options) -> str | None:
        url = _url(options)
        migrate.downgrade(url, revision, force=force)
        return migrate.current_revision(url)

    reached = run(context, "downgrade", revert)
    console.print(f"downgraded to {reached or 'base (no schema)'}", highlight=False)


@app.command()
def current(context: typer.Context) -> None:
    """Show the database's revision; exit 1 unless it is this package's head."""

    def show(options: Options) -> None:
        url = _url(options)
        revision, head = migrate.current_revision(url), migrate.head_revision()
        try:
            migrate.verify_revision(revision)
        except SchemaVersionError as error:
            state = "unknown to this package" if error.unknown else f"behind head {head}"
            console.print(f"{revision or 'empty (no migrations applied)'} ({state})")
            raise
        console.print(f"{revision} (head)")

    run(context, "current", show)


@app.command()
def history(context: typer.Context) -> None:
    """List the migrations, newest first."""
    run(context, "history", lambda o: command.history(_config(o)))


@app.command()
def check(context: typer.Context) -> None:
    """Fail (exit 1) if the schema is not at head or differs from the models."""

    def compare(options: Options) -> None:
        url = _url(options)
        migrate.require_current(url)
        command.check(migrate.alembic_config(url))

    run(context, "check", compare)
    console.print("schema matches the models")
