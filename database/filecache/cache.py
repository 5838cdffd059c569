"""Drop-in replacements for BuffetBot's old ``Cache``: on files, in the database, or both.

:class:`FileCache` (the files themselves), :class:`DatabaseCache` (rows of
``market_data_cache`` with the data type ``file_cache``) and
:class:`DualWriteCache` (both, for the move) answer exactly as the old cache
did on its public interface, which its callers rely on. They never raise into
an old caller: every failure is logged (``logger.error``) and answered with
None or False. The typed API that raises stays in the repositories
(:class:`~database.repositories.MarketDataRepository`).

=====================================  ==================================================
Clause                                 Behaviour (the same for all three)
=====================================  ==================================================
``get(key)``                           ``expiration`` is the cache's ``default_expiration``
                                       (3600 s unless given on construction), applied at
                                       read time whatever ``set`` was given
``get(key, expiration)``               a miss (None) when ``now - timestamp >
                                       expiration``: ``expiration=0`` always misses
expired entry found by ``get``         deleted, and None
missing key                            None
``get`` fails (bad key, unreadable     logged, None
or unsafe file, database down)
``set(key, data, expiration=None)``    stores ``data``, the time, and ``expiration or
                                       default_expiration``; True
``set`` fails (unpicklable or          logged, False; nothing is stored
unstorable value, bad expiration,
bad key, database down)
``delete(key)``                        True, whether or not the key existed; False (logged)
                                       on error
``clear()``                            True, also when empty; False (logged) on error
``get_stats()``                        ``{"type", "size", "items", "expired"}``: ``type`` is
                                       ``"file"``, ``"database"`` or ``"dual"``; ``size`` in
                                       bytes (files: their sizes; database: the stored
                                       payloads); ``expired`` by each entry's own
                                       expiration; ``{}`` (logged) on error
``cache_result(expiration=None)``      key ``make_key(func.__name__, *args, **kwargs)``;
                                       ``get(key, expiration)``, on None call and ``set``
=====================================  ==================================================

:class:`DualWriteCache` writes to both caches (``set`` is True when both
stored it); reads try the database, then the file, copying a fresh file entry
into the database with its own time and expiration; ``delete`` and ``clear``
act on both (True when both succeeded); its ``get_stats`` counts keys (a key in
both caches is one item, expired when no copy of it is fresh) and adds the
bytes of both.

Keys are the old cache's: the MD5 hex digest of ``"func_name|arg1|...|k:v"``
(see :func:`make_key`). Time is ``time.time()`` of this module.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

from sqlalchemy import LargeBinary, Text, cast, delete, func, select

from database import codec
from database.connection import DatabaseManager
from database.exceptions import ValidationError
from database.filecache.files import (
    DEFAULT_EXPIRATION,
    SUFFIX,
    CacheFile,
    CacheFileError,
    CacheFileMissingError,
    read_cache_file,
    write_cache_file,
)
from database.filecache.folder import clear_entries, file_sizes, open_folder, remove_entry
from database.filecache.limits import DEFAULT_MAX_ALLOCATION, DEFAULT_MAX_FILE_SIZE, PickleLimits
from database.models import DataType, MarketDataCache
from database.models.base import utcnow
from database.monitoring import market_data_cache as statistics
from database.repositories import MarketDataRepository
from database.repositories.market_data import ttl_delta
from database.repositories.upsert import native_insert
from database.session import get_database
from database.transactions import begin_write

logger = logging.getLogger(__name__)

# Entries from the old cache are not about one ticker: they all carry this one.
FILE_CACHE_TICKER = "FILECACHE"
_repository = MarketDataRepository()

P = ParamSpec("P")
R = TypeVar("R")


def make_key(func_name: str, *args: Any, **kwargs: Any) -> str:
    """The old cache's key for a call: MD5 of ``"func_name|arg1|...|k:v"``."""
    parts = [func_name, *(str(a) for a in args), *(f"{k}:{v}" for k, v in sorted(kwargs.items()))]
    return hashlib.md5("|".join(parts).encode(), usedforsecurity=False).hexdigest()


def check_key(key: str) -> str:
    """``key`` if it is a key of the old cache, which is a file name (the same rule for
    the three caches, so that an entry can move between them); else ValidationError."""
    if not isinstance(key, str) or not key or key in (".", ".."):
        raise ValidationError("key", key, "must be a non-empty file name")
    if any(bad in key for bad in ("/", "\\", "\0")) or Path(key).is_absolute():
        raise ValidationError("key", key, "must not name another folder (no / or \\)")
    try:
        too_long = len(os.fsencode(key + SUFFIX)) > 255
    except UnicodeError:
        raise ValidationError("key", key, "must be encodable as a file name") from None
    if too_long:
        raise ValidationError("key", key, "is too long for a file name")
    return key


