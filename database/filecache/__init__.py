"""Moving off BuffetBot's old file cache: its format, a database-backed drop-in, and the import."""

from database.datatypes import DataTypes, allow_types
from database.filecache.cache import (
    DatabaseCache,
    DualWriteCache,
    FileCache,
    cache_result,
    make_key,
)
from database.filecache.importer import (
    DryRunReport,
    ImportReport,
    dry_run_directory,
    import_directory,
)
from database.filecache.safe_pickle import UnsafePickleError, safe_loads

__all__ = [
    "DataTypes",
    "DatabaseCache",
    "DryRunReport",
    "DualWriteCache",
    "FileCache",
    "ImportReport",
    "UnsafePickleError",
    "allow_types",
    "cache_result",
    "dry_run_directory",
    "import_directory",
    "make_key",
    "safe_loads",
]
