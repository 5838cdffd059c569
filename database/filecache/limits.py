"""How much a legacy pickle may cost, measured from its opcodes before anything of it runs.

A pickle of a few bytes can ask for gigabytes: ``bytearray(1 << 30)`` is 31
bytes, a BYTEARRAY8 opcode declares its own length, and memo references
(``*``) let a small file describe a structure that expands exponentially when
walked. :func:`check_pickle` reads the opcodes (as :func:`pickletools.genops`
would, executing nothing) on a small model of the unpickler's stack and refuses
the pickle when

- the file is larger than ``max_file_size``;
- the strings, bytes, integers and frames it declares, plus a fixed cost per
  object, exceed ``max_allocation``;
- the structure, with every memo reference expanded, exceeds ``max_allocation``;
- it calls ``bytes``, ``bytearray`` or ``range`` with sizes over the budget, or
  calls a container class (numpy arrays, pandas frames and indexes) directly,
  which no pickle made by numpy or pandas does and which builds data from a
  few scalars.

:mod:`database.filecache.safe_pickle` checks the same sizes again at run time
for arguments that are computed rather than written in the pickle.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from database.exceptions import DatabaseError, ValidationError

MiB = 1 << 20
DEFAULT_MAX_FILE_SIZE = 64 * MiB
DEFAULT_MAX_ALLOCATION = 256 * MiB
# What one small object (an int, a reference in a list, a dict slot) costs at least.
OBJECT_SIZE = 64

# Where older numpy (1.x) and pandas (1.5, 2.x) kept the names today's versions pickle,
# found by recording what each version's pickles name: an old name resolves to today's,
# and is allowed, guarded and size-checked exactly as today's name is.
_PANDAS_CLASSES = {
    "pandas.core.frame": ("DataFrame",),
    "pandas.core.series": ("Series",),
    "pandas.core.indexes.base": ("Index",),
    "pandas.core.indexes.range": ("RangeIndex",),
    "pandas.core.indexes.datetimes": ("DatetimeIndex",),
    "pandas.core.indexes.multi": ("MultiIndex",),
    "pandas.core.indexes.category": ("CategoricalIndex",),
    "pandas.core.indexes.period": ("PeriodIndex",),
    "pandas.core.indexes.timedeltas": ("TimedeltaIndex",),
    "pandas.core.arrays.categorical": ("Categorical",),
    "pandas.core.arrays.integer": tuple(
        f"{kind}Int{bits}Dtype" for kind in ("", "U") for bits in (8, 16, 32, 64)
    ),
    "pandas.core.arrays.floating": ("Float32Dtype", "Float64Dtype"),
    "pandas.core.arrays.boolean": ("BooleanDtype",),
    "pandas.core.arrays.string_": ("StringDtype",),
    "pandas.core.dtypes.dtypes": ("CategoricalDtype", "DatetimeTZDtype", "PeriodDtype"),
    "pandas._libs.tslibs.period": ("Period",),
}
_PANDAS_ARRAYS = {
    "pandas.core.arrays.datetimes": "DatetimeArray",
    "pandas.core.arrays.timedeltas": "TimedeltaArray",
    "pandas.core.arrays.period": "PeriodArray",
    "pandas.core.arrays.integer": "IntegerArray",
    "pandas.core.arrays.floating": "FloatingArray",
    "pandas.core.arrays.boolean": "BooleanArray",
    "pandas.core.arrays.string_": "StringArray",
    "pandas.core.arrays.string_arrow": "ArrowStringArray",
}
RENAMED: dict[tuple[str, str], tuple[str, str]] = {
    **{
        (f"numpy.core.{module}", name): (f"numpy._core.{module}", name)
        for module, name in (
            ("multiarray", "_reconstruct"),
            ("multiarray", "scalar"),
            ("numeric", "_frombuffer"),
        )
    },
    **{
        (module, name): ("pandas", name)
        for module, names in _PANDAS_CLASSES.items()
        for name in names
    },
    **{(module, name): ("pandas.arrays", name) for module, name in _PANDAS_ARRAYS.items()},
    # pandas 1.x's numeric indexes are today's Index with the same numpy dtype.
    **{
        ("pandas.core.indexes.numeric", name): ("pandas", "Index")
        for name in ("Int64Index", "UInt64Index", "Float64Index", "NumericIndex")
    },
    ("pandas._libs.tslibs.nattype", "__nat_unpickle"): (
        "pandas._libs.tslibs.nattype",
        "_nat_unpickle",
    ),
    ("pandas._libs.missing", "NA"): ("pandas", "NA"),
    # Protocols 0 to 2 name these as Python 2 did.
    ("copy_reg", "_reconstructor"): ("copyreg", "_reconstructor"),
    **{
        ("__builtin__", name): ("builtins", name)
        for name in (
            "bytearray",
            "complex",
            "dict",
            "float",
            "frozenset",
            "int",
            "list",
            "object",
            "set",
            "slice",
            "str",
            "tuple",
        )
    },
    ("__builtin__", "xrange"): ("builtins", "range"),
    ("__builtin__", "unicode"): ("builtins", "str"),
}


def canonical(module: str, name: str) -> tuple[str, str]:
    """Today's name for a global an older numpy or pandas pickled (else the name itself)."""
    return RENAMED.get((module, name), (module, name))


