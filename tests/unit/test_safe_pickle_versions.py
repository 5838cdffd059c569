"""Old cache files written by pandas 1.5, 2.2, 2.3 and 3.1 (numpy 1.26 and 2.4) load safely.

The files in tests/data/filecache/ were written by make_cache_files.py (real data) and
make_index_files.py (every index kind) under each version; see tests/data/README.md.
"""

from __future__ import annotations

import datetime as dt
import pickle
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from database.exceptions import ValidationError
from database.filecache import UnsafePickleError, safe_loads
from database.filecache.limits import RENAMED, PickleLimitError

FILECACHE = Path(__file__).resolve().parents[1] / "data" / "filecache"
VERSIONS = sorted(p.name for p in FILECACHE.glob("pandas-*"))
INDEX_VERSIONS = sorted(p.name for p in (FILECACHE / "indexes").glob("pandas-*"))


def script_values(tmp_path: Path) -> dict[str, Any]:
    """The values make_cache_files.py pickles, rebuilt by its own steps under today's pandas."""
    argv = sys.argv
    sys.argv = ["make_cache_files.py", str(tmp_path / "rebuilt")]
    try:
        namespace = runpy.run_path(str(FILECACHE / "make_cache_files.py"), run_name="rebuild")
    finally:
        sys.argv = argv
    return dict(namespace["values"])


def index_objects() -> dict[str, Any]:
    namespace = runpy.run_path(str(FILECACHE / "make_index_files.py"), run_name="rebuild")
    return dict(namespace["objects"]())


def _plain(values: Any) -> Any:
    """``values`` with what differs between pandas versions but not in value made alike:
    nanosecond (pandas < 3) and microsecond (pandas 3) datetimes, object (pandas < 3)
    and ``str`` (pandas 3) text, and the storage of "string" arrays (Python before,
    pyarrow today). Time zones and everything else are kept."""
    if isinstance(values, pd.MultiIndex):
        levels = [_plain(values.get_level_values(i)) for i in range(values.nlevels)]
        return pd.MultiIndex.from_arrays(levels, names=values.names)
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        categories = _plain(dtype.categories)
        if isinstance(values, pd.Index):
            return pd.CategoricalIndex(
                values.astype(object), categories=categories, name=values.name
            )
        return values.cat.set_categories(categories)
    if dtype.kind in "mM":
        return values.as_unit("ns") if isinstance(values, pd.Index) else values.dt.as_unit("ns")
    if isinstance(dtype, pd.StringDtype) and dtype.na_value is not pd.NA:
        return values.astype(object)
    if isinstance(dtype, pd.StringDtype):  # "string": pyarrow-backed today if installed
        return values.astype(pd.StringDtype("python"))
    return values


def assert_same(got: Any, expected: Any) -> None:
    """``got`` (from an old pickle) equals ``expected`` (built by today's pandas) in value,
    time zones included; see :func:`_plain` for the dtypes that may differ."""
    assert type(got) is type(expected)
    if isinstance(expected, pd.DataFrame):
        got = got.copy()
        expected = expected.copy()
        for frame in (got, expected):
            frame.index = _plain(frame.index)
            frame.columns = _plain(frame.columns)
            for i in range(frame.shape[1]):
                frame.isetitem(i, _plain(frame.iloc[:, i]))
        pd.testing.assert_frame_equal(got, expected)
    elif isinstance(expected, pd.Series):
        got = _plain(got.set_axis(_plain(got.index)))
        expected = _plain(expected.set_axis(_plain(expected.index)))
        pd.testing.assert_series_equal(got, expected)
    elif isinstance(expected, pd.Index):
        if isinstance(expected, pd.DatetimeIndex):  # pandas 3 itself drops an old
            assert got.freq == expected.freq  # TimedeltaIndex's freq: not compared
        pd.testing.assert_index_equal(_plain(got), _plain(expected), exact=True, check_freq=False)
    elif isinstance(expected, pd.Timestamp):
        assert got == expected
        assert got.tz == expected.tz
    elif isinstance(expected, list | tuple):
        assert len(got) == len(expected)
        for item, want in zip(got, expected, strict=True):
            assert_same(item, want)
    elif isinstance(expected, dict):
        assert got.keys() == expected.keys()
        for key in expected:
            assert_same(got[key], expected[key])
    elif expected is pd.NaT:
        assert got is pd.NaT
    else:
        assert got == expected


