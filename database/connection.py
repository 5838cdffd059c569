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
import functools
import itertools
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

from sqlalchemy import Connection, Dialect, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import ArgumentError, InvalidatePoolError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as sa_create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, QueuePool
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util.concurrency import in_greenlet

from database import monitoring, ownership, redaction
from database.budget import EngineConnections, budget_for, close_idle
from database.config import DatabaseSettings, DriverUrls, driver_urls, parse_url
from database.exceptions import (
    OUTCOME_UNKNOWN,
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    StaleDataError,
    first_line,
    translate,
    translate_errors,
)
from database.models import Base
from database.ownership import WALL
from database.replicas import OK as REPLICA_OK
from database.replicas import ROUTE, Replica, ReplicaStatus, Route, RoutedSession, socket_closed
from database.row_security import RowSecurity, autocommit_refused
from database.transactions import TRANSACTION_POOLED, sqlite_begin

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Configuration:
    """What a manager was made from: the URL as given, the settings, the engine options."""

    url: URL
    settings: DatabaseSettings
    engine_options: dict[str, Any]

    @classmethod
    def of(
        cls, url: str | URL | None, settings: DatabaseSettings | None, options: dict[str, Any]
    ) -> _Configuration:
        # Options named like a setting override it; the rest go to create_engine().
        overrides = {k: v for k, v in options.items() if k in DatabaseSettings.model_fields}
        engine_options = {k: v for k, v in options.items() if k not in overrides}
        if settings is None:
            settings = DatabaseSettings.from_env(**overrides)
        elif overrides:
            settings = settings.with_overrides(**overrides)
        given = url if url is None or isinstance(url, URL) else parse_url(url, "the url argument")
        return cls(given or settings.url(), settings, engine_options)


@dataclass(frozen=True)
class HealthStatus:
    """Result of :meth:`DatabaseManager.health_check`."""

    ok: bool
    backend: str
    url: str
    latency_ms: float | None
    error: str | None = None
    replicas: tuple[ReplicaStatus, ...] = ()  # each replica's state and lag, checked now


@dataclass(frozen=True)
class PoolStatus:
    """Connection pools of a manager (sync and async engines together)."""

    size: int
    checked_out: int
    overflow: int
    checkouts: int
    checkouts_at_capacity: int  # took the last free connection: the next would have waited
    pings: int = 0  # idle connections checked with a round trip at checkout
    pings_failed: int = 0  # of those, found dead and replaced before the caller had them


@dataclass
class _LoopEngine:
    """An async engine, the loop it serves, and the connections it holds open."""

    engine: AsyncEngine
    loop: asyncio.AbstractEventLoop
    sessions: async_sessionmaker[AsyncSession]
    connections: EngineConnections
    guard: AsyncGenerator[None, None] | None = None
    disposed: bool = False

    def terminate(self) -> None:
        """Close the idle connections without awaiting (for ``close()`` inside the loop).

        Those in use by other tasks are closed as they come back (the engine is
        retired), so that no task is left waiting on a connection closed under it.
        """
        dialect = self.engine.dialect
        self.connections.retired = True
        connections = self.connections.idle()

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
        for connection in connections:
            self.connections.closed(connection)
        self.engine.sync_engine.dispose(close=False)
        self.disposed = True

    async def dispose(self) -> None:
        if not self.disposed:
            self.disposed = True
            self.connections.retired = True  # those in use close as they come back
            await self.engine.dispose()


