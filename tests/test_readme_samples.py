"""Every Python sample of the seed README and of our README runs, on both backends."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import RawSQL, recreate_database

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_urls(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[str, str]]:
    """Two empty databases: one for the samples, one for their pytest fixture."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'samples.db'}", f"sqlite:///{tmp_path / 'fixture.db'}"
        return
    server = request.getfixturevalue("postgres_server_url")
    yield (
        recreate_database(server, "buffetbot_samples"),
        recreate_database(server, "buffetbot_test_samples"),
    )


def run_samples(markdown: Path, url: str, *options: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DB_")}
    environment["DATABASE_URL"] = url
    result = subprocess.run(
        [sys.executable, "-m", "tests.samples", str(markdown), *options],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_the_seed_readme_samples_run_as_written(fresh_urls: tuple[str, str]) -> None:
    url, fixture_url = fresh_urls
    result = run_samples(
        ROOT / "tests/seed/seed-readme.md", url, "--context", "seed", "--pytest-url", fixture_url
    )
    assert "Created portfolio: My Portfolio" in result.stdout
    assert result.stdout.count("ok seed-readme.md") == 16
    raw = RawSQL(url)
    try:
        assert raw.rows("SELECT email, username FROM users") == [
            ("investor@example.com", "investor")
        ]
        assert (
            raw.scalar("SELECT risk_tolerance FROM portfolios WHERE name = 'My Portfolio'")
            == "moderate"
        )
        shares = dict(raw.rows("SELECT ticker, shares FROM positions"))
        scale = Decimal(10**6) if raw.backend == "sqlite" else Decimal(1)
        assert {t: Decimal(s) / scale for t, s in shares.items()} == {"AAPL": 100, "MSFT": 75}
    finally:
        raw.close()


def test_our_readme_samples_run_as_written(fresh_urls: tuple[str, str]) -> None:
    url, _ = fresh_urls
    result = run_samples(ROOT / "README.md", url, "--stub-yfinance")
    assert "FAILED" not in result.stdout
    assert result.stdout.count("ok README.md") >= 5


STAND_IN_SAMPLES = """
```python
import yfinance as yf

print(yf.__version__, len(yf.Ticker("AAPL").history(start="2018-01-02", end="2018-01-06")))
```

```python
def test_the_stand_in_in_pytest():
    import yfinance

    assert yfinance.__version__.endswith("+stand-in")
```
"""


def test_stub_yfinance_makes_samples_import_the_stand_in(tmp_path: Path) -> None:
    markdown = tmp_path / "recipe.md"
    markdown.write_text(STAND_IN_SAMPLES)
    result = run_samples(markdown, f"sqlite:///{tmp_path / 'recipe.db'}", "--stub-yfinance")
    assert "0.2.54+stand-in 4" in result.stdout  # 2 .. 5 January 2018: four trading days
    assert "ok recipe.md:8 (pytest)" in result.stdout
