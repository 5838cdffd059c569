"""Run the Python samples of a Markdown file in order, as a newcomer would.

Usage: ``python -m tests.samples FILE [--context seed] [--pytest-url URL] [--stub-yfinance]``

Blocks share one namespace, like a notebook or an asyncio REPL session. A block
with top-level ``await`` runs in a fresh event loop (``asyncio.run``); other
blocks run as plain code (so ``asyncio.run(...)`` inside them works).

Blocks that define pytest fixtures or tests are collected and run with pytest at
the end. With ``--context seed``, names the seed README takes for granted
(``session``, ``portfolio_id``, ``select``, ``MyModel``...) are supplied: see
``SEED_CONTEXT``. Without it, every block must be self-contained.

With ``--stub-yfinance``, ``import yfinance`` gets the stand-in in
``tests/stubs/yfinance`` (the project's test data, no network), in the blocks and
in the pytest run of the deferred blocks.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import builtins
import inspect
import os
import re
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

STUBS = Path(__file__).resolve().parent / "stubs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(markdown: str) -> list[tuple[int, str]]:
    """(line number, code) of every ```python block."""
    return [(markdown[: m.start()].count("\n") + 1, m.group(1)) for m in BLOCK.finditer(markdown)]


def free_names(code: str) -> set[str]:
    """Names a block reads at module level without defining them (function bodies run later)."""
    tree = ast.parse(code)
    loaded: set[str] = set()
    stored: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            stored.add(node.name)
            for decorator in node.decorator_list:
                visit(decorator)
            return
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else stored).add(node.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            stored.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.arg):
            stored.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            stored.add(node.name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return loaded - stored - set(dir(builtins))


# -- what the seed README takes for granted ---------------------------------------------


def _seed_portfolio_id() -> Any:
    from sqlalchemy import select

    from database import get_database_session
    from database.models import Portfolio

    with get_database_session() as session:
        return session.scalars(select(Portfolio.id).where(Portfolio.name == "My Portfolio")).one()


def _install_my_model() -> Any:
    """The seed's ``MyModel`` placeholder: a model of the reader's own, with ``custom_field``."""
    import database.models
    from database.models.base import Base, UUIDPrimaryKey

    class MyModel(UUIDPrimaryKey, Base):
        __tablename__ = "my_models"
        custom_field: Mapped[str] = mapped_column(String(50))

    database.models.MyModel = MyModel  # type: ignore[attr-defined]
    return MyModel


def _select() -> Any:
    from sqlalchemy import select

    return select


def _repository(name: str) -> Callable[[], Any]:
    def provide() -> Any:
        import database.repositories

        return getattr(database.repositories, name)

    return provide


SEED_CONTEXT: dict[str, Callable[[], Any]] = {
    "select": _select,
    "portfolio_id": _seed_portfolio_id,
    "user_repo": lambda: _repository("UserRepository")()(),
    "user_email": lambda: "investor@example.com",
    "UserRepository": _repository("UserRepository"),
    "MarketDataRepository": _repository("MarketDataRepository"),
}


def _imports_my_model(code: str) -> bool:
    return "import MyModel" in code


# -- running -------------------------------------------------------------------------------


def run_block(
    code: str, label: str, namespace: dict[str, Any], context: dict[str, Callable[[], Any]]
) -> None:
    needs_session = "session" in free_names(code)
    for name in sorted(free_names(code) - set(namespace) - {"session"}):
        if name not in context:
            raise NameError(f"{label} uses {name!r}, which no earlier sample defines")
        namespace[name] = context[name]()
    if _imports_my_model(code) and "seed" in namespace.get("__context__", ""):
        _install_my_model()
    compiled = compile(code, label, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if not compiled.co_flags & inspect.CO_COROUTINE:
        exec(compiled, namespace)  # noqa: S102 - running documentation samples is the point
        return

    async def main() -> None:
        if needs_session:
            if "session" not in context:
                raise NameError(f"{label} uses 'session', which no earlier sample defines")
            from database import get_async_database_session

            async with get_async_database_session() as session:
                namespace["session"] = session
                await eval(compiled, namespace)  # noqa: S307
        else:
            await eval(compiled, namespace)  # noqa: S307

    asyncio.run(main())


def run_pytest_blocks(blocks: list[tuple[str, str]], url: str | None, preamble: str) -> None:
    source = preamble + "\n\n".join(code for _, code in blocks)
    if url is not None:
        # The seed's fixture names a database on a developer's own machine; point it at ours.
        source = re.sub(r'"postgresql://[^"]+"', f'"{url}"', source)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "test_readme_samples.py"
        path.write_text(source)
        config = Path(folder) / "pytest.ini"
        config.write_text(
            "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
            "filterwarnings = error\n"
        )
        command = [sys.executable, "-m", "pytest", str(path), "-q", "-p", "no:cacheprovider"]
        command += ["-c", str(config), "--rootdir", folder]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        print(result.stdout[-3000:])
        if result.returncode != 0:
            print(result.stderr[-3000:], file=sys.stderr)
            raise RuntimeError(
                f"pytest samples failed ({' + '.join(label for label, _ in blocks)})"
            )


def use_yfinance_stand_in() -> None:
    """``import yfinance`` gets tests/stubs/yfinance, here and in the pytest subprocess."""
    sys.path.insert(0, str(STUBS))
    sys.modules.pop("yfinance", None)
    inherited = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(STUBS), inherited]))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("markdown", type=Path)
    parser.add_argument("--context", choices=["seed"], default=None)
    parser.add_argument("--pytest-url", default=None)
    parser.add_argument(
        "--stub-yfinance",
        action="store_true",
        help="import yfinance from tests/stubs (the stand-in serving tests/data)",
    )
    arguments = parser.parse_args()
    if arguments.stub_yfinance:
        use_yfinance_stand_in()
    context: dict[str, Callable[[], Any]] = (
        dict(SEED_CONTEXT) if arguments.context == "seed" else {}
    )
    if arguments.context == "seed":
        context["session"] = lambda: (
            None
        )  # marker: blocks get a session from get_async_database_session
    namespace: dict[str, Any] = {"__name__": "__samples__", "__context__": arguments.context or ""}
    deferred: list[tuple[str, str]] = []
    for line, code in python_blocks(arguments.markdown.read_text()):
        label = f"{arguments.markdown.name}:{line}"
        if "@pytest.fixture" in code or re.search(r"^(async )?def test_", code, re.MULTILINE):
            deferred.append((label, code))
            continue
        try:
            run_block(code, label, namespace, context)
        except Exception:
            print(f"FAILED {label}\n{code}", file=sys.stderr)
            traceback.print_exc()
            return 1
        print(f"ok {label}")
    if deferred:
        preamble = (
            "from database.repositories import UserRepository\n\n" if arguments.context else ""
        )
        try:
            run_pytest_blocks(deferred, arguments.pytest_url, preamble)
        except RuntimeError as error:
            print(f"FAILED {error}", file=sys.stderr)
            return 1
        for label, _ in deferred:
            print(f"ok {label} (pytest)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
