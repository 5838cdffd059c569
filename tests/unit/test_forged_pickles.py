"""Forged cache files found by attacking the cross-version unpickler: each is refused
with a typed error, without crashing the process or allocating what it asks for."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pandas._libs.internals import BlockPlacement

from database.datatypes import DataTypes
from database.exceptions import DatabaseError
from database.filecache.limits import PickleLimitError, PickleLimits
from database.filecache.safe_pickle import CorruptPickleError, UnsafePickleError, safe_loads


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


_RANGE = _global("builtins", "range") + b"(J\x40\x8a\xf7\x01tR"  # range(33_000_000)


def test_a_block_placed_past_the_columns_is_refused(tmp_path: Path) -> None:
    frame = pd.DataFrame(np.arange(6.0).reshape(3, 2), columns=["a", "b"])
    frame._mgr.blocks[0]._mgr_locs = BlockPlacement(np.array([0, 1_000_000_000]))
    forged = pickle.dumps({"data": frame}, protocol=5)
    # in a process of its own: before the check, the first use of the frame crashed it
    script = (
        "import sys; from database.filecache.safe_pickle import safe_loads\n"
        "try:\n    print(safe_loads(sys.stdin.buffer.read())['data'])\n"
        "except Exception as error:\n    print(type(error).__name__, error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], input=forged, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert b"UnsafePickleError" in result.stdout
    assert b"do not cover its columns" in result.stdout


@pytest.mark.parametrize(
    ("forged", "why"),
    [
        # list(range(33M)): 45 bytes that build 33 million ints
        (b"\x80\x02" + _global("builtins", "list") + b"(" + _RANGE + b"tR.", "list of a range"),
        # eight lists of one memoized range
        (
            b"\x80\x02"
            + _RANGE
            + b"q\x010("
            + (_global("builtins", "list") + b"(h\x01tR") * 8
            + b"l.",
            "list of a range",
        ),
        # an object array of 250 million items through numpy 1's module path
        (
            b"\x80\x02"
            + _global("numpy.core.multiarray", "_reconstruct")
            + b"("
            + _global("numpy", "ndarray")
            + b"(J\x80\xb2\xe6\x0etX\x01\x00\x00\x00OtR.",
            "would allocate",
        ),
        # _new_DatetimeIndex(ndarray, {...}): ndarray.__new__ by another name
        (
            b"\x80\x02"
            + _global("pandas.core.indexes.datetimes", "_new_DatetimeIndex")
            + b"("
            + _global("numpy", "ndarray")
            + b"(X\x05\x00\x00\x00shape(J\x80\xb2\xe6\x0etX\x05\x00\x00\x00dtype"
            + b"X\x01\x00\x00\x00OdtR.",
            "_new_DatetimeIndex of 'ndarray'",
        ),
    ],
    ids=["list-of-range", "memoized-range-x8", "object-array", "datetime-index-of-ndarray"],
)
def test_small_files_that_would_build_gigabytes_are_refused(forged: bytes, why: str) -> None:
    with pytest.raises((UnsafePickleError, PickleLimitError), match=why):
        safe_loads(forged)


def test_millions_of_empty_opcodes_are_refused_quickly() -> None:
    forged = b"\x80\x02" + b"(0" * 200_000 + b"N."  # marks and pops: nothing built
    started = time.perf_counter()
    with pytest.raises(PickleLimitError, match="opcodes"):
        safe_loads(forged, PickleLimits(max_allocation=1_000_000))
    assert time.perf_counter() - started < 5
    assert safe_loads(b"\x80\x02" + b"(0" * 1000 + b"N.") is None  # a few are fine


@dataclasses.dataclass
class Result:
    ticker: str
    score: float = 0.0
    calls: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        raise AssertionError("the application's __post_init__ ran")


def test_calling_an_allowed_dataclass_runs_none_of_its_code() -> None:
    types = DataTypes()
    types.allow(Result)
    name = Result.__qualname__.encode()
    # Result() then its state: REDUCE would run __init__ and __post_init__
    forged = (
        b"\x80\x02" + _global(__name__, name.decode()) + b")R}X\x06\x00\x00\x00tickerX\x01\x00"
        b"\x00\x00Asb."
    )
    loaded = safe_loads(forged, types=types)
    assert type(loaded) is Result
    assert loaded.ticker == "A"


@pytest.mark.parametrize(
    "forged",
    [
        b"",
        b"\x80\x02",
        b"garbage",
        # a timestamp 10**30 nanoseconds after the epoch: pandas' own constructor refuses
        b"\x80\x02"
        + _global("pandas._libs.tslibs.timestamps", "_unpickle_timestamp")
        + b"("
        + pickle.dumps(10**30, protocol=2)[2:-1]
        + b"NNK\ntR.",
    ],
    ids=["empty", "truncated", "garbage", "constructor-refuses"],
)
def test_a_malformed_pickle_is_a_typed_error(forged: bytes) -> None:
    with pytest.raises(DatabaseError) as raised:
        safe_loads(forged)
    assert isinstance(raised.value, CorruptPickleError | UnsafePickleError | PickleLimitError)
