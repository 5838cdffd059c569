"""User accounts: look-ups, sign-up with a hashed password, authentication."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from database import security
from database.models import User
from database.models.base import utcnow
from database.repositories.base import BaseRepository


class UserRepository(BaseRepository[User]):
    def __init__(self) -> None:
        super().__init__(User)

    def get_by_email(self, session: Session, email: str) -> User | None:
        return self.get_one_by_criteria(session, email=email)

    async def async_get_by_email(self, session: AsyncSession, email: str) -> User | None:
        return await self.async_get_one_by_criteria(session, email=email)

    def get_by_username(self, session: Session, username: str) -> User | None:
        return self.get_one_by_criteria(session, username=username)

    async def async_get_by_username(self, session: AsyncSession, username: str) -> User | None:
        return await self.async_get_one_by_criteria(session, username=username)

    # -- sign-up and sign-in ------------------------------------------------------

    def create_user(self, session: Session, *, password: str, **values: Any) -> User:
        """Create a user from a plain password, stored only as an argon2id hash."""
        return self.create(session, hashed_password=security.hash_password(password), **values)

    async def async_create_user(
        self, session: AsyncSession, *, password: str, **values: Any
    ) -> User:
        return await self.async_create(
            session, hashed_password=security.hash_password(password), **values
        )

    @staticmethod
    def _login_statement(login: str) -> Select[User]:
        login = login.strip()
        return select(User).where(
            or_(User.email == login.lower(), User.username == login), User.is_active.is_(True)
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
        with self._translating():
            user = session.scalars(self._login_statement(login)).first()
        return self._check(user, password)

    async def async_authenticate(
        self, session: AsyncSession, login: str, password: str
    ) -> User | None:
        with self._translating():
            user = (await session.scalars(self._login_statement(login))).first()
        return self._check(user, password)

    def record_login(self, session: Session, user: User) -> User:
        return self.update(session, user, last_login_at=utcnow())

    async def async_record_login(self, session: AsyncSession, user: User) -> User:
        return await self.async_update(session, user, last_login_at=utcnow())
