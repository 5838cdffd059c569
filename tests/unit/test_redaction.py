"""The SQL log's redaction: parameters of every shape, rows and errors (issue 8, item 4).

The secret here, ``vault_token``, does not look like a password hash, so only the
column mark can hide it; hash-shaped values are tested on their own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    exc,
    insert,
    select,
    text,
    update,
)

from database import redaction
from database.models import User
from database.redaction import REDACTED, WITHHELD, Secrets, redact_parameters

metadata = MetaData()
vault = Table(
    "vault",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("label", String(50)),
    Column("vault_token", String(50), info={"secret": True}),
)
TOKENS = [f"tok-{n:04d}" for n in range(25)]

ARGON2 = "$argon2id$v=19$m=65536,t=3,p=4$czv1smxAYsLANsTs+s/58w$ZWnxZqAuzFVpjwzw4osw6CriD9nu+kEO"


def make_engine(echo: bool | str, **options: Any) -> Engine:
    engine = create_engine("sqlite://", **redaction.engine_log_options(echo), **options)
    redaction.install(engine, metadata)
    metadata.create_all(engine)
    return engine


@pytest.fixture(params=["qmark", "named"])
def debug_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """``DB_ECHO=debug`` on positional (``?``) and named (``:name``) parameters."""
    engine = make_engine("debug", paramstyle=request.param)
    yield engine
    engine.dispose()


def sql_log(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("sqlalchemy"))


def assert_no_token(log: str) -> None:
    leaked = [token for token in TOKENS if token in log]
    assert not leaked, f"{leaked} in the log"


# -- the engine options ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("echo", "hidden"), [(False, True), (True, True), ("debug", False)], ids=str
)
def test_parameters_are_hidden_unless_echo_is_debug(echo: bool | str, hidden: bool) -> None:
    assert redaction.engine_log_options(echo) == {"echo": echo, "hide_parameters": hidden}


def test_the_user_password_hash_is_a_secret_column() -> None:
    assert User.__table__.c.hashed_password.info.get("secret") is True


# -- values shaped like password hashes -------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        ARGON2,
        "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaA",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        "$2y$10$abcdefghijklmnopqrstuu",
        "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E",
        "$pbkdf2-sha256$29000$N2bMmZMyRmitVWrN2fs/Zw$vxkXFIbjBWvbcqPqJO9eu1A7OXc7EV7Vr9e2QiHfAbs",
        "pbkdf2_sha256$600000$salt$hash=",
        "scrypt:32768:8:1$salt$hexdigest",
        "pbkdf2:sha256:600000$salt$hexdigest",
        "$6$rounds=5000$salt$digest",
        ARGON2.encode(),
    ],
)
def test_password_hashes_are_recognised(value: str | bytes) -> None:
    assert redaction.looks_like_password_hash(value)
    assert redact_parameters((value, "x"), Secrets(), ismulti=False) == (REDACTED, "x")


@pytest.mark.parametrize(
    "value", ["$100", "price$", "a@example.com", "$ 2b$", "argon2", "", None, 42, b"$2"]
)
def test_ordinary_values_are_not_taken_for_hashes(value: object) -> None:
    assert not redaction.looks_like_password_hash(value)


# -- parameters of every shape ------------------------------------------------------------


@pytest.fixture
def known_secrets() -> None:
    """The secret columns of ``metadata`` are known (as ``install`` makes them)."""
    make_engine(False).dispose()


def test_positional_parameters_are_redacted_at_the_secret_positions() -> None:
    secrets = Secrets(positions=frozenset({2}), width=3)
    assert redact_parameters((1, "a", "tok-0000"), secrets, ismulti=False) == (1, "a", REDACTED)
    assert redact_parameters([1, "a", "tok-0000"], secrets, ismulti=False) == [1, "a", REDACTED]


def test_positions_are_not_trusted_for_parameters_of_another_length() -> None:
    secrets = Secrets(positions=frozenset({2}), width=3, values=frozenset({"tok-0001"}))
    # An insertmanyvalues batch: two rows flattened; the values still give the secrets away.
    flat = (1, "a", "tok-0000", 2, "b", "tok-0001")
    assert redact_parameters(flat, secrets, ismulti=False) == (1, "a", "tok-0000", 2, "b", REDACTED)


@pytest.mark.usefixtures("known_secrets")
@pytest.mark.parametrize(
    "name",
    ["vault_token", "vault_token_1", "vault_token_m0", "vault_token__3", "vault_vault_token"],
)
def test_named_parameters_of_a_secret_column_are_redacted(name: str) -> None:
    params = {"label": "a", name: "tok-0000"}
    assert redact_parameters(params, Secrets(), ismulti=False) == {"label": "a", name: REDACTED}


@pytest.mark.usefixtures("known_secrets")
def test_executemany_parameter_lists_are_redacted_in_every_set() -> None:
    positional = Secrets(positions=frozenset({1}), width=2)
    rows = [("a", "tok-0000"), ("b", "tok-0001")]
    assert redact_parameters(rows, positional, ismulti=True) == [("a", REDACTED), ("b", REDACTED)]
    named = [{"label": "a", "vault_token": "tok-0000"}, {"label": "b", "vault_token": "x"}]
    assert redact_parameters(named, Secrets(), ismulti=True) == [
        {"label": "a", "vault_token": REDACTED},
        {"label": "b", "vault_token": REDACTED},
    ]
    assert rows[0][1] == "tok-0000"  # copies: the caller's parameters are untouched
    assert named[0]["vault_token"] == "tok-0000"


# -- through a real engine -----------------------------------------------------------------


def test_debug_logs_parameters_with_the_secret_redacted(
    debug_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    with debug_engine.begin() as conn:
        conn.execute(insert(vault), {"id": 1, "label": "label-1", "vault_token": TOKENS[1]})
        conn.execute(update(vault).values(vault_token=TOKENS[2]).where(vault.c.id == 1))
        conn.execute(select(vault.c.id).where(vault.c.vault_token == TOKENS[2]))
        stored = conn.execute(select(vault.c.vault_token)).scalar_one()
    log = sql_log(caplog)
    assert "label-1" in log
    assert log.count(REDACTED) >= 3
    assert_no_token(log)
    assert stored == TOKENS[2]  # the driver got the real value


def test_executemany_and_insertmanyvalues_batches_are_redacted(
    debug_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [{"id": n, "label": f"label-{n}", "vault_token": TOKENS[n]} for n in range(20)]
    with debug_engine.begin() as conn:
        conn.execute(insert(vault), rows[:10])  # cursor.executemany()
        ids = conn.execute(insert(vault).returning(vault.c.id), rows[10:]).scalars().all()
        stored = conn.execute(select(vault.c.vault_token).order_by(vault.c.id)).scalars().all()
    log = sql_log(caplog)
    assert "label-19" in log
    assert_no_token(log)
    assert len(ids) == 10
    assert stored == TOKENS[:20]


@pytest.mark.parametrize(
    "query",
    [
        select(vault),
        select(vault.c.vault_token.label("renamed"), vault.c.label),
        select(vault.c.label, vault.c.vault_token).select_from(
            vault.join(vault.alias(), text("1=1"))
        ),
        text("SELECT label, vault_token FROM vault"),
    ],
    ids=["table", "label", "join", "text"],
)
def test_result_rows_are_logged_with_the_secret_redacted(
    debug_engine: Engine, caplog: pytest.LogCaptureFixture, query: Any
) -> None:
    with debug_engine.begin() as conn:
        conn.execute(insert(vault), {"id": 1, "label": "label-1", "vault_token": TOKENS[1]})
        caplog.clear()
        fetched = conn.execute(query).all()
    assert TOKENS[1] in [value for row in fetched for value in row]
    rows = [line for line in sql_log(caplog).splitlines() if line.startswith("Row ")]
    assert rows
    assert all("'label-1'" in row and REDACTED in row for row in rows)
    assert_no_token(sql_log(caplog))


def test_echo_true_logs_no_parameters_and_no_rows(caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine(True)
    with engine.begin() as conn:
        conn.execute(insert(vault), {"id": 1, "label": "label-1", "vault_token": TOKENS[1]})
        conn.execute(select(vault)).all()
    log = sql_log(caplog)
    assert "INSERT INTO vault" in log
    assert "[SQL parameters hidden due to hide_parameters=True]" in log
    assert "label-1" not in log
    assert "Row " not in log
    engine.dispose()


@pytest.mark.parametrize("echo", ["debug", True])
def test_errors_carry_no_secret(echo: bool | str) -> None:
    engine = make_engine(echo)
    row = {"id": 1, "label": "label-1", "vault_token": TOKENS[1]}
    with engine.begin() as conn:
        conn.execute(insert(vault), row)
    with pytest.raises(exc.IntegrityError) as caught, engine.begin() as conn:
        conn.execute(insert(vault), row)
    message = str(caught.value)
    assert TOKENS[1] not in message
    assert ("label-1" in message) is (echo == "debug")
    engine.dispose()


def test_a_record_that_cannot_be_redacted_is_withheld() -> None:
    class Unreadable(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise RuntimeError("no")

        def __iter__(self) -> Iterator[str]:
            raise RuntimeError("no")

        def __len__(self) -> int:
            return 1

    record = logging.LogRecord(
        "sqlalchemy.engine.Engine", logging.INFO, __file__, 1, "[%s] %r", ("x", Unreadable()), None
    )
    assert redaction.RedactingFilter().filter(record)
    assert record.getMessage() == WITHHELD


# -- hashes inside text, and secrets inside nested values ----------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f" {ARGON2}", f" {REDACTED}"),
        (f'{{"h": "{ARGON2}", "n": 1}}', f'{{"h": "{REDACTED}", "n": 1}}'),
        (f'(7,ada,"{ARGON2}",t,f)', f'(7,ada,"{REDACTED}",t,f)'),  # a PostgreSQL record
        (f"(7,ada,{ARGON2},t,f)", f"(7,ada,{REDACTED},t,f)"),
        (
            "a=$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW;b=2",
            f"a={REDACTED};b=2",
        ),
        ("pw pbkdf2:sha256:600000$salt$hexdigest end", f"pw {REDACTED} end"),
    ],
)
def test_a_hash_inside_text_is_replaced_and_the_rest_is_kept(text: str, shown: str) -> None:
    assert redaction.looks_like_password_hash(text)
    assert redact_parameters((text,), Secrets(), ismulti=False) == (shown,)


@pytest.mark.usefixtures("known_secrets")
def test_nested_parameters_are_searched_at_any_depth() -> None:
    params = {
        "doc": {"vault_token": "tok-0000", "list": [1, (ARGON2, "keep")], "label": "a"},
        "texts": [f"x {ARGON2}", "plain"],
    }
    assert redact_parameters(params, Secrets(), ismulti=False) == {
        "doc": {"vault_token": REDACTED, "list": [1, (REDACTED, "keep")], "label": "a"},
        "texts": [f"x {REDACTED}", "plain"],
    }


@pytest.mark.usefixtures("known_secrets")
def test_a_known_secret_inside_other_text_or_json_text_is_replaced() -> None:
    secrets = Secrets(values=frozenset({"tok-0001"}))
    assert secrets.scrub("before tok-0001 after") == f"before {REDACTED} after"
    # SQLite's json_object() returns text: a secret column's key is found in it too.
    shown = Secrets().scrub('{"vault_token": "tok-0002", "label": "a"}')
    assert "tok-0002" not in shown
    assert '"label": "a"' in shown


def test_a_driver_record_is_searched_by_its_field_names() -> None:
    class Record:  # the shape of asyncpg's Record: items() and keys(), not a Mapping
        def __init__(self, **fields: Any) -> None:
            self._fields = fields

        def keys(self) -> Any:
            return self._fields.keys()

        def items(self) -> Any:
            return self._fields.items()

    shown = Secrets().scrub([Record(username="ada", hashed_password=ARGON2)])
    assert shown == [{"username": "ada", "hashed_password": REDACTED}]


def test_a_value_too_deep_to_search_is_redacted_whole() -> None:
    deep: list[Any] = [ARGON2]
    for _ in range(1_000):
        deep = [deep]
    assert ARGON2 not in repr(Secrets().scrub(deep))
