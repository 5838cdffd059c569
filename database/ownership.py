"""Who a session acts for: the user whose portfolios it may see and change.

Portfolios, their positions and their analysis results belong to a user. A
repository call that reads or changes them scopes its SQL to the *acting user*:
the ``user_id=`` it is given, and the user the session was opened for
(``get_database_session(user_id=...)``). When both are set they must agree,
else nothing matches. A session opened for no user and given no ``user_id`` is
trusted code (a script, a migration, the maintenance commands) and is not
scoped by the repositories; with ``DB_ROW_SECURITY=on`` PostgreSQL then shows
it no user-owned rows at all, unless it was opened as ``system=True``.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from database.exceptions import ValidationError
from database.validation import to_uuid

ACTING_USER = "buffetbot.acting_user"
SYSTEM = "buffetbot.system"
WALL = "buffetbot.row_security"  # set on the sessions of a manager with DB_ROW_SECURITY=on


def bind(info: dict[Any, Any], *, user_id: Any = None, system: bool = False) -> None:
    """Record in a new session's ``info`` whom it acts for."""
    if not isinstance(system, bool):
        raise ValidationError("system", system, "must be True or False")
    if system and user_id is not None:
        raise ValidationError(
            "user_id", user_id, "a system session acts for every user, not for one"
        )
    if user_id is not None:
        info[ACTING_USER] = to_uuid(user_id, "user_id")
    if system:
        info[SYSTEM] = True


def session_user(session: Session | AsyncSession) -> uuid.UUID | None:
    """The user the session was opened for, if any."""
    user: uuid.UUID | None = session.info.get(ACTING_USER)
    return user


def is_system(session: Session | AsyncSession) -> bool:
    return bool(session.info.get(SYSTEM))


def acting_users(session: Session | AsyncSession, user_id: Any) -> list[uuid.UUID]:
    """Every user a call must be scoped to: none (trusted code), one, or two that must agree."""
    users: list[uuid.UUID] = []
    if (bound := session_user(session)) is not None:
        users.append(bound)
    elif user_id is not None and session.info.get(WALL) and not is_system(session):
        # PostgreSQL already shows this session no user's rows: the call would
        # find nothing, so say why instead.
        raise ValidationError(
            "user_id",
            user_id,
            "with DB_ROW_SECURITY=on, open the session for the user "
            "(get_session(user_id=...)): a session for no user sees no user's rows",
        )
    if user_id is not None:
        given = to_uuid(user_id, "user_id")
        if given not in users:
            users.append(given)
    return users
