"""The README's yfinance recipe ("From yfinance to the database"), checked on both backends.

yfinance is the stand-in of ``tests/stubs/yfinance`` (the files of ``tests/data``
in yfinance's shapes), which records every call: so the tests can prove what the
recipe claims, e.g. that the daily refresh asks only for the days after the last
stored one and that a second refresh finds nothing new. Stored values are compared
with the source CSV files read with the csv module.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy.orm import Session

from database import DatabaseManager
from database.models import DataType
from database.repositories import (
    MarketDataRepository,
    OptionsDataRepository,
    PriceHistoryRepository,
)
from tests.conftest import RawSQL
from tests.stubs import yfinance as yf

# Every PostgreSQL test here runs once more through PgBouncer (transaction pooling).
pytestmark = pytest.mark.pgbouncer

DATA = Path(__file__).resolve().parents[1] / "data"
NEW_YORK = "America/New_York"
SIX = Decimal("0.000001")
history = PriceHistoryRepository()
market = MarketDataRepository()
chains = OptionsDataRepository()


@pytest.fixture(autouse=True)
def yf_calls() -> Iterator[list[yf.Call]]:
    yf.reset_calls()
    yield yf.calls
    yf.reset_calls()


def csv_closes(ticker: str) -> dict[dt.date, Decimal]:
    """Close per day, straight from the source file (text to Decimal, 6 places)."""
    closes: dict[dt.date, Decimal] = {}
    if ticker == "GOOG":
        with (DATA / "downloads/AAPL-GOOG-download.csv").open(newline="") as file:
            prices, tickers, _, *rows = list(csv.reader(file))
        column = next(
            i
            for i, (p, t) in enumerate(zip(prices, tickers, strict=True))
            if (p, t) == ("Close", "GOOG")
        )
        for row in rows:
            closes[dt.date.fromisoformat(row[0])] = Decimal(row[column]).quantize(SIX)
        return closes
    path = DATA / ("prices-history/CALM.csv" if ticker == "CALM" else f"prices/{ticker}.csv")
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            day = dt.date.fromisoformat((row.get("Date") or row["Datetime"])[:10])
            closes[day] = Decimal(row["Close"]).quantize(SIX)
    return closes


def stored_closes(sql: RawSQL, ticker: str) -> dict[dt.date, Decimal]:
    rows = sql.rows("SELECT date, close FROM price_history WHERE ticker = :t", t=ticker)
    scale = Decimal(10**6) if sql.backend == "sqlite" else Decimal(1)
    return {
        d if isinstance(d, dt.date) else dt.date.fromisoformat(d): (Decimal(c) / scale).quantize(
            SIX
        )
        for d, c in rows
    }


def refresh(
    get_session: Callable[[], AbstractContextManager[Session]],
    tickers: list[str],
    today: dt.date,
    first_day: dt.date = dt.date(2016, 1, 1),
) -> dict[str, int]:
    """The recipe's refresh, with ``today`` given (the recipe takes New York's today)."""
    with get_session() as session:
        last = history.get_freshness(session, tickers)
    added = {}
    for ticker in tickers:
        start = last[ticker] + dt.timedelta(days=1) if ticker in last else first_day
        added[ticker] = 0
        if start > today:
            continue
        bars = yf.Ticker(ticker).history(
            start=start, end=today + dt.timedelta(days=1), auto_adjust=False
        )
        if bars.empty:
            continue
        with get_session() as session:
            result = history.upsert(session, bars, ticker=ticker)
        added[ticker] = result.inserted
    return added


def history_calls(calls: list[yf.Call]) -> list[tuple[str, dt.date | None, dt.date | None, int]]:
    return [(c.tickers[0], c.start, c.end, c.rows) for c in calls if c.function == "history"]


# -- the stand-in has yfinance's shapes -----------------------------------------------------


def test_history_is_a_yfinance_history_frame() -> None:
    bars = yf.Ticker("aapl").history(start="2017-12-01", end="2017-12-05", auto_adjust=False)
    assert list(bars.columns) == [
        "Open",
        "High",
        "Low",
        "Close",
        "Adj Close",
        "Volume",
        "Dividends",
        "Stock Splits",
    ]
    assert bars.index.name == "Date"
    assert str(bars.index.tz) == NEW_YORK
    # start inclusive, end exclusive: Friday 1 and Monday 4 December, not Tuesday 5.
    assert [str(t) for t in bars.index] == [
        "2017-12-01 00:00:00-05:00",
        "2017-12-04 00:00:00-05:00",
    ]
    assert bars["Volume"].dtype == "int64"
    adjusted = yf.Ticker("SPY").history(start="2015-06-01", end="2015-06-02")
    assert "Adj Close" not in adjusted.columns  # auto_adjust=True, yfinance's default
    raw = yf.Ticker("SPY").history(start="2015-06-01", end="2015-06-02", auto_adjust=False)
    assert adjusted["Close"].iloc[0] == pytest.approx(raw["Adj Close"].iloc[0])
    ratio = raw["Adj Close"].iloc[0] / raw["Close"].iloc[0]
    assert adjusted["Open"].iloc[0] == pytest.approx(raw["Open"].iloc[0] * ratio)


def test_history_with_no_bars_is_empty_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    empty = yf.Ticker("AAPL").history(start="2018-01-20", end="2018-01-22", auto_adjust=False)
    assert empty.empty
    assert "possibly delisted; no price data found" in caplog.text
    with pytest.raises(yf.YFPricesMissingError):
        yf.Ticker("XYZ").history(period="max", raise_errors=True)


def test_calm_history_keeps_its_dividends_and_exchange_dates() -> None:
    bars = yf.Ticker("CALM").history(period="max", auto_adjust=False)
    assert len(bars) == 662
    assert (bars["Dividends"] > 0).sum() == 10
    assert bars.index[0] == pd.Timestamp("2022-01-03", tz=NEW_YORK)


def test_download_has_two_level_columns_and_warns_without_auto_adjust() -> None:
    frame = yf.download(["GOOG", "aapl"], start="2016-01-01", end="2018-01-01", auto_adjust=False)
    assert frame.columns.names == ["Price", "Ticker"]
    assert list(frame.columns.get_level_values("Price").unique()) == [
        "Adj Close",
        "Close",
        "High",
        "Low",
        "Open",
        "Volume",
    ]
    assert frame.index.tz is None
    assert frame.index.name == "Date"
    assert len(frame) == 503
    by_ticker = yf.download("AAPL GOOG", start="2017-01-01", auto_adjust=False, group_by="ticker")
    assert by_ticker.columns.names == ["Ticker", "Price"]
    with pytest.warns(FutureWarning, match="auto_adjust default to True"):
        yf.download("SPY", start="2017-12-01", end="2017-12-02")


def test_option_chain_is_the_yfinance_namedtuple() -> None:
    nvda = yf.Ticker("NVDA")
    assert nvda.options == ("2024-10-04",)
    chain = nvda.option_chain("2024-10-04")
    assert type(chain).__name__ == "Options"
    assert chain._fields == ("calls", "puts", "underlying")
    assert list(chain.calls.columns) == [
        "contractSymbol",
        "lastTradeDate",
        "strike",
        "lastPrice",
        "bid",
        "ask",
        "change",
        "percentChange",
        "volume",
        "openInterest",
        "impliedVolatility",
        "inTheMoney",
        "contractSize",
        "currency",
    ]
    assert str(chain.calls["lastTradeDate"].dt.tz) == "UTC"
    assert chain.underlying["regularMarketPrice"] == 121.40
    with pytest.raises(ValueError, match="Expiration `2024-10-11` cannot be found"):
        nvda.option_chain("2024-10-11")
    assert yf.Ticker("AAPL").options == ()


# -- the recipe, on both backends -----------------------------------------------------------


def test_downloaded_and_fetched_bars_store_the_source_closes(
    db: DatabaseManager, sql: RawSQL
) -> None:
    tickers = ["AAPL", "GOOG", "SPY"]
    downloaded = yf.download(
        tickers, start="2016-01-01", end="2018-01-01", auto_adjust=False, actions=True
    )
    with db.get_session() as session:
        result = history.upsert(session, downloaded)
        assert (result.inserted, result.rejected, result.repaired) == (1509, [], [])
        assert set(history.get_freshness(session, tickers).values()) == {dt.date(2017, 12, 29)}
    for ticker in tickers:
        source = {
            d: c
            for d, c in csv_closes(ticker).items()
            if dt.date(2016, 1, 1) <= d < dt.date(2018, 1, 1)
        }
        assert stored_closes(sql, ticker) == source
    # history() brings the same bars (actions included): nothing to write.
    bars = yf.Ticker("AAPL").history(start="2017-12-01", end="2018-01-01", auto_adjust=False)
    with db.get_session() as session:
        again = history.upsert(session, bars, ticker="AAPL")
        assert (again.inserted, again.updated, again.unchanged) == (0, 0, 20)
        # A tz-aware midnight in New York is stored as that trading date.
        assert history.get_range(session, "AAPL", start=dt.date(2017, 12, 1))[0].date == dt.date(
            2017, 12, 1
        )


def test_a_download_without_actions_keeps_the_stored_dividends(
    db: DatabaseManager, sql: RawSQL
) -> None:
    """A frame without Dividends and Stock Splits (download() without actions=True)
    leaves the stored ones alone; new bars get 0."""
    query = "SELECT dividends FROM price_history WHERE ticker = 'CALM' AND date = :d"
    day = "2024-04-30" if sql.backend == "sqlite" else dt.date(2024, 4, 30)  # ex-dividend day
    scale = Decimal(10**6) if sql.backend == "sqlite" else Decimal(1)
    bars = yf.Ticker("CALM").history(start="2024-04-01", end="2024-05-01", auto_adjust=False)
    with db.get_session() as session:
        history.upsert(session, bars.iloc[:-1], ticker="CALM")  # all but 2024-04-30
        history.upsert(session, bars.iloc[-1:], ticker="CALM")
    assert Decimal(sql.scalar(query, d=day)) / scale == Decimal("0.997")
    plain = yf.download("CALM", start="2024-04-01", end="2024-05-02", auto_adjust=False)
    assert "Dividends" not in plain.columns.get_level_values(0)
    with db.get_session() as session:
        result = history.upsert(session, plain)
    assert (result.inserted, result.updated, result.unchanged) == (1, 0, len(bars))
    assert Decimal(sql.scalar(query, d=day)) / scale == Decimal("0.997")
    new_day = "2024-05-01" if sql.backend == "sqlite" else dt.date(2024, 5, 1)
    assert Decimal(sql.scalar(query, d=new_day)) == 0
    changed = plain.copy()
    changed[("Volume", "CALM")] += 1  # a column the frame has is still updated
    with db.get_session() as session:
        assert history.upsert(session, changed).updated == len(bars) + 1
    assert Decimal(sql.scalar(query, d=day)) / scale == Decimal("0.997")


def test_refresh_fetches_only_the_missing_days(
    db: DatabaseManager, sql: RawSQL, yf_calls: list[yf.Call]
) -> None:
    with db.get_session() as session:
        history.upsert(
            session,
            yf.Ticker("AAPL").history(start="2017-12-01", end="2017-12-16", auto_adjust=False),
            ticker="AAPL",
        )
        history.upsert(
            session,
            yf.download(
                "SPY", start="2017-12-01", end="2018-01-01", auto_adjust=False, actions=True
            ),
        )
    yf.reset_calls()
    today = dt.date(2018, 1, 31)
    aapl = {d: c for d, c in csv_closes("AAPL").items() if dt.date(2017, 12, 16) <= d <= today}

    added = refresh(db.get_session, ["AAPL", "SPY", "CALM"], today)

    # Each ticker is asked for the days after its last stored one, up to today (end exclusive);
    # CALM, with no bars yet, from first_day.
    assert history_calls(yf_calls) == [
        ("AAPL", dt.date(2017, 12, 16), dt.date(2018, 2, 1), len(aapl)),
        ("SPY", dt.date(2017, 12, 30), dt.date(2018, 2, 1), 0),
        ("CALM", dt.date(2016, 1, 1), dt.date(2018, 2, 1), 0),
    ]
    assert added == {"AAPL": len(aapl), "SPY": 0, "CALM": 0}
    assert len(aapl) == 22  # 9 December days after the 15th, 13 January days
    stored = stored_closes(sql, "AAPL")
    assert {d: c for d, c in stored.items() if d >= dt.date(2017, 12, 16)} == aapl
    count = sql.count("price_history")

    # A second refresh asks again from the next day, gets nothing and writes nothing.
    yf.reset_calls()
    assert refresh(db.get_session, ["AAPL", "SPY"], today) == {"AAPL": 0, "SPY": 0}
    assert [(t, s, r) for t, s, _, r in history_calls(yf_calls)] == [
        ("AAPL", dt.date(2018, 1, 20), 0),
        ("SPY", dt.date(2017, 12, 30), 0),
    ]
    assert sql.count("price_history") == count

    # Up to date (the last stored day is today): no request at all.
    yf.reset_calls()
    assert refresh(db.get_session, ["AAPL"], dt.date(2018, 1, 19)) == {"AAPL": 0}
    assert yf_calls == []


def test_refresh_over_a_weekend_finds_nothing(db: DatabaseManager, yf_calls: list[yf.Call]) -> None:
    with db.get_session() as session:
        bars = yf.Ticker("AAPL").history(start="2018-01-08", end="2018-01-13", auto_adjust=False)
        history.upsert(session, bars, ticker="AAPL")  # up to Friday 12 January
    yf.reset_calls()
    assert refresh(db.get_session, ["AAPL"], dt.date(2018, 1, 14)) == {"AAPL": 0}  # a Sunday
    assert history_calls(yf_calls) == [("AAPL", dt.date(2018, 1, 13), dt.date(2018, 1, 15), 0)]
    # Monday 15 January 2018 was a holiday (Martin Luther King Jr. Day): Tuesday's bar comes next.
    assert refresh(db.get_session, ["AAPL"], dt.date(2018, 1, 16)) == {"AAPL": 1}


def test_a_ticker_new_to_the_database_is_fetched_whole(db: DatabaseManager, sql: RawSQL) -> None:
    assert refresh(db.get_session, ["CALM"], dt.date(2024, 9, 1)) == {"CALM": 662}
    assert stored_closes(sql, "CALM") == csv_closes("CALM")
    assert sql.scalar("SELECT count(*) FROM price_history WHERE dividends > 0") == 10


def test_the_async_refresh_stores_the_same_bars(db: DatabaseManager, sql: RawSQL) -> None:
    with db.get_session() as session:
        bars = yf.Ticker("AAPL").history(start="2017-12-01", end="2018-01-01", auto_adjust=False)
        history.upsert(session, bars, ticker="AAPL")

    async def refresh_one(ticker: str, today: dt.date) -> int:
        async with db.get_async_session() as session:
            last = (await history.async_get_freshness(session, [ticker]))[ticker]
        fetched = await asyncio.to_thread(
            yf.Ticker(ticker).history,
            start=last + dt.timedelta(days=1),
            end=today + dt.timedelta(days=1),
            auto_adjust=False,
        )
        if fetched.empty:
            return 0
        async with db.get_async_session() as session:
            return (await history.async_upsert(session, fetched, ticker=ticker)).inserted

    assert asyncio.run(refresh_one("AAPL", dt.date(2018, 1, 31))) == 13
    assert asyncio.run(refresh_one("AAPL", dt.date(2018, 1, 31))) == 0
    source = {d: c for d, c in csv_closes("AAPL").items() if d >= dt.date(2017, 12, 1)}
    assert stored_closes(sql, "AAPL") == source


def test_an_option_chain_is_stored_and_read_back(db: DatabaseManager) -> None:
    nvda = yf.Ticker("NVDA")
    expiry = nvda.options[0]
    chain = nvda.option_chain(expiry)
    fetched_at = dt.datetime(2024, 9, 27, 21, 0, tzinfo=dt.UTC)
    arguments: dict[str, Any] = {
        "calls": chain.calls,
        "puts": chain.puts,
        "expiration": dt.date.fromisoformat(expiry),
        "underlying_price": chain.underlying["regularMarketPrice"],
        "fetched_at": fetched_at,
    }
    with db.get_session() as session:
        stored = chains.store_chain(session, "NVDA", **arguments)
        assert (stored.inserted, stored.already_stored, stored.rejected) == (198, 0, [])
    with db.get_session() as session:
        again = chains.store_chain(session, "NVDA", **arguments)
        assert (again.inserted, again.already_stored) == (0, 198)
        contracts = chains.get_chain(session, "NVDA", dt.date(2024, 10, 4))
        assert chains.get_expirations(session, "NVDA", today=dt.date(2024, 9, 27)) == [
            dt.date(2024, 10, 4)
        ]
    frame = pd.concat([chain.calls, chain.puts]).set_index("contractSymbol")
    assert sorted(c.contract_symbol for c in contracts) == sorted(frame.index)
    for contract in contracts:
        row = frame.loc[contract.contract_symbol]
        assert contract.strike == Decimal(repr(float(row["strike"]))).quantize(SIX)
        assert contract.bid == Decimal(repr(float(row["bid"]))).quantize(SIX)
        assert contract.last_trade_date == row["lastTradeDate"].to_pydatetime()
        assert contract.underlying_price == Decimal("121.400000")
        if not math.isnan(row["volume"]):
            assert contract.volume == int(row["volume"])
        else:
            assert contract.volume is None
        assert contract.fetched_at == fetched_at


def test_get_or_fetch_calls_yfinance_once_then_hits_the_cache(
    db: DatabaseManager, yf_calls: list[yf.Call]
) -> None:
    fetched: list[str] = []

    def fetch_info() -> dict[str, Any]:
        fetched.append("NVDA")
        return yf.Ticker("NVDA").info

    with db.get_session() as session:
        first = market.get_or_fetch(session, "NVDA", DataType.STOCK_INFO, fetch_info, ttl=3600)
    with db.get_session() as session:
        again = market.get_or_fetch(session, "NVDA", DataType.STOCK_INFO, fetch_info, ttl=3600)
    assert fetched == ["NVDA"]
    assert [c.function for c in yf_calls] == ["info"]
    assert again == first
    assert again["currentPrice"] == 121.4

    statement = yf.Ticker("NVDA").financials
    with db.get_session() as session:
        for _ in range(2):
            cached = market.get_or_fetch(
                session,
                "NVDA",
                DataType.FUNDAMENTALS,
                lambda: yf.Ticker("NVDA").financials,
                ttl=dt.timedelta(days=7),
            )
    assert [c.function for c in yf_calls].count("financials") == 2  # ours, and one fetch
    assert cached.equals(statement)
    assert isinstance(cached.columns, pd.DatetimeIndex)
    assert cached.loc["Total Revenue", dt.datetime(2024, 1, 31)] == 60922000000.0


def test_async_get_or_fetch_shares_one_fetch(db: DatabaseManager, yf_calls: list[yf.Call]) -> None:
    async def main() -> list[Any]:
        async def fetch() -> dict[str, Any]:
            await asyncio.sleep(0.01)
            return await asyncio.to_thread(lambda: yf.Ticker("AAPL").info)

        async def ask() -> Any:
            async with db.get_async_session() as session:
                return await market.async_get_or_fetch(
                    session, "AAPL", DataType.STOCK_INFO, fetch, ttl=3600
                )

        return list(await asyncio.gather(ask(), ask(), ask()))

    answers = asyncio.run(main())
    assert [c.function for c in yf_calls] == ["info"]
    assert answers[0] == answers[1] == answers[2]
    assert answers[0]["regularMarketPrice"] == 178.460007  # AAPL's last close, 2018-01-19
