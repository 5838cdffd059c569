"""Alembic's commands, on the package's own migration scripts (no alembic.ini)."""

from __future__ import annotations

from typing import Annotated

import typer
from alembic import command
from alembic.config import Config

from database import migrate
from database.cli.app import Options, app, console, run


def _config(options: Options) -> Config:
    manager = options.manager()
    return migrate.alembic_config(manager.urls.sync_url.render_as_string(hide_password=False))


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
) -> None:
    """Revert migrations down to REVISION (default: one step)."""
    run(context, "downgrade", lambda o: command.downgrade(_config(o), revision))
    console.print(f"downgraded to {revision}")


@app.command()
def current(context: typer.Context) -> None:
    """Show the database's revision and whether it is the newest."""

    def show(options: Options) -> None:
        url = options.manager().urls.sync_url.render_as_string(hide_password=False)
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
