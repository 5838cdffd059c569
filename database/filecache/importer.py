"""Bulk import of an old cache directory into ``market_data_cache``.

Files are read (safely) and checked one by one; a bad one is reported and
skipped: corrupt, unsafe, a symbolic link (never followed), over
``max_file_size``, a pickle whose opcodes would allocate more than
``max_allocation`` (see :mod:`database.filecache.limits`), a timestamp or
expiration out of range, or data the codec refuses (a value that contains
itself, or is nested too deeply). Whatever goes wrong with one file rejects
that file, with the reason, and the import goes on. Entries are
written in batches, each in one transaction: the batch's rows go through the
driver into a temporary staging table (``COPY`` on PostgreSQL, ``executemany``
on SQLite: see :mod:`database.driver`, which stores each value as the ORM
would), then into ``market_data_cache`` with one
``INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING``, so a second run
imports nothing new, and what was inserted is counted from what it returns.
The rows go in key order, so concurrent imports lock keys in the same order; on
SQLite each batch's transaction begins as a writer (``begin_write``).
"""

from __future__ import annotations

import pickletools
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text

from database.connection import DatabaseManager
from database.driver import encode_rows, write_rows
from database.exceptions import ValidationError
from database.filecache.cache import file_entry_row
from database.filecache.files import (
    SUFFIX,
    CacheFile,
    CacheFileError,
    parse_cache_file,
    read_cache_bytes,
)
from database.filecache.folder import entry_names, open_folder
from database.filecache.limits import DEFAULT_MAX_ALLOCATION, DEFAULT_MAX_FILE_SIZE, PickleLimits
from database.models import MarketDataCache
from database.repositories.upsert import dialect_name
from database.transactions import begin_write

BATCH_SIZE = 500

# A batch is staged in a temporary table, then moved into market_data_cache by one
# statement. On PostgreSQL the table goes with its transaction (ON COMMIT DROP):
# nothing of it outlives the batch on a pooled connection, no role ever needs it,
# and it always has the columns of the market_data_cache of the moment. On SQLite
# it is dropped at the end of the batch (in the same transaction).
STAGING = "file_cache_import"
_COLUMNS = (
    "id",
    "cache_key",
    "ticker",
    "data_type",
    "data",
    "data_source",
    "parameters",
    "cached_at",
    "expires_at",
    "created_at",
    "updated_at",
)
_NAMES = ", ".join(_COLUMNS)
# S608: this module's SQL is made of its own constants (table and column names) only.
_NO_ROWS = f"SELECT {_NAMES} FROM market_data_cache WHERE 0"  # noqa: S608
_STAGE = {
    "postgresql": text(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING} "
        "(LIKE market_data_cache INCLUDING DEFAULTS) ON COMMIT DROP"
    ),
    "sqlite": text(f"CREATE TEMPORARY TABLE {STAGING} AS {_NO_ROWS}"),
}
# Inserted (and conflicting keys waited for) in the order of the SELECT: one order
# for every import, so no two wait for each other in a cycle. ("WHERE true": without
# it SQLite would read ON CONFLICT as a join's ON.)
_IN_KEY_ORDER = {
    "postgresql": ' ORDER BY cache_key COLLATE "C"',
    "sqlite": " WHERE true ORDER BY cache_key",
}
_MOVE = {
    dialect: text(
        f"INSERT INTO market_data_cache ({_NAMES}) SELECT {_NAMES} FROM {STAGING}{order} "  # noqa: S608
        "ON CONFLICT (cache_key) DO NOTHING RETURNING cache_key"
    )
    for dialect, order in _IN_KEY_ORDER.items()
}
_UNSTAGE = {"sqlite": text(f"DROP TABLE temp.{STAGING}")}


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
    return file_entry_row(entry)


def _unexpected(error: Exception) -> str:
    """The reason for a rejection nothing above foresaw: its type named, its text if it has one."""
    try:
        text = str(error)
    except Exception:  # its own __str__ may fail as well
        text = ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


IMPORT, EXPIRED, REJECTED = "import", "expired", "rejected"


