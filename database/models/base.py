"""Declarative base: naming convention, common columns, and input checking.

Every column whose type knows how to ``coerce`` (see ``database.types``), every
enum and every length-limited string is checked when the attribute is set, so
``Position(shares=Decimal("-1"))`` fails at once with a
:class:`~database.exceptions.ValidationError` naming the field and value.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Enum,
    Integer,
    MetaData,
    String,
    Uuid,
    event,
    func,
    text,
)
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.ext.mutable import MutableDict
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, declared_attr, mapped_column, validates
from sqlalchemy.types import TypeDecorator

from database import validation
from database.exceptions import DatabaseError, UnknownFieldError, ValidationError
from database.types import ExactDecimal, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(AsyncAttrs, DeclarativeBase):
    """Base class of every model; ``await obj.awaitable_attrs.rel`` loads lazily in async."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)

    # Names accepted in constructors and criteria for attributes whose column
    # name is reserved by SQLAlchemy (``metadata``), e.g. {"metadata": "analysis_metadata"}.
    __attribute_aliases__: ClassVar[dict[str, str]] = {}

    def __init__(self, **kwargs: Any) -> None:
        for alias, attribute in self.__attribute_aliases__.items():
            if alias in kwargs:
                kwargs[attribute] = kwargs.pop(alias)
        settable = settable_fields(type(self))
        for key in kwargs:
            if key not in settable:
                raise UnknownFieldError(type(self).__name__, key, kwargs[key], settable)
        for key, value in kwargs.items():
            setattr(self, key, value)

    def __repr__(self) -> str:
        key = getattr(self, "id", None)
        return f"<{type(self).__name__} {key}>"


def settable_fields(model: type[Base]) -> frozenset[str]:
    """The keywords a constructor takes: mapped columns only (no relationships, no
    ``metadata``/``registry``/dunder names) except the version counter, which the ORM
    moves itself."""
    cached = _settable.get(model)
    if cached is None:
        mapper = model.__mapper__
        columns = {prop.key for prop in mapper.column_attrs}
        if mapper.version_id_col is not None:
            columns.discard(mapper.get_property_by_column(mapper.version_id_col).key)
        cached = _settable[model] = frozenset(columns)
    return cached


_settable: dict[type[Any], frozenset[str]] = {}


def is_secret(column: Any) -> bool:
    """Columns marked ``info={"secret": True}`` (password hashes): never filtered,
    ordered by or changed through ``update``."""
    return bool(getattr(column, "info", {}).get("secret"))


class UUIDPrimaryKey:
    """A UUID key assigned at construction, so ``obj.id`` is usable before any flush."""

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("id", uuid.uuid4())
        super().__init__(**kwargs)


class Timestamps:
    """created_at / updated_at, set by the ORM and by the database for raw inserts."""

    created_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now(), onupdate=utcnow
    )


class Versioned:
    """A version counter, raised by every UPDATE: a write from a stale copy fails.

    SQLAlchemy adds ``AND version = <the version read>`` to each UPDATE and
    DELETE of the row; when another transaction got there first, no row
    matches and the write raises (as :class:`~database.exceptions.StaleDataError`)
    instead of silently overwriting the newer data.
    """

    version: Mapped[int] = mapped_column(default=1, server_default=text("1"))

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"version_id_col": cls.__table__.c.version}  # type: ignore[attr-defined]


