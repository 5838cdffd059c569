"""Services: what the application asks for, built on the repositories.

A repository stores and loads; a service decides when to, e.g. fetching on a
cache miss once for every caller waiting on the same key.
"""

from database.services.market_data import async_get_or_fetch, get_or_fetch
from database.services.single_flight import AsyncSingleFlight, SingleFlight

__all__ = ["AsyncSingleFlight", "SingleFlight", "async_get_or_fetch", "get_or_fetch"]