_SIZED_CALLS = {("builtins", "bytes"), ("builtins", "bytearray"), ("__builtin__", "bytearray")}
_RANGE_CALLS = {("builtins", "range"), ("__builtin__", "xrange")}
_CONTAINERS = {
    ("numpy", "ndarray"),
    *(
        ("pandas", name)
        for name in (
            "Categorical",
            "CategoricalIndex",
            "DataFrame",
            "DatetimeIndex",
            "Index",
            "MultiIndex",
            "PeriodIndex",
            "RangeIndex",
            "Series",
            "TimedeltaIndex",
        )
    ),
}
_CHECKED_CALLS = frozenset(_SIZED_CALLS | _RANGE_CALLS | _CONTAINERS)
# Opcodes that add to the object below them and leave it on the stack.
_FILLERS = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
_CALLS = {"REDUCE", "NEWOBJ", "NEWOBJ_EX", "OBJ"}
_MARK = -1


class PickleLimitError(DatabaseError):
    """A legacy pickle was refused for its size before it was unpickled."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"refused to unpickle: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class PickleLimits:
    """The most a legacy cache file may take: bytes on disk, and bytes it may allocate."""

    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    max_allocation: int = DEFAULT_MAX_ALLOCATION

    def __post_init__(self) -> None:
        for name in ("max_file_size", "max_allocation"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(name, value, "must be a positive number of bytes")


def size(count: int) -> str:
    """``1073741824`` as ``1.0 GiB``: for the reasons given to people."""
    if count < 1024:
        return f"{count} bytes"
    exponent = min((count.bit_length() - 1) // 10, 4)
    return f"{count / (1 << 10 * exponent):.1f} {'KMGT'[exponent - 1]}iB"


def check_file_size(length: int, limits: PickleLimits) -> None:
    if length > limits.max_file_size:
        raise PickleLimitError(
            f"the file is {size(length)}, over the {size(limits.max_file_size)} file size limit"
        )


def over_budget(what: str, cost: int, limits: PickleLimits) -> PickleLimitError:
    return PickleLimitError(
        f"{what} would allocate {size(cost)}, over the {size(limits.max_allocation)} limit"
    )


def range_length(*arguments: object) -> int:
    """How many items ``range(*arguments)`` has; more than any budget if too many to count."""
    try:
        return len(range(*arguments))  # type: ignore[call-overload]
    except OverflowError:
        return 1 << 62
    except (TypeError, ValueError):
        return 0  # not a range at all: unpickling it fails on its own


# Opcodes that push one new object and take nothing: most of a pickle, on the fast path.
_LEAVES = {
    op.name
    for op in pickletools.opcodes
    if not op.stack_before and op.stack_after and op.stack_after != [pickletools.markobject]
}
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GETS = {"GET", "BINGET", "LONG_BINGET"}
_LEAVES -= {"GLOBAL", *_MEMO_GETS}
_GLOBALS = {"GLOBAL", "INST"}
# How many items each opcode takes off the stack below its MARK, if it has one (None: no MARK).
_TAKES = {
    op.name: (
        (op.stack_before.index(pickletools.markobject), True)
        if pickletools.markobject in op.stack_before
        else (len(op.stack_before), False)
    )
    for op in pickletools.opcodes
}


def _literal(arg: object) -> tuple[int, object]:
    """What an opcode's argument costs, and the value worth remembering (ints and strings)."""
    kind = type(arg)
    if kind is str or kind is bytes or kind is bytearray:
        return len(arg), (arg if kind is str else None)  # type: ignore[arg-type]
    if kind is int:
        return arg.bit_length() // 8, arg  # type: ignore[attr-defined]
    return 0, None


