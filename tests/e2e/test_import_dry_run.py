"""`buffetbot-db import-cache --dry-run`: what the import would do, with nothing written."""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from database.filecache import make_key
from database.filecache.importer import pandas_written_by
from tests.conftest import RawSQL
from tests.e2e.test_cli import cli

PRICES = pd.DataFrame({"Close": [1.5, 2.5]}, index=pd.to_datetime(["2024-01-02", "2024-01-03"]))
TODAYS_PANDAS = "3.x" if int(pd.__version__.split(".")[0]) >= 3 else "2.x"


class Explode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def entry(data: object, age: float = 0) -> bytes:
    return pickle.dumps({"data": data, "timestamp": time.time() - age, "expiration": 3600})


def looped() -> list[object]:
    items: list[object] = []
    items.append(items)
    return items


def mixed_cache(folder: Path, marker: Path) -> Path:
    """Seven entries to import (one expired), and three the import rejects."""
    folder.mkdir()
    files = {
        make_key("get_stock_info", "AAPL"): entry({"price": 222.77}),
        make_key("get_peers", "AAPL"): entry(["MSFT", "GOOG"]),
        make_key("get_sector", "AAPL"): entry("Technology"),
        make_key("get_beta", "AAPL"): entry(1.21),
        make_key("fetch_price_history", "AAPL"): entry(PRICES),
        make_key("fetch_close", "AAPL"): entry(PRICES["Close"]),
        make_key("get_news", "AAPL"): entry({"old": True}, age=7200),  # expired
        "corrupt": b"not a pickle",
        "unsafe": entry(Explode(marker)),
        "recursive": entry(looped()),
    }
    for key, raw in files.items():
        (folder / f"{key}.cache").write_bytes(raw)
    (folder / "notes.txt").write_text("not a cache file")
    return folder


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return mixed_cache(tmp_path / "cache", tmp_path / "pwned")


def test_a_dry_run_reports_and_writes_nothing_then_the_import_agrees(
    backend: str, database_url: str, folder: Path, tmp_path: Path
) -> None:
    before = snapshot(folder)
    result = cli(database_url, "import-cache", "--dry-run", "--json", str(folder), expect=3)
    report = json.loads(result.stdout)
    assert report["dry_run"] is True
    assert (report["would_import"], report["expired"], report["rejected"]) == (6, 1, 3)
    reasons = report["rejected_files"]
    assert set(reasons) == {"corrupt.cache", "unsafe.cache", "recursive.cache"}
    assert "refused to unpickle" in reasons["unsafe.cache"]
    assert "corrupt or truncated pickle" in reasons["corrupt.cache"]
    assert "contains itself" in reasons["recursive.cache"]
    kinds = {(g["data_type"], g["pandas"]): g for g in report["by_type"]}
    assert kinds[("DataFrame", TODAYS_PANDAS)]["would_import"] == 1
    assert kinds[("Series", TODAYS_PANDAS)]["would_import"] == 1
    assert kinds[("dict", "none")] == {
        "data_type": "dict",
        "pandas": "none",
        "would_import": 1,
        "expired": 1,
        "rejected": 0,
    }
    for simple in ("list", "str", "float"):
        assert kinds[(simple, "none")]["would_import"] == 1
    assert kinds[("list", "none")]["rejected"] == 1  # the list that contains itself
    assert kinds[("unknown", "none")]["rejected"] == 2  # never unpickled
    # Nothing written: the files, the folder and the database are as they were.
    assert snapshot(folder) == before
    assert not (tmp_path / "pwned").exists()
    raw = RawSQL(database_url)
    try:
        assert raw.count("market_data_cache") == 0
        imported = json.loads(
            cli(database_url, "import-cache", "--json", str(folder), expect=3).stdout
        )
        assert imported["imported"] == report["would_import"]
        assert imported["expired"] == report["expired"]
        assert imported["rejected_files"] == reasons
        assert raw.count("market_data_cache") == 6
        again = json.loads(
            cli(database_url, "import-cache", "--dry-run", "--json", str(folder), expect=3).stdout
        )
        assert again == report  # already present rows are still "would import"
        assert raw.count("market_data_cache") == 6
    finally:
        raw.close()


