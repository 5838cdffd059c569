"""Caches with the old file cache's interface: on files, in the database, or both.

``get(key, expiration=None)`` returns the value, or None when missing or older
than ``expiration`` seconds (else than the entry's own expiration);
``set(key, value, expiration=None)``; ``delete(key)``; ``clear()``;
``get_stats()``. Keys are the old cache's: the MD5 hex digest of
``"func_name|arg1|...|k:v"`` (see :func:`make_key`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select

from database import codec
from database.connection import DatabaseManager
from database.exceptions import ValidationError
from database.filecache.files import (
    DEFAULT_EXPIRATION,
    SUFFIX,
    CacheFile,
    CacheFileError,
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
from database.session import get_database

logger = logging.getLogger(__name__)

# Entries from the old cache are not about one ticker: they all carry this one.
FILE_CACHE_TICKER = "FILECACHE"
_repository = MarketDataRepository()


def make_key(func_name: str, *args: Any, **kwargs: Any) -> str:
    """The old cache's key for a call: MD5 of ``"func_name|arg1|...|k:v"``."""
    parts = [func_name, *(str(a) for a in args), *(f"{k}:{v}" for k, v in sorted(kwargs.items()))]
    return hashlib.md5("|".join(parts).encode(), usedforsecurity=False).hexdigest()


def database_key(key: str) -> str:
    """The market_data_cache key under which an old-cache entry is stored."""
    return _repository.make_cache_key(FILE_CACHE_TICKER, DataType.FILE_CACHE, {"key": key})


class FileCache:
    """The old cache itself: one safe-to-read pickle per key in ``directory``.

    Nothing reaches outside the folder (see :mod:`database.filecache.folder`):
    a key is a file name, entries that are symbolic links are never followed
    (read as missing, replaced on ``set``, removed themselves on ``delete`` and
    ``clear``), and a file over ``max_file_size`` or whose pickle would allocate
    more than ``max_allocation`` bytes reads as missing.
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
        return key + SUFFIX

    def read(self, key: str) -> CacheFile | None:
        """The key's entry, fresh or not; None if missing, unreadable, unsafe or too large."""
        name = self._name(key)
        try:
            with open_folder(self.directory) as folder:
                return read_cache_file(folder, name, self.limits)
        except (OSError, CacheFileError):
            return None

    def get(self, key: str, expiration: float | None = None) -> Any:
        entry = self.read(key)
        if entry is None or time.time() - entry.timestamp > (expiration or entry.expiration):
            return None
        return entry.data

    def remaining(self, key: str) -> float | None:
        """Seconds the entry stays fresh, or None if missing or unreadable."""
        entry = self.read(key)
        return None if entry is None else entry.timestamp + entry.expiration - time.time()

    def set(self, key: str, value: Any, expiration: float | None = None) -> None:
        """``ValidationError`` for an ``expiration`` the database cache would refuse too:
        the file must stay readable, and its entry importable."""
        name = self._name(key)
        lifetime = ttl_delta(expiration or self.default_expiration)
        with open_folder(self.directory, create=True) as folder:
            write_cache_file(
                folder,
                name,
                value,
                timestamp=time.time(),
                expiration=lifetime.total_seconds(),
            )

    def delete(self, key: str) -> bool:
        name = self._name(key)
        try:
            with open_folder(self.directory) as folder:
                return remove_entry(folder, name)
        except FileNotFoundError:
            return False

    def clear(self) -> int:
        try:
            with open_folder(self.directory) as folder:
                return clear_entries(folder, SUFFIX)
        except FileNotFoundError:
            return 0

    def get_stats(self) -> dict[str, Any]:
        try:
            with open_folder(self.directory) as folder:
                sizes = file_sizes(folder, SUFFIX)
        except FileNotFoundError:
            sizes = {}
        return {
            "backend": "file",
            "directory": str(self.directory),
            "entries": len(sizes),
            "size_bytes": sum(sizes.values()),
        }


class DatabaseCache:
    """The old cache's interface, stored in ``market_data_cache`` (data type ``file_cache``)."""

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

    def get(self, key: str, expiration: float | None = None) -> Any:
        statement = select(
            MarketDataCache.data, MarketDataCache.cached_at, MarketDataCache.expires_at
        ).where(MarketDataCache.cache_key == database_key(key))
        with self.manager.get_session() as session:
            row = session.execute(statement).first()
        now = utcnow()
        fresh = row is not None and (
            row.cached_at + dt.timedelta(seconds=expiration) > now
            if expiration
            else row.expires_at > now
        )
        statistics.record(DataType.FILE_CACHE.value, "hits" if fresh else "misses")
        if not fresh:
            return None
        assert row is not None
        return codec.decode(row.data["payload"])

    def set(self, key: str, value: Any, expiration: float | None = None) -> None:
        with self.manager.get_session() as session:
            _repository.cache_market_data(
                session,
                FILE_CACHE_TICKER,
                DataType.FILE_CACHE,
                value,
                parameters={"key": key},
                ttl=expiration or self.default_expiration,
                data_source="file_cache",
            )

    def delete(self, key: str) -> bool:
        with self.manager.get_session() as session:
            result = session.execute(
                delete(MarketDataCache).where(MarketDataCache.cache_key == database_key(key))
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def clear(self) -> int:
        with self.manager.get_session() as session:
            return _repository.invalidate(session, data_type=DataType.FILE_CACHE)

    def get_stats(self) -> dict[str, Any]:
        is_file_entry = MarketDataCache.data_type == DataType.FILE_CACHE
        statement = select(
            func.count(), func.count().filter(MarketDataCache.expires_at <= utcnow())
        ).where(is_file_entry)
        with self.manager.get_session() as session:
            entries, expired = session.execute(statement).one()
        counts = statistics.snapshot().get(DataType.FILE_CACHE.value)
        hits, misses = (counts.hits, counts.misses) if counts else (0, 0)
        return {
            "backend": "database",
            "entries": entries,
            "expired": expired,
            "hits": hits,
            "misses": misses,
            "hit_rate": hits / (hits + misses) if hits + misses else None,
        }


class DualWriteCache:
    """For the move: writes go to both caches; reads prefer the database and fall
    back to the files, copying what they find there into the database."""

    def __init__(self, database: DatabaseCache, files: FileCache) -> None:
        self.database = database
        self.files = files

    def get(self, key: str, expiration: float | None = None) -> Any:
        """The database's entry, else the file's, copied into the database.

        A file entry the database refuses (a value that contains itself or is
        nested too deeply: what the import rejects) reads as missing.
        """
        value = self.database.get(key, expiration)
        if value is not None:
            return value
        value = self.files.get(key, expiration)
        remaining = self.files.remaining(key)
        if value is not None and remaining is not None and remaining > 0:
            try:
                self.database.set(key, value, remaining)  # back-fill for the next reader
            except ValidationError as error:
                logger.warning("file cache entry %s cannot move to the database: %s", key, error)
                return None
        return value

    def set(self, key: str, value: Any, expiration: float | None = None) -> None:
        self.database.set(key, value, expiration)
        self.files.set(key, value, expiration)

    def delete(self, key: str) -> bool:
        deleted = self.database.delete(key)
        return self.files.delete(key) or deleted

    def clear(self) -> int:
        return self.database.clear() + self.files.clear()

    def get_stats(self) -> dict[str, Any]:
        return {
            "backend": "dual",
            "database": self.database.get_stats(),
            "file": self.files.get_stats(),
        }
