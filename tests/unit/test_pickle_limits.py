"""A legacy pickle that would allocate too much is refused before it allocates it."""

from __future__ import annotations

import datetime as dt
import io
import pickle
import pickletools
import random
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from database.exceptions import ValidationError
from database.filecache.limits import (
    _CONTAINERS,
    _RANGE_CALLS,
    _SIZED_CALLS,
    OBJECT_SIZE,
    OPCODE_COST,
    Estimate,
    MiB,
    PickleLimitError,
    PickleLimits,
    canonical,
    check_file_size,
    check_pickle,
    estimate,
    over_budget,
    range_length,
    size,
)
from database.filecache.safe_pickle import CorruptPickleError, UnsafePickleError, safe_loads
from tests.unit import test_arrow_pickles, test_forged_pickles, test_safe_pickle_versions

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


SIZED_CALLS = [
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
]


@pytest.mark.parametrize(("payload", "reason"), SIZED_CALLS)
def test_a_size_computed_or_declared_in_a_call_is_checked_before_the_call(
    payload: bytes, reason: str
) -> None:
    with peak_memory() as peak, pytest.raises(PickleLimitError) as caught:
        safe_loads(payload)
    assert reason in str(caught.value)
    assert peak[0] < 4 * MiB


MULTIPLYING = [
    # _codecs.encode(_codecs.encode(b"x", "hex"), "hex") doubles per call
    _reduce("_codecs", "encode", _text("abc"), _text("hex")),
    _reduce("_codecs", "encode", _text("abc"), _text("unicode_escape")),
    # copyreg._reconstructor(list, list, ...) runs list.__init__ on its argument
    _reduce("copyreg", "_reconstructor", b"cbuiltins\nlist\n", b"cbuiltins\nlist\n", b"N"),
]


@pytest.mark.parametrize("payload", MULTIPLYING)
def test_calls_that_multiply_their_input_are_refused(payload: bytes) -> None:
    with pytest.raises(UnsafePickleError):
        safe_loads(payload)


def test_non_data_globals_are_still_refused() -> None:
    with pytest.raises(UnsafePickleError, match=r"os\.system"):
        safe_loads(_reduce("os", "system", _text("true")))


ORDINARY = [
    {"price": Decimal("222.77"), "tags": {"a", "b"}, "raw": b"\x00" * 100, "n": 10**12},
    [{"open": 1.5, "volume": 12_000_000} for _ in range(5_000)],
    pd.DataFrame({"Close": np.linspace(1, 2, 50_000)}, index=pd.RangeIndex(50_000)),
    pd.Series([1.5, 2.5], index=pd.to_datetime(["2024-01-02", "2024-01-03"])),
    bytearray(b"ab"),
    range(10),
]


