"""Settings and URL mapping, without a database."""

from __future__ import annotations

import re
from typing import Any

import pytest

from database import DatabaseManager
from database.config import DatabaseSettings, driver_urls
from database.exceptions import ConfigurationError

SERVER_VARIABLES = ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD", "DATABASE_URL")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        *SERVER_VARIABLES,
        "DB_ECHO",
        "DB_POOL_SIZE",
        "DB_MAX_OVERFLOW",
        "DB_POOL_PING_AFTER",
        "DB_PGBOUNCER",
        "DB_STATEMENT_TIMEOUT_MS",
    ):
        monkeypatch.delenv(name, raising=False)


def test_no_settings_means_the_embedded_sqlite_file() -> None:
    url = DatabaseSettings.from_env().url()
    assert url.get_backend_name() == "sqlite"
    assert url.database == "buffetbot.db"


def test_db_variables_build_a_postgresql_url_with_documented_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DB_HOST", "db.internal")
    url = DatabaseSettings.from_env().url()
    assert (url.host, url.port, url.database, url.username, url.password) == (
        "db.internal",
        5432,
        "buffetbot",
        "postgres",
        "postgres",
    )


def test_database_url_wins_over_db_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "ignored")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:pw@primary:6543/prod")
    manager = DatabaseManager()
    assert manager.urls.sync_url.host == "primary"
    assert manager.urls.async_url.port == 6543


@pytest.mark.parametrize(
    ("given", "async_driver", "sync_driver"),
    [
        ("postgresql://u:p@h/db", "postgresql+asyncpg", "postgresql+psycopg"),
        ("postgres://u:p@h/db", "postgresql+asyncpg", "postgresql+psycopg"),
        ("postgresql+psycopg2://u:p@h/db", "postgresql+asyncpg", "postgresql+psycopg"),
        ("postgresql+asyncpg://u:p@h/db", "postgresql+asyncpg", "postgresql+psycopg"),
        ("sqlite:///file.db", "sqlite+aiosqlite", "sqlite+pysqlite"),
        ("sqlite+aiosqlite:///file.db", "sqlite+aiosqlite", "sqlite+pysqlite"),
    ],
)
def test_urls_map_to_the_async_and_sync_drivers(
    given: str, async_driver: str, sync_driver: str
) -> None:
    urls = driver_urls(given)
    assert urls.async_url.drivername == async_driver
    assert urls.sync_url.drivername == sync_driver


def uri_parts(uri: str) -> tuple[str, set[str]]:
    """The file name of a sqlite3 URI and the names of its query parameters."""
    name, _, query = uri.partition("?")
    return name, {pair.partition("=")[0] for pair in query.split("&")}


