"""Engines, pools and sessions: one :class:`DatabaseManager` per database.

The async engine (asyncpg / aiosqlite) belongs to the event loop that created
it: asyncpg connections cannot move between loops. When code runs under a new
loop (a second ``asyncio.run``, pytest's per-test loops) the manager opens a
fresh engine for it, and each loop's engine is disposed while that loop shuts
down. The sync engine (psycopg 3 / sqlite3) is created on first use only, so an
async-only process holds one pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, create_engine, event, text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as sa_create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from database import monitoring
from database.config import DatabaseSettings, DriverUrls, driver_urls
from database.exceptions import DatabaseUnavailableError
from database.models import Base
from database.transactions import sqlite_begin

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HealthStatus:
    """Result of :meth:`DatabaseManager.health_check`."""

    ok: bool
    backend: str
    url: str
    latency_ms: float | None
    error: str | None = None


@dataclass(frozen=True)
class PoolStatus:
    """Connection pools of a manager (sync and async engines together)."""

    size: int
    checked_out: int
    overflow: int
    checkouts: int
    checkouts_at_capacity: int  # took the last free connection: the next would have waited


@dataclass
class _LoopEngine:
    """An async engine, the loop it serves, and what closes it with that loop."""

    engine: AsyncEngine
    loop: asyncio.AbstractEventLoop
    sessions: async_sessionmaker[AsyncSession]
    connections: dict[int, DBAPIConnection] = field(default_factory=dict)
    guard: AsyncGenerator[None, None] | None = None
    disposed: bool = False

    def terminate(self) -> None:
        """Close every connection without awaiting (for ``close()`` inside the loop)."""
        dialect = self.engine.dialect
        connections = list(self.connections.values())
        self.connections.clear()

        def terminate_all() -> None:
            for connection in connections:
                dialect.do_terminate(connection)

        if dialect.driver == "aiosqlite":
            # aiosqlite reports back on the caller's event loop, which may close
            # before its worker thread answers; from a thread with no loop it
            # reports to no one.
            worker = threading.Thread(target=terminate_all, name="close-aiosqlite")
            worker.start()
            worker.join()
        else:
            terminate_all()  # asyncpg: a synchronous abort of the socket
        self.engine.sync_engine.dispose(close=False)
        self.disposed = True

    async def dispose(self) -> None:
        if not self.disposed:
            self.disposed = True
            await self.engine.dispose()
            self.connections.clear()


class DatabaseManager:
    """Owns the engines of one database and hands out sessions.

    ``url`` may be ``postgresql://``, ``postgres://`` or ``sqlite:///path`` (any
    driver suffix is replaced); ``options`` override the engine settings
    (``pool_size``, ``max_overflow``, ``echo``, ...).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: DatabaseSettings | None = None,
        **options: Any,
    ) -> None:
        # Options named like a setting override it; the rest go to create_engine().
        overrides = {k: options.pop(k) for k in list(options) if k in DatabaseSettings.model_fields}
        if settings is None:
            settings = DatabaseSettings.from_env(**overrides)
        elif overrides:
            settings = settings.model_copy(update=overrides)
        self.settings = settings
        self.urls: DriverUrls = driver_urls(url if url is not None else self.settings.url())
        self._options = options
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._async: _LoopEngine | None = None
        self._lock = threading.Lock()
        self.checkouts = 0
        self.checkouts_at_capacity = 0

    def __repr__(self) -> str:
        return f"DatabaseManager({self.urls.safe()})"

    @property
    def backend(self) -> str:
        """``"postgresql"`` or ``"sqlite"``."""
        return self.urls.backend

    # -- engines ---------------------------------------------------------------

    def _engine_options(self) -> dict[str, Any]:
        s = self.settings
        return {
            "echo": s.echo,
            "pool_size": s.pool_size,
            "max_overflow": s.max_overflow,
            "pool_pre_ping": s.pool_pre_ping,
            "pool_recycle": s.pool_recycle,
            "pool_timeout": s.pool_timeout,
            **self._options,
        }

    def _connect_args(self, is_async: bool) -> dict[str, Any]:
        s = self.settings
        if self.urls.is_sqlite:
            return {"timeout": s.sqlite_busy_timeout_ms / 1000}
        if is_async:
            return {
                "timeout": s.connect_timeout,
                "server_settings": {"application_name": s.application_name},
            }
        return {
            "connect_timeout": max(1, round(s.connect_timeout)),
            "application_name": s.application_name,
        }

    def _prepare(self, engine: Engine) -> None:
        """Connection set-up shared by the sync engine and the async one's sync core."""
        event.listen(engine, "do_connect", self._connect)
        event.listen(engine, "before_cursor_execute", _start_timer)
        event.listen(engine, "after_cursor_execute", self._stop_timer)
        event.listen(engine.pool, "checkout", self._on_checkout)
        if self.urls.is_sqlite:
            event.listen(engine, "connect", self._configure_sqlite)
            # pysqlite's own transaction handling defers BEGIN and breaks
            # SAVEPOINT; take it over as SQLAlchemy's documentation recommends.
            event.listen(engine, "begin", sqlite_begin)

    def _configure_sqlite(self, dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {int(self.settings.sqlite_busy_timeout_ms)}")
        # LIKE is case-sensitive on PostgreSQL; make ``__contains`` mean the same here.
        cursor.execute("PRAGMA case_sensitive_like = ON")
        if self.urls.sync_url.query.get("mode") != "memory":
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    def _connect(
        self, dialect: Dialect, _record: ConnectionPoolEntry, cargs: Any, cparams: Any
    ) -> DBAPIConnection:
        """Open a DBAPI connection; any failure says where, never with the password."""
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception as error:
            url = self.urls.sync_url
            reason = (str(error).splitlines() or [type(error).__name__])[0]
            if url.password:
                reason = reason.replace(str(url.password), "***")
            raise DatabaseUnavailableError(url.host, url.port, reason) from None

    def _stop_timer(self, conn: Connection, _cursor: Any, statement: str, *_: Any) -> None:
        started = conn.info.get(_TIMER)
        if not started:
            return
        elapsed = time.perf_counter() - started.pop()
        monitoring.queries.record(statement, elapsed)
        if elapsed * 1000 >= self.settings.slow_query_ms:
            # The statement only: parameters may hold personal data.
            logger.warning("slow query (%.0f ms): %s", elapsed * 1000, " ".join(statement.split()))

    def _pools(self) -> list[Any]:
        engines = (self._engine, self._async.engine.sync_engine if self._async else None)
        return [engine.pool for engine in engines if engine is not None]

    def _on_checkout(self, *_: Any) -> None:
        self.checkouts += 1
        limit = self.settings.pool_size + self.settings.max_overflow
        if any(getattr(pool, "checkedout", lambda: 0)() >= limit for pool in self._pools()):
            self.checkouts_at_capacity += 1

    def pool_status(self) -> PoolStatus:
        """The pools' state now, and how many checkouts took the last free connection."""
        pools = self._pools()
        return PoolStatus(
            size=sum(getattr(p, "size", lambda: 0)() for p in pools),
            checked_out=sum(getattr(p, "checkedout", lambda: 0)() for p in pools),
            overflow=sum(max(0, getattr(p, "overflow", lambda: 0)()) for p in pools),
            checkouts=self.checkouts,
            checkouts_at_capacity=self.checkouts_at_capacity,
        )

    @property
    def engine(self) -> Engine:
        """The sync engine (psycopg 3 / sqlite3), created on first use (once, across threads)."""
        return self._sync()[0]

    def _sync(self) -> tuple[Engine, sessionmaker[Session]]:
        with self._lock:
            if self._engine is None or self._sessions is None:
                engine = create_engine(
                    self.urls.sync_url,
                    connect_args=self._connect_args(is_async=False),
                    **self._engine_options(),
                )
                self._prepare(engine)
                self._engine, self._sessions = engine, sessionmaker(engine, expire_on_commit=False)
            return self._engine, self._sessions

    @property
    def sync_engine_started(self) -> bool:
        return self._engine is not None

    def _loop_engine(self) -> _LoopEngine:
        loop = asyncio.get_running_loop()
        current = self._async
        if current is not None and current.loop is loop and not current.disposed:
            return current
        if current is not None:
            self._abandon(current)
        engine = sa_create_async_engine(
            self.urls.async_url,
            connect_args=self._connect_args(is_async=True),
            **self._engine_options(),
        )
        self._prepare(engine.sync_engine)
        slot = _LoopEngine(engine, loop, async_sessionmaker(engine, expire_on_commit=False))
        event.listen(engine.sync_engine, "connect", lambda conn, _rec: _track(slot, conn))
        event.listen(engine.sync_engine, "close", lambda conn, _rec: _untrack(slot, conn))
        event.listen(engine.sync_engine, "close_detached", lambda conn: _untrack(slot, conn))
        slot.guard = _dispose_when_loop_ends(slot)
        # Run the guard up to its ``yield`` so that the loop's shutdown_asyncgens()
        # (asyncio.run, asyncio.Runner, pytest-asyncio) closes it, disposing the engine.
        loop.create_task(slot.guard.asend(None))  # noqa: RUF006 - completes at once
        self._async = slot
        return slot

    @staticmethod
    def _abandon(slot: _LoopEngine) -> None:
        """Drop an engine whose loop is gone or elsewhere; normally already disposed."""
        if not slot.disposed:
            slot.disposed = True
            slot.engine.sync_engine.dispose(close=False)

    @property
    def async_engine(self) -> AsyncEngine:
        """The async engine of the running event loop."""
        return self._loop_engine().engine

    # -- sessions --------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def get_async_session(self) -> AsyncIterator[AsyncSession]:
        """An AsyncSession that commits on success, rolls back on error, always closes.

        No transaction is begun eagerly: ``async with session.begin():`` works inside.
        """
        async with self._loop_engine().sessions() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    @contextlib.contextmanager
    def get_session(self) -> Iterator[Session]:
        """The sync counterpart of :meth:`get_async_session`."""
        _, sessions = self._sync()
        with sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    # -- schema ------------------------------------------------------------------

    async def create_tables(self) -> None:
        """Create every table that does not exist (use migrations in production)."""
        async with self.async_engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)

    async def drop_tables(self) -> None:
        async with self.async_engine.begin() as connection:
            await connection.run_sync(Base.metadata.drop_all)

    def create_tables_sync(self) -> None:
        Base.metadata.create_all(self.engine)

    def drop_tables_sync(self) -> None:
        Base.metadata.drop_all(self.engine)

    # -- health ------------------------------------------------------------------

    async def health_check(self) -> HealthStatus:
        """Round-trip ``SELECT 1``; never raises for an unreachable database."""
        started = time.perf_counter()
        try:
            async with self.async_engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as error:
            return HealthStatus(False, self.backend, self.urls.safe(), None, str(error))
        elapsed = (time.perf_counter() - started) * 1000
        return HealthStatus(True, self.backend, self.urls.safe(), elapsed)

    def check_health(self) -> HealthStatus:
        """The sync counterpart of :meth:`health_check`."""
        started = time.perf_counter()
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as error:
            return HealthStatus(False, self.backend, self.urls.safe(), None, str(error))
        elapsed = (time.perf_counter() - started) * 1000
        return HealthStatus(True, self.backend, self.urls.safe(), elapsed)

    # -- closing -----------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every pooled connection, awaiting the async ones."""
        slot, self._async = self._async, None
        if slot is not None:
            if slot.loop is asyncio.get_running_loop():
                await slot.dispose()
            else:
                self._abandon(slot)
        self._close_sync()

    def close(self) -> None:
        """Close every pooled connection; safe inside or outside an event loop.

        Inside the engine's running loop the async connections are terminated
        without awaiting (nothing else can run while this returns); outside it
        they are closed gracefully on their loop.
        """
        slot, self._async = self._async, None
        if slot is not None and not slot.disposed:
            try:
                running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if slot.loop is running:
                slot.terminate()
            elif running is None and not slot.loop.is_closed():
                slot.loop.run_until_complete(slot.dispose())
            else:
                self._abandon(slot)
        self._close_sync()

    def _close_sync(self) -> None:
        with self._lock:
            engine, self._engine, self._sessions = self._engine, None, None
        if engine is not None:
            engine.dispose()


_TIMER = "database.query_started"


def _start_timer(conn: Connection, *_: Any) -> None:
    conn.info.setdefault(_TIMER, []).append(time.perf_counter())


def _track(slot: _LoopEngine, connection: DBAPIConnection) -> None:
    slot.connections[id(connection)] = connection


def _untrack(slot: _LoopEngine, connection: DBAPIConnection) -> None:
    slot.connections.pop(id(connection), None)


async def _dispose_when_loop_ends(slot: _LoopEngine) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await slot.dispose()