class DatabaseManager:
    """Owns the engines of one database and hands out sessions.

    ``url`` may be ``postgresql://``, ``postgres://`` or ``sqlite:///path`` (any
    driver suffix is replaced); ``options`` override the engine settings
    (``pool_size``, ``max_overflow``, ``echo``, ...). Every engine of every
    manager for the same database shares one connection budget of
    ``pool_size + max_overflow`` (see :mod:`database.budget`).
    """

    def __init__(
        self,
        url: str | URL | None = None,
        *,
        settings: DatabaseSettings | None = None,
        **options: Any,
    ) -> None:
        self._configuration = _Configuration.of(url, settings, options)
        self.settings = self._configuration.settings
        self.urls: DriverUrls = driver_urls(self._configuration.url)
        options = dict(self._configuration.engine_options)
        self._options = options
        # An in-memory database lives while a connection to it is open: this one,
        # held from here to close(), outside the pools (which may close all of theirs).
        self._keeper: sqlite3.Connection | None = None
        self._keep_alive()
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._sync_connections: EngineConnections | None = None
        self._loops: dict[asyncio.AbstractEventLoop, _LoopEngine] = {}
        self._lock = threading.Lock()
        self._budget = budget_for(self.urls.safe())
        self._wall: RowSecurity | None = None
        if self.settings.row_security:
            if self.urls.is_sqlite:
                logger.warning(
                    "DB_ROW_SECURITY=on has no effect on SQLite, which has no row-level "
                    "security: the repositories' ownership checks are its only wall"
                )
            elif options.get("isolation_level") == "AUTOCOMMIT":
                raise autocommit_refused()
            else:
                self._wall = RowSecurity(self.urls.safe())
        self.checkouts = 0
        self.checkouts_at_capacity = 0
        self.pings = 0
        self.pings_failed = 0
        # Ping a pooled connection at checkout once it has been idle this long (None: never).
        self._ping_after: float | None = (
            self.settings.pool_ping_after if self.settings.pool_pre_ping else None
        )
        self._checked_out = 0
        self._count_lock = threading.Lock()
        self._is_replica = False
        self._replicas = self._make_replicas()
        self._next_replica = itertools.count()
        self._all_replicas_out = False  # warned that readonly sessions run on the primary

    def _make_replicas(self) -> list[Replica]:
        """A manager per standby, with this one's settings and its own connection budget."""
        urls = [u.get_secret_value() for u in self.settings.replica_urls]
        if not urls:
            return []
        if self.urls.is_sqlite:
            raise ConfigurationError(
                "DB_REPLICA_URLS is for PostgreSQL: SQLite has no replicas to read from"
            )
        settings = self.settings.model_copy(update={"replica_urls": ()})
        options = dict(self._options)
        options["execution_options"] = {
            **options.get("execution_options", {}),
            "postgresql_readonly": True,  # BEGIN READ ONLY, no round trip of its own
        }
        replicas = []
        for text_url in urls:
            url = parse_url(text_url, "DB_REPLICA_URLS")
            if driver_urls(url).backend != "postgresql":
                raise ConfigurationError("DB_REPLICA_URLS takes PostgreSQL URLs only")
            manager = DatabaseManager(url, settings=settings, **options)
            manager._is_replica = True
            replicas.append(
                Replica(
                    manager,
                    self,
                    self.settings.replica_max_lag_s,
                    self.settings.replica_check_interval_s,
                )
            )
        return replicas

    def __repr__(self) -> str:
        return f"DatabaseManager({self.urls.safe()})"

    def configured_as(
        self,
        url: str | URL | None = None,
        *,
        settings: DatabaseSettings | None = None,
        **options: Any,
    ) -> bool:
        """Whether ``DatabaseManager(url, settings=settings, **options)`` would be this one's
        twin: the same URL as given (``sqlite://`` included), settings and engine options."""
        return _Configuration.of(url, settings, options) == self._configuration

    def _keep_alive(self) -> None:
        if self.urls.in_memory and self._keeper is None:
            try:
                self._keeper = sqlite3.connect(
                    self.urls.sqlite_uri(), uri=True, check_same_thread=False
                )
            except sqlite3.Error as error:
                raise self._unavailable(error) from error

    def _release(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.close()

    @property
    def backend(self) -> str:
        """``"postgresql"`` or ``"sqlite"``."""
        return self.urls.backend

    @property
    def connection_budget(self) -> int:
        """The most connections this process opens to the database: pool size + overflow."""
        return self.settings.pool_size + self.settings.max_overflow

    @property
    def open_connections(self) -> int:
        """Connections this process holds open to the database now (all managers)."""
        return self._budget.open

    # -- engines ---------------------------------------------------------------

    def _engine_options(self, *, is_async: bool) -> dict[str, Any]:
        s = self.settings
        options: dict[str, Any] = {
            # Parameters are logged under DB_ECHO=debug only, with secret columns redacted.
            **redaction.engine_log_options(s.echo),
            # Each pool queues its own callers up to the budget; the budget
            # (database.budget) caps all the pools of the process together.
            "pool_size": s.pool_size,
            "max_overflow": s.max_overflow,
            # Not SQLAlchemy's pre-ping, a round trip at every checkout: the checkout
            # hook pings only connections idle for DB_POOL_PING_AFTER (_on_checkout).
            "pool_pre_ping": False,
            "pool_recycle": s.pool_recycle,
            "pool_timeout": s.pool_timeout,
        }
        if self.urls.in_memory:
            # SQLAlchemy would pick a one-connection pool for ``mode=memory``; its
            # documentation asks for the queue pool with a named shared-cache database.
            options["poolclass"] = AsyncAdaptedQueuePool if is_async else QueuePool
        options.update(self._options)
        if self.behind_pgbouncer:
            options["execution_options"] = {
                **options.get("execution_options", {}),
                TRANSACTION_POOLED: True,
            }
        poolclass = options.get("poolclass")
        if isinstance(poolclass, type) and not issubclass(poolclass, QueuePool):
            # NullPool, StaticPool, ...: they take none of the queue's arguments.
            for name in ("pool_size", "max_overflow", "pool_timeout"):
                options.pop(name, None)
        return options

    def _connect_args(self, is_async: bool) -> dict[str, Any]:
        s = self.settings
        if self.urls.is_sqlite:
            sqlite_args: dict[str, Any] = {"timeout": s.sqlite_busy_timeout_ms / 1000}
            if self.urls.in_memory and not is_async:
                # SQLAlchemy allows threads to share file databases' connections only;
                # the queue pool hands an in-memory one's to any thread too.
                sqlite_args["check_same_thread"] = False
            return sqlite_args
        # Behind PgBouncer the statement timeout is set per transaction (_set_local_timeout):
        # PgBouncer refuses start-up settings it does not track, and ``options``.
        timeout_at_start = s.statement_timeout_ms and not self.behind_pgbouncer
        if is_async:
            server_settings = {"application_name": s.application_name}
            if timeout_at_start:
                server_settings["statement_timeout"] = str(s.statement_timeout_ms)
            args: dict[str, Any] = {
                "timeout": s.connect_timeout,
                "server_settings": server_settings,
            }
            if self.behind_pgbouncer:
                # Transaction pooling hands each transaction any server connection: no
                # statement cache, and SQLAlchemy's statements (it prepares each one to
                # learn its columns) named uniquely, so that no two clients' names clash.
                args["statement_cache_size"] = 0
                args["prepared_statement_cache_size"] = 0
                args["prepared_statement_name_func"] = _unique_statement_name
            return args
        args = {
            "connect_timeout": max(1, round(s.connect_timeout)),
            "application_name": s.application_name,
        }
        if timeout_at_start:
            args["options"] = f"-c statement_timeout={s.statement_timeout_ms}"
        if self.behind_pgbouncer:
            args["prepare_threshold"] = None  # psycopg never prepares on the server
        return args

    @property
    def behind_pgbouncer(self) -> bool:
        """Whether connections go through PgBouncer (``DB_PGBOUNCER``, or port 6432)."""
        if self.urls.is_sqlite:
            return False
        if self.settings.pgbouncer is not None:
            return self.settings.pgbouncer
        return self.urls.sync_url.port == PGBOUNCER_PORT

    def _set_local_timeout(self, connection: Connection) -> None:
        """``SET LOCAL`` the statement timeout as a transaction begins (behind PgBouncer)."""
        connection.exec_driver_sql(
            f"SET LOCAL statement_timeout = {int(self.settings.statement_timeout_ms)}"
        )

    def _prepare(self, engine: Engine, connections: EngineConnections) -> None:
        """Connection set-up shared by the sync engine and the async one's sync core."""
        redaction.install(engine, Base.metadata)
        event.listen(engine, "do_connect", functools.partial(self._connect, connections))
        event.listen(engine, "close", lambda conn, _rec: connections.closed(conn))
        event.listen(engine, "close_detached", connections.closed)
        event.listen(engine, "before_cursor_execute", _start_timer)
        event.listen(engine, "after_cursor_execute", self._stop_timer)
        event.listen(
            engine.pool,
            "checkout",
            functools.partial(self._on_checkout, connections, engine.dialect),
        )
        event.listen(engine.pool, "checkin", functools.partial(self._on_checkin, connections))
        if self.behind_pgbouncer and self.settings.statement_timeout_ms:
            event.listen(engine, "begin", self._set_local_timeout)
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
        self,
        connections: EngineConnections,
        dialect: Dialect,
        _record: ConnectionPoolEntry,
        cargs: Any,
        cparams: Any,
    ) -> DBAPIConnection:
        """Open a DBAPI connection within the budget; a failure says where, never the password."""
        s = self.settings
        # A connection this caller opened before and that never reached it failed in set-up.
        connections.failed_set_ups(mine=True)
        self._budget.acquire(s.pool_size, s.max_overflow, s.pool_timeout, connections)
        try:
            connection = dialect.connect(*cargs, **cparams)
        except BaseException as error:
            self._budget.release()
            if not isinstance(error, Exception):
                raise
            raise self._unavailable(error) from error
        connections.opened(connection)
        return connection

    def _unavailable(
        self, error: BaseException | str, *, retryable: bool = True
    ) -> DatabaseUnavailableError:
        """The error that names this database (its host and port, or its file)."""
        url = self.urls.sync_url
        reason = error if isinstance(error, str) else first_line(error)
        if url.password:
            reason = reason.replace(str(url.password), "***")
        if self.urls.is_sqlite:
            return DatabaseUnavailableError(
                None, None, f"{url.database}: {reason}", retryable=retryable
            )
        return DatabaseUnavailableError(url.host, url.port or 5432, reason, retryable=retryable)

    def reclaim_idle(self, waiting: EngineConnections | None = None) -> None:
        """Close idle pooled connections, so that a caller waiting for the budget can have one.

        Not those of the engine that waits (it has none idle, or it would not
        wait). The sync pool's at once; an async pool's in its own loop (closing
        awaits the driver).
        """
        engine, tracked = self._engine, self._sync_connections
        if engine is not None and tracked is not None and tracked is not waiting:
            tracked.failed_set_ups(mine=False)
            close_idle(engine.pool)
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for slot in list(self._loops.values()):
            if slot.disposed or slot.connections is waiting:
                continue
            slot.connections.failed_set_ups(mine=False)
            pool = slot.engine.sync_engine.pool
            if slot.loop is running:
                if in_greenlet():
                    close_idle(pool)
            elif slot.loop.is_running():
                asyncio.run_coroutine_threadsafe(greenlet_spawn(close_idle, pool), slot.loop)

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
        engines = [self._engine, *(slot.engine.sync_engine for slot in list(self._loops.values()))]
        return [engine.pool for engine in engines if engine is not None]

    def _on_checkin(
        self, connections: EngineConnections, dbapi_connection: Any, record: ConnectionPoolEntry
    ) -> None:
        info = record.info
        if info.pop(_CHECKED_OUT, False):
            with self._count_lock:
                self._checked_out -= 1
        if dbapi_connection is None:
            return  # invalidated on the way back: already closed
        connections.checked_in(dbapi_connection)
        if connections.retired:  # its engine was closed while it was in use
            record.invalidate()
            return
        info[_IDLE_SINCE] = time.monotonic()

    def _on_checkout(
        self,
        connections: EngineConnections,
        dialect: Dialect,
        dbapi_connection: Any,
        record: ConnectionPoolEntry,
        _proxy: Any,
    ) -> None:
        info = record.info
        if self._is_replica and _IDLE_SINCE in info and socket_closed(dbapi_connection):
            # A standby that stopped: found before a readonly session is handed its
            # connection, so that the session goes elsewhere instead of failing.
            self.pings_failed += 1
            raise InvalidatePoolError("the replica closed the connection while it was idle")
        # A new connection has no idle time (the pool clears ``info`` when it reconnects).
        idle_since = info.get(_IDLE_SINCE)
        if (
            idle_since is not None
            and self._ping_after is not None
            and time.monotonic() - idle_since >= self._ping_after
        ):
            self._ping(dialect, dbapi_connection)
        connections.checked_out(dbapi_connection)
        if not info.get(_CHECKED_OUT):
            info[_CHECKED_OUT] = True
            with self._count_lock:
                self._checked_out += 1
        self.checkouts += 1
        if self._budget.open >= self.connection_budget and not any(
            getattr(pool, "checkedin", lambda: 0)() for pool in self._pools()
        ):
            self.checkouts_at_capacity += 1

    def _ping(self, dialect: Dialect, dbapi_connection: Any) -> None:
        """One round trip on a connection that sat idle in the pool; a lost one raises
        the pool's DisconnectionError, on which the pool replaces it (and, as after a
        server restart, every connection pooled before now) and hands out the new one.

        Runs inside the pool's checkout, so in the async engine's greenlet too.
        """
        self.pings += 1
        if dialect._do_ping_w_event(dbapi_connection):
            return
        self.pings_failed += 1
        logger.info("a pooled connection was lost while idle; replacing it")
        raise InvalidatePoolError("the connection was lost while idle in the pool")

    def pool_status(self) -> PoolStatus:
        """The pools' state now, and how many checkouts took the last free connection."""
        pools = self._pools()
        return PoolStatus(
            size=sum(getattr(p, "size", lambda: 0)() for p in pools),
            # Counted here: a pool's own count is reset when its idle connections are reclaimed.
            checked_out=self._checked_out,
            overflow=max(0, self._budget.open - self.settings.pool_size),
            checkouts=self.checkouts,
            checkouts_at_capacity=self.checkouts_at_capacity,
            pings=self.pings,
            pings_failed=self.pings_failed,
        )

    @property
    def engine(self) -> Engine:
        """The sync engine (psycopg 3 / sqlite3), created on first use (once, across threads)."""
        return self._sync()[0]

    def _sync(self) -> tuple[Engine, sessionmaker[Session]]:
        with self._lock:
            if self._engine is None or self._sessions is None:
                self._keep_alive()
                with _engine_options_checked():
                    engine = create_engine(
                        self.urls.sync_url,
                        connect_args=self._connect_args(is_async=False),
                        **self._engine_options(is_async=False),
                    )
                self._budget.add_reclaimer(self, self.connection_budget)
                tracked = EngineConnections(
                    self._budget, engine.dialect.do_terminate, in_loop=False
                )
                self._prepare(engine, tracked)
                self._engine, self._sessions = (
                    engine,
                    sessionmaker(engine, class_=RoutedSession, expire_on_commit=False),
                )
                self._sync_connections = tracked
            return self._engine, self._sessions

    @property
    def sync_engine_started(self) -> bool:
        return self._engine is not None

    def _loop_engine(self) -> _LoopEngine:
        """The engine of the running loop: one per loop (threads may each run one)."""
        loop = asyncio.get_running_loop()
        slot = self._loops.get(loop)
        if slot is not None and not slot.disposed:
            return slot
        with self._lock:
            for other in [s for s in self._loops.values() if s.loop.is_closed()]:
                self._abandon(other)  # its loop closed without shutting down its generators
            self._keep_alive()
            with _engine_options_checked():
                engine = sa_create_async_engine(
                    self.urls.async_url,
                    connect_args=self._connect_args(is_async=True),
                    **self._engine_options(is_async=True),
                )
            self._budget.add_reclaimer(self, self.connection_budget)
            tracked = EngineConnections(
                self._budget, _terminator(engine.dialect, loop), in_loop=True
            )
            sessions = async_sessionmaker(
                engine, sync_session_class=RoutedSession, expire_on_commit=False
            )
            slot = _LoopEngine(engine, loop, sessions, tracked)
            self._prepare(engine.sync_engine, tracked)
            slot.guard = self._dispose_when_loop_ends(slot)
            self._loops[loop] = slot
        # Run the guard up to its ``yield`` so that the loop's shutdown_asyncgens()
        # (asyncio.run, asyncio.Runner, pytest-asyncio) closes it, disposing the engine.
        loop.create_task(slot.guard.asend(None))  # noqa: RUF006 - completes at once
        return slot

    async def _dispose_when_loop_ends(self, slot: _LoopEngine) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await slot.dispose()
            slot.connections.forget_all()  # the loop is ending: none can be used again
            self._drop(slot)

    def _drop(self, slot: _LoopEngine) -> None:
        if self._loops.get(slot.loop) is slot:
            del self._loops[slot.loop]

    def _abandon(self, slot: _LoopEngine) -> None:
        """Drop an engine whose loop is closed; its connections die with their sockets."""
        if not slot.disposed:
            slot.disposed = True
            slot.engine.sync_engine.dispose(close=False)
        slot.connections.forget_all()
        self._drop(slot)

    @property
    def async_engine(self) -> AsyncEngine:
        """The async engine of the running event loop."""
        return self._loop_engine().engine

    # -- sessions --------------------------------------------------------------

    def _open_for(self, session: Session, user_id: Any, system: bool) -> None:
        ownership.bind(session.info, user_id=user_id, system=system)
        if self._wall is not None:
            session.info[WALL] = self._wall

    @contextlib.asynccontextmanager
    async def get_async_session(
        self, *, user_id: Any = None, system: bool = False, readonly: bool = False
    ) -> AsyncIterator[AsyncSession]:
        """An AsyncSession that commits on success, rolls back on error, always closes.

        No transaction is begun eagerly: ``async with session.begin():`` works inside.
        Every database error leaving the block is one of :mod:`database.exceptions`.
        ``user_id`` opens it for that user: the repositories scope every
        portfolio-scoped call to the user, and with ``DB_ROW_SECURITY=on`` so does
        PostgreSQL. ``system=True`` opens it for maintenance, across all users.
        ``readonly=True`` reads from a replica (``DB_REPLICA_URLS``) until the
        session writes, then from the primary (:mod:`database.replicas`).
        """
        session = self._loop_engine().sessions()
        closed = False
        route: Route | None = None
        try:
            self._open_for(session.sync_session, user_id, system)
            if readonly and self._replicas:
                route = await self._async_route()
                if route is not None:
                    session.sync_session.info[ROUTE] = route
            ending = _Ending()
            try:
                yield session
                # Flush, commit and close in one trip into SQLAlchemy's greenlet, not three.
                await greenlet_spawn(_finish, session.sync_session, ending)
                closed = True
            except BaseException as error:
                typed = self._typed(error, ending)
                _replica_failed(route, typed)
                await _quietly(session.rollback())
                _raise(error, typed)
        finally:
            if not closed:
                # AsyncSession's own exit: a close that completes even if the task is cancelled.
                await session.__aexit__(None, None, None)

    @contextlib.contextmanager
    def get_session(
        self, *, user_id: Any = None, system: bool = False, readonly: bool = False
    ) -> Iterator[Session]:
        """The sync counterpart of :meth:`get_async_session`."""
        _, sessions = self._sync()
        route = self._route() if readonly and self._replicas else None
        with sessions() as session:
            self._open_for(session, user_id, system)
            if route is not None:
                session.info[ROUTE] = route
            ending = _Ending()
            try:
                yield session
                ending.flushing(session)
                session.flush()
                ending.committing()
                session.commit()
            except BaseException as error:
                typed = self._typed(error, ending)
                _replica_failed(route, typed)
                _quietly_sync(session.rollback)
                _raise(error, typed)

    # -- replicas ----------------------------------------------------------------

    @property
    def replicas(self) -> list[DatabaseManager]:
        """The managers of the replicas (``DB_REPLICA_URLS``), in the order given."""
        return [replica.manager for replica in self._replicas]

    def _replica_order(self) -> list[Replica]:
        """Round robin: each readonly session starts from the next replica."""
        start = next(self._next_replica) % len(self._replicas)
        return self._replicas[start:] + self._replicas[:start]

    def _route(self) -> Route | None:
        """A readonly session's route: the next replica that is current and answers."""
        for replica in self._replica_order():
            replica.check()
            if replica.state != REPLICA_OK:
                continue
            engine = replica.manager.engine
            try:
                # A checkout (no round trip) finds a stopped standby before the caller does.
                with engine.connect():
                    pass
            except Exception as error:
                replica.mark_down(error)
                continue
            return self._chosen(replica, engine, self.engine)
        _on_primary_instead(self)
        return None

    def _chosen(self, replica: Replica, reads: Engine, primary: Engine) -> Route:
        replica.sessions += 1
        self._all_replicas_out = False
        return Route(replica, reads, primary)

    async def _async_route(self) -> Route | None:
        """:meth:`_route` on the running loop's engines."""
        for replica in self._replica_order():
            await replica.async_check()
            if replica.state != REPLICA_OK:
                continue
            engine = replica.manager.async_engine
            try:
                async with engine.connect():
                    pass
            except Exception as error:
                replica.mark_down(error)
                continue
            return self._chosen(replica, engine.sync_engine, self._loop_engine().engine.sync_engine)
        _on_primary_instead(self)
        return None

    def replica_status(self, *, check: bool = False) -> list[ReplicaStatus]:
        """Each replica's state, lag and connections; ``check`` reads the lags now."""
        for replica in self._replicas if check else ():
            replica.check(force=True)
        return [replica.status() for replica in self._replicas]

    async def async_replica_status(self, *, check: bool = False) -> list[ReplicaStatus]:
        """:meth:`replica_status` on the running loop."""
        for replica in self._replicas if check else ():
            await replica.async_check(force=True)
        return [replica.status() for replica in self._replicas]

    def _typed(self, error: BaseException, ending: _Ending) -> DatabaseError | None:
        """``error`` as the package's own, naming this server; None if it is not a database's."""
        if not isinstance(error, Exception):
            return None  # cancellation, KeyboardInterrupt: not ours to change
        url = self.urls.sync_url
        where = (None, None) if self.urls.is_sqlite else (url.host, url.port or 5432)
        translated = translate(error, where=where)
        if translated is None:
            return None
        if isinstance(translated, DatabaseUnavailableError):
            # Lost during COMMIT, the outcome is unknown: not safe to run again.
            reason, retryable = translated.reason, translated.retryable and not ending.at_commit
            if not retryable and OUTCOME_UNKNOWN not in reason:
                reason += OUTCOME_UNKNOWN
            translated = self._unavailable(reason, retryable=retryable)
        if isinstance(translated, StaleDataError) and translated.key is None:
            table = translated.table or "?"
            keys = ending.writing.get(table, [])
            translated = StaleDataError(table, keys[0] if len(keys) == 1 else None)
        return translated

    # -- schema ------------------------------------------------------------------

    async def create_tables(self) -> None:
        """Create every table that does not exist (use migrations in production)."""
        with translate_errors("schema"):
            async with self.async_engine.begin() as connection:
                await connection.run_sync(Base.metadata.create_all)

    async def drop_tables(self) -> None:
        with translate_errors("schema"):
            async with self.async_engine.begin() as connection:
                await connection.run_sync(Base.metadata.drop_all)

    def create_tables_sync(self) -> None:
        with translate_errors("schema"):
            Base.metadata.create_all(self.engine)

    def drop_tables_sync(self) -> None:
        with translate_errors("schema"):
            Base.metadata.drop_all(self.engine)

    # -- health ------------------------------------------------------------------

    async def health_check(self) -> HealthStatus:
        """Round-trip ``SELECT 1``; never raises for an unreachable database."""
        started = time.perf_counter()
        try:
            async with self.async_engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as error:
            replicas = tuple(await self.async_replica_status(check=True))
            return HealthStatus(False, self.backend, self.urls.safe(), None, str(error), replicas)
        elapsed = (time.perf_counter() - started) * 1000
        replicas = tuple(await self.async_replica_status(check=True))
        return HealthStatus(True, self.backend, self.urls.safe(), elapsed, None, replicas)

    def check_health(self) -> HealthStatus:
        """The sync counterpart of :meth:`health_check`."""
        started = time.perf_counter()
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as error:
            replicas = tuple(self.replica_status(check=True))
            return HealthStatus(False, self.backend, self.urls.safe(), None, str(error), replicas)
        elapsed = (time.perf_counter() - started) * 1000
        replicas = tuple(self.replica_status(check=True))
        return HealthStatus(True, self.backend, self.urls.safe(), elapsed, None, replicas)

    # -- closing -----------------------------------------------------------------

    def check_connection(self) -> bool:
        """Whether the database answers; never raises.

        Alias of ``check_health().ok``, the name BuffetBot's examples use.
        """
        return self.check_health().ok

    async def async_check_connection(self) -> bool:
        """Alias of ``(await health_check()).ok``, the name BuffetBot's examples use."""
        return (await self.health_check()).ok

    async def aclose(self) -> None:
        """Close every pooled connection, awaiting those of the running loop."""
        running = asyncio.get_running_loop()
        for slot in self._take_slots():
            if slot.loop is running:
                await slot.dispose()
                self._drop(slot)
            else:
                self._close_elsewhere(slot, running)
        self._close_sync()
        for replica in self._replicas:
            await replica.manager.aclose()

    def close(self) -> None:
        """Close every pooled connection; safe inside or outside an event loop.

        Inside the engine's running loop the async connections are terminated
        without awaiting (nothing else can run while this returns); outside it
        they are closed gracefully on their loop.
        """
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for slot in self._take_slots():
            if slot.loop is running and not slot.disposed:
                slot.terminate()
                self._drop(slot)
            else:
                self._close_elsewhere(slot, running)
        self._close_sync()
        for replica in self._replicas:
            replica.manager.close()

    def _take_slots(self) -> list[_LoopEngine]:
        with self._lock:
            return list(self._loops.values())

    def _close_elsewhere(
        self, slot: _LoopEngine, running: asyncio.AbstractEventLoop | None
    ) -> None:
        """Close an engine that belongs to another loop than the running one (if any)."""
        loop = slot.loop
        slot.connections.retired = True  # those in use close as they come back
        if loop.is_closed():
            self._abandon(slot)
        elif slot.disposed:
            self._drop(slot)
        elif loop.is_running():  # another thread's loop: close it there
            future = asyncio.run_coroutine_threadsafe(slot.dispose(), loop)
            with contextlib.suppress(Exception):
                future.result(timeout=self.settings.pool_timeout)
            self._drop(slot)
        elif running is None:
            loop.run_until_complete(slot.dispose())
            self._drop(slot)
        else:
            slot.disposed = True
            slot.engine.sync_engine.dispose(close=False)
            self._drop(slot)

    def _close_sync(self) -> None:
        self._budget.remove_reclaimer(self)  # until an engine is made again
        with self._lock:
            engine, self._engine, self._sessions = self._engine, None, None
            tracked, self._sync_connections = self._sync_connections, None
        if tracked is not None:
            tracked.retired = True  # those in use close as they come back
        if engine is not None:
            engine.dispose()
        self._release()  # an in-memory database goes with its last connection


