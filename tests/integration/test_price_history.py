"""Price history: bulk upserts of real yfinance data, bad input, and the reads, on both backends."""

from __future__ import annotations

import datetime as dt
import math
import warnings
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.util.concurrency import in_greenlet

from database import DatabaseManager
from database import prices as bars_module
from database.exceptions import ValidationError
from database.models import PriceHistory
from database.prices import PriceValidationError
from database.repositories import PriceHistoryRepository
from tests.conftest import RawSQL
from tests.integration.conftest import UnitOfWork, row_count_statements
from tests.property.strategies import HostileStr

# Every PostgreSQL test here runs once more through PgBouncer (transaction pooling).
pytestmark = pytest.mark.pgbouncer

DATA = Path(__file__).resolve().parents[1] / "data"
prices = PriceHistoryRepository()


def history(name: str) -> pd.DataFrame:
    """A yfinance history() file as yfinance returns it: the date column as the index."""
    return pd.read_csv(DATA / name, index_col=0)


async def test_a_yfinance_history_frame_round_trips(uow: UnitOfWork, sql: RawSQL) -> None:
    calm = history("prices-history/CALM.csv")  # tz-aware "Datetime" index, Adj Close, actions
    result = await uow(prices.upsert, calm, ticker="calm")
    assert (result.inserted, result.updated, result.unchanged, result.rejected) == (662, 0, 0, [])
    bars = await uow(prices.get_range, "CALM")
    assert len(bars) == 662
    first = bars[0]
    assert first.date == dt.date(2022, 1, 3)  # the exchange's date, not the UTC one
    assert first.close == Decimal("37.700001")  # 37.70000076293945 to 6 places
    assert first.volume == 707800
    assert sum(1 for bar in bars if bar.dividends > 0) == 10
    assert sql.count("price_history") == 662


async def test_the_async_form_ingests_100_000_bars_of_30_tickers(
    db: DatabaseManager, sql: RawSQL
) -> None:
    # Columns of 800 KB: numpy checks its C callers before reusing such a temporary,
    # and that check crashed the process when it ran on run_sync's greenlet (issue 7).
    aapl = pd.read_csv(DATA / "prices/AAPL.csv")
    frame = pd.concat([aapl.assign(Ticker=f"T{i:02d}") for i in range(30)], ignore_index=True)
    async with db.get_async_session() as session:
        first = await prices.async_upsert(session, frame)  # straight into the empty table
    async with db.get_async_session() as session:
        again = await prices.async_upsert(session, frame)  # through the staging table
    assert first.inserted == 30 * 3379 == 101_370
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 101_370)
    assert sql.count("price_history") == 101_370
    assert sql.scalar("SELECT count(DISTINCT ticker) FROM price_history") == 30
    close = sql.scalar(
        "SELECT close FROM price_history WHERE ticker = 'T29' AND date = '2014-06-09'"
    )
    assert close == (93_699_997 if sql.backend == "sqlite" else Decimal("93.699997"))


async def test_the_async_form_checks_and_converts_bars_off_the_greenlet(
    db: DatabaseManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The crash above depends on what the stack happens to hold; this does not.
    where: list[tuple[str, bool]] = []

    def spy_on(name: str) -> Callable[..., Any]:
        real = getattr(bars_module, name)

        def spy(*args: Any, **kwargs: Any) -> Any:
            where.append((name, in_greenlet()))
            return real(*args, **kwargs)

        return spy

    for name in ("check_bars", "staging_rows"):
        monkeypatch.setattr(f"database.repositories.price_history.{name}", spy_on(name))
    calm = history("prices-history/CALM.csv")
    for _ in range(2):  # into the empty table, then through the staging table
        async with db.get_async_session() as session:
            await prices.async_upsert(session, calm, ticker="CALM")
    assert where == [("check_bars", False), ("staging_rows", False)] * 2


async def test_upserting_the_same_bars_again_changes_nothing(uow: UnitOfWork) -> None:
    calm = history("prices-history/CALM.csv")
    await uow(prices.upsert, calm, ticker="CALM")
    again = await uow(prices.upsert, calm, ticker="CALM")
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 662)


async def test_overlapping_batches_insert_new_and_update_changed_bars(uow: UnitOfWork) -> None:
    calm = history("prices-history/CALM.csv")
    await uow(prices.upsert, calm.iloc[:100], ticker="CALM")
    revised = calm.iloc[50:150].copy()
    price_columns = ["Open", "High", "Low", "Close", "Adj Close"]
    revised.iloc[:25, [revised.columns.get_loc(c) for c in price_columns]] *= 1.01
    result = await uow(prices.upsert, revised, ticker="CALM")
    assert (result.inserted, result.updated, result.unchanged) == (50, 25, 25)
    assert await uow(prices.count, ticker="CALM") == 150


