"""Streamlit re-runs its script on every interaction, in one thread per browser session.

Streamlit's own ``AppTest`` runs two small pages (``streamlit_app.py``: the set-up
under ``st.cache_resource``; ``streamlit_app_naive.py``: ``init_database`` on every
run) again and again, from several threads at once, on both backends. One manager
and one pool serve every run; no run fails, none finds its connection closed, and
every write is there at the end. A session that changes the URL replaces the
manager without breaking a session open in another thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from argon2 import PasswordHasher, profiles
from sqlalchemy import event
from streamlit import config as streamlit_config
from streamlit.runtime import Runtime
from streamlit.testing.v1 import AppTest, app_test

import database
from database import DatabaseManager, migrate, security
from tests.conftest import RawSQL

HERE = Path(__file__).parent
RIGHT_WAY = str(HERE / "streamlit_app.py")
NAIVE = str(HERE / "streamlit_app_naive.py")
SESSIONS, RERUNS = 4, 5  # browser sessions (threads), and clicks in each
TIMEOUT = 30  # seconds a run may take


class _OneRuntime(type):
    """AppTest installs a mock ``Runtime`` for each run and removes it after; runs that
    overlap in threads would remove it under each other ("Runtime hasn't been
    created!"). A Streamlit server has one runtime for all its sessions: the first
    run's stays installed, for every run of the test."""

    def __setattr__(cls, name: str, value: Any) -> None:
        if name == "_instance" and value is not None and Runtime._instance is None:
            Runtime._instance = value


class _SharedRuntime(Runtime, metaclass=_OneRuntime):
    """What AppTest sees as ``Runtime``: it sets its mock runtime here (see _OneRuntime)."""


@pytest.fixture(autouse=True)
def streamlit_process(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No manager and nothing cached before or after; the scripts read DATABASE_URL.

    AppTest also patches ``config.get_option`` around each run; overlapping runs may
    put back another run's patch: the original is restored after the test.
    """
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setattr(app_test, "Runtime", _SharedRuntime)
    # Each visitor's first run hashes a password; argon2's cheapest profile keeps it quick.
    monkeypatch.setattr(security, "_hasher", PasswordHasher.from_parameters(profiles.CHEAPEST))
    get_option, runtime = streamlit_config.get_option, Runtime._instance
    st.cache_resource.clear()
    database.close_database()
    yield
    st.cache_resource.clear()
    database.close_database()
    streamlit_config.get_option, Runtime._instance = get_option, runtime


def visit(script: str, name: str, clicks: int, **state: Any) -> AppTest:
    """One browser session: open the page, type a name, click "Buy" ``clicks`` times."""
    app = AppTest.from_file(script, default_timeout=TIMEOUT)
    for key, value in state.items():
        app.session_state[key] = value
    app.run()
    assert not app.exception, app.exception
    app.text_input(key="name").input(name).run()
    assert not app.exception, app.exception
    for _ in range(clicks):
        app.button(key="buy").click().run()
        assert not app.exception, app.exception
    return app


class Runs:
    """What every run of every session saw: the manager it was given, its failures."""

    def __init__(self) -> None:
        self.managers: list[DatabaseManager] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()

    def session(self, script: str, name: str, clicks: int, start: threading.Barrier) -> None:
        start.wait()
        app = AppTest.from_file(script, default_timeout=TIMEOUT)
        steps: list[Callable[[], AppTest]] = [
            app.run,
            lambda: app.text_input(key="name").input(name).run(),
        ]
        steps += [lambda: app.button(key="buy").click().run()] * clicks
        for step in steps:
            try:
                step()
            except Exception as error:  # a run that times out, or AppTest's own failure
                self._fail(f"{name}: {error!r}")
                return
            with self._lock:
                self.managers.append(app.session_state["manager"])
            if app.exception:
                self._fail(f"{name}: {[e.message for e in app.exception]}")
                return

    def _fail(self, message: str) -> None:
        with self._lock:
            self.failures.append(message)


class PoolEvents:
    """Connections the manager's sync pool opened, closed and invalidated, and the most
    checked out at once (sessions open at the same time)."""

    def __init__(self, manager: DatabaseManager) -> None:
        self.opened = self.closed = self.invalidated = self.in_use = self.peak = 0
        self._lock = threading.Lock()
        pool = manager.engine.pool
        event.listen(pool, "checkout", self._checkout)
        event.listen(pool, "checkin", self._checkin)
        event.listen(pool, "connect", self._opened)
        event.listen(pool, "close", self._closed)
        event.listen(pool, "invalidate", self._invalidated)
        event.listen(pool, "soft_invalidate", self._invalidated)

    def _checkout(self, *_: Any) -> None:
        with self._lock:
            self.in_use += 1
            self.peak = max(self.peak, self.in_use)

    def _checkin(self, *_: Any) -> None:
        with self._lock:
            self.in_use -= 1

    def _opened(self, *_: Any) -> None:
        self.opened += 1

    def _closed(self, *_: Any) -> None:
        self.closed += 1

    def _invalidated(self, *_: Any) -> None:
        self.invalidated += 1


def shares_by_user(url: str) -> dict[str, Decimal]:
    raw = RawSQL(url)
    try:
        rows = raw.rows(
            "SELECT u.username, p.shares FROM positions p "
            "JOIN portfolios f ON f.id = p.portfolio_id JOIN users u ON u.id = f.user_id"
        )
    finally:
        raw.close()
    scale = Decimal(10**6) if raw.backend == "sqlite" else Decimal(1)
    return {name: Decimal(shares) / scale for name, shares in rows}


def test_one_session_rerun_keeps_one_manager_and_its_pool(database_url: str) -> None:
    app = AppTest.from_file(RIGHT_WAY, default_timeout=TIMEOUT).run()
    manager: DatabaseManager = app.session_state["manager"]
    assert database.active_database() is manager
    app.text_input(key="name").input("ada").run()
    engine = manager.engine
    events = PoolEvents(manager)
    for clicks in range(1, RERUNS + 1):
        app.button(key="buy").click().run()
        assert not app.exception, app.exception
        assert app.session_state["manager"] is manager
        assert database.active_database() is manager
        assert manager.engine is engine  # never closed and made again
        assert manager.pool_status().checked_out == 0  # every session gave its connection back
        assert app.metric[0].value == f"{200 * clicks}.0000"  # at the close set-up stored
        assert app.dataframe[0].value["shares"].tolist() == [Decimal(clicks)]
    assert events.closed == events.invalidated == 0
    assert events.opened <= 1  # one session at a time: one connection, kept in the pool
    assert shares_by_user(database_url) == {"ada": RERUNS}


@pytest.mark.parametrize("script", [RIGHT_WAY, NAIVE], ids=["cache_resource", "naive"])
def test_sessions_rerun_in_parallel_threads_share_one_manager_and_pool(
    script: str, database_url: str
) -> None:
    # The first visit makes the manager (and, for the right way, caches it).
    visit(script, "first", clicks=1)
    manager = database.active_database()
    assert manager is not None
    engine = manager.engine
    events = PoolEvents(manager)
    runs = Runs()
    start = threading.Barrier(SESSIONS)
    with ThreadPoolExecutor(SESSIONS, thread_name_prefix="browser-session") as sessions:
        futures = [
            sessions.submit(runs.session, script, f"visitor{n}", RERUNS, start)
            for n in range(SESSIONS)
        ]
        for future in futures:
            future.result()
    assert runs.failures == []
    assert len(runs.managers) == SESSIONS * (RERUNS + 2)  # open, type a name, click
    assert all(given is manager for given in runs.managers)  # every run: the one manager
    assert database.active_database() is manager
    assert manager.engine is engine  # the pool was never disposed and made again
    status = manager.pool_status()
    assert status.checked_out == 0
    assert events.closed == events.invalidated == 0  # no connection closed under anyone
    assert events.peak >= 2  # the sessions' runs did overlap
    assert events.opened <= SESSIONS  # at most one connection per concurrent session
    assert manager.open_connections <= SESSIONS
    expected = {"first": Decimal(1), **{f"visitor{n}": Decimal(RERUNS) for n in range(SESSIONS)}}
    assert shares_by_user(database_url) == expected


@pytest.fixture
def other_url(request: pytest.FixtureRequest) -> str:
    """A second migrated database of the backend under test."""
    url: str = request.getfixturevalue("empty_url")
    migrate.upgrade(url)
    return url


def test_another_url_in_a_rerun_replaces_the_manager_but_not_an_open_session(
    database_url: str, other_url: str
) -> None:
    """A session that changes the URL (its configuration changed) makes a new manager
    and closes the old one's pools, as ``init_database`` documents: a session of the
    old manager still open in another thread keeps its connection to the end, which
    is then closed; the rest of that run uses the new process-wide manager."""
    visit(NAIVE, "ada", clicks=1)
    old = database.active_database()
    assert old is not None
    events = PoolEvents(old)

    inside, hold = threading.Event(), threading.Event()
    held = AppTest.from_file(NAIVE, default_timeout=TIMEOUT)
    held.session_state["hold"], held.session_state["inside"] = hold, inside
    held.run()
    outcome: list[AppTest] = []

    def run_held() -> None:
        outcome.append(held.text_input(key="name").input("ada").run())

    thread = threading.Thread(target=run_held, name="browser-session-held")
    thread.start()
    try:
        assert inside.wait(TIMEOUT), "the held session never opened"
        assert old.pool_status().checked_out == 1
        # Another browser session re-runs with another URL.
        switched = visit(NAIVE, "bob", clicks=1, database_url=other_url)
        new: DatabaseManager = switched.session_state["manager"]
        assert new is not old
        assert database.active_database() is new
        assert not old.sync_engine_started  # its pool was disposed...
        assert events.closed == 0  # ...but the connection in use was not closed
    finally:
        hold.set()
        thread.join(TIMEOUT)
    assert outcome, "the held run did not finish"
    assert not outcome[0].exception, outcome[0].exception  # its session committed
    assert events.invalidated == 1  # the held connection, closed once given back
    assert old.open_connections == 0
    # The rest of the held run reached the new process-wide database, where ada has no
    # portfolio: one process, one URL at a time.
    assert outcome[0].metric[0].value == "0"
    assert shares_by_user(database_url) == {"ada": Decimal(1)}
    assert shares_by_user(other_url) == {"bob": Decimal(1)}
    # Its next run sets the first URL again, and closes the second manager's pools in turn.
    held.run()
    assert not held.exception, held.exception
    assert database.active_database() not in (old, new)
    assert not new.sync_engine_started