def test_the_dry_run_table_and_the_reasons_on_stderr(
    backend: str, database_url: str, folder: Path
) -> None:
    result = cli(database_url, "import-cache", "--dry-run", str(folder), expect=3)
    assert "nothing written" in result.stdout
    assert "would import" in result.stdout
    assert "DataFrame" in result.stdout
    assert TODAYS_PANDAS in result.stdout
    assert "would reject corrupt.cache: corrupt or truncated pickle" in result.stderr


def test_the_dry_run_needs_no_database(tmp_path: Path, folder: Path) -> None:
    missing = tmp_path / "never-created.db"
    cli(f"sqlite:///{missing}", "import-cache", "--dry-run", str(folder), expect=3)
    assert not missing.exists()
    unreachable = "postgresql://app:s3cret@127.0.0.1:1/none"
    report = json.loads(
        cli(unreachable, "import-cache", "--dry-run", "--json", str(folder), expect=3).stdout
    )
    assert report["would_import"] == 6


def test_the_dry_run_exit_codes_and_options(tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "a.cache").write_bytes(entry({"n": 1}))
    (clean / "b.cache").write_bytes(entry({"n": 2}, age=7200))
    report = json.loads(cli(None, "import-cache", "--dry-run", "--json", str(clean)).stdout)
    assert (report["would_import"], report["expired"], report["rejected"]) == (1, 1, 0)
    with_expired = json.loads(
        cli(None, "import-cache", "--dry-run", "--include-expired", "--json", str(clean)).stdout
    )
    assert (with_expired["would_import"], with_expired["expired"]) == (2, 0)
    small = json.loads(
        cli(None, "import-cache", "--dry-run", "--max-file-size", "1", "--json", str(clean)).stdout
    )
    assert small["would_import"] == 1
    (clean / "big.cache").write_bytes(entry("x" * (2 << 20)))
    limited = cli(None, "import-cache", "--dry-run", "--max-file-size", "1", str(clean), expect=3)
    assert "over the 1.0 MiB file size limit" in " ".join(limited.stderr.split())
    missing = cli(None, "import-cache", "--dry-run", str(tmp_path / "missing"), expect=1)
    assert "is not a directory" in missing.stderr


# Module paths as each pandas writes them (see database.filecache.importer).
PANDAS_1_OR_2 = (
    b"\x80\x02cpandas.core.frame\nDataFrame\nq\x00cnumpy.core.multiarray\n_reconstruct\n."
)
PANDAS_2 = b"\x80\x02cpandas.core.series\nSeries\nq\x00cnumpy._core.multiarray\n_reconstruct\n."
PANDAS_3 = b"\x80\x04\x8c\x06pandas\x94\x8c\tDataFrame\x94\x93\x94h\x00h\x01\x93."
TIMESTAMP_ONLY = b"\x80\x02cpandas._libs.tslibs.timestamps\n_unpickle_timestamp\n."


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (PANDAS_1_OR_2, "1.x or 2.x"),
        (PANDAS_2, "2.x"),
        (PANDAS_3, "3.x"),
        (TIMESTAMP_ONLY, "unknown"),  # the same in every pandas
        (pickle.dumps({"pandas": "a word, not a module"}), "none"),
        (pickle.dumps(PRICES), TODAYS_PANDAS),
        (pickle.dumps({"data": PRICES, "timestamp": 0.0}, protocol=2), TODAYS_PANDAS),
        (PANDAS_1_OR_2[:-1] + b"\xff\xfe", "1.x or 2.x"),  # read up to the corrupt part
    ],
)
def test_the_pandas_that_wrote_a_pickle(raw: bytes, expected: str) -> None:
    assert pandas_written_by(raw) == expected
