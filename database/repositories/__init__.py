"""Repositories: a session in, model objects out. Sync methods and their ``async_`` twins."""

from database.repositories.analysis import AnalysisRepository
from database.repositories.base import BaseRepository
from database.repositories.market_data import MarketDataRepository
from database.repositories.options import ChainResult, OptionsDataRepository
from database.repositories.portfolio import (
    PortfolioRepository,
    PortfolioSummary,
    PositionRepository,
)
from database.repositories.price_history import PriceHistoryRepository, UpsertResult
from database.repositories.user import UserRepository

__all__ = [
    "AnalysisRepository",
    "BaseRepository",
    "ChainResult",
    "MarketDataRepository",
    "OptionsDataRepository",
    "PortfolioRepository",
    "PortfolioSummary",
    "PositionRepository",
    "PriceHistoryRepository",
    "UpsertResult",
    "UserRepository",
]