def database_key(key: str) -> str:
    """The market_data_cache key under which an old-cache entry is stored."""
    return _repository.make_cache_key(
        FILE_CACHE_TICKER, DataType.FILE_CACHE, {"key": check_key(key)}
    )


def file_entry_row(entry: CacheFile) -> dict[str, Any]:
    """The market_data_cache row of an old-cache entry, with its own time and expiration;
    ValidationError when the codec refuses its data."""
    now = utcnow()
    return {
        "cache_key": database_key(entry.key),
        "ticker": FILE_CACHE_TICKER,
        "data_type": DataType.FILE_CACHE,
        "data": {"payload": codec.encode(entry.data)},
        "data_source": "file_cache",
        "parameters": {"key": entry.key},
        "cached_at": entry.cached_at,
        "expires_at": entry.expires_at,
        "created_at": now,
        "updated_at": now,
    }


def _older_than(timestamp: float, expiration: float) -> bool:
    """The old cache's test of an entry written at ``timestamp`` (epoch seconds)."""
    return time.time() - timestamp > expiration


# Per key: (bytes held, expired by the entry's own expiration; None when unreadable).
KeyStats = dict[str, tuple[int, bool | None]]


def _stats(kind: str, keys: KeyStats) -> dict[str, Any]:
    return {
        "type": kind,
        "size": sum(size for size, _ in keys.values()),
        "items": len(keys),
        "expired": sum(1 for _, expired in keys.values() if expired),
    }


class FileCache:
    """The old cache itself: one safe-to-read pickle per key in ``directory``.

    Nothing reaches outside the folder (see :mod:`database.filecache.folder`):
    a key is a file name (one naming another folder is logged and answered as
    a failure), entries that are symbolic links are never followed (read as
    missing, replaced on ``set``, removed themselves on ``delete`` and
    ``clear``), and a file over ``max_file_size`` or whose pickle would
    allocate more than ``max_allocation`` bytes reads as missing.
    """

    def __init__(
        self,
        directory: str | Path = "buffetbot/cache",
        *,
        default_expiration: float = DEFAULT_EXPIRATION,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        max_allocation: int = DEFAULT_MAX_ALLOCATION,
    ):
        self.directory = Path(directory)
        self.default_expiration = default_expiration
        self.limits = PickleLimits(max_file_size=max_file_size, max_allocation=max_allocation)

    @staticmethod
    def _name(key: str) -> str:
        """The key's file name in the cache folder: a key is a file name, nothing more."""
        return check_key(key) + SUFFIX

    def read(self, key: str) -> CacheFile | None:
        """The key's entry, fresh or not; None if missing, unreadable, unsafe or too large.
        Raises ValidationError for a key that is not a file name."""
        name = self._name(key)
        try:
            with open_folder(self.directory) as folder:
                return read_cache_file(folder, name, self.limits)
        except (OSError, CacheFileError):
            return None

    def fresh_entry(self, key: str, expiration: float | None = None) -> CacheFile | None:
        """What ``get`` reads: the entry, or None (an expired one is deleted). Raises."""
        limit = self.default_expiration if expiration is None else expiration
        name = self._name(key)
        try:
            with open_folder(self.directory) as folder:
                try:
                    entry = read_cache_file(folder, name, self.limits)
                except CacheFileMissingError:
                    return None
                except CacheFileError as error:
                    logger.error("file cache entry %r unusable: %s", key, error)
                    return None
                if _older_than(entry.timestamp, limit):
                    remove_entry(folder, name)
                    return None
                return entry
        except FileNotFoundError:  # no folder yet: nothing cached
            return None

    def get(self, key: str, expiration: float | None = None) -> Any:
        try:
            entry = self.fresh_entry(key, expiration)
        except Exception as error:
            logger.error("error retrieving %r from the file cache: %s", key, error)
            return None
        return None if entry is None else entry.data

    def remaining(self, key: str) -> float | None:
        """Seconds the entry stays fresh by its own expiration, or None if missing or unreadable."""
        entry = self.read(key)
        return None if entry is None else entry.timestamp + entry.expiration - time.time()

    def set(self, key: str, data: Any, expiration: float | None = None) -> bool:
        """False (logged) for what the database cache would refuse too, such as an
        ``expiration`` out of range: the file must stay readable, and its entry importable."""
        try:
            name = self._name(key)
            lifetime = ttl_delta(expiration or self.default_expiration)
            codec.encode(data)  # what the import (and the database cache) could not store
            with open_folder(self.directory, create=True) as folder:
                write_cache_file(
                    folder,
                    name,
                    data,
                    timestamp=time.time(),
                    expiration=lifetime.total_seconds(),
                )
        except Exception as error:
            logger.error("error storing %r in the file cache: %s", key, error)
            return False
        return True

    def delete(self, key: str) -> bool:
        try:
            name = self._name(key)
            with open_folder(self.directory) as folder:
                remove_entry(folder, name)
        except FileNotFoundError:  # no folder: nothing to delete
            return True
        except Exception as error:
            logger.error("error deleting %r from the file cache: %s", key, error)
            return False
        return True

    def clear(self) -> bool:
        try:
            with open_folder(self.directory) as folder:
                clear_entries(folder, SUFFIX)
        except FileNotFoundError:
            return True
        except Exception as error:
            logger.error("error clearing the file cache: %s", error)
            return False
        return True

    def key_stats(self) -> KeyStats:
        """Every regular ``*.cache`` file (links not followed) by key. Raises."""
        now = time.time()
        result: KeyStats = {}
        try:
            with open_folder(self.directory) as folder:
                for name, size in file_sizes(folder, SUFFIX).items():
                    try:
                        entry = read_cache_file(folder, name, self.limits)
                    except CacheFileError:
                        result[name.removesuffix(SUFFIX)] = (size, None)
                        continue
                    result[entry.key] = (size, now - entry.timestamp > entry.expiration)
        except FileNotFoundError:
            return {}
        return result

    def get_stats(self) -> dict[str, Any]:
        """An unreadable file counts in ``items`` and ``size``, never in ``expired``."""
        try:
            return _stats("file", self.key_stats())
        except Exception as error:
            logger.error("error getting file cache stats: %s", error)
            return {}


