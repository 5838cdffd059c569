"""The drop-ins answer exactly as BuffetBot's old ``Cache`` did, clause by clause.

Every test runs against FileCache, DatabaseCache and DualWriteCache, the
database ones on SQLite and on PostgreSQL. Time is controlled through the
module's ``time`` (never by sleeping): ``clock.advance(seconds)``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from database import DatabaseManager
from database.filecache import DatabaseCache, DualWriteCache, FileCache, make_key
from database.filecache import cache as cache_module
from database.filecache.cache import cache_result

# Every PostgreSQL test here runs once more through PgBouncer (transaction pooling).
pytestmark = pytest.mark.pgbouncer

KINDS = ("file", "database", "dual")
STATS_KEYS = {"type", "size", "items", "expired"}
PRICES = pd.DataFrame({"Close": [1.5, 2.5]}, index=pd.to_datetime(["2024-01-02", "2024-01-03"]))
LOGGER = "database.filecache.cache"

Cache = FileCache | DatabaseCache | DualWriteCache


class Clock:
    """The module's ``time.time()``: the real time plus ``offset`` seconds."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(cache_module, "time", SimpleNamespace(time=fake.time))
    return fake


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def build(kind: str, db: DatabaseManager, folder: Path, **options: Any) -> Cache:
    if kind == "file":
        return FileCache(folder, **options)
    if kind == "database":
        return DatabaseCache(db, **options)
    return DualWriteCache(DatabaseCache(db, **options), FileCache(folder, **options))


