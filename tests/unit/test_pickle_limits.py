"""A legacy pickle that would allocate too much is refused before it allocates it."""

from __future__ import annotations

import pickle
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from database.exceptions import ValidationError
from database.filecache.limits import MiB, PickleLimitError, PickleLimits, check_pickle
from database.filecache.safe_pickle import CorruptPickleError, UnsafePickleError, safe_loads

GiB = 1 << 30

# bytearray(1 << 30) through the allowed global builtins.bytearray: the 31 bytes that
# made the old importer build a 1 GiB bytearray (protocol 2, LONG1, TUPLE1, REDUCE).
BOMB = b"\x80\x02cbuiltins\nbytearray\n\x8a\x04\x00\x00\x00@\x85R."
# Protocol 5 BYTEARRAY8 declaring 1 GiB: the C unpickler allocates before it reads.
DECLARED_BOMB = b"\x80\x05\x96" + GiB.to_bytes(8, "little") + b"."


def memo_bomb(levels: int, fan_out: int = 10) -> bytes:
    """1 KiB, then lists of ``fan_out`` references to the level below: tiny on disk and
    in memory, but ``fan_out ** levels`` KiB to anything that walks it (JSON, the codec)."""
    data = bytearray(b"\x80\x04" + b"C\xff" + b"x" * 255 + b"\x940")  # BYTES MEMOIZE POP
    for level in range(levels):
        data += b"](" + (b"h" + bytes([level])) * fan_out  # EMPTY_LIST MARK BINGET...
        data += b"e\x940"  # APPENDS MEMOIZE POP
    return bytes(data + b"h" + bytes([levels]) + b".")


@contextmanager
def peak_memory() -> Iterator[list[int]]:
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def test_the_31_byte_bomb_is_refused_before_anything_is_allocated() -> None:
    assert len(BOMB) == 31
    small = BOMB[:-9] + b"\x8a\x01\x05\x85R."  # the same form, asking for 5 bytes
    assert pickle.loads(small) == bytearray(5)  # noqa: S301 - our own bytes
    with peak_memory() as peak, pytest.raises(PickleLimitError) as caught:
        safe_loads(BOMB)
    assert peak[0] < 4 * MiB
    assert "builtins.bytearray(1073741824) would allocate 1.0 GiB" in str(caught.value)
    assert "256.0 MiB limit" in caught.value.reason
    with pytest.raises(PickleLimitError):
        check_pickle(BOMB)  # on the opcodes alone, without the unpickler


def test_a_declared_length_longer_than_the_file_is_refused_unread() -> None:
    with peak_memory() as peak, pytest.raises(CorruptPickleError, match="bytearray8"):
        safe_loads(DECLARED_BOMB)
    assert peak[0] < 4 * MiB


def test_literal_data_over_the_allocation_budget_is_refused() -> None:
    payload = pickle.dumps(bytearray(2 * MiB), protocol=5)
    assert safe_loads(payload) == bytearray(2 * MiB)
    with pytest.raises(
        PickleLimitError, match=r"its opcodes would allocate 2\.0 MiB, over the 1\.0"
    ):
        safe_loads(payload, PickleLimits(max_allocation=MiB))


def test_a_file_over_the_size_limit_is_refused() -> None:
    payload = pickle.dumps(b"x" * 5000)
    with pytest.raises(
        PickleLimitError, match=r"the file is 4\.9 KiB, over the 4\.0 KiB file size"
    ):
        safe_loads(payload, PickleLimits(max_file_size=4096))


def test_a_structure_that_expands_through_memo_references_is_refused() -> None:
    assert len(safe_loads(memo_bomb(2))) == 10  # small enough: loads
    bomb = memo_bomb(9)  # 10**9 references to 255 bytes
    assert len(bomb) < 512
    with peak_memory() as peak, pytest.raises(PickleLimitError, match="every shared part"):
        safe_loads(bomb)
    assert peak[0] < 4 * MiB


def _reduce(module: str, name: str, *arguments: bytes) -> bytes:
    """``module.name(*arguments)`` as protocol 2 opcodes; each argument is one opcode."""
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"(" + b"".join(arguments) + b"tR."


def _text(value: str) -> bytes:
    return b"X" + len(value.encode()).to_bytes(4, "little") + value.encode()


