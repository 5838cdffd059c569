"""How autogenerate writes the package's own column types into migration scripts."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate.api import AutogenContext

from database.types import ExactDecimal, LowerCaseString, Ticker, UTCDateTime


def render_item(kind: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    if kind != "type":
        return False
    autogen_context.imports.add("import database.types")
    if isinstance(obj, ExactDecimal):
        return f"database.types.ExactDecimal({obj.precision}, {obj.scale})"
    if isinstance(obj, UTCDateTime):
        return "database.types.UTCDateTime()"
    if isinstance(obj, Ticker):
        return "database.types.Ticker()"
    if isinstance(obj, LowerCaseString):
        length = getattr(obj.impl_instance, "length", None)
        return f"database.types.LowerCaseString({length})"
    return False