# What walking one opcode is charged, in bytes of the allocation budget.
OPCODE_COST = 16

# The walk reads the bytes itself, one opcode at a time, as pickletools.genops would, but
# decodes only what the accounting uses (lengths, integers, strings) and skips the rest by
# length. Any argument it cannot read on the fast path (a text opcode of protocols 0 and 1,
# or one cut short) is read by pickletools' own reader, which raises what genops raises.
#
# What each opcode does to the model of the stack, by its first byte.
(
    _UNKNOWN,
    _LEAF,
    _MEMOIZE,
    _PUT,
    _GET,
    _MARK_OP,
    _FRAME,
    _POP,
    _DUP,
    _POP_MARK,
    _NOTHING,
    _STOP,
    _FILL,
    _BUILD,
) = range(14)
# How its argument is read: fixed-size integers, a float skipped, or a length, then as many
# bytes (text, bytes skipped, latin-1 text, a little-endian integer); _SLOW: pickletools.
(
    _NO_ARG,
    _U1,
    _U2,
    _I4,
    _U4,
    _U8,
    _FLOAT8,
    _TEXT1,
    _TEXT4,
    _TEXT8,
    _BYTES1,
    _BYTES4,
    _BYTES8,
    _LATIN1,
    _LATIN4,
    _LONG1,
    _LONG4,
    _SLOW,
) = range(18)
_FIXED: dict[int, tuple[int, Callable[[bytes, int], tuple[Any, ...]]]] = {
    _U1: (1, struct.Struct("<B").unpack_from),
    _U2: (2, struct.Struct("<H").unpack_from),
    _I4: (4, struct.Struct("<i").unpack_from),
    _U4: (4, struct.Struct("<I").unpack_from),
    _U8: (8, struct.Struct("<Q").unpack_from),
    _FLOAT8: (8, struct.Struct(">d").unpack_from),
}
_TEXT, _BYTES, _LATIN, _LONG = range(4)
_PREFIXED = {
    fmt: (_FIXED[prefix][0], _FIXED[prefix][1], kind)
    for fmt, prefix, kind in (
        (_TEXT1, _U1, _TEXT),
        (_TEXT4, _U4, _TEXT),
        (_TEXT8, _U8, _TEXT),
        (_BYTES1, _U1, _BYTES),
        (_BYTES4, _U4, _BYTES),
        (_BYTES8, _U8, _BYTES),
        (_LATIN1, _U1, _LATIN),
        (_LATIN4, _I4, _LATIN),
        (_LONG1, _U1, _LONG),
        (_LONG4, _I4, _LONG),
    )
}
_ARGUMENT_FORMATS = {
    pickletools.uint1: _U1,
    pickletools.uint2: _U2,
    pickletools.int4: _I4,
    pickletools.uint4: _U4,
    pickletools.uint8: _U8,
    pickletools.float8: _FLOAT8,
    pickletools.unicodestring1: _TEXT1,
    pickletools.unicodestring4: _TEXT4,
    pickletools.unicodestring8: _TEXT8,
    pickletools.bytes1: _BYTES1,
    pickletools.bytes4: _BYTES4,
    pickletools.bytes8: _BYTES8,
    pickletools.bytearray8: _BYTES8,  # type: ignore[attr-defined]  # not in the stubs
    pickletools.string1: _LATIN1,
    pickletools.string4: _LATIN4,
    pickletools.long1: _LONG1,
    pickletools.long4: _LONG4,
}
_SPECIAL = {"FRAME": _FRAME, "DUP": _DUP, "POP": _POP, "POP_MARK": _POP_MARK, "STOP": _STOP}
_SPECIAL |= {"MARK": _MARK_OP, "MEMOIZE": _MEMOIZE, "PROTO": _NOTHING}


def _kind(name: str) -> int:
    if name in _LEAVES:
        return _LEAF
    if name in _MEMO_GETS:
        return _GET
    if name in _MEMO_PUTS:
        return _PUT
    if name in _FILLERS:
        return _FILL
    return _SPECIAL.get(name, _BUILD)


