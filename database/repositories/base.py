"""The generic repository: typed CRUD with a sync and an ``async_`` form of each method.

A repository receives a session and never opens, commits or closes it; it
flushes, so errors surface at the call that caused them. Each method builds its
statement once (the ``_..._statement`` helpers) and its two forms only execute it.
"""

from __future__ import annotations

import builtins
import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from sqlalchemy import Delete, Select, Uuid, delete, exists, func, select
from sqlalchemy import inspect as inspect_instance
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, object_session
from sqlalchemy.orm.attributes import set_committed_value

from database.exceptions import (
    DatabaseError,
    NotFoundError,
    StaleDataError,
    ValidationError,
    raise_translated,
    translate_errors,
)
from database.models.base import Base
from database.repositories.criteria import Criteria, to_uuid

ModelT = TypeVar("ModelT", bound=Base)


def _at_the_boundary(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a public repository method so that only the package's errors leave it."""
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def guarded_async(self: BaseRepository[Any], *args: Any, **kwargs: Any) -> Any:
            try:
                return await method(self, *args, **kwargs)
            except DatabaseError:
                raise
            except Exception as error:
                raise_translated(error, self.model.__name__, self.model.__table__)
                raise

        return guarded_async

    @functools.wraps(method)
    def guarded(self: BaseRepository[Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except DatabaseError:
            raise
        except Exception as error:
            raise_translated(error, self.model.__name__, self.model.__table__)
            raise

    return guarded


def _guard_public_methods(cls: type) -> None:
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(member):
            setattr(cls, name, _at_the_boundary(member))


class BaseRepository(Generic[ModelT]):
    """CRUD for one model. Subclass as ``super().__init__(MyModel)``.

    Every public method, the subclasses' included, is a boundary: a driver or
    SQLAlchemy error raised anywhere inside leaves it as one of
    :mod:`database.exceptions`, with the original as ``__cause__``.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _guard_public_methods(cls)

    def __init__(self, model: type[ModelT]) -> None:
        self.model = model
        self.criteria = Criteria(model)
        mapper = model.__mapper__
        self._primary_key = [
            getattr(model, mapper.get_property_by_column(c).key) for c in mapper.primary_key
        ]
        self._uuid_key = len(mapper.primary_key) == 1 and isinstance(
            mapper.primary_key[0].type, Uuid
        )

    # -- shared pieces -------------------------------------------------------------

    @contextmanager
    def _translating(self) -> Iterator[None]:
        with translate_errors(self.model.__name__, self.model.__table__):
            yield

    def _new(self, values: Mapping[str, Any]) -> ModelT:
        """Build an instance; the models check every value as it is set."""
        try:
            instance = self.model(**values)
        except TypeError as error:
            field = next((k for k in values if not hasattr(self.model, k)), "?")
            raise ValidationError(field, values.get(field), str(error)) from None
        # A new row has no children yet: mark its collections loaded (empty), so
        # reading them later never triggers a lazy load (MissingGreenlet in async).
        for relationship in self.model.__mapper__.relationships:
            if relationship.uselist and relationship.key not in values:
                set_committed_value(instance, relationship.key, ())
        return instance

    def _key(self, key: Any) -> Any:
        return to_uuid(key) if self._uuid_key else key

    @contextmanager
    def _writing(self, instance: ModelT) -> Iterator[None]:
        """Translate errors of a flush that writes ``instance``; a stale write names its key."""
        version_read = instance.__dict__.get("version")
        try:
            with self._translating():
                yield
        except StaleDataError as error:
            key = inspect_instance(instance).identity
            shown = key[0] if key is not None and len(key) == 1 else key
            # The failed flush expired the copy, so writing it again would load
            # the new version and win: a stale copy stays stale instead.
            if (session := object_session(instance)) is not None:
                session.expunge(instance)
            if version_read is not None:
                set_committed_value(instance, "version", version_read)
            raise StaleDataError(self.model.__tablename__, shown) from error.__cause__

    @staticmethod
    def _attach(session: Session, instance: ModelT) -> None:
        """Take in a copy read in another session: its version is checked when it is written."""
        if instance not in session:
            session.add(instance)

    def _apply(self, instance: ModelT, values: Mapping[str, Any]) -> ModelT:
        for name, value in values.items():
            attribute = self.model.__attribute_aliases__.get(name, name)
            if (
                attribute not in self.criteria.columns
                or attribute in {c.key for c in self._primary_key}
                or attribute == "version"  # the version counter moves by itself
            ):
                raise ValidationError(
                    name, value, f"is not an updatable field of {self.model.__name__}"
                )
            setattr(instance, attribute, value)
        return instance

    def _select_statement(
        self,
        criteria: Mapping[str, Any],
        *,
        order_by: str | Iterable[str] | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> Select[ModelT]:
        if offset < 0:
            raise ValidationError("offset", offset, "must be at least 0")
        if limit is not None and limit < 0:
            raise ValidationError("limit", limit, "must be at least 0")
        statement = select(self.model).where(*self.criteria.where(criteria))
        statement = statement.order_by(*self.criteria.order_by(order_by), *self._primary_key)
        if offset:
            statement = statement.offset(offset)
        if limit is not None:
            statement = statement.limit(limit)
        return statement

    def _count_statement(self, criteria: Mapping[str, Any]) -> Select[int]:
        return select(func.count()).select_from(self.model).where(*self.criteria.where(criteria))

    def _exists_statement(self, criteria: Mapping[str, Any]) -> Select[bool]:
        return select(exists().where(*self.criteria.where(criteria)))

    def _delete_statement(self, key: Any) -> Delete:
        keys = key if isinstance(key, tuple) else (self._key(key),)
        if len(keys) != len(self._primary_key):
            raise ValidationError(
                "id", key, f"{self.model.__name__} has a {len(self._primary_key)}-part key"
            )
        conditions = [
            column == value for column, value in zip(self._primary_key, keys, strict=True)
        ]
        return delete(self.model).where(*conditions).execution_options(synchronize_session="fetch")

    @staticmethod
    def _missing(instance: ModelT | None, model: type[ModelT], key: Any) -> ModelT:
        if instance is None:
            raise NotFoundError(model.__name__, key)
        return instance

    # -- create ----------------------------------------------------------------------

    def create(self, session: Session, **values: Any) -> ModelT:
        """Insert one row and return it (flushed, with its id)."""
        instance = self._new(values)
        session.add(instance)
        with self._translating():
            session.flush()
        return instance

    async def async_create(self, session: AsyncSession, **values: Any) -> ModelT:
        instance = self._new(values)
        session.add(instance)
        with self._translating():
            await session.flush()
        return instance

    def bulk_create(
        self, session: Session, items: Iterable[Mapping[str, Any]]
    ) -> builtins.list[ModelT]:
        """Insert many rows: every row is checked first, then one INSERT per batch."""
        instances = [self._new(values) for values in items]
        session.add_all(instances)
        with self._translating():
            session.flush()
        return instances

    async def async_bulk_create(
        self, session: AsyncSession, items: Iterable[Mapping[str, Any]]
    ) -> builtins.list[ModelT]:
        instances = [self._new(values) for values in items]
        session.add_all(instances)
        with self._translating():
            await session.flush()
        return instances

    # -- read --------------------------------------------------------------------------

    def get_by_id(self, session: Session, id: Any) -> ModelT | None:
        with self._translating():
            return session.get(self.model, self._key(id))

    async def async_get_by_id(self, session: AsyncSession, id: Any) -> ModelT | None:
        with self._translating():
            return await session.get(self.model, self._key(id))

    def get_by_criteria(self, session: Session, **criteria: Any) -> builtins.list[ModelT]:
        """Every row matching all criteria (``field=v``, ``field__gte=v``, ...)."""
        statement = self._select_statement(criteria)
        with self._translating():
            return builtins.list(session.scalars(statement))

    async def async_get_by_criteria(
        self, session: AsyncSession, **criteria: Any
    ) -> builtins.list[ModelT]:
        statement = self._select_statement(criteria)
        with self._translating():
            return builtins.list(await session.scalars(statement))

    def get_one_by_criteria(self, session: Session, **criteria: Any) -> ModelT | None:
        """The first matching row (in primary-key order), or None."""
        statement = self._select_statement(criteria, limit=1)
        with self._translating():
            return session.scalars(statement).first()

    async def async_get_one_by_criteria(
        self, session: AsyncSession, **criteria: Any
    ) -> ModelT | None:
        statement = self._select_statement(criteria, limit=1)
        with self._translating():
            return (await session.scalars(statement)).first()

    def list(
        self,
        session: Session,
        *,
        offset: int = 0,
        limit: int | None = None,
        order_by: str | Iterable[str] | None = None,
        **criteria: Any,
    ) -> builtins.list[ModelT]:
        """A page of rows: ``order_by="-created_at"`` sorts descending."""
        statement = self._select_statement(criteria, order_by=order_by, offset=offset, limit=limit)
        with self._translating():
            return builtins.list(session.scalars(statement))

    async def async_list(
        self,
        session: AsyncSession,
        *,
        offset: int = 0,
        limit: int | None = None,
        order_by: str | Iterable[str] | None = None,
        **criteria: Any,
    ) -> builtins.list[ModelT]:
        statement = self._select_statement(criteria, order_by=order_by, offset=offset, limit=limit)
        with self._translating():
            return builtins.list(await session.scalars(statement))

    def count(self, session: Session, **criteria: Any) -> int:
        statement = self._count_statement(criteria)
        with self._translating():
            return session.scalar(statement) or 0

    async def async_count(self, session: AsyncSession, **criteria: Any) -> int:
        statement = self._count_statement(criteria)
        with self._translating():
            return await session.scalar(statement) or 0

    def exists(self, session: Session, **criteria: Any) -> bool:
        statement = self._exists_statement(criteria)
        with self._translating():
            return bool(session.scalar(statement))

    async def async_exists(self, session: AsyncSession, **criteria: Any) -> bool:
        statement = self._exists_statement(criteria)
        with self._translating():
            return bool(await session.scalar(statement))

    # -- update / delete ---------------------------------------------------------------

    def update(self, session: Session, instance_or_id: ModelT | Any, **values: Any) -> ModelT:
        """Change only the given fields; raises NotFoundError for an unknown id."""
        instance = (
            instance_or_id
            if isinstance(instance_or_id, self.model)
            else self._missing(self.get_by_id(session, instance_or_id), self.model, instance_or_id)
        )
        self._apply(instance, values)
        with self._writing(instance):
            self._attach(session, instance)
            session.flush()
        return instance

    async def async_update(
        self, session: AsyncSession, instance_or_id: ModelT | Any, **values: Any
    ) -> ModelT:
        instance = (
            instance_or_id
            if isinstance(instance_or_id, self.model)
            else self._missing(
                await self.async_get_by_id(session, instance_or_id), self.model, instance_or_id
            )
        )
        self._apply(instance, values)
        with self._writing(instance):
            self._attach(session.sync_session, instance)
            await session.flush()
        return instance

    def delete(self, session: Session, instance_or_id: ModelT | Any) -> bool:
        """Delete one row (children go by ON DELETE CASCADE); False if it was not there."""
        if isinstance(instance_or_id, self.model):
            with self._writing(instance_or_id):
                session.delete(instance_or_id)
                session.flush()
            return True
        statement = self._delete_statement(instance_or_id)
        with self._translating():
            return bool(session.execute(statement).rowcount)  # type: ignore[attr-defined]

    async def async_delete(self, session: AsyncSession, instance_or_id: ModelT | Any) -> bool:
        if isinstance(instance_or_id, self.model):
            with self._writing(instance_or_id):
                await session.delete(instance_or_id)
                await session.flush()
            return True
        statement = self._delete_statement(instance_or_id)
        with self._translating():
            return bool((await session.execute(statement)).rowcount)  # type: ignore[attr-defined]


_guard_public_methods(BaseRepository)
