"""Partitioned vs unpartitioned market tables on PostgreSQL: ingest, reads, retention, sizes.

    python bench/bench_partitions.py            # 1M bars, 2M option rows (a few minutes)
    python bench/bench_partitions.py --scale    # 10M bars, 20M option rows (not in CI)
    python bench/bench_partitions.py --url postgresql://...   # a server of yours

Two databases on one server: one at this package's head (price_history by
year, options_data by month, migration 0005), one downgraded to 0004 (plain
tables), loaded with the same rows. Bars go in through
``PriceHistoryRepository.upsert`` (the library); option snapshots by COPY
(twenty chains a month, too many for store_chain in a benchmark's time), then
``store_chain`` is timed on its own. Every read is the library's call, the
median of --rounds runs, printed for both layouts with their ratio
(partitioned / plain). The plans show which partitions each read touches.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import postgres
from database import DatabaseManager, migrate, partitions
from database.repositories import OptionsDataRepository, PriceHistoryRepository
from tests.conftest import recreate_database

FIRST_DAY = dt.date(2016, 1, 4)
SNAPSHOT_STEP = dt.timedelta(days=15)  # two snapshots a month
CONTRACTS_PER_TICKER = 500


def median_time(call: Callable[[], Any], rounds: int) -> float:
    call()  # warm: plans and caches
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bar_frame(tickers: list[str], days: pd.DatetimeIndex) -> pd.DataFrame:
    count = len(tickers) * len(days)
    rng = np.random.default_rng(len(tickers))
    close = np.round(rng.uniform(10, 500, count), 2)
    return pd.DataFrame(
        {
            "ticker": np.repeat(tickers, len(days)),
            "Open": close,
            "High": close + 1,
            "Low": close - 1,
            "Close": close,
            "Volume": rng.integers(1_000, 10_000_000, count),
        },
        index=pd.DatetimeIndex(np.tile(days.values, len(tickers)), name="Date"),
    )


def load_bars(url: str, tickers: list[str], days: pd.DatetimeIndex) -> float:
    """Through the library, 100 tickers a call; seconds."""
    manager = DatabaseManager(url)
    prices = PriceHistoryRepository()
    started = time.perf_counter()
    for first in range(0, len(tickers), 100):
        with manager.get_session() as session:
            prices.upsert(session, bar_frame(tickers[first : first + 100], days))
    elapsed = time.perf_counter() - started
    manager.close()
    return elapsed


def snapshot_times(snapshots: int) -> list[dt.datetime]:
    start = dt.datetime(2025, 1, 2, 21, tzinfo=dt.UTC)
    return [start + n * SNAPSHOT_STEP for n in range(snapshots)]


def load_options(url: str, tickers: list[str], snapshots: list[dt.datetime]) -> float:
    """COPY every snapshot's contracts (partitions made first where partitioned); seconds."""
    manager = DatabaseManager(url)
    with manager.engine.begin() as connection:
        for when in snapshots:
            partitions.ensure(connection, partitions.OPTIONS_DATA, [when.date()])
    manager.close()
    columns = "id, ticker, contract_symbol, option_type, strike, expiration, bid, ask, fetched_at"
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        for when in snapshots:
            expiry = (when + dt.timedelta(days=30)).date()
            with conn.cursor().copy(f"COPY options_data ({columns}) FROM STDIN") as copy:
                for ticker in tickers:
                    for n in range(CONTRACTS_PER_TICKER):
                        kind = "call" if n % 2 else "put"
                        strike = 50 + n
                        symbol = f"{ticker}{expiry:%y%m%d}{kind[0].upper()}{strike * 1000:08d}"
                        copy.write_row(
                            (uuid.uuid4(), ticker, symbol, kind, strike, expiry, 1.0, 1.1, when)
                        )
        conn.execute("ANALYZE options_data")
    return time.perf_counter() - started


def bytes_per_row(url: str, table: str) -> float:
    with psycopg.connect(url) as conn:
        conn.execute(f"ANALYZE {table}")
        size, rows = conn.execute(
            "SELECT pg_total_relation_size(%s::regclass)"
            " + coalesce((SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
            " WHERE inhparent = %s::regclass), 0), (SELECT count(*) FROM " + table + ")",
            (table, table),
        ).fetchone() or (0, 1)
    return float(size) / max(int(rows), 1)


def plan(url: str, sql: str, params: tuple[Any, ...]) -> list[str]:
    """The partitions a statement's plan scans."""
    with psycopg.connect(url) as conn:
        lines = [r[0] for r in conn.execute("EXPLAIN (COSTS OFF) " + sql, params).fetchall()]
    scanned = set()
    for line in lines:
        for word in line.replace("(", " ").split():
            if partitions.PARTITION_NAME.match(word):
                scanned.add(word)
    return sorted(scanned)


