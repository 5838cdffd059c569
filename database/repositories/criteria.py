"""Turn ``field__operator=value`` keyword criteria into SQL expressions.

Only mapped column names and the operators below are accepted; anything else
raises :class:`~database.exceptions.InvalidCriteriaError`, so a typo can never
silently widen a query and no caller string ever becomes SQL. Secret columns
(``info={"secret": True}``: password hashes) can be neither filtered nor ordered
by. Every value is checked against its column's type (the same check as when the
column is set, without its range), so a bad one is a
:class:`~database.exceptions.ValidationError` naming the criterion, on either backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import JSON, Boolean, ColumnElement, Enum
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.sqltypes import String
from sqlalchemy.types import TypeDecorator

from database import validation
from database.exceptions import InvalidCriteriaError, ValidationError
from database.models.base import Base, Coercer, checked, coercer_for, is_secret
from database.validation import to_uuid

__all__ = ["Criteria", "check_page", "to_uuid"]

Attribute = InstrumentedAttribute[Any]

_OPERATORS: dict[str, Callable[[Attribute, Any], ColumnElement[bool]]] = {
    "eq": lambda column, value: column.is_(None) if value is None else column == value,
    "ne": lambda column, value: column.is_not(None) if value is None else column != value,
    "gt": lambda column, value: column > value,
    "gte": lambda column, value: column >= value,
    "lt": lambda column, value: column < value,
    "lte": lambda column, value: column <= value,
    "in": lambda column, value: column.in_(value),
    "isnull": lambda column, value: column.is_(None) if value else column.is_not(None),
    "contains": lambda column, value: column.contains(value, autoescape=True),
    "icontains": lambda column, value: column.icontains(value, autoescape=True),
}
_TEXT_ONLY = {"contains", "icontains"}
_ORDERING = {"gt", "gte", "lt", "lte"}
_ORDERING = {"gt", "gte", "lt", "lte"}
# Far below both backends' limits on bound parameters (SQLite 32766, PostgreSQL 65535).
MAX_IN_ITEMS = 10_000


def check_page(offset: Any, limit: Any) -> tuple[int, int | None]:
    """``offset`` and ``limit`` of a page: whole numbers (not bools, not floats) from 0
    to the BIGINT maximum; ``limit`` may be None (no limit)."""
    checked_offset = validation.to_int(offset, "offset", bounds=(0, validation.BIGINT_RANGE[1]))
    if limit is None:
        return checked_offset, None
    return checked_offset, validation.to_int(limit, "limit", bounds=(0, validation.BIGINT_RANGE[1]))


class Criteria:
    """The filterable and sortable columns of one model."""

    def __init__(self, model: type[Base]) -> None:
        self.model_name = model.__name__
        self.columns: dict[str, Attribute] = {}
        self.secret: set[str] = set()
        self._coercers: dict[str, Coercer] = {}
        for prop in model.__mapper__.column_attrs:
            column = prop.columns[0]
            if is_secret(column):
                self.secret.add(prop.key)
                continue
            self.columns[prop.key] = getattr(model, prop.key)
            self._coercers[prop.key] = coercer_for(column.type, criteria=True)
        for alias, key in model.__attribute_aliases__.items():
            self.columns[alias] = self.columns[key]
            self._coercers[alias] = self._coercers[key]

    def column(self, name: str) -> Attribute:
        if not isinstance(name, str):
            raise InvalidCriteriaError(self.model_name, repr(name), "a field name is a string")
        name = validation.exact_str(name)
        if name in self.secret:
            raise InvalidCriteriaError(
                self.model_name, name, "is a secret field: it cannot be filtered or ordered by"
            )
        try:
            return self.columns[name]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self.columns))
            raise InvalidCriteriaError(
                self.model_name, str(name), f"no such field (fields: {known})"
            ) from None

    def where(self, criteria: Mapping[str, Any]) -> list[ColumnElement[bool]]:
        return [self._condition(name, value) for name, value in criteria.items()]

    def order_by(self, order_by: str | Iterable[str] | None) -> list[ColumnElement[Any]]:
        """``"name"`` ascending, ``"-name"`` descending; several as a list or tuple."""
        if order_by is None:
            return []
        if isinstance(order_by, str):
            names: list[Any] = [order_by]
        elif isinstance(order_by, list | tuple):
            names = list(order_by)
        else:
            raise InvalidCriteriaError(
                self.model_name, repr(order_by), "order_by takes a name or a list of names"
            )
        clauses: list[ColumnElement[Any]] = []
        for name in names:
            if not isinstance(name, str):
                raise InvalidCriteriaError(self.model_name, repr(name), "order_by takes names")
            name = validation.exact_str(name)
            column = self.column(name.removeprefix("-"))
            clauses.append(column.desc() if name.startswith("-") else column.asc())
        return clauses

    def _condition(self, name: str, value: Any) -> ColumnElement[bool]:
        if not isinstance(name, str):
            raise InvalidCriteriaError(self.model_name, repr(name), "a criterion is a string")
        name = validation.exact_str(name)
        field, _, operator = name.rpartition("__")
        if not field or operator not in _OPERATORS:
            field, operator = name, "eq"
        column = self.column(field)
        column_type = column.property.columns[0].type
        coerce = self._coercers[field]
        if isinstance(column_type, JSON) and operator != "isnull":
            raise InvalidCriteriaError(self.model_name, name, "JSON fields only support __isnull")
        if operator in _ORDERING and isinstance(column_type, Boolean):
            raise InvalidCriteriaError(
                self.model_name, name, f"__{operator} needs an ordered field, not True/False"
            )
        value = checked(
            lambda given, _name: self._value(name, column_type, field, operator, coerce, given),
            value,
            name,
        )
        return _OPERATORS[operator](column, value)

    def _value(
        self, name: str, column_type: Any, field: str, operator: str, coerce: Coercer, value: Any
    ) -> Any:
        """The criterion ``name``'s value, checked against its column."""
        if operator in _TEXT_ONLY:
            if not _is_text(column_type):
                raise InvalidCriteriaError(
                    self.model_name, name, f"__{operator} needs a text field"
                )
            value = validation.to_text(value, name)
        elif operator == "isnull":
            value = validation.to_bool(value, name)
        elif operator == "in":
            if not isinstance(value, list | tuple | set | frozenset):
                raise ValidationError(name, value, "must be a list of values")
            # The built-in types' own iteration and length: a subclass's never run.
            kinds: tuple[Any, ...] = (list, tuple, set, frozenset)
            base = next(kind for kind in kinds if isinstance(value, kind))
            items = list(base.__iter__(value))
            if len(items) > MAX_IN_ITEMS:
                raise ValidationError(name, value, f"has more than {MAX_IN_ITEMS} values")
            if any(item is None for item in items):
                raise ValidationError(name, value, f"must not hold None (use {field}__isnull)")
            value = [coerce(item, name) for item in items]
        elif value is None:
            if operator in _ORDERING:
                raise ValidationError(name, value, f"cannot be None: __{operator} needs a value")
        else:
            value = coerce(value, name)
        return value


def _is_text(column_type: Any) -> bool:
    if isinstance(column_type, TypeDecorator):
        column_type = column_type.impl_instance
    return isinstance(column_type, String) and not isinstance(column_type, Enum)
