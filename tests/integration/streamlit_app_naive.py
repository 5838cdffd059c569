"""A Streamlit page set up the naive way: ``init_database`` on every run.

Newcomers write this. It is safe: called again with the same URL and options,
``init_database`` returns the live manager, pools untouched. The URL comes from
``st.session_state["database_url"]`` when a test sets it (a session whose
configuration changed), else from the environment.
"""

from __future__ import annotations

import os

import streamlit as st

from database import init_database
from tests.integration.streamlit_app_page import show_portfolio

db = init_database(st.session_state.get("database_url", os.environ["DATABASE_URL"]))
show_portfolio(db)
