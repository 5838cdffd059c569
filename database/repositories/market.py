"""Price history and options chains: base CRUD (the bulk paths build on these)."""

from __future__ import annotations

from database.models import OptionsData, PriceHistory
from database.repositories.base import BaseRepository


class PriceHistoryRepository(BaseRepository[PriceHistory]):
    """Daily bars keyed by ``(ticker, date)``: ``get_by_id(session, ("AAPL", date))``."""

    def __init__(self) -> None:
        super().__init__(PriceHistory)


class OptionsDataRepository(BaseRepository[OptionsData]):
    def __init__(self) -> None:
        super().__init__(OptionsData)
