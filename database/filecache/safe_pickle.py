"""Unpickling that can only build data: builtins, datetime, decimal, numpy, pandas
(and the pyarrow arrays behind pandas' strings).

A pickle names the callables that rebuild it; an ordinary ``pickle.load`` calls
whatever it names (``os.system`` included). :func:`safe_loads` resolves only
the names below, collected by pickling the data types the old file cache held
(dicts, lists, Decimals, datetimes, numpy arrays, pandas DataFrames and Series
with their indexes, dtypes and time zones). Anything else is refused with
:class:`UnsafePickleError` before it is called.

Pickles written by pandas 1.5, 2.x and 3.x with numpy 1.x and 2.x load into today's
objects: the names older versions pickled (``numpy.core.multiarray._reconstruct``,
``pandas.core.frame.DataFrame``, pandas 1's ``Int64Index``...) resolve to today's
(:data:`database.filecache.limits.RENAMED`), and the pytz zones of pandas before 3 to
``zoneinfo`` zones (UTC to ``datetime.timezone.utc``) without importing pytz. The
application's own dataclasses, named tuples and enums load only if allowed by name
(:mod:`database.datatypes`).

Sizes are bounded too (:mod:`database.filecache.limits`): the opcodes are
checked before the unpickler starts, and the callables that allocate from a
small argument (``bytes(n)``, ``bytearray(n)``, ``range``, numpy's
``_reconstruct`` and ``dtype``, a pandas ``RangeIndex``) are wrapped so a size
computed while unpickling is checked before anything is allocated.
"""

from __future__ import annotations

import codecs
import dataclasses
import datetime as dt
import decimal
import enum
import functools
import importlib
import io
import math
import operator
import pickle
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

