"""Read replicas: readonly sessions read from a streaming standby, writes go to the primary.

``DB_REPLICA_URLS`` names the standbys. A session opened with ``readonly=True``
reads from one of them (round robin) in a read-only transaction. The moment it
writes (an ORM flush, an INSERT/UPDATE/DELETE statement, a locking SELECT, a
repository's bulk write, or :func:`use_primary`), it moves to the primary for
the rest of its life, so it reads its own writes. Every other session runs on
the primary.

A replica's lag is read from ``pg_last_xact_replay_timestamp()`` at most every
``DB_REPLICA_CHECK_INTERVAL_S`` seconds, by the session that finds the last
reading too old (the others use that reading meanwhile). A replica more than
``DB_REPLICA_MAX_LAG_S`` behind, or one that cannot be reached, is skipped with
a warning; with none left, readonly sessions run on the primary.
"""

from __future__ import annotations

import asyncio
import logging
import select
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, Select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import UpdateBase

from database.exceptions import first_line

if TYPE_CHECKING:
    from sqlalchemy.sql import ClauseElement

    from database.connection import DatabaseManager

logger = logging.getLogger(__name__)

ROUTE = "database.route"  # session.info: the readonly session's Route

# How far behind the primary, in seconds: 0 once the standby has replayed all the
# WAL the primary had written when the check began (:target, read there first;
# an idle primary writes nothing, and its last commit only grows old), else the
# age of the last commit it replayed; NULL if none was replayed yet. Without a
# reading from the primary (unreachable), 0 while all WAL received is replayed
# (after a restart streaming resumes at the start of a segment, so the received
# position may trail the replayed one). A standby cut off from its primary
# falls behind the primary's position as soon as the primary writes. A server
# not in recovery (a promoted standby) is never behind.
LAG_SQL = text(
    "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0"
    " WHEN CAST(CAST(:target AS text) AS pg_lsn) IS NOT NULL"
    " THEN CASE WHEN pg_last_wal_replay_lsn() >= CAST(CAST(:target AS text) AS pg_lsn) THEN 0"
    " ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) END"
    " WHEN pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0"
    " ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) END"
)
PRIMARY_LSN_SQL = text("SELECT pg_current_wal_lsn()::text")

OK, LAGGING, DOWN, UNCHECKED = "ok", "lagging", "down", "unchecked"

# A reading over the limit is taken again after this long. The standby may have
# been caught in the moment between receiving WAL that holds no commit (a
# checkpoint's record) and replaying it: the lag then reads as the age of the
# last commit, however old. A standby really behind is still behind.
_SECOND_LOOK_S = 0.05


@dataclass
class Route:
    """Where a readonly session's statements go: its replica, until it writes."""

    replica: Replica
    reads: Engine  # the replica's engine (read-only transactions)
    primary: Engine
    on_primary: bool = False


def _writes(clause: ClauseElement | None) -> bool:
    if isinstance(clause, UpdateBase):
        return True
    return isinstance(clause, Select) and clause._for_update_arg is not None


class RoutedSession(Session):
    """The Session class of every manager: a readonly session's reads go to its
    replica; its first write, and everything after it, to the primary."""

    def get_bind(
        self, mapper: Any = None, *, clause: ClauseElement | None = None, **kw: Any
    ) -> Engine | Connection:
        route: Route | None = self.info.get(ROUTE)
        if route is None:
            return super().get_bind(mapper, clause=clause, **kw)
        if not route.on_primary and (self._flushing or _writes(clause)):
            route.on_primary = True
        return route.primary if route.on_primary else route.reads


