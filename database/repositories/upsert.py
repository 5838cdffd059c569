"""Native ``INSERT ... ON CONFLICT`` for the two supported backends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert

from database.models.base import Base


def dialect_name(session: Session | AsyncSession) -> str:
    return session.get_bind().dialect.name


def native_insert(dialect: str, model: type[Base]) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can take ``ON CONFLICT`` clauses on ``dialect``."""
    if dialect == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


def upsert_statement(
    dialect: str,
    model: type[Base],
    values: dict[str, Any] | Sequence[dict[str, Any]],
    *,
    conflict: Sequence[str],
    update: Sequence[str],
) -> Insert:
    """INSERT the values; on a conflict over ``conflict`` overwrite the ``update`` columns."""
    statement = native_insert(dialect, model).values(values)
    return statement.on_conflict_do_update(
        index_elements=list(conflict),
        set_={name: statement.excluded[name] for name in update},
    )
