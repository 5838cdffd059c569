"""Allow the data type "file_cache": entries moved from the old file cache.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from database.migrations.guard import Rows, refuse_data_loss

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = (
    "price_history",
    "stock_info",
    "fundamentals",
    "income_statement",
    "balance_sheet",
    "cash_flow",
    "options_chain",
    "analyst_data",
    "news",
)
AFTER = (*BEFORE, "file_cache")
NAME = "ck_market_data_cache_data_type"


def _replace_check(values: Sequence[str]) -> None:
    # SQLite cannot alter a constraint: batch mode rebuilds the table with it.
    with op.batch_alter_table("market_data_cache") as batch:
        batch.drop_constraint(op.f(NAME), type_="check")
        batch.create_check_constraint(op.f(NAME), sa.column("data_type").in_(values))


def upgrade() -> None:
    _replace_check(AFTER)


def downgrade() -> None:
    # The old check rejects these rows: they go, but only when forced.
    refuse_data_loss(revision, Rows("market_data_cache", "data_type", "file_cache"))
    op.execute(sa.text("DELETE FROM market_data_cache WHERE data_type = 'file_cache'"))
    _replace_check(BEFORE)
