"""User accounts."""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, false, true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from database import validation
from database.exceptions import ValidationError
from database.models.base import Base, Timestamps, UUIDPrimaryKey, Versioned, checked_validator
from database.types import JSONObject, LowerCaseString, UTCDateTime

if TYPE_CHECKING:
    from database.models.portfolio import Portfolio

_USERNAME = re.compile(r"^[A-Za-z0-9_.\-]{3,50}$")


class User(UUIDPrimaryKey, Timestamps, Versioned, Base):
    __tablename__ = "users"

    email: Mapped[str] = mapped_column(LowerCaseString(320), unique=True)
    username: Mapped[str] = mapped_column(String(50), unique=True)
    # Secret: never a criterion or an ordering, never changed through update();
    # set by UserRepository.create_user / set_password (and a rehash at login).
    hashed_password: Mapped[str] = mapped_column(String(255), info={"secret": True})
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    preferences: Mapped[dict[str, Any] | None] = mapped_column(JSONObject)
    is_active: Mapped[bool] = mapped_column(default=True, server_default=true())
    is_verified: Mapped[bool] = mapped_column(default=False, server_default=false())
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    portfolios: Mapped[list[Portfolio]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )

    @checked_validator("email")
    def _check_email(self, _key: str, value: Any) -> str:
        return validation.normalize_email(value)

    @checked_validator("username")
    def _check_username(self, _key: str, value: Any) -> str:
        name = validation.exact_str(value).strip() if isinstance(value, str) else None
        if name is None or not _USERNAME.fullmatch(name):
            raise ValidationError(
                "username", value, "must be 3-50 letters, digits, '.', '_' or '-'"
            )
        return name

    @checked_validator("preferences")
    def _check_preferences(self, _key: str, value: Any) -> dict[str, Any] | None:
        return validation.to_json_object(value, "preferences")

    def __repr__(self) -> str:
        # Never shows hashed_password.
        return f"<User {self.id} {self.username!r}>"
