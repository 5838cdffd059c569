"""Moving off BuffetBot's old file cache: its format, a database-backed drop-in, and the import."""

from database.filecache.cache import DatabaseCache, DualWriteCache, FileCache, make_key
from database.filecache.importer import ImportReport, import_directory
from database.filecache.safe_pickle import UnsafePickleError, safe_loads

__all__ = [
    "DatabaseCache",
    "DualWriteCache",
    "FileCache",
    "ImportReport",
    "UnsafePickleError",
    "import_directory",
    "make_key",
    "safe_loads",
]
