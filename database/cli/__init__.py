"""``buffetbot-db``: migrate, inspect, import and clean BuffetBot's database."""

from __future__ import annotations

import sys
from typing import Any

# Installed by the ``cli`` extra; a bare ``pip install buffetbot-database`` lacks them.
_CLI_PACKAGES = frozenset({"typer", "click", "rich", "prometheus_client"})


def main() -> Any:
    """The console script: a one-line hint, not a traceback, without the ``cli`` extra."""
    try:
        from database.cli.app import main as run_cli
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] not in _CLI_PACKAGES:
            raise
        sys.exit(
            f"buffetbot-db needs the '{error.name}' package: install this package with its cli"
            " extra, pip install '<path or git URL of buffetbot-database>[cli]'"
        )
    return run_cli()


def __getattr__(name: str) -> Any:
    if name == "app":
        from database.cli.app import app

        return app
    raise AttributeError(name)


__all__ = ["app", "main"]
