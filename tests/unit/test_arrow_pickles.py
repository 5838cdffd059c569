"""Pickles of pandas frames whose strings are Arrow arrays (pandas 3 with pyarrow installed,
as it is beside Streamlit) load; an Arrow array with forged buffers is refused."""

from __future__ import annotations

import pickle

import pandas as pd
import pyarrow as pa
import pytest

from database.filecache.safe_pickle import UnsafePickleError, safe_loads


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"name": ["Apple", "NVIDIA", None], "close": [178.46, 121.4, float("nan")]},
        index=pd.Index(["AAPL", "NVDA", "GOOG"], name="ticker"),
    )


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_frames_with_arrow_strings_load_equal(protocol: int) -> None:
    original = frame()
    assert isinstance(original["name"].array, pd.arrays.ArrowStringArray)
    loaded = safe_loads(pickle.dumps({"frame": original, "names": original["name"]}, protocol))
    pd.testing.assert_frame_equal(loaded["frame"], original)
    pd.testing.assert_series_equal(loaded["names"], original["name"])


def _forged(array: pa.Array, old: bytes, new: bytes) -> bytes:
    data = pickle.dumps(array, protocol=5)
    assert data.count(old) == 1
    return data.replace(old, new)


def test_offsets_past_the_data_are_refused() -> None:
    # offsets of ["ab", "cd"]: 0, 2, 4 (int32, little-endian); the last is made 255
    data = _forged(
        pa.array(["ab", "cd"]),
        b"\x02\x00\x00\x00\x04\x00\x00\x00",
        b"\x02\x00\x00\x00\xff\x00\x00\x00",
    )
    with pytest.raises(UnsafePickleError, match="invalid array"):
        safe_loads(data)


def test_invalid_utf8_in_a_string_array_is_refused() -> None:
    data = _forged(pa.array(["abcq"]), b"abcq", b"ab\xff\xfe")
    with pytest.raises(UnsafePickleError, match="invalid array"):
        safe_loads(data)


def test_other_pyarrow_callables_stay_refused() -> None:
    class Reader:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return pa.memory_map, ("/etc/passwd",)

    with pytest.raises(UnsafePickleError, match="memory_map"):
        safe_loads(pickle.dumps(Reader()))


class _Call:
    """Pickles as ``function(*arguments)``: a forged pickle, built without pickletools."""

    def __init__(self, function: object, *arguments: object) -> None:
        self.function, self.arguments = function, arguments

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.function, self.arguments


def _array(alias: str, length: int, offset: int, buffers: list[object]) -> _Call:
    kind = _Call(pa.lib.type_for_alias, alias)
    return _Call(pa.lib._restore_array, (kind, length, 0, offset, buffers, [], None))


def _buffer(data: bytes) -> _Call:
    return _Call(pa.lib.py_buffer, bytearray(data))


@pytest.mark.parametrize(
    ("forged", "why"),
    [
        # pyarrow would index buffers that are not there (a crash, not an error)
        (_array("string", 2, 0, [None]), "three buffers"),
        (_array("int64", 5, 0, []), "only strings"),
        # a negative offset reads memory before the buffer
        (
            _array("large_string", 1, -(1 << 40), [None, _buffer(b"\0" * 16), _buffer(b"ab")]),
            "negative",
        ),
        (_array("uint8", 64, -48, [None, _buffer(b"A" * 16)]), "only strings"),
    ],
)
def test_forged_array_data_is_refused_before_pyarrow_reads_it(forged: _Call, why: str) -> None:
    with pytest.raises(UnsafePickleError, match=why):
        safe_loads(pickle.dumps(forged, protocol=5))


def test_a_string_column_of_anything_but_arrow_data_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pandas' __setstate__ would turn these ranges into arrays of 30 million integers
    array = pd.array(["a"], dtype="str")
    state = {**array.__getstate__(), "_pa_array": [range(30_000_000)] * 4}
    monkeypatch.setattr(type(array), "__getstate__", lambda self: state)
    forged = pickle.dumps(array, protocol=5)
    monkeypatch.undo()
    with pytest.raises(UnsafePickleError, match="non-Arrow data"):
        safe_loads(forged)
