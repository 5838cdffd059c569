"""What the benchmark scripts share: where PostgreSQL comes from."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.pg_server import throwaway_postgres


@contextlib.contextmanager
def postgres(url: str | None) -> Iterator[str]:
    """``url`` if given, else a throwaway server's, stopped afterwards."""
    if url:
        yield url
        return
    with throwaway_postgres() as server:
        yield server
