"""BuffetBot's persistence layer: models, repositories, migrations and sessions.

>>> from database import init_database, get_async_database_session
"""

from database.config import DatabaseSettings
from database.connection import DatabaseManager, HealthStatus
from database.exceptions import DatabaseError
from database.session import (
    active_database,
    close_database,
    get_async_database_session,
    get_database,
    get_database_session,
    init_database,
)
from database.transactions import async_run_transaction, run_transaction

__all__ = [
    "DatabaseError",
    "DatabaseManager",
    "DatabaseSettings",
    "HealthStatus",
    "active_database",
    "async_run_transaction",
    "close_database",
    "get_async_database_session",
    "get_database",
    "get_database_session",
    "init_database",
    "run_transaction",
]