def enum_column_type(enum_class: type[enum.Enum], name: str) -> Enum:
    """A portable enum: VARCHAR + named CHECK of the members' values."""
    return Enum(
        enum_class,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=max(len(member.value) for member in enum_class),
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


Coercer = Callable[[Any, str], Any]


def checked(coerce: Coercer, value: Any, field: str) -> Any:
    """``coerce(value, field)``, with anything but a DatabaseError that a hostile value
    makes it raise (a ``str`` subclass whose ``strip`` raises, a time zone that returns
    text...) turned into a ValidationError naming the field: the last line behind
    every column's check."""
    try:
        return coerce(value, field)
    except DatabaseError:
        raise
    except Exception as error:
        raise ValidationError(
            field, value, f"could not be checked ({type(error).__name__}: {error})"
        ) from error


def checked_validator(*names: str) -> Callable[[Callable[..., Any]], Any]:
    """``sqlalchemy.orm.validates`` whose method runs under :func:`checked`, naming the
    field by its public name (``metadata`` for ``analysis_metadata``)."""

    def decorate(method: Callable[..., Any]) -> Any:
        @functools.wraps(method)
        def run(self: Any, key: str, value: Any) -> Any:
            aliases = {attr: alias for alias, attr in type(self).__attribute_aliases__.items()}
            return checked(lambda v, _field: method(self, key, v), value, aliases.get(key, key))

        return validates(*names)(run)

    return decorate


def _enum_coercer(enum_class: type[enum.Enum]) -> Coercer:
    def coerce(value: Any, field: str) -> Any:
        if value is None or isinstance(value, enum_class):
            return value
        try:
            return enum_class(str.lower(value) if isinstance(value, str) else value)
        except (ValueError, TypeError):
            allowed = ", ".join(str(member.value) for member in enum_class)
            raise ValidationError(field, value, f"must be one of: {allowed}") from None

    return coerce


def _text_coercer(length: int | None) -> Coercer:
    def coerce(value: Any, field: str) -> Any:
        return None if value is None else validation.to_text(value, field, max_length=length)

    return coerce


def _optional(check: Callable[[Any, str], Any]) -> Coercer:
    def coerce(value: Any, field: str) -> Any:
        return None if value is None else check(value, field)

    return coerce


def _int_coercer(column_type: Any) -> Coercer:
    bounds = (
        validation.BIGINT_RANGE if isinstance(column_type, BigInteger) else validation.INTEGER_RANGE
    )
    return _optional(lambda value, field: validation.to_int(value, field, bounds=bounds))


def coercer_for(column_type: Any, *, criteria: bool = False) -> Coercer:
    """The check a value for a column of this type goes through, naming the field.

    ``criteria``: for a value compared with the column rather than stored in it:
    decimals are checked for type and precision but not range (``shares__gt=-1``
    is a fair question), and text for type only (no length, no ticker syntax).
    """
    if criteria and isinstance(column_type, TypeDecorator) and column_type.python_type is str:
        return _text_coercer(None)
    if criteria and isinstance(column_type, ExactDecimal):
        return functools.partial(column_type.coerce, bounded=False)
    if callable(getattr(column_type, "coerce", None)):
        return column_type.coerce  # type: ignore[no-any-return]
    if isinstance(column_type, TypeDecorator):
        column_type = column_type.impl_instance
    if isinstance(column_type, Enum) and column_type.enum_class is not None:
        return _enum_coercer(column_type.enum_class)
    if isinstance(column_type, String):
        return _text_coercer(None if criteria else column_type.length)
    if isinstance(column_type, Boolean):
        return _optional(validation.to_bool)
    if isinstance(column_type, Integer):
        return _int_coercer(column_type)
    if isinstance(column_type, Date):
        return _optional(validation.to_date)
    if isinstance(column_type, Uuid):
        return _optional(validation.to_uuid)
    if isinstance(column_type, JSON):
        return _json_coercer
    raise TypeError(f"no coercer for the column type {column_type!r}")


def _json_coercer(value: Any, field: str) -> Any:
    document = validation.to_json_object(value, field)
    if type(value) is MutableDict and document is not None:
        # SQLAlchemy's own copy, already tracked for in-place edits: keep it, checked.
        dict.clear(value)
        dict.update(value, document)
        return value
    return document


@event.listens_for(Mapper, "mapper_configured")
def _install_coercers(mapper: Mapper[Any], class_: type[Any]) -> None:
    if not issubclass(class_, Base):
        return
    for attribute in mapper.column_attrs:
        column = attribute.columns[0]
        coerce = coercer_for(column.type)
        # A foreign key may stay unset until a relationship fills it in at flush.
        nullable = column.nullable or bool(column.foreign_keys)

        def on_set(
            target: Any,
            value: Any,
            oldvalue: Any,
            initiator: Any,
            coerce: Callable[[Any, str], Any] = coerce,
            field: str = column.name,
            nullable: bool | None = nullable,
        ) -> Any:
            if value is None and not nullable:
                raise ValidationError(field, value, "is required")
            return checked(coerce, value, field)

        event.listen(getattr(class_, attribute.key), "set", on_set, retval=True)
