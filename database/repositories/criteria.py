"""Turn ``field__operator=value`` keyword criteria into SQL expressions.

Only mapped column names and the operators below are accepted; anything else
raises :class:`~database.exceptions.InvalidCriteriaError`, so a typo can never
silently widen a query and no caller string ever becomes SQL.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import JSON, ColumnElement, Enum, Uuid
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.sqltypes import String
from sqlalchemy.types import TypeDecorator

from database import validation
from database.exceptions import InvalidCriteriaError, ValidationError
from database.models.base import Base
from database.types import ExactDecimal

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


class Criteria:
    """The filterable and sortable columns of one model."""

    def __init__(self, model: type[Base]) -> None:
        self.model_name = model.__name__
        self.columns: dict[str, Attribute] = {}
        for prop in model.__mapper__.column_attrs:
            self.columns[prop.key] = getattr(model, prop.key)
        for alias, key in model.__attribute_aliases__.items():
            self.columns[alias] = self.columns[key]

    def column(self, name: str) -> Attribute:
        try:
            return self.columns[name]
        except KeyError:
            known = ", ".join(sorted(self.columns))
            raise InvalidCriteriaError(
                self.model_name, name, f"no such field (fields: {known})"
            ) from None

    def where(self, criteria: Mapping[str, Any]) -> list[ColumnElement[bool]]:
        return [self._condition(name, value) for name, value in criteria.items()]

    def order_by(self, order_by: str | Iterable[str] | None) -> list[ColumnElement[Any]]:
        """``"name"`` ascending, ``"-name"`` descending; several as a list."""
        if order_by is None:
            return []
        names = [order_by] if isinstance(order_by, str) else list(order_by)
        clauses: list[ColumnElement[Any]] = []
        for name in names:
            if not isinstance(name, str):
                raise InvalidCriteriaError(self.model_name, repr(name), "order_by takes names")
            column = self.column(name.removeprefix("-"))
            clauses.append(column.desc() if name.startswith("-") else column.asc())
        return clauses

    def _condition(self, name: str, value: Any) -> ColumnElement[bool]:
        field, _, operator = name.rpartition("__")
        if not field or operator not in _OPERATORS:
            field, operator = name, "eq"
        column = self.column(field)
        column_type = column.property.columns[0].type
        if isinstance(column_type, JSON) and operator != "isnull":
            raise InvalidCriteriaError(self.model_name, name, "JSON fields only support __isnull")
        if operator in _TEXT_ONLY:
            if not _is_text(column_type):
                raise InvalidCriteriaError(
                    self.model_name, name, f"__{operator} needs a text field"
                )
            if not isinstance(value, str):
                raise ValidationError(name, value, "must be a string")
        elif operator == "isnull":
            if not isinstance(value, bool):
                raise ValidationError(name, value, "must be True or False")
        elif operator == "in":
            if isinstance(value, str | bytes) or not isinstance(value, Iterable):
                raise ValidationError(name, value, "must be a list of values")
            value = [_comparable(column_type, item, name) for item in value]
        else:
            value = _comparable(column_type, value, name)
        return _OPERATORS[operator](column, value)


def _is_text(column_type: Any) -> bool:
    if isinstance(column_type, TypeDecorator):
        column_type = column_type.impl_instance
    return isinstance(column_type, String) and not isinstance(column_type, Enum)


def _comparable(column_type: Any, value: Any, field: str) -> Any:
    """Check a criterion's value against the column type, naming the field if it fails."""
    if value is None:
        return None
    if isinstance(column_type, Enum) and column_type.enum_class is not None:
        enum_class: type[enum.Enum] = column_type.enum_class
        try:
            return enum_class(value.lower() if isinstance(value, str) else value)
        except ValueError:
            allowed = ", ".join(str(member.value) for member in enum_class)
            raise ValidationError(field, value, f"must be one of: {allowed}") from None
    if isinstance(column_type, ExactDecimal):
        return validation.to_decimal(
            value, field, scale=column_type.scale, precision=column_type.precision
        )
    if isinstance(column_type, Uuid):
        return to_uuid(value, field)
    return value


def to_uuid(value: Any, field: str = "id") -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ValidationError(field, value, "is not a UUID") from None