PGBOUNCER_PORT = 6432  # PgBouncer's default port: DB_PGBOUNCER unset means on there


def _unique_statement_name() -> str:
    return f"__buffetbot_{uuid.uuid4().hex}__"


_TIMER = "database.query_started"
_CHECKED_OUT = "database.checked_out"  # pool record info: counted as checked out
_IDLE_SINCE = "database.idle_since"  # pool record info: time.monotonic() of its last checkin


def _replica_failed(route: Route | None, typed: DatabaseError | None) -> None:
    """A readonly session lost its replica: skip that replica until its next check."""
    if route is not None and not route.on_primary and isinstance(typed, DatabaseUnavailableError):
        route.replica.mark_down(typed)


def _on_primary_instead(manager: DatabaseManager) -> None:
    """No replica is usable: say so once (until one is again), then read from the primary."""
    if not manager._all_replicas_out:
        manager._all_replicas_out = True
        logger.warning(
            "no replica of %s is usable (%s): readonly sessions run on the primary",
            manager.urls.safe(),
            ", ".join(f"{r.url}: {r.state}" for r in manager._replicas),
        )


def _terminator(dialect: Dialect, loop: asyncio.AbstractEventLoop) -> Callable[[Any], None]:
    """Close a loop's connection at once, but only from within that loop."""

    def terminate(connection: Any) -> None:
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is loop:
                dialect.do_terminate(connection)

    return terminate


