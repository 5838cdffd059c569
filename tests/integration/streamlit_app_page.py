"""The page both Streamlit test scripts show, once the database is set up.

A visitor types a name; the page finds (or opens) their account and portfolio,
buys one share of AAPL per click, and shows the portfolio valued at the latest
close. Every read and write goes through the process-wide manager's sessions,
as an app's pages do.

Test hooks, read from ``st.session_state`` (an app has none of them):
``hold`` (a ``threading.Event``), waited for inside an open session, after
``inside`` (another) is set: a test switches the database meanwhile.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pandas as pd
import streamlit as st
from sqlalchemy import text

from database import DatabaseManager, get_database_session
from database.models import Portfolio, User
from database.repositories import PortfolioRepository, PriceHistoryRepository, UserRepository

users, portfolios = UserRepository(), PortfolioRepository()
CLOSE = Decimal("200")


def seed_prices(db: DatabaseManager) -> None:
    """One AAPL bar, so that the page has a price to value the portfolio at."""
    bar = {"date": dt.date(2024, 1, 2), "open": 199, "high": 201, "low": 198, "close": CLOSE}
    with db.get_session() as session:
        PriceHistoryRepository().upsert(session, [{**bar, "volume": 1000}], ticker="AAPL")


def open_account(name: str) -> tuple[User, Portfolio]:
    """The visitor's account and portfolio, made on their first visit.

    Read in one session, write in another: a session whose first statement
    writes waits its turn on SQLite, where one that read first may find its
    snapshot stale ("database is locked") once another visitor has written.
    """
    with get_database_session() as session:
        user = users.get_by_username(session, name)
        owned = [] if user is None else portfolios.get_user_portfolios(session, user.id)
    if user is not None and owned:
        return user, owned[0]
    with get_database_session() as session:
        if user is None:
            user = users.create_user(
                session, email=f"{name}@example.com", username=name, password="hunter2hunter2"
            )
        portfolio = portfolios.create(
            session, user_id=user.id, name="Streamlit", target_cash_percentage=Decimal("5")
        )
    return user, portfolio


def show_portfolio(db: DatabaseManager) -> None:
    st.session_state["manager"] = db  # what this run was given, for the tests to compare
    name = st.text_input("Your name", key="name")
    if not name:
        st.stop()
    user, portfolio = open_account(name)
    with get_database_session(user_id=user.id) as session:
        summary = portfolios.get_summary(session, portfolio.id, user_id=user.id)
        hold = st.session_state.get("hold")
        if hold is not None:  # a test switches the database while this session is open
            st.session_state["inside"].set()
            assert hold.wait(10), "the test never released the session"
            session.execute(text("SELECT 1"))  # the connection it had still works
    st.caption(f"{summary.position_count} position(s)")
    if st.button("Buy one share", key="buy"):
        with get_database_session(user_id=user.id) as session:
            portfolios.adjust_position(
                session, portfolio.id, "AAPL", shares=1, price=CLOSE, user_id=user.id
            )
    with get_database_session(user_id=user.id) as session:
        held = portfolios.get_position_by_ticker(session, portfolio.id, "AAPL", user_id=user.id)
        if held is None:
            st.metric("Market value", "0")
            return
        valuation = portfolios.value_portfolio(session, portfolio.id, user_id=user.id)
    st.metric("Market value", f"{valuation.total_market_value}")
    rows = [
        {"ticker": p.ticker, "shares": p.shares, "close": p.close, "value": p.market_value}
        for p in valuation.positions
    ]
    st.dataframe(pd.DataFrame(rows))
