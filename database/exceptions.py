"""The package's errors, and the one place that translates driver and SQLAlchemy errors.

Every error that leaves the package derives from :class:`DatabaseError`, keeps
the original as ``__cause__``, and says in ``retryable`` whether running the
same unit of work again may succeed (nothing of it took effect). Errors are
translated at the repository boundary and again where a session ends, by
:func:`translate`, whatever raised them: SQLAlchemy, asyncpg, psycopg,
aiosqlite or sqlite3, at connect, execute, COPY or commit.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from alembic.util import CommandError
from sqlalchemy import Index, Table
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import exc as orm_exc
from sqlalchemy.sql.schema import ColumnCollectionConstraint

if TYPE_CHECKING:
    from sqlalchemy import FromClause


class DatabaseError(Exception):
    """Root of every error raised by the ``database`` package."""

    retryable: bool = False


class ConfigurationError(DatabaseError):
    """A setting or connection URL is missing or malformed."""


class DatabaseUnavailableError(DatabaseError):
    """The server could not be reached, or the connection was lost (never names the password).

    Retryable, except when the connection was lost during COMMIT: then the
    transaction may or may not have been committed (``retryable`` is False).
    """

    retryable = True

    def __init__(
        self, host: str | None, port: int | None, reason: str, *, retryable: bool = True
    ) -> None:
        where = f" at {host}:{port}" if host else ""
        super().__init__(f"database unavailable{where}: {reason}")
        self.host = host
        self.port = port
        self.reason = reason
        self.retryable = retryable


class PoolExhaustedError(DatabaseError):
    """No connection became free within the pool timeout (the process's budget is in use)."""

    def __init__(self, pool_size: int, max_overflow: int, timeout: float) -> None:
        super().__init__(
            f"no database connection free after {timeout:g} s: all "
            f"{pool_size + max_overflow} of this process's connections "
            f"(DB_POOL_SIZE={pool_size} + DB_MAX_OVERFLOW={max_overflow}) are in use"
        )
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        self.timeout = timeout


class StatementTimeoutError(DatabaseError):
    """A statement ran longer than ``DB_STATEMENT_TIMEOUT_MS`` and was cancelled."""


class QueryError(DatabaseError):
    """The database refused a statement for a reason none of the other errors name."""


class PermissionDeniedError(QueryError):
    """The database refused the statement on privileges: with ``DB_ROW_SECURITY=on``,
    a row that the session's user may not write (another user's portfolio)."""


def _shown(value: Any, limit: int = 200) -> str:
    """The value's repr for a message, cut short: a hostile value may be megabytes long."""
    try:
        text = repr(value)
    except Exception:  # a repr that fails must not hide the error being raised
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[: limit - 20]}...({len(text)} chars)"


