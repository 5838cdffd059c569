"""Hostile input into every public entry point gets a typed error, alike on both backends.

For each generated input, on SQLite and on PostgreSQL, in the sync or the async
form: only :class:`~database.exceptions.DatabaseError` subclasses escape; a
``ValidationError`` or ``InvalidCriteriaError`` names one of the fields given;
no row changed (plain SQL); and both backends give the same verdict.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from database import DatabaseManager
from database.models import (
    AnalysisResult,
    MarketDataCache,
    OptionsData,
    Portfolio,
    Position,
    PriceHistory,
    User,
)
from database.models.base import Base
from database.prices import BAR_FIELDS
from database.repositories import (
    AnalysisRepository,
    MarketDataRepository,
    OptionsDataRepository,
    PortfolioRepository,
    PriceHistoryRepository,
    UserRepository,
)
from tests.property.conftest import Pair
from tests.property.strategies import (
    HOSTILE,
    JSON_OBJECTS,
    NOT_COLUMNS,
    TICKERS,
    column_values,
    criteria,
    keyword_names,
    page,
)

users = UserRepository()
portfolios = PortfolioRepository()
analyses = AnalysisRepository()
market = MarketDataRepository()
options = OptionsDataRepository()
prices = PriceHistoryRepository()

OWNER = uuid.UUID("00000000-0000-4000-8000-000000000001")
OTHER = uuid.UUID("00000000-0000-4000-8000-000000000002")
PORTFOLIO = uuid.UUID("00000000-0000-4000-8000-000000000003")
POSITION = uuid.UUID("00000000-0000-4000-8000-000000000004")
ANALYSIS = uuid.UUID("00000000-0000-4000-8000-000000000005")
PASSWORD = "correct horse battery"
EXPIRY = dt.date(2030, 1, 18)
SNAPSHOT = dt.datetime(2026, 1, 2, 15, 30, tzinfo=dt.UTC)
MODES = st.sampled_from(["sync", "async"])


def arguments(data: st.DataObject, **valid: st.SearchStrategy[Any]) -> dict[str, Any]:
    """A valid value for each argument but (usually) one, which gets a hostile value."""
    hostile = data.draw(st.sampled_from([None, *valid]))
    return {
        name: data.draw(HOSTILE if name == hostile else strategy)
        for name, strategy in valid.items()
    }


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a valid value, sometimes a hostile one: so that most calls get far
    enough for the next hostile value to matter."""
    return st.one_of(valid, valid, valid, HOSTILE)


def _seed(db: DatabaseManager) -> None:
    """The same rows, with the same keys, on each backend."""
    with db.get_session() as s:
        for key, name in ((OWNER, "owner"), (OTHER, "other")):
            users.create_user(
                s, id=key, email=f"{name}@example.com", username=name, password=PASSWORD
            )
        portfolios.create(s, id=PORTFOLIO, user_id=OWNER, name="Core")
        portfolios.add_position(
            s, PORTFOLIO, user_id=OWNER, id=POSITION, ticker="AAPL", shares=10, average_cost="150"
        )
        analyses.save(
            s,
            id=ANALYSIS,
            portfolio_id=PORTFOLIO,
            ticker="AAPL",
            analysis_type="value_analysis",
            score=Decimal("1.5"),
            user_id=OWNER,
        )
        prices.upsert(
            s,
            [{"date": dt.date(2026, 1, d), "close": 100 + d, "volume": 1000} for d in (2, 5, 6)],
            ticker="AAPL",
        )
        options.store_chain(
            s,
            "AAPL",
            rows=[{"strike": 150, "option_type": "call", "bid": 1.5}],
            expiration=EXPIRY,
            fetched_at=SNAPSHOT,
        )
        market.cache_market_data(s, "AAPL", "stock_info", {"name": "Apple"}, ttl=3600)


def seeded(pair: Pair) -> Pair:
    if not pair.baseline:
        pair.seed(_seed)
    return pair


# Each model: the repository that creates it, the keywords it always gets (so that
# many examples reach the SQL), and the method's own parameter names (a generated
# keyword of that name would be a Python call error, not an input value).
def _user_base(draw: st.DrawFn) -> dict[str, Any]:
    name = "u" + uuid.UUID(int=draw(st.integers(0, 2**64))).hex[:12]
    return {"email": f"{name}@example.com", "username": name, "hashed_password": "x"}