def use_primary(session: Session | AsyncSession) -> None:
    """Run the rest of a readonly session on the primary: call it before raw SQL
    (``text()``) that writes, which the session cannot tell from a read."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    route: Route | None = sync.info.get(ROUTE)
    if route is not None:
        route.on_primary = True


@dataclass(frozen=True)
class ReplicaStatus:
    """One replica as ``health`` and ``stats`` show it."""

    url: str
    state: str  # ok, lagging, down, unchecked
    lag_s: float | None  # seconds behind the primary at the last check
    checked_s_ago: float | None
    error: str | None
    sessions: int  # readonly sessions it served
    open_connections: int
    connection_budget: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "state": self.state,
            "lag_s": self.lag_s,
            "checked_s_ago": self.checked_s_ago,
            "error": self.error,
            "sessions": self.sessions,
            "open_connections": self.open_connections,
            "connection_budget": self.connection_budget,
        }


class Replica:
    """A standby, its own manager (engines, pools and connection budget), and its lag."""

    def __init__(
        self,
        manager: DatabaseManager,
        primary: DatabaseManager,
        max_lag_s: float,
        interval_s: float,
    ) -> None:
        self.manager = manager
        self.primary = primary
        self.max_lag_s = max_lag_s
        self.interval_s = interval_s
        self.state = UNCHECKED
        self.lag_s: float | None = None
        self.error: str | None = None
        self.checked_at: float | None = None
        self.sessions = 0
        self._checking = threading.Lock()

    @property
    def url(self) -> str:
        return self.manager.urls.safe()

    def _due(self) -> bool:
        return self.checked_at is None or time.monotonic() - self.checked_at >= self.interval_s

    def _record(self, lag: Any, error: BaseException | None) -> None:
        previous = self.state
        self.checked_at = time.monotonic()
        self.lag_s = None if lag is None else float(lag)
        self.error = None if error is None else first_line(error)
        if error is not None:
            self.state = DOWN
        elif self.lag_s is None or self.lag_s > self.max_lag_s:
            self.state = LAGGING
        else:
            self.state = OK
        if self.state == previous:
            return
        if self.state == DOWN:
            logger.warning(
                "replica %s is down (%s): its readonly sessions go elsewhere", self.url, self.error
            )
        elif self.state == LAGGING:
            behind = "an unknown time" if self.lag_s is None else f"{self.lag_s:.1f} s"
            logger.warning(
                "replica %s is %s behind the primary (DB_REPLICA_MAX_LAG_S=%g): skipped",
                self.url,
                behind,
                self.max_lag_s,
            )
        elif previous != UNCHECKED:
            logger.info("replica %s is back (%.1f s behind)", self.url, self.lag_s or 0.0)

    def _primary_position(self) -> str | None:
        """The primary's WAL position now; None if it cannot be read (then the standby
        is judged by what it received)."""
        try:
            with self.primary.engine.connect() as connection:
                return connection.execute(PRIMARY_LSN_SQL).scalar()
        except Exception as error:
            logger.debug("primary's WAL position not read: %s", error)
            return None

    async def _async_primary_position(self) -> str | None:
        try:
            async with self.primary.async_engine.connect() as connection:
                return (await connection.execute(PRIMARY_LSN_SQL)).scalar()
        except Exception as error:
            logger.debug("primary's WAL position not read: %s", error)
            return None

    def _over(self, lag: Any) -> bool:
        return lag is None or float(lag) > self.max_lag_s

    def mark_down(self, error: BaseException) -> None:
        """Found unreachable while in use: skip it until the next check."""
        self._record(None, error)

    def check(self, *, force: bool = False) -> None:
        """Read the lag now if the last reading is too old (or ``force``). A check
        running elsewhere is waited for only when there is no reading yet."""
        if not (force or self._due()):
            return
        # The first reading is waited for, but never on a thread that runs an event loop:
        # an async check of this loop may hold the lock across an await.
        wait = self.checked_at is None and not _in_event_loop()
        if not self._checking.acquire(blocking=wait, timeout=-1 if not wait else 30):
            return
        try:
            if not force and not self._due():
                return  # read by another thread while this one waited
            target = {"target": self._primary_position()}
            with self.manager.engine.connect() as connection:
                lag = connection.execute(LAG_SQL, target).scalar()
                if self._over(lag):
                    time.sleep(_SECOND_LOOK_S)
                    lag = connection.execute(LAG_SQL, target).scalar()
        except Exception as error:
            self._record(None, error)
        else:
            self._record(lag, None)
        finally:
            self._checking.release()

    async def async_check(self, *, force: bool = False) -> None:
        """:meth:`check` on the running loop's engine."""
        if not (force or self._due()):
            return
        while not self._checking.acquire(blocking=False):
            if self.checked_at is not None:
                return  # use the last reading meanwhile
            await asyncio.sleep(0.005)  # the first reading is on its way
        try:
            if not force and not self._due():
                return
            target = {"target": await self._async_primary_position()}
            async with self.manager.async_engine.connect() as connection:
                lag = (await connection.execute(LAG_SQL, target)).scalar()
                if self._over(lag):
                    await asyncio.sleep(_SECOND_LOOK_S)
                    lag = (await connection.execute(LAG_SQL, target)).scalar()
        except Exception as error:
            self._record(None, error)
        else:
            self._record(lag, None)
        finally:
            self._checking.release()

    def status(self) -> ReplicaStatus:
        ago = None if self.checked_at is None else round(time.monotonic() - self.checked_at, 3)
        return ReplicaStatus(
            self.url,
            self.state,
            None if self.lag_s is None else round(self.lag_s, 3),
            ago,
            self.error,
            self.sessions,
            self.manager.open_connections,
            self.manager.connection_budget,
        )


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def socket_closed(dbapi_connection: Any) -> bool:
    """Whether an idle pooled connection's server has hung up: its socket is readable
    (an idle connection is sent nothing but a shutdown's FATAL and EOF). No round trip."""
    fileno = getattr(dbapi_connection, "fileno", None)  # psycopg
    if fileno is None:  # asyncpg, through SQLAlchemy's adapter
        driver = getattr(dbapi_connection, "_connection", None)
        if driver is None:
            return False
        if driver.is_closed():
            return True
        transport = getattr(driver, "_transport", None)
        sock = None if transport is None else transport.get_extra_info("socket")
        fileno = None if sock is None else sock.fileno
    if fileno is None:
        return False
    try:
        readable, _, _ = select.select([fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
