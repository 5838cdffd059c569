"""The old cache's files: ``<dir>/<key>.cache``, each a pickle of
``{"data": ..., "timestamp": <epoch seconds>, "expiration": <seconds>}``."""

from __future__ import annotations

import datetime as dt
import pickle
from dataclasses import dataclass
from typing import Any, TypeGuard

from database.exceptions import DatabaseError
from database.filecache.folder import read_entry, write_entry
from database.filecache.limits import PickleLimitError, PickleLimits
from database.filecache.safe_pickle import safe_loads
from database.repositories.market_data import MAX_TTL

DEFAULT_EXPIRATION = 3600
SUFFIX = ".cache"


class CacheFileError(ValueError):
    """A cache file that cannot be used: unreadable, corrupt, truncated or unsafe."""


class CacheFileMissingError(CacheFileError):
    """There is no such cache file (a plain miss, not a broken file)."""


@dataclass(frozen=True)
class CacheFile:
    key: str
    data: Any
    timestamp: float
    expiration: float

    @property
    def cached_at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.timestamp, dt.UTC)

    @property
    def expires_at(self) -> dt.datetime:
        return self.cached_at + dt.timedelta(seconds=self.expiration)

    def is_expired(self, now: dt.datetime | None = None) -> bool:
        return self.expires_at <= (now or dt.datetime.now(dt.UTC))

    def older_than(self, seconds: float, now: float) -> bool:
        """The old cache's test, ``now - timestamp > seconds`` (``now``: epoch seconds)."""
        return now - self.timestamp > seconds


def read_cache_bytes(folder: int, name: str, limits: PickleLimits | None = None) -> bytes:
    """The bytes of the file ``name`` of the open cache ``folder``, within ``limits``;
    CacheFileMissingError if there is none, CacheFileError if it cannot be read."""
    try:
        return read_entry(folder, name, limits or PickleLimits())
    except FileNotFoundError:
        raise CacheFileMissingError(f"unreadable: no file {name}") from None
    except OSError as error:
        raise CacheFileError(f"unreadable: {error.strerror or error}") from None
    except PickleLimitError as error:
        raise CacheFileError(str(error)) from None


def parse_cache_file(raw: bytes, name: str, limits: PickleLimits | None = None) -> CacheFile:
    """The entry in a cache file's bytes, unpickled safely; CacheFileError says what is wrong."""
    try:
        entry = safe_loads(raw, limits or PickleLimits())
    except DatabaseError as error:  # corrupt, unsafe, over the limits, an unknown member
        raise CacheFileError(str(error)) from None
    except RecursionError:
        raise CacheFileError("nested too deeply to load") from None
    except MemoryError:
        raise CacheFileError("too large to load in the memory available") from None
    if not isinstance(entry, dict) or "data" not in entry or "timestamp" not in entry:
        raise CacheFileError("not a cache entry (a dict with data and timestamp)")
    timestamp, expiration = _checked_times(
        entry["timestamp"], entry.get("expiration", DEFAULT_EXPIRATION)
    )
    return CacheFile(name.removesuffix(SUFFIX), entry["data"], timestamp, expiration)


def read_cache_file(folder: int, name: str, limits: PickleLimits | None = None) -> CacheFile:
    """Load the file ``name`` of the open cache ``folder`` safely, within ``limits``
    (see :mod:`database.filecache.folder`); CacheFileError says what is wrong with it
    (CacheFileMissingError, a subclass, when there is no such file)."""
    return parse_cache_file(read_cache_bytes(folder, name, limits), name, limits)


def _checked_times(timestamp: object, expiration: object) -> tuple[float, float]:
    """The entry's timestamp and expiration as seconds; CacheFileError when either is out
    of range: every entry read has a time the database can hold, and an expiration the
    database cache would accept (so reading a file and importing it agree)."""
    if not _is_number(timestamp) or (expiration is not None and not _is_number(expiration)):
        raise CacheFileError("timestamp and expiration must be numbers")
    try:
        seconds = float(timestamp)
        cached_at = dt.datetime.fromtimestamp(seconds, dt.UTC)
    except (OverflowError, ValueError, OSError):
        raise CacheFileError(
            f"timestamp {_shown(timestamp)} is not a time in the years 1 to 9999"
        ) from None
    lifetime = expiration or DEFAULT_EXPIRATION
    # Compared as given: float() of an integer of hundreds of digits overflows. NaN fails too.
    if not 0 < lifetime <= MAX_TTL.total_seconds():
        raise CacheFileError(
            f"expiration {_shown(expiration)} must be positive and at most {MAX_TTL.days} days"
        )
    try:
        cached_at + dt.timedelta(seconds=float(lifetime))
    except OverflowError:
        raise CacheFileError(
            f"timestamp {_shown(timestamp)} plus expiration {_shown(expiration)} "
            "is after the year 9999"
        ) from None
    return seconds, float(lifetime)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shown(number: object) -> str:
    """A number for a message: an integer of hundreds of digits is not written out."""
    if isinstance(number, int) and abs(number) >= 10**18:
        return f"(an integer of {number.bit_length()} bits)"
    return repr(number)


def write_cache_file(
    folder: int, name: str, data: Any, *, timestamp: float, expiration: float
) -> None:
    """Write an entry in the old format (used while both caches are written), atomically."""
    payload = {"data": data, "timestamp": timestamp, "expiration": expiration}
    write_entry(folder, name, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
