"""How much a legacy pickle may cost, measured from its opcodes before anything of it runs.

A pickle of a few bytes can ask for gigabytes: ``bytearray(1 << 30)`` is 31
bytes, a BYTEARRAY8 opcode declares its own length, and memo references
(``*``) let a small file describe a structure that expands exponentially when
walked. :func:`check_pickle` reads the opcodes with :func:`pickletools.genops`
(which executes nothing) on a small model of the unpickler's stack and refuses
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
from dataclasses import dataclass

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


class _Model:
    """The unpickler's stack and memo, holding node numbers instead of objects."""

    def __init__(self, data: bytes, limits: PickleLimits) -> None:
        self.data = data
        self.limits = limits
        self.own: list[int] = []  # each node's own cost
        self.children: dict[int, list[int]] = {}  # what a node holds or was built from
        self.values: dict[int, object] = {}  # literal ints and strings, and globals
        self.stack: list[int] = []
        self.memo: dict[int, int] = {}
        self.allocated = 0

    def node(self, cost: int, value: object = None, children: list[int] | None = None) -> int:
        cost += OBJECT_SIZE
        self.allocated += cost
        if self.allocated > self.limits.max_allocation:
            raise over_budget("its opcodes", self.allocated, self.limits)
        number = len(self.own)
        self.own.append(cost)
        if children:
            self.children[number] = children
        if value is not None:
            self.values[number] = value
        return number

    def take(self, name: str) -> list[int]:
        """The items opcode ``name`` takes off the stack, bottom first (its MARK left out)."""
        count, marked = _TAKES[name]
        stack = self.stack
        items: list[int] = []
        if marked:
            position = len(stack) - 1
            while position >= 0 and stack[position] != _MARK:
                position -= 1
            if position < 0:
                raise pickle.UnpicklingError("no MARK on the stack")
            items = stack[position + 1 :]
            del stack[position:]
        if count:
            below = stack[-count:]
            if len(below) < count or _MARK in below:
                raise pickle.UnpicklingError("the stack is too short")
            del stack[-count:]
            items = below + items
        return items

    def run(self) -> int:
        """Walk every opcode; returns the node the pickle leaves as its value.

        Each opcode costs its walk a little even when it builds nothing (MARK, POP):
        a pickle of more than ``max_allocation // OPCODE_COST`` opcodes is refused
        as it is reached, so a file of millions of empty marks cannot stall a read."""
        most = max(1, self.limits.max_allocation // OPCODE_COST)
        for count, (opcode, arg, position) in enumerate(
            pickletools.genops(io.BytesIO(self.data)), 1
        ):
            if count > most:
                raise over_budget(f"its {count:,}+ opcodes", count * OPCODE_COST, self.limits)
            self.step(opcode.name, arg, position or 0)
        if len(self.stack) != 1 or self.stack[0] == _MARK:
            raise pickle.UnpicklingError("it does not leave exactly one value")
        return self.stack[0]

    def step(self, name: str, arg: object, position: int) -> None:
        stack = self.stack
        if name in _LEAVES:
            stack.append(self.node(*_literal(arg)))
        elif name in _MEMO_GETS:
            if arg not in self.memo:
                raise pickle.UnpicklingError(f"memo {arg} was never stored")
            stack.append(self.memo[arg])  # the same node: expanded again where it is used
        elif name in _MEMO_PUTS or name == "MEMOIZE":
            if not stack or stack[-1] == _MARK:
                raise pickle.UnpicklingError("nothing to memoize")
            self.memo[len(self.memo) if name == "MEMOIZE" else arg] = stack[-1]  # type: ignore[index]
        elif name in _FILLERS:
            items = self.take(name)
            self.children.setdefault(items[0], []).extend(items[1:])
            stack.append(items[0])
        elif name == "MARK":
            stack.append(_MARK)
        elif name == "FRAME":
            assert isinstance(arg, int)
            if arg > len(self.data) - position:
                raise pickle.UnpicklingError(f"pickle data was truncated: a {size(arg)} frame")
            self.allocated += arg
        elif name == "DUP":
            stack.extend(self.take("DUP") * 2)
        elif name == "POP":
            if stack and stack[-1] == _MARK:
                stack.pop()
            else:
                self.take("POP")
        elif name == "POP_MARK":
            self.take("POP_MARK")
        elif name not in ("PROTO", "STOP"):
            self.build(name, arg)

    def build(self, name: str, arg: object) -> None:
        items = self.take(name)
        cost, value = _literal(arg)
        if name in _GLOBALS:
            parts = str(arg).split(" ", 1)
            value = canonical(*parts) if len(parts) == 2 else tuple(parts)
        elif name == "STACK_GLOBAL":
            module, qualname = (self.values.get(item) for item in items)
            both = isinstance(module, str) and isinstance(qualname, str)
            value = canonical(module, qualname) if both else None  # type: ignore[arg-type]
        if name in _CALLS or name == "INST":
            self.check_call(name, value if name == "INST" else self.values.get(items[0]), items)
        self.stack.append(self.node(cost, value, items))

    def check_call(self, kind: str, target: object, items: list[int]) -> None:
        if not isinstance(target, tuple):
            return  # a callable computed by the pickle: checked when it runs
        called = f"{target[0]}.{target[1]}"
        if target in _CONTAINERS and (kind != "NEWOBJ" or target == ("numpy", "ndarray")):
            raise PickleLimitError(f"{called} is called directly ({kind}), not rebuilt")
        arguments = self.children.get(items[1], []) if kind == "REDUCE" else []
        literals = [self.values.get(item) for item in arguments]
        first = literals[0] if literals else None
        if target in _SIZED_CALLS and isinstance(first, int) and first > self.limits.max_allocation:
            raise over_budget(f"{called}({first})", first, self.limits)
        if target in _RANGE_CALLS and literals and all(isinstance(v, int) for v in literals):
            length = range_length(*literals)
            if length * 8 > self.limits.max_allocation:
                raise over_budget(f"{called} of {length} items", length * 8, self.limits)

    def expanded(self, root: int) -> int:
        """The structure's cost with every shared node counted at each use (no recursion)."""
        own, children, cap = self.own, self.children, self.limits.max_allocation + 1
        total: dict[int, int] = {}
        pending: list[tuple[int, bool]] = [(root, False)]
        open_nodes: set[int] = set()
        while pending:
            node, done = pending.pop()
            if done:
                open_nodes.discard(node)
                held = sum(total.get(child, own[child]) for child in children[node])
                total[node] = min(own[node] + held, cap)
            elif node not in total and node not in open_nodes and node in children:
                open_nodes.add(node)  # a cycle back to it counts nothing more
                pending.append((node, True))
                pending.extend((child, False) for child in children[node] if child in children)
        return total.get(root, own[root])


# What walking one opcode is charged, in bytes of the allocation budget.
OPCODE_COST = 16


def check_pickle(data: bytes, limits: PickleLimits | None = None) -> None:
    """Refuse ``data`` (PickleLimitError with the reason) if unpickling it could cost
    more than ``limits`` allow; nothing of it is run. A malformed pickle raises
    ``pickle.UnpicklingError`` or ``ValueError`` (a truncated one among them)."""
    limits = limits or PickleLimits()
    check_file_size(len(data), limits)
    model = _Model(data, limits)
    root = model.run()
    expanded = model.expanded(root)
    if expanded > limits.max_allocation:
        raise over_budget("its value, with every shared part expanded,", expanded, limits)
