"""Alembic's commands, on the package's own migration scripts (no alembic.ini)."""

from __future__ import annotations

from typing import Annotated

import typer
from alembic import command
from alembic.config import Config

from database import migrate
from database.cli.app import Options, app, console, run


def _url(options: Options) -> str:
    return options.manager().urls.sync_url.render_as_string(hide_password=False)


def _config(options: Options) -> Config:
    return migrate.alembic_config(_url(options))


@app.command()
def upgrade(
    context: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply migrations up to REVISION (default: head)."""
    run(context, "upgrade", lambda o: command.upgrade(_config(o), revision))
    console.print(f"upgraded to {revision}")


@app.command()
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
    run(context, "downgrade", lambda o: migrate.downgrade(_url(o), revision, force=force))
    console.print(f"downgraded to {revision}")


@app.command()
def current(context: typer.Context) -> None:
    """Show the database's revision and whether it is the newest."""

    def show(options: Options) -> None:
        url = _url(options)
        revision, head = migrate.current_revision(url), migrate.head_revision()
        state = "head" if revision == head else f"behind head {head}"
        console.print(f"{revision or 'empty (no migrations applied)'} ({state})")

    run(context, "current", show)


@app.command()
def history(context: typer.Context) -> None:
    """List the migrations, newest first."""
    run(context, "history", lambda o: command.history(_config(o)))


@app.command()
def check(context: typer.Context) -> None:
    """Fail (exit 1) if the models and the database schema differ."""
    run(context, "check", lambda o: command.check(_config(o)))
    console.print("schema matches the models")
