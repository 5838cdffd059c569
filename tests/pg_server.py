"""A throwaway PostgreSQL server for the test suite, from the installed binaries.

initdb into a temporary directory, start on a free loopback port, stop and
delete afterwards. PostgreSQL refuses to run as root, so under root the server
runs as the ``postgres`` (else ``nobody``) account.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


class PostgresUnavailableError(RuntimeError):
    pass


def _bindir() -> Path:
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        output = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        candidates.append(Path(output.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    raise PostgresUnavailableError(
        "no PostgreSQL binaries (initdb, pg_ctl) found; install PostgreSQL"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise PostgresUnavailableError("running as root and no unprivileged account to run PostgreSQL")


class ThrowawayPostgres:
    """A server in a temporary directory; stop and start it again (fault tests)."""

    def __init__(self, *, durable: bool = False) -> None:
        # Not durable (the default, for speed): a crash may lose the last commits.
        self.durable = durable
        self.bindir = _bindir()
        self.user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="buffetbot-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        if self.user is not None:
            account = pwd.getpwnam(self.user)
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            user=self.user,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            detail = self.log.read_text() if self.log.exists() else ""
            raise PostgresUnavailableError(
                f"{args[0]} failed: {result.stderr}{result.stdout}{detail}"
            )

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
        options += "-c max_connections=200"
        # The statistics `buffetbot-db stats` reads (CREATE EXTENSION in a database to see them).
        options += " -c shared_preload_libraries=pg_stat_statements"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
            "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Yield the URL of a fresh server's ``postgres`` database; stop it afterwards."""
    with throwaway_server() as server:
        yield server.url


@contextlib.contextmanager
def throwaway_server(*, durable: bool = False) -> Iterator[ThrowawayPostgres]:
    """A fresh server, started; stopped and deleted afterwards.

    ``durable``: every acknowledged commit survives a crash (``pg_ctl stop -m
    immediate``), as in production; otherwise the server trades that for speed.
    """
    server = ThrowawayPostgres(durable=durable)
    try:
        server.init()
        server.start()
        try:
            yield server
        finally:
            with contextlib.suppress(PostgresUnavailableError):
                server.stop()
    finally:
        server.remove()