class ValidationError(DatabaseError, ValueError):
    """A value was rejected before anything was sent to the database."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        super().__init__(f"invalid {field}={_shown(value)}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason


class UnknownFieldError(ValidationError):
    """A constructor or ``create()`` got a keyword that is not a column of the model.

    Relationship names, ``metadata``, ``registry`` and dunder names included.
    """

    def __init__(
        self, model: str, name: str, value: Any, fields: Iterable[str] | None = None
    ) -> None:
        known = f" (fields: {', '.join(sorted(fields))})" if fields else ""
        ValidationError.__init__(self, name, value, f"is not a column of {model}{known}")
        self.model = model


class InvalidCriteriaError(DatabaseError, ValueError):
    """A filter or ordering named a field or operator the model does not have."""

    def __init__(self, model: str, name: str, reason: str) -> None:
        super().__init__(f"{model}: invalid criterion {name!r}: {reason}")
        self.model = model
        self.name = name


class NotFoundError(DatabaseError, LookupError):
    """The requested row does not exist (or is not visible to the caller)."""

    def __init__(self, model: str, key: Any) -> None:
        super().__init__(f"{model} {key} not found")
        self.model = model
        self.key = key


class IntegrityError(DatabaseError):
    """A foreign-key, check or not-null constraint rejected the write."""

    def __init__(self, message: str, constraint: str | None = None) -> None:
        super().__init__(message)
        self.constraint = constraint


class DuplicateError(IntegrityError):
    """A unique constraint rejected the write; ``field`` names the column(s)."""

    def __init__(self, model: str, field: str, constraint: str | None = None) -> None:
        super().__init__(f"{model}: a row with this {field} already exists", constraint)
        self.model = model
        self.field = field


class ConcurrencyError(DatabaseError):
    """A concurrent unit of work got in the way; running this one again may succeed.

    ``table`` and ``key`` name the row when it is known (a stale write).
    """

    retryable = True

    def __init__(self, message: str, *, table: str | None = None, key: Any = None) -> None:
        super().__init__(message)
        self.table = table
        self.key = key


class StaleDataError(ConcurrencyError):
    """An update or delete was made from a stale copy: the row changed or vanished since."""

    def __init__(self, table: str, key: Any) -> None:
        shown = "a row" if key is None else f"row {key}"
        super().__init__(
            f"{table}: {shown} was changed or deleted by another transaction since it was read",
            table=table,
            key=key,
        )


class DeadlockError(ConcurrencyError):
    """The server broke a deadlock by aborting this transaction."""


class SerializationError(ConcurrencyError):
    """The transaction could not be serialized with concurrent ones (or SQLite was busy)."""


class AuthenticationError(DatabaseError):
    """Credentials did not match an active user."""


class MigrationError(DatabaseError):
    """Alembic refused: an unknown revision, a schema that differs from the models, ..."""


class SchemaVersionError(DatabaseError):
    """The database's schema is not the one this package needs: none yet, older, or unknown.

    ``current`` is the database's revision (None: no schema); ``required`` the
    package's head; ``unknown`` is True when ``current`` is a revision this
    package does not know (the database was migrated by newer code). ``missing``
    names the table or column a statement found missing (``current`` is then
    None: not read).
    """

    def __init__(
        self,
        current: str | None,
        required: str | None,
        *,
        unknown: bool = False,
        missing: str | None = None,
    ) -> None:
        if missing is not None:  # found by a statement: the revision itself was not read
            message = (
                f"{missing} does not exist: the schema is not this package's {required}"
                " (never migrated, or older): run `buffetbot-db upgrade`"
            )
        elif unknown:
            message = (
                f"schema at {current}, a revision unknown to this package "
                f"(this package knows up to {required}): the database was migrated by newer "
                "code; upgrade the package"
            )
        else:
            at = "no schema" if current is None else f"schema at {current}"
            message = f"{at}, this package needs {required}: run `buffetbot-db upgrade`"
        super().__init__(message)
        self.current = current
        self.required = required
        self.unknown = unknown


class DatabaseFileMissingError(ConfigurationError):
    """A SQLite database file that a read-only use would otherwise create does not exist."""

    def __init__(self, path: str) -> None:
        super().__init__(f"SQLite database file {path} does not exist (is the path mistyped?)")
        self.path = path


_FORCE_HINT = (
    "export them first, or force it: alembic -x force=true downgrade ..., "
    "buffetbot-db downgrade --force, or database.migrate.downgrade(..., force=True)"
)


# CommandError too, so the `alembic` command prints "FAILED: ..." rather than a traceback.
class DataLossError(DatabaseError, CommandError):
    """A downgrade would destroy rows; nothing was changed.

    ``losses`` pairs each set of rows (``database.migrations.guard.Rows``: a
    table, or the rows of it with a value) with its count, None when it could
    not be counted (offline, ``--sql``).
    """

    def __init__(self, revision: str, losses: Sequence[tuple[Any, int | None]]) -> None:
        listed = ", ".join(rows.describe(count) for rows, count in losses)
        if any(count is None for _, count in losses):
            claim = f"may destroy {listed} (offline, so not counted)"
        else:
            claim = f"would destroy {listed}"
        super().__init__(f"downgrading {revision} {claim}; nothing was changed: {_FORCE_HINT}")
        self.revision = revision
        self.losses = tuple(losses)


# -- translation -----------------------------------------------------------------------

# Constraint names follow the naming convention in ``database.models.base``:
# uq_<table>_<columns>, fk_..., ck_<table>_<name>, and the unique index ix_...
_CONSTRAINT_NAME = re.compile(r'(?:constraint|index) "?(?P<name>[a-z0-9_]+)"?', re.IGNORECASE)
_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (?P<cols>[\w., ]+)")
_SQLITE_CHECK = re.compile(r"CHECK constraint failed: (?P<name>\w+)")
_STALE_TABLE = re.compile(r"on table '(?P<table>\w+)'")
_POOL_LIMIT = re.compile(r"size (?P<size>\d+) overflow (?P<overflow>-?\d+).*timeout (?P<t>[\d.]+)")

_DEADLOCK = "40P01"
_SERIALIZATION = "40001"
_LOCK_NOT_AVAILABLE = "55P03"
_QUERY_CANCELED = "57014"
_INSUFFICIENT_PRIVILEGE = "42501"
# Connection exceptions (08), operator intervention (57P01-57P05: terminated
# backend, shutdown, cannot connect now), too many connections.
_UNAVAILABLE_PREFIXES = ("08", "57P", "53300")
# Driver errors raised outside SQLAlchemy (the bare-driver paths), told apart by
# their classes' names so that no driver has to be installed to import this module.
_DRIVERS = ("asyncpg", "psycopg", "sqlite3", "aiosqlite")
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")
OUTCOME_UNKNOWN = "; the transaction may or may not have committed"


def sqlstate(error: BaseException | None) -> str | None:
    """A driver error's SQLSTATE (psycopg, asyncpg), or None (sqlite3, not a driver error)."""
    state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return str(state) if state else None