INT = b"cbuiltins\nint\n" + _text("1073741824") + b"\x85R"  # int("1073741824"): computed


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (_reduce("builtins", "bytearray", INT), "builtins.bytearray(1073741824) would allocate"),
        (_reduce("builtins", "bytes", INT), "builtins.bytes(1073741824) would allocate"),
        (_reduce("builtins", "range", b"J\x00\x00\x00\x40"), "builtins.range of 1073741824 items"),
        (_reduce("builtins", "range", INT), "builtins.range of 1073741824 items"),
        (
            _reduce(
                "numpy._core.multiarray",
                "_reconstruct",
                b"cnumpy\nndarray\n",
                b"J\x00\x00\x00\x40\x85",
                b"C\x01b",
            ),
            "_reconstruct(1073741824,) of b'b' would allocate",
        ),
        (_reduce("numpy", "dtype", _text("V1073741824")), "1073741824 bytes per item"),
        (_reduce("numpy", "ndarray", b"J\x00\x00\x00\x40\x85"), "numpy.ndarray is called"),
        (_reduce("pandas", "Series", b"K\x00"), "pandas.Series is called directly"),
        (
            _reduce(
                "pandas.core.indexes.base",
                "_new_Index",
                b"cpandas\nRangeIndex\n",
                b"}" + _text("stop") + b"J\x00\x00\x00\x40s",
            ),
            "a RangeIndex of 1073741824 items",
        ),
    ],
)
def test_a_size_computed_or_declared_in_a_call_is_checked_before_the_call(
    payload: bytes, reason: str
) -> None:
    with peak_memory() as peak, pytest.raises(PickleLimitError) as caught:
        safe_loads(payload)
    assert reason in str(caught.value)
    assert peak[0] < 4 * MiB


@pytest.mark.parametrize(
    "payload",
    [
        # _codecs.encode(_codecs.encode(b"x", "hex"), "hex") doubles per call
        _reduce("_codecs", "encode", _text("abc"), _text("hex")),
        _reduce("_codecs", "encode", _text("abc"), _text("unicode_escape")),
        # copyreg._reconstructor(list, list, ...) runs list.__init__ on its argument
        _reduce("copyreg", "_reconstructor", b"cbuiltins\nlist\n", b"cbuiltins\nlist\n", b"N"),
    ],
)
def test_calls_that_multiply_their_input_are_refused(payload: bytes) -> None:
    with pytest.raises(UnsafePickleError):
        safe_loads(payload)


def test_non_data_globals_are_still_refused() -> None:
    with pytest.raises(UnsafePickleError, match=r"os\.system"):
        safe_loads(_reduce("os", "system", _text("true")))


@pytest.mark.parametrize("protocol", range(3, pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize(
    "value",
    [
        {"price": Decimal("222.77"), "tags": {"a", "b"}, "raw": b"\x00" * 100, "n": 10**12},
        [{"open": 1.5, "volume": 12_000_000} for _ in range(5_000)],
        pd.DataFrame({"Close": np.linspace(1, 2, 50_000)}, index=pd.RangeIndex(50_000)),
        pd.Series([1.5, 2.5], index=pd.to_datetime(["2024-01-02", "2024-01-03"])),
        bytearray(b"ab"),
        range(10),
    ],
    ids=["dict", "records", "frame", "series", "bytearray", "range"],
)
def test_ordinary_cache_data_is_within_the_default_limits(value: object, protocol: int) -> None:
    loaded = safe_loads(pickle.dumps(value, protocol=protocol))
    equal: Callable[[object, object], object] = (
        pd.testing.assert_frame_equal  # type: ignore[assignment]
        if isinstance(value, pd.DataFrame)
        else pd.testing.assert_series_equal  # type: ignore[assignment]
        if isinstance(value, pd.Series)
        else lambda a, b: None
    )
    equal(loaded, value)
    if not isinstance(value, pd.DataFrame | pd.Series):
        assert loaded == value


@pytest.mark.parametrize("field", ["max_file_size", "max_allocation"])
@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "64"])
def test_limits_must_be_positive_byte_counts(field: str, bad: object) -> None:
    with pytest.raises(ValidationError) as caught:
        PickleLimits(**{field: bad})  # type: ignore[arg-type]
    assert caught.value.field == field
