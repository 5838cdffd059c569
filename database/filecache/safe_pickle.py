"""Unpickling that can only build data: builtins, datetime, decimal, numpy and pandas.

A pickle names the callables that rebuild it; an ordinary ``pickle.load`` calls
whatever it names (``os.system`` included). :func:`safe_loads` resolves only
the names below, collected by pickling the data types the old file cache held
(dicts, lists, Decimals, datetimes, numpy arrays, pandas DataFrames and Series
with their indexes, dtypes and time zones). Anything else is refused with
:class:`UnsafePickleError` before it is called.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from database.exceptions import DatabaseError

_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        *(
            ("builtins", name)
            for name in (
                "bytearray",
                "bytes",
                "complex",
                "dict",
                "float",
                "frozenset",
                "int",
                "list",
                "object",
                "range",
                "set",
                "slice",
                "str",
                "tuple",
            )
        ),
        *(("__builtin__", name) for name in ("bytearray", "complex", "frozenset", "set", "slice")),
        ("_codecs", "encode"),
        ("copyreg", "_reconstructor"),
        ("collections", "OrderedDict"),
        *(("datetime", name) for name in ("date", "datetime", "time", "timedelta", "timezone")),
        ("decimal", "Decimal"),
        ("zoneinfo", "ZoneInfo"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        *(
            (module, name)
            for module in ("numpy._core.multiarray", "numpy.core.multiarray")
            for name in ("_reconstruct", "scalar")
        ),
        *((module, "_frombuffer") for module in ("numpy._core.numeric", "numpy.core.numeric")),
        *(
            ("pandas", name)
            for name in (
                "Categorical",
                "CategoricalDtype",
                "DataFrame",
                "DatetimeIndex",
                "DatetimeTZDtype",
                "Index",
                "Int64Dtype",
                "MultiIndex",
                "Period",
                "PeriodDtype",
                "PeriodIndex",
                "RangeIndex",
                "Series",
                "StringDtype",
            )
        ),
        *(
            ("pandas.arrays", name)
            for name in (
                "DatetimeArray",
                "IntegerArray",
                "PeriodArray",
                "StringArray",
                "TimedeltaArray",
            )
        ),
        ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"),
        ("pandas._libs.internals", "_unpickle_block"),
        ("pandas._libs.tslibs.nattype", "_nat_unpickle"),
        ("pandas._libs.tslibs.timedeltas", "_timedelta_unpickle"),
        ("pandas._libs.tslibs.timestamps", "_unpickle_timestamp"),
        *(
            ("pandas._libs.tslibs.offsets", name)
            for name in (
                "Day",
                "BusinessDay",
                "MonthEnd",
                "MonthBegin",
                "YearEnd",
                "QuarterEnd",
                "Week",
            )
        ),
        ("pandas.core.indexes.base", "_new_Index"),
        ("pandas.core.indexes.datetimes", "_new_DatetimeIndex"),
        ("pandas.core.internals.managers", "BlockManager"),
        ("pandas.core.internals.managers", "SingleBlockManager"),
    }
)


class UnsafePickleError(DatabaseError):
    """A pickle asked for something other than plain data; nothing of it was run."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"refused to unpickle {module}.{name}: not a data type")
        self.module = module
        self.name = name


def _zoneinfo_getattr(target: Any, name: str) -> Any:
    # ZoneInfo pickles as getattr(ZoneInfo, "_unpickle")(key, ...): allow exactly that.
    from zoneinfo import ZoneInfo

    if target is ZoneInfo and name == "_unpickle":
        return ZoneInfo._unpickle  # type: ignore[attr-defined]
    raise UnsafePickleError(
        getattr(target, "__module__", "?"), f"{getattr(target, '__name__', target)}.{name}"
    )


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in {("builtins", "getattr"), ("__builtin__", "getattr")}:
            return _zoneinfo_getattr
        if (module, name) not in _ALLOWED:
            raise UnsafePickleError(module, name)
        return super().find_class(module, name)


def safe_loads(data: bytes) -> Any:
    """Unpickle ``data`` if it only builds allowed data types; else UnsafePickleError."""
    return _DataUnpickler(io.BytesIO(data)).load()