def _unique_fields(table: FromClause, message: str) -> tuple[str, str | None]:
    """Return (the columns, as "a, b", and the constraint name) of a unique violation."""
    if match := _SQLITE_UNIQUE.search(message):
        columns = [c.strip().split(".")[-1] for c in match["cols"].split(",")]
        return ", ".join(columns), None
    if isinstance(table, Table) and (match := _CONSTRAINT_NAME.search(message)):
        name = match["name"]
        for item in (*table.constraints, *table.indexes):
            if isinstance(item, ColumnCollectionConstraint | Index) and item.name == name:
                return ", ".join(column.name for column in item.columns), name
        return name, name
    return "key", None


def is_unique_violation(orig: BaseException) -> bool:
    """Whether a driver error (psycopg, asyncpg, sqlite3) is a unique-key violation."""
    state = sqlstate(orig)
    if state is not None:
        return state == "23505"
    return "UNIQUE constraint failed" in str(orig)


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _integrity(orig: BaseException, model: str, table: FromClause | None) -> DatabaseError:
    message = first_line(orig)
    if is_unique_violation(orig):
        field, constraint = _unique_fields(table, str(orig)) if table is not None else ("key", None)
        return DuplicateError(model, field, constraint)
    name = None
    if "FOREIGN KEY constraint failed" in message:
        name = None  # SQLite does not say which
    elif match := (_SQLITE_CHECK.search(message) or _CONSTRAINT_NAME.search(message)):
        name = match["name"]
    return IntegrityError(f"{model}: {message}", name)


def _by_state(
    state: str | None, orig: BaseException, model: str, where: tuple[str | None, int | None]
) -> DatabaseError | None:
    """Errors told apart by their SQLSTATE (PostgreSQL) or message (SQLite)."""
    message = first_line(orig)
    if state == _DEADLOCK:
        return DeadlockError(f"{model}: deadlock detected, this transaction was aborted")
    if state == _SERIALIZATION:
        return SerializationError(f"{model}: could not serialize access: {message}")
    if state == _LOCK_NOT_AVAILABLE:
        return ConcurrencyError(f"{model}: a lock was not available: {message}")
    if state == _QUERY_CANCELED:
        return StatementTimeoutError(f"{model}: statement cancelled: {message}")
    if state == _INSUFFICIENT_PRIVILEGE:
        return PermissionDeniedError(f"{model}: {message}")
    if missing := _missing_schema_object(state, message):
        return missing
    if state is not None and state.startswith(_UNAVAILABLE_PREFIXES):
        return DatabaseUnavailableError(*where, message)
    if isinstance(orig, sqlite3.Error) or type(orig).__module__.startswith("sqlite3"):
        if any(busy in message for busy in _SQLITE_BUSY):
            return SerializationError(f"{model}: the database is locked by another writer")
        if isinstance(orig, sqlite3.OperationalError) and (
            "unable to open" in message or "disk I/O" in message
        ):
            return DatabaseUnavailableError(None, None, message)
    return None


# A table or column of this package's schema that a statement did not find:
# PostgreSQL's 42P01 / 42703, SQLite's messages.
_UNDEFINED_TABLE, _UNDEFINED_COLUMN = "42P01", "42703"
_MISSING = (
    re.compile(r'relation "(?:\w+\.)?(?P<table>\w+)" does not exist'),
    re.compile(r"column (?:\w+\.)?(?P<table>\w+)\.(?P<column>\w+) does not exist"),
    re.compile(r"no such table: (?:\w+\.)?(?P<table>\w+)"),
    re.compile(r"no such column: (?P<table>\w+)\.(?P<column>\w+)"),
    re.compile(r"table (?P<table>\w+) has no column named (?P<column>\w+)"),
)


def _missing_schema_object(state: str | None, message: str) -> SchemaVersionError | None:
    """A SchemaVersionError when a statement found one of this package's tables or
    columns missing: the database was never migrated, or is older than the package."""
    if state not in (None, _UNDEFINED_TABLE, _UNDEFINED_COLUMN):
        return None
    match = next((m for pattern in _MISSING if (m := pattern.search(message))), None)
    if match is None:
        return None
    from database.migrate import head_revision  # imported late: it imports this module
    from database.models.base import Base

    table = Base.metadata.tables.get(match["table"])
    column = match.groupdict().get("column")
    if table is None or (column is not None and column not in table.c):
        return None  # not this package's schema: the application's own statement
    missing = f"table {table.name}" if column is None else f"column {table.name}.{column}"
    return SchemaVersionError(None, head_revision(), missing=missing)


