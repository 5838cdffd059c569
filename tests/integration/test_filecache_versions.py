"""Done when: every old cache file, as pandas 1.5 to 3.1 wrote it, imports and reads back equal.

The folders of tests/data/filecache/ hold the same real data pickled by pandas 1.5.3,
2.2.3, 2.3.3 and 3.1.1 (numpy 1.26 and 2.4; pytz installed under pandas < 3). Each is
imported into the database, and every value read back through ``DatabaseCache`` must
equal the value make_cache_files.py builds from the source data under today's pandas.

An old object column comes back as object (what was pickled; ``str`` columns of pandas 3
come back as ``str``), and old nanosecond datetimes stay nanoseconds where today's pandas
parses microseconds: values, time zones included, are equal
(see ``tests.unit.test_safe_pickle_versions.assert_same``).
"""

from __future__ import annotations

import datetime as dt
import pickle
import time
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from database import DatabaseManager
from database.datatypes import DATA_TYPES, allow_types
from database.exceptions import ValidationError
from database.filecache import DatabaseCache, import_directory
from tests.unit.test_app_types import APP_TYPES, Rating, ValuationResult, results
from tests.unit.test_safe_pickle_versions import (
    FILECACHE,
    VERSIONS,
    assert_same,
    script_values,
    time_zones,
)

# The files' own expiration: get() asks how old an entry is (written days ago, say).
LIFETIME = 10 * 365 * 86400


@pytest.mark.parametrize("version", VERSIONS)
def test_every_file_of_every_version_imports_and_reads_back_equal(
    db: DatabaseManager, version: str, tmp_path: Path
) -> None:
    expected = script_values(tmp_path)
    report = import_directory(db, FILECACHE / version, include_expired=True)
    assert report.rejected == []
    assert report.imported == len(expected) == 8

    cache = DatabaseCache(db)
    for key, value in expected.items():
        got = cache.get(key, LIFETIME)
        assert got is not None, key
        assert_same(got, value)
        for tz in time_zones(got):
            assert tz is None or isinstance(tz, ZoneInfo) or tz is dt.UTC


def test_the_values_are_what_yfinance_shapes_hold(db: DatabaseManager, tmp_path: Path) -> None:
    """A few facts checked directly, not only by comparison with today's rebuild."""
    expected = script_values(tmp_path)
    import_directory(db, FILECACHE / "pandas-2.2-numpy-1.26", include_expired=True)
    cache = DatabaseCache(db)
    ratios = next(k for k, v in expected.items() if isinstance(v, dict) and len(v) == 3)
    got = cache.get(ratios, LIFETIME)
    assert isinstance(got["beta"], np.float64)
    assert got == expected[ratios]
    close = next(k for k, v in expected.items() if isinstance(v, pd.Series))
    series = cache.get(close, LIFETIME)
    assert series.index.tz is ZoneInfo("America/New_York")
    assert (series.name, len(series)) == ("Close", 662)
    calls = next(k for k, v in expected.items() if isinstance(v, pd.DataFrame) and "strike" in v)
    trades = cache.get(calls, LIFETIME)["lastTradeDate"]
    assert trades.dt.tz is dt.UTC
    assert trades.max() == pd.Timestamp("2024-09-27 19:59:59", tz="UTC")


@pytest.fixture
def app_types() -> Iterator[None]:
    allow_types(*APP_TYPES)
    yield
    DATA_TYPES.forget(*APP_TYPES)


def cache_of_results(tmp_path: Path) -> Path:
    """An old cache folder holding the analyzer's results as one entry, analysis.cache."""
    folder = tmp_path / "cache"
    folder.mkdir()
    entry = {"data": results(), "timestamp": time.time(), "expiration": 3600}
    (folder / "analysis.cache").write_bytes(pickle.dumps(entry))
    return folder


@pytest.mark.usefixtures("app_types")
def test_the_analyzers_cached_results_round_trip_through_import_and_the_cache(
    db: DatabaseManager, tmp_path: Path
) -> None:
    report = import_directory(db, cache_of_results(tmp_path))
    assert (report.imported, report.rejected) == (1, [])
    cache = DatabaseCache(db)
    assert cache.get("analysis") == results()

    assert cache.set("direct", results(), 3600) in (None, True)
    got = cache.get("direct")
    assert got == results()
    assert type(got[0]) is ValuationResult
    assert got[0].rating is Rating.HOLD


def test_unallowed_results_are_refused_by_import_and_cache(
    db: DatabaseManager, tmp_path: Path
) -> None:
    report = import_directory(db, cache_of_results(tmp_path))
    assert report.imported == 0
    assert "ValuationResult" in dict(report.rejected)["analysis.cache"]
    # The drop-in cache reports a refused value as the old one did (False, logged),
    # or raises the codec's ValidationError.
    refused: Exception | None = None
    try:
        stored = DatabaseCache(db).set("direct", results(), 3600)
    except ValidationError as error:
        refused, stored = error, False
    assert not stored
    assert refused is None or "ValuationResult" in str(refused)
    assert DatabaseCache(db).get("direct") is None