CREATES: dict[type[Base], tuple[Any, str, dict[str, Any], set[str]]] = {
    User: (users, "create", {}, set()),
    Portfolio: (portfolios, "create", {"user_id": OWNER, "name": "Growth"}, set()),
    Position: (portfolios, "add_position", {"ticker": "MSFT", "shares": 1}, {"portfolio_id"}),
    AnalysisResult: (analyses, "save", {"ticker": "AAPL", "analysis_type": "risk_analysis"}, set()),
    MarketDataCache: (
        market,
        "create",
        {
            "cache_key": "k" * 64,
            "ticker": "AAPL",
            "data_type": "news",
            "data": {},
            "expires_at": SNAPSHOT,
        },
        set(),
    ),
    OptionsData: (
        options,
        "create",
        {
            "ticker": "AAPL",
            "contract_symbol": "AAPL300118P00100000",
            "option_type": "put",
            "strike": 100,
            "expiration": EXPIRY,
        },
        set(),
    ),
    PriceHistory: (prices, "create", {"ticker": "MSFT", "date": EXPIRY, "close": 1}, set()),
}
_RESERVED = {"session", "self", "user_id"}


@st.composite
def creations(draw: st.DrawFn) -> tuple[Any, str, dict[str, Any], dict[str, Any]]:
    model = draw(st.sampled_from(list(CREATES)))
    repo, method, base, params = CREATES[model]
    values = dict(base, **(_user_base(draw) if model is User else {}))
    values.update(draw(column_values(model)))
    extra = draw(st.dictionaries(keyword_names(model), HOSTILE, max_size=2))
    values.update(extra)
    scoped: dict[str, Any] = {}
    if model in (Position, AnalysisResult):
        scoped["user_id"] = OWNER
        values = {k: v for k, v in values.items() if k not in _RESERVED | params}
    else:
        values = {k: v for k, v in values.items() if k not in (_RESERVED - {"user_id"}) | params}
        if model is not Portfolio:
            values.pop("user_id", None)
    if model is Position:
        scoped["portfolio_id"] = PORTFOLIO
    return repo, method, values, scoped


@given(data=st.data())
def test_create_with_hostile_values(pair: Pair, data: st.DataObject) -> None:
    repo, method, values, scoped = data.draw(creations())
    mode = data.draw(MODES)
    seeded(pair)

    def call(session: Any, prefix: str) -> Any:
        function = getattr(repo, prefix + method)
        if method == "add_position":
            return function(session, scoped["portfolio_id"], user_id=scoped["user_id"], **values)
        return function(session, **values, **{k: v for k, v in scoped.items()})

    pair.check(mode, call, names=set(values) | {"metadata", "id"})


UPDATES: dict[type[Base], tuple[Any, tuple[Any, ...], dict[str, Any], set[str]]] = {
    User: (users, (OWNER,), {}, {"instance_or_id", "user_id"}),
    Portfolio: (portfolios, (PORTFOLIO,), {"user_id": OWNER}, {"instance_or_id", "user_id"}),
    Position: (portfolios, (PORTFOLIO, "AAPL"), {"user_id": OWNER}, {"portfolio_id", "ticker"}),
    AnalysisResult: (analyses, (ANALYSIS,), {"user_id": OWNER}, {"instance_or_id", "user_id"}),
}


@given(data=st.data())
def test_update_with_hostile_values(pair: Pair, data: st.DataObject) -> None:
    model = data.draw(st.sampled_from(list(UPDATES)))
    repo, args, scoped, params = UPDATES[model]
    values = data.draw(column_values(model))
    values.update(data.draw(st.dictionaries(keyword_names(model), HOSTILE, max_size=2)))
    values = {k: v for k, v in values.items() if k not in _RESERVED | params}
    method = "update_position" if model is Position else "update"
    mode = data.draw(MODES)
    seeded(pair)

    def call(session: Any, prefix: str) -> Any:
        return getattr(repo, prefix + method)(session, *args, **scoped, **values)

    pair.check(mode, call, names=set(values) | {"metadata"})


QUERIED: dict[type[Base], tuple[Any, dict[str, Any]]] = {
    User: (users, {}),
    Portfolio: (portfolios, {}),
    Position: (portfolios.positions, {"user_id": OWNER}),
    AnalysisResult: (analyses, {"user_id": OWNER}),
    MarketDataCache: (market, {}),
    OptionsData: (options, {}),
    PriceHistory: (prices, {}),
}
QUERIES = ["get_by_criteria", "get_one_by_criteria", "count", "exists", "list"]