@dataclass
class _Examined:
    """What the import makes of one file: its row, or why it is skipped."""

    outcome: str
    row: dict[str, Any] | None = None
    reason: str | None = None
    data_type: str = "unknown"
    pandas: str = "unknown"


def _examine(
    folder: int, name: str, limits: PickleLimits, *, include_expired: bool, describe: bool = False
) -> _Examined:
    """Read, check and encode one file as the import does; with ``describe``, also name
    its data's type and the pandas its pickle was written by. Never raises."""
    found = _Examined(REJECTED)
    try:
        raw = read_cache_bytes(folder, name, limits)
        if describe:
            found.pandas = pandas_written_by(raw)
        entry = parse_cache_file(raw, name, limits)
        found.data_type = type(entry.data).__name__
        if entry.is_expired() and not include_expired:
            found.outcome = EXPIRED
            return found
        found.row = _row(entry)
        found.outcome = IMPORT
    except (CacheFileError, ValidationError) as error:  # what a bad file raises
        found.reason = str(error)
    except Exception as error:  # one file, whatever is wrong with it, never stops the run
        found.reason = _unexpected(error)
    return found


# Where a pickle's pandas objects come from says which pandas wrote it, roughly:
# pandas 3 names its public classes from ``pandas`` itself (``pandas.DataFrame``,
# ``pandas.arrays.DatetimeArray``); 1.x and 2.x from their implementation modules
# (``pandas.core.frame.DataFrame``, ``pandas.core.arrays.datetimes``), and 1.x and
# 2.x name the same ones. NumPy 2's ``numpy._core`` beside those means pandas 2
# (2.2.2 is the first pandas that runs on NumPy 2); NumPy 1's ``numpy.core`` leaves
# 1.x or 2.x open.
PANDAS_3 = "3.x"
PANDAS_2 = "2.x"
PANDAS_1_OR_2 = "1.x or 2.x"
NO_PANDAS = "none"
UNKNOWN = "unknown"
_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING"}
_STRINGS |= {"SHORT_BINSTRING"}


def pickle_globals(raw: bytes) -> set[tuple[str, str]]:
    """The ``(module, name)`` pairs a pickle names, read from its opcodes without running
    anything; as many as can be read before a corrupt or truncated part."""
    found: set[tuple[str, str]] = set()
    memo: dict[int, object] = {}
    recent: list[object] = []
    try:
        for opcode, argument, _ in pickletools.genops(raw):
            op = opcode.name
            if op == "GLOBAL" and isinstance(argument, str):
                module, _, attribute = argument.partition(" ")
                found.add((module, attribute))
                recent.append(None)
            elif op == "STACK_GLOBAL":
                if len(recent) >= 2 and all(isinstance(item, str) for item in recent[-2:]):
                    found.add((str(recent[-2]), str(recent[-1])))
                recent.append(None)
            elif op in _STRINGS:
                recent.append(argument if isinstance(argument, str) else None)
            elif op == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif op in ("PUT", "BINPUT", "LONG_BINPUT") and isinstance(argument, int):
                memo[argument] = recent[-1] if recent else None
            elif op in ("GET", "BINGET", "LONG_BINGET") and isinstance(argument, int):
                recent.append(memo.get(argument))
            elif op not in ("FRAME", "PROTO"):
                recent.append(None)
            del recent[:-2]
    except Exception:  # corrupt or truncated: what was read so far
        return found
    return found


def pandas_written_by(raw: bytes) -> str:
    """Which pandas wrote the pickle ``raw``, as far as its module paths tell: "3.x",
    "2.x", "1.x or 2.x", "unknown" (pandas objects that do not say), or "none"."""
    if b"pandas" not in raw:
        return NO_PANDAS
    names = pickle_globals(raw)
    modules = {module for module, _ in names}
    if not any(module == "pandas" or module.startswith("pandas.") for module in modules):
        return NO_PANDAS
    if any(module in ("pandas", "pandas.arrays") for module in modules):
        return PANDAS_3
    if any(
        module in ("pandas.core.frame", "pandas.core.series")
        or module.startswith("pandas.core.arrays.")
        for module in modules
    ):
        if any(module.startswith("numpy._core") for module in modules):
            return PANDAS_2
        return PANDAS_1_OR_2
    return UNKNOWN


