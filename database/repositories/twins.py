"""One body for both forms of a repository method.

A repository method is written once, for a :class:`~sqlalchemy.orm.Session`, and
``async_name = async_form(name)`` gives its ``async_`` form: the same body run by
:meth:`AsyncSession.run_sync <sqlalchemy.ext.asyncio.AsyncSession.run_sync>`,
SQLAlchemy's own bridge, in which every driver call is awaited on the event
loop. ``AsyncSession.execute`` is itself the sync ``execute`` run this way, so
an async form costs one switch into SQLAlchemy's greenlet per call rather than
one per statement. The form looks the method up by name on the repository, so
a subclass that overrides ``name`` gets its own ``async_name`` with no more code.

The exceptions are the point reads (``get_latest``, ``get_close_as_of``,
``get_cached_data``): each builds one :class:`database.driver.Read` (statement,
parameters, what to make of the rows) and runs it with ``_read`` or, awaiting the
driver without a greenlet trip of its own, ``_async_read``; still one body.

numpy and pandas work in such a body goes through :func:`off_greenlet`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.util import await_
from sqlalchemy.util.concurrency import in_greenlet

P = ParamSpec("P")
R = TypeVar("R")


class AsyncForm(Generic[P, R]):
    """The ``async_`` form of a repository method (see the module's docstring)."""

    def __init__(self, method: Callable[Concatenate[Any, Session, P], R]) -> None:
        self.name = method.__name__
        self.__doc__ = f"The async form of :meth:`{self.name}`: the same arguments, awaited."

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> AsyncForm[P, R]: ...

    @overload
    def __get__(
        self, instance: object, owner: type[Any]
    ) -> Callable[Concatenate[AsyncSession, P], Coroutine[Any, Any, R]]: ...

    def __get__(self, instance: object | None, owner: type[Any]) -> Any:
        if instance is None:
            return self
        method: Callable[Concatenate[Session, P], R] = getattr(instance, self.name)

        async def run(session: AsyncSession, /, *args: P.args, **kwargs: P.kwargs) -> R:
            return await session.run_sync(method, *args, **kwargs)

        run.__name__ = run.__qualname__ = f"async_{self.name}"
        run.__doc__ = self.__doc__
        return run


def async_form(method: Callable[Concatenate[Any, Session, P], R]) -> AsyncForm[P, R]:
    """``async_name = async_form(name)`` in a repository's class body."""
    return AsyncForm(method)


def off_greenlet(function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Call ``function`` on the thread's own stack, never on a ``run_sync`` greenlet's.

    Why: under ``AsyncSession.run_sync`` the code runs in a greenlet. Once it
    has switched out and back (any awaited driver call), the C stack beyond its
    first frames is no longer its callers' but whatever the event loop's
    greenlet has there now. Before NumPy reuses a temporary array of 256 KiB or
    more in a binary operation (``np.where(...) * factor`` in
    ``prices.staging_rows``, from 32,768 bars), it walks 10 C frames with glibc
    ``backtrace()`` to check that its caller is the interpreter; in the
    greenlet that walk runs past ``greenlet::UserGreenlet::g_initialstub``
    into stale return addresses, and the unwinder crashes the process (SIGSEGV
    in ``_Unwind_Backtrace <- backtrace <- check_callers <- try_binary_elide
    <- array_multiply``). So numpy and pandas work runs on the loop's own
    stack: ``await_`` hands a coroutine to the loop's greenlet, which runs it
    there. Outside a greenlet this is a plain call.
    """
    if not in_greenlet():
        return function(*args, **kwargs)
    return await_(_called(function, *args, **kwargs))


async def _called(function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    return function(*args, **kwargs)