@contextlib.contextmanager
def _engine_options_checked() -> Iterator[None]:
    """An option ``create_engine`` refuses (unknown, or not for this pool) is a
    ConfigurationError, as a bad setting is; so is a driver that is not installed."""
    try:
        yield
    except (TypeError, ArgumentError) as error:
        raise ConfigurationError(f"engine options refused: {first_line(error)}") from error
    except ModuleNotFoundError as error:
        extra = _DRIVER_EXTRAS.get((error.name or "").partition(".")[0])
        if extra is None:
            raise
        raise ConfigurationError(
            f"this database needs the {error.name!r} driver: install this package with its"
            f" {extra} extra, pip install '<path or git URL of buffetbot-database>[{extra}]'"
        ) from error


# Drivers that come with an extra of this package, not with the package itself.
_DRIVER_EXTRAS = {"asyncpg": "postgresql", "psycopg": "postgresql"}


def _start_timer(conn: Connection, *_: Any) -> None:
    conn.info.setdefault(_TIMER, []).append(time.perf_counter())


def _raise(error: BaseException, typed: DatabaseError | None) -> NoReturn:
    """Raise the typed error with the original as its cause, or the original itself.

    When a repository already translated it, the cause is the driver's error.
    """
    if typed is None or typed is error:
        raise error
    cause = error.__cause__ if isinstance(error, DatabaseError) and error.__cause__ else error
    raise typed from cause


