"""Row-level security on the user-owned tables (PostgreSQL only).

Policies on users, portfolios, positions and analysis_results let the role
``buffetbot_user`` see and change only the rows of the user named by the
transaction's ``app.user_id`` setting (analysis results without a portfolio are
shared for reading and adding; a session for no user reaches accounts, for
sign-up and sign-in, but no portfolio data). The application takes that role
per transaction (``SET LOCAL``) when ``DB_ROW_SECURITY=on``; every other role,
the tables' owner included, is not limited, so maintenance and the seed's
plain sessions work as before.

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

# A migration's SQL is frozen text: written out, from constants only.
ACTING = "buffetbot_acting_user()"
OWNED_PORTFOLIO = (
    "portfolio_id IN (SELECT id FROM portfolios WHERE user_id = buffetbot_acting_user())"
)
SHARED_OR_OWNED = "portfolio_id IS NULL OR " + OWNED_PORTFOLIO
# (table, command, USING, WITH CHECK): the rows each policy lets buffetbot_user reach.
POLICIES = (
    # A user's session reaches its own account; a session for no user (sign-up,
    # sign-in) reaches accounts but no portfolio data, and deletes none.
    ("users", "SELECT", f"{ACTING} IS NULL OR id = {ACTING}", None),
    ("users", "INSERT", None, f"{ACTING} IS NULL"),
    ("users", "UPDATE", f"{ACTING} IS NULL OR id = {ACTING}", f"{ACTING} IS NULL OR id = {ACTING}"),
    ("users", "DELETE", f"id = {ACTING}", None),
    ("portfolios", "ALL", f"user_id = {ACTING}", f"user_id = {ACTING}"),
    ("positions", "ALL", OWNED_PORTFOLIO, OWNED_PORTFOLIO),
    # Results without a portfolio are shared: anyone reads and adds them, and
    # only the system changes or deletes them.
    ("analysis_results", "SELECT", SHARED_OR_OWNED, None),
    ("analysis_results", "INSERT", None, SHARED_OR_OWNED),
    ("analysis_results", "UPDATE", OWNED_PORTFOLIO, OWNED_PORTFOLIO),
    ("analysis_results", "DELETE", OWNED_PORTFOLIO, None),
)
TABLES = ("users", "portfolios", "positions", "analysis_results")

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
            BEGIN
                EXECUTE format('GRANT buffetbot_user TO %I', current_user);
            EXCEPTION
                WHEN insufficient_privilege THEN
                    RAISE WARNING 'an administrator must GRANT buffetbot_user TO % '
                        'before DB_ROW_SECURITY=on is used', current_user;
                WHEN unique_violation THEN
                    NULL;  -- granted at the same moment by a migration of another database
            END;
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


def _policy(table: str, command: str, using: str | None, check: str | None) -> str:
    # Only buffetbot_user is limited; every other role reaches every row.
    name = f"{table}_{command.lower()}_by_owner"
    clauses = f" USING (current_user <> 'buffetbot_user' OR {using})" if using else ""
    if check:
        clauses += f" WITH CHECK (current_user <> 'buffetbot_user' OR {check})"
    return f"CREATE POLICY {name} ON {table} FOR {command}{clauses}"


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return  # SQLite has no row-level security: the repositories are its only wall
    op.execute(ACTING_USER)
    op.execute(CREATE_ROLE)
    op.execute(GRANTS)
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    for policy in POLICIES:
        op.execute(_policy(*policy))


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for table, command, *_ in POLICIES:
        op.execute(f"DROP POLICY {table}_{command.lower()}_by_owner ON {table}")
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute(REVOKES)
    op.execute("DROP FUNCTION buffetbot_acting_user()")
