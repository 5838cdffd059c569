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
    CacheFileError,
    read_cache_file,
    write_cache_file,
)
from database.models import DataType, MarketDataCache
from database.models.base import utcnow
from database.monitoring import market_data_cache as statistics
from database.repositories import MarketDataRepository
from database.session import get_database

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
    """The old cache itself: one safe-to-read pickle per key in ``directory``."""

    def __init__(
        self,
        directory: str | Path = "buffetbot/cache",
        *,
        default_expiration: float = DEFAULT_EXPIRATION,
    ):
        self.directory = Path(directory)
        self.default_expiration = default_expiration

    def _path(self, key: str) -> Path:
        """The key's file, which must lie in the cache folder itself: a key is a file name."""
        if not isinstance(key, str) or not key or key in (".", ".."):
            raise ValidationError("key", key, "must be a non-empty file name")
        if any(bad in key for bad in ("/", "\\", "\0")) or Path(key).is_absolute():
            raise ValidationError("key", key, "must not name another folder (no / or \\)")
        return self.directory / f"{key}{SUFFIX}"

    def get(self, key: str, expiration: float | None = None) -> Any:
        try:
            entry = read_cache_file(self._path(key))
        except CacheFileError:
            return None
        if time.time() - entry.timestamp > (expiration or entry.expiration):
            return None
        return entry.data

    def remaining(self, key: str) -> float | None:
        """Seconds the entry stays fresh, or None if missing or unreadable."""
        try:
            entry = read_cache_file(self._path(key))
        except CacheFileError:
            return None
        return entry.timestamp + entry.expiration - time.time()

    def set(self, key: str, value: Any, expiration: float | None = None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_cache_file(self._path(key), value, time.time(), expiration or self.default_expiration)

    def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def clear(self) -> int:
        files = list(self.directory.glob(f"*{SUFFIX}")) if self.directory.exists() else []
        for path in files:
            path.unlink(missing_ok=True)
        return len(files)

    def get_stats(self) -> dict[str, Any]:
        files = list(self.directory.glob(f"*{SUFFIX}")) if self.directory.exists() else []
        return {
            "backend": "file",
            "directory": str(self.directory),
            "entries": len(files),
            "size_bytes": sum(p.stat().st_size for p in files),
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
        value = self.database.get(key, expiration)
        if value is not None:
            return value
        value = self.files.get(key, expiration)
        remaining = self.files.remaining(key)
        if value is not None and remaining is not None and remaining > 0:
            self.database.set(key, value, remaining)  # back-fill for the next reader
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
