"""Version counters on the rows that are read and updated in place.

users, portfolios, positions and analysis_results get ``version`` (starting
at 1): every UPDATE and DELETE made through the ORM checks and raises it, so a
write made from a stale copy fails instead of overwriting newer data.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("users", "portfolios", "positions", "analysis_results")


def upgrade() -> None:
    for table in TABLES:
        # Existing rows start at version 1.
        op.add_column(
            table, sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False)
        )


def downgrade() -> None:
    # Drops a column only: no row is lost. Not in batch mode: rebuilding these
    # tables on SQLite would fire their children's ON DELETE CASCADE.
    for table in reversed(TABLES):
        op.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN version"))
