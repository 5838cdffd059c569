"""Reads through the bare driver, inside the session's transaction, for the hot paths.

SQLAlchemy's result processing costs more than the query itself for a 5,000-row
frame or a single cache hit; these helpers send one fixed statement (written
with ``?`` placeholders) through whichever driver the session uses. Under
``AsyncSession.run_sync`` the async drivers' calls are awaited with ``await_``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.util import await_

from database.exceptions import DatabaseUnavailableError

_PLACEHOLDER = re.compile(r"\?")
_DRIVER = "database.raw.driver"  # session.info key: (transaction, driver connection, driver name)


def fetch_all(session: Session, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (``?`` placeholders) as tuples, on the session's connection."""
    connection = session.connection()
    driver = connection.connection.driver_connection
    name = connection.dialect.driver
    if name == "asyncpg":
        return [tuple(row) for row in await_(driver.fetch(_numbered(sql), *params))]  # type: ignore[union-attr]
    if name == "psycopg":
        with driver.cursor() as cursor:  # type: ignore[union-attr]
            cursor.execute(sql.replace("?", "%s"), params)
            return list(cursor.fetchall())
    if name == "aiosqlite":
        cursor = await_(driver.execute(sql, params))  # type: ignore[union-attr]
        rows = await_(cursor.fetchall())
        await_(cursor.close())
        return list(rows)
    return list(driver.execute(sql, params).fetchall())  # type: ignore[union-attr]


async def async_fetch_all(
    session: AsyncSession, sql: str, params: Sequence[Any]
) -> list[tuple[Any, ...]]:
    """:func:`fetch_all` for an AsyncSession, awaiting the async driver directly.

    The driver connection is remembered for the session's current transaction
    (it cannot change within one), which saves two greenlet round trips a call.
    """
    transaction = session.sync_session.get_transaction()
    remembered = session.info.get(_DRIVER)
    if transaction is not None and remembered is not None and remembered[0] is transaction:
        driver, name = remembered[1], remembered[2]
    else:
        connection = await session.connection()
        driver = (await connection.get_raw_connection()).driver_connection
        name = connection.dialect.driver
        session.info[_DRIVER] = (session.sync_session.get_transaction(), driver, name)
    if name == "asyncpg":
        return [tuple(row) for row in await driver.fetch(_numbered(sql), *params)]
    async with driver.execute(sql, params) as cursor:
        return list(await cursor.fetchall())


@functools.lru_cache(maxsize=64)
def _numbered(sql: str) -> str:
    """``?`` placeholders as asyncpg's ``$1, $2, ...``."""
    numbers = itertools.count(1)
    return _PLACEHOLDER.sub(lambda _: f"${next(numbers)}", sql)


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
