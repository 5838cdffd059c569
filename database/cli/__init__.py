"""``buffetbot-db``: migrate, inspect, import and clean BuffetBot's database."""

from database.cli.app import app, main

__all__ = ["app", "main"]
