"""The generic repository: typed CRUD with a sync and an ``async_`` form of each method.

A repository receives a session and never opens, commits or closes it; it
flushes, so errors surface at the call that caused them. Each method is written
once, for a Session; its ``async_`` form runs the same body for an AsyncSession
(see :mod:`database.repositories.twins`).
"""

from __future__ import annotations

import builtins
import functools
import inspect
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import ColumnElement, Delete, Select, Uuid, delete, exists, func, select
from sqlalchemy import inspect as inspect_instance
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, make_transient_to_detached, object_session
from sqlalchemy.orm.attributes import instance_state, set_committed_value

from database.driver import Read, async_run_read, run_read
from database.exceptions import (
    DatabaseError,
    NotFoundError,
    StaleDataError,
    ValidationError,
    raise_translated,
    translate_errors,
)
from database.models.base import Base
from database.ownership import acting_users
from database.repositories.criteria import Criteria, check_page, to_uuid
from database.repositories.twins import async_form

ModelT = TypeVar("ModelT", bound=Base)
R = TypeVar("R")


def _at_the_boundary(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a public repository method so that only the package's errors leave it."""
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def guarded_async(self: BaseRepository[Any], /, *args: Any, **kwargs: Any) -> Any:
            try:
                return await method(self, *args, **kwargs)
            except DatabaseError:
                raise
            except Exception as error:
                raise_translated(error, self.model.__name__, self.model.__table__)
                raise

        return guarded_async

    @functools.wraps(method)
    def guarded(self: BaseRepository[Any], /, *args: Any, **kwargs: Any) -> Any:
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
        """Build an instance; the models check every value (and keyword) as it is set."""
        instance = self.model(**values)
        # A new row has no children yet: mark its collections loaded (empty), so
        # reading them later never triggers a lazy load (MissingGreenlet in async).
        for relationship in self.model.__mapper__.relationships:
            if relationship.uselist and relationship.key not in values:
                set_committed_value(instance, relationship.key, ())
        return instance

    def _read(self, session: Session, read: Read[R]) -> R:
        """A point read (see :class:`database.driver.Read`), its errors translated; the
        session's pending changes flushed first, as a query would (autoflush)."""
        with self._translating():
            if _autoflushes(session):
                session.flush()
            return run_read(session, read)

    async def _async_read(self, session: AsyncSession, read: Read[R]) -> R:
        """:meth:`_read` awaited on the event loop: no ``run_sync`` greenlet trip (but for
        a flush of pending changes)."""
        with self._translating():
            if _autoflushes(session.sync_session):
                await session.flush()
            return await async_run_read(session, read)

    def _persistent(self, session: Session, values: Mapping[str, Any]) -> ModelT:
        """A row read through the bare driver (as model values) as the session's instance
        of it: the one its identity map already holds, else a new persistent one, which
        costs no SQL. For models without relationships to load."""
        mapper = self.model.__mapper__
        key = mapper.identity_key_from_primary_key(
            tuple(values[str(c.key)] for c in mapper.primary_key)
        )
        found = session.identity_map.get(key)
        if found is not None:
            # As a query loads an instance it already holds: its loaded values (and
            # changes) kept, the expired and unloaded ones taken from the row.
            loaded = instance_state(found).dict
            for name, value in values.items():
                if name not in loaded:
                    set_committed_value(found, name, value)
            return found  # type: ignore[no-any-return]
        instance: ModelT = mapper.class_manager.new_instance()
        # A new instance has no history and nothing expired: its committed values are its
        # dict (what set_committed_value would leave, attribute by attribute).
        instance_state(instance).dict.update(values)
        make_transient_to_detached(instance)
        session.add(instance)
        return instance

    def _key(self, key: Any) -> Any:
        return to_uuid(key) if self._uuid_key else key

    # -- ownership (see database.ownership) -----------------------------------------

    # Whether a user owns each row (the subclass then defines ``_owned_by``), and
    # the columns that tie a row to its owner, which update() cannot change.
    _scoped: ClassVar[bool] = False
    _owner_columns: ClassVar[frozenset[str]] = frozenset()

    def _owned_by(self, user: uuid.UUID, *, writing: bool = False) -> ColumnElement[bool]:
        """The rows ``user`` may read, or change (``writing``); scoped repositories only."""
        raise NotImplementedError

    def _owned_new(self, user: uuid.UUID, instance: ModelT) -> Select[Any] | bool:
        """Whether ``user`` may create ``instance``: an answer or a query of one."""
        return True

    def _scope(
        self, session: Session | AsyncSession, user_id: Any, *, writing: bool = False
    ) -> list[ColumnElement[bool]]:
        """The conditions limiting a statement to the acting user's rows (none: unscoped)."""
        if not self._scoped:
            if user_id is not None:
                raise ValidationError(
                    "user_id", user_id, f"{self.model.__name__} rows are not owned by a user"
                )
            return []  # a session opened for a user still reads shared tables
        users = acting_users(session, user_id)
        return [self._owned_by(user, writing=writing) for user in users]

    def _acting(self, values: dict[str, Any]) -> Any:
        """The acting user among keyword values: taken out of them, or, where ``user_id``
        is a column (a portfolio's owner), left in place as the value it also is."""
        if not self._scoped:
            return None
        if "user_id" in self.criteria.columns:
            return values.get("user_id")
        return values.pop("user_id", None)

    def _creation_checks(
        self, session: Session | AsyncSession, user_id: Any, instances: Iterable[ModelT]
    ) -> builtins.list[tuple[ModelT, Select[Any]]]:
        """Ownership queries to run before inserting, one per distinct parent (a bulk
        insert into one portfolio asks once); refuses a foreign owner at once."""
        queries: dict[tuple[Any, ...], tuple[ModelT, Select[Any]]] = {}
        for user in acting_users(session, user_id):
            for instance in instances:
                verdict = self._owned_new(user, instance)
                if isinstance(verdict, Select):
                    asked = tuple(sorted(verdict.compile().params.items()))
                    queries.setdefault(asked, (instance, verdict))
                elif not verdict:
                    self._refuse(instance)
        return builtins.list(queries.values())

    def _refuse(self, instance: ModelT) -> None:
        """Creating under another user's parent looks exactly like a missing parent."""
        raise NotFoundError(self.model.__name__, getattr(instance, "id", None))

    def _by_key_statement(self, key: Any, scope: builtins.list[ColumnElement[bool]]) -> Select[Any]:
        return select(self.model).where(*self._key_conditions(key), *scope)

    def _owned_statement_of(
        self, instance: ModelT, scope: builtins.list[ColumnElement[bool]]
    ) -> Select[bool]:
        key = inspect_instance(instance).identity or tuple(
            getattr(instance, column.key) for column in self._primary_key
        )
        return select(exists().where(*self._key_conditions(key), *scope))

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
        """Set the fields, all checked first: a refused update changes no field at all."""
        checked = {}
        probe = self.model()  # a scratch instance: the models check values as they are set
        for name, value in values.items():
            attribute = self.model.__attribute_aliases__.get(name, name)
            if (
                attribute not in self.criteria.columns
                or attribute in {c.key for c in self._primary_key}
                or attribute == "version"  # the version counter moves by itself
            ):
                shown = "***" if attribute in self.criteria.secret else value
                raise ValidationError(
                    name, shown, f"is not an updatable field of {self.model.__name__}"
                )
            if attribute in self._owner_columns:
                raise ValidationError(name, value, "cannot be changed: it decides who owns the row")
            setattr(probe, attribute, value)
            checked[attribute] = getattr(probe, attribute)
        for attribute, value in checked.items():
            setattr(instance, attribute, value)
        return instance

    def _select_statement(
        self,
        criteria: Mapping[str, Any],
        *,
        order_by: str | Iterable[str] | None = None,
        offset: int = 0,
        limit: int | None = None,
        scope: builtins.list[ColumnElement[bool]] = (),  # type: ignore[assignment]
    ) -> Select[ModelT]:
        offset, limit = check_page(offset, limit)
        statement = select(self.model).where(*self.criteria.where(criteria), *scope)
        statement = statement.order_by(*self.criteria.order_by(order_by), *self._primary_key)
        if offset:
            statement = statement.offset(offset)
        if limit is not None:
            statement = statement.limit(limit)
        return statement

    def _count_statement(
        self, criteria: Mapping[str, Any], scope: builtins.list[ColumnElement[bool]]
    ) -> Select[int]:
        return (
            select(func.count())
            .select_from(self.model)
            .where(*self.criteria.where(criteria), *scope)
        )

    def _exists_statement(
        self, criteria: Mapping[str, Any], scope: builtins.list[ColumnElement[bool]]
    ) -> Select[bool]:
        return select(select(self.model).where(*self.criteria.where(criteria), *scope).exists())

    def _key_conditions(self, key: Any) -> builtins.list[ColumnElement[bool]]:
        keys = key if isinstance(key, tuple) else (self._key(key),)
        if len(keys) != len(self._primary_key):
            raise ValidationError(
                "id", key, f"{self.model.__name__} has a {len(self._primary_key)}-part key"
            )
        return [column == value for column, value in zip(self._primary_key, keys, strict=True)]

    def _delete_statement(self, key: Any, scope: builtins.list[ColumnElement[bool]]) -> Delete:
        return (
            delete(self.model)
            .where(*self._key_conditions(key), *scope)
            .execution_options(synchronize_session="fetch")
        )

    @staticmethod
    def _missing(instance: ModelT | None, model: type[ModelT], key: Any) -> ModelT:
        if instance is None:
            raise NotFoundError(model.__name__, key)
        return instance

    # -- create ----------------------------------------------------------------------

    def _check_creation(
        self, session: Session, user_id: Any, instances: builtins.list[ModelT]
    ) -> None:
        for instance, query in self._creation_checks(session, user_id, instances):
            with self._translating():
                allowed = session.scalar(query)
            if not allowed:
                self._refuse(instance)

    def create(self, session: Session, /, **values: Any) -> ModelT:
        """Insert one row and return it (flushed, with its id).

        For user-owned rows, ``user_id=`` (or the session's user) must own the
        parent: a position in another user's portfolio is a NotFoundError.
        """
        user_id = self._acting(values)
        instance = self._new(values)
        self._check_creation(session, user_id, [instance])
        session.add(instance)
        with self._translating():
            session.flush()
        return instance

    async_create = async_form(create)

    def bulk_create(
        self, session: Session, items: Iterable[Mapping[str, Any]], *, user_id: Any = None
    ) -> builtins.list[ModelT]:
        """Insert many rows: every row is checked first, then one INSERT per batch."""
        instances = [self._new(values) for values in items]
        self._check_creation(session, user_id, instances)
        session.add_all(instances)
        with self._translating():
            session.flush()
        return instances

    async_bulk_create = async_form(bulk_create)

    # -- read --------------------------------------------------------------------------

    def get_by_id(self, session: Session, id: Any, *, user_id: Any = None) -> ModelT | None:
        """The row with this key; None if it is missing or the acting user does not own it."""
        scope = self._scope(session, user_id)
        with self._translating():
            if not scope:
                return session.get(self.model, self._key(id))
            return session.scalars(self._by_key_statement(id, scope)).first()

    async_get_by_id = async_form(get_by_id)

    def get_by_criteria(self, session: Session, /, **criteria: Any) -> builtins.list[ModelT]:
        """Every row matching all criteria (``field=v``, ``field__gte=v``, ...)."""
        scope = self._scope(session, self._acting(criteria))
        statement = self._select_statement(criteria, scope=scope)
        with self._translating():
            return builtins.list(session.scalars(statement))

    async_get_by_criteria = async_form(get_by_criteria)

    def list_by_criteria(self, session: Session, /, **criteria: Any) -> builtins.list[ModelT]:
        """Alias of :meth:`get_by_criteria`, the name BuffetBot's examples use."""
        return self.get_by_criteria(session, **criteria)

    async_list_by_criteria = async_form(list_by_criteria)

    def get_one_by_criteria(self, session: Session, /, **criteria: Any) -> ModelT | None:
        """The first matching row (in primary-key order), or None."""
        scope = self._scope(session, self._acting(criteria))
        statement = self._select_statement(criteria, limit=1, scope=scope)
        with self._translating():
            return session.scalars(statement).first()

    async_get_one_by_criteria = async_form(get_one_by_criteria)

    def list(
        self,
        session: Session,
        /,
        *,
        offset: int = 0,
        limit: int | None = None,
        order_by: str | Iterable[str] | None = None,
        **criteria: Any,
    ) -> builtins.list[ModelT]:
        """A page of rows: ``order_by="-created_at"`` sorts descending."""
        scope = self._scope(session, self._acting(criteria))
        statement = self._select_statement(
            criteria, order_by=order_by, offset=offset, limit=limit, scope=scope
        )
        with self._translating():
            return builtins.list(session.scalars(statement))

    async_list = async_form(list)

    def count(self, session: Session, /, **criteria: Any) -> int:
        scope = self._scope(session, self._acting(criteria))
        statement = self._count_statement(criteria, scope)
        with self._translating():
            return session.scalar(statement) or 0

    async_count = async_form(count)

    def exists(self, session: Session, /, **criteria: Any) -> bool:
        scope = self._scope(session, self._acting(criteria))
        statement = self._exists_statement(criteria, scope)
        with self._translating():
            return bool(session.scalar(statement))

    async_exists = async_form(exists)

    # -- update / delete ---------------------------------------------------------------

    def _owned_instance(
        self, session: Session, instance_or_id: ModelT | Any, user_id: Any
    ) -> ModelT:
        """The row to change, read (or, for an object, checked) within the acting user's rows."""
        scope = self._scope(session, user_id, writing=True)
        if not isinstance(instance_or_id, self.model):
            with self._translating():
                if scope:
                    found = session.scalars(self._by_key_statement(instance_or_id, scope)).first()
                else:
                    found = session.get(self.model, self._key(instance_or_id))
            return self._missing(found, self.model, instance_or_id)
        if scope:
            with self._translating():
                owned = session.scalar(self._owned_statement_of(instance_or_id, scope))
            if not owned:
                raise NotFoundError(self.model.__name__, getattr(instance_or_id, "id", None))
        return instance_or_id

    def update(
        self,
        session: Session,
        instance_or_id: ModelT | Any,
        /,
        *,
        user_id: Any = None,
        **values: Any,
    ) -> ModelT:
        """Change only the given fields; NotFoundError for an unknown id or another user's row."""
        return self._change(session, self._owned_instance(session, instance_or_id, user_id), values)

    async_update = async_form(update)

    def _change(self, session: Session, instance: ModelT, values: Mapping[str, Any]) -> ModelT:
        """Set the fields and write them (the row's ownership is already checked)."""
        self._apply(instance, values)
        with self._writing(instance):
            self._attach(session, instance)
            session.flush()
        return instance

    def delete(
        self, session: Session, instance_or_id: ModelT | Any, *, user_id: Any = None
    ) -> bool:
        """Delete one row (children go by ON DELETE CASCADE).

        False if it was not there, or is not the acting user's to delete.
        """
        scope = self._scope(session, user_id, writing=True)
        if isinstance(instance_or_id, self.model):
            if scope and not session.scalar(self._owned_statement_of(instance_or_id, scope)):
                return False
            return self._remove(session, instance_or_id)
        statement = self._delete_statement(instance_or_id, scope)
        with self._translating():
            return bool(session.execute(statement).rowcount)  # type: ignore[attr-defined]

    async_delete = async_form(delete)

    def _remove(self, session: Session, instance: ModelT) -> bool:
        with self._writing(instance):
            session.delete(instance)
            session.flush()
        return True


_guard_public_methods(BaseRepository)


def _autoflushes(session: Session) -> bool:
    """Whether a query would flush first: autoflush on, and something to flush."""
    return session.autoflush and bool(session.new or session.dirty or session.deleted)
