"""The process's connection budget: at most ``pool_size + max_overflow`` per database.

SQLAlchemy's pools each count their own connections; a process that uses the
sync API and the async one (one engine per event loop) would hold several pools'
worth. Every engine of every manager for the same database draws on one
:class:`ConnectionBudget` as well: a connection is counted when it is opened and
released when it is closed. A caller past the budget first asks the pools to
close their idle connections, then waits its turn (first come, first served) up
to the pool timeout, then gets :class:`~database.exceptions.PoolExhaustedError`.

:class:`EngineConnections` is one engine's side of it: which of its connections
are open, in use, or still being set up; a connection whose set-up failed (a
backend killed, a task cancelled, before SQLAlchemy ever handed it out) gets no
close event from the pool, so it is found and closed here instead.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy.pool import Pool, QueuePool
from sqlalchemy.util import await_
from sqlalchemy.util import queue as sqla_queue

from database.exceptions import PoolExhaustedError

# How often a waiter looks again (one in an event loop cannot block its thread).
_POLL_FIRST, _POLL_MAX = 0.002, 0.05


class Reclaimer(Protocol):
    """What a budget needs of a connection owner (the DatabaseManager)."""

    def reclaim_idle(self, waiting: EngineConnections | None) -> None: ...


class ConnectionBudget:
    """Open connections to one database, counted across the whole process."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._open = 0
        self._queue: collections.deque[int] = collections.deque()  # waiters' tickets, in order
        self._tickets = itertools.count()
        self._reclaimers: weakref.WeakKeyDictionary[Reclaimer, int] = weakref.WeakKeyDictionary()

    @property
    def open(self) -> int:
        return self._open

    def add_reclaimer(self, reclaimer: Reclaimer, limit: int) -> None:
        """Register an owner of pools (whose idle connections may be closed on demand) and
        its budget. The process's budget is the largest: a manager made with a small pool
        (a migration, a CLI command) limits its own pool, not the application's."""
        self._reclaimers[reclaimer] = limit

    def remove_reclaimer(self, reclaimer: Reclaimer) -> None:
        self._reclaimers.pop(reclaimer, None)

    def _limit(self, requested: int) -> int:
        return max([requested, *self._reclaimers.values()])

    def _take(self, limit: int, ticket: int | None) -> bool:
        """A place, if one is free and no earlier waiter is in line (call under the lock)."""
        first = self._queue[0] if self._queue else None
        if self._open < limit and first == ticket:
            if ticket is not None:
                self._queue.popleft()
            self._open += 1
            self._condition.notify_all()  # the next in line may go too
            return True
        return False

    def release(self) -> None:
        with self._condition:
            self._open = max(0, self._open - 1)
            self._condition.notify_all()

    def _reclaim(self, waiting: EngineConnections | None) -> None:
        for reclaimer in list(self._reclaimers.keys()):
            reclaimer.reclaim_idle(waiting)

    def _wait(self, limit: int, timeout: float, waiting: EngineConnections) -> bool:
        """Wait in line for a place; False when ``timeout`` passed first.

        A thread blocks on the lock's condition; an event loop's engine (inside
        SQLAlchemy's greenlet, so it may await) sleeps with ``asyncio.sleep``
        instead, never blocking its loop.
        """
        with self._condition:
            if self._take(limit, None):
                return True
            ticket = next(self._tickets)
            self._queue.append(ticket)
        deadline = time.monotonic() + timeout
        delay = _POLL_FIRST
        try:
            while True:
                self._reclaim(waiting)
                with self._condition:
                    if self._take(limit, ticket):
                        return True
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    if not waiting.in_loop:
                        self._condition.wait(min(remaining, _POLL_MAX))
                        continue
                await_(asyncio.sleep(min(delay, remaining)))
                delay = min(delay * 2, _POLL_MAX)
        finally:
            with self._condition:
                if ticket in self._queue:
                    self._queue.remove(ticket)
                    self._condition.notify_all()

    def acquire(
        self, pool_size: int, max_overflow: int, timeout: float, waiting: EngineConnections
    ) -> None:
        """Take one connection's place for the engine ``waiting`` (whose own idle
        connections are not reclaimed), waiting its turn up to ``timeout``."""
        if not self._wait(self._limit(pool_size + max_overflow), timeout, waiting):
            raise PoolExhaustedError(pool_size, max_overflow, timeout)


