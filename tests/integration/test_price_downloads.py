"""yf.download() frames as yfinance really returns them, and Yahoo's small range errors,
on both backends and in both forms; what is stored is read back with plain SQL."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from database.exceptions import ValidationError
from database.prices import PriceValidationError, RepairedBar
from database.repositories import PriceHistoryRepository
from tests.conftest import RawSQL
from tests.integration.conftest import UnitOfWork

# Every PostgreSQL test here runs once more through PgBouncer (transaction pooling).
pytestmark = pytest.mark.pgbouncer

DOWNLOADS = Path(__file__).resolve().parents[1] / "data" / "downloads"
PAIR = DOWNLOADS / "AAPL-GOOG-download.csv"  # (Price, Ticker), auto_adjust=False
SPY = DOWNLOADS / "SPY-download.csv"  # one ticker, still two levels; 2 real Open < Low bars
FIELDS = ("open", "high", "low", "close", "adj_close", "volume")
prices = PriceHistoryRepository()

Bars = dict[tuple[str, str], dict[str, float]]  # (ticker, ISO day) -> field -> value


def download(path: Path) -> pd.DataFrame:
    """The file as yf.download(..., auto_adjust=False) hands it over (see its README)."""
    return pd.read_csv(path, header=[0, 1], index_col=0, parse_dates=True)


def bars_in_file(path: Path) -> Bars:
    """The file's bars, read with the csv module alone: the truth to compare with."""
    with path.open(newline="") as file:
        prices_row, tickers_row, _, *rows = list(csv.reader(file))
    names = {"Adj Close": "adj_close"}
    bars: Bars = {}
    for row in rows:
        for price, ticker, cell in zip(prices_row[1:], tickers_row[1:], row[1:], strict=True):
            field = names.get(price, price.lower())
            bars.setdefault((ticker, row[0]), {})[field] = float(cell)
    return bars


def auto_adjusted(bars: Bars) -> Bars:
    """What auto_adjust=True gives: Open/High/Low scaled by Adj Close / Close, Close =
    Adj Close, no Adj Close (yfinance's utils.auto_adjust)."""
    adjusted: Bars = {}
    for key, bar in bars.items():
        ratio = bar["adj_close"] / bar["close"]
        adjusted[key] = {f: bar[f] * ratio for f in ("open", "high", "low")}
        adjusted[key] |= {"close": bar["adj_close"], "volume": bar["volume"]}
    return adjusted


def yfinance_auto_adjust(frame: pd.DataFrame) -> pd.DataFrame:
    """The same on a (Price, Ticker) frame, as yfinance does it."""
    ratio = frame["Adj Close"] / frame["Close"]
    out = frame.drop(columns="Adj Close", level="Price").copy()
    for price in ("Open", "High", "Low"):
        for ticker in ratio.columns:
            out[(price, ticker)] = frame[(price, ticker)] * ratio[ticker]
    for ticker in ratio.columns:
        out[("Close", ticker)] = frame[("Adj Close", ticker)]
    return out


def by_ticker(frame: pd.DataFrame) -> pd.DataFrame:
    """group_by="ticker": (Ticker, Price) columns, each ticker's block together."""
    swapped = frame.swaplevel(axis=1)
    return swapped[sorted(swapped.columns, key=lambda c: c[0])]


def as_datetime_index(frame: pd.DataFrame) -> pd.DataFrame:
    """A tz-aware index named "Datetime", as yfinance gives for intraday intervals."""
    out = frame.copy()
    out.index = out.index.tz_localize("America/New_York").rename("Datetime")
    return out


def stored(sql: RawSQL) -> dict[tuple[str, str], dict[str, int | None]]:
    """Every stored bar, prices in millionths, read with plain SQL."""
    rows = sql.rows(
        "SELECT ticker, date, open, high, low, close, adj_close, volume FROM price_history"
    )
    scale = 1 if sql.backend == "sqlite" else 10**6
    out: dict[tuple[str, str], dict[str, int | None]] = {}
    for ticker, day, *values in rows:
        out[(ticker, str(day))] = {
            f: None if v is None else int(v if f == "volume" else v * scale)
            for f, v in zip(FIELDS, values, strict=True)
        }
    return out