@pytest.mark.parametrize("batch_size", [100_000, 30])
async def test_a_merge_over_many_batches_counts_each_bar_once(
    uow: UnitOfWork, monkeypatch: pytest.MonkeyPatch, statements: list[str], batch_size: int
) -> None:
    """Re-upserts of stored tickers (SQLite: straight into the table; PostgreSQL:
    staged), in one batch or many: every bar counted as inserted, updated or unchanged."""
    monkeypatch.setattr(PriceHistoryRepository, "batch_size", batch_size)
    calm = history("prices-history/CALM.csv")
    await uow(prices.upsert, calm.iloc[:100], ticker="CALM")
    revised = calm.iloc[40:160].copy()
    revised.iloc[:20, revised.columns.get_loc("Volume")] += 1
    statements.clear()
    result = await uow(prices.upsert, revised, ticker="CALM")
    assert (result.inserted, result.updated, result.unchanged) == (60, 20, 40)
    assert await uow(prices.count, ticker="CALM") == 160
    stored = await uow(prices.get_frame, "CALM")
    assert stored["Volume"].iloc[40:60].tolist() == revised["Volume"].iloc[:20].tolist()
    staged = any("price_history_staging" in statement for statement in statements)
    assert staged == (uow.db.backend == "postgresql")


async def test_a_date_repeated_in_a_later_batch_of_a_merge_is_refused(
    uow: UnitOfWork, sql: RawSQL, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(PriceHistoryRepository, "batch_size", 30)
    calm = history("prices-history/CALM.csv")
    await uow(prices.upsert, calm.iloc[:10], ticker="CALM")
    repeated = pd.concat([calm.iloc[:100], calm.iloc[[5]]])  # in the fourth batch
    repeated.iloc[-1, repeated.columns.get_loc("Volume")] += 1
    with pytest.raises(PriceValidationError, match="more than once"):
        await uow(prices.upsert, repeated, ticker="CALM")
    assert sql.count("price_history") == 10


async def test_a_merge_of_bars_without_actions_keeps_the_stored_ones(
    uow: UnitOfWork, sql: RawSQL
) -> None:
    calm = history("prices-history/CALM.csv")
    await uow(prices.upsert, calm, ticker="CALM")
    stored = sql.rows("SELECT dividends FROM price_history WHERE dividends <> 0")
    assert stored
    without = calm.drop(columns=["Dividends", "Stock Splits"])
    result = await uow(prices.upsert, without, ticker="CALM")
    assert (result.inserted, result.updated) == (0, 0)
    assert sql.rows("SELECT dividends FROM price_history WHERE dividends <> 0") == stored


async def test_a_yahoo_download_with_a_date_column(uow: UnitOfWork) -> None:
    aapl = pd.read_csv(DATA / "prices/AAPL.csv")  # Date as a column, no actions
    result = await uow(prices.upsert, aapl, ticker="AAPL")
    assert result.inserted == 3379
    bar = await uow(prices.get_by_id, ("AAPL", dt.date(2014, 6, 9)))
    assert bar.close == Decimal("93.699997")
    assert bar.adj_close is not None
    assert bar.dividends == 0


async def test_dict_rows_in_either_spelling_with_nan_as_null(uow: UnitOfWork) -> None:
    rows = [
        {
            "ticker": "brk-b",
            "date": dt.date(2024, 1, 2),
            "Open": 360,
            "High": 364,
            "Low": 359,
            "Close": 362.5,
            "Adj Close": float("nan"),
            "Volume": 3_500_000,
        },
        {
            "ticker": "BRK-B",
            "date": "2024-01-03",
            "open": Decimal("362"),
            "high": Decimal("363"),
            "low": Decimal("358.25"),
            "close": Decimal("359.123456"),
            "volume": None,
        },
    ]
    result = await uow(prices.upsert, rows)
    assert result.inserted == 2
    first, second = await uow(prices.get_range, "BRK-B")
    assert first.adj_close is None
    assert first.close == Decimal("362.5")
    assert second.close == Decimal("359.123456")
    assert second.volume is None


async def test_a_frame_with_a_ticker_column_holds_many_tickers(uow: UnitOfWork) -> None:
    frame = pd.DataFrame(
        {
            "Ticker": ["AAPL", "MSFT", "AAPL"],
            "Date": pd.to_datetime(["2024-01-02", "2024-01-02", "2024-01-03"]),
            "Open": [1.0, 2.0, 1.1],
            "High": [1.2, 2.2, 1.3],
            "Low": [0.9, 1.9, 1.0],
            "Close": [1.1, 2.1, 1.2],
        }
    )
    assert (await uow(prices.upsert, frame)).inserted == 3
    closes = await uow(prices.get_latest_closes, ["aapl", "msft", "tsla"])
    assert {t: (c.date, c.close) for t, c in closes.items()} == {
        "AAPL": (dt.date(2024, 1, 3), Decimal("1.2")),
        "MSFT": (dt.date(2024, 1, 2), Decimal("2.1")),
    }


async def test_a_real_history_with_yahoos_range_errors_is_stored_whole(
    uow: UnitOfWork, sql: RawSQL
) -> None:
    spy = pd.read_csv(DATA / "prices/SPY.csv", index_col="Date")  # two real rows with Open < Low
    result = await uow(prices.upsert, spy, ticker="SPY")
    assert (result.inserted, result.rejected) == (2519, [])
    assert [(r.date, r.field, r.old, r.new, r.reason) for r in result.repaired] == [
        (
            dt.date(2015, 3, 5),
            "low",
            Decimal("209.850006"),
            Decimal("209.419998"),
            "the open is below the low",
        ),
        (
            dt.date(2015, 3, 30),
            "low",
            Decimal("206.960007"),
            Decimal("205.740005"),
            "the open is below the low",
        ),
    ]
    bar = await uow(prices.get_by_id, ("SPY", dt.date(2015, 3, 5)))
    assert (bar.open, bar.low, bar.close) == (
        Decimal("209.419998"),
        Decimal("209.419998"),
        Decimal("210.460007"),
    )
    assert sql.count("price_history") == 2519


async def test_bad_bars_reject_the_whole_call_and_name_ticker_date_and_field(
    uow: UnitOfWork, sql: RawSQL
) -> None:
    spy = pd.read_csv(DATA / "prices/SPY.csv", index_col="Date")
    with pytest.raises(PriceValidationError) as caught:
        await uow(prices.upsert, spy, ticker="SPY", repair=False)
    problems = [(r.date, r.field, r.reason) for r in caught.value.rejected]
    assert problems == [
        (dt.date(2015, 3, 5), "open", "is below the low"),
        (dt.date(2015, 3, 30), "open", "is below the low"),
    ]
    assert caught.value.field == "open"
    assert "SPY" in str(caught.value)
    assert sql.count("price_history") == 0


async def test_skip_invalid_writes_the_good_bars_and_returns_the_bad(uow: UnitOfWork) -> None:
    spy = pd.read_csv(DATA / "prices/SPY.csv", index_col="Date")
    spy.loc["2015-03-04", "Close"] = -1.0
    result = await uow(prices.upsert, spy, ticker="SPY", skip_invalid=True)
    assert result.inserted == 2518
    assert [(r.date, r.field) for r in result.rejected] == [(dt.date(2015, 3, 4), "close")]
    assert await uow(prices.get_by_id, ("SPY", dt.date(2015, 3, 4))) is None
    assert len(result.repaired) == 2
    unrepaired = await uow(prices.upsert, spy, ticker="SPY", skip_invalid=True, repair=False)
    assert [r.date.day for r in unrepaired.rejected] == [4, 5, 30]


async def test_the_dirty_yfinance_file_is_rejected_row_by_row(uow: UnitOfWork) -> None:
    dirty = history("prices-history/SSNLF-dirty.csv")
    with pytest.raises(PriceValidationError):
        await uow(prices.upsert, dirty, ticker="SSNLF")
    result = await uow(prices.upsert, dirty, ticker="SSNLF", skip_invalid=True)
    reasons = {(r.field, r.reason) for r in result.rejected}
    assert ("close", "is required") in reasons  # the 242 rows of empty cells
    assert ("adj_close", "must be finite") in reasons  # -inf
    assert ("adj_close", "must be greater than 0") in reasons
    empty = [r for r in result.rejected if r.field == "close"]
    assert len(empty) == 242
    assert result.inserted + len(result.rejected) == 6259
    split = await uow(prices.get_by_id, ("SSNLF", dt.date(2018, 5, 4)))
    assert split is None or split.stock_splits == Decimal("50")


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"Close": -1.0}, "close", "greater than 0"),
        ({"Low": 5.0, "High": 4.0}, "low", "is above the high"),  # inverted: never repaired
        ({"Open": 3.0}, "open", "is below the low by more than 2%"),
        ({"Close": 5.2}, "close", "is above the high by more than 2%"),
        ({"Close": float("nan")}, "close", "is required"),
        ({"Volume": 1.5}, "volume", "whole number"),
        ({"Volume": -10}, "volume", "at least 0"),
        ({"Date": "2024-13-45"}, "date", "is not a date"),
        ({"Close": "lots"}, "close", "is not a number"),
        ({"Open": "null", "Close": "null"}, "close", "is required"),  # Yahoo's holiday rows
    ],
)
async def test_bad_values(
    uow: UnitOfWork, sql: RawSQL, change: dict[str, object], field: str, reason: str
) -> None:
    row: dict[str, object] = {
        "Date": "2024-01-02",
        "Open": 4.5,
        "High": 5.0,
        "Low": 4.0,
        "Close": 4.8,
        "Volume": 100,
        **change,
    }
    with pytest.raises(PriceValidationError) as caught:
        await uow(prices.upsert, [row], ticker="AAPL")
    assert caught.value.rejected[0].field == field
    assert reason in caught.value.rejected[0].reason
    assert sql.count("price_history") == 0


