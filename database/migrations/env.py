"""Alembic environment: the package's own settings, models and connection set-up.

The URL comes from ``config.attributes["url"]`` (set by ``database.migrate``),
else ``-x url=...``; without one, the migrations run on the database of the
process-wide manager (``init_database(url)``) when one is set, through its own
engine (so an in-memory ``sqlite://`` database is the same one), else on the
environment's database as the package reads it. Migrations
run on the sync driver that the URL maps to (psycopg 3 / sqlite3), so
``postgresql+asyncpg://`` and plain ``postgresql://`` URLs both work.
"""

from __future__ import annotations

import logging.config

from alembic import context

from database.connection import DatabaseManager
from database.migrations.render import render_item
from database.models import Base
from database.partitions import PARTITION_NAME
from database.session import active_database

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _options(dialect_name: str) -> dict[str, object]:
    return {
        "target_metadata": target_metadata,
        "render_as_batch": dialect_name == "sqlite",  # SQLite rebuilds tables to ALTER them
        # DDL is transactional on both: the package's SQLite set-up emits BEGIN itself.
        "transactional_ddl": True,
        "render_item": render_item,
        "compare_type": True,
        "include_name": _include_name,
    }


def _include_name(name: str | None, type_: str, _parent: object) -> bool:
    """Leave the partitions of the market tables out of the comparison with the models:
    they are made at run time (database.partitions), not declared."""
    return not (type_ == "table" and name is not None and PARTITION_NAME.match(name))


def _database() -> tuple[DatabaseManager, bool]:
    """The manager of the database to migrate, and whether this run made it (and closes it)."""
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    if url is None:
        active = active_database()
        if active is not None:
            return active, False
    return DatabaseManager(url, pool_size=1, max_overflow=0), True


def run_migrations_offline() -> None:
    manager, made = _database()
    try:
        context.configure(
            url=manager.urls.sync_url,
            literal_binds=True,
            dialect_opts={"paramstyle": "named"},
            **_options(manager.backend),  # type: ignore[arg-type]
        )
        with context.begin_transaction():
            context.run_migrations()
    finally:
        if made:
            manager.close()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **_options(connection.dialect.name))  # type: ignore[arg-type]
        with context.begin_transaction():
            context.run_migrations()
        return
    manager, made = _database()
    try:
        with manager.engine.connect() as connection:
            context.configure(connection=connection, **_options(manager.backend))  # type: ignore[arg-type]
            with context.begin_transaction():
                context.run_migrations()
    finally:
        if made:
            manager.close()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
