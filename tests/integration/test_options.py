"""Option chains: real yfinance chains stored once per snapshot and read back, on both backends."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy.util.concurrency import in_greenlet

from database import DatabaseManager
from database import options as chains_module
from database.exceptions import ValidationError
from database.models import OptionType
from database.options import OptionsValidationError, occ_symbol
from database.repositories import OptionsDataRepository
from tests.conftest import RawSQL
from tests.integration.conftest import UnitOfWork, row_count_statements
from tests.property.strategies import HostileStr, RaisingZone, UnreadableDict

# Every PostgreSQL test here runs once more through PgBouncer (transaction pooling).
pytestmark = pytest.mark.pgbouncer

DATA = Path(__file__).resolve().parents[1] / "data" / "options"
options = OptionsDataRepository()
EXPIRY = dt.date(2024, 10, 4)
SNAPSHOT = dt.datetime(2024, 9, 27, 20, 0, tzinfo=dt.UTC)  # after the close; NVDA at 121.40


def chain(kind: str) -> pd.DataFrame:
    return pd.read_csv(DATA / f"NVDA-2024-10-04-{kind}.csv", index_col=0)


@pytest.fixture
async def stored(uow: UnitOfWork) -> None:
    result = await uow(
        options.store_chain,
        "nvda",
        calls=chain("calls"),
        puts=chain("puts"),
        underlying_price=Decimal("121.40"),
        fetched_at=SNAPSHOT,
    )
    assert (result.inserted, result.already_stored) == (198, 0)


async def test_storing_the_same_snapshot_again_changes_nothing(
    uow: UnitOfWork, stored: None, sql: RawSQL
) -> None:
    again = await uow(
        options.store_chain, "NVDA", calls=chain("calls"), puts=chain("puts"), fetched_at=SNAPSHOT
    )
    assert (again.inserted, again.already_stored) == (0, 198)
    assert sql.count("options_data") == 198


async def test_the_chain_reads_back_with_types_and_greeks(uow: UnitOfWork, stored: None) -> None:
    contracts = await uow(options.get_chain, "NVDA", EXPIRY)
    assert len(contracts) == 198
    assert [c.option_type for c in contracts[:99]] == [OptionType.CALL] * 99
    assert [c.strike for c in contracts[:99]] == sorted(c.strike for c in contracts[:99])
    first = contracts[0]
    assert first.contract_symbol == "NVDA241004C00050000"
    assert first.implied_volatility == Decimal("3.378908")
    assert first.last_trade_date == dt.datetime(2024, 9, 27, 14, 41, 42, tzinfo=dt.UTC)
    puts = [c for c in contracts if c.option_type is OptionType.PUT]
    assert sum(1 for c in puts if c.volume is None) == 4  # empty cells in the file
    assert puts[0].volume == 18052  # written as 18052.0


async def test_in_the_money_agrees_with_yfinance(uow: UnitOfWork, stored: None) -> None:
    expected = {
        row.contractSymbol: bool(row.inTheMoney)
        for frame in (chain("calls"), chain("puts"))
        for row in frame.itertuples()
    }
    contracts = await uow(options.get_chain, "NVDA", EXPIRY)
    computed = {c.contract_symbol: c.is_in_the_money() for c in contracts}
    assert computed == expected
    call = contracts[0]
    assert call.is_in_the_money(Decimal("40")) is False
    assert call.days_to_expiry(dt.date(2024, 9, 27)) == 7


async def test_the_latest_snapshot_or_the_one_as_of_a_time(uow: UnitOfWork, stored: None) -> None:
    later = SNAPSHOT + dt.timedelta(days=1)
    calls = chain("calls").iloc[:3].assign(lastPrice=[1.0, 2.0, 3.0])
    await uow(options.store_chain, "NVDA", calls=calls, fetched_at=later)
    latest = await uow(options.get_chain, "NVDA", EXPIRY)
    assert [c.last_price for c in latest] == [Decimal("1"), Decimal("2"), Decimal("3")]
    before = await uow(options.get_chain, "NVDA", EXPIRY, as_of=later - dt.timedelta(seconds=1))
    assert len(before) == 198
    assert await uow(options.get_chain, "NVDA", EXPIRY, as_of=SNAPSHOT - dt.timedelta(days=1)) == []


async def test_expirations_ahead_and_purging_expired_contracts(
    uow: UnitOfWork, stored: None, sql: RawSQL, statements: list[str]
) -> None:
    rows = [{"strike": 100, "option_type": "call", "expiration": dt.date(2024, 11, 15), "bid": 1}]
    await uow(options.store_chain, "NVDA", rows=rows, fetched_at=SNAPSHOT)
    assert await uow(options.get_expirations, "NVDA", today=dt.date(2024, 9, 30)) == [
        EXPIRY,
        dt.date(2024, 11, 15),
    ]
    assert await uow(options.get_expirations, "NVDA", today=dt.date(2024, 10, 5)) == [
        dt.date(2024, 11, 15)
    ]
    statements.clear()
    assert await uow(options.purge_expired, today=dt.date(2024, 10, 5)) == 198
    assert row_count_statements(statements, "DELETE", "options_data") == 1
    assert sql.count("options_data") == 1


async def test_a_missing_contract_symbol_is_derived_in_occ_form(uow: UnitOfWork) -> None:
    rows = [{"strike": "5250", "option_type": "put", "expiration": "2026-03-06", "bid": "1.5"}]
    await uow(options.store_chain, "^SPX", rows=rows)
    stored = await uow(options.get_one_by_criteria, ticker="^SPX")
    assert stored.contract_symbol == "SPX260306P05250000"
    assert occ_symbol("NVDA", EXPIRY, OptionType.CALL, Decimal("120")) == "NVDA241004C00120000"


async def test_type_and_expiry_are_read_from_the_symbol(uow: UnitOfWork) -> None:
    await uow(
        options.store_chain, "NVDA", rows=[{"contractSymbol": "NVDA241004P00120000", "strike": 120}]
    )
    stored = await uow(options.get_one_by_criteria, ticker="NVDA")
    assert (stored.option_type, stored.expiration) == (OptionType.PUT, EXPIRY)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"strike": float("nan")}, "strike"),
        ({"bid": -0.5}, "bid"),
        ({"volume": 1.5}, "volume"),
        ({"openInterest": -3}, "open_interest"),
        ({"lastPrice": "n/a"}, "last_price"),
    ],
)
async def test_a_bad_contract_rejects_the_chain(
    uow: UnitOfWork, sql: RawSQL, change: dict[str, object], field: str
) -> None:
    calls = chain("calls")
    for column, value in change.items():
        calls[column] = calls[column].astype(object)
        calls.iloc[5, calls.columns.get_loc(column)] = value
    with pytest.raises(OptionsValidationError) as caught:
        await uow(options.store_chain, "NVDA", calls=calls, fetched_at=SNAPSHOT)
    assert caught.value.field == field
    assert caught.value.rejected[0].contract_symbol == "NVDA241004C00068000"
    assert sql.count("options_data") == 0
    result = await uow(
        options.store_chain, "NVDA", calls=calls, fetched_at=SNAPSHOT, skip_invalid=True
    )
    assert (result.inserted, len(result.rejected)) == (98, 1)


async def test_unknown_columns_are_named(uow: UnitOfWork) -> None:
    with pytest.raises(ValidationError) as caught:
        await uow(
            options.store_chain, "NVDA", rows=[{"strike": 1, "strik": 2, "option_type": "call"}]
        )
    assert caught.value.field == "strik"


async def test_the_async_form_checks_the_chain_off_the_greenlet(
    db: DatabaseManager, monkeypatch: pytest.MonkeyPatch, sql: RawSQL
) -> None:
    # pandas work on run_sync's greenlet can crash the process (see price_history).
    checked_in_greenlet: list[bool] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        checked_in_greenlet.append(in_greenlet())
        return chains_module.check_chain(*args, **kwargs)

    monkeypatch.setattr("database.repositories.options.check_chain", spy)
    async with db.get_async_session() as session:
        await options.async_store_chain(session, "NVDA", calls=chain("calls"), fetched_at=SNAPSHOT)
    assert checked_in_greenlet == [False]
    assert sql.count("options_data") == 99


# -- hostile input: symbols that disagree with their row, years OCC cannot write -------


@pytest.mark.parametrize(
    "expiration",
    [dt.date(2100, 1, 1), dt.date.max, dt.date(1999, 12, 31), dt.date(1, 1, 1)],
    ids=["2100", "max", "1999", "min"],
)
async def test_expirations_an_occ_symbol_cannot_name_are_refused(
    uow: UnitOfWork, sql: RawSQL, expiration: dt.date
) -> None:
    calls = pd.DataFrame({"strike": [120.0], "lastPrice": [1.0]})
    with pytest.raises(ValidationError, match="2000 to 2099") as caught:
        await uow(options.store_chain, "NVDA", calls=calls, expiration=expiration)
    assert caught.value.field == "expiration"
    rows = [{"strike": 120, "option_type": "call", "expiration": expiration}]
    with pytest.raises(OptionsValidationError) as caught:
        await uow(options.store_chain, "NVDA", rows=rows, fetched_at=SNAPSHOT)
    assert caught.value.field == "expiration"
    assert sql.count("options_data") == 0


async def test_2000_and_2100_are_different_contracts_not_one(uow: UnitOfWork, sql: RawSQL) -> None:
    rows = [{"strike": 120, "option_type": "call", "expiration": dt.date(2000, 1, 1)}]
    await uow(options.store_chain, "NVDA", rows=rows, fetched_at=SNAPSHOT)
    later = [{**rows[0], "expiration": dt.date(2100, 1, 1)}]
    with pytest.raises(OptionsValidationError):
        await uow(options.store_chain, "NVDA", rows=later, fetched_at=SNAPSHOT)
    assert sql.count("options_data") == 1


async def test_a_symbol_year_reads_as_20xx(uow: UnitOfWork) -> None:
    await uow(
        options.store_chain, "NVDA", rows=[{"contractSymbol": "NVDA750118C00120000", "strike": 120}]
    )
    stored = await uow(options.get_one_by_criteria, ticker="NVDA")
    assert stored.expiration == dt.date(2075, 1, 18)


@pytest.mark.parametrize(
    ("symbol", "reason"),
    [
        ("AAPL241004C00120000", "not a contract of NVDA"),
        ("NVDA241004P00120000", "not a call"),
        ("NVDA241004C00005000", "strike"),
        ("NVDA241011C00120000", "expiration"),
        ("NVDA", "not an OCC contract symbol"),
    ],
)
async def test_a_symbol_that_disagrees_with_its_row_is_refused(
    uow: UnitOfWork, sql: RawSQL, symbol: str, reason: str
) -> None:
    calls = pd.DataFrame({"contractSymbol": [symbol], "strike": [120.0], "lastPrice": [1.0]})
    with pytest.raises(OptionsValidationError, match=reason) as caught:
        await uow(options.store_chain, "NVDA", calls=calls, expiration=EXPIRY, fetched_at=SNAPSHOT)
    assert caught.value.field == "contract_symbol"
    assert sql.count("options_data") == 0


async def test_a_longer_root_of_the_underlying_is_its_contract(uow: UnitOfWork) -> None:
    # SPX weeklies trade as SPXW; yfinance lists them under ^SPX.
    rows = [{"contractSymbol": "SPXW260306P05250000", "strike": 5250}]
    result = await uow(options.store_chain, "^SPX", rows=rows, fetched_at=SNAPSHOT)
    assert result.inserted == 1


async def test_hostile_values_in_a_chain_are_validation_errors(uow: UnitOfWork) -> None:
    rows = [{"contractSymbol": HostileStr("NVDA241004C00120000"), "strike": 120}]
    result = await uow(options.store_chain, "NVDA", rows=rows, fetched_at=SNAPSHOT)
    assert result.inserted == 1  # a str subclass is taken as its characters
    failing_zone = dt.datetime(2024, 1, 1, tzinfo=RaisingZone())
    with pytest.raises(ValidationError) as caught:
        await uow(options.store_chain, "NVDA", rows=rows, fetched_at=failing_zone)
    assert caught.value.field == "fetched_at"
    with pytest.raises(ValidationError) as caught:
        await uow(options.store_chain, "NVDA", rows=[UnreadableDict(strike=1)])
    assert caught.value.field.startswith("rows")