def chain_writer(
    options: OptionsDataRepository, expiry: dt.date, around: dt.datetime
) -> Callable[[Any], Any]:
    """store_chain of 1,000 contracts, a new snapshot (one second later) each call."""
    rows = [
        {"strike": 50 + n, "option_type": "call" if n % 2 else "put", "expiration": expiry}
        for n in range(1000)
    ]
    seconds = iter(range(1, 100_000))

    def store(session: Any) -> Any:
        when = around + dt.timedelta(seconds=next(seconds))
        return options.store_chain(session, "NEW", rows=rows, fetched_at=when)

    return store


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a PostgreSQL server URL (default: a throwaway server)")
    parser.add_argument("--scale", action="store_true", help="10M bars and 20M option rows")
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    bar_tickers = 10_000 if arguments.scale else 1_000
    option_tickers = 2_000 if arguments.scale else 200
    days = pd.bdate_range(FIRST_DAY, periods=1_000)
    snapshots = snapshot_times(20)
    tickers = [f"T{n:05d}" for n in range(bar_tickers)]
    underlyings = [f"U{n:04d}" for n in range(option_tickers)]
    bars = bar_tickers * len(days)
    contracts = option_tickers * CONTRACTS_PER_TICKER * len(snapshots)
    per_snapshot = option_tickers * CONTRACTS_PER_TICKER
    print(f"{bars:,} bars ({bar_tickers:,} tickers x {len(days)} days)")
    print(f"{contracts:,} option rows ({len(snapshots)} snapshots of {per_snapshot:,})")

    with postgres(arguments.url) as server:
        urls = {
            "partitioned": recreate_database(server, "bench_partitioned"),
            "plain": recreate_database(server, "bench_plain"),
        }
        migrate.upgrade(urls["partitioned"])
        migrate.upgrade(urls["plain"])
        migrate.downgrade(urls["plain"], "0004")  # the tables as they were: not partitioned

        results: dict[str, dict[str, float]] = {layout: {} for layout in urls}
        for layout, url in urls.items():
            seconds = load_bars(url, tickers, days)
            results[layout]["ingest bars (rows/s)"] = bars / seconds
            seconds = load_options(url, underlyings, snapshots)
            results[layout]["load option rows by COPY (rows/s)"] = contracts / seconds
            results[layout]["bytes per bar"] = bytes_per_row(url, "price_history")
            results[layout]["bytes per option row"] = bytes_per_row(url, "options_data")
            print(f"loaded {layout}", flush=True)

        # Settle both before any read: left to autovacuum, the vacuum of the rows just
        # loaded would run during the other layout's reads.
        for url in urls.values():
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM (ANALYZE) price_history")
                conn.execute("VACUUM (ANALYZE) options_data")
            print(f"vacuumed {url.rsplit('/', 1)[-1]}", flush=True)

        prices, options = PriceHistoryRepository(), OptionsDataRepository()
        middle = snapshots[len(snapshots) // 2]
        expiry = (middle + dt.timedelta(days=30)).date()
        year = (days[500].date(), days[750].date())
        wanted = tickers[:: max(1, len(tickers) // 500)][:500]
        for layout, url in urls.items():
            manager = DatabaseManager(url)
            measured = results[layout]

            def session_call(work: Callable[[Any], Any], manager: DatabaseManager = manager) -> Any:
                def run() -> Any:
                    with manager.get_session() as session:
                        return work(session)

                return run

            measured["one-ticker range read, a year (ms)"] = 1000 * median_time(
                session_call(lambda s: prices.get_range(s, tickers[7], *year)), arguments.rounds
            )
            measured["latest closes, 500 tickers (ms)"] = 1000 * median_time(
                session_call(lambda s: prices.get_latest_closes(s, wanted)), arguments.rounds
            )
            measured["chain as of a time (ms)"] = 1000 * median_time(
                session_call(lambda s: options.get_chain(s, underlyings[3], expiry, as_of=middle)),
                arguments.rounds,
            )
            measured["store_chain, 1,000 contracts (ms)"] = 1000 * median_time(
                session_call(chain_writer(options, expiry, middle)), arguments.rounds
            )
            cutoff = (snapshots[0] + dt.timedelta(days=40)).date().replace(day=1)
            started = time.perf_counter()
            if layout == "partitioned":
                with manager.engine.begin() as connection:
                    partitions.drop_before(connection, partitions.OPTIONS_DATA, cutoff)
            else:
                with psycopg.connect(url) as conn:
                    conn.execute("DELETE FROM options_data WHERE fetched_at < %s", (cutoff,))
            measured["drop the oldest month of snapshots (ms)"] = 1000 * (
                time.perf_counter() - started
            )
            manager.close()

        names = list(results["partitioned"])
        width = max(len(n) for n in names)
        print(f"\n{'measure':<{width}}  {'partitioned':>14}  {'plain':>14}  ratio")
        for name in names:
            part, plain = results["partitioned"][name], results["plain"][name]
            print(f"{name:<{width}}  {part:>14,.1f}  {plain:>14,.1f}  {part / plain:5.2f}")

        print("\nplans (partitions scanned, partitioned layout):")
        range_sql = "SELECT * FROM price_history WHERE ticker = %s AND date >= %s AND date <= %s"
        scanned = plan(urls["partitioned"], range_sql, (tickers[7], *year))
        print(f"  one-ticker range read {year[0]}..{year[1]}: {', '.join(scanned)}")
        chain_sql = (
            "SELECT * FROM options_data WHERE ticker = %s AND expiration = %s AND fetched_at = %s"
        )
        scanned = plan(urls["partitioned"], chain_sql, (underlyings[3], expiry, middle))
        print(f"  chain at {middle:%Y-%m-%d %H:%M}: {', '.join(scanned)}")


if __name__ == "__main__":
    main()
