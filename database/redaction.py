"""Secrets stay out of the SQL log.

``DB_ECHO=true`` logs statements without their parameters (SQLAlchemy's
``hide_parameters``, which keeps them out of error messages as well).
``DB_ECHO=debug`` logs parameters and result rows, with the value of every
column marked ``info={"secret": True}`` (and anything shaped like a password
hash) shown as ``'[redacted]'``.

A ``before_cursor_execute`` listener notes which statement the parameters about
to be logged belong to; from its compiled form (bind names and positions of
secret columns, and their values) a filter on SQLAlchemy's engine logger
rewrites the parameter records, and redacts row records from the result's
columns, before any handler formats them. A ``handle_error`` listener does the
same to the parameters in error messages. Only copies are redacted: what the
driver receives is never touched. A record the filter cannot make safe is
withheld, not passed on.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Column, Engine, MetaData, Row, event, exc
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.engine.interfaces import ExecutionContext
from sqlalchemy.log import InstanceLogger
from sqlalchemy.sql.compiler import Compiled, SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.util import _repr_params, _repr_row, find_tables

REDACTED = "[redacted]"
WITHHELD = "[SQL log record withheld: its values could not be redacted]"

# argon2, bcrypt, scrypt, pbkdf2 and crypt(3) hashes as passlib, Django and
# werkzeug write them: the fallback for values no column vouches for.
_PASSWORD_HASH = re.compile(
    r"\$(?:argon2(?:id|i|d)|2[abxy]?|scrypt|pbkdf2[\w-]*|[1567]|y|gy)\$"
    r"|(?:argon2|bcrypt(?:_sha256)?|scrypt|pbkdf2_\w+)\$"
    r"|(?:scrypt|pbkdf2):[\w:]*\$"
)
# Bind names SQLAlchemy derives from a column key: ``key_1`` (anonymous),
# ``key_m0`` (multi-VALUES), ``key__0`` (insertmanyvalues batches).
_DERIVED_SUFFIX = re.compile(r"(?:__\d+|_m?\d+)+$")


def engine_log_options(echo: bool | Literal["debug"]) -> dict[str, Any]:
    """``create_engine`` keywords for a ``DB_ECHO`` setting: parameters are shown in debug only."""
    return {"echo": echo, "hide_parameters": echo != "debug"}


def install(engine: Engine, metadata: MetaData | None = None) -> None:
    """Redact the SQL log of ``engine`` (the sync one, or an async engine's ``sync_engine``).

    The secret columns of ``metadata`` are known from the start; those of any
    other table are learnt from the first statement that uses it.
    """
    if metadata is not None:
        _learn(metadata.tables.values())
    event.listen(engine, "before_cursor_execute", _note_statement)
    event.listen(engine, "after_cursor_execute", _forget_statement)
    event.listen(engine, "handle_error", _redact_error)
    logger = engine.logger.logger if isinstance(engine.logger, InstanceLogger) else engine.logger
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def looks_like_password_hash(value: object) -> bool:
    if isinstance(value, bytes):
        value = value[:40].decode("latin-1")
    return isinstance(value, str) and _PASSWORD_HASH.match(value) is not None


# -- which columns, names and values are secret -------------------------------------

_lock = threading.Lock()
_secret_names: frozenset[str] = frozenset()  # of secret columns, as binds and results name them


def _learn(tables: Iterable[Any]) -> None:
    global _secret_names
    names = {
        name
        for table in tables
        for column in getattr(table, "columns", ())
        if isinstance(column, Column) and column.info.get("secret")
        for name in (column.key, column.name, f"{table.name}_{column.name}")
    }
    if not names <= _secret_names:
        with _lock:
            _secret_names = _secret_names | names


def is_secret_name(name: object) -> bool:
    """Whether a bind parameter or result column of this name carries a secret column."""
    if not isinstance(name, str):
        return False
    return name in _secret_names or _DERIVED_SUFFIX.sub("", name) in _secret_names


@dataclass(frozen=True)
class Secrets:
    """What marks a value of one statement's parameters as secret."""

    positions: frozenset[int] = frozenset()
    width: int | None = None  # positions hold for parameter tuples of this length only
    values: frozenset[Any] = frozenset()

    def hides(self, value: object) -> bool:
        try:
            if value in self.values:
                return True
        except TypeError:  # unhashable
            pass
        return looks_like_password_hash(value)


_positions: weakref.WeakKeyDictionary[Compiled, frozenset[int]] = weakref.WeakKeyDictionary()


def _secret_positions(compiled: SQLCompiler) -> frozenset[int]:
    """Positions of the secret binds in ``?`` / ``$1`` parameter tuples, learning its tables."""
    known = _positions.get(compiled)
    if known is None:
        if compiled.statement is not None:
            _learn(find_tables(compiled.statement, include_crud=True, check_columns=True))
        order = compiled.positiontup or ()
        known = frozenset(i for i, name in enumerate(order) if is_secret_name(name))
        _positions[compiled] = known
    return known


def secrets_of(context: ExecutionContext | None) -> Secrets:
    """The secret positions and values of a statement about to run."""
    if not isinstance(context, DefaultExecutionContext):
        return Secrets()
    compiled = context.compiled
    if not isinstance(compiled, SQLCompiler):
        return Secrets()
    positions = _secret_positions(compiled)
    width = len(compiled.positiontup or ())
    values: set[Any] = set()
    # Before and after the bind processors: the values as given and as sent.
    sets: list[Any] = [*context.compiled_parameters, *context.parameters]
    for params in sets:
        if isinstance(params, Mapping):
            values.update(v for k, v in params.items() if is_secret_name(k))
        elif isinstance(params, list | tuple) and len(params) == width:
            values.update(params[i] for i in positions)
    return Secrets(positions, width or None, frozenset(v for v in values if _matchable(v)))


def _matchable(value: object) -> bool:
    return isinstance(value, str | bytes) and len(value) > 0


def redact_parameters(params: Any, secrets: Secrets, *, ismulti: bool | None) -> Any:
    """A copy of ``params`` (one set or, with ``ismulti``, a list of them), secrets replaced."""
    if ismulti and isinstance(params, list | tuple):
        return type(params)(redact_parameters(p, secrets, ismulti=False) for p in params)
    if isinstance(params, Mapping):
        return {
            k: REDACTED if is_secret_name(k) or secrets.hides(v) else v for k, v in params.items()
        }
    if isinstance(params, list | tuple):
        by_position = secrets.positions if len(params) == secrets.width else frozenset()
        return type(params)(
            REDACTED if i in by_position or secrets.hides(v) else v for i, v in enumerate(params)
        )
    return REDACTED if secrets.hides(params) else params


def redact_row(row: Any) -> tuple[Any, ...]:
    """A result row as a tuple, the values of secret columns replaced."""
    values = tuple(row)
    hidden: set[int] = set()
    if isinstance(row, Row):
        hidden.update(i for i, name in enumerate(row._fields) if is_secret_name(name))
        mapping = row._mapping
        for column in _secret_result_columns(row):
            try:
                secret = mapping[column]
            except (KeyError, exc.InvalidRequestError):  # not a key here after all, or ambiguous
                continue
            if _matchable(secret):  # equal text is the same secret wherever it stands
                hidden.update(i for i, v in enumerate(values) if v == secret)
            elif secret is not None:
                hidden.update(i for i, v in enumerate(values) if v is secret)
    return tuple(
        REDACTED if i in hidden or looks_like_password_hash(v) else v for i, v in enumerate(values)
    )


def _secret_result_columns(row: Row[Any]) -> list[ColumnElement[Any]]:
    """The columns, labels and aliases of a result that stand for a secret column.

    Read from the result's key map (SQLAlchemy's own, not public API): a change
    there makes the row records withheld, never shown unredacted.
    """
    return [
        key
        for key in row._parent._keymap
        if isinstance(key, ColumnElement)
        and any(getattr(c, "info", {}).get("secret") for c in key.proxy_set)
    ]


def _redact_values(value: Any) -> Any:
    """Hash-shaped values replaced at any depth: for records of a shape not known here."""
    if isinstance(value, Mapping):
        return {k: _redact_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_values(v) for v in value)
    return REDACTED if looks_like_password_hash(value) else value


# -- the statements in flight ---------------------------------------------------------


class _InFlight:
    """Statements between ``before_cursor_execute`` and their end, by their parameters.

    Keyed by the identity of the parameters object, which SQLAlchemy hands to
    the event, the log record and the error alike. Several may be in flight in
    one thread: async tasks switch while the driver works.
    """

    LIMIT = 1024  # a statement that never ends (a killed greenlet) is dropped at last

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._statements: dict[int, tuple[Any, Any, list[Secrets]]] = {}

    def note(self, parameters: Any, context: Any) -> None:
        with self._lock:
            if len(self._statements) >= self.LIMIT:
                del self._statements[next(iter(self._statements))]
            self._statements[id(parameters)] = (parameters, context, [])

    def forget(self, parameters: Any) -> None:
        with self._lock:
            entry = self._statements.get(id(parameters))
            if entry is not None and entry[0] is parameters:
                del self._statements[id(parameters)]

    def secrets_for(self, parameters: Any) -> Secrets:
        entry = self._statements.get(id(parameters))
        if entry is None or entry[0] is not parameters:
            return Secrets()  # not a statement in flight: judge the values alone
        _, context, cached = entry
        if not cached:
            cached.append(secrets_of(context))
        return cached[0]


_in_flight = _InFlight()


def _note_statement(
    _conn: Any, _cursor: Any, _statement: str, parameters: Any, context: Any, _many: bool
) -> None:
    _in_flight.note(parameters, context)


def _forget_statement(
    _conn: Any, _cursor: Any, _statement: str, parameters: Any, _context: Any, _many: bool
) -> None:
    _in_flight.forget(parameters)


def _redact_error(context: ExceptionContext) -> None:
    error = context.sqlalchemy_exception
    try:
        if isinstance(error, exc.StatementError) and not error.hide_parameters and error.params:
            secrets = _in_flight.secrets_for(error.params)
            error.params = redact_parameters(error.params, secrets, ismulti=error.ismulti)
    except Exception:
        if isinstance(error, exc.StatementError):
            error.hide_parameters = True
    finally:
        _in_flight.forget(context.parameters)


class RedactingFilter(logging.Filter):
    """Rewrites SQLAlchemy's parameter and row records; withholds one it cannot make safe."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.args, tuple) or not record.args:
            return True
        try:
            record.args = tuple(self._redact(arg) for arg in record.args)
        except Exception:
            record.msg, record.args = WITHHELD, ()
        return True

    @staticmethod
    def _redact(arg: Any) -> Any:
        if isinstance(arg, _repr_params):
            shown = copy.copy(arg)
            shown.params = redact_parameters(
                arg.params, _in_flight.secrets_for(arg.params), ismulti=arg.ismulti
            )
            return shown
        if isinstance(arg, _repr_row):
            shown_row = copy.copy(arg)
            shown_row.row = redact_row(arg.row)  # type: ignore[assignment]
            return shown_row
        return _redact_values(arg)  # statement text, timings, column names; or a new shape


_FILTER = RedactingFilter()
