"""`buffetbot-db`, run as a subprocess on both backends: every command, exit codes, JSON."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from database import migrate
from database.filecache import make_key
from tests.conftest import RawSQL

COMMAND = str(Path(sys.executable).with_name("buffetbot-db"))


def cli(url: str | None, *arguments: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    # Tables as wide as a terminal's, whatever the runner's stdin is (xdist's is a pipe).
    environment["COLUMNS"] = "160"
    command = [COMMAND, *(["--url", url] if url else []), *arguments]
    result = subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=300, check=False
    )
    assert result.returncode == expect, f"{arguments}: {result.stdout}\n{result.stderr}"
    return result


def old_cache(folder: Path, count: int = 0) -> Path:
    folder.mkdir()
    now = time.time()
    entries: dict[str, Any] = {
        make_key("get_stock_info", "AAPL"): {
            "data": {"price": 222.77},
            "timestamp": now,
            "expiration": 3600,
        },
        make_key("get_news", "AAPL"): {
            "data": ["old"],
            "timestamp": now - 7200,
            "expiration": 3600,
        },
    }
    entries.update(
        {
            make_key("quote", n): {"data": n, "timestamp": now, "expiration": 3600}
            for n in range(count)
        }
    )
    for key, entry in entries.items():
        (folder / f"{key}.cache").write_bytes(pickle.dumps(entry))
    (folder / "corrupt.cache").write_bytes(b"not a pickle")
    return folder


def test_the_whole_lifecycle(empty_url: str, tmp_path: Path) -> None:
    assert f"upgraded to {migrate.head_revision()} (head)" in cli(empty_url, "upgrade").stdout
    assert "(head)" in cli(empty_url, "current").stdout
    assert "Initial schema" in cli(empty_url, "history").stdout
    assert "schema matches the models" in cli(empty_url, "check").stdout
    health = json.loads(cli(empty_url, "health", "--json").stdout)
    assert health["healthy"] is True
    assert health["at_head"] is True
    assert health["latency_ms"] >= 0

    first = cli(empty_url, "demo").stdout
    second = cli(empty_url, "demo").stdout
    assert first == second  # the same result, and (below) no duplicates
    assert "AAPL" in first
    assert "GOOG" in first
    assert "CALM" in first
    assert "51,379.70" in first  # total market value at the latest closes
    raw = RawSQL(empty_url)
    try:
        assert (raw.count("users"), raw.count("positions"), raw.count("analysis_results")) == (
            1,
            3,
            3,
        )
        assert raw.count("price_history") == 3379 * 2 + 662
    finally:
        raw.close()

    stats = json.loads(cli(empty_url, "stats", "--json").stdout)
    assert stats["freshness"]["latest_price_dates"]["CALM"] == "2024-08-21"
    assert stats["freshness"]["expired_analysis_results"] == 0
    assert any(q["table"] == "price_history" for q in stats["queries"])
    prometheus = cli(empty_url, "stats", "--prometheus").stdout
    assert 'buffetbot_db_latest_price_timestamp{ticker="AAPL"}' in prometheus
    assert "buffetbot_db_queries_total" in prometheus
    assert "freshness" in cli(empty_url, "stats").stdout

    folder = old_cache(tmp_path / "cache")
    imported = json.loads(cli(empty_url, "import-cache", str(folder), "--json", expect=3).stdout)
    assert (imported["imported"], imported["expired"], imported["rejected"]) == (1, 1, 1)
    again = json.loads(cli(empty_url, "import-cache", str(folder), "--json", expect=3).stdout)
    assert (again["imported"], again["already_present"]) == (0, 1)
    table = cli(empty_url, "import-cache", str(folder), "--include-expired", expect=3)
    assert "already present" in table.stdout
    assert "rejected corrupt.cache" in table.stderr

    cleaned = json.loads(cli(empty_url, "cleanup", "--json").stdout)
    assert cleaned == {"cache_entries": 1, "analysis_results": 0, "option_contracts": 0}
    assert "deleted 0 expired cache entries" in cli(empty_url, "cleanup").stdout

    assert "would destroy" in cli(empty_url, "downgrade", "base", expect=1).stderr
    assert "downgraded to base" in cli(empty_url, "downgrade", "base", "--force").stdout
    assert "empty" in cli(empty_url, "current", expect=1).stdout
    unhealthy = json.loads(cli(empty_url, "health", "--json", expect=1).stdout)
    assert unhealthy["reachable"] is True
    assert unhealthy["at_head"] is False


def test_a_downgrade_that_would_destroy_rows_refuses_unless_forced(empty_url: str) -> None:
    cli(empty_url, "upgrade")
    raw = RawSQL(empty_url)
    try:
        raw.execute(
            "INSERT INTO market_data_cache (id, cache_key, ticker, data_type, data, data_source,"
            " cached_at, expires_at) VALUES (:id, 'k', 'AAPL', 'file_cache', '{}', 'test',"
            " :cached, :expires)",
            id=raw.key(uuid.uuid4()),
            cached="2024-01-01 00:00:00",
            expires="2099-01-01 00:00:00",
        )
        refused = cli(empty_url, "downgrade", "base", expect=1)
        said = " ".join(refused.stderr.split())  # rich wraps long lines
        assert said.startswith(
            "error: downgrade failed: downgrading 0002 would destroy"
            " 1 row of market_data_cache with data_type 'file_cache'"
        )
        assert "buffetbot-db downgrade --force" in said
        assert "Traceback" not in said
        assert "(head)" in cli(empty_url, "current").stdout
        assert raw.count("market_data_cache") == 1

        assert "downgraded to base" in cli(empty_url, "downgrade", "base", "--force").stdout
        assert "empty" in cli(empty_url, "current", expect=1).stdout
    finally:
        raw.close()


def test_errors_are_one_line_and_exit_1_unless_debugging() -> None:
    failed = cli("mysql://u:s3cret@h/db", "current", expect=1)
    assert failed.stderr.strip().count("\n") == 0
    assert "current failed: unsupported database 'mysql'" in failed.stderr
    assert "s3cret" not in failed.stderr
    debugged = cli("mysql://u:s3cret@h/db", "--debug", "current", expect=1)
    assert "Traceback" in debugged.stderr


def test_an_unreachable_server_is_unhealthy() -> None:
    report = json.loads(
        cli("postgresql://app:s3cret@127.0.0.1:1/none", "health", "--json", expect=1).stdout
    )
    assert report["reachable"] is False
    assert "127.0.0.1:1" in report["error"]
    assert "s3cret" not in json.dumps(report)


@pytest.mark.sqlite_only  # the import itself is tested on both backends
def test_a_large_import_shows_its_progress(backend: str, empty_url: str, tmp_path: Path) -> None:
    cli(empty_url, "upgrade")
    folder = old_cache(tmp_path / "big", count=9_998)  # + 2 named entries + 1 corrupt file
    result = cli(empty_url, "import-cache", str(folder), expect=3)  # corrupt.cache
    assert "importing" in result.stderr
    assert "10001/10001" in result.stderr
    assert "imported" in result.stdout
    raw = RawSQL(empty_url)
    try:
        assert raw.count("market_data_cache") == 9_999
    finally:
        raw.close()
