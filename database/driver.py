"""Everything below SQLAlchemy: the four drivers' fast paths, and the values they send.

The repositories say *what* to store or load; this module alone says *how*, on
psycopg and asyncpg (PostgreSQL) and sqlite3 and aiosqlite (SQLite):

- :func:`fetch_all` / :func:`async_fetch_all`: one fixed statement (written with
  ``?`` placeholders) through the bare driver, inside the session's
  transaction. SQLAlchemy's result processing costs more than the query itself
  for a 5,000-row frame or a single cache hit. A :class:`Read` is such a
  statement with what to make of its rows, written once and run by
  :func:`run_read` or, awaiting the driver with no greenlet trip of its own,
  :func:`async_run_read`.
- :func:`write_rows` / :func:`async_write_rows`: rows into a table, ``COPY`` on
  PostgreSQL and ``executemany`` on SQLite; :func:`execute_many`: any statement
  once per row.
- :func:`row_encoder`: the values those rows carry, from each column's own type
  (its bind processing, exactly what the ORM sends), so a bulk path stores what
  the ORM stores and cannot drift from it when a column changes;
  :class:`ColumnRows` holds many rows as columns and makes each row only as the
  driver takes it;
  :func:`row_decoder` the other way, for rows read through the bare driver.
  :func:`storage_scale` is the integer unit of an exact-decimal column's
  vectorised paths (millionths for ``NUMERIC(18, 6)``), read from the same type.

Under ``AsyncSession.run_sync`` the async drivers' calls are awaited with
``await_``; :func:`async_fetch_all` and :func:`async_write_rows` await them directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from sqlalchemy import ColumnElement, Connection, Dialect, FromClause, Numeric
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.util import await_, greenlet_spawn

from database.exceptions import DatabaseUnavailableError
from database.replicas import ROUTE
from database.types import ExactDecimal

_PLACEHOLDER = re.compile(r"\?")
_NUMERIC_OID = 1700
_DRIVER = "database.driver.connection"  # session.info key: (transaction, _driver_of's triple)

Row = Sequence[Any]
R = TypeVar("R")


class ColumnRows(Sequence[tuple[Any, ...]]):
    """Rows held as columns (equal-length lists), then ``constants`` repeated in every row.

    Iterating makes each row as it is asked for, through one ``zip``: a driver's
    ``executemany`` or ``COPY`` is done with a row before taking the next, so
    ``zip`` reuses one tuple and a million rows never exist as a million tuples
    (building them all first costs about as much as SQLite's inserting them).
    """

    __slots__ = ("_columns", "_constants", "_length")

    def __init__(
        self, columns: Sequence[Sequence[Any]], length: int, constants: tuple[Any, ...] = ()
    ) -> None:
        if any(len(column) != length for column in columns):
            raise ValueError("every column must hold one value per row")
        self._columns = columns
        self._constants = constants
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        repeated = [itertools.repeat(value, self._length) for value in self._constants]
        if not self._columns and not repeated:
            return iter([()] * self._length)
        return zip(*self._columns, *repeated, strict=True)

    @overload
    def __getitem__(self, index: int) -> tuple[Any, ...]: ...

    @overload
    def __getitem__(self, index: slice) -> list[tuple[Any, ...]]: ...

    def __getitem__(self, index: int | slice) -> tuple[Any, ...] | list[tuple[Any, ...]]:
        if isinstance(index, slice):
            return [self[position] for position in range(*index.indices(self._length))]
        if not -self._length <= index < self._length:
            raise IndexError("row index out of range")
        return (*(column[index] for column in self._columns), *self._constants)


# -- reading -----------------------------------------------------------------------------


def fetch_all(session: Session, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (``?`` placeholders) as tuples, on the session's connection."""
    connection, driver, name = _driver_of(session)
    with _invalidated_if_lost(connection, driver, name):
        if name == "asyncpg":  # an AsyncSession's work under run_sync
            return [tuple(row) for row in await_(driver.fetch(_numbered(sql), *params))]
        if name == "psycopg":
            with driver.cursor() as cursor:
                cursor.execute(sql.replace("?", "%s"), params)
                return list(cursor.fetchall())
        if name == "aiosqlite":
            cursor = await_(driver.execute(sql, params))
            rows = await_(cursor.fetchall())
            await_(cursor.close())
            return list(rows)
        return list(driver.execute(sql, params).fetchall())


async def async_fetch_all(
    session: AsyncSession, sql: str, params: Sequence[Any]
) -> list[tuple[Any, ...]]:
    """:func:`fetch_all` for an AsyncSession, awaiting the async driver directly."""
    connection, driver, name = await _async_driver_of(session)
    async with _async_invalidated_if_lost(connection, driver, name):
        if name == "asyncpg":
            return [tuple(row) for row in await driver.fetch(_numbered(sql), *params)]
        async with driver.execute(sql, params) as cursor:
            return list(await cursor.fetchall())


@dataclass(frozen=True)
class Read(Generic[R]):
    """A point read: one fixed statement (``?`` placeholders), its parameters, and what
    to make of the rows it returns. Built once by a repository (checking its input
    before any SQL), then run on either kind of session."""

    sql: str
    params: Sequence[Any]
    result: Callable[[list[tuple[Any, ...]]], R]


def run_read(session: Session, read: Read[R]) -> R:
    """``read`` on the session's connection."""
    return read.result(fetch_all(session, read.sql, read.params))


async def async_run_read(session: AsyncSession, read: Read[R]) -> R:
    """``read`` on an AsyncSession: the driver awaited directly on the event loop, so
    the read costs no greenlet trip beyond the transaction's first (its connection)."""
    return read.result(await async_fetch_all(session, read.sql, read.params))


# -- writing -----------------------------------------------------------------------------


def write_rows(session: Session, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
    """Send ``rows`` (values in ``columns`` order, as the driver takes them) into ``table``:
    ``COPY`` on PostgreSQL, one ``executemany`` on SQLite; in the session's transaction."""
    if not rows:
        return
    connection, driver, name = _driver_of(session)
    names = ", ".join(columns)
    with _invalidated_if_lost(connection, driver, name):
        if name == "asyncpg":
            await_(copy_records(driver, table, rows, list(columns)))
        elif name == "psycopg":
            copying = f"COPY {table} ({names}) FROM STDIN"
            with driver.cursor() as cursor, cursor.copy(copying) as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            execute_many(session, _insert_sql(table, tuple(columns)), rows)


def execute_many(session: Session, sql: str, rows: Sequence[Row]) -> None:
    """Run one statement (``?`` placeholders) once per row through the bare driver's
    ``executemany``, in the session's transaction."""
    if not rows:
        return
    connection, driver, name = _driver_of(session)
    with _invalidated_if_lost(connection, driver, name):
        if name == "asyncpg":
            await_(driver.executemany(_numbered(sql), rows))
        elif name == "psycopg":
            with driver.cursor() as cursor:
                cursor.executemany(sql.replace("?", "%s"), rows)
        elif name == "aiosqlite":
            await_(driver.executemany(sql, rows))
        else:
            driver.executemany(sql, rows)


async def async_write_rows(
    session: AsyncSession, table: str, columns: Sequence[str], rows: Sequence[Row]
) -> None:
    """:func:`write_rows` for an AsyncSession, awaiting the async driver directly."""
    if not rows:
        return
    connection, driver, name = await _async_driver_of(session)
    async with _async_invalidated_if_lost(connection, driver, name):
        if name == "asyncpg":
            await copy_records(driver, table, rows, list(columns))
        else:
            await driver.executemany(_insert_sql(table, tuple(columns)), rows)


async def copy_records(driver: Any, table: str, records: Sequence[Any], columns: list[str]) -> None:
    """asyncpg's ``copy_records_to_table``, failing (rather than hanging) if the connection dies.

    asyncpg waits for the socket to drain between chunks of a COPY, and a
    connection lost while the socket is full never wakes that wait: the COPY
    would hang forever. Its termination listener does fire, so the COPY is
    raced against it.
    """
    loop = asyncio.get_running_loop()
    lost: asyncio.Future[None] = loop.create_future()

    def on_lost(_connection: Any) -> None:
        if not lost.done():
            lost.set_result(None)

    driver.add_termination_listener(on_lost)
    copy = asyncio.ensure_future(
        driver.copy_records_to_table(table, records=records, columns=columns)
    )
    try:
        await asyncio.wait({copy, lost}, return_when=asyncio.FIRST_COMPLETED)
        if copy.done():
            copy.result()
            return
        copy.cancel()
        with contextlib.suppress(BaseException):
            await copy
        reason = f"the connection was closed in the middle of COPY to {table}"
        raise DatabaseUnavailableError(None, None, reason)
    finally:
        if not copy.done():
            copy.cancel()
        driver.remove_termination_listener(on_lost)


# -- storage values ----------------------------------------------------------------------


def column_encoder(column: ColumnElement[Any], dialect: Dialect) -> Callable[[Any], Any]:
    """The value ``column`` stores for a model value on ``dialect``: its type's own bind
    processing (a TypeDecorator's ``process_bind_param``, then its implementation's),
    which is what the ORM sends for it."""
    processor = column.type.dialect_impl(dialect).bind_processor(dialect)
    return processor if processor is not None else _unchanged


def row_encoder(
    table: FromClause, columns: Sequence[str], dialect: Dialect
) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A function from a mapping of model values to the driver row for ``columns``
    (a missing key is NULL)."""
    encoders = [(name, column_encoder(table.c[name], dialect)) for name in columns]

    def encode(values: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(
            None if (value := values.get(name)) is None else encode_value(value)
            for name, encode_value in encoders
        )

    return encode


def encode_rows(
    table: FromClause, columns: Sequence[str], dialect: Dialect, values: Iterable[Mapping[str, Any]]
) -> list[tuple[Any, ...]]:
    """Driver rows for many mappings of model values (see :func:`row_encoder`)."""
    encode = row_encoder(table, columns, dialect)
    return [encode(item) for item in values]


@functools.lru_cache(maxsize=64)
def row_decoder(
    table: FromClause, columns: tuple[str, ...], dialect: Dialect
) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """A function from a driver row (values in ``columns`` order) to a mapping of model
    values: each column's type's own result processing, what the ORM applies to it."""
    decoders = [(name, column_decoder(table.c[name], dialect)) for name in columns]

    def decode(row: Sequence[Any]) -> dict[str, Any]:
        return {
            name: None if value is None else decode_value(value)
            for (name, decode_value), value in zip(decoders, row, strict=True)
        }

    return decode


def column_decoder(column: ColumnElement[Any], dialect: Dialect) -> Callable[[Any], Any]:
    """The model value of a value ``column`` stores, as the driver returns it: its
    type's own result processing (the reverse of :func:`column_encoder`)."""
    column_type = column.type.dialect_impl(dialect)
    # The driver's type code, which only numeric processing looks at: PostgreSQL's
    # NUMERIC (OID 1700) for an exact decimal, as the cursor reports it.
    numeric = dialect.name == "postgresql" and column_type._type_affinity is Numeric
    processor = column_type.result_processor(dialect, _NUMERIC_OID if numeric else None)
    return processor if processor is not None else _unchanged


def storage_scale(column: ColumnElement[Any]) -> int:
    """The decimal places of an exact-decimal column: its value times ``10**scale`` is the
    integer that SQLite stores and that the vectorised bulk paths stage."""
    column_type = column.type
    if not isinstance(column_type, ExactDecimal):
        raise TypeError(f"{column.key} is not an ExactDecimal column")
    return column_type.scale


# -- the session's driver connection -----------------------------------------------------


def _driver_of(session: Session) -> tuple[Connection, Any, str]:
    """The session's connection (begun), its driver connection and the driver's name.

    On asyncpg, SQLAlchemy's adapter sends BEGIN only with its first statement. A
    bare read before that runs on its own; under READ COMMITTED (each statement
    its own snapshot) that is the same as inside the transaction, and saves the
    BEGIN and COMMIT round trips. Under a snapshot isolation level (REPEATABLE
    READ, SERIALIZABLE) the transaction's snapshot must include the read, so the
    transaction is begun first, by SQLAlchemy.
    """
    connection = session.connection()
    driver: Any = connection.connection.driver_connection
    name = connection.dialect.driver
    if name == "asyncpg" and not driver.is_in_transaction() and _snapshot_isolation(connection):
        connection.exec_driver_sql("SELECT 1")  # the adapter's BEGIN (with its isolation)
    return connection, driver, name


def _snapshot_isolation(connection: Connection) -> bool:
    level = connection.get_execution_options().get("isolation_level")
    level = level or connection.default_isolation_level or ""
    return str(level).upper().replace("_", " ") in ("REPEATABLE READ", "SERIALIZABLE")


async def _async_driver_of(session: AsyncSession) -> tuple[Connection, Any, str]:
    """:func:`_driver_of`, remembered for the session's current transaction (it cannot
    change within one), which saves two greenlet round trips a call."""
    transaction = session.sync_session.get_transaction()
    # A readonly session that wrote has moved to the primary: another connection.
    where = _on_primary(session.sync_session)
    remembered = session.info.get(_DRIVER)
    if (
        transaction is not None
        and remembered is not None
        and remembered[0] is transaction
        and remembered[1] == where
    ):
        return remembered[2]  # type: ignore[no-any-return]
    found = await greenlet_spawn(_driver_of, session.sync_session)  # one switch, not two
    session.info[_DRIVER] = (session.sync_session.get_transaction(), where, found)
    return found


def _on_primary(session: Session) -> bool | None:
    """Where a readonly session runs now (None: not a readonly session on replicas)."""
    route = session.info.get(ROUTE)
    return None if route is None else bool(route.on_primary)


def _lost(driver: Any, name: str) -> bool:
    """Whether the driver connection is gone (closed by the server, the network, a kill)."""
    if name == "asyncpg":
        return bool(driver.is_closed())
    if name == "psycopg":
        return bool(driver.closed or driver.broken)
    return False  # SQLite: a file, no connection to lose


@contextlib.contextmanager
def _invalidated_if_lost(connection: Connection, driver: Any, name: str) -> Iterator[None]:
    """On an error that left the driver connection closed, invalidate the SQLAlchemy
    connection, as SQLAlchemy does for its own statements: the pool then discards
    it rather than handing the dead connection to the next session, and the
    session's rollback does not try to use it."""
    try:
        yield
    except Exception as error:
        if _lost(driver, name):
            connection.invalidate(error)
        raise


@contextlib.asynccontextmanager
async def _async_invalidated_if_lost(
    connection: Connection, driver: Any, name: str
) -> AsyncIterator[None]:
    """:func:`_invalidated_if_lost` around awaited driver calls (the invalidation runs
    in SQLAlchemy's greenlet: closing an async driver connection is awaited)."""
    try:
        yield
    except Exception as error:
        if _lost(driver, name):
            await greenlet_spawn(connection.invalidate, error)
        raise


@functools.lru_cache(maxsize=64)
def _numbered(sql: str) -> str:
    """``?`` placeholders as asyncpg's ``$1, $2, ...``."""
    numbers = itertools.count(1)
    return _PLACEHOLDER.sub(lambda _: f"${next(numbers)}", sql)


@functools.lru_cache(maxsize=64)
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    placeholders = ", ".join("?" * len(columns))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"


def _unchanged(value: Any) -> Any:
    return value