@given(data=st.data())
def test_criteria_and_pages_of_every_kind(pair: Pair, data: st.DataObject) -> None:
    model = data.draw(st.sampled_from(list(QUERIED)))
    repo, scoped = QUERIED[model]
    method = data.draw(st.sampled_from(QUERIES))
    where = data.draw(criteria(model))
    paging = data.draw(page(model)) if method == "list" else {}
    where = {k: v for k, v in where.items() if k not in _RESERVED | set(scoped)}
    mode = data.draw(MODES)
    seeded(pair)
    names = set(where) | set(paging)
    order = paging.get("order_by")
    entries = list(order) if isinstance(order, list | tuple) else [order]
    names |= {repr(order)} | {repr(o) for o in entries}
    names |= {str.removeprefix(o, "-") for o in entries if isinstance(o, str)}

    def call(session: Any, prefix: str) -> Any:
        return getattr(repo, prefix + method)(session, **scoped, **paging, **where)

    pair.check(mode, call, names=names)


# -- price history: dict rows and frames ---------------------------------------------------

_BAR_KEYS = [
    "Date",
    "date",
    "Datetime",
    "Open",
    "High",
    "Low",
    "Close",
    "close",
    "Adj Close",
    "Volume",
    "Dividends",
    "Stock Splits",
    "Capital Gains",
    "ticker",
    "Symbol",
    "bogus",
    "",
]
_bar_values = st.one_of(
    st.floats(0.01, 1e6),
    st.integers(0, 10**6),
    st.dates(dt.date(1678, 1, 1), dt.date(2261, 12, 31)),
    TICKERS,
    HOSTILE,
)
_PRICES = ["Open", "High", "Low", "Adj Close", "Volume", "Dividends", "Stock Splits"]
_bars = st.lists(
    st.builds(
        lambda row, extra: {**row, **extra},
        st.fixed_dictionaries(
            {
                "date": mostly(st.dates(dt.date(2000, 1, 1), dt.date(2030, 1, 1))),
                "close": mostly(st.floats(1, 1e4)),
            },
            optional={key: mostly(st.floats(0, 1e13) | st.integers(0, 2**64)) for key in _PRICES},
        ),
        st.just({}) | st.dictionaries(st.sampled_from(_BAR_KEYS), _bar_values, max_size=1),
    ),
    max_size=4,
)


@st.composite
def bar_sources(draw: st.DrawFn) -> Any:
    rows = draw(_bars)
    form = draw(st.sampled_from(["rows", "frame", "iterator", "rows", "frame", "hostile"]))
    if form == "hostile":
        return draw(HOSTILE)
    if form == "iterator":
        return iter(rows)
    if form == "frame":
        try:
            return pd.DataFrame.from_records(rows)
        except Exception:  # pandas cannot make a frame of these: send the rows
            return rows
    return rows


@given(data=st.data())
def test_price_history_upsert_of_hostile_bars(pair: Pair, data: st.DataObject) -> None:
    source = data.draw(bar_sources())
    given = arguments(data, ticker=TICKERS, data_source=st.just("yfinance"))
    ticker, data_source = given["ticker"], given["data_source"]
    skip = data.draw(st.booleans())
    mode = data.draw(MODES)
    seeded(pair)
    rows = list(source) if hasattr(source, "__next__") else source
    names = {*BAR_FIELDS, *_BAR_KEYS, "data", "ticker", "data_source", "row", "symbol"}

    def call(session: Any, prefix: str) -> Any:
        given_data = iter(rows) if hasattr(source, "__next__") else rows
        upsert = getattr(prices, prefix + "upsert")
        return upsert(
            session, given_data, ticker=ticker, skip_invalid=skip, data_source=data_source
        )

    pair.check(mode, call, names=names)


_days = st.one_of(
    st.none(),
    st.dates(),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    st.sampled_from(["2026-01-05", "2026-01-05T23:00:00-05:00", "not a date", ""]),
    HOSTILE,
)
_ticker_lists = st.one_of(st.lists(TICKERS | HOSTILE, max_size=3), HOSTILE)
_READS = ["get_range", "get_frame", "get_close_as_of", "get_latest_closes", "get_freshness"]


