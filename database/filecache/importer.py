"""Bulk import of an old cache directory into ``market_data_cache``.

Files are read (safely) and checked one by one; a bad one is reported and
skipped. Entries are written in batches, each in one transaction with one
``INSERT ... ON CONFLICT DO NOTHING``, so a second run imports nothing new. The
rows go in key order, so concurrent imports lock keys in the same order; on
SQLite each batch's transaction begins as a writer (``begin_write``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from database import codec
from database.connection import DatabaseManager
from database.exceptions import ValidationError
from database.filecache.cache import FILE_CACHE_TICKER, database_key
from database.filecache.files import SUFFIX, CacheFile, CacheFileError, read_cache_file
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


def cache_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{SUFFIX}"))


def _batches(paths: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


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


def import_directory(
    manager: DatabaseManager,
    directory: str | Path,
    *,
    include_expired: bool = False,
    batch_size: int = BATCH_SIZE,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import every ``*.cache`` file of ``directory``; ``on_progress(n)`` after each batch."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ValidationError("directory", str(directory), "is not a directory")
    report = ImportReport()
    for batch in _batches(cache_files(folder), batch_size):
        rows: list[dict[str, Any]] = []
        for path in batch:
            try:
                entry = read_cache_file(path)
                if entry.is_expired() and not include_expired:
                    report.expired += 1
                    continue
                rows.append(_row(entry))
            except (CacheFileError, ValidationError) as error:
                report.rejected.append((path.name, str(error)))
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
    with manager.get_session() as session:  # one transaction per batch
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
