"""Password hashing with argon2id (argon2-cffi's recommended parameters)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from database.exceptions import ValidationError
from database.validation import exact_str

MIN_PASSWORD_LENGTH = 8
_hasher = PasswordHasher()
# Verified against when the user does not exist, so that a wrong e-mail and a
# wrong password take the same time.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def check_password_type(password: object) -> str:
    """A password must be a str that UTF-8 can encode (the value is never echoed back)."""
    if not isinstance(password, str):
        raise ValidationError("password", "***", "must be a string")
    password = exact_str(password)  # a subclass's own methods never run
    try:
        password.encode()
    except UnicodeEncodeError:
        raise ValidationError("password", "***", "must not contain unpaired surrogates") from None
    return password


def hash_password(password: str) -> str:
    password = check_password_type(password)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(
            "password", "***", f"must be a string of at least {MIN_PASSWORD_LENGTH} characters"
        )
    return _hasher.hash(password)


def verify_password(hashed: str | None, password: str) -> bool:
    password = check_password_type(password)
    try:
        return _hasher.verify(hashed or _DUMMY_HASH, password) and hashed is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(hashed: str) -> bool:
    return _hasher.check_needs_rehash(hashed)
