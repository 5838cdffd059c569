"""Password hashes never reach the SQL log, whatever ``DB_ECHO`` says (issue 8, item 4).

Each test signs a user up, authenticates (once through the rehash of an
outdated hash) and reads the user back, on both backends and in both forms,
with the log of ``sqlalchemy.engine`` captured.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import text

from database import DatabaseManager, security
from database.exceptions import DuplicateError
from database.redaction import REDACTED
from database.repositories import UserRepository
from tests.conftest import RawSQL
from tests.integration.conftest import UnitOfWork

users = UserRepository()

PASSWORD = "correct horse battery"
EMAIL = "alice@example.com"
HIDDEN = "[SQL parameters hidden due to hide_parameters=True]"
# A hash made with weaker parameters than security's: authenticating rehashes it.
OUTDATED_HASH = PasswordHasher(time_cost=1, memory_cost=8192).hash(PASSWORD)


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def echo_manager(database_url: str, echo: bool | str) -> DatabaseManager:
    """A manager with ``DB_ECHO`` set as a user sets it (needs the redaction wiring in
    connection.py: ``engine_log_options`` and ``install``)."""
    return DatabaseManager(database_url, echo=echo, pool_size=2, max_overflow=2)


@pytest.fixture
def echoing(database_url: str, mode: str) -> Iterator[Any]:
    managers: list[DatabaseManager] = []

    def make(echo: bool | str) -> UnitOfWork:
        managers.append(echo_manager(database_url, echo))
        return UnitOfWork(managers[-1], mode)

    yield make
    for manager in managers:
        manager.close()


def sql_log(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("sqlalchemy.engine")
    )


async def sign_up_sign_in_and_read(uow: UnitOfWork, sql: RawSQL) -> list[str]:
    """The scenario of every test; returns every hash the users table held."""
    created = await uow(users.create_user, email=EMAIL, username="alice", password=PASSWORD)
    assert (await uow(users.authenticate, EMAIL, PASSWORD)).id == created.id
    assert (await uow(users.get_by_id, created.id)).email == EMAIL
    assert (await uow(users.get_by_email, EMAIL)).id == created.id

    outdated = await uow(
        users.create, email="bob@example.com", username="bob", hashed_password=OUTDATED_HASH
    )
    assert (await uow(users.authenticate, "bob", PASSWORD)).id == outdated.id  # rehashes
    hashes = [row[0] for row in sql.rows("SELECT hashed_password FROM users")]
    assert OUTDATED_HASH not in hashes, "the rehash path did not run"
    # What the driver received is the real hash: the log's copies are redacted, not the values.
    assert all(security.verify_password(h, PASSWORD) for h in hashes)
    return [*hashes, OUTDATED_HASH]


def parameter_lines(log: str) -> list[str]:
    """The parameter records: ``[generated in 0.001s] (...)``, ``[cached since ...] ...``."""
    return [line for line in log.splitlines() if line.startswith("[")]


def row_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("Row ")]


def assert_no_secret(log: str, hashes: list[str]) -> None:
    assert PASSWORD not in log
    assert "$argon2" not in log
    for hashed in hashes:
        assert hashed not in log
        assert hashed.rsplit("$", 1)[-1] not in log  # not even the digest alone


async def test_echo_off_logs_nothing(
    echoing: Any, sql: RawSQL, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # the root logger: only DB_ECHO switches the SQL log on
    await sign_up_sign_in_and_read(echoing(False), sql)
    assert sql_log(caplog) == ""


async def test_echo_off_keeps_secrets_out_when_the_app_turns_the_sql_log_on(
    echoing: Any, sql: RawSQL, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")
    hashes = await sign_up_sign_in_and_read(echoing(False), sql)
    log = sql_log(caplog)
    assert "INSERT INTO users" in log
    assert parameter_lines(log)
    assert all(HIDDEN in line for line in parameter_lines(log))
    user_rows = [row for row in row_lines(log) if "@example.com" in row]
    assert user_rows
    assert all(REDACTED in row for row in user_rows)
    assert_no_secret(log, hashes)


async def test_echo_true_logs_statements_without_parameters(
    echoing: Any, sql: RawSQL, caplog: pytest.LogCaptureFixture
) -> None:
    hashes = await sign_up_sign_in_and_read(echoing(True), sql)
    log = sql_log(caplog)
    assert "INSERT INTO users" in log
    assert "UPDATE users SET hashed_password" in log
    assert parameter_lines(log)
    assert all(HIDDEN in line for line in parameter_lines(log))
    assert EMAIL not in log  # no parameter of any kind
    assert "bob" not in log
    assert not row_lines(log)  # rows are for debug
    assert_no_secret(log, hashes)


async def test_echo_debug_logs_parameters_and_rows_with_hashes_redacted(
    echoing: Any, sql: RawSQL, caplog: pytest.LogCaptureFixture
) -> None:
    hashes = await sign_up_sign_in_and_read(echoing("debug"), sql)
    log = sql_log(caplog)
    assert HIDDEN not in log
    assert EMAIL in log  # the other parameters are shown
    inserts = [line for line in parameter_lines(log) if "'alice'" in line]
    assert inserts
    assert all(REDACTED in line for line in inserts)  # the INSERT's hash
    user_rows = [row for row in row_lines(log) if "@example.com" in row]
    assert user_rows
    assert all(REDACTED in row for row in user_rows)
    rehash = parameter_lines(log.split("UPDATE users SET hashed_password", 1)[1])[0]
    assert REDACTED in rehash
    assert_no_secret(log, hashes)


async def test_echo_debug_keeps_the_hash_out_of_errors(
    echoing: Any, sql: RawSQL, caplog: pytest.LogCaptureFixture
) -> None:
    uow = echoing("debug")
    await uow(users.create_user, email=EMAIL, username="alice", password=PASSWORD)
    with pytest.raises(DuplicateError) as caught:
        await uow(users.create_user, email=EMAIL, username="alice2", password=PASSWORD)
    hashes = [row[0] for row in sql.rows("SELECT hashed_password FROM users")]
    chain: list[BaseException] = []
    error: BaseException | None = caught.value
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert any(REDACTED in str(e) for e in chain)  # SQLAlchemy's message shows the parameters
    assert_no_secret("\n".join([sql_log(caplog), *(str(e) for e in chain)]), hashes)


# -- the whole row, as JSON or as a record, in one value -----------------------------------

WHOLE_ROW_QUERIES = {
    "postgresql": [
        "SELECT row_to_json(u) FROM users u",  # a dict: the hash under its column's key
        "SELECT u FROM users u",  # a record: text (psycopg) or a Record (asyncpg)
    ],
    "sqlite": ["SELECT json_object('h', hashed_password) FROM users"],  # JSON text
}


async def run_text(uow: UnitOfWork, query: str) -> list[Any]:
    """The rows of a text query, in a session of the form under test."""
    if uow.mode == "sync":
        with uow.db.get_session() as session:
            return list(session.execute(text(query)).all())
    async with uow.db.get_async_session() as session:
        return list((await session.execute(text(query))).all())


@pytest.mark.parametrize(
    ("echo", "app_debug"), [("debug", False), (True, False), (False, True)], ids=str
)
async def test_a_whole_row_in_one_value_keeps_the_hash_out_of_the_log(
    echoing: Any,
    sql: RawSQL,
    caplog: pytest.LogCaptureFixture,
    backend: str,
    echo: bool | str,
    app_debug: bool,
) -> None:
    if app_debug:  # the app's own DEBUG logging, the SQL log and the drivers' included
        caplog.set_level(logging.DEBUG)
        caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")
    uow = echoing(echo)
    await uow(users.create_user, email=EMAIL, username="alice", password=PASSWORD)
    hashes = [row[0] for row in sql.rows("SELECT hashed_password FROM users")]
    # aiosqlite logs each cursor call with its parameters: the INSERT's hash among them.
    assert_no_secret("\n".join(record.getMessage() for record in caplog.records), hashes)
    caplog.clear()
    for query in WHOLE_ROW_QUERIES[backend]:
        rows = await run_text(uow, query)
        assert hashes[0] in repr([tuple(row) for row in rows])  # the app gets the hash itself
    log = "\n".join(record.getMessage() for record in caplog.records)
    if echo is not True:
        shown = [row for row in row_lines(log) if "alice" in row or REDACTED in row]
        assert len(shown) == len(WHOLE_ROW_QUERIES[backend])
        assert all(REDACTED in row for row in shown)
        if backend == "postgresql":
            assert any("alice@example.com" in row for row in shown)  # just the hash replaced
    assert_no_secret(log, hashes)