_OPCODES = {ord(op.code): op for op in pickletools.opcodes}
_KINDS = tuple(_kind(_OPCODES[code].name) if code in _OPCODES else _UNKNOWN for code in range(256))
_FORMATS = tuple(
    _NO_ARG
    if code not in _OPCODES or _OPCODES[code].arg is None
    else _ARGUMENT_FORMATS.get(_OPCODES[code].arg, _SLOW)
    for code in range(256)
)
_COUNTS = tuple(
    _TAKES[_OPCODES[code].name] if code in _OPCODES else (0, False) for code in range(256)
)
_NAMES = tuple(_OPCODES[code].name if code in _OPCODES else "" for code in range(256))
# Building opcodes that name or call something: checked by _target.
_TARGETED = frozenset(_GLOBALS | _CALLS | {"STACK_GLOBAL"})

# The commonest opcodes, walked without a second dispatch on their argument's format
# (each falls back to the general walk if its argument is cut short or it is misplaced).
(
    _F_GENERIC,
    _F_MEMOIZE,
    _F_TEXT1,
    _F_GET1,
    _F_INT1,
    _F_EMPTY,
    _F_MARK,
    _F_TUPLE,
    _F_COLLECT,
    _F_EXTEND,
    _F_FLOAT,
    _F_INT4,
    _F_ADD,
    _F_BYTES1,
    _F_GET4,
    _F_STACK_GLOBAL,
    _F_REDUCE,
) = range(17)
_UNPACK_I4 = _FIXED[_I4][1]
_UNPACK_U4 = _FIXED[_U4][1]
_MEMOIZE_CODE = ord(pickle.MEMOIZE)
_FAST_LEAVES = {
    _NO_ARG: _F_EMPTY,
    _TEXT1: _F_TEXT1,
    _BYTES1: _F_BYTES1,
    _U1: _F_INT1,
    _I4: _F_INT4,
    _FLOAT8: _F_FLOAT,
}


def _fast(code: int) -> int:
    kind, fmt, (taken, marked) = _KINDS[code], _FORMATS[code], _COUNTS[code]
    if kind == _MEMOIZE:
        return _F_MEMOIZE
    if kind == _MARK_OP:
        return _F_MARK
    if kind == _LEAF:
        return _FAST_LEAVES.get(fmt, _F_GENERIC)
    if kind == _GET and fmt == _U1:
        return _F_GET1
    if kind == _GET and fmt == _U4:
        return _F_GET4
    if kind == _BUILD and fmt == _NO_ARG and _NAMES[code] not in _TARGETED:
        if taken and not marked:
            return _F_TUPLE
        if marked and not taken:
            return _F_COLLECT
    if kind == _FILL and marked and taken == 1:
        return _F_EXTEND
    if kind == _FILL and not marked and taken == 2:
        return _F_ADD
    if _NAMES[code] == "STACK_GLOBAL":
        return _F_STACK_GLOBAL
    if _NAMES[code] == "REDUCE":
        return _F_REDUCE
    return _F_GENERIC


_FAST = tuple(_fast(code) for code in range(256))


def _slow_argument(data: bytes, position: int) -> tuple[int, object, object, int]:
    """The argument of the opcode at ``position`` read by pickletools (raising what
    genops raises): its cost, value worth remembering, itself, and where it ends."""
    stream = io.BytesIO(data)
    stream.seek(position + 1)
    reader = _OPCODES[data[position]].arg.reader  # type: ignore[union-attr]
    arg = reader(stream)
    cost, value = _literal(arg)
    return cost, value, arg, stream.tell()


def _argument(data: bytes, position: int, fmt: int) -> tuple[int, object, object, int]:
    """As :func:`_slow_argument`, reading the binary formats directly."""
    start = position + 1
    available = len(data)
    fixed = _FIXED.get(fmt)
    if fixed is not None:
        width, unpack = fixed
        if start + width <= available:
            if fmt == _FLOAT8:
                return 0, None, None, start + width
            number: int = unpack(data, start)[0]
            return number.bit_length() // 8, number, number, start + width
    elif fmt in _PREFIXED:
        width, unpack, kind = _PREFIXED[fmt]
        begin = start + width
        if begin <= available:
            length: int = unpack(data, start)[0]
            end = begin + length
            if length >= 0 and end <= available:
                if kind == _BYTES:
                    return length, None, None, end
                chunk = data[begin:end]
                if kind == _LONG:
                    number = int.from_bytes(chunk, "little", signed=True)
                    return number.bit_length() // 8, number, number, end
                text = chunk.decode("latin-1" if kind == _LATIN else "utf-8", "surrogatepass")
                return len(text), text, text, end
    return _slow_argument(data, position)


