"""Reads through the bare driver, inside the session's transaction, for the hot paths.

SQLAlchemy's result processing costs more than the query itself for a 5,000-row
frame or a single cache hit; these helpers send one fixed statement (written
with ``?`` placeholders) through whichever driver the session uses. Under
``AsyncSession.run_sync`` the async drivers' calls are awaited with ``await_``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.util import await_

_PLACEHOLDER = re.compile(r"\?")


def fetch_all(session: Session, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (``?`` placeholders) as tuples, on the session's connection."""
    connection = session.connection()
    driver = connection.connection.driver_connection
    name = connection.dialect.driver
    if name == "asyncpg":
        numbers = itertools.count(1)
        query = _PLACEHOLDER.sub(lambda _: f"${next(numbers)}", sql)
        return [tuple(row) for row in await_(driver.fetch(query, *params))]  # type: ignore[union-attr]
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
