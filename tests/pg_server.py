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
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url


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
        self.settings: tuple[str, ...] = ()

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

    def start(self, *settings: str) -> None:
        """Start on its port; ``settings``: more ``name=value`` server settings (kept
        for the next start)."""
        self.settings = settings = settings or self.settings
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
        options += "-c max_connections=200"
        # The statistics `buffetbot-db stats` reads (CREATE EXTENSION in a database to see them).
        options += " -c shared_preload_libraries=pg_stat_statements"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        options += "".join(f" -c {setting}" for setting in settings)
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
            "start",
        )  # fmt: skip

    def clone_standby(self, primary: ThrowawayPostgres) -> None:
        """Make this (not yet initialised) server a hot standby of ``primary``:
        ``pg_basebackup -R`` streams its data and writes the replication settings."""
        self._run(
            "pg_basebackup", "-D", str(self.data), "-h", "127.0.0.1", "-p", str(primary.port),
            "-U", "postgres", "-R", "-X", "stream", "-c", "fast", "--no-sync",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def throwaway_standby(primary: ThrowawayPostgres, *settings: str) -> Iterator[ThrowawayPostgres]:
    """A hot standby streaming from ``primary`` (``settings``: e.g. a
    ``recovery_min_apply_delay``); stopped and deleted afterwards."""
    standby = ThrowawayPostgres()
    try:
        standby.clone_standby(primary)
        # Reconnect to the primary within a moment of a restart, not 5 s.
        standby.start("wal_retrieve_retry_interval=100ms", *settings)
        try:
            yield standby
        finally:
            with contextlib.suppress(PostgresUnavailableError):
                standby.stop()
    finally:
        standby.remove()


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


class PgBouncerUnavailableError(RuntimeError):
    pass


def pgbouncer_binary() -> str | None:
    """The installed ``pgbouncer`` (Debian puts it in /usr/sbin), or None."""
    return shutil.which("pgbouncer") or next(
        (str(p) for p in (Path("/usr/sbin/pgbouncer"), Path("/usr/bin/pgbouncer")) if p.exists()),
        None,
    )


class ThrowawayPgBouncer:
    """A ``pgbouncer`` in transaction pooling mode in front of a server, on a free port."""

    def __init__(self, server: ThrowawayPostgres | str, *, pool_size: int = 40) -> None:
        """``pool_size``: server connections per database and user (``default_pool_size``)."""
        binary = pgbouncer_binary()
        if binary is None:
            raise PgBouncerUnavailableError(
                "pgbouncer is not installed (apt-get install pgbouncer)"
            )
        target = make_url(server.url if isinstance(server, ThrowawayPostgres) else server)
        self.binary = binary
        self.user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="buffetbot-pgbouncer-"))
        self.port = _free_port()
        self.log = self.root / "pgbouncer.log"
        users = self.root / "users.txt"
        user = target.username or "postgres"
        users.write_text(f'"{user}" ""\n')
        self.config = self.root / "pgbouncer.ini"
        self.config.write_text(
            "[databases]\n"
            f"* = host={target.host or '127.0.0.1'} port={target.port or 5432}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {users}\nadmin_users = {user}\n"
            "pool_mode = transaction\n"
            f"max_client_conn = 1000\ndefault_pool_size = {pool_size}\n"
            f"logfile = {self.log}\npidfile = {self.root / 'pgbouncer.pid'}\n"
            # What libpq and asyncpg send at start-up that PgBouncer does not track.
            "ignore_startup_parameters = extra_float_digits\n"
        )
        if self.user is not None:
            account = pwd.getpwnam(self.user)
            for path in (self.root, users, self.config):
                os.chown(path, account.pw_uid, account.pw_gid)
        self.url = target.set(port=self.port).render_as_string(hide_password=False)
        # The admin console: SHOW POOLS, SHOW STATS (simple query protocol only).
        self.admin_url = target.set(port=self.port, database="pgbouncer").render_as_string(
            hide_password=False
        )
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [self.binary, str(self.config)],
            user=self.user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                detail = self.log.read_text() if self.log.exists() else ""
                raise PgBouncerUnavailableError(f"pgbouncer exited at start: {detail}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            time.sleep(0.05)
        raise PgBouncerUnavailableError("pgbouncer did not listen within 30 s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def throwaway_pgbouncer(
    server: ThrowawayPostgres | str, *, pool_size: int = 40
) -> Iterator[ThrowawayPgBouncer]:
    """PgBouncer (transaction pooling) started in front of ``server``; stopped afterwards."""
    bouncer = ThrowawayPgBouncer(server, pool_size=pool_size)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.stop()
