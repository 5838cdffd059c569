"""A downgrade that would destroy rows refuses, unless forced.

Each revision's ``downgrade()`` names the rows it would destroy and calls
:func:`refuse_data_loss` before touching anything. Forcing is
``alembic -x force=true downgrade ...``, ``database.migrate.downgrade(...,
force=True)`` or ``buffetbot-db downgrade --force``. The refusal is raised
inside the migration transaction, so a refused downgrade changes nothing, even
several steps down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa
from alembic import context, op

from database.exceptions import ConfigurationError, DataLossError

log = logging.getLogger(__name__)

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


@dataclass(frozen=True)
class Rows:
    """Rows a downgrade destroys: a whole table, or those whose ``column`` equals ``value``."""

    table: str
    column: str | None = None
    value: str | None = None

    def count(self) -> sa.Select[int]:
        query = sa.select(sa.func.count()).select_from(sa.table(self.table))
        if self.column is not None:
            query = query.where(sa.column(self.column) == self.value)
        return query

    def describe(self, count: int | None) -> str:
        """``"12 rows of market_data_cache with data_type 'file_cache'"``; no number if None."""
        which = f" with {self.column} {self.value!r}" if self.column is not None else ""
        number = "" if count is None else f"{count} "
        return f"{number}{'row' if count == 1 else 'rows'} of {self.table}{which}"


def is_forced() -> bool:
    """Whether this run may destroy rows (``-x force=...`` or ``attributes["force"]``)."""
    if context.config.attributes.get("force"):
        return True
    value = context.get_x_argument(as_dictionary=True).get("force", "").strip().lower()
    if value not in (*_TRUE, *_FALSE):
        raise ConfigurationError(f"-x force={value!r}: expected true or false")
    return value in _TRUE


def refuse_data_loss(revision: str, *doomed: Rows) -> None:
    """Raise :class:`DataLossError` if any of ``doomed`` exists, unless forced."""
    forced = is_forced()
    if context.is_offline_mode():
        if not forced:
            raise DataLossError(revision, [(rows, None) for rows in doomed])
        return
    bind = op.get_bind()
    counts = ((rows, bind.scalar(rows.count()) or 0) for rows in doomed)
    losses = [(rows, count) for rows, count in counts if count]
    if not losses:
        return
    if not forced:
        raise DataLossError(revision, losses)
    what = ", ".join(rows.describe(count) for rows, count in losses)
    log.warning("downgrading %s (forced): destroying %s", revision, what)