def expected(bars: Bars) -> dict[tuple[str, str], dict[str, int | None]]:
    """The bars as stored: millionths (half to even), the range widened to the open
    and close (the repair policy; the files' only inconsistencies are small)."""
    out: dict[tuple[str, str], dict[str, int | None]] = {}
    for key, bar in bars.items():
        units: dict[str, int | None] = {
            f: None if f not in bar else round(bar[f] * (1 if f == "volume" else 10**6))
            for f in FIELDS
        }
        ends = [units["open"], units["close"], units["low"], units["high"]]
        units["low"] = min(u for u in ends if u is not None)
        units["high"] = max(u for u in ends if u is not None)
        out[key] = units
    return out


SPY_REPAIRS = [
    ("SPY", dt.date(2015, 3, 5), "low", Decimal("209.850006"), Decimal("209.419998")),
    ("SPY", dt.date(2015, 3, 30), "low", Decimal("206.960007"), Decimal("205.740005")),
]

Layout = Callable[[pd.DataFrame], pd.DataFrame]
LAYOUTS: dict[str, tuple[Path, Layout, bool]] = {
    # name: (file, how yfinance would have laid it out, auto_adjust)
    "column-one-ticker": (SPY, lambda f: f, False),
    "column-many-tickers": (PAIR, lambda f: f, False),
    "ticker-one-ticker": (SPY, by_ticker, False),
    "ticker-many-tickers": (PAIR, by_ticker, False),
    "auto-adjust-one-ticker": (SPY, yfinance_auto_adjust, True),
    "auto-adjust-by-ticker": (PAIR, lambda f: by_ticker(yfinance_auto_adjust(f)), True),
    "datetime-index": (PAIR, as_datetime_index, False),
    "datetime-index-by-ticker": (SPY, lambda f: by_ticker(as_datetime_index(f)), False),
    "index-reset-column-order": (PAIR, lambda f: f.reset_index(), False),
    "index-reset-ticker-order": (SPY, lambda f: by_ticker(f).reset_index(), False),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
async def test_each_download_layout_stores_exactly_the_bars_of_the_file(
    uow: UnitOfWork, sql: RawSQL, layout: str
) -> None:
    path, lay_out, adjusted = LAYOUTS[layout]
    truth = bars_in_file(path)
    if adjusted:
        truth = auto_adjusted(truth)
    frame = lay_out(download(path))
    result = await uow(prices.upsert, frame)
    assert (result.inserted, result.updated, result.unchanged) == (len(truth), 0, 0)
    assert result.rejected == []
    assert stored(sql) == expected(truth)
    if path == SPY:
        repairs = [(r.ticker, r.date, r.field) for r in result.repaired]
        assert repairs == [r[:3] for r in SPY_REPAIRS]
    else:
        assert result.repaired == []
    again = await uow(prices.upsert, frame)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, len(truth))


async def test_the_real_open_below_the_low_is_stored_with_the_low_widened_and_reported(
    uow: UnitOfWork, sql: RawSQL
) -> None:
    result = await uow(prices.upsert, download(SPY), ticker="spy")
    assert result.inserted == 252
    assert result.repaired == [
        RepairedBar(t, d, f, old, new, "the open is below the low")
        for t, d, f, old, new in SPY_REPAIRS
    ]
    assert str(result.repaired[0]) == (
        "SPY 2015-03-05: low 209.850006 -> 209.419998 (the open is below the low)"
    )
    bar = stored(sql)[("SPY", "2015-03-05")]
    assert (bar["open"], bar["low"], bar["high"], bar["close"]) == (
        209_419_998,
        209_419_998,
        210_800_003,
        210_460_007,
    )


async def test_repair_false_refuses_the_inconsistent_bars_as_before(
    uow: UnitOfWork, sql: RawSQL
) -> None:
    with pytest.raises(PriceValidationError) as caught:
        await uow(prices.upsert, download(SPY), repair=False)
    assert [(r.date, r.field, r.reason) for r in caught.value.rejected] == [
        (dt.date(2015, 3, 5), "open", "is below the low"),
        (dt.date(2015, 3, 30), "open", "is below the low"),
    ]
    assert sql.count("price_history") == 0


