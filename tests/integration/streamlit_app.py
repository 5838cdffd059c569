"""A Streamlit page set up the right way: the database once per process.

Streamlit runs this script again on every interaction, in one thread per
browser session. ``st.cache_resource`` runs ``connect`` once per URL for the
whole process: every re-run of every session gets the same manager and pools.
"""

from __future__ import annotations

import os

import streamlit as st

from database import DatabaseManager, init_database
from tests.integration.streamlit_app_page import seed_prices, show_portfolio


@st.cache_resource
def connect(url: str) -> DatabaseManager:
    db = init_database(url)
    seed_prices(db)  # one-time set-up goes here too (migrate.upgrade(), if the app migrates)
    return db


show_portfolio(connect(os.environ["DATABASE_URL"]))
