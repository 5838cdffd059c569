"""The process-wide database manager and the module-level session helpers."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from database.connection import DatabaseManager

_lock = threading.Lock()
_manager: DatabaseManager | None = None


def init_database(url: str | None = None, **options: Any) -> DatabaseManager:
    """The process-wide manager for ``url`` (else the environment's database).

    Called again with the same URL and options (a script that re-runs, as Streamlit
    does), it returns the live manager and its pools. With another URL or other
    options it makes a new manager and closes the one it replaces.
    """
    global _manager
    with _lock:
        previous = _manager
        if previous is not None and previous.configured_as(url, **options):
            return previous
        manager = _manager = DatabaseManager(url, **options)
    if previous is not None:
        previous.close()
    return manager


def active_database() -> DatabaseManager | None:
    """The process-wide manager if one is set (by ``init_database`` or first use), else None.

    Helpers that take an optional URL (``database.migrate``) act on its database.
    """
    return _manager


def get_database() -> DatabaseManager:
    """The process-wide manager, initialised from the environment on first use."""
    global _manager
    with _lock:
        if _manager is None:
            _manager = DatabaseManager()
        return _manager


def close_database() -> None:
    """Close and forget the process-wide manager."""
    global _manager
    with _lock:
        previous, _manager = _manager, None
    if previous is not None:
        previous.close()


@contextlib.asynccontextmanager
async def get_async_database_session(
    *, user_id: Any = None, system: bool = False, readonly: bool = False
) -> AsyncIterator[AsyncSession]:
    """An AsyncSession on the process-wide database: commit, or roll back, then close.

    ``user_id=`` opens it for one user (their portfolios only); ``system=True``
    for maintenance across users; ``readonly=True`` reads from a replica until it
    writes (see :meth:`DatabaseManager.get_async_session`).
    """
    manager = get_database()
    async with manager.get_async_session(
        user_id=user_id, system=system, readonly=readonly
    ) as session:
        yield session


@contextlib.contextmanager
def get_database_session(
    *, user_id: Any = None, system: bool = False, readonly: bool = False
) -> Iterator[Session]:
    """A Session on the process-wide database: commit, or roll back, then close."""
    manager = get_database()
    with manager.get_session(user_id=user_id, system=system, readonly=readonly) as session:
        yield session