async def test_a_close_just_above_the_high_widens_the_high(uow: UnitOfWork, sql: RawSQL) -> None:
    rows = [
        {"Date": "2024-01-02", "Open": 10.0, "High": 10.0, "Low": 9.5, "Close": 10.05},
        # 1e-7 past the high: the same at 6 places, so nothing to repair
        {"Date": "2024-01-03", "Open": 10.0000001, "High": 10.0, "Low": 9.5, "Close": 9.9},
    ]
    result = await uow(prices.upsert, rows, ticker="TEST")
    assert [(r.date.day, r.field, r.old, r.new, r.reason) for r in result.repaired] == [
        (2, "high", Decimal("10.000000"), Decimal("10.050000"), "the close is above the high")
    ]
    bars = stored(sql)
    assert bars[("TEST", "2024-01-02")]["high"] == 10_050_000
    assert bars[("TEST", "2024-01-03")]["high"] == bars[("TEST", "2024-01-03")]["open"]


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"Open": 190.0}, "open", "is below the low by more than 2%"),  # 9% below
        ({"Close": 230.0}, "close", "is above the high by more than 2%"),
        ({"Low": 211.0, "High": 210.0}, "low", "is above the high"),  # inverted
        ({"Close": float("nan")}, "close", "is required"),
        ({"Open": 0.0}, "open", "must be greater than 0"),
        ({"Low": -209.0}, "low", "must be greater than 0"),
    ],
    ids=["far-below", "far-above", "inverted", "nan-close", "zero-open", "negative-low"],
)
async def test_truly_bad_bars_in_a_download_are_still_refused(
    uow: UnitOfWork, sql: RawSQL, change: dict[str, float], field: str, reason: str
) -> None:
    frame = download(SPY)
    day = pd.Timestamp("2015-03-04")
    for price, value in change.items():
        frame.loc[day, (price, "SPY")] = value
    with pytest.raises(PriceValidationError) as caught:
        await uow(prices.upsert, frame)
    assert [(r.date, r.field, r.reason) for r in caught.value.rejected] == [
        (dt.date(2015, 3, 4), field, reason)
    ]
    assert sql.count("price_history") == 0
    kept = await uow(prices.upsert, frame, skip_invalid=True)
    assert (kept.inserted, len(kept.rejected), len(kept.repaired)) == (251, 1, 2)
    assert ("SPY", "2015-03-04") not in stored(sql)


async def test_a_day_a_ticker_did_not_trade_is_no_bar_of_it(uow: UnitOfWork, sql: RawSQL) -> None:
    # A download of tickers with different calendars spans the union of their days.
    frame = download(PAIR)
    frame.loc[frame.index[-10:], frame.columns.get_level_values("Ticker") == "GOOG"] = float("nan")
    frame.loc[frame.index[0], ("Close", "AAPL")] = float("nan")  # one missing value: bad
    result = await uow(prices.upsert, frame, skip_invalid=True)
    assert result.inserted == 2 * 503 - 10 - 1
    assert [(r.ticker, r.date, r.field) for r in result.rejected] == [
        ("AAPL", dt.date(2016, 1, 4), "close")
    ]
    assert sql.scalar("SELECT count(*) FROM price_history WHERE ticker = 'GOOG'") == 493


@pytest.mark.parametrize("given", ["AAPL", "goog", "SPY"])
async def test_ticker_must_agree_with_the_column_level(
    uow: UnitOfWork, sql: RawSQL, given: str
) -> None:
    with pytest.raises(ValidationError, match="does not match") as caught:
        await uow(prices.upsert, download(PAIR), ticker=given)
    assert caught.value.field == "ticker"
    with pytest.raises(ValidationError, match="does not match"):
        await uow(prices.upsert, download(SPY), ticker="AAPL")
    assert sql.count("price_history") == 0


async def test_unnamed_levels_are_told_apart_by_their_labels(uow: UnitOfWork) -> None:
    frame = by_ticker(download(PAIR))
    frame.columns = frame.columns.set_names([None, None])
    assert (await uow(prices.upsert, frame)).inserted == 2 * 503


@pytest.mark.parametrize(
    ("columns", "match"),
    [
        (pd.MultiIndex.from_tuples([("Close", "SPY", "x")]), "must be one level, or two"),
        (pd.MultiIndex.from_tuples([("Close", "Open")]), "no level of price fields alone"),
        (pd.MultiIndex.from_tuples([("Close", "SPY"), ("Close", "SPY")]), "more than one"),
        (pd.MultiIndex.from_tuples([("Bogus", "SPY")], names=["Price", "Ticker"]), "Bogus"),
    ],
    ids=["three-levels", "ambiguous", "field-twice", "unknown-field"],
)
async def test_two_level_frames_it_cannot_read_are_refused(
    uow: UnitOfWork, sql: RawSQL, columns: pd.MultiIndex, match: str
) -> None:
    frame = pd.DataFrame(
        [[200.0] * len(columns)],
        columns=columns,
        index=pd.DatetimeIndex(["2024-01-02"], name="Date"),
    )
    with pytest.raises(ValidationError, match=match):
        await uow(prices.upsert, frame)
    assert sql.count("price_history") == 0
