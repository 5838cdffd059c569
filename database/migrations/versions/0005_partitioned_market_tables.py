"""Partition price_history by year and options_data by month (PostgreSQL only).

Each table is rebuilt as a range-partitioned table (native declarative
partitioning) with its rows: a DEFAULT partition, a partition for every year
(price_history, by ``date``) or month (options_data, by ``fetched_at``, UTC)
that holds rows, and for the current period and the next. options_data's
primary key becomes (id, fetched_at): a partitioned table's unique keys must
hold its partition key. The grants of row-level security (0004) are given
again. The downgrade rebuilds both as plain tables, with their rows, whatever
partitions they had by then.

SQLite has no partitions: nothing changes there.

The rebuild copies every row: on a large database run it in a maintenance
window (``INSERT ... SELECT`` of each table, then its indexes).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

import datetime as dt
from collections.abc import Sequence

from alembic import op
from sqlalchemy import Connection, text

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A migration's SQL is frozen text: written out, from constants only.
# (table, partition column, monthly, keys and indexes after the rebuild, before it)
TABLES = (
    (
        "price_history",
        "date",
        False,
        ("ALTER TABLE price_history ADD CONSTRAINT pk_price_history PRIMARY KEY (ticker, date)",),
        ("ALTER TABLE price_history ADD CONSTRAINT pk_price_history PRIMARY KEY (ticker, date)",),
    ),
    (
        "options_data",
        "fetched_at",
        True,
        (
            "ALTER TABLE options_data ADD CONSTRAINT pk_options_data PRIMARY KEY (id, fetched_at)",
            "ALTER TABLE options_data ADD CONSTRAINT uq_options_data_contract_symbol_fetched_at"
            " UNIQUE (contract_symbol, fetched_at)",
            "CREATE INDEX ix_options_data_ticker_expiration_fetched_at"
            " ON options_data (ticker, expiration, fetched_at)",
        ),
        (
            "ALTER TABLE options_data ADD CONSTRAINT pk_options_data PRIMARY KEY (id)",
            "ALTER TABLE options_data ADD CONSTRAINT uq_options_data_contract_symbol_fetched_at"
            " UNIQUE (contract_symbol, fetched_at)",
            "CREATE INDEX ix_options_data_ticker_expiration_fetched_at"
            " ON options_data (ticker, expiration, fetched_at)",
        ),
    ),
)

GRANT = """
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'buffetbot_user') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO buffetbot_user;
    END IF;
END
$$
"""


def _start(day: dt.date, monthly: bool) -> dt.date:
    return day.replace(month=day.month if monthly else 1, day=1)


def _after(start: dt.date, monthly: bool) -> dt.date:
    if not monthly:
        return start.replace(year=start.year + 1)
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


def _literal(start: dt.date, monthly: bool) -> str:
    return f"'{start.isoformat()} 00:00:00+00'" if monthly else f"'{start.isoformat()}'"


def _name(table: str, start: dt.date, monthly: bool) -> str:
    return f"{table}_{start:%Y_%m}" if monthly else f"{table}_{start:%Y}"


def _periods(connection: Connection, table: str, column: str, monthly: bool) -> list[dt.date]:
    """The periods that hold rows, and the current one and the next."""
    unit = "month" if monthly else "year"
    found = connection.execute(
        text(
            f"SELECT DISTINCT date_trunc('{unit}', {column} AT TIME ZONE 'UTC')::date"  # noqa: S608
            f" FROM {table}"
        )
        if monthly
        else text(f"SELECT DISTINCT date_trunc('{unit}', {column})::date FROM {table}")  # noqa: S608
    ).scalars()
    today = _start(dt.datetime.now(dt.UTC).date(), monthly)
    return sorted({*(day for day in found if day is not None), today, _after(today, monthly)})


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "postgresql":
        return
    for table, column, monthly, keys, _ in TABLES:
        periods = _periods(connection, table, column, monthly)
        op.execute(f"ALTER TABLE {table} RENAME TO {table}_unpartitioned")
        op.execute(
            f"CREATE TABLE {table} (LIKE {table}_unpartitioned INCLUDING DEFAULTS"
            f" INCLUDING CONSTRAINTS) PARTITION BY RANGE ({column})"
        )
        op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        for start in periods:
            if start.year == dt.MAXYEAR and (not monthly or start.month == 12):
                continue  # no bound after it that a date can name: the default takes it
            low, high = _literal(start, monthly), _literal(_after(start, monthly), monthly)
            op.execute(
                f"CREATE TABLE {_name(table, start, monthly)} PARTITION OF {table}"
                f" FOR VALUES FROM ({low}) TO ({high})"
            )
        op.execute(f"INSERT INTO {table} SELECT * FROM {table}_unpartitioned")  # noqa: S608
        op.execute(f"DROP TABLE {table}_unpartitioned")
        for statement in keys:
            op.execute(statement)
        op.execute(GRANT.format(table=table))


def downgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "postgresql":
        return
    for table, _, _, _, keys in TABLES:
        op.execute(f"ALTER TABLE {table} RENAME TO {table}_partitioned")
        op.execute(
            f"CREATE TABLE {table} (LIKE {table}_partitioned INCLUDING DEFAULTS"
            " INCLUDING CONSTRAINTS)"
        )
        op.execute(f"INSERT INTO {table} SELECT * FROM {table}_partitioned")  # noqa: S608
        op.execute(f"DROP TABLE {table}_partitioned")  # and its partitions
        for statement in keys:
            op.execute(statement)
        op.execute(GRANT.format(table=table))
