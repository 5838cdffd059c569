"""Users, portfolios, analysis results and the market-data cache, on both backends."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from decimal import Decimal

import pytest

from database import DatabaseManager
from database.exceptions import DuplicateError, InvalidCriteriaError, NotFoundError, ValidationError
from database.models import AnalysisType, DataType, Portfolio, User
from database.repositories import (
    AnalysisRepository,
    MarketDataRepository,
    OptionsDataRepository,
    PortfolioRepository,
    UserRepository,
)
from tests.conftest import RawSQL
from tests.integration.conftest import UnitOfWork, row_count_statements

# Every PostgreSQL test here runs once more through PgBouncer (transaction pooling).
pytestmark = pytest.mark.pgbouncer

users = UserRepository()
portfolios = PortfolioRepository()
analyses = AnalysisRepository()
cache = MarketDataRepository()

PASSWORD = "correct horse battery"


# -- users ------------------------------------------------------------------------------


async def test_passwords_are_stored_only_as_argon2id_hashes(
    uow: UnitOfWork, sql: RawSQL, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    user = await uow(users.create_user, email="a@example.com", username="alice", password=PASSWORD)
    stored = sql.scalar("SELECT hashed_password FROM users")
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    assert PASSWORD not in repr(user)
    assert PASSWORD not in caplog.text


async def test_short_passwords_are_refused_without_echoing_them(
    uow: UnitOfWork, sql: RawSQL
) -> None:
    with pytest.raises(ValidationError) as caught:
        await uow(users.create_user, email="a@example.com", username="alice", password="abc")
    assert caught.value.field == "password"
    assert "abc" not in str(caught.value)
    assert sql.count("users") == 0


async def test_authenticate_by_email_or_username(uow: UnitOfWork) -> None:
    created = await uow(
        users.create_user, email="a@example.com", username="alice", password=PASSWORD
    )
    assert (await uow(users.authenticate, "A@Example.com", PASSWORD)).id == created.id
    assert (await uow(users.authenticate, "alice", PASSWORD)).id == created.id
    assert await uow(users.authenticate, "alice", "wrong password") is None
    assert await uow(users.authenticate, "nobody@example.com", PASSWORD) is None
    await uow(users.update, created.id, is_active=False)
    assert await uow(users.authenticate, "alice", PASSWORD) is None


async def test_lookups_and_login_time(uow: UnitOfWork) -> None:
    created = await uow(
        users.create_user, email="a@example.com", username="alice", password=PASSWORD
    )
    assert (await uow(users.get_by_email, " A@EXAMPLE.COM")).id == created.id
    assert (await uow(users.get_by_username, "alice")).id == created.id
    assert await uow(users.get_by_username, "bob") is None
    before = dt.datetime.now(dt.UTC)
    stamped = await uow(users.record_login, created)
    assert stamped.last_login_at >= before - dt.timedelta(seconds=1)


# -- portfolios --------------------------------------------------------------------------


async def test_a_users_portfolios(uow: UnitOfWork, owner: User) -> None:
    await uow(portfolios.create, user_id=owner.id, name="Value")
    await uow(portfolios.create, user_id=owner.id, name="Archive", is_active=False)
    other = await uow(users.create, email="o@example.com", username="other", hashed_password="x")
    await uow(portfolios.create, user_id=other.id, name="Theirs")
    names = [p.name for p in await uow(portfolios.get_user_portfolios, owner.id)]
    assert names == ["Value"]
    names = [
        p.name for p in await uow(portfolios.get_user_portfolios, owner.id, include_inactive=True)
    ]
    assert names == ["Archive", "Value"]
    with pytest.raises(DuplicateError):
        await uow(portfolios.create, user_id=owner.id, name="Value")


async def test_another_users_portfolio_looks_missing(
    uow: UnitOfWork, portfolio: Portfolio, owner: User
) -> None:
    stranger = await uow(
        users.create, email="s@example.com", username="stranger", hashed_password="x"
    )
    assert (await uow(portfolios.get_for_user, portfolio.id, owner.id)).id == portfolio.id
    assert await uow(portfolios.get_for_user, portfolio.id, stranger.id) is None
    assert await uow(portfolios.get_for_user, uuid.uuid4(), stranger.id) is None
    assert await uow(portfolios.get_with_positions, portfolio.id, user_id=stranger.id) is None
    with pytest.raises(NotFoundError):
        await uow(portfolios.get_summary, portfolio.id, user_id=stranger.id)


async def test_positions_are_added_updated_and_removed(
    uow: UnitOfWork, portfolio: Portfolio
) -> None:
    await uow(
        portfolios.add_position, portfolio.id, ticker="aapl", shares="100", average_cost="150"
    )
    with pytest.raises(DuplicateError) as caught:
        await uow(portfolios.add_position, portfolio.id, ticker="AAPL", shares="1")
    assert caught.value.field == "portfolio_id, ticker"
    updated = await uow(portfolios.update_position, portfolio.id, "AAPL", shares="120")
    assert updated.shares == Decimal("120")
    assert updated.average_cost == Decimal("150")
    with pytest.raises(NotFoundError):
        await uow(portfolios.update_position, portfolio.id, "TSLA", shares="1")
    assert await uow(portfolios.remove_position, portfolio.id, "aapl") is True
    assert await uow(portfolios.remove_position, portfolio.id, "AAPL") is False


async def test_portfolio_with_positions_comes_in_one_query(
    uow: UnitOfWork, portfolio: Portfolio, statements: list[str]
) -> None:
    for ticker in ("MSFT", "AAPL", "GOOG"):
        await uow(portfolios.add_position, portfolio.id, ticker=ticker, shares="1")
    statements.clear()
    loaded = await uow(portfolios.get_with_positions, portfolio.id)
    assert [p.ticker for p in loaded.positions] == ["AAPL", "GOOG", "MSFT"]
    assert row_count_statements(statements, "SELECT", "positions") == 1
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1


async def test_portfolio_summary(uow: UnitOfWork, portfolio: Portfolio) -> None:
    await uow(
        portfolios.add_position,
        portfolio.id,
        ticker="AAPL",
        shares="100",
        average_cost="150.25",
        allocation_percentage="40",
    )
    await uow(
        portfolios.add_position,
        portfolio.id,
        ticker="MSFT",
        shares="0.5",
        average_cost="300",
        allocation_percentage="30.5",
    )
    await uow(portfolios.add_position, portfolio.id, ticker="BRK-B", shares="10")
    await uow(
        portfolios.add_position,
        portfolio.id,
        ticker="OLD",
        shares="5",
        average_cost="1",
        is_active=False,
    )
    summary = await uow(portfolios.get_summary, portfolio.id)
    assert summary.position_count == 3
    assert summary.total_cost_basis == Decimal("15175.00")
    assert summary.positions_without_cost == 1
    assert summary.allocation_total == Decimal("70.50")
    assert summary.target_cash_percentage == Decimal("5.00")
    assert summary.unallocated_percentage == Decimal("24.50")
    assert not summary.is_over_allocated


# -- compatibility names (BuffetBot's examples) -------------------------------------------


async def test_get_portfolio_with_positions_is_get_with_positions(
    uow: UnitOfWork, portfolio: Portfolio, owner: User
) -> None:
    for ticker in ("MSFT", "AAPL"):
        await uow(portfolios.add_position, portfolio.id, ticker=ticker, shares="1")
    alias = await uow(portfolios.get_portfolio_with_positions, portfolio.id, user_id=owner.id)
    target = await uow(portfolios.get_with_positions, portfolio.id, user_id=owner.id)
    assert alias.id == target.id == portfolio.id
    assert [p.id for p in alias.positions] == [p.id for p in target.positions]
    assert [p.ticker for p in alias.positions] == ["AAPL", "MSFT"]
    stranger = await uow(
        users.create, email="s@example.com", username="stranger", hashed_password="x"
    )
    assert (
        await uow(portfolios.get_portfolio_with_positions, portfolio.id, user_id=stranger.id)
        is None
    )
    assert await uow(portfolios.get_portfolio_with_positions, uuid.uuid4()) is None


async def test_list_by_criteria_is_get_by_criteria(
    uow: UnitOfWork, portfolio: Portfolio, owner: User
) -> None:
    for ticker, shares in (("AAPL", "12.5"), ("MSFT", "3"), ("GOOG", "20")):
        await uow(portfolios.add_position, portfolio.id, ticker=ticker, shares=shares)
    criteria = {"portfolio_id": portfolio.id, "shares__gte": 10, "user_id": owner.id}
    alias = await uow(portfolios.positions.list_by_criteria, **criteria)
    target = await uow(portfolios.positions.get_by_criteria, **criteria)
    assert [p.id for p in alias] == [p.id for p in target]
    assert sorted(p.ticker for p in alias) == ["AAPL", "GOOG"]
    named = await uow(users.list_by_criteria, username="owner")  # an unscoped repository
    assert [u.id for u in named] == [owner.id]
    with pytest.raises(InvalidCriteriaError):
        await uow(users.list_by_criteria, nickname="owner")


async def test_get_position_by_ticker_is_owner_checked(
    uow: UnitOfWork, portfolio: Portfolio, owner: User
) -> None:
    added = await uow(
        portfolios.add_position, portfolio.id, ticker="BRK-B", shares="2", average_cost="400"
    )
    found = await uow(portfolios.get_position_by_ticker, portfolio.id, "brk-b", user_id=owner.id)
    assert (found.id, found.ticker, found.shares) == (added.id, "BRK-B", Decimal("2"))
    assert await uow(portfolios.get_position_by_ticker, portfolio.id, "TSLA") is None
    assert await uow(portfolios.get_position_by_ticker, uuid.uuid4(), "BRK-B") is None
    stranger = await uow(
        users.create, email="s@example.com", username="stranger", hashed_password="x"
    )
    assert (
        await uow(portfolios.get_position_by_ticker, portfolio.id, "BRK-B", user_id=stranger.id)
        is None
    )
    with pytest.raises(ValidationError):
        await uow(portfolios.get_position_by_ticker, portfolio.id, "not a ticker!")


# -- analysis results ------------------------------------------------------------------------


async def test_latest_valid_result_honours_expiry(uow: UnitOfWork, portfolio: Portfolio) -> None:
    now = dt.datetime.now(dt.UTC)
    common = {"ticker": "AAPL", "analysis_type": AnalysisType.VALUE_ANALYSIS, "strategy": "dcf"}
    await uow(analyses.save, **common, score="70", calculated_at=now - dt.timedelta(hours=3))
    await uow(
        analyses.save,
        **common,
        score="80",
        calculated_at=now - dt.timedelta(hours=2),
        expires_at=now + dt.timedelta(hours=1),
    )
    await uow(
        analyses.save,
        **common,
        score="90",
        calculated_at=now - dt.timedelta(hours=1),
        expires_at=now - dt.timedelta(minutes=1),
    )
    await uow(analyses.save, **common, score="99", portfolio_id=portfolio.id, calculated_at=now)
    latest = await uow(analyses.get_latest_valid, "aapl", "value_analysis", strategy="dcf")
    assert latest.score == Decimal("99")
    latest = await uow(
        analyses.get_latest_valid, "AAPL", AnalysisType.VALUE_ANALYSIS, portfolio_id=portfolio.id
    )
    assert latest.score == Decimal("99")
    later = now + dt.timedelta(hours=2)
    assert (
        await uow(analyses.get_latest_valid, "AAPL", "value_analysis", now=later)
    ).score == Decimal("99")
    history = await uow(analyses.get_history, "AAPL", limit=10)
    assert [r.score for r in history] == [
        Decimal("99"),
        Decimal("90"),
        Decimal("80"),
        Decimal("70"),
    ]
    assert await uow(analyses.get_latest_valid, "AAPL", "growth_analysis") is None


async def test_invalidate_needs_a_filter_and_expires_matches(uow: UnitOfWork, sql: RawSQL) -> None:
    for ticker in ("AAPL", "MSFT"):
        await uow(analyses.save, ticker=ticker, analysis_type="risk_analysis")
    with pytest.raises(InvalidCriteriaError):
        await uow(analyses.invalidate)
    assert await uow(analyses.invalidate, ticker="aapl") == 1
    assert await uow(analyses.get_latest_valid, "AAPL", "risk_analysis") is None
    assert await uow(analyses.get_latest_valid, "MSFT", "risk_analysis") is not None
    assert await uow(analyses.invalidate, ticker="AAPL") == 0


async def test_delete_expired_in_one_statement(
    uow: UnitOfWork, sql: RawSQL, statements: list[str]
) -> None:
    now = dt.datetime.now(dt.UTC)
    rows = [
        {
            "ticker": "AAPL",
            "analysis_type": "risk_analysis",
            "expires_at": now - dt.timedelta(days=i),
        }
        for i in range(1, 6)
    ]
    await uow(analyses.bulk_create, [*rows, {"ticker": "AAPL", "analysis_type": "risk_analysis"}])
    statements.clear()
    assert await uow(analyses.delete_expired) == 5
    assert row_count_statements(statements, "DELETE", "analysis_results") == 1
    assert sql.count("analysis_results") == 1


# -- market-data cache ------------------------------------------------------------------------


async def test_cache_put_get_and_replace(uow: UnitOfWork, sql: RawSQL) -> None:
    stored = await uow(cache.cache_market_data, "aapl", DataType.STOCK_INFO, {"price": "180.10"})
    assert stored.ticker == "AAPL"
    assert stored.expires_at > stored.cached_at
    assert await uow(cache.get_cached_data, "AAPL", "stock_info") == {"price": "180.10"}
    await uow(
        cache.cache_market_data, "AAPL", "stock_info", {"price": "181.00"}, data_quality_score="0.9"
    )
    hit = await uow(cache.get_cached_data, "AAPL", DataType.STOCK_INFO, None)
    assert hit == {"price": "181.00"}
    entry = await uow(cache.get_cached_entry, "AAPL", "stock_info")
    assert entry.data_quality_score == Decimal("0.9")
    assert sql.count("market_data_cache") == 1


async def test_no_parameters_and_empty_parameters_are_one_key(uow: UnitOfWork, sql: RawSQL) -> None:
    await uow(cache.cache_market_data, "AAPL", "price_history", {"v": 1})
    await uow(cache.cache_market_data, "AAPL", "price_history", {"v": 2}, parameters={})
    await uow(cache.cache_market_data, "AAPL", "price_history", {"v": 3}, parameters=None)
    await uow(
        cache.cache_market_data, "AAPL", "price_history", {"v": 4}, parameters={"period": "1y"}
    )
    assert sql.count("market_data_cache") == 2
    assert await uow(cache.get_cached_data, "AAPL", "price_history") == {"v": 3}
    one_year = await uow(cache.get_cached_data, "AAPL", "price_history", {"period": "1y"})
    assert one_year == {"v": 4}


async def test_expired_entries_are_misses_and_can_be_purged(uow: UnitOfWork, sql: RawSQL) -> None:
    await uow(cache.cache_market_data, "AAPL", "news", {"items": []}, ttl=dt.timedelta(seconds=60))
    sql.execute("UPDATE market_data_cache SET expires_at = cached_at")
    assert await uow(cache.get_cached_data, "AAPL", "news") is None
    await uow(cache.cache_market_data, "MSFT", "news", {"items": []})
    assert await uow(cache.delete_expired) == 1
    assert sql.count("market_data_cache") == 1


async def test_invalidate_by_ticker_or_type(uow: UnitOfWork) -> None:
    for ticker in ("AAPL", "MSFT"):
        for kind in ("news", "stock_info"):
            await uow(cache.cache_market_data, ticker, kind, {"k": kind})
    with pytest.raises(InvalidCriteriaError):
        await uow(cache.invalidate)
    assert await uow(cache.invalidate, ticker="aapl") == 2
    assert await uow(cache.invalidate, data_type="news") == 1
    assert await uow(cache.count) == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ticker": "NOT A TICKER"}, "ticker"),
        ({"data_type": "horoscope"}, "data_type"),
        ({"data": object()}, "data"),
        ({"ttl": dt.timedelta(0)}, "ttl"),
        ({"data_quality_score": "1.5"}, "data_quality_score"),
    ],
)
async def test_bad_cache_writes_name_the_field(
    uow: UnitOfWork, sql: RawSQL, kwargs: dict[str, object], field: str
) -> None:
    arguments: dict[str, object] = {
        "ticker": "AAPL",
        "data_type": "news",
        "data": {"k": 1},
        **kwargs,
    }
    ticker, data_type, data = (
        arguments.pop("ticker"),
        arguments.pop("data_type"),
        arguments.pop("data"),
    )
    with pytest.raises(ValidationError) as caught:
        await uow(cache.cache_market_data, ticker, data_type, data, **arguments)
    assert caught.value.field == field
    assert sql.count("market_data_cache") == 0


async def test_options_rows_keep_rho_and_one_row_per_contract_snapshot(uow: UnitOfWork) -> None:
    options = OptionsDataRepository()
    fetched = dt.datetime(2024, 10, 1, 15, 30, tzinfo=dt.UTC)
    row = {
        "ticker": "nvda",
        "contract_symbol": "NVDA241004C00120000",
        "option_type": "call",
        "strike": "120",
        "expiration": dt.date(2024, 10, 4),
        "volume": 3_000_000_000,
        "rho": "0.0123",
        "fetched_at": fetched,
    }
    created = await uow(options.create, **row)
    assert created.rho == Decimal("0.012300")
    with pytest.raises(DuplicateError):
        await uow(options.create, **row)
    assert await uow(options.count, ticker="NVDA", expiration=dt.date(2024, 10, 4)) == 1


async def test_repositories_are_constructed_without_arguments(db: DatabaseManager) -> None:
    from database import repositories

    for name in repositories.__all__:
        repository_class = getattr(repositories, name)
        if not name.endswith("Repository") or name == "BaseRepository":
            continue
        assert repository_class().model is not None