async def test_unknown_columns_are_named(uow: UnitOfWork) -> None:
    row = {"Date": "2024-01-02", "Close": 4.8, "Colse": 4.9}
    with pytest.raises(ValidationError) as caught:
        await uow(prices.upsert, [row], ticker="AAPL")
    assert caught.value.field == "Colse"


@pytest.mark.parametrize("existing", [False, True], ids=["new-ticker", "known-ticker"])
async def test_duplicate_dates_in_one_batch_are_rejected(
    uow: UnitOfWork, sql: RawSQL, existing: bool
) -> None:
    if existing:
        await uow(prices.upsert, [{"Date": "2023-12-29", "Close": 1.0}], ticker="AAPL")
    rows = [{"Date": "2024-01-02", "Close": 1.0}, {"Date": "2024-01-02", "Close": 1.1}]
    with pytest.raises(PriceValidationError, match="more than once"):
        await uow(prices.upsert, rows, ticker="AAPL")
    assert sql.count("price_history") == (1 if existing else 0)


async def test_a_bad_bar_in_a_later_batch_leaves_nothing_of_the_call(
    uow: UnitOfWork, sql: RawSQL, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(PriceHistoryRepository, "batch_size", 100)
    calm = history("prices-history/CALM.csv")
    calm.iloc[450, calm.columns.get_loc("Close")] = -1.0
    with pytest.raises(PriceValidationError):
        await uow(prices.upsert, calm, ticker="CALM")
    assert sql.count("price_history") == 0
    calm.iloc[450, calm.columns.get_loc("Close")] = 40.0
    calm.iloc[451, calm.columns.get_loc("Close")] = 40.0
    calm.iloc[450:452, calm.columns.get_loc("High")] = 41.0
    calm.iloc[450:452, calm.columns.get_loc("Low")] = 39.0
    calm.iloc[450:452, calm.columns.get_loc("Open")] = 40.0
    duplicated = pd.concat([calm, calm.iloc[[10]]])  # the repeat lands in another batch
    with pytest.raises(PriceValidationError, match="more than once") as caught:
        await uow(prices.upsert, duplicated, ticker="CALM")
    assert sql.count("price_history") == 0
    day = dt.date.fromisoformat(str(calm.index[10])[:10])
    # The same report on both backends: the day as a date, also as the value.
    assert [(r.ticker, r.date, r.value) for r in caught.value.rejected] == [("CALM", day, day)]


async def test_the_frame_read_is_in_yfinance_shape(uow: UnitOfWork) -> None:
    calm = history("prices-history/CALM.csv")
    await uow(prices.upsert, calm, ticker="CALM")
    frame = await uow(prices.get_frame, "CALM", dt.date(2022, 1, 1), dt.date(2022, 12, 31))
    assert list(frame.columns) == [
        "Open",
        "High",
        "Low",
        "Close",
        "Adj Close",
        "Volume",
        "Dividends",
        "Stock Splits",
    ]
    assert frame.index.name == "Date"
    assert frame.index[0] == pd.Timestamp("2022-01-03")
    assert frame.index.is_monotonic_increasing
    assert str(frame["Close"].dtype) == "float64"
    assert str(frame["Volume"].dtype) == "Int64"
    assert math.isclose(frame["Close"].iloc[0], 37.700001)
    assert frame.index[-1].year == 2022
    assert (await uow(prices.get_frame, "NOPE")).empty


async def test_point_reads(uow: UnitOfWork, statements: list[str]) -> None:
    await uow(prices.upsert, history("prices-history/CALM.csv"), ticker="CALM")
    await uow(prices.upsert, pd.read_csv(DATA / "prices/AAPL.csv"), ticker="AAPL")
    latest = await uow(prices.get_latest, "calm")
    assert latest.date == dt.date(2024, 8, 21)
    saturday = await uow(prices.get_close_as_of, "CALM", dt.date(2022, 1, 8))
    assert saturday.date == dt.date(2022, 1, 7)
    assert await uow(prices.get_close_as_of, "CALM", dt.date(2021, 12, 31)) is None
    statements.clear()
    closes = await uow(prices.get_latest_closes, ["CALM", "AAPL"])
    assert row_count_statements(statements, "SELECT", "price_history") == 1
    assert closes["AAPL"].date == dt.date(2018, 1, 19)
    freshness = await uow(prices.get_freshness)
    assert freshness == {"AAPL": dt.date(2018, 1, 19), "CALM": dt.date(2024, 8, 21)}
    assert await uow(prices.get_freshness, ["aapl"]) == {"AAPL": dt.date(2018, 1, 19)}


async def test_a_point_read_is_the_sessions_own_instance_with_the_orms_values(
    db: DatabaseManager,
) -> None:
    """get_latest / get_close_as_of read through the bare driver; what they return is what
    an ORM query returns: the same values and types, and the session's own instance."""
    with db.get_session() as session:
        prices.upsert(session, history("prices-history/CALM.csv"), ticker="CALM")
    columns = [c.key for c in PriceHistory.__mapper__.column_attrs]
    async with db.get_async_session() as session:
        read = await prices.async_get_close_as_of(session, "calm", dt.date(2022, 1, 8))
        assert read is not None
        through_orm = await session.get(PriceHistory, ("CALM", dt.date(2022, 1, 7)))
        assert through_orm is read  # one identity map
        read.close = Decimal("41.5")  # persistent: a change is written
    with db.get_session() as session:
        orm = session.get(PriceHistory, ("CALM", dt.date(2022, 1, 7)))
        assert orm is not None
        assert orm.close == Decimal("41.5")
        orm_values = {c: getattr(orm, c) for c in columns}
    with db.get_session() as session:
        latest = prices.get_close_as_of(session, "CALM", dt.date(2022, 1, 7))
        assert latest is not None
        values = {c: getattr(latest, c) for c in columns}
    assert values == orm_values
    assert {c: type(v) for c, v in values.items()} == {c: type(v) for c, v in orm_values.items()}
    assert values["created_at"].tzinfo is not None


# -- hostile input: dates of reads, prices that round away, complex numbers, columns ------

_BARS = [{"date": dt.date(2024, 1, d), "close": 10 + d, "volume": 1} for d in (2, 3, 4)]


@pytest.mark.parametrize(
    "start",
    [
        dt.date(2024, 1, 3),
        dt.datetime(2024, 1, 3, 9, 30),
        dt.datetime(2024, 1, 3, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        pd.Timestamp("2024-01-03"),
        np.datetime64("2024-01-03"),
        "2024-01-03",
    ],
    ids=["date", "datetime", "aware-datetime", "timestamp", "datetime64", "iso-text"],
)
async def test_read_dates_mean_the_calendar_day_on_both_backends(
    uow: UnitOfWork, start: object
) -> None:
    await uow(prices.upsert, _BARS, ticker="AAPL")
    assert [bar.date.day for bar in await uow(prices.get_range, "AAPL", start)] == [3, 4]
    assert [bar.date.day for bar in await uow(prices.get_range, "AAPL", None, start)] == [2, 3]
    assert len(await uow(prices.get_frame, "AAPL", start)) == 2
    assert (await uow(prices.get_close_as_of, "AAPL", start)).date == dt.date(2024, 1, 3)


@pytest.mark.parametrize(
    "bad",
    [5, 5.5, True, "not a date", "", b"2024-01-03", object(), HostileStr("2024-01-03"), None],
    ids=["int", "float", "bool", "text", "empty", "bytes", "object", "str-subclass", "none"],
)
async def test_read_dates_of_the_wrong_kind_are_refused_before_any_sql(
    uow: UnitOfWork, statements: list[str], bad: object
) -> None:
    await uow(prices.upsert, _BARS, ticker="AAPL")
    statements.clear()
    calls: list[tuple[Any, tuple[Any, ...], str]] = [
        (prices.get_close_as_of, ("AAPL", bad), "day"),
    ]
    if bad is not None:  # None is no bound for a range
        calls += [
            (prices.get_range, ("AAPL", bad), "start"),
            (prices.get_range, ("AAPL", None, bad), "end"),
            (prices.get_frame, ("AAPL", bad), "start"),
        ]
    for method, args, field in calls:
        if isinstance(bad, HostileStr):  # taken as its characters: a date
            continue
        with pytest.raises(ValidationError) as caught:
            await uow(method, *args)
        assert caught.value.field == field
    assert not [s for s in statements if "price_history" in s]


@pytest.mark.parametrize(
    "tickers", ["AAPL", {"AAPL": 1}, 5, [5], ["\u00df"], ["AAPL"] * 10_001], ids=str
)
async def test_ticker_lists_of_the_wrong_kind_are_refused(uow: UnitOfWork, tickers: Any) -> None:
    for method in (prices.get_latest_closes, prices.get_freshness):
        with pytest.raises(ValidationError) as caught:
            await uow(method, tickers)
        assert caught.value.field == "tickers"


async def test_a_price_that_rounds_to_zero_at_six_places_is_refused(
    uow: UnitOfWork, sql: RawSQL
) -> None:
    bars = pd.DataFrame(
        {"Open": [1e-7], "High": [11.0], "Low": [5e-324], "Close": [5e-324], "Volume": [1]},
        index=pd.DatetimeIndex(["2024-01-02"], name="Date"),
    )
    with pytest.raises(PriceValidationError) as caught:
        await uow(prices.upsert, bars, ticker="SUBN")
    assert {r.reason for r in caught.value.rejected} == {
        "must be greater than 0 at 6 decimal places"
    }
    assert sql.count("price_history") == 0


@pytest.mark.parametrize("source", ["frame", "rows"])
async def test_complex_prices_are_refused_not_truncated(
    uow: UnitOfWork, sql: RawSQL, source: str
) -> None:
    row = {"Date": "2024-01-02", "Open": 10.0, "High": 11.0, "Low": 9.0, "Close": 10.5 + 7j}
    data: Any = pd.DataFrame([row]) if source == "frame" else [row]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning: nothing is cast
        with pytest.raises(PriceValidationError) as caught:
            await uow(prices.upsert, data, ticker="CPLX")
    assert caught.value.rejected[0].field == "close"
    assert sql.count("price_history") == 0


@pytest.mark.parametrize(
    "columns",
    [
        ["Open", "High", "Low", "Close", "Close"],
        ["Open", "Open", "Low", "Close", "Volume"],
        ["Open", "High", "Low", "Close", "close"],
    ],
    ids=["two-closes", "two-opens-no-high", "close-in-two-spellings"],
)
async def test_a_frame_with_two_columns_for_one_field_is_refused(
    uow: UnitOfWork, sql: RawSQL, columns: list[str]
) -> None:
    bars = pd.DataFrame(
        [[10.0, 11.0, 9.0, 10.5, 10.9]],
        index=pd.DatetimeIndex(["2024-01-02"], name="Date"),
        columns=columns,
    )
    with pytest.raises(ValidationError, match="more than one column") as caught:
        await uow(prices.upsert, bars, ticker="DUP")
    duplicated = {c.lower() for c in columns if [x.lower() for x in columns].count(c.lower()) > 1}
    assert caught.value.field in duplicated
    assert sql.count("price_history") == 0


async def test_a_dict_row_that_gives_a_field_twice_is_refused(uow: UnitOfWork) -> None:
    rows = [{"date": "2024-01-02", "Close": 10.0, "close": 11.0}]
    with pytest.raises(ValidationError, match="twice") as caught:
        await uow(prices.upsert, rows, ticker="DUP")
    assert caught.value.field == "close"


async def test_a_hostile_ticker_in_a_row_is_a_validation_error(uow: UnitOfWork) -> None:
    rows = [{"date": "2024-01-02", "close": 10.0, "ticker": HostileStr("zz")}]
    result = await uow(prices.upsert, rows)
    assert result.inserted == 1  # taken as its characters
    with pytest.raises(ValidationError) as caught:
        await uow(prices.upsert, [{"date": "2024-01-02", "close": 1.0, "ticker": "\u00df"}])
    assert caught.value.field == "ticker"