def translate(
    error: BaseException,
    model: str = "database",
    table: FromClause | None = None,
    *,
    where: tuple[str | None, int | None] = (None, None),
) -> DatabaseError | None:
    """Map a SQLAlchemy or driver error to the package's own, or None if it is not one.

    ``where`` is the server's (host, port), named by connection errors.
    """
    if isinstance(error, DatabaseError):
        return error
    if isinstance(error, sa_exc.StatementError) and isinstance(error.orig, DatabaseError):
        return error.orig  # raised by one of our types while binding a parameter
    if isinstance(error, orm_exc.StaleDataError):
        match = _STALE_TABLE.search(str(error))
        return StaleDataError(match["table"] if match else model, None)
    if isinstance(error, orm_exc.ObjectDeletedError):  # a stale copy of a row since deleted
        name = table.name if isinstance(table, Table) else model
        return StaleDataError(name, None)
    if isinstance(error, sa_exc.TimeoutError):  # the pool's own limit
        if match := _POOL_LIMIT.search(str(error)):
            size, overflow = int(match["size"]), max(0, int(match["overflow"]))
            return PoolExhaustedError(size, overflow, float(match["t"]))
        return PoolExhaustedError(0, 0, 0)
    if isinstance(error, sa_exc.DBAPIError):
        orig: BaseException = error.orig if error.orig is not None else error
        if isinstance(orig, DatabaseError):
            return orig
        if isinstance(error, sa_exc.IntegrityError):
            return _integrity(orig, model, table)
        state = sqlstate(orig)
        translated = _by_state(state, orig, model, where)
        # Without a SQLSTATE from the server, an operational or interface error
        # is the client's: the connection is gone (SQLite's are about the statement).
        lost = (
            state is None
            and isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError)
            and _driver_classes(orig)[0] != "sqlite3"
        )
        if translated is None and (
            error.connection_invalidated or lost or _is_broken_connection(orig)
        ):
            translated = DatabaseUnavailableError(*where, first_line(orig))
        if isinstance(translated, DatabaseUnavailableError) and error.statement is None:
            # No statement: it failed at COMMIT (or ROLLBACK), so whether the
            # transaction committed is unknown; running it again could apply it twice.
            reason = first_line(orig) + OUTCOME_UNKNOWN
            return DatabaseUnavailableError(*where, reason, retryable=False)
        return translated or QueryError(f"{model}: {first_line(orig)}")
    if isinstance(error, sa_exc.SQLAlchemyError):
        return QueryError(f"{model}: {first_line(error)}")
    # Raised by a driver directly: the bare-driver paths (COPY, fast reads).
    driver, names = _driver_classes(error)
    if driver is None:
        return None
    state = sqlstate(error)
    if is_unique_violation(error) or (state or "").startswith("23") or "IntegrityError" in names:
        return _integrity(error, model, table)
    translated = _by_state(state, error, model, where)
    if translated is not None:
        return translated
    # asyncpg's InterfaceError covers a closed connection and "another operation
    # is in progress" on a broken one; psycopg's OperationalError without a
    # SQLSTATE a lost one.
    lost = (
        state is None
        and driver != "sqlite3"
        and bool({"InterfaceError", "OperationalError"} & names)
    )
    if lost or _is_broken_connection(error):
        return DatabaseUnavailableError(*where, first_line(error))
    return QueryError(f"{model}: {first_line(error)}")


def _is_broken_connection(error: BaseException) -> bool:
    """asyncpg's state errors on a connection a failure left mid-operation."""
    text = str(error)
    return "another operation" in text or "connection was closed" in text


def _driver_classes(error: BaseException) -> tuple[str | None, set[str]]:
    """(the driver that raised ``error``, or None; the names of its classes)."""
    classes = type(error).__mro__
    driver = next(
        (c.__module__.split(".")[0] for c in classes if c.__module__.split(".")[0] in _DRIVERS),
        None,
    )
    return driver, {c.__name__ for c in classes}


def raise_translated(
    error: BaseException, model: str = "database", table: FromClause | None = None
) -> None:
    """Raise ``error`` as the package's own if it is a database error; else do nothing."""
    translated = translate(error, model, table)
    if translated is None:
        return
    # One of our own errors (raised while binding a parameter) needs no cause.
    own = translated is error or translated is getattr(error, "orig", None)
    raise translated from (None if own else error)


@contextmanager
def translate_errors(model: str, table: FromClause | None = None) -> Iterator[None]:
    """Re-raise database errors inside the block as the package's own."""
    try:
        yield
    except DatabaseError:
        raise
    except Exception as error:
        raise_translated(error, model, table)
        raise