def time_zones(value: Any) -> list[Any]:
    """Every time zone in ``value`` (a frame, series, index or timestamp)."""
    if isinstance(value, pd.DataFrame):
        found = time_zones(value.index) + time_zones(value.columns)
        return found + [tz for i in range(value.shape[1]) for tz in time_zones(value.iloc[:, i])]
    if isinstance(value, pd.Series):
        return [*time_zones(value.index), getattr(value.dtype, "tz", None)]
    if isinstance(value, pd.MultiIndex):
        return [tz for level in value.levels for tz in time_zones(level)]
    return [getattr(value, "tz", None)]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_real_data_file_loads_equal_to_the_value_rebuilt_today(
    version: str, tmp_path: Path
) -> None:
    expected = script_values(tmp_path)
    files = sorted((FILECACHE / version).glob("*.cache"))
    assert {f.stem for f in files} == set(expected)
    for file in files:
        entry = safe_loads(file.read_bytes())
        assert set(entry) == {"data", "timestamp", "expiration"}
        assert_same(entry["data"], expected[file.stem])
        for tz in time_zones(entry["data"]):  # zoneinfo and datetime only, never pytz
            assert tz is None or isinstance(tz, ZoneInfo) or tz is dt.UTC


@pytest.mark.parametrize("version", INDEX_VERSIONS)
def test_every_index_kind_loads_equal_to_the_one_built_today(version: str) -> None:
    expected = index_objects()
    files = sorted((FILECACHE / "indexes" / version).glob("*.cache"))
    assert {f.stem for f in files} == set(expected)
    for file in files:
        assert_same(safe_loads(file.read_bytes())["data"], expected[file.stem])


def test_pytz_zones_become_zoneinfo_and_utc_becomes_datetime_utc() -> None:
    folder = FILECACHE / "indexes" / "pandas-2.2-numpy-1.26"
    new_york = safe_loads((folder / "dti_ny.cache").read_bytes())["data"]
    utc = safe_loads((folder / "dti_utc.cache").read_bytes())["data"]
    assert new_york.tz is ZoneInfo("America/New_York")
    assert utc.tz is dt.UTC
    stamp = safe_loads((folder / "ts_ny.cache").read_bytes())["data"]
    assert stamp == pd.Timestamp("2024-01-02 09:30", tz="America/New_York")
    assert str(stamp.utcoffset()) == "-1 day, 19:00:00"  # EST, not pytz's LMT (-4:56)


def test_pytz_is_never_imported() -> None:
    files = [str(f) for f in FILECACHE.glob("**/*.cache")]
    code = (
        "import sys\n"
        "from database.filecache import safe_loads\n"
        "for name in sys.argv[1:]:\n"
        "    safe_loads(open(name, 'rb').read())\n"
        "assert 'pytz' not in sys.modules, 'pytz was imported'\n"
        "print(len(sys.argv) - 1)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *files], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(files) > 40


def forged(module: str, name: str, *args: Any) -> bytes:
    """A pickle (protocol 2) calling ``module.name(*args)``."""
    body = b"\x80\x02" + f"c{module}\n{name}\n".encode() + pickle.dumps(args, protocol=2)[2:-1]
    return body + b"R."


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("_p", ("../../../etc/passwd",)),
        ("_p", ("Not/AZone",)),
        ("_p", ("",)),
        ("_p", (42,)),
        ("_p", ("America/New_York", [1], 0, "EST")),
        ("timezone", ("Mars/Olympus_Mons",)),
        ("timezone", ("x" * 10_000,)),
    ],
)
def test_a_pytz_zone_that_is_not_a_time_zone_is_refused(name: str, args: tuple[Any, ...]) -> None:
    with pytest.raises(UnsafePickleError, match="not a time zone"):
        safe_loads(forged("pytz", name, *args))


