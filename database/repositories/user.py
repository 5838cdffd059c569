"""User accounts: look-ups, sign-up with a hashed password, authentication."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from database import security
from database.exceptions import ValidationError
from database.models import User
from database.models.base import utcnow
from database.repositories.base import BaseRepository
from database.repositories.twins import async_form
from database.validation import to_text


def _hashed(password: Any, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the hash of ``password``; a hash passed in as well is refused."""
    if "hashed_password" in values:
        raise ValidationError("hashed_password", "***", "is set from password=, not passed in")
    return {**values, "hashed_password": security.hash_password(password)}


class UserRepository(BaseRepository[User]):
    """Accounts. A session opened for a user reaches that user's own account only;
    sign-up and sign-in run in a session opened for no one."""

    _scoped = True

    def __init__(self) -> None:
        super().__init__(User)

    def _owned_by(self, user: uuid.UUID, *, writing: bool = False) -> ColumnElement[bool]:
        return User.id == user

    def _owned_new(self, user: uuid.UUID, instance: User) -> Select[Any] | bool:
        return False  # a user's session does not open accounts

    def _refuse(self, instance: User) -> None:
        raise ValidationError(
            "user_id", "***", "a session acting for a user cannot create other accounts"
        )

    def get_by_email(self, session: Session, email: str) -> User | None:
        return self.get_one_by_criteria(session, email=email)

    async_get_by_email = async_form(get_by_email)

    def get_by_username(self, session: Session, username: str) -> User | None:
        return self.get_one_by_criteria(session, username=username)

    async_get_by_username = async_form(get_by_username)

    # -- sign-up and sign-in ------------------------------------------------------

    def create_user(self, session: Session, /, *, password: str, **values: Any) -> User:
        """Create a user from a plain password, stored only as an argon2id hash."""
        return self.create(session, **_hashed(password, values))

    async_create_user = async_form(create_user)

    def set_password(self, session: Session, user_or_id: User | Any, password: str) -> User:
        """Replace a user's password (stored as its argon2id hash).

        The only way to change ``hashed_password``: ``update()`` refuses it.
        """
        hashed = security.hash_password(password)
        user = self._owned_instance(session, user_or_id, None)  # an id or a copy: one check
        with self._writing(user):
            self._attach(session, user)
            user.hashed_password = hashed
            session.flush()
        return user

    async_set_password = async_form(set_password)

    def _login_statement(
        self, session: Session | AsyncSession, login: Any, password: Any
    ) -> Select[User]:
        # Checked before any SQL: PostgreSQL would refuse a NUL, SQLite not.
        login = to_text(login, "login", max_length=320).strip()
        security.check_password_type(password)
        return select(User).where(
            or_(User.email == login.lower(), User.username == login),
            User.is_active.is_(True),
            *self._scope(session, None),  # a user's session checks its own password only
        )

    @staticmethod
    def _check(user: User | None, password: str) -> User | None:
        if not security.verify_password(user.hashed_password if user else None, password):
            return None
        assert user is not None
        if security.needs_rehash(user.hashed_password):
            user.hashed_password = security.hash_password(password)
        return user

    def authenticate(self, session: Session, login: str, password: str) -> User | None:
        """The active user with this e-mail or username and password, else None."""
        statement = self._login_statement(session, login, password)
        with self._translating():
            user = session.scalars(statement).first()
        return self._check(user, password)

    async_authenticate = async_form(authenticate)

    def record_login(self, session: Session, user: User) -> User:
        return self.update(session, user, last_login_at=utcnow())

    async_record_login = async_form(record_login)
