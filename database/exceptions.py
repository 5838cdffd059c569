"""The package's errors, and the one place that translates SQLAlchemy's into them.

Every error raised by this package derives from :class:`DatabaseError`. Driver
and SQLAlchemy errors are translated at the repository boundary by
:func:`translate_errors`, with the original kept as ``__cause__``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import Index, Table
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import exc as orm_exc
from sqlalchemy.sql.schema import ColumnCollectionConstraint

if TYPE_CHECKING:
    from sqlalchemy import FromClause


class DatabaseError(Exception):
    """Root of every error raised by the ``database`` package."""


class ConfigurationError(DatabaseError):
    """A setting or connection URL is missing or malformed."""


class DatabaseUnavailableError(DatabaseError):
    """The database server could not be reached (never names the password)."""

    def __init__(self, host: str | None, port: int | None, reason: str) -> None:
        where = f"{host}:{port}" if host else "the embedded database"
        super().__init__(f"database unavailable at {where}: {reason}")
        self.host = host
        self.port = port


class ValidationError(DatabaseError, ValueError):
    """A value was rejected before anything was sent to the database."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        super().__init__(f"invalid {field}={value!r}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason


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
    """The row changed or vanished under a concurrent unit of work."""


class AuthenticationError(DatabaseError):
    """Credentials did not match an active user."""


# Constraint names follow the naming convention in ``database.models.base``:
# uq_<table>_<columns>, fk_..., ck_<table>_<name>, and the unique index ix_...
_CONSTRAINT_NAME = re.compile(r'(?:constraint|index) "?(?P<name>[a-z0-9_]+)"?', re.IGNORECASE)
_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (?P<cols>[\w., ]+)")
_SQLITE_CHECK = re.compile(r"CHECK constraint failed: (?P<name>\w+)")


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
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate is not None:
        return str(sqlstate) == "23505"
    return "UNIQUE constraint failed" in str(orig)


def translate(error: Exception, model: str, table: FromClause) -> DatabaseError | None:
    """Map a SQLAlchemy error to the package's own, or None if not ours to map."""
    if isinstance(error, sa_exc.StatementError) and isinstance(error.orig, DatabaseError):
        return error.orig  # raised by one of our types while binding a parameter
    if isinstance(error, sa_exc.IntegrityError):
        orig = error.orig if error.orig is not None else error
        message = str(orig).splitlines()[0]
        if is_unique_violation(orig):
            field, constraint = _unique_fields(table, str(orig))
            return DuplicateError(model, field, constraint)
        name = None
        if match := (_SQLITE_CHECK.search(message) or _CONSTRAINT_NAME.search(message)):
            name = match["name"]
        return IntegrityError(f"{model}: {message}", name)
    if isinstance(error, orm_exc.StaleDataError):
        return ConcurrencyError(f"{model}: {error}")
    if isinstance(error, sa_exc.OperationalError) and "database is locked" in str(error.orig):
        return ConcurrencyError(f"{model}: the database is locked by another writer")
    return None


@contextmanager
def translate_errors(model: str, table: FromClause) -> Iterator[None]:
    """Re-raise SQLAlchemy errors inside the block as the package's own."""
    try:
        yield
    except DatabaseError:
        raise
    except (sa_exc.SQLAlchemyError, orm_exc.StaleDataError) as error:
        translated = translate(error, model, table)
        if translated is None:
            raise
        # One of our own errors raised while binding a parameter needs no cause.
        own = translated is getattr(error, "orig", None)
        raise translated from (None if own else error)