@pytest.mark.parametrize("given", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_sqlite_is_shared_between_the_sync_and_async_engines(given: str) -> None:
    urls = driver_urls(given)
    assert urls.in_memory
    assert urls.sync_url.query["mode"] == "memory"
    assert urls.sync_url.query["cache"] == "shared"
    assert urls.sync_url.database == urls.async_url.database
    assert uri_parts(urls.sqlite_uri()) == (urls.sync_url.database, {"cache", "mode"})


def test_each_anonymous_in_memory_database_has_its_own_name() -> None:
    assert driver_urls("sqlite://").sync_url.database != driver_urls("sqlite://").sync_url.database


def test_a_named_in_memory_database_gets_the_shared_cache() -> None:
    urls = driver_urls("sqlite:///file:mine?mode=memory&uri=true")
    assert urls.in_memory
    assert uri_parts(urls.sqlite_uri()) == ("file:mine", {"cache", "mode"})


def test_a_sqlite_file_is_not_in_memory() -> None:
    urls = driver_urls("sqlite:///file.db")
    assert not urls.in_memory
    assert urls.sqlite_uri() == "file.db"


def test_a_manager_knows_the_settings_it_was_made_from(monkeypatch: pytest.MonkeyPatch) -> None:
    engine: dict[str, Any] = {"connect_args": {"x": 1}}
    manager = DatabaseManager("sqlite:///a.db", pool_size=3, echo=True, **engine)
    assert manager.configured_as("sqlite:///a.db", pool_size=3, echo=True, **engine)
    assert not manager.configured_as("sqlite:///b.db", pool_size=3, echo=True, **engine)
    assert not manager.configured_as("sqlite:///a.db", pool_size=4, echo=True, **engine)
    assert not manager.configured_as("sqlite:///a.db", pool_size=3, echo=True)
    monkeypatch.setenv("DATABASE_URL", "sqlite:///a.db")
    assert DatabaseManager().configured_as()
    assert DatabaseManager().configured_as("sqlite:///a.db")
    monkeypatch.setenv("DB_POOL_SIZE", "9")  # the environment changed since
    assert not manager.configured_as("sqlite:///a.db", echo=True, **engine)


def test_sqlite_memory_managers_are_configured_by_the_url_as_given() -> None:
    manager = DatabaseManager("sqlite://")
    try:
        assert manager.configured_as("sqlite://")
        assert not manager.configured_as("sqlite:///:memory:")
    finally:
        manager.close()


def test_sslmode_is_spelled_for_asyncpg() -> None:
    urls = driver_urls("postgresql://u@h/db?sslmode=require")
    assert urls.async_url.query == {"ssl": "require"}
    assert urls.sync_url.query == {"sslmode": "require"}


@pytest.mark.parametrize("bad", ["mysql://u:secret@h/db", "not a url", "postgresql://u:secret@h"])
def test_bad_urls_are_configuration_errors_that_never_show_the_password(bad: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        DatabaseManager(bad)
    assert "secret" not in str(caught.value)


def test_a_bad_variable_is_named_with_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_PORT", "fifty")
    with pytest.raises(ConfigurationError, match=r"DB_PORT='fifty'"):
        DatabaseSettings.from_env()


def test_a_bad_password_variable_is_named_but_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "x" * 3)
    monkeypatch.setenv("DB_POOL_SIZE", "-1")
    with pytest.raises(ConfigurationError, match="DB_POOL_SIZE"):
        DatabaseSettings.from_env()


def test_pool_defaults_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = DatabaseSettings.from_env()
    assert (
        settings.pool_size,
        settings.max_overflow,
        settings.pool_pre_ping,
        settings.pool_recycle,
    ) == (
        20,
        30,
        True,
        3600,
    )
    monkeypatch.setenv("DB_POOL_SIZE", "7")
    monkeypatch.setenv("DB_ECHO", "true")
    settings = DatabaseSettings.from_env()
    assert settings.pool_size == 7
    assert settings.echo is True


def test_reprs_hide_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_PASSWORD", "hunter2-secret")
    settings = DatabaseSettings.from_env()
    manager = DatabaseManager(settings=settings)
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in repr(manager)
    assert "***" in repr(manager)


def test_db_echo_takes_debug_in_any_case_and_names_its_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DB_ECHO", "DEBUG")
    assert DatabaseSettings.from_env().echo == "debug"
    monkeypatch.setenv("DB_ECHO", "loud")
    with pytest.raises(ConfigurationError) as caught:
        DatabaseSettings.from_env()
    assert str(caught.value) == "DB_ECHO='loud': must be true, false or debug"


def test_an_at_sign_inside_a_password_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigurationError) as raised:
        DatabaseManager("postgresql://app:pre@TOPSECRET@127.0.0.1:5432/buffetbot")
    assert "%40" in str(raised.value)
    assert "TOPSECRET" not in str(raised.value)
    encoded = DatabaseManager("postgresql://app:pre%40TOPSECRET@127.0.0.1:5432/buffetbot")
    assert encoded.urls.sync_url.password == "pre@TOPSECRET"
    assert encoded.urls.sync_url.host == "127.0.0.1"
    encoded.close()


def test_pool_ping_after_defaults_to_five_seconds_and_takes_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert DatabaseSettings.from_env().pool_ping_after == 5.0
    monkeypatch.setenv("DB_POOL_PING_AFTER", "0")
    assert DatabaseSettings.from_env().pool_ping_after == 0
    monkeypatch.setenv("DB_POOL_PING_AFTER", "0.25")
    assert DatabaseSettings.from_env().pool_ping_after == 0.25


