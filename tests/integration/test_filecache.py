"""Moving off the file cache: the database-backed cache, dual writes, and the import."""

from __future__ import annotations

import datetime as dt
import logging
import os
import pickle
import time
import tracemalloc
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from database import DatabaseManager
from database.exceptions import ValidationError
from database.filecache import (
    DatabaseCache,
    DualWriteCache,
    FileCache,
    import_directory,
    make_key,
    safe_loads,
)
from database.monitoring import market_data_cache as statistics
from tests.conftest import RawSQL
from tests.integration.conftest import row_count_statements


@pytest.fixture(autouse=True)
def fresh_counters() -> None:
    statistics.reset()


PRICES = pd.DataFrame({"Close": [1.5, 2.5]}, index=pd.to_datetime(["2024-01-02", "2024-01-03"]))


class Explode:
    """A pickle that would run a shell command if it were ever unpickled naively."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def write(path: Path, entry: object) -> None:
    path.write_bytes(pickle.dumps(entry))


def old_entry(data: object, age: float = 0, expiration: float = 3600) -> dict[str, object]:
    return {"data": data, "timestamp": time.time() - age, "expiration": expiration}


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "cache"
    folder.mkdir()
    write(
        folder / f"{make_key('get_stock_info', 'AAPL')}.cache",
        old_entry({"price": Decimal("222.77")}),
    )
    write(
        folder / f"{make_key('fetch_price_history', 'AAPL', period='1y')}.cache", old_entry(PRICES)
    )
    write(folder / f"{make_key('fetch_news', 'AAPL')}.cache", old_entry(["old"], age=7200))
    (folder / "corrupt.cache").write_bytes(b"\x80\x04this is not a pickle at all")
    good = pickle.dumps(old_entry({"x": list(range(1000))}))
    (folder / "truncated.cache").write_bytes(good[: len(good) // 2])
    write(folder / "malicious.cache", old_entry(Explode(tmp_path / "pwned")))
    write(folder / "not-an-entry.cache", [1, 2, 3])
    (folder / "a-directory.cache").mkdir()  # unreadable as a file
    (folder / "notes.txt").write_text("not a cache file")
    return folder


def test_import_reports_every_file_and_runs_nothing_it_reads(
    db: DatabaseManager, cache_dir: Path, tmp_path: Path, sql: RawSQL
) -> None:
    report = import_directory(db, cache_dir)
    assert (report.imported, report.already_present, report.expired) == (2, 0, 1)
    reasons = dict(report.rejected)
    assert set(reasons) == {
        "corrupt.cache",
        "truncated.cache",
        "malicious.cache",
        "not-an-entry.cache",
        "a-directory.cache",
    }
    assert "refused to unpickle" in reasons["malicious.cache"]
    assert "system" in reasons["malicious.cache"]
    assert "unreadable" in reasons["a-directory.cache"]
    assert not (tmp_path / "pwned").exists()
    assert sql.count("market_data_cache") == 2
    again = import_directory(db, cache_dir)
    assert (again.imported, again.already_present, again.expired, len(again.rejected)) == (
        0,
        2,
        1,
        5,
    )
    assert sql.count("market_data_cache") == 2
    with_expired = import_directory(db, cache_dir, include_expired=True)
    assert with_expired.imported == 1
    frame = DatabaseCache(db).get(make_key("fetch_price_history", "AAPL", period="1y"))
    pd.testing.assert_frame_equal(frame, PRICES)
    assert DatabaseCache(db).get(make_key("fetch_news", "AAPL")) is None  # imported, but expired


def test_a_large_directory_imports_in_one_transaction_per_batch(
    db: DatabaseManager, tmp_path: Path, statements: list[str], sql: RawSQL
) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    for number in range(10_000):
        write(folder / f"{make_key('quote', number)}.cache", old_entry({"n": number}))
    commits: list[int] = []

    def count_commit(connection: Any) -> None:
        commits.append(1)

    event.listen(Engine, "commit", count_commit)
    progress: list[int] = []
    try:
        report = import_directory(db, folder, batch_size=500, on_progress=progress.append)
    finally:
        event.remove(Engine, "commit", count_commit)
    assert report.imported == 10_000
    assert report.batches == 20
    assert sum(progress) == 10_000
    assert len(commits) == 20
    assert row_count_statements(statements, "INSERT", "market_data_cache") == 20
    assert sql.count("market_data_cache") == 10_000


def test_importing_something_that_is_not_a_directory_is_refused(
    db: DatabaseManager, tmp_path: Path
) -> None:
    with pytest.raises(ValidationError, match="directory"):
        import_directory(db, tmp_path / "missing")


def test_the_database_cache_has_the_old_interface(db: DatabaseManager, sql: RawSQL) -> None:
    cache = DatabaseCache(db)
    key = make_key("get_financials", "NVDA", freq="yearly")
    assert cache.get(key) is None
    assert cache.set(key, PRICES, expiration=60) is True
    pd.testing.assert_frame_equal(cache.get(key), PRICES)
    sql.execute(
        "UPDATE market_data_cache SET cached_at = :old",
        old=_stored_time(sql, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=90)),
    )
    assert cache.get(key) is not None  # past its own 60 s, within the default 3600 s
    stats = cache.get_stats()
    assert stats["type"] == "database"
    assert (stats["items"], stats["expired"]) == (1, 0)  # expires_at is untouched
    assert cache.get(key, expiration=10) is None  # older than the caller allows: deleted
    assert sql.count("market_data_cache") == 0
    counts = statistics.snapshot()["file_cache"]
    assert (counts.hits, counts.misses) == (2, 2)  # the hit rate is still monitored
    assert cache.delete(key) is True
    assert cache.delete(key) is True  # also when missing, as the old cache answered
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.clear() is True
    assert sql.count("market_data_cache") == 0


def test_dual_writes_and_reads_that_fall_back_to_files(
    db: DatabaseManager, tmp_path: Path, sql: RawSQL
) -> None:
    files = FileCache(tmp_path / "cache")
    dual = DualWriteCache(DatabaseCache(db), files)
    dual.set("both", {"v": 1}, expiration=120)
    assert files.get("both") == {"v": 1}
    assert sql.count("market_data_cache") == 1
    files.set("file-only", {"v": 2}, expiration=120)  # written before the move began
    written = files.read("file-only")
    assert dual.get("file-only") == {"v": 2}
    assert sql.count("market_data_cache") == 2  # back-filled
    assert DatabaseCache(db).get("file-only") == {"v": 2}
    cached_at, expires_at = sql.rows(
        "SELECT cached_at, expires_at FROM market_data_cache WHERE data_source = 'file_cache'"
        " ORDER BY expires_at DESC"
    )[0]
    assert written is not None
    assert cached_at == _stored_time(sql, written.cached_at)  # the file's own time
    assert expires_at == _stored_time(sql, written.expires_at)
    assert dual.delete("both") is True
    assert files.get("both") is None
    assert dual.get_stats()["items"] == 1
    assert dual.clear() is True
    assert sql.count("market_data_cache") == 0
    assert files.get_stats()["items"] == 0


def _stored_time(sql: RawSQL, moment: dt.datetime) -> object:
    from database.types import sqlite_timestamp

    return sqlite_timestamp(moment) if sql.backend == "sqlite" else moment


BOMB = b"\x80\x02cbuiltins\nbytearray\n\x8a\x04\x00\x00\x00@\x85R."  # bytearray(1 << 30)
DECLARED_BOMB = b"\x80\x05\x96" + (1 << 30).to_bytes(8, "little") + b"."


def test_bombs_are_rejected_with_a_reason_and_the_good_files_import(
    db: DatabaseManager, tmp_path: Path, sql: RawSQL
) -> None:
    folder = tmp_path / "bombs"
    folder.mkdir()
    for number in range(20):
        (folder / f"bomb-{number:02}.cache").write_bytes(BOMB)
    (folder / "declared.cache").write_bytes(DECLARED_BOMB)
    for number in range(5):
        write(folder / f"{make_key('quote', number)}.cache", old_entry({"n": number}))
    tracemalloc.start()
    try:
        report = import_directory(db, folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20  # far below one bomb's 1 GiB, let alone 21 of them
    assert report.imported == 5
    reasons = dict(report.rejected)
    assert len(reasons) == 21
    assert "builtins.bytearray(1073741824) would allocate 1.0 GiB" in reasons["bomb-00.cache"]
    assert "bytearray8" in reasons["declared.cache"]
    assert sql.count("market_data_cache") == 5


def test_the_import_limits_are_keyword_arguments(db: DatabaseManager, tmp_path: Path) -> None:
    folder = tmp_path / "limits"
    folder.mkdir()
    write(folder / "small.cache", old_entry("x"))
    write(folder / "large.cache", old_entry("x" * 10_000))
    report = import_directory(db, folder, max_file_size=4096)
    assert report.imported == 1
    assert "over the 4.0 KiB file size limit" in dict(report.rejected)["large.cache"]
    strict = import_directory(db, folder, max_allocation=1024)
    assert strict.imported == 0
    assert all("over the 1.0 KiB limit" in reason for _, reason in strict.rejected)
    with pytest.raises(ValidationError, match="max_allocation"):
        import_directory(db, folder, max_allocation=0)


def test_the_import_follows_no_symlink_out_of_the_folder(
    db: DatabaseManager, tmp_path: Path, sql: RawSQL
) -> None:
    secret = tmp_path / "secret.cache"
    write(secret, old_entry({"outside": True}))
    before = secret.read_bytes()
    folder = tmp_path / "linked"
    folder.mkdir()
    (folder / f"{make_key('quote', 1)}.cache").symlink_to(secret)
    (folder / "subdir.cache").symlink_to(tmp_path, target_is_directory=True)
    write(folder / f"{make_key('quote', 2)}.cache", old_entry({"inside": True}))
    report = import_directory(db, folder)
    assert report.imported == 1
    reasons = dict(report.rejected)
    assert "symbolic link, not followed" in reasons[f"{make_key('quote', 1)}.cache"]
    assert "symbolic link, not followed" in reasons["subdir.cache"]
    assert secret.read_bytes() == before
    assert DatabaseCache(db).get(make_key("quote", 1)) is None
    assert sql.count("market_data_cache") == 1


# -- files the database cannot hold: rejected one by one, read as missing ------------------


def self_referential() -> list[object]:
    looped: list[object] = []
    looped.append(looped)
    return looped


def deeply_nested_pickle(depth: int) -> bytes:
    """An old entry whose data is lists nested ``depth`` deep (400 KB at 200,000)."""
    stamp = pickle.dumps(time.time())[2:-1]  # the float's opcode alone
    return (
        b"\x80\x04(X\x04\x00\x00\x00data"
        + b"]" * depth
        + b"a" * (depth - 1)
        + b"X\x09\x00\x00\x00timestamp"
        + stamp
        + b"d."
    )


@pytest.fixture
def hostile_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "hostile"
    folder.mkdir()
    write(folder / "a-good.cache", old_entry({"n": 1}))
    write(folder / "recursive.cache", old_entry(self_referential()))
    (folder / "deep.cache").write_bytes(deeply_nested_pickle(200_000))
    write(folder / "expiration-huge.cache", old_entry(1, expiration=1e300))
    write(folder / "expiration-negative.cache", old_entry(1, expiration=-1))
    write(folder / "timestamp-huge.cache", {"data": 1, "timestamp": 10**400})
    write(folder / "timestamp-nan.cache", {"data": 1, "timestamp": float("nan")})
    write(folder / "z-large-int.cache", old_entry({"n": 10**5000}))
    write(folder / "z-good.cache", old_entry({"n": 2}))
    return folder


def test_files_the_database_cannot_hold_are_rejected_and_the_import_goes_on(
    db: DatabaseManager, hostile_dir: Path, sql: RawSQL
) -> None:
    report = import_directory(db, hostile_dir, batch_size=3)
    reasons = dict(report.rejected)
    assert set(reasons) == {
        "recursive.cache",
        "deep.cache",
        "expiration-huge.cache",
        "expiration-negative.cache",
        "timestamp-huge.cache",
        "timestamp-nan.cache",
    }
    assert "invalid data='list': contains itself" in reasons["recursive.cache"]
    assert "nested more than 100 containers deep" in reasons["deep.cache"]
    assert "expiration 1e+300 must be positive and at most" in reasons["expiration-huge.cache"]
    assert "not a time in the years 1 to 9999" in reasons["timestamp-huge.cache"]
    assert report.imported == 3
    assert sql.count("market_data_cache") == 3
    assert DatabaseCache(db).get("z-large-int") == {"n": 10**5000}


def test_a_file_that_fails_in_an_unforeseen_way_is_rejected_with_the_error_named(
    db: DatabaseManager, hostile_dir: Path, sql: RawSQL, monkeypatch: pytest.MonkeyPatch
) -> None:
    from database.filecache import importer

    real_row = importer._row

    def failing_row(entry: Any) -> dict[str, Any]:
        if entry.key == "a-good":
            raise LookupError("something nobody expected")
        return real_row(entry)

    monkeypatch.setattr(importer, "_row", failing_row)
    report = import_directory(db, hostile_dir)
    assert dict(report.rejected)["a-good.cache"] == "LookupError: something nobody expected"
    assert report.imported == 2


def test_caches_read_files_the_database_cannot_hold_as_missing(
    db: DatabaseManager, hostile_dir: Path, sql: RawSQL
) -> None:
    files = FileCache(hostile_dir)
    dual = DualWriteCache(DatabaseCache(db), files)
    for key in ("expiration-huge", "expiration-negative", "timestamp-huge", "timestamp-nan"):
        assert files.get(key) is None
        assert files.remaining(key) is None
        assert dual.get(key) is None
    for key in ("recursive", "deep"):
        assert files.get(key) is not None  # the old cache's answer
        assert dual.get(key) is None  # the database refuses it: a miss, nothing stored
    assert dual.get("a-good") == {"n": 1}
    assert sql.count("market_data_cache") == 1


def test_the_market_data_cache_refuses_a_payload_that_contains_itself(
    db: DatabaseManager, sql: RawSQL
) -> None:
    from database.models import DataType
    from database.repositories import MarketDataRepository

    with (
        pytest.raises(ValidationError, match="contains itself") as caught,
        db.get_session() as session,
    ):
        MarketDataRepository().cache_market_data(
            session, "AAPL", DataType.STOCK_INFO, {"loop": self_referential()}
        )
    assert caught.value.field == "data"
    deep = safe_loads(deeply_nested_pickle(200_000))["data"]
    assert DatabaseCache(db).set("deep", deep) is False  # the drop-in logs and answers False
    assert sql.count("market_data_cache") == 0


@pytest.mark.parametrize(
    "expiration",
    [float("nan"), float("inf"), -1, 1e300, "5", np.int64(5)],
    ids=["nan", "inf", "negative", "huge", "text", "numpy"],
)
def test_the_file_cache_checks_expiration_as_the_database_cache_does(
    db: DatabaseManager, tmp_path: Path, expiration: Any, caplog: pytest.LogCaptureFixture
) -> None:
    files = FileCache(tmp_path / "cache")
    with caplog.at_level(logging.ERROR, logger="database.filecache.cache"):
        assert DatabaseCache(db).set("key", 1, expiration=expiration) is False
        assert files.set("key", 1, expiration=expiration) is False
    by_database, by_files = (record.getMessage() for record in caplog.records)
    reason = by_database.split(": ", 1)[1]
    assert reason == by_files.split(": ", 1)[1]
    assert "ttl" in reason
    assert files.get_stats()["items"] == 0
    files.set("key", 1, expiration=60)
    assert 0 < (files.remaining("key") or 0) <= 60


def test_concurrent_imports_of_one_folder_write_each_entry_once(
    db: DatabaseManager, tmp_path: Path, sql: RawSQL
) -> None:
    """Two imports of the same folder at once: every key is written by one of them and
    found present by the other (the batches go in key order, so neither waits for the
    other in a cycle)."""
    import threading

    folder = tmp_path / "shared"
    folder.mkdir()
    for number in range(600):
        write(folder / f"{make_key('quote', number)}.cache", old_entry({"n": number}))
    reports: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            reports.append(import_directory(db, folder, batch_size=100))
        except BaseException as error:  # reported below, on the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert sum(report.imported for report in reports) == 600
    assert sum(report.already_present for report in reports) == 600
    assert sql.count("market_data_cache") == 600


def test_an_imported_row_is_the_row_the_cache_itself_writes(
    db: DatabaseManager, tmp_path: Path, sql: RawSQL
) -> None:
    """The import stages its rows through the driver: they hold exactly what the ORM
    stores for the same entry (DualWriteCache's back-fill writes through the ORM)."""
    folder = tmp_path / "one"
    folder.mkdir()
    key = make_key("fetch_price_history", "AAPL", period="1y")
    write(folder / f"{key}.cache", old_entry({"frame": PRICES, "when": dt.date(2024, 1, 2)}))
    query = (
        "SELECT cache_key, ticker, data_type, data, data_source, parameters, cached_at,"
        " expires_at FROM market_data_cache"
    )
    assert import_directory(db, folder).imported == 1
    imported = sql.rows(query)
    assert sql.rows("SELECT count(*) FROM market_data_cache WHERE id IS NOT NULL") == [(1,)]
    sql.execute("DELETE FROM market_data_cache")
    entry = FileCache(folder).read(key)
    assert entry is not None
    DatabaseCache(db).store_file_entry(entry)
    assert sql.rows(query) == imported
