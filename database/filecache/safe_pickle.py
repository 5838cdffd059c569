"""Unpickling that can only build data: builtins, datetime, decimal, numpy, pandas
(and the pyarrow arrays behind pandas' strings).

A pickle names the callables that rebuild it; an ordinary ``pickle.load`` calls
whatever it names (``os.system`` included). :func:`safe_loads` resolves only
the names below, collected by pickling the data types the old file cache held
(dicts, lists, Decimals, datetimes, numpy arrays, pandas DataFrames and Series
with their indexes, dtypes and time zones). Anything else is refused with
:class:`UnsafePickleError` before it is called.

Sizes are bounded too (:mod:`database.filecache.limits`): the opcodes are
checked before the unpickler starts, and the callables that allocate from a
small argument (``bytes(n)``, ``bytearray(n)``, ``range``, numpy's
``_reconstruct`` and ``dtype``, a pandas ``RangeIndex``) are wrapped so a size
computed while unpickling is checked before anything is allocated.
"""

from __future__ import annotations

import codecs
import io
import math
import operator
import pickle
from collections.abc import Callable
from typing import Any

from database.exceptions import DatabaseError
from database.filecache.limits import (
    PickleLimitError,
    PickleLimits,
    check_pickle,
    over_budget,
    range_length,
)

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
                "ArrowStringArray",
                "DatetimeArray",
                "IntegerArray",
                "PeriodArray",
                "StringArray",
                "TimedeltaArray",
            )
        ),
        # pandas' "str" columns when pyarrow is installed (as it is beside Streamlit):
        # an Arrow array rebuilt from its type's name and its buffers, then validated.
        *(("pyarrow.lib", name) for name in ("_restore_array", "py_buffer", "type_for_alias")),
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


_RANGE_KEYS = (("start", 0), ("stop", 0), ("step", 1))


def _guarded(module: str, name: str, target: Any, limits: PickleLimits) -> Any:
    """``target``, or a wrapper that checks what it is asked to build before building it."""
    called = f"{module}.{name}"

    def refuse_over(cost: int, what: str) -> None:
        if cost > limits.max_allocation:
            raise over_budget(what, cost, limits)

    def sized(*args: Any) -> Any:  # bytes(n) and bytearray(n) allocate n zero bytes
        if (
            args
            and not isinstance(args[0], str | bytes | bytearray)
            and hasattr(args[0], "__index__")
        ):
            refuse_over(operator.index(args[0]), f"{called}({args[0]})")
        return target(*args)

    def ranged(*args: Any) -> Any:  # lazy itself, but anything built from it is not
        length = range_length(*args)
        refuse_over(length * 8, f"{called} of {length} items")
        return target(*args)

    def encode(text: Any, encoding: str = "utf-8", *rest: Any) -> Any:
        # Pickles carry bytes as _codecs.encode(text, "latin1"); other codecs (hex, zlib,
        # unicode_escape) multiply sizes, and chained they grow a few bytes exponentially.
        if codecs.lookup(encoding).name != "iso8859-1" or not isinstance(text, str):
            raise UnsafePickleError(module, f"{name} with the codec {encoding!r}")
        return target(text, encoding, *rest)

    def reconstructor(cls: Any, base: Any, state: Any) -> Any:
        if base is not object:  # base.__init__(obj, state): ndarray((1 << 30,)), list(...)
            raise UnsafePickleError(module, f"{name} through {getattr(base, '__name__', base)}")
        return target(cls, base, state)

    def array(subtype: Any, shape: Any, dtype: Any) -> Any:  # numpy: ndarray.__new__(shape)
        shape = (shape,) if isinstance(shape, int) else shape
        refuse_over(math.prod(operator.index(n) for n in shape), f"{called}{tuple(shape)}")
        return target(subtype, shape, dtype)

    def dtype(*args: Any) -> Any:
        result = target(*args)
        refuse_over(result.itemsize, f"{called} of {result.itemsize} bytes per item")
        return result

    def new_index(cls: Any, attributes: Any) -> Any:
        if getattr(cls, "__name__", "") == "RangeIndex" and isinstance(attributes, dict):
            bounds = (attributes.get(key, default) for key, default in _RANGE_KEYS)
            length = range_length(*bounds)
            refuse_over(length * 8, f"a RangeIndex of {length} items")
        return target(cls, attributes)

    def arrow_array(data: Any) -> Any:  # buffers and offsets from the file: check them all
        built = target(data)
        try:
            built.validate(full=True)
        except ValueError as error:  # pyarrow's ArrowInvalid
            raise UnsafePickleError(module, f"{name} of an invalid array ({error})") from None
        return built

    guards: dict[str, Callable[..., Any]] = {
        "bytes": sized,
        "bytearray": sized,
        "range": ranged,
        "xrange": ranged,
        "encode": encode,
        "_reconstructor": reconstructor,
        "_reconstruct": array,
        "dtype": dtype,
        "_new_Index": new_index,
        "_restore_array": arrow_array,
    }
    return guards.get(name, target)


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, limits: PickleLimits) -> None:
        super().__init__(io.BytesIO(data))
        self.limits = limits

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in {("builtins", "getattr"), ("__builtin__", "getattr")}:
            return _zoneinfo_getattr
        if (module, name) not in _ALLOWED:
            raise UnsafePickleError(module, name)
        return _guarded(module, name, super().find_class(module, name), self.limits)


def safe_loads(data: bytes, limits: PickleLimits | None = None) -> Any:
    """Unpickle ``data`` if it only builds allowed data types within ``limits``.

    UnsafePickleError for anything else; PickleLimitError, with the reason, for
    a pickle that is too large or would allocate too much (checked before the
    unpickler starts, and again for sizes it computes).
    """
    limits = limits or PickleLimits()
    check_pickle(data, limits)
    return _DataUnpickler(data, limits).load()


__all__ = ["PickleLimitError", "UnsafePickleError", "safe_loads"]