@pytest.mark.parametrize("bad", ["-1", "soon", "nan", "inf"])
def test_a_bad_pool_ping_after_is_named_with_its_value(
    bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_POOL_PING_AFTER", bad)
    with pytest.raises(ConfigurationError, match=rf"DB_POOL_PING_AFTER='{bad}'"):
        DatabaseSettings.from_env()


def test_a_bad_pool_ping_after_option_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"DB_POOL_PING_AFTER=-0\.5"):
        DatabaseManager("sqlite:///a.db", pool_ping_after=-0.5)


@pytest.mark.parametrize(
    ("url", "variable", "behind"),
    [
        ("postgresql://u@pool.internal:6432/app", None, True),  # PgBouncer's own port
        ("postgresql://u@db.internal:5432/app", None, False),
        ("postgresql://u@db.internal/app", "auto", False),
        ("postgresql://u@pool.internal:6432/app", "AUTO", True),
        ("postgresql://u@db.internal:5432/app", "true", True),
        ("postgresql://u@pool.internal:6432/app", "false", False),
        ("sqlite:///app.db", "true", False),  # nothing to pool in front of SQLite
    ],
)
def test_db_pgbouncer_is_on_at_port_6432_unless_set(
    monkeypatch: pytest.MonkeyPatch, url: str, variable: str | None, behind: bool
) -> None:
    if variable is not None:
        monkeypatch.setenv("DB_PGBOUNCER", variable)
    assert DatabaseManager(url).behind_pgbouncer is behind


def test_behind_pgbouncer_neither_driver_prepares_nor_sends_start_up_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DB_STATEMENT_TIMEOUT_MS", "1500")
    direct = DatabaseManager("postgresql://u@db.internal/app")
    assert direct._connect_args(is_async=False)["options"] == "-c statement_timeout=1500"
    assert direct._connect_args(is_async=True)["server_settings"]["statement_timeout"] == "1500"
    bounced = DatabaseManager("postgresql://u@db.internal/app", pgbouncer=True)
    sync_args, async_args = bounced._connect_args(is_async=False), bounced._connect_args(True)
    assert sync_args["prepare_threshold"] is None
    assert "options" not in sync_args
    assert async_args["statement_cache_size"] == 0
    assert async_args["prepared_statement_cache_size"] == 0
    assert async_args["server_settings"] == {"application_name": "buffetbot"}
    names = {async_args["prepared_statement_name_func"]() for _ in range(100)}
    assert len(names) == 100  # unique, so no two clients' statements clash on a server


def test_a_bad_db_pgbouncer_is_named_with_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_PGBOUNCER", "sometimes")
    with pytest.raises(ConfigurationError, match=r"DB_PGBOUNCER='sometimes'.*true, false or auto"):
        DatabaseManager("postgresql://u@db.internal/app")


def test_options_over_given_settings_are_checked_like_the_environment() -> None:
    settings = DatabaseSettings()
    manager = DatabaseManager(
        "postgresql://u@db.internal/app",
        settings=settings,
        replica_urls=["postgresql://u@replica.internal/app"],
        pgbouncer="false",
    )
    assert manager.behind_pgbouncer is False
    assert [r.urls.sync_url.host for r in manager.replicas] == ["replica.internal"]
    for bad, named in (
        ({"replica_max_lag_s": -1}, "DB_REPLICA_MAX_LAG_S=-1"),
        ({"pgbouncer": "maybe"}, "DB_PGBOUNCER='maybe'"),
        ({"replica_urls": "postgresql://u:pw@[::1/db"}, "DB_REPLICA_URLS is not a valid"),
        ({"replica_urls": "postgresql://u:pw@h:port/db"}, "DB_REPLICA_URLS is not a valid"),
    ):
        with pytest.raises(ConfigurationError, match=re.escape(named)) as caught:
            DatabaseManager("postgresql://u@db.internal/app", settings=settings, **bad)
        assert "pw" not in str(caught.value)
