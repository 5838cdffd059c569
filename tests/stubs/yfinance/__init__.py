"""A stand-in for ``yfinance``, for the tests only: no network, only ``tests/data``.

Put ``tests/stubs`` first on ``sys.path`` (``python -m tests.samples FILE
--stub-yfinance`` does) and ``import yfinance as yf`` gets this module. It serves
the project's own test data (see ``tests/data/README.md``) in the shapes of
yfinance 0.2.51 and later, as its documentation and source describe the 0.2.5x
API (``download()`` defaults to ``auto_adjust=True`` and warns when it is not
given since 0.2.51; two-level ``(Price, Ticker)`` columns since 0.2.48). It was
written without yfinance installed: signatures keep yfinance's parameter names
and defaults, but only what the README's recipe and the tests use is modelled:

- ``Ticker(t).history(period="1mo", interval="1d", start=None, end=None,
  actions=True, auto_adjust=True, ...)``: one level of columns ``Open, High,
  Low, Close, Adj Close, Volume, Dividends, Stock Splits`` (``Adj Close`` only
  with ``auto_adjust=False``; with ``True``, Open/High/Low/Close are scaled by
  ``Adj Close / Close`` as yfinance does), indexed by a ``Date``
  DatetimeIndex at midnight America/New_York. ``start`` is inclusive, ``end``
  exclusive, both read as exchange-local dates; nothing in range: an empty frame
  and an error on the ``yfinance`` logger ("possibly delisted; no price data
  found"), as yfinance does.
- ``Ticker(t).info``: a dict; ``Ticker(t).options``: a tuple of ``YYYY-MM-DD``
  strings; ``Ticker(t).option_chain(date)``: the namedtuple ``Options(calls, puts,
  underlying)``, ``lastTradeDate`` as UTC timestamps; ``Ticker(t).financials`` /
  ``income_stmt``: line items as rows, fiscal-year ends as columns, newest first.
- ``download(tickers, start=, end=, auto_adjust=, group_by="column", actions=False,
  multi_level_index=True, ...)``: two-level ``(Price, Ticker)`` columns (``(Ticker,
  Price)`` with ``group_by="ticker"``), Price level sorted, a tz-naive ``Date``
  index (``ignore_tz`` defaults to True for daily bars).

What it serves (everything else has no data, as an unknown symbol has none):
daily bars of AAPL (2004-08-19 .. 2018-01-19), SPY (2007-12-31 .. 2017-12-29),
GOOG (2016-01-04 .. 2017-12-29, from the download file) and CALM (2022-01-03 ..
2024-08-21, with its real dividends); NVDA's option chain for 2024-10-04 as
fetched after the close of 2024-09-27 (NVDA at 121.40) and its annual
financials. The Yahoo CSV downloads (AAPL, SPY, GOOG) carry no actions, so their
``Dividends`` and ``Stock Splits`` are 0.0 here, which Yahoo's are not on
ex-dividend days. ``info`` holds only what these files give (prices of the last
bars, for NVDA its close and revenue): real ``info`` has far more keys. NVDA's
financials file also holds balance-sheet lines (Net Debt, Total Debt...): it is
returned whole by ``financials`` and ``income_stmt``. Only
daily bars (``interval="1d"``); no progress bar; no caching, no rate limits.

Every call is recorded in ``calls`` (``Call(function, tickers, start, end,
rows)``), so a test can count what was fetched; ``reset_calls()`` empties it.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import warnings
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

__version__ = "0.2.54+stand-in"
__all__ = ["Call", "Ticker", "calls", "download", "reset_calls"]

DATA = Path(__file__).resolve().parents[2] / "data"
EXCHANGE_TZ = "America/New_York"
PRICE_COLUMNS = ["Open", "High", "Low", "Close", "Adj Close", "Volume"]
ACTIONS = ["Dividends", "Stock Splits"]
NVDA_EXPIRATION = "2024-10-04"
NVDA_CLOSE = 121.40  # NVDA's close on 2024-09-27, when the chain was fetched (tests/data/README.md)

logger = logging.getLogger("yfinance")

Options = namedtuple("Options", ["calls", "puts", "underlying"])


class YFPricesMissingError(Exception):
    """``history(raise_errors=True)`` found no bars (yfinance's exception of that name)."""


@dataclass(frozen=True)
class Call:
    """One call of the stand-in: ``function`` (history, download, info, options,
    option_chain, financials), the tickers, the exchange-local dates asked for
    (``end`` exclusive; None when not given), and how many rows it returned."""

    function: str
    tickers: tuple[str, ...]
    start: dt.date | None = None
    end: dt.date | None = None
    rows: int = 0


calls: list[Call] = []


def reset_calls() -> None:
    calls.clear()


# -- the data -------------------------------------------------------------------------------


def _from_yahoo_csv(frame: pd.DataFrame) -> pd.DataFrame:
    frame.index = pd.DatetimeIndex(pd.to_datetime(frame.index), name="Date").tz_localize(
        EXCHANGE_TZ
    )
    for column in ACTIONS:
        frame[column] = 0.0
    return frame


@functools.cache
def _bars(ticker: str) -> pd.DataFrame | None:
    """All daily bars of a ticker, unadjusted (``Adj Close`` kept), or None."""
    frame: pd.DataFrame
    if ticker in ("AAPL", "SPY"):
        frame = _from_yahoo_csv(pd.read_csv(DATA / f"prices/{ticker}.csv", index_col="Date"))
    elif ticker == "GOOG":
        download_file = DATA / "downloads/AAPL-GOOG-download.csv"
        both = pd.read_csv(download_file, header=[0, 1], index_col=0)
        frame = _from_yahoo_csv(both.xs("GOOG", axis=1, level="Ticker").copy())
    elif ticker == "CALM":
        frame = pd.read_csv(DATA / "prices-history/CALM.csv", index_col="Datetime")
        index = pd.to_datetime(frame.index, utc=True).tz_convert(EXCHANGE_TZ)
        frame.index = pd.DatetimeIndex(index, name="Date")
    else:
        return None
    frame = frame[[*PRICE_COLUMNS, *ACTIONS]].astype("float64")
    frame["Volume"] = frame["Volume"].astype("int64")
    frame.index = frame.index.as_unit("ns")  # yfinance builds it from epoch seconds
    frame.columns.name = None
    return frame


@functools.cache
def _chain_frame(kind: str) -> pd.DataFrame:
    frame = pd.read_csv(DATA / f"options/NVDA-{NVDA_EXPIRATION}-{kind}.csv", index_col=0)
    frame = frame.reset_index(drop=True)
    frame["lastTradeDate"] = pd.to_datetime(frame["lastTradeDate"], utc=True).dt.as_unit("ns")
    return frame


@functools.cache
def _financials() -> pd.DataFrame:
    frame = pd.read_csv(DATA / "fundamentals/NVDA-financials.csv", index_col=0)
    frame.columns = pd.to_datetime(frame.columns)
    frame.index.name = None
    return frame[frame.columns[::-1]]  # newest first, as yfinance has them


def _empty_history() -> pd.DataFrame:
    """yfinance's ``utils.empty_df()``: what ``history()`` returns when there are no bars."""
    empty = pd.DataFrame(index=pd.DatetimeIndex([], name="Date"), columns=PRICE_COLUMNS)
    return empty.astype("float64")


# -- dates ----------------------------------------------------------------------------------


def _moment(value: Any) -> pd.Timestamp:
    """A start or end as yfinance reads it: epoch seconds, or a date/datetime/str taken
    in the exchange's time zone when naive."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return pd.Timestamp(value, unit="s", tz="UTC").tz_convert(EXCHANGE_TZ)
    stamp = pd.Timestamp(value)
    return stamp.tz_localize(EXCHANGE_TZ) if stamp.tzinfo is None else stamp.tz_convert(EXCHANGE_TZ)


_PERIOD = re.compile(r"^(\d+)(d|wk|mo|y)$")


def _period_start(period: str, end: pd.Timestamp) -> pd.Timestamp | None:
    if period == "max":
        return None
    if period == "ytd":
        return pd.Timestamp(end.year, 1, 1, tz=EXCHANGE_TZ)
    match = _PERIOD.fullmatch(period)
    if match is None:
        raise ValueError(f"Period '{period}' is invalid, must be one of 1d, 5d, 1mo, ..., ytd, max")
    count, unit = int(match[1]), match[2]
    offset = {
        "d": pd.DateOffset(days=count),
        "wk": pd.DateOffset(weeks=count),
        "mo": pd.DateOffset(months=count),
        "y": pd.DateOffset(years=count),
    }[unit]
    return (end - offset).normalize()


def _bounds(
    period: str | None, start: Any, end: Any
) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    now = pd.Timestamp.now(tz=EXCHANGE_TZ)
    stop = now if end is None else _moment(end)
    if start is not None:
        return _moment(start), stop
    if period is None:
        return None, stop
    return _period_start(period, stop), stop


def _day(stamp: pd.Timestamp | None) -> dt.date | None:
    return None if stamp is None else stamp.date()


# -- the API --------------------------------------------------------------------------------


def _history(
    ticker: str,
    *,
    period: str | None,
    interval: str,
    start: Any,
    end: Any,
    actions: bool,
    auto_adjust: bool,
    raise_errors: bool,
) -> tuple[pd.DataFrame, pd.Timestamp | None, pd.Timestamp | None]:
    if interval != "1d":
        raise NotImplementedError("the yfinance stand-in has daily bars only (interval='1d')")
    first, stop = _bounds(period, start, end)
    bars = _bars(ticker)
    frame = _empty_history() if bars is None else bars.copy()
    if bars is not None and first is not None:
        frame = frame[frame.index >= first]
    if bars is not None and stop is not None:
        frame = frame[frame.index < stop]
    if frame.empty:
        span = f"1d {_day(first)} -> {_day(stop)}" if first is not None else f"period={period}"
        message = f"${ticker}: possibly delisted; no price data found  ({span})"
        if raise_errors:
            raise YFPricesMissingError(message)
        logger.error(message)
        return _empty_history(), first, stop
    if auto_adjust:
        ratio = frame["Adj Close"] / frame["Close"]
        for column in ("Open", "High", "Low", "Close"):
            frame[column] = frame[column] * ratio
        frame = frame.drop(columns="Adj Close")
    if not actions:
        frame = frame.drop(columns=ACTIONS)
    return frame, first, stop


class Ticker:
    """``yf.Ticker(symbol)``: the stand-in's data for one symbol."""

    def __init__(self, ticker: str, session: Any = None) -> None:
        self.ticker = ticker.upper()
        self.session = session

    def __repr__(self) -> str:
        return f"yfinance.Ticker object <{self.ticker}>"

    def history(
        self,
        period: str | None = "1mo",
        interval: str = "1d",
        start: Any = None,
        end: Any = None,
        prepost: bool = False,
        actions: bool = True,
        auto_adjust: bool = True,
        back_adjust: bool = False,
        repair: bool = False,
        keepna: bool = False,
        proxy: Any = None,
        rounding: bool = False,
        timeout: float | None = 10,
        raise_errors: bool = False,
    ) -> pd.DataFrame:
        frame, first, stop = _history(
            self.ticker,
            period=period,
            interval=interval,
            start=start,
            end=end,
            actions=actions,
            auto_adjust=auto_adjust,
            raise_errors=raise_errors,
        )
        calls.append(Call("history", (self.ticker,), _day(first), _day(stop), len(frame)))
        return frame

    @property
    def info(self) -> dict[str, Any]:
        calls.append(Call("info", (self.ticker,)))
        bars = _bars(self.ticker)
        if bars is not None:
            last, previous = bars.iloc[-1], bars.iloc[-2]
            year = bars.iloc[-252:]
            return {
                "symbol": self.ticker,
                "currency": "USD",
                "exchangeTimezoneName": EXCHANGE_TZ,
                "previousClose": float(previous["Close"]),
                "open": float(last["Open"]),
                "dayLow": float(last["Low"]),
                "dayHigh": float(last["High"]),
                "volume": int(last["Volume"]),
                "regularMarketPrice": float(last["Close"]),
                "currentPrice": float(last["Close"]),
                "fiftyTwoWeekLow": float(year["Low"].min()),
                "fiftyTwoWeekHigh": float(year["High"].max()),
            }
        if self.ticker == "NVDA":
            return {
                "symbol": "NVDA",
                "currency": "USD",
                "exchangeTimezoneName": EXCHANGE_TZ,
                "regularMarketPrice": NVDA_CLOSE,
                "currentPrice": NVDA_CLOSE,
                "totalRevenue": int(_financials().loc["Total Revenue"].iloc[0]),
            }
        return {"trailingPegRatio": None}  # what yfinance gives for an unknown symbol

    @property
    def options(self) -> tuple[str, ...]:
        calls.append(Call("options", (self.ticker,)))
        return (NVDA_EXPIRATION,) if self.ticker == "NVDA" else ()

    def option_chain(self, date: str | None = None, tz: Any = None) -> Any:
        expirations = (NVDA_EXPIRATION,) if self.ticker == "NVDA" else ()
        chosen = date if date is not None else (expirations[0] if expirations else None)
        if chosen not in expirations:
            raise ValueError(
                f"Expiration `{date}` cannot be found. "
                f"Available expirations are: [{', '.join(expirations)}]"
            )
        chain_calls, puts = _chain_frame("calls").copy(), _chain_frame("puts").copy()
        if tz is not None:
            for frame in (chain_calls, puts):
                frame["lastTradeDate"] = frame["lastTradeDate"].dt.tz_convert(tz)
        underlying = {
            "symbol": "NVDA",
            "currency": "USD",
            "exchangeTimezoneName": EXCHANGE_TZ,
            "regularMarketPrice": NVDA_CLOSE,
        }
        rows = len(chain_calls) + len(puts)
        calls.append(Call("option_chain", (self.ticker,), rows=rows))
        return Options(calls=chain_calls, puts=puts, underlying=underlying)

    @property
    def financials(self) -> pd.DataFrame:
        return self.get_income_stmt()

    @property
    def income_stmt(self) -> pd.DataFrame:
        return self.get_income_stmt()

    def get_income_stmt(
        self, as_dict: bool = False, pretty: bool = False, freq: str = "yearly"
    ) -> Any:
        if freq != "yearly":
            raise NotImplementedError("the yfinance stand-in has yearly statements only")
        frame = _financials().copy() if self.ticker == "NVDA" else pd.DataFrame()
        calls.append(Call("financials", (self.ticker,), rows=len(frame)))
        return frame.to_dict() if as_dict else frame


def _ticker_list(tickers: str | list[str] | tuple[str, ...]) -> list[str]:
    given = re.split(r"[\s,]+", tickers.strip()) if isinstance(tickers, str) else list(tickers)
    return sorted({t.upper() for t in given if t})


def download(
    tickers: str | list[str] | tuple[str, ...],
    start: Any = None,
    end: Any = None,
    actions: bool = False,
    threads: bool | int = True,
    ignore_tz: bool | None = None,
    group_by: str = "column",
    auto_adjust: bool | None = None,
    back_adjust: bool = False,
    repair: bool = False,
    keepna: bool = False,
    progress: bool = True,
    period: str = "max",
    interval: str = "1d",
    prepost: bool = False,
    proxy: Any = None,
    rounding: bool = False,
    timeout: float | None = 10,
    session: Any = None,
    multi_level_index: bool = True,
) -> pd.DataFrame:
    if auto_adjust is None:
        warnings.warn(
            "YF.download() has changed argument auto_adjust default to True",
            FutureWarning,
            stacklevel=2,
        )
        auto_adjust = True
    if ignore_tz is None:
        ignore_tz = True  # daily bars
    symbols = _ticker_list(tickers)
    frames: dict[str, pd.DataFrame] = {}
    first = stop = None
    for symbol in symbols:
        frame, first, stop = _history(
            symbol,
            period=period,
            interval=interval,
            start=start,
            end=end,
            actions=actions,
            auto_adjust=auto_adjust,
            raise_errors=False,
        )
        if ignore_tz:
            frame.index = frame.index.tz_localize(None)
        frames[symbol] = frame
    shape = next((f for f in frames.values() if not f.empty), _empty_history())
    for symbol, frame in frames.items():
        if frame.empty:  # a failed download: its columns are all NaN
            frames[symbol] = pd.DataFrame(index=frame.index, columns=shape.columns, dtype="float64")
    data = pd.concat(
        frames.values(), axis=1, sort=True, keys=frames.keys(), names=["Ticker", "Price"]
    )
    data.index = pd.DatetimeIndex(pd.to_datetime(data.index), name="Date")
    if group_by == "column":
        data.columns = data.columns.swaplevel(0, 1)
        data = data.sort_index(level=0, axis=1)
    if not multi_level_index and len(symbols) == 1:
        data.columns = data.columns.droplevel("Ticker")
    calls.append(Call("download", tuple(symbols), _day(first), _day(stop), len(data)))
    return data
