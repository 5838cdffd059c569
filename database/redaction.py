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
columns, before any handler formats them (and aiosqlite's own records of each
cursor call). A ``handle_error`` listener does the
same to the parameters in error messages. Only copies are redacted: what the
driver receives is never touched. A record the filter cannot make safe is
withheld, not passed on.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import logging
import re
import threading
import uuid
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
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
# werkzeug write them: the fallback for values no column vouches for. Found
# anywhere in a text (a record as text, a JSON document), and matched to their
# end so that only the hash is replaced: a known prefix, then ``$``-separated
# fields of base64 or hex, or of parameters (``m=65536,t=3,p=4``, whose commas
# end no field).
_HASH_PREFIX = (
    r"\$(?:argon2(?:id|i|d)|2[abxy]?|scrypt|pbkdf2[\w-]*|bcrypt-sha256|[1567]|y|gy)\$"
    r"|(?<![\w$])(?:argon2|bcrypt(?:_sha256)?|scrypt|pbkdf2_\w+)\$"
    r"|(?<![\w$])(?:scrypt|pbkdf2):[\w:]*\$"
)
_HASH_FIELD = r"(?:[a-z]+=[\w.+/-]*(?:,[a-z]+=[\w.+/-]*)*|[\w./+=-]*)"
_PASSWORD_HASH = re.compile(rf"(?:{_HASH_PREFIX}){_HASH_FIELD}(?:\${_HASH_FIELD})*")
# Known secrets shorter than this are not looked for inside other text.
_MIN_SECRET_IN_TEXT = 8
# Deeper than this, a parameter or result value is not searched but redacted whole.
_MAX_DEPTH = 64
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
    # aiosqlite logs each cursor call, its parameters included, at DEBUG.
    for each in (logger, logging.getLogger("aiosqlite")):
        if _FILTER not in each.filters:
            each.addFilter(_FILTER)


def looks_like_password_hash(value: object) -> bool:
    """Whether ``value`` (text or bytes) holds something shaped like a password hash."""
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value).decode("latin-1")
    return isinstance(value, str) and _PASSWORD_HASH.search(value) is not None


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

    def holds(self, value: object) -> bool:
        """Whether ``value`` is one of the secret values itself."""
        try:
            return value in self.values
        except TypeError:  # unhashable
            return False

    def hides(self, value: object) -> bool:
        return self.holds(value) or looks_like_password_hash(value)

    def scrub(self, value: Any, depth: int = 0) -> Any:
        """A copy of ``value`` fit for the log, searched at any depth: a secret value,
        the value of a dict key that names a secret column, and bytes holding a hash
        become ``'[redacted]'``; in text, hash-shaped parts and known secrets are
        replaced (the rest of the text stays); a JSON document in text is searched as
        one. What is too deep to search is redacted whole."""
        if value is None or isinstance(value, bool | int | float):
            return value
        if depth > _MAX_DEPTH or self.holds(value):
            return REDACTED
        if isinstance(value, str):
            scrubbed = self._scrub_text(value, depth)
            return value if scrubbed == value else scrubbed  # a str subclass stays itself
        if isinstance(value, bytes | bytearray | memoryview):
            return REDACTED if looks_like_password_hash(value) else value
        if isinstance(value, Mapping) or _is_record(value):
            return {
                key: REDACTED if is_secret_name(key) else self.scrub(item, depth + 1)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            items = [self.scrub(item, depth + 1) for item in value]
            return items if isinstance(value, list) else tuple(items)
        if _is_plain(value):
            return value
        shown = repr(value)  # another driver's type: what the log would show of it
        return value if self._scrub_text(shown, depth) == shown else REDACTED

    def _scrub_text(self, text: str, depth: int) -> str:
        for secret in self.values:
            if isinstance(secret, str) and len(secret) >= _MIN_SECRET_IN_TEXT:
                text = text.replace(secret, REDACTED)
        if "$" in text:
            text = _PASSWORD_HASH.sub(REDACTED, text)
        if text[:1] in ("{", "[") and any(name in text for name in _secret_names):
            text = self._scrub_json(text, depth)
        return text

    def _scrub_json(self, text: str, depth: int) -> str:
        """JSON in text (SQLite's json_object): the values under secret keys redacted."""
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            return text
        scrubbed = self.scrub(document, depth + 1)
        return text if scrubbed == document else json.dumps(scrubbed)


def _is_record(value: object) -> bool:
    """A driver's record (asyncpg's composite values): named fields, read as a dict."""
    return callable(getattr(value, "items", None)) and callable(getattr(value, "keys", None))


def _is_plain(value: object) -> bool:
    """Values whose repr holds nothing but what they are."""
    return isinstance(value, Decimal | dt.date | dt.time | dt.timedelta | uuid.UUID | Enum)


_NO_SECRETS = Secrets()
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
        return {k: REDACTED if is_secret_name(k) else secrets.scrub(v) for k, v in params.items()}
    if isinstance(params, list | tuple):
        by_position = secrets.positions if len(params) == secrets.width else frozenset()
        return type(params)(
            REDACTED if i in by_position else secrets.scrub(v) for i, v in enumerate(params)
        )
    return secrets.scrub(params)


def redact_row(row: Any) -> tuple[Any, ...]:
    """A result row as a tuple, the values of secret columns replaced."""
    values = tuple(row)
    hidden: set[int] = set()
    secrets: set[Any] = set()  # equal text is the same secret wherever it stands
    if isinstance(row, Row):
        hidden.update(i for i, name in enumerate(row._fields) if is_secret_name(name))
        secrets.update(v for i, v in enumerate(values) if i in hidden and _matchable(v))
        mapping = row._mapping
        for column in _secret_result_columns(row):
            try:
                secret = mapping[column]
            except (KeyError, exc.InvalidRequestError):  # not a key here after all, or ambiguous
                continue
            if _matchable(secret):
                secrets.add(secret)
            elif secret is not None:
                hidden.update(i for i, v in enumerate(values) if v is secret)
    found = Secrets(values=frozenset(secrets))
    return tuple(REDACTED if i in hidden else found.scrub(v) for i, v in enumerate(values))


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
    return _NO_SECRETS.scrub(value)


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
        if isinstance(arg, functools.partial):  # aiosqlite's "executing %s": a cursor call
            many = getattr(arg.func, "__name__", "") == "executemany"
            shown_args = [
                redact_parameters(a, _in_flight.secrets_for(a), ismulti=many)
                if isinstance(a, Mapping | list | tuple)
                else _redact_values(a)
                for a in arg.args
            ]
            return functools.partial(arg.func, *shown_args, **_redact_values(arg.keywords))
        return _redact_values(arg)  # statement text, timings, column names; or a new shape


_FILTER = RedactingFilter()
