"""Partitioned market tables on PostgreSQL: ``price_history`` by year, ``options_data`` by month.

Native declarative partitioning (``PARTITION BY RANGE``), each table with a
``DEFAULT`` partition that takes rows no other partition covers. Partitions
are named after their range (``price_history_2024``, ``options_data_2026_11``)
and made ahead of the data: an upsert or a chain snapshot first makes the
partitions its rows need (:func:`ensure_for`), and ``buffetbot-db partitions
create`` makes the coming ones. A partition made for a range that the default
partition already holds rows of takes those rows over, in the same
transaction. Retention drops whole partitions (:func:`drop_before`) instead of
deleting rows one by one.

SQLite has no partitions: the same repository calls run on its plain tables.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from database.exceptions import ValidationError, first_line
from database.replicas import use_primary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scheme:
    """How one table is partitioned: by ``column``, a partition per year or month."""

    table: str
    column: str
    monthly: bool

    def start_of(self, day: dt.date) -> dt.date:
        return day.replace(month=day.month if self.monthly else 1, day=1)

    def after(self, start: dt.date) -> dt.date:
        """The start of the next period; ValueError past the year 9999."""
        if not self.monthly:
            return start.replace(year=start.year + 1)
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)

    def has_next(self, start: dt.date) -> bool:
        """Whether a period follows the one starting at ``start`` (not so in 9999's last)."""
        return start.year < dt.MAXYEAR or (self.monthly and start.month < 12)

    def name(self, start: dt.date) -> str:
        return f"{self.table}_{start:%Y_%m}" if self.monthly else f"{self.table}_{start:%Y}"

    @property
    def default(self) -> str:
        return f"{self.table}_default"

    def literal(self, start: dt.date) -> str:
        """A bound as SQL: a date, or the UTC midnight that starts it (timestamptz)."""
        return f"'{start.isoformat()} 00:00:00+00'" if self.monthly else f"'{start.isoformat()}'"


PRICE_HISTORY = Scheme("price_history", "date", monthly=False)
OPTIONS_DATA = Scheme("options_data", "fetched_at", monthly=True)
SCHEMES = {scheme.table: scheme for scheme in (PRICE_HISTORY, OPTIONS_DATA)}

# What Alembic's comparison skips: the partitions are made at run time, not by the models.
PARTITION_NAME = re.compile(r"^(price_history|options_data)_(default|\d{4}|\d{4}_\d{2})$")


@dataclass(frozen=True)
class Partition:
    """One partition as ``buffetbot-db partitions list`` shows it."""

    table: str
    name: str
    start: dt.date | None  # None: the default partition
    end: dt.date | None
    rows: int
    rows_estimated: bool  # from the planner's statistics (a large partition is not counted)
    bytes: int


def _q(name: str) -> str:
    """An identifier, quoted (a partition's name comes from the catalog)."""
    return '"' + name.replace('"', '""') + '"'


def scheme_of(table: str) -> Scheme:
    try:
        return SCHEMES[table]
    except KeyError:
        raise ValidationError(
            "table", table, f"is not partitioned: use one of {', '.join(SCHEMES)}"
        ) from None


def is_partitioned(connection: Connection, table: str) -> bool:
    """Whether ``table`` is a partitioned table on this (PostgreSQL) database."""
    if connection.dialect.name != "postgresql":
        return False
    kind = connection.execute(
        text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:table)"), {"table": table}
    ).scalar()
    return kind == "p"


_BOUNDS = re.compile(r"FROM \('(\d{4}-\d{2}-\d{2})[^']*'\) TO \('(\d{4}-\d{2}-\d{2})[^']*'\)")
_COUNTED_UP_TO = 1_000_000  # larger partitions show the planner's estimate


def partitions(connection: Connection, table: str, *, count: bool = True) -> list[Partition]:
    """The partitions of ``table``, oldest first, the default last; rows and bytes each
    (``count=False``: the planner's estimate of every one's rows, no scan)."""
    scheme_of(table)
    connection.execute(text("SELECT set_config('TimeZone', 'UTC', true)"))  # bounds in UTC
    rows = connection.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), c.reltuples::bigint,"
            " pg_total_relation_size(c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass(:table) ORDER BY c.relname"
        ),
        {"table": table},
    ).all()
    found = []
    for name, bound, estimate, size in rows:
        match = _BOUNDS.search(bound or "")
        start = dt.date.fromisoformat(match.group(1)) if match else None
        end = dt.date.fromisoformat(match.group(2)) if match else None
        rows_guess = max(int(estimate or 0), 0)  # -1: never analysed
        partition = Partition(table, name, start, end, rows_guess, True, int(size))
        found.append(_counted(connection, partition) if count else partition)
    found.sort(key=lambda p: (p.start is None, p.start or dt.date.min))
    return found


