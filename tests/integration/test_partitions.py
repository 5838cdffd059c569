"""Partitioned market tables: price_history by year, options_data by month (PostgreSQL).

Where a row landed is read from PostgreSQL itself (``tableoid::regclass``); the
same calls on SQLite's plain tables give the same results.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from database import DatabaseManager, migrate, partitions
from database.exceptions import ValidationError
from database.models import PriceHistory
from database.repositories import OptionsDataRepository, PriceHistoryRepository
from tests.conftest import RawSQL
from tests.integration.conftest import UnitOfWork

pytestmark = pytest.mark.pgbouncer

COMMAND = str(Path(sys.executable).with_name("buffetbot-db"))


def bars(ticker: str, start: str, days: int) -> pd.DataFrame:
    index = pd.date_range(start, periods=days, freq="D", name="Date")
    close = [100.0 + n for n in range(days)]
    return pd.DataFrame(
        {"Open": close, "High": close, "Low": close, "Close": close, "Volume": [1000] * days},
        index=index,
    ).assign(ticker=ticker)


def where(sql: RawSQL, table: str, **match: Any) -> set[str]:
    """The partitions holding the matching rows."""
    condition = " AND ".join(f"{k} = :{k}" for k in match) or "true"
    query = "SELECT DISTINCT tableoid::regclass::text FROM " + table + " WHERE " + condition  # noqa: S608
    return {r[0] for r in sql.rows(query, **match)}


def names(sql: RawSQL, table: str) -> set[str]:
    query = "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    return {r[0] for r in sql.rows(query + " WHERE i.inhparent = to_regclass(:t)", t=table)}


def chain(when: dt.datetime, expirations: list[dt.date]) -> dict[str, Any]:
    """store_chain's arguments: one call per expiration, seen at ``when``."""
    rows = [{"strike": 150, "option_type": "call", "expiration": e, "bid": 1} for e in expirations]
    return {"ticker": "AAPL", "rows": rows, "fetched_at": when}


@pytest.mark.postgresql_only
def test_the_migration_partitions_the_market_tables(sql: RawSQL) -> None:
    kinds = dict(sql.rows("SELECT relname, relkind FROM pg_class WHERE relname IN"
                          " ('price_history', 'options_data')"))  # fmt: skip
    assert kinds == {"price_history": "p", "options_data": "p"}
    assert {"price_history_default", f"price_history_{dt.date.today().year}"} <= names(
        sql, "price_history"
    )
    assert "options_data_default" in names(sql, "options_data")
    migrate.check(sql.url)  # the partitions are not drift from the models


async def test_an_upsert_for_a_year_with_no_partition_makes_it_first(
    uow: UnitOfWork, sql: RawSQL, backend: str
) -> None:
    prices = PriceHistoryRepository()
    result = await uow(prices.upsert, bars("ZZZ", "1961-12-30", 4))
    assert result.inserted == 4
    rows = await uow(prices.get_range, "ZZZ")
    assert [r.date for r in rows] == [dt.date(1961, 12, 30) + dt.timedelta(n) for n in range(4)]
    if backend == "postgresql":
        assert where(sql, "price_history", ticker="ZZZ") == {
            "price_history_1961",
            "price_history_1962",
        }
    # Dict rows (no date index to read up front) too, and into a table with rows.
    more = [{"ticker": "ZZZ", "date": dt.date(1965, 6, 1), "open": 1, "high": 2, "low": 1,
             "close": 2, "volume": 5}]  # fmt: skip
    assert (await uow(prices.upsert, more)).inserted == 1
    if backend == "postgresql":
        assert "price_history_1965" in where(sql, "price_history", ticker="ZZZ")
        assert sql.scalar("SELECT count(*) FROM price_history_default") == 0


@pytest.mark.postgresql_only
def test_making_a_partition_moves_the_rows_the_default_partition_held(
    db: DatabaseManager, sql: RawSQL
) -> None:
    sql.execute("DROP TABLE IF EXISTS price_history_1999")  # made by an earlier run
    partitions.known.clear()
    with db.get_session() as session:  # an ORM add makes no partition: the default takes it
        session.add(PriceHistory(ticker="OLD", date=dt.date(1999, 3, 1), close=5, data_source="x"))
    assert where(sql, "price_history", ticker="OLD") == {"price_history_default"}
    with db.get_session() as session:
        PriceHistoryRepository().upsert(session, bars("NEW", "1999-06-01", 2))
    assert where(sql, "price_history", ticker="OLD") == {"price_history_1999"}
    assert sql.scalar("SELECT count(*) FROM price_history WHERE ticker = 'OLD'") == 1