@pytest.fixture
def make(kind: str, backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """``make(**options)``: a cache of the kind under test (file caches ignore the backend)."""
    db = None if kind == "file" else request.getfixturevalue("db")

    def factory(**options: Any) -> Cache:
        return build(kind, db, tmp_path / "cache", **options)  # type: ignore[arg-type]

    return factory


@pytest.fixture
def cache(make: Callable[..., Cache]) -> Cache:
    return make()


KEY = make_key("get_stock_info", "AAPL")


# -- get ---------------------------------------------------------------------------------


def test_get_of_a_missing_key_is_none(cache: Cache) -> None:
    assert cache.get(KEY) is None
    assert cache.get(KEY, 60) is None


def test_set_returns_true_and_get_returns_the_data(cache: Cache, clock: Clock) -> None:
    assert cache.set(KEY, {"price": 222.77}) is True
    assert cache.get(KEY) == {"price": 222.77}
    assert cache.set("frame", PRICES, 60) is True
    pd.testing.assert_frame_equal(cache.get("frame"), PRICES)
    assert cache.set(KEY, ["replaced"]) is True
    assert cache.get(KEY) == ["replaced"]


def test_get_without_expiration_uses_the_default_at_read_time(cache: Cache, clock: Clock) -> None:
    cache.set(KEY, 1, expiration=60)
    clock.advance(120)
    assert cache.get(KEY) == 1  # older than set's 60 s, younger than the default 3600 s
    clock.advance(3600 - 120 + 1)
    assert cache.get(KEY) is None


def test_the_default_expiration_is_configurable(make: Callable[..., Cache], clock: Clock) -> None:
    cache = make(default_expiration=10)
    cache.set(KEY, 1, expiration=3600)
    clock.advance(5)
    assert cache.get(KEY) == 1
    clock.advance(6)
    assert cache.get(KEY) is None


def test_get_with_an_expiration_compares_the_age_with_it(cache: Cache, clock: Clock) -> None:
    cache.set(KEY, 1, expiration=60)
    clock.advance(5000)
    assert cache.get(KEY, expiration=10_000) == 1  # longer than both set's and the default
    assert cache.get(KEY, expiration=4000) is None


def test_an_expiration_of_zero_always_misses(cache: Cache) -> None:
    cache.set(KEY, 1)
    assert cache.get(KEY, expiration=0) is None
    assert cache.get(KEY) is None  # and the entry is gone


def test_an_expired_entry_found_by_get_is_deleted(cache: Cache, clock: Clock) -> None:
    cache.set(KEY, 1)
    cache.set("other", 2)
    clock.advance(3601)
    assert cache.get(KEY) is None
    assert cache.get_stats()["items"] == 1  # only "other", which no get has seen
    clock.advance(-3601)
    assert cache.get(KEY) is None  # deleted, not merely hidden
    assert cache.get("other") == 2


def test_an_entry_is_expired_only_when_strictly_older(cache: Cache, clock: Clock) -> None:
    cache.set(KEY, 1)
    clock.advance(3599)
    assert cache.get(KEY, expiration=3600) == 1


# -- set ---------------------------------------------------------------------------------


def test_set_without_expiration_stores_the_default(cache: Cache, clock: Clock) -> None:
    cache.set(KEY, 1)
    cache.set("short", 2, expiration=60)
    clock.advance(61)
    assert cache.get_stats()["expired"] == 1  # "short", by its own 60 s
    assert cache.get("short") == 2  # get asks the default, at read time
    clock.advance(3600)
    assert cache.get_stats()["expired"] == 2


def test_an_expiration_of_zero_on_set_stores_the_default(cache: Cache, clock: Clock) -> None:
    assert cache.set(KEY, 1, expiration=0) is True
    clock.advance(3599)
    assert cache.get_stats()["expired"] == 0
    clock.advance(2)
    assert cache.get_stats()["expired"] == 1


@pytest.mark.parametrize(
    "value",
    [lambda: 1, threading.Lock(), {"nested": threading.Lock()}],
    ids=["lambda", "lock", "nested-lock"],
)
def test_set_of_a_value_that_cannot_be_stored_is_false_and_logged(
    cache: Cache, value: object, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        assert cache.set(KEY, value) is False
    assert any(record.levelno == logging.ERROR for record in caplog.records)
    assert cache.get_stats()["items"] == 0  # nothing stored, no half-written file
    assert cache.get(KEY) is None


@pytest.mark.parametrize("expiration", [float("nan"), -1, 1e300, "5"])
def test_set_with_an_expiration_out_of_range_is_false_and_logged(
    cache: Cache, expiration: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        assert cache.set(KEY, 1, expiration=expiration) is False
    assert caplog.records
    assert cache.get_stats()["items"] == 0


# -- delete and clear ----------------------------------------------------------------------


def test_delete_is_true_whether_or_not_the_key_existed(cache: Cache) -> None:
    cache.set(KEY, 1)
    assert cache.delete(KEY) is True
    assert cache.get(KEY) is None
    assert cache.delete(KEY) is True
    assert cache.delete("never-set") is True


def test_clear_is_true_and_empties_the_cache(cache: Cache) -> None:
    assert cache.clear() is True  # empty
    cache.set(KEY, 1)
    cache.set("other", 2)
    assert cache.clear() is True
    assert cache.get(KEY) is None
    assert cache.get_stats()["items"] == 0
    assert cache.clear() is True


# -- get_stats -----------------------------------------------------------------------------


def test_get_stats_has_the_old_keys(cache: Cache, kind: str) -> None:
    assert cache.get_stats() == {"type": kind, "size": 0, "items": 0, "expired": 0}
    cache.set(KEY, {"price": 1})
    small = cache.get_stats()
    assert set(small) == STATS_KEYS
    assert (small["type"], small["items"], small["expired"]) == (kind, 1, 0)
    assert small["size"] > 0
    cache.set("big", "x" * 10_000)
    big = cache.get_stats()
    assert big["items"] == 2
    assert big["size"] > small["size"] + 10_000 * (2 if kind == "dual" else 1) - 100


def test_the_file_cache_size_is_the_files_bytes(tmp_path: Path) -> None:
    cache = FileCache(tmp_path)
    cache.set("a", "x" * 1000)
    cache.set("b", [1, 2, 3])
    on_disk = sum(path.stat().st_size for path in tmp_path.glob("*.cache"))
    assert cache.get_stats()["size"] == on_disk


def test_the_dual_cache_counts_a_key_once(
    db: DatabaseManager, tmp_path: Path, clock: Clock
) -> None:
    database, files = DatabaseCache(db), FileCache(tmp_path)
    dual = DualWriteCache(database, files)
    dual.set(KEY, {"v": 1}, expiration=60)
    files.set("file-only", 2)
    stats = dual.get_stats()
    assert (stats["items"], stats["expired"]) == (2, 0)
    assert stats["size"] == database.get_stats()["size"] + files.get_stats()["size"]
    clock.advance(61)
    assert dual.get_stats()["expired"] == 1  # both copies of KEY are past their 60 s


# -- failures: logged, answered with None / False / {}, never raised ------------------------


@pytest.fixture
def broken(kind: str, backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """A cache of the kind under test that fails at everything: its folder is a regular
    file, its database has no schema."""
    not_a_folder = tmp_path / "not-a-folder"
    not_a_folder.write_text("a file")
    manager = None
    if kind != "file":
        manager = DatabaseManager(request.getfixturevalue("empty_url"), pool_size=1)
    yield build(kind, manager, not_a_folder)  # type: ignore[arg-type]
    if manager is not None:
        manager.close()


def test_every_failure_is_logged_and_answered_never_raised(
    broken: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        assert broken.set(KEY, 1) is False
        assert broken.get(KEY) is None
        assert broken.get(KEY, 60) is None
        assert broken.delete(KEY) is False
        assert broken.clear() is False
        assert broken.get_stats() == {}
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) >= 6


def test_a_corrupt_file_reads_as_missing_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = FileCache(tmp_path)
    (tmp_path / f"{KEY}.cache").write_bytes(b"not a pickle")
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        assert cache.get(KEY) is None
    assert "unusable" in caplog.text
    stats = cache.get_stats()  # counted, never as expired (it has no expiration to read)
    assert (stats["items"], stats["expired"]) == (1, 0)


# -- cache_result --------------------------------------------------------------------------


def test_cache_result_calls_once_then_reads_the_cache(cache: Cache) -> None:
    calls: list[tuple[Any, ...]] = []

    @cache_result(cache=cache)
    def get_stock_info(ticker: str, period: str = "1y") -> dict[str, Any]:
        calls.append((ticker, period))
        return {"ticker": ticker, "period": period}

    assert get_stock_info("AAPL", period="5y") == {"ticker": "AAPL", "period": "5y"}
    assert get_stock_info("AAPL", period="5y") == {"ticker": "AAPL", "period": "5y"}
    assert get_stock_info("MSFT") == {"ticker": "MSFT", "period": "1y"}
    assert calls == [("AAPL", "5y"), ("MSFT", "1y")]
    assert get_stock_info.__name__ == "get_stock_info"
    assert cache.get(make_key("get_stock_info", "AAPL", period="5y")) == {
        "ticker": "AAPL",
        "period": "5y",
    }


def test_cache_result_reads_with_its_expiration(cache: Cache, clock: Clock) -> None:
    calls: list[int] = []

    @cache_result(expiration=60, cache=cache)
    def quote(n: int) -> int:
        calls.append(n)
        return n * 2

    assert quote(1) == 2
    clock.advance(30)
    assert quote(1) == 2
    clock.advance(31)
    assert quote(1) == 2
    assert calls == [1, 1]

    @cache_result(expiration=0, cache=cache)
    def never_cached(n: int) -> int:
        calls.append(n)
        return n

    never_cached(7)
    never_cached(7)
    assert calls[-2:] == [7, 7]


def test_cache_result_uses_the_database_cache_by_default(
    db: DatabaseManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "get_database", lambda: db)
    calls: list[str] = []

    @cache_result()
    def get_financials(ticker: str) -> list[str]:
        calls.append(ticker)
        return [ticker]

    assert get_financials("NVDA") == ["NVDA"]
    assert get_financials("NVDA") == ["NVDA"]
    assert calls == ["NVDA"]
    assert DatabaseCache(db).get(make_key("get_financials", "NVDA")) == ["NVDA"]


@pytest.mark.parametrize("key", ["", ".", "../x", "a/b", "k\0", "k" * 300, None, 5])
def test_a_key_that_is_not_a_file_name_is_refused_by_every_cache(cache: Cache, key: Any) -> None:
    # one rule for the three, so that an entry can always move between them
    assert cache.set(key, {"n": 1}) is False
    assert cache.get(key) is None


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def _looped() -> list[Any]:
    items: list[Any] = []
    items.append(items)
    return items


@pytest.mark.parametrize(
    "value",
    [_looped(), object(), _nested(300)],
    ids=["contains-itself", "object", "300-deep"],
)
def test_a_value_the_import_could_not_store_is_refused_by_every_cache(
    cache: Cache, value: Any
) -> None:
    assert cache.set("k", value) is False
    assert cache.get("k") is None
    assert cache.get_stats()["items"] == 0  # nothing half-written, in either store


def test_the_dual_cache_writes_both_or_neither(
    db: DatabaseManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database, files = DatabaseCache(db), FileCache(tmp_path)
    dual = DualWriteCache(database, files)
    monkeypatch.setattr(database, "set", lambda *args, **kwargs: False)  # the database refuses
    assert dual.set("k", {"n": 1}) is False
    assert files.get("k") is None  # the file written first was taken back
