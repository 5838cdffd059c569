"""Initial schema: users, portfolios, positions, analysis results and market data.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence
from decimal import Decimal

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from database.migrations.guard import Rows, refuse_data_loss
from database.types import ExactDecimal, LowerCaseString, Ticker, UTCDateTime

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True)


def _range(
    table: str, name: str, column_type: ExactDecimal, low: int, high: int | None = None
) -> sa.CheckConstraint:
    # Typed, so the bounds render in each backend's storage unit (scaled integers on SQLite).
    value = sa.column(name, column_type)
    condition = value >= Decimal(low)
    if high is not None:
        condition = condition & (value <= Decimal(high))
    return sa.CheckConstraint(condition, name=op.f(f"ck_{table}_{name}_range"))


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", UTCDateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), server_default=sa.func.now(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", LowerCaseString(320), nullable=False),
        sa.Column("username", sa.String(50), nullable=False),
        sa.Column("hashed_password", sa.String(255), nullable=False),
        sa.Column("first_name", sa.String(100), nullable=True),
        sa.Column("last_name", sa.String(100), nullable=True),
        sa.Column("preferences", JSON, nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("is_verified", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("last_login_at", UTCDateTime(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    percentage = ExactDecimal(5, 2)
    op.create_table(
        "portfolios",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "risk_tolerance",
            _enum("risk_tolerance", "conservative", "moderate", "aggressive"),
            nullable=False,
        ),
        sa.Column("target_cash_percentage", percentage, nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        *_timestamps(),
        _range("portfolios", "target_cash_percentage", percentage, 0, 100),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_portfolios_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portfolios")),
        sa.UniqueConstraint("user_id", "name", name=op.f("uq_portfolios_user_id_name")),
    )
    shares, money = ExactDecimal(18, 6), ExactDecimal(18, 4)
    op.create_table(
        "positions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("portfolio_id", sa.Uuid(), nullable=False),
        sa.Column("ticker", Ticker(), nullable=False),
        sa.Column("shares", shares, nullable=False),
        sa.Column("average_cost", money, nullable=True),
        sa.Column("allocation_percentage", percentage, nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        *_timestamps(),
        _range("positions", "shares", shares, 0),
        _range("positions", "average_cost", money, 0),
        _range("positions", "allocation_percentage", percentage, 0, 100),
        sa.ForeignKeyConstraint(
            ["portfolio_id"],
            ["portfolios.id"],
            name=op.f("fk_positions_portfolio_id_portfolios"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_positions")),
        sa.UniqueConstraint(
            "portfolio_id", "ticker", name=op.f("uq_positions_portfolio_id_ticker")
        ),
    )
    fraction = ExactDecimal(5, 4)
    op.create_table(
        "analysis_results",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("portfolio_id", sa.Uuid(), nullable=True),
        sa.Column("ticker", Ticker(), nullable=False),
        sa.Column(
            "analysis_type",
            _enum(
                "analysis_type",
                "value_analysis",
                "growth_analysis",
                "health_analysis",
                "risk_analysis",
                "ecosystem_analysis",
                "options_analysis",
                "portfolio_analysis",
            ),
            nullable=False,
        ),
        sa.Column("strategy", sa.String(50), nullable=True),
        sa.Column("score", ExactDecimal(9, 4), nullable=True),
        sa.Column("metadata", JSON, nullable=True),
        sa.Column("recommendation", sa.String(50), nullable=True),
        sa.Column("confidence_level", fraction, nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("parameters", JSON, nullable=True),
        sa.Column("data_quality_score", fraction, nullable=True),
        sa.Column("calculated_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        *_timestamps(),
        _range("analysis_results", "confidence_level", fraction, 0, 1),
        _range("analysis_results", "data_quality_score", fraction, 0, 1),
        sa.ForeignKeyConstraint(
            ["portfolio_id"],
            ["portfolios.id"],
            name=op.f("fk_analysis_results_portfolio_id_portfolios"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analysis_results")),
    )
    op.create_index(
        op.f("ix_analysis_results_ticker_analysis_type_calculated_at"),
        "analysis_results",
        ["ticker", "analysis_type", "calculated_at"],
    )
    op.create_index(op.f("ix_analysis_results_portfolio_id"), "analysis_results", ["portfolio_id"])
    op.create_index(op.f("ix_analysis_results_expires_at"), "analysis_results", ["expires_at"])

    op.create_table(
        "market_data_cache",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("cache_key", sa.String(64), nullable=False),
        sa.Column("ticker", Ticker(), nullable=False),
        sa.Column(
            "data_type",
            _enum(
                "data_type",
                "price_history",
                "stock_info",
                "fundamentals",
                "income_statement",
                "balance_sheet",
                "cash_flow",
                "options_chain",
                "analyst_data",
                "news",
            ),
            nullable=False,
        ),
        sa.Column("data", JSON, nullable=False),
        sa.Column("data_source", sa.String(50), nullable=False),
        sa.Column("parameters", JSON, nullable=True),
        sa.Column("cached_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("data_quality_score", fraction, nullable=True),
        *_timestamps(),
        _range("market_data_cache", "data_quality_score", fraction, 0, 1),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_market_data_cache")),
        sa.UniqueConstraint("cache_key", name=op.f("uq_market_data_cache_cache_key")),
    )
    op.create_index(
        op.f("ix_market_data_cache_ticker_data_type"), "market_data_cache", ["ticker", "data_type"]
    )
    op.create_index(op.f("ix_market_data_cache_expires_at"), "market_data_cache", ["expires_at"])

    price, ratio = ExactDecimal(18, 6), ExactDecimal(12, 6)
    op.create_table(
        "price_history",
        sa.Column("ticker", Ticker(), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("open", price, nullable=True),
        sa.Column("high", price, nullable=True),
        sa.Column("low", price, nullable=True),
        sa.Column("close", price, nullable=False),
        sa.Column("adj_close", price, nullable=True),
        sa.Column("volume", sa.BigInteger(), nullable=True),
        sa.Column("dividends", price, nullable=False),
        sa.Column("stock_splits", ratio, nullable=False),
        sa.Column("data_source", sa.String(50), nullable=False),
        *_timestamps(),
        *(
            _range("price_history", name, price, 0)
            for name in ("open", "high", "low", "close", "adj_close")
        ),
        sa.CheckConstraint("volume >= 0", name=op.f("ck_price_history_volume_range")),
        sa.CheckConstraint("low <= high", name=op.f("ck_price_history_low_not_above_high")),
        sa.PrimaryKeyConstraint("ticker", "date", name=op.f("pk_price_history")),
    )
    op.create_table(
        "options_data",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("ticker", Ticker(), nullable=False),
        sa.Column("contract_symbol", sa.String(32), nullable=False),
        sa.Column("option_type", _enum("option_type", "call", "put"), nullable=False),
        sa.Column("strike", price, nullable=False),
        sa.Column("expiration", sa.Date(), nullable=False),
        sa.Column("last_price", price, nullable=True),
        sa.Column("bid", price, nullable=True),
        sa.Column("ask", price, nullable=True),
        sa.Column("volume", sa.BigInteger(), nullable=True),
        sa.Column("open_interest", sa.BigInteger(), nullable=True),
        *(
            sa.Column(name, ratio, nullable=True)
            for name in ("implied_volatility", "delta", "gamma", "theta", "vega", "rho")
        ),
        sa.Column("underlying_price", price, nullable=True),
        sa.Column("last_trade_date", UTCDateTime(), nullable=True),
        sa.Column("fetched_at", UTCDateTime(), nullable=False),
        *_timestamps(),
        _range("options_data", "strike", price, 0),
        sa.CheckConstraint("volume >= 0", name=op.f("ck_options_data_volume_range")),
        sa.CheckConstraint("open_interest >= 0", name=op.f("ck_options_data_open_interest_range")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_options_data")),
        sa.UniqueConstraint(
            "contract_symbol", "fetched_at", name=op.f("uq_options_data_contract_symbol_fetched_at")
        ),
    )
    op.create_index(
        op.f("ix_options_data_ticker_expiration_fetched_at"),
        "options_data",
        ["ticker", "expiration", "fetched_at"],
    )


def downgrade() -> None:
    tables = (  # children before their parents
        "options_data",
        "price_history",
        "market_data_cache",
        "analysis_results",
        "positions",
        "portfolios",
        "users",
    )
    refuse_data_loss(revision, *(Rows(table) for table in tables))
    for table in tables:
        op.drop_table(table)
