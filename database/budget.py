"""The process's connection budget: at most ``pool_size + max_overflow`` per database.

SQLAlchemy's pools each count their own connections; a process that uses the
sync API and the async one (one engine per event loop) would hold several pools'
worth. Every engine of every manager for the same database draws on one
:class:`ConnectionBudget` instead: a connection is counted when it is opened and
released when it is closed. A caller past the budget first asks the pools to
close their idle connections, then waits up to the pool timeout, then gets
:class:`~database.exceptions.PoolExhaustedError`.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from typing import Protocol

from sqlalchemy.util import await_

from database.exceptions import PoolExhaustedError

# How often a waiter in an event loop looks again (it cannot block its thread).
_POLL_FIRST, _POLL_MAX = 0.002, 0.05


class Reclaimer(Protocol):
    """What a budget needs of a connection owner (the DatabaseManager)."""

    def reclaim_idle(self) -> None: ...


class ConnectionBudget:
    """Open connections to one database, counted across the whole process."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._open = 0
        self._reclaimers: weakref.WeakSet[Reclaimer] = weakref.WeakSet()

    @property
    def open(self) -> int:
        return self._open

    def add_reclaimer(self, reclaimer: Reclaimer) -> None:
        """Register an owner of pools whose idle connections may be closed on demand."""
        self._reclaimers.add(reclaimer)

    def _try_acquire(self, limit: int) -> bool:
        with self._condition:
            if self._open < limit:
                self._open += 1
                return True
            return False

    def release(self) -> None:
        with self._condition:
            self._open = max(0, self._open - 1)
            self._condition.notify()

    def _reclaim(self) -> None:
        for reclaimer in list(self._reclaimers):
            reclaimer.reclaim_idle()

    def acquire(self, pool_size: int, max_overflow: int, timeout: float) -> None:
        """Take one connection's place, waiting (blocking the thread) up to ``timeout``.

        While it waits, idle connections of every pool are closed now and then,
        so that the places they hold come free.
        """
        limit = pool_size + max_overflow
        if self._try_acquire(limit):
            return
        deadline = time.monotonic() + timeout
        while True:
            self._reclaim()
            with self._condition:
                if self._open < limit:
                    self._open += 1
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PoolExhaustedError(pool_size, max_overflow, timeout)
                self._condition.wait(min(remaining, _POLL_MAX))

    def acquire_in_loop(self, pool_size: int, max_overflow: int, timeout: float) -> None:
        """:meth:`acquire` for an async engine: waits with ``asyncio.sleep``, never blocking
        the event loop (it runs inside SQLAlchemy's greenlet, so it may await)."""
        limit = pool_size + max_overflow
        if self._try_acquire(limit):
            return
        deadline = time.monotonic() + timeout
        delay = _POLL_FIRST
        while True:
            self._reclaim()
            if self._try_acquire(limit):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PoolExhaustedError(pool_size, max_overflow, timeout)
            await_(asyncio.sleep(min(delay, remaining)))
            delay = min(delay * 2, _POLL_MAX)


_budgets: dict[str, ConnectionBudget] = {}
_lock = threading.Lock()


def budget_for(database: str) -> ConnectionBudget:
    """The process's budget for ``database`` (a URL without its password)."""
    with _lock:
        budget = _budgets.get(database)
        if budget is None:
            budget = _budgets[database] = ConnectionBudget()
        return budget