class DatabaseCache:
    """The old cache's interface, stored in ``market_data_cache`` (data type ``file_cache``).

    Each row keeps its own ``expires_at`` (``set``'s expiration): ``cleanup``
    deletes rows past it, and ``get_stats`` counts them as expired; ``get``
    itself, like the old cache, only asks how old the entry is.
    """

    def __init__(
        self,
        manager: DatabaseManager | None = None,
        *,
        default_expiration: float = DEFAULT_EXPIRATION,
    ):
        self._manager = manager
        self.default_expiration = default_expiration

    @property
    def manager(self) -> DatabaseManager:
        return self._manager or get_database()

    def _fresh(self, key: str, expiration: float | None) -> tuple[bool, Any]:
        limit = self.default_expiration if expiration is None else expiration
        cache_key = database_key(key)
        statement = select(MarketDataCache.data, MarketDataCache.cached_at).where(
            MarketDataCache.cache_key == cache_key
        )
        with self.manager.get_session() as session:
            row = session.execute(statement).first()
        if row is None:
            return False, None
        if _older_than(row.cached_at.timestamp(), limit):
            with self.manager.get_session() as session:
                begin_write(session)
                session.execute(  # unless rewritten meanwhile
                    delete(MarketDataCache).where(
                        MarketDataCache.cache_key == cache_key,
                        MarketDataCache.cached_at == row.cached_at,
                    )
                )
            return False, None
        return True, codec.decode(row.data["payload"])

    def get(self, key: str, expiration: float | None = None) -> Any:
        try:
            fresh, value = self._fresh(key, expiration)
        except Exception as error:
            logger.error("error retrieving %r from the database cache: %s", key, error)
            fresh, value = False, None
        statistics.record(DataType.FILE_CACHE.value, "hits" if fresh else "misses")
        return value

    def set(self, key: str, data: Any, expiration: float | None = None) -> bool:
        try:
            check_key(key)
            with self.manager.get_session() as session:
                _repository.cache_market_data(
                    session,
                    FILE_CACHE_TICKER,
                    DataType.FILE_CACHE,
                    data,
                    parameters={"key": key},
                    ttl=expiration or self.default_expiration,
                    data_source="file_cache",
                )
        except Exception as error:
            logger.error("error storing %r in the database cache: %s", key, error)
            return False
        return True

    def store_file_entry(self, entry: CacheFile) -> None:
        """Copy an old-cache entry in with its own time and expiration, unless the key is
        already there. Raises (ValidationError when the codec refuses its data)."""
        row = file_entry_row(entry)
        statement = native_insert(self.manager.backend, MarketDataCache).on_conflict_do_nothing(
            index_elements=["cache_key"]
        )
        with self.manager.get_session() as session:
            begin_write(session)
            session.execute(statement, [row])

    def delete(self, key: str) -> bool:
        try:
            with self.manager.get_session() as session:
                begin_write(session)
                session.execute(
                    delete(MarketDataCache).where(MarketDataCache.cache_key == database_key(key))
                )
        except Exception as error:
            logger.error("error deleting %r from the database cache: %s", key, error)
            return False
        return True

    def clear(self) -> bool:
        try:
            with self.manager.get_session() as session:
                _repository.invalidate(session, data_type=DataType.FILE_CACHE)
        except Exception as error:
            logger.error("error clearing the database cache: %s", error)
            return False
        return True

    def _payload_size(self) -> Any:
        """The stored payload's size in bytes, as SQL (JSONB as text on PostgreSQL)."""
        if self.manager.backend == "postgresql":
            return func.octet_length(cast(MarketDataCache.data, Text))
        return func.length(cast(MarketDataCache.data, LargeBinary))

    def key_stats(self) -> KeyStats:
        """Every old-cache row by its old key. Raises."""
        now = dt.datetime.fromtimestamp(time.time(), dt.UTC)
        statement = select(
            MarketDataCache.parameters, self._payload_size(), MarketDataCache.expires_at
        ).where(MarketDataCache.data_type == DataType.FILE_CACHE)
        with self.manager.get_session() as session:
            rows = session.execute(statement).all()
        return {
            str((parameters or {}).get("key")): (int(size or 0), expires_at < now)
            for parameters, size, expires_at in rows
        }

    def get_stats(self) -> dict[str, Any]:
        now = dt.datetime.fromtimestamp(time.time(), dt.UTC)
        statement = select(
            func.count(),
            func.coalesce(func.sum(self._payload_size()), 0),
            func.count().filter(MarketDataCache.expires_at < now),
        ).where(MarketDataCache.data_type == DataType.FILE_CACHE)
        try:
            with self.manager.get_session() as session:
                items, size, expired = session.execute(statement).one()
        except Exception as error:
            logger.error("error getting database cache stats: %s", error)
            return {}
        return {"type": "database", "size": int(size), "items": items, "expired": expired}