@pytest.mark.postgresql_only
def test_concurrent_upserts_into_a_new_year_all_land(db: DatabaseManager, sql: RawSQL) -> None:
    errors: list[BaseException] = []

    def write(number: int) -> None:
        try:
            with db.get_session() as session:
                PriceHistoryRepository().upsert(session, bars(f"T{number}", "1971-01-01", 30))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert where(sql, "price_history") >= {"price_history_1971"}
    assert sql.scalar("SELECT count(*) FROM price_history_1971") == 6 * 30


async def test_a_chain_snapshot_lands_in_its_month(
    uow: UnitOfWork, sql: RawSQL, backend: str
) -> None:
    options = OptionsDataRepository()
    when = dt.datetime(2025, 5, 31, 23, 30, tzinfo=dt.UTC)
    stored = await uow(options.store_chain, **chain(when, [dt.date(2025, 6, 20)]))
    assert stored.inserted == 1
    assert len(await uow(options.get_chain, "AAPL", dt.date(2025, 6, 20), as_of=when)) == 1
    if backend == "postgresql":
        assert where(sql, "options_data") == {"options_data_2025_05"}


async def test_purge_drops_months_whose_contracts_all_expired_and_counts_alike(
    uow: UnitOfWork, sql: RawSQL, backend: str
) -> None:
    options = OptionsDataRepository()
    january = dt.datetime(2020, 1, 15, tzinfo=dt.UTC)
    february = dt.datetime(2020, 2, 14, tzinfo=dt.UTC)
    await uow(options.store_chain, **chain(january, [dt.date(2020, 1, 17), dt.date(2020, 2, 21)]))
    await uow(options.store_chain, **chain(february, [dt.date(2020, 2, 21), dt.date(2099, 1, 15)]))
    purged = await uow(options.purge_expired, today=dt.date(2021, 1, 1))
    assert purged == 3  # both of January's, and February's that expired
    assert sql.count("options_data") == 1
    if backend == "postgresql":
        found = names(sql, "options_data")
        assert "options_data_2020_01" not in found  # dropped whole
        assert "options_data_2020_02" in found  # a contract still trades: kept


