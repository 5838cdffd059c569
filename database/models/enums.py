"""Enumerations stored by value (lower-case strings)."""

from __future__ import annotations

import enum


class RiskTolerance(enum.StrEnum):
    CONSERVATIVE = "conservative"
    MODERATE = "moderate"
    AGGRESSIVE = "aggressive"


class AnalysisType(enum.StrEnum):
    VALUE_ANALYSIS = "value_analysis"
    GROWTH_ANALYSIS = "growth_analysis"
    HEALTH_ANALYSIS = "health_analysis"
    RISK_ANALYSIS = "risk_analysis"
    ECOSYSTEM_ANALYSIS = "ecosystem_analysis"
    OPTIONS_ANALYSIS = "options_analysis"
    PORTFOLIO_ANALYSIS = "portfolio_analysis"


class DataType(enum.StrEnum):
    """Kinds of market data held in the market-data cache."""

    PRICE_HISTORY = "price_history"
    STOCK_INFO = "stock_info"
    FUNDAMENTALS = "fundamentals"
    INCOME_STATEMENT = "income_statement"
    BALANCE_SHEET = "balance_sheet"
    CASH_FLOW = "cash_flow"
    OPTIONS_CHAIN = "options_chain"
    ANALYST_DATA = "analyst_data"
    NEWS = "news"
    FILE_CACHE = "file_cache"  # entries moved from the old file cache (opaque keys)


class OptionType(enum.StrEnum):
    CALL = "call"
    PUT = "put"