def _counted(connection: Connection, partition: Partition) -> Partition:
    """``partition`` with its rows counted, unless the estimate is over a million."""
    if partition.rows >= _COUNTED_UP_TO:
        return partition
    counting = text(f"SELECT count(*) FROM {_q(partition.name)}")  # noqa: S608 - quoted
    rows = int(connection.execute(counting).scalar() or 0)
    return dataclasses.replace(partition, rows=rows, rows_estimated=False)


class _Known:
    """The partition starts this process has seen per database and table: an upsert
    looks its years up here, and asks the server only about one it has not seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: dict[tuple[str, str], set[dt.date]] = {}

    def missing(self, database: str, scheme: Scheme, starts: set[dt.date]) -> set[dt.date]:
        with self._lock:
            return starts - self._starts.get((database, scheme.table), set())

    def add(self, database: str, scheme: Scheme, starts: Iterable[dt.date]) -> None:
        with self._lock:
            self._starts.setdefault((database, scheme.table), set()).update(starts)

    def forget(self, database: str, scheme: Scheme, starts: Iterable[dt.date]) -> None:
        with self._lock:
            self._starts.get((database, scheme.table), set()).difference_update(starts)

    def clear(self) -> None:
        """Forget every partition seen: after partitions were dropped by another process
        (rows of their ranges go to the default partition until this is called)."""
        with self._lock:
            self._starts.clear()


known = _Known()


def _database_key(connection: Connection) -> str:
    return connection.engine.url.render_as_string(hide_password=True)


def _lock(connection: Connection, scheme: Scheme) -> None:
    """One maker of a table's partitions at a time, across processes (until commit)."""
    connection.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('partitions'), hashtext(:table))"),
        {"table": scheme.table},
    )


def create(connection: Connection, scheme: Scheme, start: dt.date) -> bool:
    """Make the partition that starts at ``start`` unless it exists; rows of its range
    that the default partition holds move into it. True if it was made."""
    start = scheme.start_of(start)
    if not scheme.has_next(start):
        return False  # its end is past the dates Python and the bound can name: the default
    _lock(connection, scheme)
    name = scheme.name(start)
    exists = connection.execute(text("SELECT to_regclass(:name)"), {"name": name}).scalar()
    if exists is not None:
        return False
    low, high = scheme.literal(start), scheme.literal(scheme.after(start))
    table, column = scheme.table, scheme.column
    # Made apart, filled from the default partition, then attached: ATTACH checks
    # the range against the default partition, which no longer holds any of it.
    like = "INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
    connection.execute(text(f"CREATE TABLE {_q(name)} (LIKE {_q(table)} {like})"))
    connection.execute(
        text(
            f"WITH moved AS (DELETE FROM {_q(scheme.default)} WHERE {column} >= {low}"  # noqa: S608 - quoted names, date literals
            f" AND {column} < {high} RETURNING *) INSERT INTO {_q(name)} SELECT * FROM moved"
        )
    )
    bounds = f"FOR VALUES FROM ({low}) TO ({high})"
    connection.execute(text(f"ALTER TABLE {_q(table)} ATTACH PARTITION {_q(name)} {bounds}"))
    return True


def ensure(connection: Connection, scheme: Scheme, days: Iterable[dt.date]) -> list[str]:
    """Make the partitions ``days`` fall in that do not exist yet; their names."""
    if connection.dialect.name != "postgresql":
        return []
    database = _database_key(connection)
    wanted = {scheme.start_of(day) for day in days}
    missing = known.missing(database, scheme, wanted)
    if not missing:
        return []
    if not is_partitioned(connection, scheme.table):
        known.add(database, scheme, missing)  # a plain table (before 0005): nothing to make
        return []
    made = [scheme.name(start) for start in sorted(missing) if create(connection, scheme, start)]
    known.add(database, scheme, missing)
    return made


# How long making a partition waits for the locks it needs. ATTACH takes the default
# partition's ACCESS EXCLUSIVE lock; while it waits, readers queue behind it.
_LOCK_TIMEOUT = "250ms"


