"""Units of work that write: retried transactions, and SQLite write intent.

:func:`run_transaction` runs a function in a fresh session and commits, again
with backoff while it fails with an error that is safe to retry (a stale
write, a deadlock, a serialization failure, a connection lost before commit).
``begin_write`` makes a session's transaction take SQLite's write lock when it
begins (``BEGIN IMMEDIATE``), so a writer waits its turn for up to the busy
timeout instead of failing when a reader's snapshot turns out stale. On
PostgreSQL it does nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from database.exceptions import DatabaseError, ValidationError
from database.replicas import use_primary

if TYPE_CHECKING:
    from database.connection import DatabaseManager

T = TypeVar("T")
logger = logging.getLogger(__name__)

_write_intent: ContextVar[bool] = ContextVar("database_write_intent", default=False)


def sqlite_begin(connection: Connection) -> None:
    """The engine's ``begin`` hook on SQLite: ``BEGIN IMMEDIATE`` for writers."""
    connection.exec_driver_sql("BEGIN IMMEDIATE" if _write_intent.get() else "BEGIN")


# An engine execution option, set on the engines of a manager behind PgBouncer's
# transaction pooling (DB_PGBOUNCER): nothing may outlive a transaction there.
TRANSACTION_POOLED = "buffetbot_transaction_pooled"


def staging_table_ddl(session: Session, ddl: str) -> str:
    """A staging table's ``CREATE TEMPORARY TABLE``, as this session may keep it.

    A temporary table lives as long as its server connection: a pooled one
    keeps its staging table for the next upsert (``ON COMMIT DELETE ROWS``).
    Behind transaction pooling the next transaction on that server connection
    may be another client's, under another role, so the table goes with its
    transaction (``ON COMMIT DROP``).
    """
    if session.connection().get_execution_options().get(TRANSACTION_POOLED):
        return ddl.replace("ON COMMIT DELETE ROWS", "ON COMMIT DROP")
    return ddl


def begin_write(session: Session) -> None:
    """Begin the session's transaction as a writer if it has not begun yet; a
    readonly session moves to the primary (its bulk writes go through the driver)."""
    use_primary(session)
    if session.get_bind().dialect.name != "sqlite":
        return
    token = _write_intent.set(True)
    try:
        session.connection()
    finally:
        _write_intent.reset(token)


async def async_begin_write(session: AsyncSession) -> None:
    """:func:`begin_write` for an AsyncSession."""
    use_primary(session)
    if session.get_bind().dialect.name != "sqlite":
        return
    token = _write_intent.set(True)
    try:
        await session.connection()
    finally:
        _write_intent.reset(token)


def _manager(database: DatabaseManager | None) -> DatabaseManager:
    if database is not None:
        return database
    from database.session import get_database  # the process-wide one; imports this module

    return get_database()


def _retry_delay(attempt: int, backoff: float, max_backoff: float) -> float:
    """Exponential backoff with full jitter, so that retrying writers spread out."""
    return random.uniform(0, min(max_backoff, backoff * 2**attempt))  # noqa: S311 - not secret


def _check_retries(retries: int, backoff: float, max_backoff: float) -> None:
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValidationError("retries", retries, "must be a whole number >= 0")
    for name, seconds in (("backoff", backoff), ("max_backoff", max_backoff)):
        number = isinstance(seconds, int | float) and not isinstance(seconds, bool)
        if not number or not 0 <= seconds < float("inf"):
            raise ValidationError(name, seconds, "must be a number of seconds >= 0")


def _give_up(error: DatabaseError, attempt: int, retries: int) -> bool:
    if not error.retryable or attempt >= retries:
        return True
    logger.info("retrying a transaction (attempt %d of %d): %s", attempt + 2, retries + 1, error)
    return False


def run_transaction(
    fn: Callable[[Session], T],
    *,
    retries: int = 3,
    backoff: float = 0.02,
    max_backoff: float = 1.0,
    database: DatabaseManager | None = None,
    user_id: Any = None,
    system: bool = False,
) -> T:
    """Run ``fn(session)`` in a fresh session and commit; retry what is safe to retry.

    ``fn`` may run more than once, so it must do nothing but database work
    (read, decide, write): each attempt starts from a fresh session and sees
    the data as it is then. After ``retries`` retries the last error propagates;
    errors that are not retryable propagate at once. ``database`` defaults to
    the process-wide manager; ``user_id`` and ``system`` open each session as
    :meth:`DatabaseManager.get_session` does.
    """
    _check_retries(retries, backoff, max_backoff)
    manager = _manager(database)
    attempt = 0
    while True:
        try:
            with manager.get_session(user_id=user_id, system=system) as session:
                result = fn(session)
                if inspect.isawaitable(result):
                    if inspect.iscoroutine(result):
                        result.close()  # never awaited: say so, rather than warn later
                    raise ValidationError("fn", fn, "is async: use async_run_transaction")
                return result
        except DatabaseError as error:
            if _give_up(error, attempt, retries):
                raise
        time.sleep(_retry_delay(attempt, backoff, max_backoff))
        attempt += 1


async def async_run_transaction(
    fn: Callable[[AsyncSession], Awaitable[T]],
    *,
    retries: int = 3,
    backoff: float = 0.02,
    max_backoff: float = 1.0,
    database: DatabaseManager | None = None,
    user_id: Any = None,
    system: bool = False,
) -> T:
    """:func:`run_transaction` for async code: ``await fn(session)`` in a fresh AsyncSession."""
    _check_retries(retries, backoff, max_backoff)
    manager = _manager(database)
    attempt = 0
    while True:
        try:
            async with manager.get_async_session(user_id=user_id, system=system) as session:
                result = fn(session)
                if not inspect.isawaitable(result):
                    raise ValidationError("fn", fn, "must be an async function (or return one)")
                return await result
        except DatabaseError as error:
            if _give_up(error, attempt, retries):
                raise
        await asyncio.sleep(_retry_delay(attempt, backoff, max_backoff))
        attempt += 1
