"""The built wheel in a fresh virtual environment, outside the repository, offline.

The fresh environment gets the wheel and, on ``PYTHONPATH``, links to exactly the
distributions its extras require (taken from this environment, as nothing can be
downloaded): the PostgreSQL drivers are truly absent, not hidden.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "buffetbot-database"
DRIVERS = ("asyncpg", "psycopg", "psycopg_binary")


def build_wheel(folder: Path) -> Path:
    """``pip wheel`` on a copy of the sources, so no build/ folder lands in the repository."""
    source = folder / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "database", source / "database", ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    offline = ["--no-deps", "--no-index", "--no-build-isolation"]
    run([*pip, "wheel", str(source), *offline, "-w", str(folder / "dist")], cwd=folder)
    (wheel,) = (folder / "dist").glob("buffetbot_database-*.whl")
    return wheel


def requirements(wheel: Path, extras: set[str]) -> set[str]:
    """The distributions the wheel needs with ``extras``, resolved against this environment."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = (n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(name).decode())
    needed: set[str] = set()
    pending = [(Requirement(line), extras) for line in metadata.get_all("Requires-Dist", [])]
    while pending:
        requirement, wanted = pending.pop()
        environment = [{"extra": extra} for extra in wanted or {""}]
        if requirement.marker and not any(requirement.marker.evaluate(e) for e in environment):
            continue
        name = canonicalize_name(requirement.name)
        if name == PROJECT:  # a self-referencing extra such as `all`
            own = [Requirement(line) for line in metadata.get_all("Requires-Dist", [])]
            pending += [(r, set(requirement.extras)) for r in own]
            continue
        if name in needed and not requirement.extras:
            continue
        needed.add(name)
        lines = importlib.metadata.distribution(name).requires or []
        pending += [(Requirement(line), set(requirement.extras)) for line in lines]
    return needed


def link_distributions(names: set[str], folder: Path) -> Path:
    """A folder of links to the installed files of ``names``, for ``PYTHONPATH``."""
    folder.mkdir()
    for name in names:
        distribution = importlib.metadata.distribution(name)
        for top in {Path(file).parts[0] for file in distribution.files or []}:
            target = folder / top
            if top.startswith("..") or top == "__pycache__" or target.exists():
                continue
            target.symlink_to(Path(str(distribution.locate_file(top))))
    return folder


def run(
    command: list[str], *, cwd: Path, path: list[Path] | None = None, expect: int = 0
) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DB_", "DATABASE_URL", "PYTHON", "VIRTUAL_ENV"))
    }
    environment["PYTHONNOUSERSITE"] = "1"
    if path is not None:
        environment["PYTHONPATH"] = os.pathsep.join(str(p) for p in path)
    result = subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == expect, f"{command}: {result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheel installed in a fresh venv, plus the core and cli dependency folders."""
    folder = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(folder)
    venv = folder / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=folder)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    run([*pip, "install", "--quiet", "--no-deps", "--no-index", str(wheel)], cwd=folder)
    core = requirements(wheel, set())
    cli = requirements(wheel, {"cli"}) - core
    return {
        "python": python,
        "command": venv / "bin" / "buffetbot-db",
        "core": link_distributions(core, folder / "core"),
        "cli": link_distributions(cli, folder / "cli"),
        "work": folder,
    }


def test_the_extras_leave_the_postgresql_drivers_and_the_cli_stack_out(
    installed: dict[str, Path],
) -> None:
    linked = {p.name.split("-")[0].lower() for p in installed["core"].glob("*.dist-info")}
    assert {"sqlalchemy", "alembic", "aiosqlite", "pandas", "prometheus_client"} <= linked
    assert not linked & {"asyncpg", "psycopg", "psycopg_binary", "typer", "rich"}
    cli = {p.name.split("-")[0].lower() for p in installed["cli"].glob("*.dist-info")}
    assert {"typer", "rich"} <= cli
    assert not cli & {"asyncpg", "psycopg", "psycopg_binary"}


def test_import_database_needs_no_extra(installed: dict[str, Path]) -> None:
    check = (
        "import importlib.util, sys; import database\n"
        "print(database.__file__)\n"
        f"print([m for m in {(*DRIVERS, 'typer', 'rich')!r} if importlib.util.find_spec(m)])"
    )
    result = run(
        [str(installed["python"]), "-c", check], cwd=installed["work"], path=[installed["core"]]
    )
    where, found = result.stdout.splitlines()
    assert Path(where).is_relative_to(installed["python"].parents[1])
    assert found == "[]"


def test_the_wheel_ships_its_license_migrations_and_sample_data(
    installed: dict[str, Path],
) -> None:
    (site,) = (installed["python"].parents[1] / "lib").glob("python*/site-packages")
    package = site / "database"
    assert list((package / "migrations" / "versions").glob("*.py"))
    assert (package / "migrations" / "script.py.mako").is_file()
    assert len(list((package / "sample_data").glob("*.csv"))) >= 3
    assert (package / "py.typed").is_file()
    (license_file,) = site.glob("buffetbot_database-*.dist-info/licenses/LICENSE")
    assert "MIT License" in license_file.read_text()


def test_upgrade_and_demo_work_on_sqlite_outside_the_repository(
    installed: dict[str, Path], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    path = [installed["core"], installed["cli"]]
    command = [str(installed["command"]), "--url", url]
    run([*command, "upgrade"], cwd=tmp_path, path=path)
    result = run([*command, "demo"], cwd=tmp_path, path=path)
    assert "AAPL" in result.stdout
    with sqlite3.connect(tmp_path / "app.db") as connection:
        (revision,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        (bars,) = connection.execute("SELECT count(*) FROM price_history").fetchone()
    assert revision
    assert bars > 0
    assert not (tmp_path / "buffetbot.db").exists()


def test_the_command_without_the_cli_extra_says_which_extra_to_install(
    installed: dict[str, Path], tmp_path: Path
) -> None:
    result = run(
        [str(installed["command"]), "--help"], cwd=tmp_path, path=[installed["core"]], expect=1
    )
    assert "with its cli extra" in result.stderr
    assert "buffetbot-database>[cli]" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_postgresql_url_without_the_extra_names_the_extra(
    installed: dict[str, Path], tmp_path: Path
) -> None:
    path = [installed["core"], installed["cli"]]
    url = "postgresql://app@127.0.0.1:9/buffetbot"
    command = [str(installed["command"]), "--url", url, "health", "--json"]
    result = run(command, cwd=tmp_path, path=path, expect=1)
    error = json.loads(result.stdout)["error"]
    assert error == (
        "this database needs the 'psycopg' driver: install this package with its postgresql"
        " extra, pip install '<path or git URL of buffetbot-database>[postgresql]'"
    )
    assert "Traceback" not in result.stderr
    # and in the text output, the brackets are printed, not taken for markup
    shown = run(command[:-1], cwd=tmp_path, path=path, expect=1).stdout
    assert "[postgresql]'" in shown
