"""Price history and options chains: base CRUD (the bulk paths build on these)."""

from __future__ import annotations

from database.models import OptionsData
from database.repositories.base import BaseRepository


class OptionsDataRepository(BaseRepository[OptionsData]):
    def __init__(self) -> None:
        super().__init__(OptionsData)
