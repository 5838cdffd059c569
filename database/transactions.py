"""Units of work that write: SQLite write intent, and retried transactions.

``begin_write`` makes a session's transaction take SQLite's write lock when it
begins (``BEGIN IMMEDIATE``), so a writer waits its turn for up to the busy
timeout instead of failing when a reader's snapshot turns out stale. On
PostgreSQL it does nothing.
"""

from __future__ import annotations

from contextvars import ContextVar

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

_write_intent: ContextVar[bool] = ContextVar("database_write_intent", default=False)


def sqlite_begin(connection: Connection) -> None:
    """The engine's ``begin`` hook on SQLite: ``BEGIN IMMEDIATE`` for writers."""
    connection.exec_driver_sql("BEGIN IMMEDIATE" if _write_intent.get() else "BEGIN")


def begin_write(session: Session) -> None:
    """Begin the session's transaction as a writer if it has not begun yet."""
    if session.get_bind().dialect.name != "sqlite":
        return
    token = _write_intent.set(True)
    try:
        session.connection()
    finally:
        _write_intent.reset(token)


async def async_begin_write(session: AsyncSession) -> None:
    """:func:`begin_write` for an AsyncSession."""
    if session.get_bind().dialect.name != "sqlite":
        return
    token = _write_intent.set(True)
    try:
        await session.connection()
    finally:
        _write_intent.reset(token)