@dataclass
class _Ending:
    """How far a session block got: the body, its last flush (and what that wrote), COMMIT."""

    writing: dict[str, list[Any]] = field(default_factory=dict)
    at_commit: bool = False

    def flushing(self, session: Session) -> None:
        self.writing = _written_keys(session)

    def committing(self) -> None:
        self.at_commit = True


def _finish(session: Session, ending: _Ending) -> None:
    """The end of a successful session block: flush, commit, close (an async
    session's work, run in SQLAlchemy's greenlet)."""
    ending.flushing(session)
    session.flush()
    ending.committing()
    session.commit()
    session.close()


def _written_keys(session: Session) -> dict[str, list[Any]]:
    """The keys of the changed and deleted rows a flush is about to write, by table.

    Read before the flush: a stale write can then name its row (SQLAlchemy's
    error names only the table, and a failed flush forgets what it was writing).
    """
    keys: dict[str, list[Any]] = {}
    for instance in (*session.dirty, *session.deleted):
        identity = inspect(instance).identity
        if identity is not None:
            table = getattr(instance, "__tablename__", "")
            keys.setdefault(table, []).append(identity[0] if len(identity) == 1 else identity)
    return keys


async def _quietly(rollback: Awaitable[None]) -> None:
    """Roll back after an error; a second failure (the connection is gone) is not news."""
    try:
        await rollback
    except Exception as error:
        logger.debug("rollback after an error failed too: %s", error)


def _quietly_sync(rollback: Callable[[], None]) -> None:
    try:
        rollback()
    except Exception as error:
        logger.debug("rollback after an error failed too: %s", error)
