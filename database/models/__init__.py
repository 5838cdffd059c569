"""SQLAlchemy models, organised by domain."""

from database.models.analysis import AnalysisResult
from database.models.base import NAMING_CONVENTION, Base
from database.models.enums import AnalysisType, DataType, OptionType, RiskTolerance
from database.models.market import MarketDataCache, OptionsData, PriceHistory
from database.models.portfolio import Portfolio, Position
from database.models.user import User

__all__ = [
    "NAMING_CONVENTION",
    "AnalysisResult",
    "AnalysisType",
    "Base",
    "DataType",
    "MarketDataCache",
    "OptionType",
    "OptionsData",
    "Portfolio",
    "Position",
    "PriceHistory",
    "RiskTolerance",
    "User",
]
