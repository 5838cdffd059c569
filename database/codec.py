"""JSON encoding of cache payloads that keeps their types.

JSON-native values (str, 64-bit int, finite float, bool, None, lists, dicts
with string keys) are stored as themselves. Everything else becomes a small
tagged object ``{"__type__": ..., ...}``: Decimal, date, datetime, timedelta,
tuple, set, larger integers, floats a JSON number would not give back (infinite,
NaN, -0.0, and those written with an exponent, which jsonb reads back as
integers), text PostgreSQL's jsonb cannot
hold (NUL, unpaired surrogates: stored as code points), numpy scalars, pandas
Timestamps, Series and DataFrames (with their index, column labels and dtypes,
so a yfinance statement frame whose columns are Timestamps comes back equal).
Decoding builds only these types: nothing stored can make it call arbitrary code.

A payload must be a tree at most :data:`MAX_DEPTH` containers deep: one that
contains itself, or nests deeper (a legacy pickle can hold lists 200,000
deep), is refused with a ``ValidationError`` on ``data``, never a
``RecursionError`` from the encoder, the JSON serialiser or the database.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from database.datatypes import (
    DATA_TYPES,
    DataTypes,
    build_dataclass,
    build_namedtuple,
    enum_member,
    kind_of,
    type_name,
)
from database.exceptions import ValidationError

TAG = "__type__"
# Containers within containers. Each level of a payload may take three in JSON (a tagged
# tuple: a dict holding a list), and a parser's recursion (Python's json, PostgreSQL's
# jsonb) must stay far from its limit.
MAX_DEPTH = 100
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_UNSTORABLE_SEARCH = _UNSTORABLE.search
# A finite float whose magnitude is in [1e-4, 1e16) is written by repr without an
# exponent (repr switches to one outside that range), and is not -0.0: it is exactly
# a JSON number (see _json_exact). Others take the full test.
_PLAIN_FLOAT_MIN, _PLAIN_FLOAT_MAX = 1e-4, 1e16
_CONTAINERS = (list, tuple, set, frozenset, dict, np.ndarray, pd.DataFrame, pd.Series)


def encode(value: Any, types: DataTypes | None = None) -> Any:
    """A JSON-serialisable form of ``value`` that :func:`decode` turns back into it.

    ``ValidationError`` (on ``data``) for a type it cannot store, or a payload
    that contains itself or is nested more than :data:`MAX_DEPTH` containers deep.
    The application's dataclasses, named tuples and enums are stored if allowed in
    ``types`` (by default :data:`database.datatypes.DATA_TYPES`).
    """
    return _encode(value, (), DATA_TYPES if types is None else types)


def _enter(value: Any, path: tuple[int, ...]) -> tuple[int, ...]:
    """The path of containers down to ``value``, which must not be on it already."""
    if id(value) in path:  # the ids of its ancestors, alive while it is encoded
        raise ValidationError("data", type(value).__name__, "contains itself: it cannot be cached")
    if len(path) >= MAX_DEPTH:
        raise ValidationError(
            "data",
            type(value).__name__,
            f"is nested more than {MAX_DEPTH} containers deep: it cannot be cached",
        )
    return (*path, id(value))


def _encode(value: Any, path: tuple[int, ...], types: DataTypes) -> Any:
    # The built-in types of JSON first, by their exact class: a subclass (an IntEnum
    # member, numpy's float64) takes the full path below, as do application types.
    cls = type(value)
    if cls is str:
        return value if _UNSTORABLE_SEARCH(value) is None else _encode_text(value)
    if cls is float:
        return value if _PLAIN_FLOAT_MIN <= abs(value) < _PLAIN_FLOAT_MAX else _encode_float(value)
    if cls is int:
        return value if _INT64_MIN <= value <= _INT64_MAX else _encode_int(value)
    if value is None or cls is bool:
        return value
    encoder = _BY_CLASS.get(cls)
    if encoder is not None:
        return encoder(value, path, types)
    return _encode_any(value, path, types)


def _encode_items(items: Iterable[Any], path: tuple[int, ...], types: DataTypes) -> list[Any]:
    """``[_encode(item, path, types) for item in items]``, with the JSON scalars inline
    (most of a payload's values): one call per container rather than one per value."""
    search, low, high = _UNSTORABLE_SEARCH, _PLAIN_FLOAT_MIN, _PLAIN_FLOAT_MAX
    smallest, largest = _INT64_MIN, _INT64_MAX
    encoded: list[Any] = []
    append = encoded.append
    for item in items:
        cls = type(item)
        if cls is str:
            append(item if search(item) is None else _encode_text(item))
        elif cls is float:
            append(item if low <= abs(item) < high else _encode_float(item))
        elif cls is int:
            append(item if smallest <= item <= largest else _encode_int(item))
        elif item is None or cls is bool:
            append(item)
        else:
            append(_encode(item, path, types))
    return encoded


def _encode_text(value: str) -> Any:
    return value if _storable(value) else {TAG: "str", "value": [ord(c) for c in value]}


def _encode_float(value: float) -> Any:
    return value if _json_exact(value) else {TAG: "float", "value": repr(value)}


def _encode_int(value: int) -> Any:
    # Beyond 64 bits as hex: JSON readers differ there, and Python's json refuses
    # to write or read an integer of more than 4300 digits (hex has no such limit).
    return value if _INT64_MIN <= value <= _INT64_MAX else {TAG: "int", "value": f"{value:x}"}


def _encode_dict(value: dict[Any, Any], path: tuple[int, ...], types: DataTypes) -> Any:
    path = _enter(value, path)
    if _plain_keys(value):
        return dict(zip(value, _encode_items(value.values(), path, types), strict=True))
    pairs = [[_encode(k, path, types), _encode(v, path, types)] for k, v in value.items()]
    return {TAG: "dict", "value": pairs}


def _plain_keys(value: dict[Any, Any]) -> bool:
    """Whether the dict's keys are all storable text (and none is the tag): it is
    then stored as a JSON object."""
    try:
        joined = "".join(value)  # a TypeError unless every key is a str
    except TypeError:
        return False
    return _UNSTORABLE_SEARCH(joined) is None and TAG not in value


def _encode_list(value: list[Any], path: tuple[int, ...], types: DataTypes) -> Any:
    return _encode_items(value, _enter(value, path), types)


def _encode_tuple(value: tuple[Any, ...], path: tuple[int, ...], types: DataTypes) -> Any:
    return {TAG: "tuple", "value": _encode_items(value, _enter(value, path), types)}


def _encode_set(value: set[Any] | frozenset[Any], path: tuple[int, ...], types: DataTypes) -> Any:
    path = _enter(value, path)
    # Encoded (so checked) before repr orders them: repr recurses without a limit.
    items = [(_encode(item, path, types), item) for item in value]
    items.sort(key=lambda pair: repr(pair[1]))
    return {TAG: type(value).__name__, "value": [encoded for encoded, _ in items]}


def _encode_numpy(value: np.generic, path: tuple[int, ...], types: DataTypes) -> Any:
    return {TAG: "numpy", "dtype": str(value.dtype), "value": _encode(value.item(), path, types)}


def _encode_ndarray(value: np.ndarray[Any, Any], path: tuple[int, ...], types: DataTypes) -> Any:
    path = _enter(value, path)
    return {
        TAG: "ndarray",
        "dtype": value.dtype.str if value.dtype != object else "object",
        "shape": list(value.shape),
        "value": _encode_items(value.ravel().tolist(), path, types),
    }


def _encode_frame(value: pd.DataFrame, path: tuple[int, ...], types: DataTypes) -> Any:
    path = _enter(value, path)
    return {
        TAG: "dataframe",
        "index": _encode_index(value.index, path, types),
        "columns": _encode_index(value.columns, path, types),
        "data": [_encode_array(column, path, types) for column in _frame_columns(value)],
    }


def _frame_columns(frame: pd.DataFrame) -> list[Any]:
    """The frame's columns by position, as the arrays a Series of each would hold:
    without building the Series (``iloc[:, i]`` costs 80 microseconds a column)."""
    column = getattr(frame, "_get_column_array", None)  # pandas' own, since 1.4
    if column is None:
        return [frame.iloc[:, i] for i in range(frame.shape[1])]
    return [column(i) for i in range(frame.shape[1])]


def _encode_series(value: pd.Series, path: tuple[int, ...], types: DataTypes) -> Any:
    path = _enter(value, path)
    return {
        TAG: "series",
        "name": _encode(value.name, path, types),
        "index": _encode_index(value.index, path, types),
        "data": _encode_array(value, path, types),
    }


def _encode_any(value: Any, path: tuple[int, ...], types: DataTypes) -> Any:
    """Any other value, by what it is an instance of: subclasses of the types above,
    the application's types, the pandas and numpy scalars."""
    if isinstance(value, _CONTAINERS):
        path = _enter(value, path)
    kind = kind_of(type(value))
    if kind is not None and type(value) in types:
        return _encode_app_type(value, kind, path, types)
    if kind == "dataclass":
        raise ValidationError(
            "data",
            type_name(type(value)),
            "cannot be cached: allow it with database.datatypes.allow_types",
        )
    if isinstance(value, str):
        return value if _storable(value) else {TAG: "str", "value": [ord(c) for c in value]}
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, np.generic):
        return {
            TAG: "numpy",
            "dtype": str(value.dtype),
            "value": _encode(value.item(), path, types),
        }
    if isinstance(value, int):
        return _encode_int(value)
    if isinstance(value, float):
        return _encode_float(value)
    if isinstance(value, Decimal):
        return {TAG: "decimal", "value": str(value)}
    if value is pd.NaT:  # a datetime too, without an isoformat to read back
        return {TAG: "nat"}
    if value is pd.NA:
        return {TAG: "na"}
    if isinstance(value, pd.Timestamp):
        return {TAG: "timestamp", "value": value.isoformat()} if value is not pd.NaT else None
    if isinstance(value, dt.datetime):
        return {TAG: "datetime", "value": value.isoformat()}
    if isinstance(value, dt.date):
        return {TAG: "date", "value": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {TAG: "timedelta", "value": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, list):
        return _encode_items(value, path, types)
    if isinstance(value, tuple):
        return {TAG: "tuple", "value": _encode_items(value, path, types)}
    if isinstance(value, set | frozenset):
        items = [(_encode(item, path, types), item) for item in value]
        items.sort(key=lambda pair: repr(pair[1]))
        return {TAG: type(value).__name__, "value": [encoded for encoded, _ in items]}
    if isinstance(value, dict):
        if _plain_keys(value):
            return dict(zip(value, _encode_items(value.values(), path, types), strict=True))
        pairs = [[_encode(k, path, types), _encode(v, path, types)] for k, v in value.items()]
        return {TAG: "dict", "value": pairs}
    if isinstance(value, np.ndarray):
        return {
            TAG: "ndarray",
            "dtype": value.dtype.str if value.dtype != object else "object",
            "shape": list(value.shape),
            "value": _encode_items(value.ravel().tolist(), path, types),
        }
    if isinstance(value, pd.DataFrame):
        return {
            TAG: "dataframe",
            "index": _encode_index(value.index, path, types),
            "columns": _encode_index(value.columns, path, types),
            "data": [_encode_array(column, path, types) for column in _frame_columns(value)],
        }
    if isinstance(value, pd.Series):
        return {
            TAG: "series",
            "name": _encode(value.name, path, types),
            "index": _encode_index(value.index, path, types),
            "data": _encode_array(value, path, types),
        }
    raise ValidationError("data", type(value).__name__, "cannot be cached (not a supported type)")


def _tagged(tag: str, text: Callable[[Any], str]) -> _Encoder:
    return lambda value, _path, _types: {TAG: tag, "value": text(value)}


_Encoder = Callable[[Any, tuple[int, ...], DataTypes], Any]
# Encoders by exact class (none of these is an application type): a dict lookup
# rather than a chain of isinstance tests. Anything else goes to _encode_any.
_BY_CLASS: dict[type, _Encoder] = {
    dict: _encode_dict,
    list: _encode_list,
    tuple: _encode_tuple,
    set: _encode_set,
    frozenset: _encode_set,
    np.ndarray: _encode_ndarray,
    pd.DataFrame: _encode_frame,
    pd.Series: _encode_series,
    Decimal: _tagged("decimal", str),
    pd.Timestamp: _tagged("timestamp", pd.Timestamp.isoformat),
    dt.datetime: _tagged("datetime", dt.datetime.isoformat),
    dt.date: _tagged("date", dt.date.isoformat),
    dt.timedelta: lambda value, _path, _types: {
        TAG: "timedelta",
        "value": [value.days, value.seconds, value.microseconds],
    },
    **{
        cls: _encode_numpy
        for cls in (np.float64, np.float32, np.int64, np.int32, np.bool_, np.datetime64)
    },
}


def decode(value: Any, types: DataTypes | None = None) -> Any:
    """The value :func:`encode` was given. An application type must be allowed in
    ``types`` (by default :data:`database.datatypes.DATA_TYPES`): one that is not, or
    no longer, is a ``ValidationError``."""
    try:
        return _decode(value, DATA_TYPES if types is None else types)
    except (ValidationError, MemoryError):
        raise
    except Exception as error:  # a stored value no encode() wrote: edited, or forged
        raise ValidationError(
            "data", type(value).__name__, f"cannot be decoded ({error})"
        ) from None


def _stored_dtype(text: Any) -> np.dtype[Any]:
    """A numpy dtype named by a stored value, at most MAX_ITEM_BYTES per item (a forged
    'U500000000' would allocate 2 GB for one string)."""
    dtype: np.dtype[Any] = np.dtype(text)
    if dtype.itemsize > MAX_ITEM_BYTES:
        raise ValidationError("data", str(text), f"has items over {MAX_ITEM_BYTES} bytes")
    return dtype


MAX_ITEM_BYTES = 1 << 16


def _decode(value: Any, types: DataTypes) -> Any:
    if isinstance(value, list):
        return [_decode(item, types) for item in value]
    if not isinstance(value, dict):
        return value
    kind = value.get(TAG)
    if kind is None:
        return {k: _decode(v, types) for k, v in value.items()}

    def decode(item: Any) -> Any:
        return _decode(item, types)

    payload: Any = value.get("value")
    decoders: dict[str, Callable[[], Any]] = {
        "float": lambda: float(payload),
        "int": lambda: int(payload, 16),
        "str": lambda: "".join(map(chr, payload)),
        "nat": lambda: pd.NaT,
        "na": lambda: pd.NA,
        "decimal": lambda: Decimal(payload),
        "timestamp": lambda: pd.Timestamp(payload),
        "datetime": lambda: dt.datetime.fromisoformat(payload),
        "date": lambda: dt.date.fromisoformat(payload),
        "timedelta": lambda: dt.timedelta(
            days=payload[0], seconds=payload[1], microseconds=payload[2]
        ),
        "tuple": lambda: tuple(decode(item) for item in payload),
        "set": lambda: {decode(item) for item in payload},
        "frozenset": lambda: frozenset(decode(item) for item in payload),
        "dict": lambda: {decode(k): decode(v) for k, v in payload},
        "numpy": lambda: np.array(decode(payload), dtype=_stored_dtype(value["dtype"]))[()],
        "dataframe": lambda: _decode_frame(value, types),
        "ndarray": lambda: _decode_ndarray(value, types),
        "dataclass": lambda: build_dataclass(
            _app_type(value, "dataclass", types),
            {name: decode(item) for name, item in _fields(value).items()},
        ),
        "namedtuple": lambda: build_namedtuple(
            _app_type(value, "namedtuple", types), [decode(item) for item in payload]
        ),
        "enum": lambda: enum_member(_app_type(value, "enum", types), decode(payload)),
        "series": lambda: pd.Series(
            _decode_array(value["data"], types),
            index=_decode_index(value["index"], types),
            name=decode(value["name"]),
            dtype=_exact_dtype(value["data"]),
        ),
    }
    if kind not in decoders:
        raise ValidationError("data", kind, "is not a known cached type")
    return decoders[kind]()


def _encode_app_type(value: Any, kind: str, path: tuple[int, ...], types: DataTypes) -> Any:
    """An allowed dataclass (its fields), named tuple (its items) or enum member (its
    value), tagged with its class's ``module.qualname``."""
    name = type_name(type(value))
    if kind == "enum":
        return {TAG: "enum", "name": name, "value": _encode(value.value, path, types)}
    if not isinstance(value, _CONTAINERS):  # a named tuple has entered as a tuple
        path = _enter(value, path)
    if kind == "namedtuple":
        items = [_encode(item, path, types) for item in value]
        return {TAG: "namedtuple", "name": name, "value": items}
    fields = {
        field.name: _encode(getattr(value, field.name), path, types)
        for field in dataclasses.fields(value)
    }
    return {TAG: "dataclass", "name": name, "fields": fields}


def _app_type(encoded: dict[str, Any], kind: str, types: DataTypes) -> type:
    """The allowed class an encoded dataclass, named tuple or enum names."""
    name = encoded.get("name")
    cls = types.get(name) if isinstance(name, str) else None
    if cls is None or kind_of(cls) != kind:
        raise ValidationError("data", name, f"is not an allowed {kind} (see allow_types)")
    return cls


def _fields(encoded: dict[str, Any]) -> dict[str, Any]:
    fields = encoded.get("fields")
    if not isinstance(fields, dict):
        raise ValidationError("data", encoded.get("name"), "has no fields")
    return fields


def _json_exact(value: float) -> bool:
    """Whether a float survives as a JSON number: PostgreSQL's jsonb keeps numbers as
    ``numeric``, which writes 1e+16 back as 10000000000000000 (an int) and loses the
    sign of -0.0; infinities and NaN are not JSON at all."""
    if not math.isfinite(value) or (value == 0 and math.copysign(1.0, value) < 0):
        return False
    return "e" not in repr(value)


def _storable(text: str) -> bool:
    return _UNSTORABLE.search(text) is None


def _decode_ndarray(encoded: dict[str, Any], types: DataTypes) -> np.ndarray[Any, Any]:
    items = [_decode(item, types) for item in encoded["value"]]
    array = np.empty(len(items), dtype=_stored_dtype(encoded["dtype"]))
    array[:] = items
    return array.reshape(encoded["shape"])


def _encode_array(values: Any, path: tuple[int, ...], types: DataTypes) -> dict[str, Any]:
    """A column's dtype and values; ``values`` is a Series, an Index, or the array a
    Series holds (a numpy array or a pandas extension array)."""
    dtype = values.dtype
    if isinstance(dtype, np.dtype):  # numpy's own: no categories, no string storage
        kind = dtype.kind
        if kind == "M":
            items = _isoformats(values)
        elif kind == "m":
            items = [None if pd.isna(v) else v.value for v in values]
        elif kind in "ib" or (kind == "u" and dtype.itemsize < 8):
            items = values.tolist()  # Python ints within 64 bits, or bools: JSON as they are
        else:
            items = _encode_items(values.tolist(), path, types)
        return {"dtype": str(dtype), "values": items}
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        items = _isoformats(values)
    elif pd.api.types.is_timedelta64_dtype(dtype):
        items = [None if pd.isna(v) else v.value for v in values]
    else:
        items = _encode_items(values.tolist(), path, types)
    encoded: dict[str, Any] = {"dtype": str(dtype), "values": items}
    if isinstance(dtype, pd.CategoricalDtype):  # "category" alone loses both
        encoded["categories"] = _encode_array(pd.Index(dtype.categories), path, types)
        encoded["ordered"] = bool(dtype.ordered)
    elif isinstance(dtype, pd.StringDtype) and str(dtype) == "string":
        encoded["dtype"] = f"string[{dtype.storage}]"  # "string" names either storage
    return encoded


def _isoformats(values: Any) -> list[str | None]:
    """``Timestamp.isoformat()`` of each time (None for NaT). Through ``datetime``, three
    times faster, when no time has nanoseconds (which a ``datetime`` cannot hold and
    ``isoformat`` writes) and all are datetimes at all (years 1 to 9999)."""
    array: Any = values.array if isinstance(values, pd.Series) else values
    try:
        if array.unit == "ns" and np.any(array.asi8[~array.isna()] % 1000):
            raise ValueError("nanoseconds")
        stamps = array.to_pydatetime()
    except Exception:  # not a pandas datetime array, or not datetimes: one by one
        return [None if pd.isna(v) else v.isoformat() for v in values]
    nat = pd.NaT
    return [None if stamp is nat else stamp.isoformat() for stamp in stamps]


def _decode_array(encoded: dict[str, Any], types: DataTypes) -> Any:
    dtype, items = encoded["dtype"], encoded["values"]
    if dtype.startswith("datetime64"):
        stamps = pd.to_datetime(items, utc="," in dtype, format="ISO8601")
        if "," in dtype:  # datetime64[ms, America/New_York]: the zone, then the unit
            unit, zone = (part.strip(" ]") for part in dtype[len("datetime64[") :].split(",", 1))
            return stamps.tz_convert(zone).as_unit(unit)
        return stamps.astype(dtype)
    if dtype.startswith("timedelta64"):
        return pd.to_timedelta(items).astype(dtype)
    decoded = [_decode(item, types) for item in items]
    if "categories" in encoded:
        categories = _decode_array(encoded["categories"], types)
        return pd.Categorical(decoded, categories=categories, ordered=encoded["ordered"])
    if dtype == "object":
        array = np.empty(len(decoded), dtype=object)
        array[:] = decoded
        return array
    return pd.array(decoded, dtype=dtype)


def _encode_index(index: pd.Index, path: tuple[int, ...], types: DataTypes) -> dict[str, Any]:
    if isinstance(index, pd.RangeIndex):
        return {
            "kind": "range",
            "start": index.start,
            "stop": index.stop,
            "step": index.step,
            "name": _encode(index.name, path, types),
        }
    if isinstance(index, pd.MultiIndex):
        return {
            "kind": "multi",
            "levels": [
                _encode_index(index.get_level_values(i), path, types) for i in range(index.nlevels)
            ],
            "names": [_encode(n, path, types) for n in index.names],
        }
    return {
        "kind": "index",
        "name": _encode(index.name, path, types),
        **_encode_array(index, path, types),
    }


def _decode_index(encoded: dict[str, Any], types: DataTypes) -> pd.Index:
    if encoded["kind"] == "range":
        return pd.RangeIndex(
            encoded["start"], encoded["stop"], encoded["step"], name=_decode(encoded["name"], types)
        )
    if encoded["kind"] == "multi":
        arrays = [_decode_index(level, types) for level in encoded["levels"]]
        names = [_decode(n, types) for n in encoded["names"]]
        return pd.MultiIndex.from_arrays(arrays, names=names)
    index: pd.Index = pd.Index(
        _decode_array(encoded, types),
        name=_decode(encoded["name"], types),
        dtype=_exact_dtype(encoded),
    )
    return index


def _exact_dtype(encoded: dict[str, Any]) -> type[object] | None:
    """``object`` for an object array: pandas 3 would otherwise infer its strings as
    ``str`` (pyarrow-backed when pyarrow is installed), which is not what was cached
    and cannot hold every Python string (a lone surrogate)."""
    return object if encoded["dtype"] == "object" else None


def _decode_frame(encoded: dict[str, Any], types: DataTypes) -> pd.DataFrame:
    index = _decode_index(encoded["index"], types)
    columns = _decode_index(encoded["columns"], types)
    if not encoded["data"]:
        frame = pd.DataFrame(index=index)
    else:
        frame = pd.DataFrame(
            {
                i: pd.Series(_decode_array(column, types), dtype=_exact_dtype(column), copy=False)
                for i, column in enumerate(encoded["data"])
            }
        )
        frame.index = index
    frame.columns = columns
    return frame
