"""The application's own plain data classes, allowed by name in pickles and cache payloads.

Legacy pickles and the typed JSON of cache payloads (:mod:`database.codec`) build
only data types. An application that caches its own results (a list of
``@dataclass`` objects, say) names those classes, and only those::

    from database.datatypes import allow_types
    allow_types(ValuationResult, Rating)

Only dataclasses (frozen or not, with or without slots), ``NamedTuple`` classes
and ``Enum`` classes can be allowed; anything else is a ``TypeError`` naming it.
A class is known by ``module.qualname``, the name pickles carry. Rebuilding one
never runs its ``__init__`` or ``__post_init__`` (as with pickle): a dataclass
gets exactly its fields (a field missing takes its default; a key that is not a
field is refused), a named tuple its items, an enum member must exist.

:data:`DATA_TYPES` is the process-wide registry that :func:`allow_types` fills and
that the caches and the import use; a :class:`DataTypes` of its own can be given
to :func:`database.codec.encode`/``decode`` and :func:`~database.filecache.safe_loads`.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from database.exceptions import ValidationError

_MISSING = object()


def type_name(cls: type) -> str:
    """``module.qualname``: how pickles and cache payloads name ``cls``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def kind_of(cls: object) -> str | None:
    """``"dataclass"``, ``"namedtuple"`` or ``"enum"`` for a class that can be allowed."""
    if not isinstance(cls, type):
        return None
    if issubclass(cls, enum.Enum):
        return "enum"
    if issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple):
        return "namedtuple"
    if dataclasses.is_dataclass(cls):
        return "dataclass"
    return None


class DataTypes:
    """A set of allowed application classes, by ``module.qualname``."""

    def __init__(self, classes: Iterable[type] = ()) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, type] = {}
        self.allow(*classes)

    def allow(self, *classes: type) -> None:
        """Allow ``classes``; ``TypeError`` naming one that is not a dataclass,
        ``NamedTuple`` or ``Enum`` class, or whose name another allowed class has."""
        for cls in classes:
            if kind_of(cls) is None:
                raise TypeError(
                    f"{getattr(cls, '__qualname__', cls)!r} is not a dataclass, NamedTuple or"
                    " Enum class: only those can be allowed in pickles and cache payloads"
                )
        with self._lock:  # all or none
            named = {type_name(cls): cls for cls in classes}
            for name, cls in named.items():
                if self._by_name.get(name, cls) is not cls:
                    raise TypeError(f"another class named {name} is already allowed")
            if len(named) != len(set(map(id, classes))):
                raise TypeError("two of the classes given have the same name")
            self._by_name.update(named)

    def forget(self, *classes: type) -> None:
        """Stop allowing ``classes`` (those not allowed are ignored)."""
        with self._lock:
            for cls in classes:
                if self._by_name.get(type_name(cls)) is cls:
                    del self._by_name[type_name(cls)]

    def get(self, name: str) -> type | None:
        """The allowed class called ``name``, or None."""
        return self._by_name.get(name)

    def __contains__(self, cls: object) -> bool:
        return isinstance(cls, type) and self._by_name.get(type_name(cls)) is cls

    def __iter__(self) -> Any:
        return iter(list(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)


DATA_TYPES = DataTypes()


def allow_types(*classes: type) -> None:
    """Allow ``classes`` in legacy pickles and cache payloads, process-wide."""
    DATA_TYPES.allow(*classes)


def build_dataclass(cls: type, values: Mapping[str, Any]) -> Any:
    """An instance of the dataclass ``cls`` holding ``values``, without calling its code.

    ``ValidationError`` for a key that is not one of its fields, or a field
    missing that has no default.
    """
    return fill_dataclass(object.__new__(cls), cls, values)


def fill_dataclass(instance: object, cls: type, values: Mapping[str, Any]) -> Any:
    """Set the fields of ``instance`` (of the dataclass ``cls``) from ``values``, as
    :func:`build_dataclass` does."""
    fields = {field.name: field for field in dataclasses.fields(cls)}
    extra = [key for key in values if not isinstance(key, str) or key not in fields]
    if extra:
        raise ValidationError("data", type_name(cls), f"has no field {extra[0]!r}")
    for name, field in fields.items():
        value = values.get(name, _MISSING)
        if value is _MISSING:
            if field.default is not dataclasses.MISSING:
                value = field.default
            elif field.default_factory is not dataclasses.MISSING:
                value = field.default_factory()
            else:
                raise ValidationError("data", type_name(cls), f"lacks its field {name!r}")
        object.__setattr__(instance, name, value)
    return instance


def enum_member(cls: type, value: Any) -> Any:
    """The member of the enum ``cls`` with ``value``; ``ValidationError`` if there is none."""
    # The members by value, not cls(value): that would run the enum's _missing_ hook.
    members: dict[Any, Any] = getattr(cls, "_value2member_map_", {})
    try:
        return members[value]
    except (KeyError, TypeError):  # TypeError: an unhashable value
        for member in cls:  # type: ignore[attr-defined]  # members with unhashable values
            if member.value == value:
                return member
        raise ValidationError("data", type_name(cls), f"has no member {value!r}") from None


def build_namedtuple(cls: type, items: Iterable[Any]) -> Any:
    """``cls(*items)``; ``ValidationError`` for the wrong number of items."""
    items = tuple(items)
    if len(items) != len(cls._fields):  # type: ignore[attr-defined]
        raise ValidationError(
            "data",
            type_name(cls),
            f"takes {len(cls._fields)} items, not {len(items)}",  # type: ignore[attr-defined]
        )
    return tuple.__new__(cls, items)


__all__ = [
    "DATA_TYPES",
    "DataTypes",
    "allow_types",
    "build_dataclass",
    "build_namedtuple",
    "enum_member",
    "fill_dataclass",
    "kind_of",
    "type_name",
]