def _refuse_count(data: bytes, position: int, count: int, limits: PickleLimits) -> NoReturn:
    """Opcode ``count``, over the most a pickle may have: read as genops would, then refused."""
    code = data[position]
    if code not in _OPCODES:
        raise ValueError(f"at position {position}, opcode {bytes([code])!r} unknown")
    if _FORMATS[code] != _NO_ARG:
        _slow_argument(data, position)
    raise over_budget(f"its {count:,}+ opcodes", count * OPCODE_COST, limits)


@dataclass
class _Walk:
    """What walking a pickle's opcodes found: each node's own cost, what each node holds
    or was built from, the node the pickle leaves, and whether any node is used twice."""

    own: list[int]
    children: dict[int, list[int]]
    root: int
    allocated: int
    opcodes: int
    shared: bool


def _walk(data: bytes, limits: PickleLimits) -> _Walk:
    """Walk every opcode on a model of the unpickler's stack and memo, holding node
    numbers instead of objects.

    Each opcode costs its walk a little even when it builds nothing (MARK, POP):
    a pickle of more than ``max_allocation // OPCODE_COST`` opcodes is refused
    as it is reached, so a file of millions of empty marks cannot stall a read."""
    available = len(data)
    kinds, formats, counts, fasts = _KINDS, _FORMATS, _COUNTS, _FAST
    max_allocation = limits.max_allocation
    most = max(1, max_allocation // OPCODE_COST)
    own: list[int] = []  # each node's own cost
    children: dict[int, list[int]] = {}  # what a node holds or was built from
    values: dict[int, object] = {}  # literal ints and strings, and globals
    stack: list[int] = []  # node numbers
    marks: list[int] = []  # where each MARK on the stack is: the stack's length under it
    memo: dict[object, int] = {}
    allocated = 0
    shared = False  # whether a node was pushed twice (memo GET, DUP): else a tree
    position = 0
    count = 0
    cost: int
    value: object
    arg: object
    items: list[int]
    while True:
        try:
            code = data[position]
        except IndexError:
            raise ValueError("pickle exhausted before seeing STOP") from None
        count += 1
        if count > most:
            _refuse_count(data, position, count, limits)
        fast = fasts[code]
        if fast == _F_MEMOIZE:
            if stack and not (marks and marks[-1] == len(stack)):
                memo[len(memo)] = stack[-1]
                position += 1
                continue
        elif fast == _F_TEXT1:
            if position + 1 < available:
                end = position + 2 + data[position + 1]
                if end <= available:
                    text = data[position + 2 : end].decode("utf-8", "surrogatepass")
                    cost = len(text) + OBJECT_SIZE
                    allocated += cost
                    if allocated > max_allocation:
                        raise over_budget("its opcodes", allocated, limits)
                    number = len(own)
                    own.append(cost)
                    values[number] = text
                    stack.append(number)
                    position = end
                    if position < available and data[position] == _MEMOIZE_CODE and count < most:
                        memo[len(memo)] = number  # MEMOIZE of what was just pushed, walked here
                        count += 1
                        position += 1
                    continue
        elif fast == _F_GET1:
            if position + 1 < available:
                key = data[position + 1]
                if key in memo:
                    stack.append(memo[key])  # the same node: expanded again where it is used
                    shared = True
                    position += 2
                    continue
        elif fast == _F_INT1:
            if position + 1 < available:
                number = data[position + 1]
                cost = (number >> 7) + OBJECT_SIZE  # its bit_length() // 8
                allocated += cost
                if allocated > max_allocation:
                    raise over_budget("its opcodes", allocated, limits)
                values[len(own)] = number
                stack.append(len(own))
                own.append(cost)
                position += 2
                continue
        elif fast == _F_EMPTY:
            allocated += OBJECT_SIZE
            if allocated > max_allocation:
                raise over_budget("its opcodes", allocated, limits)
            number = len(own)
            own.append(OBJECT_SIZE)
            stack.append(number)
            position += 1
            if position < available and data[position] == _MEMOIZE_CODE and count < most:
                memo[len(memo)] = number  # MEMOIZE of what was just pushed, walked here
                count += 1
                position += 1
            continue
        elif fast == _F_MARK:
            marks.append(len(stack))
            position += 1
            continue
        elif fast == _F_TUPLE:
            taken = counts[code][0]
            depth = len(stack)
            if depth >= taken and not (marks and marks[-1] > depth - taken):
                items = stack[-taken:]
                del stack[-taken:]
                allocated += OBJECT_SIZE
                if allocated > max_allocation:
                    raise over_budget("its opcodes", allocated, limits)
                number = len(own)
                own.append(OBJECT_SIZE)
                children[number] = items
                stack.append(number)
                position += 1
                if position < available and data[position] == _MEMOIZE_CODE and count < most:
                    memo[len(memo)] = number  # MEMOIZE of what was just pushed, walked here
                    count += 1
                    position += 1
                continue
        elif fast == _F_COLLECT:
            if marks:
                bottom = marks.pop()
                items = stack[bottom:]
                del stack[bottom:]
                allocated += OBJECT_SIZE
                if allocated > max_allocation:
                    raise over_budget("its opcodes", allocated, limits)
                number = len(own)
                own.append(OBJECT_SIZE)
                if items:
                    children[number] = items
                stack.append(number)
                position += 1
                if position < available and data[position] == _MEMOIZE_CODE and count < most:
                    memo[len(memo)] = number  # MEMOIZE of what was just pushed, walked here
                    count += 1
                    position += 1
                continue
        elif fast == _F_EXTEND:
            if marks:
                bottom = marks[-1]
                if bottom >= 1 and not (len(marks) > 1 and marks[-2] >= bottom):
                    marks.pop()
                    children.setdefault(stack[bottom - 1], []).extend(stack[bottom:])
                    del stack[bottom:]
                    position += 1
                    continue
        elif fast == _F_FLOAT:
            if position + 9 <= available:
                allocated += OBJECT_SIZE
                if allocated > max_allocation:
                    raise over_budget("its opcodes", allocated, limits)
                stack.append(len(own))
                own.append(OBJECT_SIZE)
                position += 9
                continue
        elif fast in (_F_STACK_GLOBAL, _F_REDUCE):
            depth = len(stack)
            if depth >= 2 and not (marks and marks[-1] > depth - 2):
                items = stack[-2:]
                del stack[-2:]
                if fast == _F_STACK_GLOBAL:
                    module, qualname = values.get(items[0]), values.get(items[1])
                    if isinstance(module, str) and isinstance(qualname, str):
                        values[len(own)] = canonical(module, qualname)
                else:
                    target = values.get(items[0])
                    if isinstance(target, tuple):
                        _check_call("REDUCE", target, items, values, children, limits)
                allocated += OBJECT_SIZE
                if allocated > max_allocation:
                    raise over_budget("its opcodes", allocated, limits)
                number = len(own)
                own.append(OBJECT_SIZE)
                children[number] = items
                stack.append(number)
                position += 1
                if position < available and data[position] == _MEMOIZE_CODE and count < most:
                    memo[len(memo)] = number  # MEMOIZE of what was just pushed, walked here
                    count += 1
                    position += 1
                continue
        elif fast == _F_ADD:
            depth = len(stack)
            if depth >= 2 and not (marks and marks[-1] > depth - 2):
                child = stack.pop()
                children.setdefault(stack[-1], []).append(child)
                position += 1
                continue
        elif fast == _F_BYTES1:
            if position + 1 < available:
                end = position + 2 + data[position + 1]
                if end <= available:
                    cost = end - position - 2 + OBJECT_SIZE
                    allocated += cost
                    if allocated > max_allocation:
                        raise over_budget("its opcodes", allocated, limits)
                    number = len(own)
                    own.append(cost)
                    stack.append(number)
                    position = end
                    if position < available and data[position] == _MEMOIZE_CODE and count < most:
                        memo[len(memo)] = number  # MEMOIZE of what was just pushed, walked here
                        count += 1
                        position += 1
                    continue
        elif fast == _F_GET4:
            if position + 5 <= available:
                key = _UNPACK_U4(data, position + 1)[0]
                if key in memo:
                    stack.append(memo[key])  # the same node: expanded again where it is used
                    shared = True
                    position += 5
                    continue
        elif fast == _F_INT4 and position + 5 <= available:
            number = _UNPACK_I4(data, position + 1)[0]
            cost = number.bit_length() // 8 + OBJECT_SIZE
            allocated += cost
            if allocated > max_allocation:
                raise over_budget("its opcodes", allocated, limits)
            values[len(own)] = number
            stack.append(len(own))
            own.append(cost)
            position += 5
            continue
        # Anything else, or a fast opcode cut short or misplaced: the general walk.
        fmt = formats[code]
        if fmt == _NO_ARG:
            cost, value, arg, end = 0, None, None, position + 1
        elif fmt == _TEXT1 and position + 1 < available:
            end = position + 2 + data[position + 1]
            if end <= available:
                text = data[position + 2 : end].decode("utf-8", "surrogatepass")
                cost, value, arg = len(text), text, text
            else:
                cost, value, arg, end = _slow_argument(data, position)
        elif fmt == _U1 and position + 1 < available:
            number = data[position + 1]
            cost, value, arg, end = number >> 7, number, number, position + 2
        else:
            cost, value, arg, end = _argument(data, position, fmt)
        kind = kinds[code]
        if kind == _LEAF:
            cost += OBJECT_SIZE
            allocated += cost
            if allocated > max_allocation:
                raise over_budget("its opcodes", allocated, limits)
            number = len(own)
            own.append(cost)
            if value is not None:
                values[number] = value
            stack.append(number)
        elif kind == _MEMOIZE:
            if not stack or (marks and marks[-1] == len(stack)):
                raise pickle.UnpicklingError("nothing to memoize")
            memo[len(memo)] = stack[-1]
        elif kind == _MARK_OP:
            marks.append(len(stack))
        elif kind == _PUT:
            if not stack or (marks and marks[-1] == len(stack)):
                raise pickle.UnpicklingError("nothing to memoize")
            memo[arg] = stack[-1]
        elif kind == _GET:
            if arg not in memo:
                raise pickle.UnpicklingError(f"memo {arg} was never stored")
            stack.append(memo[arg])  # the same node: expanded again where it is used
            shared = True
        elif kind >= _FILL:
            taken, marked = counts[code]
            items = []
            if marked:
                if not marks:
                    raise pickle.UnpicklingError("no MARK on the stack")
                bottom = marks.pop()
                items = stack[bottom:]
                del stack[bottom:]
            if taken:
                depth = len(stack)
                if depth < taken or (marks and marks[-1] > depth - taken):
                    raise pickle.UnpicklingError("the stack is too short")
                items = stack[-taken:] + items
                del stack[-taken:]
            if kind == _FILL:
                children.setdefault(items[0], []).extend(items[1:])
                stack.append(items[0])
                position = end
                continue
            name = _NAMES[code]
            if name in _TARGETED:
                value = _target(name, arg, items, values, children, limits)
            cost += OBJECT_SIZE
            allocated += cost
            if allocated > max_allocation:
                raise over_budget("its opcodes", allocated, limits)
            number = len(own)
            own.append(cost)
            if items:
                children[number] = items
            if value is not None:
                values[number] = value
            stack.append(number)
        elif kind == _FRAME:
            assert isinstance(arg, int)
            if arg > available - position:
                raise pickle.UnpicklingError(f"pickle data was truncated: a {size(arg)} frame")
            allocated += arg
        elif kind == _POP:
            if marks and marks[-1] == len(stack):
                marks.pop()
            elif stack:
                stack.pop()
            else:
                raise pickle.UnpicklingError("the stack is too short")
        elif kind == _DUP:
            if not stack or (marks and marks[-1] == len(stack)):
                raise pickle.UnpicklingError("the stack is too short")
            stack.append(stack[-1])
            shared = True
        elif kind == _POP_MARK:
            if not marks:
                raise pickle.UnpicklingError("no MARK on the stack")
            del stack[marks.pop() :]
        elif kind == _STOP:
            break
        elif kind == _UNKNOWN:
            raise ValueError(f"at position {position}, opcode {bytes([code])!r} unknown")
        position = end
    if len(stack) != 1 or marks:
        raise pickle.UnpicklingError("it does not leave exactly one value")
    return _Walk(own, children, stack[0], allocated, count, shared)


def _target(
    name: str,
    arg: object,
    items: list[int],
    values: dict[int, object],
    children: dict[int, list[int]],
    limits: PickleLimits,
) -> object:
    """The global a GLOBAL, INST or STACK_GLOBAL names (as today's name), checking what
    a call (INST, REDUCE, NEWOBJ, NEWOBJ_EX, OBJ) would build from the literals it is given."""
    value: object = None
    if name in _GLOBALS:
        parts = str(arg).split(" ", 1)
        value = canonical(*parts) if len(parts) == 2 else tuple(parts)
    elif name == "STACK_GLOBAL":
        module, qualname = (values.get(item) for item in items)
        both = isinstance(module, str) and isinstance(qualname, str)
        value = canonical(module, qualname) if both else None  # type: ignore[arg-type]
    if name in _CALLS or name == "INST":
        target = value if name == "INST" else values.get(items[0])
        _check_call(name, target, items, values, children, limits)
    return value


def _check_call(
    kind: str,
    target: object,
    items: list[int],
    values: dict[int, object],
    children: dict[int, list[int]],
    limits: PickleLimits,
) -> None:
    if not isinstance(target, tuple):
        return  # a callable computed by the pickle: checked when it runs
    if len(target) == 2 and target not in _CHECKED_CALLS:
        return  # nothing below applies
    called = f"{target[0]}.{target[1]}"
    if target in _CONTAINERS and (kind != "NEWOBJ" or target == ("numpy", "ndarray")):
        raise PickleLimitError(f"{called} is called directly ({kind}), not rebuilt")
    arguments = children.get(items[1], []) if kind == "REDUCE" else []
    literals = [values.get(item) for item in arguments]
    first = literals[0] if literals else None
    if target in _SIZED_CALLS and isinstance(first, int) and first > limits.max_allocation:
        raise over_budget(f"{called}({first})", first, limits)
    if target in _RANGE_CALLS and literals and all(isinstance(v, int) for v in literals):
        length = range_length(*literals)
        if length * 8 > limits.max_allocation:
            raise over_budget(f"{called} of {length} items", length * 8, limits)


def _expanded(walk: _Walk, cap: int) -> int:
    """The structure's cost with every shared node counted at each use (no recursion),
    each node's total capped at ``cap``. A node still being totalled when a cycle leads
    back to it counts only its own cost there."""
    own, children = walk.own, walk.children
    total = own.copy()  # a node's total once done; its own cost until then
    state = bytearray(len(own))  # 0: not reached, 1: being totalled (open), 2: done
    holds = children.__contains__
    pending = [walk.root]  # a node to visit, or ~node: its children are done
    while pending:
        node = pending.pop()
        if node < 0:
            node = ~node
            total[node] = min(own[node] + sum(map(total.__getitem__, children[node])), cap)
            state[node] = 2
        elif not state[node] and holds(node):
            state[node] = 1  # a cycle back to it counts nothing more
            pending.append(~node)
            pending.extend(filter(holds, children[node]))
    return total[walk.root]


@dataclass(frozen=True)
class Estimate:
    """What a pickle's opcodes were found to cost: how many there are, what they
    allocate (with frames), and the value's cost with every shared part expanded."""

    opcodes: int
    allocated: int
    expanded: int


def estimate(data: bytes, limits: PickleLimits | None = None) -> Estimate:
    """The costs :func:`check_pickle` weighs (raising what it raises while walking the
    opcodes; the expanded cost is returned, not compared)."""
    limits = limits or PickleLimits()
    check_file_size(len(data), limits)
    walk = _walk(data, limits)
    return Estimate(walk.opcodes, walk.allocated, _expanded(walk, limits.max_allocation + 1))


def check_pickle(data: bytes, limits: PickleLimits | None = None) -> None:
    """Refuse ``data`` (PickleLimitError with the reason) if unpickling it could cost
    more than ``limits`` allow; nothing of it is run. A malformed pickle raises
    ``pickle.UnpicklingError`` or ``ValueError`` (a truncated one among them)."""
    limits = limits or PickleLimits()
    check_file_size(len(data), limits)
    walk = _walk(data, limits)
    # Without a node pushed twice, every node is part of one other at most: the expanded
    # structure is then at most what the nodes allocated, already within the limit.
    if walk.shared:
        expanded = _expanded(walk, limits.max_allocation + 1)
        if expanded > limits.max_allocation:
            raise over_budget("its value, with every shared part expanded,", expanded, limits)