@pytest.mark.parametrize("protocol", range(3, pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize(
    "value", ORDINARY, ids=["dict", "records", "frame", "series", "bytearray", "range"]
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


# -- The walk as it was before it read the bytes itself: the reference for the differential
# tests below, which hold the fast walk to the same verdicts and costs on every pickle.

_FILLERS = {"APPEND", "APPENDS", "SETITEMS", "SETITEM", "ADDITEMS", "BUILD"}
_CALLS = {"REDUCE", "NEWOBJ", "NEWOBJ_EX", "OBJ"}
_MARK = -1
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


class _ReferenceModel:
    """The scan as it was (pickletools.genops on a model of the stack and memo): the
    reference the fast walk must agree with, opcode for opcode."""

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


def reference_check(data: bytes, limits: PickleLimits | None = None) -> None:
    limits = limits or PickleLimits()
    check_file_size(len(data), limits)
    model = _ReferenceModel(data, limits)
    root = model.run()
    expanded = model.expanded(root)
    if expanded > limits.max_allocation:
        raise over_budget("its value, with every shared part expanded,", expanded, limits)


def reference_estimate(data: bytes, limits: PickleLimits | None = None) -> Estimate:
    limits = limits or PickleLimits()
    check_file_size(len(data), limits)
    model = _ReferenceModel(data, limits)
    root = model.run()
    return Estimate(len(list(pickletools.genops(data))), model.allocated, model.expanded(root))


# -- Differential tests: the walk that reads the bytes itself against the reference above.

DATA = Path(__file__).resolve().parents[1] / "data" / "filecache"
CACHE_FILES = sorted(DATA.rglob("*.cache"))


def _outcome(
    function: Callable[[bytes, PickleLimits], object], data: bytes, limits: PickleLimits
) -> object:
    """What ``function`` returns, or the type and message of what it raises."""
    try:
        return function(data, limits)
    except Exception as error:
        return type(error).__name__, str(error)


def assert_same_as_reference(data: bytes, limits: PickleLimits | None = None) -> object:
    """The new walk's costs and verdict are the reference's, error messages included."""
    limits = limits or PickleLimits()
    found = _outcome(estimate, data, limits)
    assert found == _outcome(reference_estimate, data, limits), data[:200]
    assert _outcome(check_pickle, data, limits) == _outcome(reference_check, data, limits)
    return found


def _parameters(function: Callable[..., object]) -> list[Any]:
    return [
        value
        for mark in getattr(function, "pytestmark", [])
        if mark.name == "parametrize"
        for value in mark.args[1]
    ]


def forged_pickles() -> list[tuple[str, bytes, PickleLimits]]:
    """Every forged or bomb pickle the unit tests build, with the limits they are read under."""
    default = PickleLimits()
    found = [
        ("31-byte bomb", BOMB, default),
        ("declared bomb", DECLARED_BOMB, default),
        ("memo bomb 2", memo_bomb(2), default),
        ("memo bomb 9", memo_bomb(9), default),
        ("memo bomb 40x2", memo_bomb(40, fan_out=2), default),
        ("os.system", _reduce("os", "system", _text("true")), default),
        (
            "2 MiB bytearray",
            pickle.dumps(bytearray(2 * MiB), protocol=5),
            PickleLimits(max_allocation=MiB),
        ),
        ("large bytes", pickle.dumps(b"x" * 5000), PickleLimits(max_file_size=4096)),
    ]
    found += [(f"sized {reason}", payload, default) for payload, reason in SIZED_CALLS]
    found += [(f"multiplying {i}", payload, default) for i, payload in enumerate(MULTIPLYING)]
    forged = test_forged_pickles
    for function in (
        forged.test_small_files_that_would_build_gigabytes_are_refused,
        forged.test_a_malformed_pickle_is_a_typed_error,
    ):
        for value in _parameters(function):
            payload = value[0] if isinstance(value, tuple) else value
            found.append((f"{function.__name__} {payload[:40]!r}", payload, default))
    empty_opcodes = b"\x80\x02" + b"(0" * 200_000 + b"N."
    found.append(("200,000 empty opcodes", empty_opcodes, PickleLimits(max_allocation=1_000_000)))
    found.append(("1,000 empty opcodes", b"\x80\x02" + b"(0" * 1000 + b"N.", default))
    versions = test_safe_pickle_versions
    calls: list[tuple[str, str, tuple[Any, ...]]] = [
        ("pytz", name, args)
        for name, args in _parameters(versions.test_a_pytz_zone_that_is_not_a_time_zone_is_refused)
    ]
    calls += [
        (module, name, ("America/New_York",))
        for module, name in _parameters(versions.test_pytz_things_other_than_zones_are_refused)
    ]
    calls += [(module, name, ("echo pwned",)) for module, name in versions.NOT_DATA]
    calls += [
        (module, name, ("echo pwned",))
        for module in versions.OLD_MODULES
        for name in sorted({name for _, name in versions.NOT_DATA} | {"load", "read_pickle"})
    ]
    calls += [
        (module, name, (np.ndarray, (1 << 40,), b"b"))
        for module, name in _parameters(versions.test_old_numpy_allocations_are_size_checked)
    ]
    calls += [
        (module, name, (0, 1 << 40))
        for module, name in (
            ("pandas.core.frame", "DataFrame"),
            ("pandas.core.indexes.range", "RangeIndex"),
            ("pandas.core.indexes.numeric", "Int64Index"),
        )
    ]
    found += [(f"{m}.{n}", versions.forged(m, n, *args), default) for m, n, args in calls]
    block = pickle.dumps((np.zeros((1, 1)), slice(0, 1 << 40, 1), 2), protocol=2)[2:-1]
    block_bomb = b"\x80\x02cpandas._libs.internals\n_unpickle_block\n" + block + b"R."
    found.append(("block in more rows", block_bomb, default))
    for value in _parameters(
        test_arrow_pickles.test_forged_array_data_is_refused_before_pyarrow_reads_it
    ):
        found.append(("arrow", pickle.dumps(value[0], protocol=5), default))
    return found


FORGED = forged_pickles()


@pytest.mark.parametrize(("name", "payload", "limits"), FORGED, ids=[name for name, _, _ in FORGED])
def test_every_forged_pickle_gets_the_reference_verdict_and_costs(
    name: str, payload: bytes, limits: PickleLimits
) -> None:
    assert_same_as_reference(payload, limits)
    for max_allocation in (1, 100, 1000, 10_000):  # refused at another point
        assert_same_as_reference(payload, PickleLimits(max_allocation=max_allocation))


def test_the_bombs_are_still_refused_for_what_they_ask() -> None:
    assert len(FORGED) > 150  # the other test modules' forged pickles were all found
    reasons = {name: _outcome(check_pickle, payload, limits) for name, payload, limits in FORGED}
    assert reasons["31-byte bomb"] == (
        "PickleLimitError",
        "refused to unpickle: builtins.bytearray(1073741824) would allocate 1.0 GiB, "
        "over the 256.0 MiB limit",
    )
    assert reasons["declared bomb"][0] == "ValueError"
    assert "bytearray8" in str(reasons["declared bomb"])
    assert "every shared part" in str(reasons["memo bomb 9"])
    assert "every shared part" in str(reasons["memo bomb 40x2"])
    assert "opcodes" in str(reasons["200,000 empty opcodes"])


@pytest.mark.parametrize("path", CACHE_FILES, ids=[str(p.relative_to(DATA)) for p in CACHE_FILES])
def test_every_cache_file_costs_what_the_reference_says(path: Path) -> None:
    data = path.read_bytes()
    found = assert_same_as_reference(data)
    assert isinstance(found, Estimate)
    assert found.expanded <= found.allocated * 1000  # a sanity check of the numbers themselves
    # Limits just under each cost, and small ones: each refused where the reference refuses.
    for max_allocation in {
        found.allocated - 1,
        found.allocated,
        found.expanded - 1,
        found.expanded,
        found.opcodes * OPCODE_COST - 1,
        max(1, found.allocated // 2),
        1000,
        1,
    }:
        if max_allocation > 0:
            assert_same_as_reference(data, PickleLimits(max_allocation=max_allocation))
    assert_same_as_reference(data, PickleLimits(max_file_size=len(data) - 1))


def _ordinary_pickles() -> list[bytes]:
    values: list[object] = [
        *ORDINARY,
        {"a": [1, 2.5, None, True, False, "é" * 3, b"\x00" * 300, -(10**30), 2**70]},
        [(), (1,), (1, 2), (1, 2, 3), frozenset({1}), {2}, bytearray(b"x"), 1.5 + 2j],
        dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        Decimal("1.25"),
        ["x" * 300, "y" * 70_000, -1, 255, 256, 65_535, 65_536, -(2**31), 2**31],
    ]
    shared: list[object] = [1]
    values.append([shared, shared, {"self": shared}])
    cyclic: list[object] = []
    cyclic.append(cyclic)
    values.append(cyclic)
    return [
        pickle.dumps(value, protocol=protocol)
        for value in values
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1)
    ]


ORDINARY_PICKLES = _ordinary_pickles()


def test_ordinary_pickles_of_every_protocol_cost_what_the_reference_says() -> None:
    # protocols 0 and 1 are text opcodes (INT, STRING, PUT, GET, GLOBAL...): the slow path
    for payload in ORDINARY_PICKLES:
        assert isinstance(assert_same_as_reference(payload), Estimate)
        assert_same_as_reference(payload, PickleLimits(max_allocation=2000))


# Opcodes spliced into pickles by the fuzz below: every opcode, with short arguments.
_SPLICES = [
    bytes([ord(op.code)]) + b"\x01\x00\x00\x00\x00\x00\x00\x00"[: max(op.arg.n, 0) if op.arg else 0]
    for op in pickletools.opcodes
] + [
    b"I01\n",
    b"p1\n",
    b"g1\n",
    b"cbuiltins\nrange\n",
    b"\x8c\x02\xff\xfe",
    b"\x95\xff" + b"\x00" * 7,
]


def test_mangled_pickles_get_the_reference_verdict() -> None:
    """Truncated, flipped and spliced bytes: the fast walk's fallbacks (to pickletools'
    readers) raise what genops raised, at the same opcode."""
    rng = random.Random(20_261_203)  # noqa: S311 - a reproducible fuzz, not a secret
    seeds = [payload for payload in ORDINARY_PICKLES if len(payload) < 4000]
    seeds += [payload for _, payload, _ in FORGED if 0 < len(payload) < 4000]
    seeds += [path.read_bytes() for path in CACHE_FILES if path.stat().st_size < 4000][:20]
    small = PickleLimits(max_allocation=5000)
    cases = 0
    for seed in seeds:
        for cut in sorted(rng.sample(range(len(seed)), min(len(seed), 12))):
            assert_same_as_reference(seed[:cut])
            cases += 1
        for _ in range(12):
            mangled = bytearray(seed)
            for _ in range(rng.randint(1, 3)):
                at = rng.randrange(len(mangled))
                if rng.random() < 0.5:
                    mangled[at] = rng.randrange(256)
                else:
                    mangled[at:at] = rng.choice(_SPLICES)
            assert_same_as_reference(bytes(mangled), rng.choice((PickleLimits(), small)))
            cases += 1
    assert cases > 2000


def test_a_bytearray_is_read_as_bytes_are() -> None:
    payload = pickle.dumps({"data": [1, "x"]}, protocol=5)
    assert estimate(bytearray(payload)) == estimate(payload)  # type: ignore[arg-type]


def test_the_opcode_limit_falls_on_the_same_opcode() -> None:
    """Marks and pops cost only their opcodes: with the budget a few hundred opcodes,
    the opcode limit falls on each opcode in turn (MEMOIZEs walked with the opcode
    before them among them), and is reported as the reference reports it."""
    value = {"a": [1, "x", None, 300, 70_000], "b": ("y", 2.5, b"z"), "c": [[], {}]}
    payloads = [pickle.dumps(value, protocol=p) for p in range(pickle.HIGHEST_PROTOCOL + 1)]
    for payload in [*payloads, memo_bomb(2)]:
        at = 2 if payload[0] == pickle.PROTO[0] else 0  # after PROTO (and before FRAME)
        padded = payload[:at] + b"(0" * 150 + payload[at:]
        opcodes = len(list(pickletools.genops(padded)))
        for most in range(300, opcodes + 2):
            assert_same_as_reference(padded, PickleLimits(max_allocation=most * OPCODE_COST))