from database.datatypes import (
    DATA_TYPES,
    DataTypes,
    build_namedtuple,
    enum_member,
    fill_dataclass,
    kind_of,
    type_name,
)
from database.exceptions import DatabaseError, ValidationError, first_line
from database.filecache.limits import (
    PickleLimitError,
    PickleLimits,
    canonical,
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
                "BooleanDtype",
                "Categorical",
                "CategoricalDtype",
                "CategoricalIndex",
                "DataFrame",
                "DatetimeIndex",
                "DatetimeTZDtype",
                "Index",
                *(f"{kind}Int{bits}Dtype" for kind in ("", "U") for bits in (8, 16, 32, 64)),
                "Float32Dtype",
                "Float64Dtype",
                "MultiIndex",
                "NA",  # the missing-value singleton itself, not a callable
                "Period",
                "PeriodDtype",
                "PeriodIndex",
                "RangeIndex",
                "Series",
                "StringDtype",
                "TimedeltaIndex",
            )
        ),
        *(
            ("pandas.arrays", name)
            for name in (
                "ArrowStringArray",
                "BooleanArray",
                "DatetimeArray",
                "FloatingArray",
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
        ("pandas.core.indexes.timedeltas", "_new_TimedeltaIndex"),
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


class CorruptPickleError(DatabaseError):
    """A pickle that is truncated or malformed, or whose data its own constructors
    refuse; nothing of it was returned."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(
            f"corrupt or truncated pickle: {type(error).__name__}: {first_line(error)}"
        )
        self.error_type = type(error).__name__


def _zoneinfo_getattr(target: Any, name: str) -> Any:
    # ZoneInfo pickles as getattr(ZoneInfo, "_unpickle")(key, ...): allow exactly that.
    from zoneinfo import ZoneInfo

    if target is ZoneInfo and name == "_unpickle":
        return ZoneInfo._unpickle  # type: ignore[attr-defined]
    raise UnsafePickleError(
        getattr(target, "__module__", "?"), f"{getattr(target, '__name__', target)}.{name}"
    )


# pandas before 3 pickled time zones as pytz objects; pytz is not a requirement (pandas 3
# does not use it) and is never imported: a pytz zone is read as the zoneinfo zone of the
# same name, UTC as datetime.timezone.utc (what pandas 3 itself gives for UTC), so values
# compare equal to what today's pandas builds. A pytz zone pickles as
# pytz._p(zone, utcoffset, dst, tzname) (pytz.tzinfo.unpickler), UTC as pytz._UTC().
_PYTZ_ZONES = {("pytz", "_p"), ("pytz", "timezone"), ("pytz.tzinfo", "unpickler")}
_PYTZ_UTC = {("pytz", "_UTC"), ("pytz", "utc"), ("pytz", "UTC")}
_UTC_NAMES = {"UTC", "Etc/UTC", "GMT", "Etc/GMT", "UCT", "Zulu", "Universal"}


def _pytz_zone(module: str, name: str) -> Callable[..., Any]:
    def zone(key: Any, *offsets: Any) -> Any:
        from zoneinfo import ZoneInfo

        shape_ok = len(offsets) <= 3 and all(
            item is None or (isinstance(item, int | str) and not isinstance(item, bool))
            for item in offsets
        )
        if not isinstance(key, str) or not 0 < len(key) <= 255 or not shape_ok:
            raise UnsafePickleError(module, f"{name} of {key!r}: not a time zone")
        if key in _UTC_NAMES:
            return dt.UTC
        try:
            return ZoneInfo(key)  # refuses keys that are paths (ValueError)
        except (ValueError, OSError, KeyError):  # ZoneInfoNotFoundError is a KeyError
            raise UnsafePickleError(module, f"{name} of {key!r}: not a time zone") from None

    return zone


def _pytz_utc() -> dt.timezone:
    return dt.UTC


def _pytz(module: str, name: str) -> Any:
    """What a pytz global stands for, without importing pytz."""
    if (module, name) in _PYTZ_ZONES:
        return _pytz_zone(module, name)
    if (module, name) == ("pytz", "_UTC"):
        return _pytz_utc
    if (module, name) in _PYTZ_UTC:
        return dt.UTC  # the object itself, as pytz.utc is
    raise UnsafePickleError(module, name)


_RANGE_KEYS = (("start", 0), ("stop", 0), ("step", 1))


_GUARDED_NAMES = frozenset(
    {
        "_unpickle_block",
        "bytes",
        "bytearray",
        "range",
        "xrange",
        "encode",
        "_reconstructor",
        "_reconstruct",
        "dtype",
        "_new_Index",
        "_new_DatetimeIndex",
        "_new_TimedeltaIndex",
        "list",
        "tuple",
        "set",
        "frozenset",
        "dict",
        "_restore_array",
    }
)
# The wrappers made for each allowed global and limits (they hold nothing of one load):
# made once, not for every file. Keyed by the target too, so a changed one is wrapped anew.
_GUARD_CACHE: dict[tuple[str, str, PickleLimits], tuple[Any, Any]] = {}


def _guarded(module: str, name: str, target: Any, limits: PickleLimits) -> Any:
    """``target``, or a wrapper that checks what it is asked to build before building it."""
    if name not in _GUARDED_NAMES:
        return target
    key = (module, name, limits)
    cached = _GUARD_CACHE.get(key)
    if cached is not None and cached[0] is target:
        return cached[1]
    wrapper = _guard(module, name, target, limits)
    if len(_GUARD_CACHE) >= 1024:  # limits given per call: keep the cache small
        _GUARD_CACHE.clear()
    _GUARD_CACHE[key] = (target, wrapper)
    return wrapper


def _guard(module: str, name: str, target: Any, limits: PickleLimits) -> Any:
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
        base = getattr(base, "__wrapped__", base)  # a guarded builtin: the class itself
        if base is not object:  # base.__init__(obj, state): ndarray((1 << 30,)), list(...)
            raise UnsafePickleError(module, f"{name} through {getattr(base, '__name__', base)}")
        return target(cls, base, state)

    def array(subtype: Any, shape: Any, dtype: Any) -> Any:  # numpy: ndarray.__new__(shape)
        shape = (shape,) if isinstance(shape, int) else shape
        count = math.prod(operator.index(n) for n in shape)
        itemsize = max(1, np.dtype(dtype).itemsize)  # bytes: 8 per object of "O"
        refuse_over(count * itemsize, f"{called}{tuple(shape)} of {dtype}")
        return target(subtype, shape, dtype)

    def dtype(*args: Any) -> Any:
        result = target(*args)
        refuse_over(result.itemsize, f"{called} of {result.itemsize} bytes per item")
        return result

    def new_index(cls: Any, attributes: Any) -> Any:
        # pandas calls cls.__new__(cls, **attributes): only an Index class is one to call.
        index: type = importlib.import_module("pandas").Index
        if not (isinstance(cls, type) and issubclass(cls, index)):
            raise UnsafePickleError(module, f"{name} of {getattr(cls, '__name__', cls)!r}")
        if getattr(cls, "__name__", "") == "RangeIndex" and isinstance(attributes, dict):
            bounds = (attributes.get(key, default) for key, default in _RANGE_KEYS)
            length = range_length(*bounds)
            refuse_over(length * 8, f"a RangeIndex of {length} items")
        return target(cls, attributes)

    def arrow_array(data: Any) -> Any:
        # pyarrow builds the array from the file's buffers before anything checks them
        # (too few buffers, a negative offset or deep children would read out of
        # bounds): only a plain string array gets that far, then validated in full.
        _check_arrow_string_data(data, module, name)
        try:
            built = target(data)
            built.validate(full=True)
        except Exception as error:  # pyarrow's ArrowInvalid, ArrowIndexError...
            raise UnsafePickleError(module, f"{name} of an invalid array ({error})") from None
        return built

    def block(values: Any, placement: Any, ndim: Any = 2, *rest: Any) -> Any:
        # The rows of a frame's block: a placement far longer than the values would be
        # expanded to an array of that length (blknos, take) when the frame is used.
        # (One place for a one-dimensional array: a Series, or an extension array column.)
        shape: tuple[int, ...] = tuple(getattr(values, "shape", ()))
        rows = shape[0] if len(shape) == 2 else 1
        if isinstance(placement, slice):
            count = range_length(placement.start or 0, placement.stop, placement.step or 1)
        else:
            count = len(placement) if hasattr(placement, "__len__") else -1
        if not 0 <= count <= rows:
            raise UnsafePickleError(module, f"{name} placing {rows} rows in {count} places")
        return target(values, placement, ndim, *rest)

    def container(*args: Any) -> Any:
        # Real pickles build lists, tuples and dicts with their own opcodes, and sets
        # from a list: list(range(10**9)) or list(bytes) would expand a few bytes.
        if len(args) > 1 or (args and type(args[0]) not in (list, tuple)):
            kind = type(args[0]).__name__ if args else "more than one argument"
            raise UnsafePickleError(module, f"{name} of a {kind}")
        return target(*args)

    container.__wrapped__ = target  # type: ignore[attr-defined]

    guards: dict[str, Callable[..., Any]] = {
        "_unpickle_block": block,
        "bytes": sized,
        "bytearray": sized,
        "range": ranged,
        "xrange": ranged,
        "encode": encode,
        "_reconstructor": reconstructor,
        "_reconstruct": array,
        "dtype": dtype,
        "_new_Index": new_index,
        "_new_DatetimeIndex": new_index,
        "_new_TimedeltaIndex": new_index,
        **dict.fromkeys(("list", "tuple", "set", "frozenset", "dict"), container),
        "_restore_array": arrow_array,
    }
    assert guards.keys() == _GUARDED_NAMES
    return guards.get(name, target)


_ARROW_STRING_TYPES = ("string", "large_string")


def _check_arrow_string_data(data: Any, module: str, name: str) -> None:
    """Refuse, before pyarrow sees it, anything but the ArrayData tuple of a string
    array: (type, length, null_count, offset, [validity, offsets, data], [], None)."""
    pyarrow = importlib.import_module("pyarrow")

    def refuse(why: str) -> NoReturn:
        raise UnsafePickleError(module, f"{name} of {why}")

    if not isinstance(data, tuple) or len(data) != 7:
        refuse("something that is not an array's data")
    kind, length, null_count, offset, buffers, children, dictionary = data
    strings = [getattr(pyarrow, alias)() for alias in _ARROW_STRING_TYPES]
    if not any(kind == allowed for allowed in strings):
        refuse(f"an array of type {kind!r} (only strings are data here)")
    for value in (length, null_count, offset):
        if type(value) is not int:
            refuse("a length, null count or offset that is not an integer")
    if length < 0 or offset < 0 or not -1 <= null_count <= length:
        refuse("a negative length or offset, or a null count out of range")
    if children != [] or dictionary is not None:
        refuse("children or a dictionary")
    if not isinstance(buffers, list) or len(buffers) != 3:
        refuse("other than the three buffers of a string array")
    validity, offsets, values = buffers
    if not all(isinstance(b, pyarrow.Buffer) for b in (offsets, values)) or not (
        validity is None or isinstance(validity, pyarrow.Buffer)
    ):
        refuse("buffers that are not buffers")


@functools.cache  # one stand-in class for every load
def _arrow_string_array() -> type:
    """pandas' ``ArrowStringArray`` as pickle rebuilds it (``__new__``, then
    ``__setstate__``), taking only an Arrow array (checked by ``_restore_array``) as its
    data: pandas would turn any iterable (a list of huge ranges) into one."""
    pyarrow = importlib.import_module("pyarrow")
    real: type = importlib.import_module("pandas.arrays").ArrowStringArray

    def set_state(self: Any, state: Any) -> None:
        data = state.get("_pa_array", state.get("_data")) if isinstance(state, dict) else None
        if not isinstance(data, pyarrow.Array | pyarrow.ChunkedArray):
            raise UnsafePickleError("pandas.arrays", "ArrowStringArray of non-Arrow data")
        self.__class__ = real
        real.__setstate__(self, state)  # type: ignore[attr-defined]

    return type("ArrowStringArray", (real,), {"__setstate__": set_state})


def _no_init(self: Any, *args: Any, **kwargs: Any) -> None:
    """A dataclass stand-in's ``__init__``: nothing of the application's code runs."""


def _dataclass_state(cls: type, state: Any) -> dict[Any, Any]:
    """The field values in a dataclass's pickled state: its ``__dict__``, the
    ``(dict, slots)`` pair of a class with slots, or the list of values of a frozen
    one with slots."""
    if isinstance(state, dict):
        return state
    if isinstance(state, tuple) and len(state) == 2:
        merged: dict[Any, Any] = {}
        for part in state:
            if part is not None and not isinstance(part, dict):
                raise ValidationError("data", type_name(cls), "has a malformed pickled state")
            merged.update(part or {})
        return merged
    fields = dataclasses.fields(cls)
    if isinstance(state, list) and len(state) == len(fields):
        return {field.name: value for field, value in zip(fields, state, strict=True)}
    raise ValidationError("data", type_name(cls), "has a malformed pickled state")


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, limits: PickleLimits, types: DataTypes) -> None:
        super().__init__(io.BytesIO(data))
        self.limits = limits
        self.types = types
        self.staging: dict[type, type] = {}
        self.unfilled: dict[int, object] = {}  # dataclass instances still waiting for state
        self.filled: list[tuple[object, type]] = []  # and those given it, with their class

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in {("builtins", "getattr"), ("__builtin__", "getattr")}:
            return _zoneinfo_getattr
        if module == "pytz" or module.startswith("pytz."):
            return _pytz(module, name)
        module, name = canonical(module, name)
        if (module, name) not in _ALLOWED:
            app_type = self.app_type(module, name)
            if app_type is not None:
                return app_type
            raise UnsafePickleError(module, name)
        if (module, name) == ("pandas.arrays", "ArrowStringArray"):
            return _arrow_string_array()
        found = _guarded(module, name, super().find_class(module, name), self.limits)
        if (module, name) == ("copyreg", "_reconstructor"):  # protocols 0 and 1
            return self.tracked(found)
        return found

    def tracked(self, reconstruct: Callable[..., Any]) -> Callable[..., Any]:
        """``copyreg._reconstructor``, noting the dataclass stand-ins it creates empty;
        for an allowed named tuple (``tuple.__new__(cls, items)``), building it."""

        def reconstructor(cls: Any, base: Any, state: Any) -> Any:
            base = getattr(base, "__wrapped__", base)  # a guarded builtin: the class itself
            stand_ins = {stand_in: real for real, stand_in in self.staging.items()}
            real = stand_ins.get(cls)
            if real is not None and base is tuple and kind_of(real) == "namedtuple":
                return build_namedtuple(real, state if isinstance(state, tuple) else ())
            built = reconstruct(cls, base, state)
            if type(built) in stand_ins:
                self.unfilled[id(built)] = built
            return built

        return reconstructor

    def app_type(self, module: str, name: str) -> Any:
        """How to rebuild an allowed application class (or a member of an allowed enum)."""
        cls = self.types.get(f"{module}.{name}")
        if cls is None and "." in name:  # an enum member pickled by its name
            owner, member = name.rsplit(".", 1)
            parent = self.types.get(f"{module}.{owner}")
            if parent is not None and issubclass(parent, enum.Enum):
                if member not in parent.__members__:
                    raise ValidationError("data", type_name(parent), f"has no member {member!r}")
                return parent.__members__[member]
        if cls is None:
            return None
        kind = kind_of(cls)
        if kind == "enum":  # pickled as a call of the class with the member's value
            return lambda value: enum_member(cls, value)
        if kind == "namedtuple":  # NEWOBJ (or a call) of the class with its items
            if cls not in self.staging:

                def new_tuple(stand_in: type, *items: Any) -> Any:
                    return build_namedtuple(cls, items)  # exactly its number of items

                namespace = {"__slots__": (), "__new__": new_tuple}
                self.staging[cls] = type(cls.__name__, (cls,), namespace)
            return self.staging[cls]
        return self.staged(cls)

    def staged(self, cls: type) -> type:
        """A stand-in for the dataclass ``cls``: pickle creates it empty (``cls.__new__``,
        through NEWOBJ or ``copyreg._reconstructor``) and then gives it its state; the
        stand-in takes only the class's fields as state, once, and becomes ``cls`` itself
        when the load ends (so that state given twice is still seen). One left without
        state is refused then."""
        if cls not in self.staging:
            unfilled, filled = self.unfilled, self.filled

            def new_empty(stand_in: type, *args: Any, **kwargs: Any) -> Any:
                if args or kwargs:
                    raise UnsafePickleError(cls.__module__, f"{cls.__qualname__} with arguments")
                instance: object = object.__new__(stand_in)
                unfilled[id(instance)] = instance
                return instance

            def set_state(self: Any, state: Any) -> None:
                if unfilled.pop(id(self), None) is None:
                    raise UnsafePickleError(cls.__module__, f"{cls.__qualname__} given state twice")
                fill_dataclass(self, cls, _dataclass_state(cls, state))
                filled.append((self, cls))

            # __init__: a call of the class (REDUCE) would run the class's own, and with
            # it __post_init__ and __setattr__; only the state sets the fields.
            namespace = {
                "__slots__": (),
                "__new__": new_empty,
                "__init__": _no_init,
                "__setstate__": set_state,
            }
            self.staging[cls] = type(cls.__name__, (cls,), namespace)
        return self.staging[cls]

    def load(self) -> Any:
        value = super().load()
        if self.unfilled:
            cls = type(next(iter(self.unfilled.values()))).__mro__[1]
            raise UnsafePickleError(cls.__module__, f"{cls.__qualname__} without its fields")
        for instance, cls in self.filled:
            object.__setattr__(instance, "__class__", cls)
        return value


def safe_loads(
    data: bytes, limits: PickleLimits | None = None, *, types: DataTypes | None = None
) -> Any:
    """Unpickle ``data`` if it only builds allowed data types within ``limits``.

    UnsafePickleError for anything else; PickleLimitError, with the reason, for
    a pickle that is too large or would allocate too much (checked before the
    unpickler starts, and again for sizes it computes). The application's own
    classes allowed in ``types`` (by default :data:`database.datatypes.DATA_TYPES`,
    filled by :func:`database.datatypes.allow_types`) are rebuilt too.
    """
    limits = limits or PickleLimits()
    try:
        check_pickle(data, limits)
        value = _DataUnpickler(data, limits, DATA_TYPES if types is None else types).load()
        _check_frames(value)
    except (DatabaseError, MemoryError, RecursionError):
        raise
    except Exception as error:  # a malformed pickle, or a constructor given bad input
        raise CorruptPickleError(error) from None
    return value


# Exact types of values that are neither frames nor hold anything: skipped by _check_frames.
_PLAIN = frozenset(
    {str, bytes, bytearray, int, float, bool, complex, type(None), decimal.Decimal}
    | {dt.date, dt.datetime, dt.time, dt.timedelta}
)


def _check_frames(value: Any) -> None:
    """Refuse a DataFrame or Series whose blocks do not cover its columns exactly once
    (pickled placements are not checked by pandas: one past the columns crashes the
    process on first use). Walks the containers the value is made of."""
    pandas = importlib.import_module("pandas")
    pending, seen = [value], set()
    while pending:
        item = pending.pop()
        if type(item) in _PLAIN or id(item) in seen:  # a plain value holds nothing
            continue
        seen.add(id(item))
        if isinstance(item, pandas.DataFrame | pandas.Series):
            _check_manager(item._mgr, isinstance(item, pandas.Series))
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            pending.extend(item)
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            pending.extend(getattr(item, f.name, None) for f in dataclasses.fields(item))


def _check_manager(manager: Any, single: bool) -> None:
    rows = len(manager.axes[-1])
    if single:  # a Series: one block of values, as long as its index
        if len(manager.blocks) != 1 or len(manager.blocks[0].values) != rows:
            raise UnsafePickleError("pandas", "a series whose values and index differ")
        return
    columns = len(manager.axes[0])
    places = [np.asarray(block.mgr_locs.as_array) for block in manager.blocks]
    every = np.sort(np.concatenate(places)) if places else np.empty(0, dtype=np.intp)
    if every.size != columns or not np.array_equal(every, np.arange(columns)):
        raise UnsafePickleError("pandas", "a frame whose blocks do not cover its columns")
    for block in manager.blocks:
        length = block.values.shape[-1] if block.values.ndim else 0
        if length != rows:
            raise UnsafePickleError("pandas", f"a block of {length} rows in a frame of {rows}")


__all__ = ["CorruptPickleError", "PickleLimitError", "UnsafePickleError", "safe_loads"]
