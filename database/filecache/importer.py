"""Bulk import of an old cache directory into ``market_data_cache``.

Files are read (safely) and checked one by one; a bad one is reported and
skipped: corrupt, unsafe, a symbolic link (never followed), over
``max_file_size``, a pickle whose opcodes would allocate more than
``max_allocation`` (see :mod:`database.filecache.limits`), a timestamp or
expiration out of range, or data the codec refuses (a value that contains
itself, or is nested too deeply). Whatever goes wrong with one file rejects
that file, with the reason, and the import goes on. Entries are
written in batches, each in one transaction with one
``INSERT ... ON CONFLICT DO NOTHING``, so a second run imports nothing new. The
rows go in key order, so concurrent imports lock keys in the same order; on
SQLite each batch's transaction begins as a writer (``begin_write``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from database import codec
from database.connection import DatabaseManager
from database.exceptions import ValidationError
from database.filecache.cache import FILE_CACHE_TICKER, database_key
from database.filecache.files import SUFFIX, CacheFile, CacheFileError, read_cache_file
from database.filecache.folder import entry_names, open_folder
from database.filecache.limits import DEFAULT_MAX_ALLOCATION, DEFAULT_MAX_FILE_SIZE, PickleLimits
from database.models import DataType, MarketDataCache
from database.models.base import utcnow
from database.repositories.upsert import native_insert
from database.transactions import begin_write

BATCH_SIZE = 500


@dataclass
class ImportReport:
    """Counts of a run; ``rejected`` pairs each bad file with the reason."""

    imported: int = 0
    already_present: int = 0
    expired: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    batches: int = 0

    @property
    def files(self) -> int:
        return self.imported + self.already_present + self.expired + len(self.rejected)


def cache_files(directory: Path) -> list[str]:
    """The names of the files an import of ``directory`` would read."""
    with open_folder(directory) as folder:
        return entry_names(folder, SUFFIX)


def _batches(names: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(names), size):
        yield names[start : start + size]


def _row(entry: CacheFile) -> dict[str, Any]:
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


def _unexpected(error: Exception) -> str:
    """The reason for a rejection nothing above foresaw: its type named, its text if it has one."""
    try:
        text = str(error)
    except Exception:  # its own __str__ may fail as well
        text = ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def import_directory(
    manager: DatabaseManager,
    directory: str | Path,
    *,
    include_expired: bool = False,
    batch_size: int = BATCH_SIZE,
    on_progress: Callable[[int], None] | None = None,
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    max_allocation: int = DEFAULT_MAX_ALLOCATION,
) -> ImportReport:
    """Import every ``*.cache`` file of ``directory``; ``on_progress(n)`` after each batch.

    A file over ``max_file_size`` bytes, or whose pickle would allocate more
    than ``max_allocation`` bytes, is rejected unread (with the reason) and the
    import goes on.
    """
    limits = PickleLimits(max_file_size=max_file_size, max_allocation=max_allocation)
    report = ImportReport()
    with ExitStack() as stack:  # one descriptor for the whole run: every read stays in it
        try:
            folder = stack.enter_context(open_folder(Path(directory)))
        except OSError:
            raise ValidationError("directory", str(directory), "is not a directory") from None
        for batch in _batches(entry_names(folder, SUFFIX), batch_size):
            rows: list[dict[str, Any]] = []
            for name in batch:
                try:
                    entry = read_cache_file(folder, name, limits)
                    if entry.is_expired() and not include_expired:
                        report.expired += 1
                        continue
                    rows.append(_row(entry))
                except (CacheFileError, ValidationError) as error:  # what a bad file raises
                    report.rejected.append((name, str(error)))
                except (
                    Exception
                ) as error:  # one file, whatever is wrong with it, never stops the run
                    report.rejected.append((name, _unexpected(error)))
            if rows:
                _write_batch(manager, rows, report)
            report.batches += 1
            if on_progress is not None:
                on_progress(len(batch))
    return report


def _write_batch(
    manager: DatabaseManager, rows: list[dict[str, Any]], report: ImportReport
) -> None:
    keys = [row["cache_key"] for row in rows]
    with manager.get_session(system=True) as session:  # a transaction per batch
        begin_write(session)
        present = set(
            session.scalars(
                select(MarketDataCache.cache_key).where(MarketDataCache.cache_key.in_(keys))
            )
        )
        new = sorted(
            (row for row in rows if row["cache_key"] not in present),
            key=lambda row: row["cache_key"],
        )
        inserted = 0
        if new:
            statement = (
                native_insert(manager.backend, MarketDataCache)
                .on_conflict_do_nothing(index_elements=["cache_key"])
                .returning(MarketDataCache.cache_key)
            )
            # Counted from RETURNING: a concurrent import may have written some since.
            inserted = len(session.execute(statement, new).all())
    report.imported += inserted
    report.already_present += len(rows) - inserted