def prepare(session: Session, scheme: Scheme, days: Iterable[dt.date]) -> None:
    """Make the partitions ``days`` need before a write, on a connection of its own in a
    short transaction (as that connection's role, whatever role the session took).

    Only when the session has not begun a transaction: inside one, the write
    may already hold the default partition (ATTACH would wait for it for ever)
    and the session holds a pooled connection (a second may not be free). The
    lock is waited for at most _LOCK_TIMEOUT, so readers queue no longer than
    that; a writer that put rows of the range in the default partition and
    has not committed makes ATTACH fail. In each of these cases nothing is
    made: the rows go to the default partition, and a later write that needs
    the partition, or ``buffetbot-db partitions create``, makes it and moves
    them in.
    """
    use_primary(session)
    bind = session.get_bind()
    if bind.dialect.name != "postgresql" or not isinstance(bind, Engine):
        return
    wanted = {scheme.start_of(day) for day in days}
    if not known.missing(bind.engine.url.render_as_string(hide_password=True), scheme, wanted):
        return
    if session.in_transaction():
        logger.info(
            "%s: no partition made inside an open transaction; rows of a range without"
            " one go to %s",
            scheme.table,
            scheme.default,
        )
        return
    try:
        with bind.begin() as connection:
            connection.execute(text(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'"))
            ensure(connection, scheme, wanted)
    except (OperationalError, IntegrityError) as error:
        # 55P03 lock_not_available; 23514 check_violation: another writer's rows of the
        # range in the default partition, committed while ATTACH waited.
        if getattr(error.orig, "sqlstate", None) not in ("55P03", "23514"):
            raise
        logger.warning(
            "%s: a partition was not made now (%s); its rows go to %s until a later"
            " write or `buffetbot-db partitions create` makes it",
            scheme.table,
            first_line(error.orig or error),
            scheme.default,
        )


def create_ahead(
    connection: Connection, scheme: Scheme, count: int, *, today: dt.date | None = None
) -> list[str]:
    """Make the partitions of the current period and the ``count`` after it."""
    if count < 0:
        raise ValidationError("ahead", count, "must be 0 or more")
    start = scheme.start_of(today or dt.datetime.now(dt.UTC).date())
    made = []
    for _ in range(count + 1):
        if create(connection, scheme, start):
            made.append(scheme.name(start))
        if not scheme.has_next(start):
            break
        start = scheme.after(start)
    return made


def drop_before(connection: Connection, scheme: Scheme, cutoff: dt.date) -> list[Partition]:
    """Drop every partition whose whole range is before ``cutoff`` (detach, then drop:
    no row-by-row DELETE), and delete the default partition's rows before it."""
    _lock(connection, scheme)
    dropped = []
    for partition in partitions(connection, scheme.table, count=False):
        if partition.end is None or partition.end > cutoff:
            continue
        partition = _counted(connection, partition)
        if _detach_and_drop(connection, scheme, partition.name):  # else busy: kept for now
            dropped.append(partition)
    connection.execute(
        text(f"DELETE FROM {_q(scheme.default)} WHERE {scheme.column} < :cutoff"),  # noqa: S608 - a quoted identifier
        {"cutoff": cutoff},
    )
    known.forget(_database_key(connection), scheme, [p.start for p in dropped if p.start])
    return dropped


def _detach_and_drop(connection: Connection, scheme: Scheme, name: str) -> bool:
    """Detach and drop one partition in a savepoint, waiting at most _LOCK_TIMEOUT for
    its readers (readers of the table queue behind the lock while it waits); False if
    the lock did not come."""
    previous = connection.execute(text("SELECT current_setting('lock_timeout')")).scalar()
    savepoint = connection.begin_nested()
    try:
        connection.execute(text(f"SELECT set_config('lock_timeout', '{_LOCK_TIMEOUT}', true)"))
        connection.execute(text(f"ALTER TABLE {_q(scheme.table)} DETACH PARTITION {_q(name)}"))
        connection.execute(text(f"DROP TABLE {_q(name)}"))
    except OperationalError as error:
        savepoint.rollback()
        if getattr(error.orig, "sqlstate", None) != "55P03":
            raise
        logger.warning("%s: %s not dropped now (its readers held it)", scheme.table, name)
        return False
    savepoint.commit()
    connection.execute(text("SELECT set_config('lock_timeout', :value, true)"), {"value": previous})
    return True


def drop_expired_options(connection: Connection, today: dt.date) -> int:
    """Drop whole the monthly partitions of option snapshots, ended by ``today``, whose
    contracts all expired before it; how many rows they held (one scan each, no DELETE)."""
    if not is_partitioned(connection, OPTIONS_DATA.table):
        return 0
    _lock(connection, OPTIONS_DATA)
    removed = 0
    dropped = []
    for partition in partitions(connection, OPTIONS_DATA.table, count=False):
        if partition.end is None or partition.end > today:
            continue
        latest, count = connection.execute(
            text(f"SELECT max(expiration), count(*) FROM {_q(partition.name)}")  # noqa: S608 - a quoted identifier
        ).one()
        if latest is not None and latest >= today:
            continue  # some contract still trades: the DELETE takes the expired ones
        if not _detach_and_drop(connection, OPTIONS_DATA, partition.name):
            continue  # its readers hold it: the DELETE takes its rows instead
        removed += int(count)
        dropped.append(partition)
    known.forget(_database_key(connection), OPTIONS_DATA, [p.start for p in dropped if p.start])
    return removed