@dataclass(frozen=True)
class DryRunFile:
    """One file as the import would take it: ``outcome`` is import, expired or rejected."""

    name: str
    outcome: str
    data_type: str
    pandas: str
    reason: str | None = None


@dataclass
class DryRunReport:
    """What ``import_directory`` would do with a directory, file by file; nothing written.

    ``would_import`` counts what the import would write or find already present
    (telling those apart needs the database, which a dry run does not open).
    """

    files: list[DryRunFile] = field(default_factory=list)

    def _count(self, outcome: str) -> int:
        return sum(1 for file in self.files if file.outcome == outcome)

    @property
    def would_import(self) -> int:
        return self._count(IMPORT)

    @property
    def expired(self) -> int:
        return self._count(EXPIRED)

    @property
    def rejected(self) -> list[tuple[str, str]]:
        return [(f.name, f.reason or "") for f in self.files if f.outcome == REJECTED]

    def by_type(self) -> list[dict[str, Any]]:
        """Counts per (data type, pandas version), sorted."""
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        for file in self.files:
            group = groups.setdefault(
                (file.data_type, file.pandas),
                {
                    "data_type": file.data_type,
                    "pandas": file.pandas,
                    "would_import": 0,
                    "expired": 0,
                    "rejected": 0,
                },
            )
            group["would_import" if file.outcome == IMPORT else file.outcome] += 1
        return [groups[key] for key in sorted(groups)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": True,
            "would_import": self.would_import,
            "expired": self.expired,
            "rejected": len(self.rejected),
            "rejected_files": dict(self.rejected),
            "by_type": self.by_type(),
        }


def dry_run_directory(
    directory: str | Path,
    *,
    include_expired: bool = False,
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    max_allocation: int = DEFAULT_MAX_ALLOCATION,
) -> DryRunReport:
    """What :func:`import_directory` would import, skip as expired, or reject (with the
    reason), per file, with each file's data type and the pandas that wrote it.

    Reads each file exactly as the import does (safely, within the same limits)
    and writes nothing: no database is needed or opened, and no file is touched.
    """
    limits = PickleLimits(max_file_size=max_file_size, max_allocation=max_allocation)
    report = DryRunReport()
    with ExitStack() as stack:
        try:
            folder = stack.enter_context(open_folder(Path(directory)))
        except OSError:
            raise ValidationError("directory", str(directory), "is not a directory") from None
        for name in entry_names(folder, SUFFIX):
            found = _examine(folder, name, limits, include_expired=include_expired, describe=True)
            report.files.append(
                DryRunFile(name, found.outcome, found.data_type, found.pandas, found.reason)
            )
    return report


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
                found = _examine(folder, name, limits, include_expired=include_expired)
                if found.outcome == EXPIRED:
                    report.expired += 1
                elif found.row is None:
                    report.rejected.append((name, found.reason or ""))
                else:
                    rows.append(found.row)
            if rows:
                _write_batch(manager, rows, report)
            report.batches += 1
            if on_progress is not None:
                on_progress(len(batch))
    return report


def _write_batch(
    manager: DatabaseManager, rows: list[dict[str, Any]], report: ImportReport
) -> None:
    """Stage the batch's rows, then insert those whose key is not there yet; the rest
    (already imported, or written meanwhile by a concurrent import) count as present."""
    for row in rows:
        row.setdefault("id", uuid.uuid4())  # the ORM's default: there is none in SQL
    with manager.get_session(system=True) as session:  # a transaction per batch
        begin_write(session)
        dialect = dialect_name(session)
        session.execute(_STAGE[dialect])
        values = encode_rows(MarketDataCache.__table__, _COLUMNS, session.get_bind().dialect, rows)
        write_rows(session, STAGING, _COLUMNS, values)
        # Counted from RETURNING: a concurrent import may have written some since.
        inserted = len(session.execute(_MOVE[dialect]).all())
        if dialect in _UNSTAGE:
            session.execute(_UNSTAGE[dialect])
    report.imported += inserted
    report.already_present += len(rows) - inserted