@pytest.mark.postgresql_only
def test_the_partitions_command_lists_creates_and_drops(db: DatabaseManager, sql: RawSQL) -> None:
    with db.get_session() as session:
        OptionsDataRepository().store_chain(
            session, **chain(dt.datetime(2001, 1, 10, tzinfo=dt.UTC), [dt.date(2001, 2, 16)])
        )

    def cli(*arguments: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATA"))}
        environment["COLUMNS"] = "160"
        if "DB_PGBOUNCER" in os.environ:  # the pgbouncer run: the command must know too
            environment["DB_PGBOUNCER"] = os.environ["DB_PGBOUNCER"]
        result = subprocess.run(
            [COMMAND, "--url", sql.url, "partitions", *arguments],
            capture_output=True, text=True, env=environment, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == expect, result.stdout + result.stderr
        return result

    listed = json.loads(cli("list", "options_data", "--json").stdout)
    old = next(p for p in listed if p["name"] == "options_data_2001_01")
    assert (old["from"], old["to"], old["rows"]) == ("2001-01-01", "2001-02-01", 1)
    assert listed[-1]["name"] == "options_data_default"
    shown = cli("list").stdout
    assert "price_history_default" in shown
    assert "(default)" in shown
    cli("create", "price_history", "--ahead", "5")
    year = dt.date.today().year
    assert {f"price_history_{year + n}" for n in range(6)} <= names(sql, "price_history")
    assert "every partition exists" in cli("create", "price_history", "--ahead", "5").stdout
    dropped = json.loads(cli("drop", "options_data", "--older-than", "3", "--json").stdout)
    assert "options_data_2001_01" in dropped["dropped"]
    assert dropped["rows"] >= 1
    assert "options_data_2001_01" not in names(sql, "options_data")
    assert "is not partitioned" in cli("drop", "users", "--older-than", "1", expect=1).stderr


@pytest.mark.sqlite_only
def test_on_sqlite_the_partitions_command_says_they_are_postgresql_s(sql: RawSQL) -> None:
    result = subprocess.run(
        [COMMAND, "--url", sql.url, "partitions", "list"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "PostgreSQL" in result.stderr


def test_a_table_that_is_not_partitioned_is_named() -> None:
    with pytest.raises(ValidationError, match="users"):
        partitions.scheme_of("users")
    with pytest.raises(ValidationError, match="ahead"):
        partitions.create_ahead(None, partitions.PRICE_HISTORY, -1)  # type: ignore[arg-type]


@pytest.mark.postgresql_only
@pytest.mark.not_through_pgbouncer  # migrations run on the server directly
def test_the_migration_moves_existing_rows_into_partitions_and_back(empty_url: str) -> None:
    migrate.upgrade(empty_url, "0004")
    raw = RawSQL(empty_url)
    try:
        for day in ("2019-05-02", "2023-12-29", "2024-01-02"):
            raw.execute(
                "INSERT INTO price_history (ticker, date, close, dividends, stock_splits,"
                " data_source, created_at, updated_at) VALUES ('AAPL', :day, 10, 0, 0, 'x',"
                " now(), now())",
                day=day,
            )
        for when in ("2024-01-31 23:59:59+00", "2024-02-01 00:00:00+00"):
            raw.execute(
                "INSERT INTO options_data (id, ticker, contract_symbol, option_type, strike,"
                " expiration, fetched_at, created_at, updated_at) VALUES (gen_random_uuid(),"
                " 'AAPL', 'AAPL240315C00100000', 'call', 100, '2024-03-15', :when, now(), now())",
                when=when,
            )
        before = {t: sorted(raw.rows(f"SELECT * FROM {t}"), key=repr)  # noqa: S608
                  for t in ("price_history", "options_data")}  # fmt: skip
        migrate.upgrade(empty_url)
        assert where(raw, "price_history") == {
            "price_history_2019", "price_history_2023", "price_history_2024"
        }  # fmt: skip
        assert where(raw, "options_data") == {"options_data_2024_01", "options_data_2024_02"}
        assert raw.count("price_history_default") == raw.count("options_data_default") == 0
        key = raw.rows(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'options_data'::regclass"
            " AND i.indisprimary ORDER BY a.attname"
        )
        assert key == [("fetched_at",), ("id",)]
        for table, rows in before.items():
            assert sorted(raw.rows(f"SELECT * FROM {table}"), key=repr) == rows  # noqa: S608
        migrate.downgrade(empty_url, "0004")
        kinds = raw.rows("SELECT relname, relkind FROM pg_class WHERE relname IN"
                         " ('price_history', 'options_data') ORDER BY relname")  # fmt: skip
        assert kinds == [("options_data", "r"), ("price_history", "r")]
        assert raw.scalar("SELECT count(*) FROM pg_inherits") == 0
        for table, rows in before.items():
            assert sorted(raw.rows(f"SELECT * FROM {table}"), key=repr) == rows  # noqa: S608
    finally:
        raw.close()


@pytest.mark.postgresql_only
def test_inside_an_open_transaction_rows_wait_in_the_default_partition(
    db: DatabaseManager, sql: RawSQL
) -> None:
    sql.execute("DROP TABLE IF EXISTS price_history_1987, price_history_1988, price_history_1989")
    partitions.known.clear()
    prices = PriceHistoryRepository()
    with db.get_session() as session:
        prices.get_latest(session, "ANY")  # the transaction has begun, and read the table
        assert prices.upsert(session, bars("WAIT", "1988-06-01", 3)).inserted == 3
    assert where(sql, "price_history", ticker="WAIT") == {"price_history_default"}
    with db.get_session() as session:  # the next write outside a transaction makes it
        prices.upsert(session, bars("NEXT", "1988-07-01", 2))
    assert where(sql, "price_history", ticker="WAIT") == {"price_history_1988"}
    assert sql.count("price_history_default") == 0


@pytest.mark.postgresql_only
def test_the_last_year_a_date_can_name_goes_to_the_default_partition(
    db: DatabaseManager, sql: RawSQL
) -> None:
    prices, options = PriceHistoryRepository(), OptionsDataRepository()
    with db.get_session() as session:
        assert prices.upsert(session, bars("LAST", "9999-12-29", 2)).inserted == 2
    with db.get_session() as session:
        stored = options.store_chain(
            session, **chain(dt.datetime(9999, 12, 1, tzinfo=dt.UTC), [dt.date(2099, 12, 18)])
        )
        assert stored.inserted == 1
    assert where(sql, "price_history", ticker="LAST") == {"price_history_default"}
    assert where(sql, "options_data") == {"options_data_default"}


async def test_a_frame_with_a_date_column_of_dates_lands_in_its_year(
    uow: UnitOfWork, sql: RawSQL, backend: str
) -> None:
    frame = bars("COL", "1974-03-02", 3).reset_index()
    frame["Date"] = [d.date() for d in frame["Date"]]  # datetime.date objects
    assert (await uow(PriceHistoryRepository().upsert, frame)).inserted == 3
    if backend == "postgresql":
        assert where(sql, "price_history", ticker="COL") == {"price_history_1974"}


def test_a_retention_beyond_what_a_date_can_name_is_a_usage_error() -> None:
    result = subprocess.run(
        [COMMAND, "--url", "sqlite:///unused.db", "partitions", "drop", "options_data",
         "--older-than", "5000"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--older-than" in result.stderr
