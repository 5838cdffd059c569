"""Single flight: callers asking for the same key at the same time share one call.

``SingleFlight`` is for threads, ``AsyncSingleFlight`` for the tasks of an event
loop. The first caller of a key (the leader) makes the call; the others wait for
its outcome: its value, or its error, raised in every one of them. Nothing is
remembered once the call is over: the next caller of the key calls again.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

T = TypeVar("T")


@dataclass
class _Call:
    """A call under way in some thread, that others for the same key wait for."""

    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None


class SingleFlight:
    """Threads asking for the same key at once share one call; safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, _Call] = {}

    def run(self, key: Hashable, call: Callable[[], T]) -> T:
        """``call()``'s result, or that of the call for ``key`` already under way."""
        with self._lock:
            pending = self._calls.get(key)
            leader = pending is None
            if pending is None:
                pending = self._calls[key] = _Call()
        if not leader:
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            return cast(T, pending.value)
        try:
            pending.value = value = call()
            return value
        except BaseException as error:
            pending.error = error
            raise
        finally:
            with self._lock:
                del self._calls[key]
            pending.done.set()

    def in_flight(self) -> frozenset[Hashable]:
        """The keys whose call is under way."""
        with self._lock:
            return frozenset(self._calls)


class AsyncSingleFlight:
    """The tasks of one event loop asking for the same key at once share one call.

    If the leader is cancelled, the tasks waiting for it are not: one of them
    makes the call in its place, and the others wait for that one. A waiting task
    that is cancelled leaves the leader and the other waiting tasks alone.
    """

    def __init__(self) -> None:
        # By loop: a future belongs to one loop; a closed loop's entries go with it.
        self._calls: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[Hashable, asyncio.Future[Any]]
        ] = weakref.WeakKeyDictionary()

    async def run(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()``'s result, or that of the call for ``key`` already under way."""
        loop = asyncio.get_running_loop()
        calls = self._calls.setdefault(loop, {})
        while (pending := calls.get(key)) is not None:
            try:
                return cast(T, await asyncio.shield(pending))
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if pending.cancelled() and (task is None or not task.cancelling()):
                    continue  # the leader was cancelled, not this task: call it here
                raise
        future: asyncio.Future[Any] = loop.create_future()
        calls[key] = future
        try:
            value = await call()
            future.set_result(value)
            return value
        except asyncio.CancelledError:
            future.cancel()  # the waiting tasks take over, rather than being cancelled too
            raise
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        finally:
            del calls[key]

    def in_flight(self, loop: asyncio.AbstractEventLoop | None = None) -> frozenset[Hashable]:
        """The keys whose call is under way in ``loop`` (by default the running one)."""
        calls = self._calls.get(loop if loop is not None else asyncio.get_running_loop(), {})
        return frozenset(calls)
