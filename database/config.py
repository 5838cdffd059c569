"""Settings read once from the environment, and the mapping of URLs to drivers.

``DATABASE_URL`` wins. Otherwise, if any of ``DB_HOST``, ``DB_PORT``,
``DB_NAME``, ``DB_USER`` or ``DB_PASSWORD`` is set, they build a PostgreSQL URL
(each with its documented default). With none of them set the package uses the
embedded SQLite database at ``DB_SQLITE_PATH`` (``buffetbot.db``).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import pydantic
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from database.exceptions import ConfigurationError

_SERVER_VARIABLES = ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD")

_ASYNC_DRIVERS = {"postgresql": "asyncpg", "sqlite": "aiosqlite"}
_SYNC_DRIVERS = {"postgresql": "psycopg", "sqlite": "pysqlite"}
# Query arguments of a SQLite URL that SQLAlchemy consumes rather than sqlite3's URI.
_SQLALCHEMY_SQLITE_ARGS = frozenset(
    {"uri", "timeout", "check_same_thread", "isolation_level", "detect_types", "cached_statements"}
)
_BACKEND_ALIASES = {"postgres": "postgresql", "postgresql": "postgresql", "sqlite": "sqlite"}


class DatabaseSettings(BaseSettings):
    """Every knob of the data layer; environment variables are ``DB_<NAME>``.

    Pooled connections (``pool_pre_ping``, ``pool_ping_after``): a connection taken
    from a pool is checked with a round trip (a "ping") when it has sat idle in
    the pool for ``pool_ping_after`` seconds or more (default 5; ``0`` pings at
    every checkout, SQLAlchemy's classic ``pool_pre_ping``); one that fails the
    ping is replaced by a new connection before the caller sees it. A connection
    used again sooner is not pinged: the next statement finds out if it died,
    and the session fails with a retryable ``DatabaseUnavailableError``.
    ``pool_pre_ping=false`` turns the checks off altogether.
    """

    model_config = SettingsConfigDict(env_prefix="DB_", extra="ignore", frozen=True)

    database_url: SecretStr | None = Field(default=None, validation_alias="DATABASE_URL")
    host: str = "localhost"
    port: int = Field(default=5432, ge=1, le=65535)
    name: str = "buffetbot"
    user: str = "postgres"
    password: SecretStr = SecretStr("postgres")
    sqlite_path: str = "buffetbot.db"
    # true: statements without parameters; "debug": parameters and rows, secrets redacted
    echo: bool | Literal["debug"] = False
    pool_size: int = Field(default=20, ge=1)
    max_overflow: int = Field(default=30, ge=0)
    pool_pre_ping: bool = True
    # Seconds idle in the pool before a checkout pings the connection (0: at every checkout).
    pool_ping_after: float = Field(default=5.0, ge=0, allow_inf_nan=False)
    pool_recycle: int = Field(default=3600, ge=-1)
    pool_timeout: float = Field(default=30.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    application_name: str = "buffetbot"
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0)
    slow_query_ms: float = Field(default=500.0, gt=0)
    statement_timeout_ms: int = Field(default=0, ge=0)  # 0: statements may run as long as they need
    # PostgreSQL row-level security on the user-owned tables (migration 0004).
    row_security: bool = False
    # PgBouncer in transaction pooling in front of PostgreSQL: no server-side prepared
    # statement outlives its transaction, no start-up setting but application_name.
    # None ("auto", the default): on when the URL's port is PgBouncer's own, 6432.
    pgbouncer: bool | None = None
    # Streaming standbys for readonly sessions (comma-separated PostgreSQL URLs).
    replica_urls: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    # A replica further behind the primary than this is skipped until it catches up.
    replica_max_lag_s: float = Field(default=5.0, ge=0, allow_inf_nan=False)
    # How often a replica's lag is read (by the session that finds the reading too old).
    replica_check_interval_s: float = Field(default=5.0, gt=0, allow_inf_nan=False)

    @pydantic.field_validator("replica_urls", mode="before")
    @classmethod
    def _replica_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, URL):
            return (value.render_as_string(hide_password=False),)
        if isinstance(value, (list, tuple)):
            return tuple(
                v.render_as_string(hide_password=False) if isinstance(v, URL) else v for v in value
            )
        return value

    @pydantic.field_validator("pgbouncer", mode="before")
    @classmethod
    def _pgbouncer(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "auto"):
            return None
        return value

    @pydantic.field_validator("echo", mode="before")
    @classmethod
    def _echo(cls, value: Any) -> Any:
        # DB_ECHO=DEBUG means debug, as true/TRUE mean true.
        return value.strip().lower() if isinstance(value, str) else value

    @classmethod
    def from_env(cls, **overrides: Any) -> DatabaseSettings:
        """Read the environment, naming the variable and value of a bad setting."""
        return cls._checked(lambda: cls(**overrides))

    def with_overrides(self, **overrides: Any) -> DatabaseSettings:
        """These settings with ``overrides``, checked as the environment's are."""
        data = {**self.model_dump(by_alias=True), **overrides}
        return self._checked(lambda: type(self).model_validate(data))

    @classmethod
    def _checked(cls, make: Any) -> DatabaseSettings:
        try:
            return make()  # type: ignore[no-any-return]
        except pydantic.ValidationError as error:
            problem = error.errors()[0]
            field = str(problem["loc"][0]) if problem["loc"] else "?"
            variable = "DATABASE_URL" if field == "DATABASE_URL" else f"DB_{field.upper()}"
            shown = "***" if "password" in field or "url" in field.lower() else problem["input"]
            reason = {
                "echo": "must be true, false or debug",
                "pgbouncer": "must be true, false or auto",
            }.get(field, problem["msg"])
            raise ConfigurationError(f"{variable}={shown!r}: {reason}") from None

    def url(self) -> URL:
        """The configured URL, as given (before mapping to drivers)."""
        if self.database_url is not None:
            return parse_url(self.database_url.get_secret_value())
        if any(variable in os.environ for variable in _SERVER_VARIABLES):
            return URL.create(
                "postgresql",
                username=self.user,
                password=self.password.get_secret_value(),
                host=self.host,
                port=self.port,
                database=self.name,
            )
        return URL.create("sqlite", database=self.sqlite_path)


@dataclass(frozen=True)
class DriverUrls:
    """One configured database, spelled for the async and the sync driver."""

    backend: str
    async_url: URL
    sync_url: URL

    @property
    def is_sqlite(self) -> bool:
        return self.backend == "sqlite"

    @property
    def in_memory(self) -> bool:
        """A shared-cache in-memory SQLite database (``sqlite://``, ``mode=memory``)."""
        return self.is_sqlite and self.sync_url.query.get("mode") == "memory"

    def sqlite_uri(self) -> str:
        """The ``file:`` URI that sqlite3 opens for this SQLite database."""
        query = {k: v for k, v in self.sync_url.query.items() if k not in _SQLALCHEMY_SQLITE_ARGS}
        database = self.sync_url.database or ""
        return f"{database}?{urlencode(query, doseq=True)}" if query else database

    def safe(self) -> str:
        """The URL with its password masked, for logs and reprs."""
        return self.sync_url.set(drivername=self.backend).render_as_string(hide_password=True)


def parse_url(text: str, source: str = "DATABASE_URL") -> URL:
    """Parse a URL without ever echoing its password in the error, which names
    ``source``: where the text came from (a variable, an argument, a flag)."""
    try:
        return make_url(text)
    except (ArgumentError, ValueError):  # ValueError: a bad port, an unclosed [ of IPv6
        raise ConfigurationError(
            f"{source} is not a valid database URL"
            " (expected postgresql://user:password@host/name or sqlite:///path/to/file.db)"
        ) from None


def driver_urls(url: str | URL) -> DriverUrls:
    """Map ``postgres://``, ``postgresql[+driver]://`` and ``sqlite[+driver]://`` URLs
    to asyncpg / psycopg 3 and aiosqlite / sqlite3."""
    parsed = parse_url(url, "the url argument") if isinstance(url, str) else url
    backend = _BACKEND_ALIASES.get(parsed.get_backend_name())
    if backend is None:
        raise ConfigurationError(
            f"unsupported database {parsed.get_backend_name()!r}: use postgresql:// or sqlite:///"
        )
    if backend == "postgresql":
        if "@" in (parsed.host or ""):
            # "user:p@ss@host": split at the first @, the rest of the password would
            # become the host name, and be shown in every connection error.
            raise ConfigurationError(
                "the database URL has an '@' after the user name and password:"
                " percent-encode an '@' inside the password as %40"
            )
        if not parsed.database:
            raise ConfigurationError(f"{parsed.render_as_string()} names no database")
        # asyncpg spells the psycopg ``sslmode`` query option ``ssl``.
        query = dict(parsed.query)
        async_query = {("ssl" if k == "sslmode" else k): v for k, v in query.items()}
        return DriverUrls(
            backend,
            parsed.set(drivername="postgresql+asyncpg", query=async_query),
            parsed.set(drivername="postgresql+psycopg"),
        )
    if parsed.database in (None, "", ":memory:"):
        # A private in-memory database that the sync and async engines share: a
        # named shared-cache URI (sqlite3 and aiosqlite are different connections).
        parsed = URL.create(
            "sqlite",
            database=f"file:buffetbot-{uuid.uuid4().hex}",
            query={"mode": "memory", "cache": "shared", "uri": "true"},
        )
    elif parsed.query.get("mode") == "memory":
        # A named in-memory database is shared between the pools' connections only
        # with the shared cache; without it each connection would see its own.
        parsed = parsed.update_query_dict({"cache": "shared", "uri": "true"})
    return DriverUrls(
        backend,
        parsed.set(drivername="sqlite+aiosqlite"),
        parsed.set(drivername="sqlite+pysqlite"),
    )