@settings(max_examples=max(20, settings.default.max_examples // 5))
@given(data=st.data())
def test_price_history_reads_of_hostile_arguments(pair: Pair, data: st.DataObject) -> None:
    method = data.draw(st.sampled_from(_READS))
    ticker = data.draw(mostly(TICKERS))
    if method in ("get_range", "get_frame"):
        args: tuple[Any, ...] = (ticker, data.draw(_days), data.draw(_days))
    elif method == "get_close_as_of":
        args = (ticker, data.draw(_days))
    else:
        args = (data.draw(_ticker_lists),)
    mode = data.draw(MODES)
    seeded(pair)

    def call(session: Any, prefix: str) -> Any:
        return getattr(prices, prefix + method)(session, *args)

    pair.check(mode, call, names={"ticker", "tickers", "start", "end", "day"})


# -- option chains ---------------------------------------------------------------------------

_CHAIN_KEYS = [
    "contractSymbol",
    "strike",
    "lastPrice",
    "bid",
    "ask",
    "volume",
    "openInterest",
    "impliedVolatility",
    "lastTradeDate",
    "expiration",
    "option_type",
    "delta",
    "inTheMoney",
    "bogus",
]
_NUMERIC = {"lastPrice", "bid", "ask", "volume", "openInterest", "impliedVolatility", "delta"}
_contract_values = st.one_of(
    st.floats(0, 1e4),
    st.integers(-5, 10**6),
    st.sampled_from(
        [
            "call",
            "put",
            "C",
            "AAPL300118C00150000",
            "AAPL300118C00150000\x00",
            "NVDA300118C00150000",  # another underlying's contract
            "AAPL300118P00150000",  # a put, in a row of calls
            "AAPL991231C00150000",  # another expiration
            "AAPL300118C00120000",  # another strike
        ]
    ),
    st.datetimes(dt.datetime(1990, 1, 1), dt.datetime(2100, 1, 1)),
    st.floats(0, 1e4),
    HOSTILE,
)
_contracts = st.lists(
    st.fixed_dictionaries(
        {"strike": mostly(st.floats(1, 1e3))},
        optional={
            key: mostly(st.floats(0, 1e3)) if key in _NUMERIC else _contract_values
            for key in _CHAIN_KEYS
            if key not in ("strike", "bogus", "inTheMoney")
        },
    ).flatmap(
        lambda row: (
            st.just(row)
            | st.dictionaries(
                st.sampled_from(["bogus", "inTheMoney", "lastTradeDate"]), HOSTILE, max_size=1
            ).map(lambda extra: {**row, **extra})
        ),
    ),
    max_size=3,
)


def _frame_or_none(rows: list[dict[str, Any]]) -> pd.DataFrame | None:
    try:
        return pd.DataFrame.from_records(rows)
    except Exception:  # pandas cannot make a frame of these (a time zone that fails...)
        return None


@given(data=st.data())
def test_option_chain_store_and_read(pair: Pair, data: st.DataObject) -> None:
    given = arguments(
        data,
        rows=_contracts,
        frame=st.none() | _contracts.map(_frame_or_none),
        ticker=TICKERS,
        expiration=st.just(EXPIRY) | st.none() | st.dates(),
        fetched_at=st.just(SNAPSHOT) | st.none(),
        underlying=st.none() | st.floats(0, 1e4),
        as_of=st.none() | st.just(SNAPSHOT),
    )
    rows, frame, ticker = given["rows"], given["frame"], given["ticker"]
    expiration, fetched_at, as_of = given["expiration"], given["fetched_at"], given["as_of"]
    underlying = given["underlying"]
    skip = data.draw(st.booleans())
    mode = data.draw(MODES)
    seeded(pair)
    names = {*_CHAIN_KEYS, "contract_symbol", "open_interest", "last_trade_date", "last_price"}
    names |= {"implied_volatility", "calls", "puts", "rows", "ticker", "expiration", "fetched_at"}
    names |= {"underlying_price", "as_of", "data"}

    def call(session: Any, prefix: str) -> Any:
        store = getattr(options, prefix + "store_chain")
        result = store(
            session,
            ticker,
            rows=rows,
            calls=frame,
            expiration=expiration,
            underlying_price=underlying,
            fetched_at=fetched_at,
            skip_invalid=skip,
        )
        if prefix:
            chain = options.async_get_chain
            return _then(result, lambda: chain(session, ticker, expiration, as_of=as_of))
        return options.get_chain(session, ticker, expiration, as_of=as_of)

    pair.check(mode, call, names=names)


async def _then(first: Any, second: Any) -> Any:
    await first
    return await second()


# -- market-data cache ---------------------------------------------------------------------

_payloads = st.one_of(
    JSON_OBJECTS,
    st.lists(HOSTILE, max_size=3),
    st.dictionaries(HOSTILE.filter(lambda k: _hashable(k)), HOSTILE, max_size=2),
    # object columns: pyarrow-backed strings (pandas 3 with pyarrow) cannot hold a surrogate.
    st.just(pd.DataFrame({"a\x00": ["\x00", "\ud800"], "b": [1.5, float("nan")]}, dtype=object)),
)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except Exception:  # unhashable, or a time zone that fails while hashing
        return False
    return True


@given(data=st.data())
def test_market_data_cache_set_and_get(pair: Pair, data: st.DataObject) -> None:
    given = arguments(
        data,
        ticker=TICKERS,
        data_type=st.sampled_from(["stock_info", "NEWS", "file_cache"]),
        payload=_payloads,
        parameters=st.none() | JSON_OBJECTS,
        ttl=st.just(60) | st.timedeltas(dt.timedelta(seconds=1)) | st.floats(0.001, 1e9),
        source=st.just("yfinance"),
        quality=st.none() | st.just("0.5"),
        invalidate=st.none() | TICKERS,
    )
    ticker, data_type, payload = given["ticker"], given["data_type"], given["payload"]
    parameters, ttl, source = given["parameters"], given["ttl"], given["source"]
    quality, invalidate = given["quality"], given["invalidate"]
    mode = data.draw(MODES)
    seeded(pair)
    names = {"ticker", "data_type", "data", "parameters", "ttl", "data_source"}
    names |= {"data_quality_score", "invalidate"}

    def call(session: Any, prefix: str) -> Any:
        put = getattr(market, prefix + "cache_market_data")
        get = getattr(market, prefix + "get_cached_data")
        entry = getattr(market, prefix + "get_cached_entry")
        drop = getattr(market, prefix + "invalidate")
        steps = [
            lambda: get(session, ticker, data_type, parameters, default=None),
            lambda: entry(session, ticker, data_type, parameters),
            lambda: put(
                session,
                ticker,
                data_type,
                payload,
                parameters=parameters,
                ttl=ttl,
                data_source=source,
                data_quality_score=quality,
            ),
            lambda: get(session, ticker, data_type, parameters),
            lambda: drop(session, ticker=invalidate, data_type=data_type),
        ]
        if not prefix:
            for step in steps:
                step()
            return None
        return _all(steps)

    pair.check(mode, call, names=names)


async def _all(steps: list[Any]) -> None:
    for step in steps:
        await step()


# -- sign-up and sign-in -----------------------------------------------------------------

_passwords = st.one_of(
    st.just(PASSWORD),
    st.text(min_size=8, max_size=20),
    HOSTILE,
)
_logins = st.one_of(
    st.sampled_from(["owner", "OWNER@example.com", " owner ", "other"]),
    HOSTILE,
)


# argon2 is slow on purpose: fewer examples here.
@settings(max_examples=max(20, settings.default.max_examples // 6))
@given(data=st.data())
def test_sign_up_and_sign_in(pair: Pair, data: st.DataObject) -> None:
    action = data.draw(st.sampled_from(["create_user", "authenticate", "set_password"]))
    mode = data.draw(MODES)
    password = data.draw(_passwords)
    if action == "create_user":
        values = data.draw(column_values(User))
        values.update(data.draw(st.dictionaries(keyword_names(User), HOSTILE, max_size=2)))
        values = {k: v for k, v in values.items() if k not in _RESERVED | {"password"}}
        args: tuple[Any, ...] = ()
        keywords: dict[str, Any] = {"password": password, **values}
    elif action == "authenticate":
        args, keywords = (data.draw(_logins), password), {}
    else:
        args, keywords = (data.draw(st.one_of(st.just(OWNER), HOSTILE)), password), {}
    seeded(pair)
    names = set(keywords) | {"password", "login", "hashed_password", "id", "user_or_id"}

    def call(session: Any, prefix: str) -> Any:
        return getattr(users, prefix + action)(session, *args, **keywords)

    pair.check(mode, call, names=names)


def test_secret_columns_cannot_be_filtered_ordered_or_updated(pair: Pair) -> None:
    seeded(pair)
    for criterion in (
        {"hashed_password": "x"},
        {"hashed_password__contains": "$argon2"},
        {"order_by": "hashed_password"},
        {"order_by": ["-hashed_password"]},
    ):
        verdict = pair.check("sync", lambda s, p, c=criterion: users.list(s, **c))
        assert verdict.name == "InvalidCriteriaError"
    verdict = pair.check("sync", lambda s, p: users.update(s, OWNER, hashed_password="x"))
    assert verdict.name == "ValidationError"


def test_keywords_that_are_not_columns_are_refused(pair: Pair) -> None:
    seeded(pair)
    for name in NOT_COLUMNS:
        values = {"ticker": "AAPL", "analysis_type": "risk_analysis", name: {}}
        if name == "metadata":
            continue  # the documented alias of analysis_metadata
        verdict = pair.check("sync", lambda s, p, v=values: analyses.save(s, **v))
        assert verdict.name in {"UnknownFieldError", "ValidationError"}, (name, verdict.error)
        assert getattr(verdict.error, "field", None) == name
