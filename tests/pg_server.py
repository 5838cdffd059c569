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


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Yield the URL of a fresh server's ``postgres`` database; stop it afterwards."""
    bindir = _bindir()
    user = _run_as()
    root = Path(tempfile.mkdtemp(prefix="buffetbot-pg-"))
    data, log = root / "data", root / "server.log"
    if user is not None:
        account = pwd.getpwnam(user)
        os.chown(root, account.pw_uid, account.pw_gid)
    port = _free_port()

    def run(*args: str) -> None:
        result = subprocess.run(
            [str(bindir / args[0]), *args[1:]],
            user=user,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            detail = log.read_text() if log.exists() else ""
            raise PostgresUnavailableError(
                f"{args[0]} failed: {result.stderr}{result.stdout}{detail}"
            )

    try:
        run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        run("pg_ctl", "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