def test_pytz_zones_and_utc_forged_by_hand_are_read_as_zoneinfo() -> None:
    assert safe_loads(forged("pytz", "timezone", "Europe/Paris")) is ZoneInfo("Europe/Paris")
    assert safe_loads(forged("pytz", "_p", "UTC")) is dt.UTC
    assert safe_loads(forged("pytz", "_UTC")) is dt.UTC


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("pytz", "reference"),
        ("pytz", "lazy"),
        ("pytz", "open_resource"),
        ("pytz", "_tzinfo_cache"),
        ("pytz.tzfile", "build_tzinfo"),
        ("pytz.lazy", "LazyDict"),
    ],
)
def test_pytz_things_other_than_zones_are_refused(module: str, name: str) -> None:
    with pytest.raises(UnsafePickleError):
        safe_loads(forged(module, name, "America/New_York"))


# Every module an old version's names lived in, with what is not data.
OLD_MODULES = sorted({module for module, _ in RENAMED} | {"numpy.core", "pandas.core"})
NOT_DATA = [
    ("os", "system"),
    ("builtins", "eval"),
    ("subprocess", "Popen"),
    ("numpy", "load"),
    ("pandas", "read_pickle"),
    ("pandas", "read_csv"),
    ("functools", "partial"),
]


@pytest.mark.parametrize(("module", "name"), NOT_DATA)
def test_non_data_callables_stay_refused(module: str, name: str) -> None:
    with pytest.raises(UnsafePickleError):
        safe_loads(forged(module, name, "echo pwned"))


@pytest.mark.parametrize("module", OLD_MODULES)
@pytest.mark.parametrize("name", sorted({name for _, name in NOT_DATA} | {"load", "read_pickle"}))
def test_non_data_callables_stay_refused_under_every_old_module(module: str, name: str) -> None:
    with pytest.raises(UnsafePickleError):
        safe_loads(forged(module, name, "echo pwned"))


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    ],
)
def test_old_numpy_allocations_are_size_checked(module: str, name: str) -> None:
    bomb = forged(module, name, np.ndarray, (1 << 40,), b"b")
    with pytest.raises(PickleLimitError):
        safe_loads(bomb)


@pytest.mark.parametrize(
    "module", ["pandas.core.frame", "pandas.core.indexes.numeric", "pandas.core.indexes.range"]
)
def test_old_pandas_containers_called_directly_are_refused(module: str) -> None:
    name = {"pandas.core.frame": "DataFrame", "pandas.core.indexes.range": "RangeIndex"}.get(
        module, "Int64Index"
    )
    with pytest.raises((PickleLimitError, UnsafePickleError)):
        safe_loads(forged(module, name, 0, 1 << 40))


def test_an_old_range_index_is_size_checked() -> None:
    bomb = (
        b"\x80\x02cpandas.core.indexes.base\n_new_Index\n"
        b"cpandas.core.indexes.range\nRangeIndex\n"
        b"}(X\x05\x00\x00\x00startK\x00X\x04\x00\x00\x00stop\x8a\x06\x00\x00\x00\x00\x00\x01u"
        b"\x86R."
    )
    with pytest.raises(PickleLimitError):
        safe_loads(bomb)


def test_a_malformed_old_pickle_fails_typed() -> None:
    with pytest.raises((PickleLimitError, UnsafePickleError, ValidationError, TypeError)):
        safe_loads(forged("pandas.core.indexes.numeric", "Int64Index", "not", "an", "index"))


def test_a_block_placed_in_more_rows_than_it_holds_is_refused() -> None:
    values = np.zeros((1, 1))
    body = pickle.dumps((values, slice(0, 1 << 40, 1), 2), protocol=2)[2:-1]
    bomb = b"\x80\x02cpandas._libs.internals\n_unpickle_block\n" + body + b"R."
    with pytest.raises(UnsafePickleError, match="rows"):
        safe_loads(bomb)
