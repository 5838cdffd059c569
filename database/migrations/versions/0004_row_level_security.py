"""Row-level security on the user-owned tables (PostgreSQL only).

Policies on portfolios, positions and analysis_results let the role
``buffetbot_user`` see and change only the rows of the user named by the
transaction's ``app.user_id`` setting (analysis results without a portfolio are
shared). The application takes that role per transaction (``SET LOCAL``) when
``DB_ROW_SECURITY=on``; every other role, the tables' owner included, is not
limited, so maintenance and the seed's plain sessions work as before.

``buffetbot_user`` is a cluster-wide NOLOGIN role: it is created if missing
(which needs CREATEROLE; without it the policies are still made and the
role must be created by an administrator), granted the data privileges, and
granted to the migrating role so that it may switch to it. The downgrade drops
the policies and grants but keeps the role, which other databases may use.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out, not formatted: a migration's SQL is frozen text.
OWNED = {
    "portfolios": "user_id = buffetbot_acting_user()",
    "positions": (
        "portfolio_id IN (SELECT id FROM portfolios WHERE user_id = buffetbot_acting_user())"
    ),
    "analysis_results": (
        "portfolio_id IS NULL OR portfolio_id IN "
        "(SELECT id FROM portfolios WHERE user_id = buffetbot_acting_user())"
    ),
}

ACTING_USER = """
CREATE FUNCTION buffetbot_acting_user() RETURNS uuid LANGUAGE sql STABLE
AS $$ SELECT NULLIF(current_setting('app.user_id', true), '')::uuid $$
"""

CREATE_ROLE = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'buffetbot_user') THEN
        IF NOT (SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            RAISE WARNING 'role buffetbot_user is missing and % may not create it: an '
                'administrator must CREATE ROLE buffetbot_user NOLOGIN before '
                'DB_ROW_SECURITY=on is used', current_user;
            RETURN;
        END IF;
        BEGIN
            CREATE ROLE buffetbot_user NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- made at the same moment by a migration of another database
        END;
    END IF;
END
$$
"""

GRANTS = """
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'buffetbot_user') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO buffetbot_user', current_schema());
        GRANT SELECT, INSERT, UPDATE, DELETE ON users, portfolios, positions,
            analysis_results, price_history, options_data, market_data_cache TO buffetbot_user;
        IF NOT pg_has_role(current_user, 'buffetbot_user', 'MEMBER') THEN
            EXECUTE format('GRANT buffetbot_user TO %I', current_user);
        END IF;
    END IF;
END
$$
"""

REVOKES = """
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'buffetbot_user') THEN
        REVOKE ALL ON users, portfolios, positions, analysis_results, price_history,
            options_data, market_data_cache FROM buffetbot_user;
        EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM buffetbot_user', current_schema());
    END IF;
END
$$
"""


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return  # SQLite has no row-level security: the repositories are its only wall
    op.execute(ACTING_USER)
    op.execute(CREATE_ROLE)
    op.execute(GRANTS)
    for table, owned in OWNED.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        # Only buffetbot_user is limited; every other role sees every row.
        condition = f"current_user <> 'buffetbot_user' OR {owned}"
        op.execute(
            f"CREATE POLICY {table}_owner ON {table} USING ({condition}) WITH CHECK ({condition})"
        )


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for table in reversed(OWNED):
        op.execute(f"DROP POLICY {table}_owner ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute(REVOKES)
    op.execute("DROP FUNCTION buffetbot_acting_user()")
