"""Concurrent bulk writers of overlapping rows: none fails, none deadlocks, no row twice.

Eight writers, each in its own session, store overlapping windows of real data
at once, half of them in reverse order: as tasks on one event loop (the async
form) or in threads (the sync form). Every key ends up stored once, inserted by
exactly one writer, with the values of the files. Concurrent imports of one
cache directory likewise store each entry once and count it once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import pickle
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from database import DatabaseManager
from database.filecache import import_directory, make_key
from database.models import OptionType
from database.options import occ_symbol
from database.repositories import OptionsDataRepository, PriceHistoryRepository
from tests.conftest import RawSQL

# Every PostgreSQL test here runs once more through PgBouncer (transaction pooling).
pytestmark = pytest.mark.pgbouncer

DATA = Path(__file__).resolve().parents[1] / "data"
WRITERS = 8
SNAPSHOT = dt.datetime(2024, 9, 27, 20, 0, tzinfo=dt.UTC)
KINDS = {"calls": OptionType.CALL, "puts": OptionType.PUT}
prices = PriceHistoryRepository()
options = OptionsDataRepository()

FORMS = pytest.mark.parametrize("form", ["async", "sync"])


async def all_at_once(
    db: DatabaseManager, form: str, method: Callable[..., Any], calls: list[dict[str, Any]]
) -> list[Any]:
    """Each call of ``method`` in its own session, all at the same time: as tasks
    (``form="async"``, through the ``async_`` twin) or in threads. Returns the
    results, or the exceptions raised."""
    if form == "async":
        twin = getattr(method.__self__, f"async_{method.__name__}")

        async def task(kwargs: dict[str, Any]) -> Any:
            async with db.get_async_session() as session:
                return await twin(session, **kwargs)

        return await asyncio.gather(*(task(c) for c in calls), return_exceptions=True)
    start = threading.Barrier(len(calls))

    def thread(kwargs: dict[str, Any]) -> Any:
        start.wait()
        with db.get_session() as session:
            return method(session, **kwargs)

    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(thread, c) for c in calls]
    return [f.exception() or f.result() for f in futures]


def failures(results: list[Any]) -> list[str]:
    return [repr(r) for r in results if isinstance(r, BaseException)]


def exact(value: Any, sql: RawSQL) -> Decimal:
    """A stored price as a Decimal (SQLite stores millionths)."""
    return Decimal(value) / (10**6 if sql.backend == "sqlite" else 1)


# -- price history ---------------------------------------------------------------------


def windows() -> list[pd.DataFrame]:
    """Writer i: days [250 i, 250 i + 1000) of AAPL and of SPY, odd writers reversed."""
    bars = []
    for ticker in ("AAPL", "SPY"):
        frame = pd.read_csv(DATA / f"prices/{ticker}.csv", dtype={"Close": str})
        frame = frame[frame["Open"] >= frame["Low"]]  # SPY's two bad Yahoo rows
        bars.append(frame.reset_index(drop=True).assign(Ticker=ticker))
    frames = []
    for i in range(WRITERS):
        window = pd.concat([b.iloc[250 * i : 250 * i + 1000] for b in bars], ignore_index=True)
        frames.append(window.iloc[::-1] if i % 2 else window)
    return frames


@FORMS
async def test_writers_of_overlapping_bars_all_succeed(
    db: DatabaseManager, sql: RawSQL, form: str
) -> None:
    frames = windows()
    calls = [{"data": f.assign(Close=f["Close"].astype(float))} for f in frames]
    results = await all_at_once(db, form, prices.upsert, calls)
    assert failures(results) == []
    union = pd.concat(frames).drop_duplicates(["Ticker", "Date"])
    expected = {(r.Ticker, r.Date): (Decimal(r.Close), r.Volume) for r in union.itertuples()}
    assert len(expected) == 2750 + 2517  # AAPL: 7 x 250 + 1000 days; SPY: all its good ones
    rows = sql.rows("SELECT ticker, date, close, volume FROM price_history")
    assert len(rows) == len(expected)
    assert {(t, str(d)): (exact(c, sql), v) for t, d, c, v in rows} == expected
    assert sum(r.inserted for r in results) == len(expected)  # each key inserted once
    assert sum(r.updated for r in results) == 0
    assert [r.inserted + r.unchanged for r in results] == [len(f) for f in frames]


# -- option chains -----------------------------------------------------------------------


def contracts() -> list[dict[str, Any]]:
    """The real NVDA chain (99 calls, 99 puts) listed for 12 weekly expirations, in key order."""
    sides = {kind: pd.read_csv(DATA / f"options/NVDA-2024-10-04-{kind}.csv") for kind in KINDS}
    listed = []
    for week in range(12):
        expiry = dt.date(2024, 10, 4) + dt.timedelta(weeks=week)
        for kind, frame in sides.items():
            for row in frame.itertuples():
                strike = Decimal(repr(row.strike))
                listed.append(
                    {
                        "contract_symbol": occ_symbol("NVDA", expiry, KINDS[kind], strike),
                        "option_type": KINDS[kind],
                        "expiration": expiry,
                        "strike": strike,
                        "bid": row.bid,
                        "open_interest": row.openInterest,
                    }
                )
    return listed


@FORMS
async def test_writers_of_overlapping_chains_all_succeed(
    db: DatabaseManager, sql: RawSQL, form: str
) -> None:
    listed = contracts()
    stores = []
    for i in range(WRITERS):  # contracts [120 i, 120 i + 1500) of one snapshot
        window = listed[120 * i : 120 * i + 1500]
        stores.append(
            {"ticker": "NVDA", "rows": window[::-1] if i % 2 else window, "fetched_at": SNAPSHOT}
        )
    results = await all_at_once(db, form, options.store_chain, stores)
    assert failures(results) == []
    union = listed[: 120 * (WRITERS - 1) + 1500]
    expected = {c["contract_symbol"]: (c["strike"], c["open_interest"]) for c in union}
    rows = sql.rows("SELECT contract_symbol, strike, open_interest FROM options_data")
    assert len(rows) == len(expected) == 2340
    assert {s: (exact(k, sql), n) for s, k, n in rows} == expected
    assert sum(r.inserted for r in results) == 2340  # each contract inserted once
    assert [r.inserted + r.already_stored for r in results] == [len(s["rows"]) for s in stores]


# -- the file-cache import ---------------------------------------------------------------


def test_concurrent_imports_of_one_directory_store_and_count_each_entry_once(
    db: DatabaseManager, sql: RawSQL, tmp_path: Path
) -> None:
    for number in range(2000):
        entry = {"data": {"n": number}, "timestamp": time.time(), "expiration": 3600}
        (tmp_path / f"{make_key('quote', number)}.cache").write_bytes(pickle.dumps(entry))
    start = threading.Barrier(4)

    def run() -> Any:
        start.wait()
        return import_directory(db, tmp_path, batch_size=250)

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(run) for _ in range(4)]
    results = [f.exception() or f.result() for f in futures]
    assert failures(results) == []
    assert sum(r.imported for r in results) == 2000
    assert sum(r.already_present for r in results) == 3 * 2000
    assert sql.count("market_data_cache") == 2000
