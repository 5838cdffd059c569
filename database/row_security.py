"""PostgreSQL's row-level security: the second wall around user-owned rows.

With ``DB_ROW_SECURITY=on``, every transaction of a session that is not a
system session starts with one statement that takes the role
``buffetbot_user`` and names the acting user, both ``LOCAL`` to the
transaction (so nothing outlives it on a pooled connection)::

    SELECT set_config('role', 'buffetbot_user', true), set_config('app.user_id', '<id>', true)

The policies of migration 0004 then limit that role to the user's portfolios,
positions and analysis results, whatever SQL the session runs; a session
opened for no user sees none of them. A system session
(``get_session(system=True)``) keeps the login role and sees every row.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import Connection, event, text
from sqlalchemy.orm import Session, SessionTransaction

from database.exceptions import ConfigurationError
from database.ownership import ACTING_USER, SYSTEM, WALL

log = logging.getLogger(__name__)

ROLE = "buffetbot_user"
_ENTER = text("SELECT set_config('role', :role, true), set_config('app.user_id', :user_id, true)")
# The tables the role works on (migration 0004 grants them), and the walled ones.
DATA_TABLES = (
    "users",
    "portfolios",
    "positions",
    "analysis_results",
    "price_history",
    "options_data",
    "market_data_cache",
)
WALLED_TABLES = DATA_TABLES[:4]
_READY = text(
    "SELECT"
    " (SELECT count(*) FROM pg_class WHERE relrowsecurity"
    "  AND oid IN (SELECT to_regclass(t) FROM unnest(CAST(:walled AS text[])) t)),"
    " r.oid IS NOT NULL,"
    " r.oid IS NOT NULL AND pg_has_role(current_user, r.oid, 'MEMBER'),"
    " r.oid IS NOT NULL AND has_schema_privilege(r.oid, current_schema(), 'USAGE') AND"
    " (SELECT bool_and(has_table_privilege(r.oid, t, 'SELECT, INSERT, UPDATE, DELETE'))"
    "  FROM unnest(CAST(:tables AS text[])) t) "
    "FROM (SELECT 1) AS one LEFT JOIN pg_roles r ON r.rolname = :role"
)
# What an administrator runs when the migrating role could not (no CREATEROLE).
ADMIN_SQL = (
    f"CREATE ROLE {ROLE} NOLOGIN; GRANT USAGE ON SCHEMA <schema> TO {ROLE}; "
    f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(DATA_TABLES)} TO {ROLE}; "
    f"GRANT {ROLE} TO <the application's role>"
)


class RowSecurity:
    """One manager's wall: checks once that the database has it, then enters it per transaction."""

    def __init__(self, database: str) -> None:
        self.database = database
        self._ready = False
        self._lock = threading.Lock()

    def enter(self, connection: Connection, user: Any) -> None:
        if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            raise autocommit_refused()
        if not self._ready:
            self._check(connection)
        connection.execute(_ENTER, {"role": ROLE, "user_id": "" if user is None else str(user)})

    def _check(self, connection: Connection) -> None:
        with self._lock:
            if self._ready:
                return
            walled, role_exists, member, granted = connection.execute(
                _READY, {"role": ROLE, "walled": list(WALLED_TABLES), "tables": list(DATA_TABLES)}
            ).one()
            if walled != len(WALLED_TABLES):
                raise ConfigurationError(
                    f"DB_ROW_SECURITY=on, but {self.database} has no row-level security "
                    "policies: run `buffetbot-db upgrade` (migration 0004)"
                )
            if not (role_exists and member and granted):
                missing = "the role" if not role_exists else "its grants"
                raise ConfigurationError(
                    f"DB_ROW_SECURITY=on, but {ROLE} is not set up ({missing}; the migrating "
                    f"role may not create or grant it): as an administrator, run {ADMIN_SQL}"
                )
            self._ready = True


def share_temporary_table(session: Session, table: str) -> None:
    """Let the wall's role use a temporary table a system session made (or found).

    A temporary table belongs to the role that created it and lives as long as
    the pooled connection; a later transaction on that connection may take the
    role ``buffetbot_user``, which needs the table too.
    """
    if session.info.get(WALL) is not None and session.info.get(SYSTEM):
        session.execute(text(f"GRANT ALL ON TABLE pg_temp.{table} TO {ROLE}"))


def autocommit_refused() -> ConfigurationError:
    return ConfigurationError(
        "DB_ROW_SECURITY=on needs transactions: under AUTOCOMMIT the role and the "
        "user would last one statement only; use system=True for work that needs it"
    )


@event.listens_for(Session, "after_begin")
def _enter_wall(session: Session, _transaction: SessionTransaction, connection: Connection) -> None:
    wall: RowSecurity | None = session.info.get(WALL)
    if wall is not None and not session.info.get(SYSTEM):
        wall.enter(connection, session.info.get(ACTING_USER))