def _current_owner(in_loop: bool) -> Any:
    """Who is opening a connection: the asyncio task, or the thread."""
    if in_loop:
        with contextlib.suppress(RuntimeError):
            task = asyncio.current_task()
            if task is not None:
                return task
    return threading.current_thread()


def _is_gone(owner: weakref.ref[Any]) -> bool:
    alive = owner()
    if alive is None:
        return True
    if isinstance(alive, asyncio.Task):
        return alive.done()
    return isinstance(alive, threading.Thread) and not alive.is_alive()


class EngineConnections:
    """One engine's connections, counted against the budget.

    ``retired``: the engine was closed while some connections were in use;
    they are closed as they come back instead of staying in an orphaned pool.
    """

    def __init__(
        self, budget: ConnectionBudget, terminate: Callable[[Any], None], *, in_loop: bool
    ) -> None:
        self.budget = budget
        self.in_loop = in_loop
        self._terminate = terminate
        self._open: dict[int, Any] = {}
        self._setting_up: dict[int, weakref.ref[Any]] = {}  # connection id -> owner
        self._in_use: set[int] = set()
        self._lock = threading.Lock()
        self.retired = False

    def __len__(self) -> int:
        return len(self._open)

    def opened(self, connection: Any) -> None:
        """A new connection (its place already taken) is being set up by the current owner."""
        with self._lock:
            self._open[id(connection)] = connection
            self._setting_up[id(connection)] = weakref.ref(_current_owner(self.in_loop))

    def checked_out(self, connection: Any) -> None:
        with self._lock:
            self._setting_up.pop(id(connection), None)
            self._in_use.add(id(connection))

    def checked_in(self, connection: Any) -> None:
        with self._lock:
            self._in_use.discard(id(connection))

    def closed(self, connection: Any) -> None:
        with self._lock:
            known = self._open.pop(id(connection), None) is not None
            self._setting_up.pop(id(connection), None)
            self._in_use.discard(id(connection))
        if known:
            self.budget.release()

    def idle(self) -> list[Any]:
        """Open connections that are neither in use nor being set up."""
        with self._lock:
            busy = self._in_use | set(self._setting_up)
            return [c for key, c in self._open.items() if key not in busy]

    def failed_set_ups(self, *, mine: bool) -> None:
        """Close the connections whose set-up failed: those of an owner that has moved on
        (``mine``: the current owner, who is opening another) or is gone."""
        current = _current_owner(self.in_loop) if mine else None
        with self._lock:
            failed = [
                key
                for key, owner in self._setting_up.items()
                if (mine and owner() is current) or _is_gone(owner)
            ]
            connections = [self._open[key] for key in failed]
        for connection in connections:
            with contextlib.suppress(Exception):
                self._terminate(connection)
            self.closed(connection)

    def forget_all(self) -> None:
        """Release every place (the connections die with their loop's sockets)."""
        with self._lock:
            count = len(self._open)
            self._open.clear()
            self._setting_up.clear()
            self._in_use.clear()
        for _ in range(count):
            self.budget.release()


def close_idle(pool: Pool) -> None:
    """Close a queue pool's idle connections, keeping its count of connections right.

    ``Pool.dispose()`` would close them too, but it also resets the pool's
    count of open connections, letting it open more than its size while the
    others are in use; this does what the pool itself does with a connection
    returned to a full queue (close it, count it gone).
    """
    if not isinstance(pool, QueuePool):
        return
    while True:
        try:
            record = pool._pool.get(False)
        except sqla_queue.Empty:  # SQLAlchemy's own queue, not the standard library's
            return
        try:
            record.close()
        finally:
            pool._dec_overflow()


_budgets: dict[str, ConnectionBudget] = {}
_lock = threading.Lock()


def budget_for(database: str) -> ConnectionBudget:
    """The process's budget for ``database`` (a URL without its password)."""
    with _lock:
        budget = _budgets.get(database)
        if budget is None:
            budget = _budgets[database] = ConnectionBudget()
        return budget