class DualWriteCache:
    """For the move: writes go to both caches; reads prefer the database and fall
    back to the files, copying what they find there into the database."""

    def __init__(self, database: DatabaseCache, files: FileCache) -> None:
        self.database = database
        self.files = files

    def get(self, key: str, expiration: float | None = None) -> Any:
        """The database's entry, else the file's, copied into the database (with the
        file's time and expiration) unless expired by its own expiration.

        A file entry the database refuses (a value that contains itself or is
        nested too deeply: what the import rejects) reads as missing. Each
        cache deletes its own expired entry.
        """
        value = self.database.get(key, expiration)
        if value is not None:
            return value
        try:
            entry = self.files.fresh_entry(key, expiration)
        except Exception as error:
            logger.error("error retrieving %r from the file cache: %s", key, error)
            return None
        if entry is None:
            return None
        if not _older_than(entry.timestamp, entry.expiration):
            try:
                self.database.store_file_entry(entry)  # back-fill for the next reader
            except ValidationError as error:
                logger.warning("file cache entry %r cannot move to the database: %s", key, error)
                return None
            except Exception as error:  # the database is down: the file still answers
                logger.error("error copying %r into the database cache: %s", key, error)
        return entry.data

    def set(self, key: str, data: Any, expiration: float | None = None) -> bool:
        """Both or neither: the file first (it checks that the database could take the
        value too), then the database; if that fails, the file is removed again."""
        if not self.files.set(key, data, expiration):
            return False
        if self.database.set(key, data, expiration):
            return True
        self.files.delete(key)
        return False

    def delete(self, key: str) -> bool:
        deleted = self.database.delete(key)
        return self.files.delete(key) and deleted

    def clear(self) -> bool:
        cleared = self.database.clear()
        return self.files.clear() and cleared

    def get_stats(self) -> dict[str, Any]:
        """Keys in either cache: one item per key, expired when no copy is fresh."""
        try:
            database, files = self.database.key_stats(), self.files.key_stats()
        except Exception as error:
            logger.error("error getting dual cache stats: %s", error)
            return {}
        merged: KeyStats = {}
        for key in database.keys() | files.keys():
            copies = [stats[key] for stats in (database, files) if key in stats]
            merged[key] = (
                sum(size for size, _ in copies),
                all(expired is True for _, expired in copies),
            )
        return _stats("dual", merged)


class OldCache(Protocol):
    def get(self, key: str, expiration: float | None = None) -> Any: ...

    def set(self, key: str, data: Any, expiration: float | None = None) -> bool: ...


@functools.cache
def _default_cache() -> DatabaseCache:
    return DatabaseCache()


def cache_result(
    expiration: float | None = None, *, cache: OldCache | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """The old ``cache_result`` decorator: the result of ``func(*args, **kwargs)`` under
    ``make_key(func.__name__, *args, **kwargs)``, read with ``get(key, expiration)``
    and, on None, computed and stored with ``set(key, result, expiration)``.

    ``cache`` is any of the drop-ins; by default a :class:`DatabaseCache` on the
    application's database (``get_database()``).
    """

    def decorator(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            store = cache if cache is not None else _default_cache()
            key = make_key(function.__name__, *args, **kwargs)
            result: R | None = store.get(key, expiration)
            if result is None:
                result = function(*args, **kwargs)
                store.set(key, result, expiration)
            return result

        return wrapper

    return decorator
