"""Throwaway Postgres 15 and PgBouncer on 127.0.0.1, driven through their CLIs
(psql, pg_isready, pgbench), plus a tiny SCRAM-only client that opens many
connections at once and counts the refused ones, and the Headroom plan and
pgbouncer.ini that the pooler tests and the benchmark run.

Shared by the conformance tests (tests/conformance/conftest.py) and
bench/pooler_bench.py, so it must not import pytest. Every server listens on
127.0.0.1 only, on a free port, with its data, config, socket and log in a
private temp dir. Started as root, the servers run as the ``postgres`` system
user (Postgres refuses to run as root); otherwise as the current user.
``ServerProcess``, the start/stop machinery of Postgres and PgBouncer, is also
the base of redis_servers.RedisProcess.

Binaries: ``$HEADROOM_PG_BINDIR`` (default /usr/lib/postgresql/15/bin) for
initdb, pg_ctl, postgres, psql, pg_isready and pgbench; ``$HEADROOM_PGBOUNCER``
(default: ``pgbouncer`` on PATH, then /usr/sbin/pgbouncer: Debian 12's 1.18, the
oldest release Headroom supports) for PgBouncer; ``default_pgbouncer`` for the
release of the default image (hack/build-pgbouncer.sh).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import pwd
import re
import resource
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self

from headroom.api import v1alpha1
from headroom.builders import pgbouncer, standby
from headroom.planning import planner

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PG_BINDIR = "/usr/lib/postgresql/15/bin"
SERVICE_USER = "postgres"
PG_TOOLS = ("initdb", "pg_ctl", "postgres", "psql", "pg_isready", "pgbench")
# psql output separators that cannot occur in the values we read.
_FIELD_SEP = "\x1f"
_RECORD_SEP = "\x1e"
# Messages Postgres sends when it refuses a connection for lack of slots.
SLOT_ERRORS = (
    "sorry, too many clients already",
    "remaining connection slots are reserved",
)


class ToolsMissingError(RuntimeError):
    """The binaries (or the user to run them as) are not on this machine."""


class ServerError(RuntimeError):
    """A server failed to start or a command against it failed; carries its log."""


@dataclass(frozen=True)
class Tools:
    bindir: Path
    pgbouncer: Path
    # Keyword arguments for subprocess that run a server as the service user.
    run_as: Mapping[str, Any] = field(default_factory=dict)
    owner: tuple[int, int] | None = None  # uid, gid that must own server dirs

    def pg(self, name: str) -> str:
        return str(self.bindir / name)

    def versions(self) -> dict[str, str]:
        """First line of ``--version`` of postgres, pgbench and pgbouncer."""
        out = {}
        for name, binary in (
            ("postgres", self.pg("postgres")),
            ("pgbench", self.pg("pgbench")),
            ("pgbouncer", str(self.pgbouncer)),
        ):
            proc = subprocess.run(
                [binary, "--version"], capture_output=True, text=True, check=False, timeout=30
            )
            out[name] = (proc.stdout or proc.stderr).strip().splitlines()[0]
        return out


def find_binary(env: str, name: str, fallback_dir: str) -> Path | None:
    """``$env``, else ``name`` on PATH, else ``fallback_dir/name``; None unless executable."""
    found = os.environ.get(env) or shutil.which(name)
    if not found and os.access(f"{fallback_dir}/{name}", os.X_OK):
        found = f"{fallback_dir}/{name}"
    return Path(found) if found and os.access(found, os.X_OK) else None


def find_tools() -> Tools:
    """Locate the binaries; raise ToolsMissingError naming what is missing."""
    bindir = Path(os.environ.get("HEADROOM_PG_BINDIR", DEFAULT_PG_BINDIR))
    missing = [name for name in PG_TOOLS if not os.access(bindir / name, os.X_OK)]
    bouncer = find_binary("HEADROOM_PGBOUNCER", "pgbouncer", "/usr/sbin")
    if bouncer is None:
        missing.append("pgbouncer")
    if missing:
        raise ToolsMissingError(
            f"missing {', '.join(missing)} (Postgres 15 tools looked up in {bindir}, "
            "set $HEADROOM_PG_BINDIR; pgbouncer on PATH or $HEADROOM_PGBOUNCER; "
            "on Debian: apt-get install postgresql-15 pgbouncer)"
        )
    run_as: dict[str, Any] = {}
    owner = None
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            raise ToolsMissingError(
                f"running as root but there is no {SERVICE_USER!r} user to run the servers as"
            ) from None
        run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        owner = (entry.pw_uid, entry.pw_gid)
    assert bouncer is not None
    return Tools(bindir=bindir, pgbouncer=bouncer, run_as=run_as, owner=owner)


def default_pgbouncer(where: Path, owner: tuple[int, int] | None) -> Path:
    """PgBouncer of the default image's release from Debian's archive
    (hack/build-pgbouncer.sh, which fetches or builds it into the cache when it is
    not there), copied into ``where`` with what it runs on (sid's loader and
    libraries beside a wrapper, or one binary) so that ``owner``, the servers'
    user, may run it: the cache may be private to the user running the tests.
    Raises ToolsMissingError when it cannot be had."""
    script = ROOT / "hack" / "build-pgbouncer.sh"
    try:
        done = subprocess.run(
            [str(script)], capture_output=True, text=True, timeout=900, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ToolsMissingError(f"{script}: {err}") from None
    lines = done.stdout.strip().splitlines()
    built = Path(lines[-1]) if lines else None
    if done.returncode != 0 or built is None or not os.access(built, os.X_OK):
        raise ToolsMissingError(f"{script} failed:\n{done.stderr[-3000:]}")
    copy = where / "pgbouncer-default"
    shutil.copytree(built.parent, copy, symlinks=True)
    for folder in (where, copy):
        folder.chmod(0o755)
        if owner is not None:
            os.chown(folder, *owner)
    return copy / built.name


def pgbouncer_version(binary: Path) -> tuple[int, int]:
    """The major.minor ``binary --version`` names."""
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    found = re.search(r"PgBouncer (\d+)\.(\d+)", out.stdout)
    if found is None:
        raise ServerError(f"{binary} --version: {out.stdout}{out.stderr}")
    return int(found.group(1)), int(found.group(2))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def raise_nofile(wanted: int) -> int:
    """Raise this process's RLIMIT_NOFILE (children inherit it); return the soft limit.

    PgBouncer and pgbench need one descriptor per client. As root the hard
    limit is raised too when needed.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted or soft == resource.RLIM_INFINITY:
        return soft
    if hard != resource.RLIM_INFINITY and hard < wanted and os.geteuid() == 0:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    return new_soft


def wait_until(
    check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``check`` until it returns true; TimeoutError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def libpq_env(
    *, user: str, password: str, port: int, dbname: str, host: str = HOST
) -> dict[str, str]:
    """The environment for a libpq client: ours, with no PG* settings leaking in.
    ``host``: 127.0.0.1, or a UNIX-socket directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        PGHOST=host,
        PGPORT=str(port),
        PGUSER=user,
        PGPASSWORD=password,
        PGDATABASE=dbname,
        PGSSLMODE="disable",
        PGCONNECT_TIMEOUT="10",
    )
    return env


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def private_dir(prefix: str, owner: tuple[int, int] | None = None) -> Path:
    """A fresh temp dir, owned by ``owner`` (uid, gid: the user the servers run as)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if owner is not None:
        os.chown(path, *owner)
    return path


def write_private(path: Path, text: str, owner: tuple[int, int] | None = None) -> Path:
    """Write ``text`` to ``path`` with mode 0600, owned by ``owner`` when given."""
    path.write_text(text)
    path.chmod(0o600)
    if owner is not None:
        os.chown(path, *owner)
    return path


def pg_isready(tools: Tools, port: int, host: str = HOST) -> bool:
    """Whether the server on ``port`` answers a startup packet (pg_isready)."""
    proc = subprocess.run(
        [tools.pg("pg_isready"), "-h", host, "-p", str(port), "-t", "2"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return proc.returncode == 0


class ServerProcess:
    """One server process in a private dir (``self.dir``): our child, in its own
    session, its output appended to ``self.log``; stopped, and its dir removed,
    by ``stop()``.

    Base of Postgres, PgBouncer and redis_servers.RedisProcess. A subclass makes
    the dir in ``start()``, launches with ``_launch_until_ready`` and says in
    ``_accepting()`` when the server takes connections. ``_halt()`` sends
    ``_ask_to_stop()`` (SIGTERM unless overridden), SIGKILLs after
    ``halt_timeout`` seconds and reaps the process.
    """

    halt_timeout: float = 15

    def __init__(self, *, program: str, log_name: str, start_timeout: float) -> None:
        self.program = program  # in "<program> exited with <code> ..."
        self.log_name = log_name
        self.start_timeout = start_timeout
        self.dir: Path | None = None
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def in_dir(self, name: str) -> Path:
        """``name`` in the private dir (which exists from ``start()`` to ``stop()``)."""
        assert self.dir is not None
        return self.dir / name

    @property
    def log(self) -> Path:
        return self.in_dir(self.log_name)

    def log_text(self) -> str:
        """Everything the process wrote so far ("" when there is no log)."""
        if self.dir is None:
            return ""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def start(self) -> Self:
        raise NotImplementedError

    def _spawn(self, argv: list[str], **popen: Any) -> None:
        """Start ``argv`` in the dir, in a new session, output appended to the log."""
        assert self.dir is not None
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **popen,
            )

    def _launch_until_ready(self, launch: Callable[[], None], *, what: str, attempts: int) -> None:
        """Call ``launch`` (which spawns the process) and wait up to ``start_timeout``
        for ``_ready``, TimeoutError naming ``what`` (``{port}`` filled in).

        On a failure the process is halted; when it lost its port to another
        process (``_port_taken``) and ``attempts`` are left, ``launch`` runs
        again (to pick another port), else the error is raised.
        """
        for attempt in range(attempts):
            launch()
            try:
                wait_until(
                    self._ready, timeout=self.start_timeout, what=what.format(port=self.port)
                )
            except (ServerError, TimeoutError):
                self._halt()
                if attempt + 1 < attempts and self._port_taken():
                    continue  # lost the race for the port: take another one
                raise
            return
        raise AssertionError("unreachable")

    def _port_taken(self) -> bool:
        return "Address already in use" in self.log_text()

    def _ready(self) -> bool:
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None:
            raise ServerError(self._exited_message(code))
        return self._accepting()

    def _exited_message(self, code: int) -> str:
        return f"{self.program} exited with {code} before accepting connections"

    def _accepting(self) -> bool:
        raise NotImplementedError

    def _ask_to_stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def _halt(self) -> None:
        """``_ask_to_stop``; SIGKILL after ``halt_timeout`` seconds; reap the process."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._ask_to_stop()
            try:
                self.proc.wait(timeout=self.halt_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=self.halt_timeout)
        self.proc = None

    def halt(self) -> None:
        """Stop the process (``_halt``: a crash, for Postgres), keeping its dir."""
        self._halt()

    def stop(self) -> None:
        """Stop the process (``_halt``) and remove its dir."""
        self._halt()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Psql:
    """psql against one server as one user."""

    tools: Tools
    port: int
    user: str
    password: str
    dbname: str
    host: str = HOST  # or a UNIX-socket directory

    def run(
        self, sql: str, *, timeout: float = 60, headers: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run ``sql`` (never raises on a failed query: check returncode/stderr)."""
        return subprocess.run(
            [
                self.tools.pg("psql"),
                "-X",
                "-q",
                "-A",
                "-P",
                "footer=off",
                *([] if headers else ["-t"]),
                "-v",
                "ON_ERROR_STOP=1",
                "-F",
                _FIELD_SEP,
                "-R",
                _RECORD_SEP,
                "-c",
                sql,
            ],
            env=libpq_env(
                user=self.user,
                password=self.password,
                port=self.port,
                dbname=self.dbname,
                host=self.host,
            ),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def rows(self, sql: str, *, timeout: float = 60, headers: bool = False) -> list[list[str]]:
        """Rows of ``sql`` as lists of strings (first the column names when
        ``headers``); ServerError when psql fails."""
        proc = self.run(sql, timeout=timeout, headers=headers)
        if proc.returncode != 0:
            raise ServerError(
                f"psql as {self.user} on port {self.port}/{self.dbname} failed "
                f"({proc.returncode}): {sql!r}\n{proc.stderr.strip()}"
            )
        text = proc.stdout.rstrip("\n")
        if not text:
            return []
        return [record.split(_FIELD_SEP) for record in text.split(_RECORD_SEP)]

    def value(self, sql: str) -> str:
        return self.rows(sql)[0][0]

    def table(self, sql: str) -> list[dict[str, str]]:
        """Rows of ``sql`` as dicts by column name."""
        columns, *rows = self.rows(sql, headers=True)
        return [dict(zip(columns, row, strict=True)) for row in rows]


def quote_literal(text: str) -> str:
    """A SQL string literal (standard_conforming_strings is on)."""
    return "'" + text.replace("'", "''") + "'"


def quote_ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


class Postgres(ServerProcess):
    """A throwaway Postgres cluster: initdb (SCRAM for every connection), postgres -D."""

    superuser = "postgres"
    halt_timeout = 30

    def __init__(
        self,
        tools: Tools,
        *,
        max_connections: int = 100,
        superuser_reserved_connections: int = 3,
        extra_conf: str = "",
        start_timeout: float = 60,
        socket_port: int | None = None,
    ) -> None:
        """``socket_port``: listen on a UNIX socket in its private dir only (``host``),
        on this port, not on 127.0.0.1: servers that must share one port (the
        host list of a read pool takes one) each get their own socket dir."""
        super().__init__(program="postgres", log_name="postgres.log", start_timeout=start_timeout)
        self.tools = tools
        self.socket_port = socket_port
        self.extra_conf = extra_conf  # more postgresql.conf lines (e.g. ssl)
        self.max_connections = max_connections
        self.superuser_reserved_connections = superuser_reserved_connections
        self.superuser_password = secrets.token_urlsafe(16)

    @property
    def data(self) -> Path:
        return self.in_dir("data")

    @property
    def host(self) -> str:
        """Where clients reach it: 127.0.0.1, or its socket dir with ``socket_port``."""
        return HOST if self.socket_port is None else str(self.dir)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        assert self.dir is not None
        proc = subprocess.run(
            list(args),
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **self.tools.run_as,
        )
        if proc.returncode != 0:
            raise ServerError(
                f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}\n"
                f"--- {self.log} ---\n{_tail(self.log)}"
            )
        return proc

    def start(self) -> Self:
        self.dir = private_dir("headroom-pg-", self.tools.owner)
        pwfile = write_private(
            self.in_dir("pwfile"), self.superuser_password + "\n", self.tools.owner
        )
        self._run(
            self.tools.pg("initdb"),
            "-D",
            str(self.data),
            "-U",
            self.superuser,
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()
        return self._launch_or_fail("Postgres")

    def _launch_or_fail(self, what: str) -> Self:
        try:
            self._launch_until_ready(self._launch, what=f"{what} on port {{port}}", attempts=3)
        except (ServerError, TimeoutError) as err:
            raise ServerError(f"{err}\n--- {self.log} ---\n{_tail(self.log)}") from None
        return self

    def _launch(self) -> None:
        self.port = free_port() if self.socket_port is None else self.socket_port
        listen = HOST if self.socket_port is None else ""
        conf = (
            "\n# headroom conformance\n"
            f"listen_addresses = '{listen}'\n"
            f"port = {self.port}\n"
            f"unix_socket_directories = '{self.dir}'\n"
            f"max_connections = {self.max_connections}\n"
            f"superuser_reserved_connections = {self.superuser_reserved_connections}\n"
            "password_encryption = 'scram-sha-256'\n"
            # Throwaway data: durability only costs time.
            "fsync = off\n"
            "synchronous_commit = off\n"
            "full_page_writes = off\n"
            f"{self.extra_conf}"
        )
        (self.data / "postgresql.auto.conf").write_text(conf)
        # The postmaster is our child (not pg_ctl's), so we reap it at stop.
        self._spawn([self.tools.pg("postgres"), "-D", str(self.data)], **self.tools.run_as)

    def _port_taken(self) -> bool:
        return "Address already in use" in _tail(self.log)

    def _accepting(self) -> bool:
        return pg_isready(self.tools, self.port, self.host)

    def _ask_to_stop(self) -> None:
        """pg_ctl stop -m immediate (``_halt`` SIGKILLs the postmaster if that fails)."""
        with contextlib.suppress(ServerError, subprocess.TimeoutExpired):
            self._run(
                self.tools.pg("pg_ctl"),
                "stop",
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "-w",
                "-t",
                "60",
            )

    def admin(self, dbname: str = "postgres") -> Psql:
        return Psql(
            self.tools, self.port, self.superuser, self.superuser_password, dbname, self.host
        )

    def create_role(self, name: str, password: str) -> None:
        self.admin().rows(
            f"DROP ROLE IF EXISTS {quote_ident(name)}; "
            f"CREATE ROLE {quote_ident(name)} LOGIN PASSWORD {quote_literal(password)}"
        )

    def create_app(self, user: str, password: str, dbname: str, *, scale: int = 1) -> None:
        """Role ``user`` owning database ``dbname``, filled by ``pgbench -i -s scale``."""
        self.create_role(user, password)
        self.admin().rows(f"CREATE DATABASE {quote_ident(dbname)} OWNER {quote_ident(user)}")
        proc = subprocess.run(
            [self.tools.pg("pgbench"), "-i", "-q", "-s", str(scale)],
            env=libpq_env(user=user, password=password, port=self.port, dbname=dbname),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if proc.returncode != 0:
            raise ServerError(f"pgbench -i failed ({proc.returncode}):\n{proc.stderr}")

    def backends(self, user: str) -> int:
        """Client backends of ``user`` right now (pg_stat_activity)."""
        return int(
            self.admin().value(
                "SELECT count(*) FROM pg_stat_activity "  # noqa: S608 - quoted literal
                f"WHERE usename = {quote_literal(user)} AND backend_type = 'client backend'"
            )
        )


# The role and database of the TLS primary (the conformance ``tls_primary`` fixture),
# and the name its certificate has beside HOST (the operator's probe resolves it).
TLS_USER, TLS_PASSWORD, TLS_DBNAME = "tls_app", "tls-app-secret-9", "tlsdb"
TLS_PRIMARY_NAME = "primary.headroom.test"


@dataclass(frozen=True)
class TLSPrimary:
    """A Postgres serving a certificate for HOST that ``ca_file`` signed and
    ``other_ca_file`` did not, with role TLS_USER owning database TLS_DBNAME."""

    server: Postgres
    ca_file: Path
    other_ca_file: Path

    @property
    def database(self) -> AppDatabase:
        return AppDatabase(self.server, TLS_USER, TLS_PASSWORD, TLS_DBNAME)


class Standby(Postgres):
    """A hot standby of ``primary``, cloned with ``pg_basebackup -R -C -S <slot>``
    (a physical replication slot on the primary) and streaming from it on
    127.0.0.1. Its superuser and password are the primary's (the clone copies
    the roles)."""

    def __init__(
        self,
        primary: Postgres,
        *,
        slot: str,
        clone: Callable[[Standby], None] | None = None,
        start_timeout: float = 60,
        socket_port: int | None = None,
        settings: str = "",
    ) -> None:
        """``clone(standby)`` fills ``standby.data`` (default: pg_basebackup here).
        ``settings``: postgresql.conf lines after the test's own (e.g. the ones
        Headroom renders for its standbys)."""
        super().__init__(
            primary.tools,
            max_connections=primary.max_connections,
            superuser_reserved_connections=primary.superuser_reserved_connections,
            start_timeout=start_timeout,
            socket_port=socket_port,
        )
        self.primary = primary
        self.slot = slot
        self.superuser_password = primary.superuser_password
        self._clone = clone or Standby.basebackup
        self.settings = settings

    def basebackup(self) -> None:
        proc = subprocess.run(
            [
                self.tools.pg("pg_basebackup"), "-h", HOST, "-p", str(self.primary.port),
                "-U", self.superuser, "-D", str(self.data), "-R", "-C", "-S", self.slot,
                "-X", "stream", "--no-sync", "--checkpoint=fast",
            ],
            cwd=self.dir,
            env={**os.environ, "PGPASSWORD": self.primary.superuser_password},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            **self.tools.run_as,
        )  # fmt: skip
        if proc.returncode != 0:
            raise ServerError(f"pg_basebackup exited {proc.returncode}:\n{proc.stderr}")

    def start(self) -> Self:
        self.dir = private_dir("headroom-standby-", self.tools.owner)
        self._clone(self)
        # -R wrote how to reach the primary; keep that, the rest is ours
        written = (self.data / "postgresql.auto.conf").read_text()
        self.extra_conf = self.settings + "".join(
            line + "\n"
            for line in written.splitlines()
            if line.startswith(("primary_conninfo", "primary_slot_name"))
        )
        return self._launch_or_fail("standby")


def run_clone_script(
    node: Standby, *, replication_user: str, password: str
) -> subprocess.CompletedProcess[str]:
    """builders.standby's CLONE_SCRIPT with the environment clone_env renders
    (PGPASSWORD resolved from its Secret reference, as the kubelet would), as
    the standby pod's init container runs it, cloning ``node.primary`` into
    ``node.data``."""
    env = standby.clone_env(
        primary_host=HOST,
        primary_port=node.primary.port,
        replication_user=replication_user,
        slot=node.slot,
        pgdata=str(node.data),
        password_secret={"name": "shop-replication", "key": "password"},
    )
    values = {e["name"]: e.get("value", "") for e in env}
    assert {e["name"] for e in env if "valueFrom" in e} == {"PGPASSWORD"}
    values["PGPASSWORD"] = password
    script = Path(node.dir or "/nonexistent") / "clone.sh"
    script.write_text(standby.CLONE_SCRIPT)
    script.chmod(0o755)
    return subprocess.run(
        ["/bin/sh", str(script)],
        env={"PATH": f"{node.tools.bindir}:{os.environ['PATH']}", **values},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        **node.tools.run_as,
    )


@dataclass(frozen=True)
class AppDatabase:
    """A Postgres with the app's role and database (the conformance ``database``
    fixture; the benchmark's database)."""

    server: Postgres
    user: str
    password: str
    name: str

    @property
    def port(self) -> int:
        return self.server.port

    def backends(self) -> int:
        """Client backends of the app user on Postgres right now."""
        return self.server.backends(self.user)

    def wait_for_no_app_backends(self, timeout: float = 60) -> None:
        """Until every app backend left over from an earlier test has exited."""
        wait_until(
            lambda: self.backends() == 0,
            timeout=timeout,
            what=f"no {self.user} backends on Postgres",
        )

    def userlist(self, stats_password: str, **more: str) -> str:
        """The PgBouncer auth file Headroom renders: the app user, the stats user
        (``stats_password``) and ``more`` users (name=password)."""
        return pgbouncer.render_userlist(
            {self.user: self.password, planner.STATS_USER: stats_password, **more}
        )

    def pgbench(
        self,
        port: int,
        *,
        clients: int,
        jobs: int,
        duration: int | None = None,
        transactions: int | None = None,
        extra: tuple[str, ...] = ("-S",),
        timeout: float = 600,
    ) -> PgbenchResult:
        """run_pgbench (select-only unless ``extra`` says otherwise) as the app user
        on its database, at ``port``: Postgres itself or a PgBouncer in front of it."""
        return run_pgbench(
            self.server.tools,
            port=port,
            user=self.user,
            password=self.password,
            dbname=self.name,
            clients=clients,
            jobs=jobs,
            duration=duration,
            transactions=transactions,
            extra=extra,
            timeout=timeout,
        )

    def probe(
        self, port: int, *, count: int, user: str | None = None, password: str | None = None
    ) -> ProbeResult:
        """probe_connections to the app database at ``port``, as the app user unless
        ``user``, with its password unless ``password``."""
        return probe_connections(
            port,
            user=self.user if user is None else user,
            password=self.password if password is None else password,
            dbname=self.name,
            count=count,
        )


class PgBouncer(ServerProcess):
    """One pgbouncer process (foreground, run as the service user) in a private dir.

    ``ini`` is the pgbouncer.ini text, or a function of (listen_port, auth_file)
    returning it; with a function a port lost to another process is retried.
    SIGTERM stops it at once (SIGINT would wait for clients).
    """

    def __init__(
        self,
        tools: Tools,
        ini: str | Callable[[int, str], str],
        userlist: str,
        *,
        start_timeout: float = 30,
    ) -> None:
        super().__init__(program="pgbouncer", log_name="pgbouncer.log", start_timeout=start_timeout)
        self.tools = tools
        self._ini = ini
        self.userlist = userlist
        self.ini_text = ""

    @property
    def auth_file(self) -> Path:
        return self.in_dir("userlist.txt")

    def start(self) -> Self:
        self.dir = private_dir("headroom-pgbouncer-", self.tools.owner)
        write_private(self.auth_file, self.userlist, self.tools.owner)
        try:
            self._launch_until_ready(
                self._launch,
                what="pgbouncer on port {port}",
                attempts=3 if callable(self._ini) else 1,
            )
        except (ServerError, TimeoutError) as err:
            self.stop()
            raise ServerError(f"{err}\n--- pgbouncer.ini ---\n{self.ini_text}") from None
        return self

    def _launch(self) -> None:
        if callable(self._ini):
            self.port = free_port()
            self.ini_text = self._ini(self.port, str(self.auth_file))
        else:
            self.ini_text = self._ini
            found = re.search(r"^\s*listen_port\s*=\s*(\d+)", self.ini_text, re.M)
            self.port = int(found.group(1)) if found else 6432
        ini_path = write_private(self.in_dir("pgbouncer.ini"), self.ini_text, self.tools.owner)
        self._spawn([str(self.tools.pgbouncer), str(ini_path)], **self.tools.run_as)

    def _exited_message(self, code: int) -> str:
        return f"{super()._exited_message(code)}\n--- log ---\n{self.log_text()[-6000:]}"

    def _accepting(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            if sock.connect_ex((HOST, self.port)) != 0:
                return False
        # A startup packet answered (here: with an auth request) = accepting.
        return pg_isready(self.tools, self.port)

    def psql(self, user: str, password: str, dbname: str) -> Psql:
        return Psql(self.tools, self.port, user, password, dbname)

    def show(self, what: str, *, user: str, password: str) -> list[dict[str, str]]:
        """``SHOW <what>`` on the admin console, as dicts by column name."""
        return self.psql(user, password, "pgbouncer").table(f"SHOW {what}")


class StartPgBouncer(Protocol):
    """The conformance ``start_pgbouncer`` fixture: (ini or ini(port, auth_file),
    userlist), in Debian's 1.18 unless ``pgbouncer`` names another binary."""

    def __call__(
        self,
        ini: str | Callable[[int, str], str],
        userlist: str,
        pgbouncer: Path | None = None,
    ) -> PgBouncer: ...


def pooler_plan(**given: Any) -> planner.Plan:
    """Headroom's plan for :func:`pooler_profile` (the same arguments)."""
    return planner.plan(pooler_profile(**given))


def pooler_profile(
    *,
    name: str,
    uid: str,
    port: int,
    dbname: str,
    max_replicas: int,
    pool_per_pod: int,
    max_connections: int,
    superuser_reserved_connections: int,
    version: str,
    parameters: Mapping[str, str] | None = None,
    instances: int = 1,
    reserved_connections: int | None = None,
    read_replicas: Mapping[str, Any] | None = None,
    load: Mapping[str, Any] | None = None,
) -> v1alpha1.ScalingProfile:
    """A ScalingProfile ``name``: an app of up to ``max_replicas``
    pods with ``pool_per_pod`` connections each, through one transaction-mode
    PgBouncer ``version`` (with ``parameters``), to database ``dbname`` on
    HOST:``port`` (``max_connections``, ``superuser_reserved_connections``), sized from
    ``load`` (spec.load) when given."""
    return v1alpha1.parse_profile(
        {
            "apiVersion": "headroom.dev/v1alpha1",
            "kind": "ScalingProfile",
            "metadata": {"name": name, "namespace": "default", "uid": uid},
            "spec": {
                "app": {
                    "deployment": "web",
                    "replicas": {"min": 1, "max": max_replicas},
                    "poolSizePerPod": pool_per_pod,
                },
                "database": {
                    "host": HOST,
                    "port": port,
                    "name": dbname,
                    "credentialsSecret": {"name": "db"},
                    "maxConnections": max_connections,
                    "superuserReservedConnections": superuser_reserved_connections,
                    **(
                        {}
                        if reserved_connections is None
                        else {"reservedConnections": reserved_connections}
                    ),
                    **({} if read_replicas is None else {"readReplicas": dict(read_replicas)}),
                },
                "pooler": {
                    "instances": instances,
                    "poolMode": "transaction",
                    # the image is never pulled here; its tag names the version
                    "image": f"registry.example/pgbouncer:{version}",
                    "parameters": dict(parameters or {}),
                },
                **({} if load is None else {"load": dict(load)}),
            },
        }
    )


def ini_for(
    plan: planner.Plan, extra: str = "", *, server_ca_file: str = ""
) -> Callable[[int, str], str]:
    """render_ini on HOST for the port and auth file PgBouncer.start picks (plus raw
    ``extra`` lines, and the CA file where the profile has one): the ``ini`` for
    PgBouncer and ``start_pgbouncer``."""

    def render(port: int, auth_file: str) -> str:
        ini = pgbouncer.render_ini(
            plan,
            listen_addr=HOST,
            listen_port=port,
            auth_file=auth_file,
            **({"server_ca_file": server_ca_file} if server_ca_file else {}),
        )
        return ini + extra

    return render


def startup_auth_request(port: int, user: str, dbname: str) -> tuple[int, list[str]]:
    """Send a StartupMessage; return the server's auth request code and SASL mechanisms.

    Code 10 is AuthenticationSASL (mechanisms listed), 5 MD5, 3 cleartext, 0 OK.
    """
    params = f"user\0{user}\0database\0{dbname}\0\0".encode()
    packet = struct.pack("!ii", 8 + len(params), 196608) + params
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(packet)
        head = _recv_exact(sock, 5)
        kind, length = head[:1], struct.unpack("!i", head[1:])[0]
        body = _recv_exact(sock, length - 4)
    if kind == b"E":
        raise ServerError(f"server refused the startup: {body!r}")
    if kind != b"R":
        raise ServerError(f"expected an authentication request, got {kind!r}")
    code = struct.unpack("!i", body[:4])[0]
    mechanisms = [m.decode() for m in body[4:].split(b"\0") if m] if code == 10 else []
    return code, mechanisms


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ServerError("connection closed by the server")
        data += chunk
    return data


@dataclass
class ProbeResult:
    """How many of ``attempted`` simultaneous logins got to ReadyForQuery."""

    attempted: int
    accepted: int
    refused: dict[str, int]  # error message -> count

    @property
    def failed(self) -> int:
        return self.attempted - self.accepted


def probe_connections(
    port: int, *, user: str, password: str, dbname: str, count: int, timeout: float = 120
) -> ProbeResult:
    """Open ``count`` connections at once (SCRAM-SHA-256 login), hold them all until
    every attempt has finished, then close them; report who got in.

    pgbench stops at the first connection it cannot open, so it cannot say how
    many of N clients a server would refuse; this can.
    """
    raise_nofile(count + 256)
    return asyncio.run(
        _probe(port, user=user, password=password, dbname=dbname, count=count, timeout=timeout)
    )


async def _probe(
    port: int, *, user: str, password: str, dbname: str, count: int, timeout: float
) -> ProbeResult:
    writers: list[asyncio.StreamWriter] = []
    refused: dict[str, int] = {}

    async def one() -> None:
        writer = None
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            error = await asyncio.wait_for(_login(reader, writer, user, password, dbname), timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as err:
            error = f"{type(err).__name__}: {err}"
        if error is None and writer is not None:
            writers.append(writer)
            return
        refused[error] = refused.get(error, 0) + 1
        if writer is not None:
            writer.close()

    await asyncio.gather(*(one() for _ in range(count)))
    accepted = len(writers)
    for writer in writers:
        with contextlib.suppress(OSError):
            writer.write(b"X\0\0\0\4")  # Terminate
            writer.close()
    for writer in writers:
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return ProbeResult(attempted=count, accepted=accepted, refused=refused)


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readexactly(5)
    length = struct.unpack("!i", head[1:])[0]
    return head[:1], await reader.readexactly(length - 4)


def _error_text(body: bytes) -> str:
    fields = {part[:1]: part[1:].decode(errors="replace") for part in body.split(b"\0") if part}
    return f"{fields.get(b'S', 'ERROR')}: {fields.get(b'M', '?')}"


async def _login(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    user: str,
    password: str,
    dbname: str,
) -> str | None:
    """Log in with SCRAM-SHA-256 (nothing else is accepted); None when ready for queries."""
    params = f"user\0{user}\0database\0{dbname}\0\0".encode()
    writer.write(struct.pack("!ii", 8 + len(params), 196608) + params)
    client_nonce = base64.b64encode(secrets.token_bytes(18)).decode()
    first_bare = f"n=,r={client_nonce}"
    auth_message = ""
    salted = b""
    while True:
        kind, body = await _read_message(reader)
        if kind == b"E":
            return _error_text(body)
        if kind == b"Z":
            return None
        if kind != b"R":
            continue  # ParameterStatus, BackendKeyData, NoticeResponse
        code = struct.unpack("!i", body[:4])[0]
        if code == 0:
            continue
        if code == 10:  # AuthenticationSASL
            if b"SCRAM-SHA-256" not in body[4:].split(b"\0"):
                return f"no SCRAM-SHA-256 offered: {body[4:]!r}"
            first = ("n,," + first_bare).encode()
            payload = b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first
            writer.write(b"p" + struct.pack("!i", 4 + len(payload)) + payload)
        elif code == 11:  # AuthenticationSASLContinue
            server_first = body[4:].decode()
            attrs = dict(item.split("=", 1) for item in server_first.split(","))
            if not attrs["r"].startswith(client_nonce):
                return "server nonce does not extend ours"
            salted = hashlib.pbkdf2_hmac(
                "sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
            )
            final_bare = f"c=biws,r={attrs['r']}"
            auth_message = f"{first_bare},{server_first},{final_bare}"
            client_key = hmac.digest(salted, b"Client Key", "sha256")
            stored_key = hashlib.sha256(client_key).digest()
            signature = hmac.digest(stored_key, auth_message.encode(), "sha256")
            proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
            final = f"{final_bare},p={base64.b64encode(proof).decode()}".encode()
            writer.write(b"p" + struct.pack("!i", 4 + len(final)) + final)
        elif code == 12:  # AuthenticationSASLFinal: check the server knew the secret too
            server_key = hmac.digest(salted, b"Server Key", "sha256")
            expected = hmac.digest(server_key, auth_message.encode(), "sha256")
            if body[4:].decode() != f"v={base64.b64encode(expected).decode()}":
                return "server signature mismatch"
        else:
            return f"unexpected authentication request {code}"
        await writer.drain()


@dataclass
class PgbenchResult:
    """What one pgbench run printed, parsed."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    clients: int | None = None
    processed: int | None = None
    expected: int | None = None  # with -t: clients x transactions
    failed_transactions: int | None = None
    latency_avg_ms: float | None = None
    initial_connection_ms: float | None = None
    tps: float | None = None
    connection_errors: list[str] = field(default_factory=list)
    slot_errors: int = 0  # connection errors that are "no connection slot left"
    aborted: bool = False
    seconds: float = 0.0

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _number(pattern: str, text: str) -> str | None:
    found = re.search(pattern, text, re.M)
    return found.group(1) if found else None


def parse_pgbench(
    args: list[str], returncode: int, stdout: str, stderr: str, seconds: float = 0.0
) -> PgbenchResult:
    result = PgbenchResult(args, returncode, stdout, stderr, seconds=seconds)
    text = stdout + stderr
    if (value := _number(r"^number of clients: (\d+)", text)) is not None:
        result.clients = int(value)
    found = re.search(r"^number of transactions actually processed: (\d+)(?:/(\d+))?", text, re.M)
    if found:
        result.processed = int(found.group(1))
        result.expected = int(found.group(2)) if found.group(2) else None
    if (value := _number(r"^number of failed transactions: (\d+)", text)) is not None:
        result.failed_transactions = int(value)
    if (value := _number(r"^latency average = ([0-9.]+) ms", text)) is not None:
        result.latency_avg_ms = float(value)
    if (value := _number(r"^initial connection time = ([0-9.]+) ms", text)) is not None:
        result.initial_connection_ms = float(value)
    if (value := _number(r"^tps = ([0-9.]+)", text)) is not None:
        result.tps = float(value)
    result.connection_errors = [
        line
        for line in stderr.splitlines()
        if "connection to server" in line
        or "could not create connection" in line
        or "aborted while establishing connection" in line
    ]
    result.slot_errors = sum(
        1 for line in stderr.splitlines() if any(msg in line for msg in SLOT_ERRORS)
    )
    result.aborted = "Run was aborted" in stderr or "aborted in command" in stderr
    return result


def run_pgbench(
    tools: Tools,
    *,
    port: int,
    user: str,
    password: str,
    dbname: str,
    clients: int,
    jobs: int,
    duration: int | None = None,
    transactions: int | None = None,
    extra: tuple[str, ...] = ("-S",),
    timeout: float = 600,
    host: str = HOST,
) -> PgbenchResult:
    """Run pgbench (select-only by default) against ``host`` (or a socket dir);
    never raises for a failed run."""
    raise_nofile(clients + 256)
    args = [tools.pg("pgbench"), "-n", "-c", str(clients), "-j", str(jobs), *extra]
    if duration is not None:
        args += ["-T", str(duration)]
    if transactions is not None:
        args += ["-t", str(transactions)]
    started = time.monotonic()
    proc = subprocess.run(
        args,
        env=libpq_env(user=user, password=password, port=port, dbname=dbname, host=host),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return parse_pgbench(
        args, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started
    )


class Load:
    """pgbench running in the background (a custom script, until stopped): the
    clients of one pooler pod during a rollout. ``stop`` kills it and keeps
    what it wrote to stderr."""

    def __init__(self, database: AppDatabase, *, port: int, clients: int, script: Path) -> None:
        raise_nofile(clients + 256)
        self.args = [
            database.server.tools.pg("pgbench"), "-n", "-c", str(clients), "-j", "2",
            "-f", str(script), "-T", "3600",
        ]  # fmt: skip
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in stop()
        env = libpq_env(
            user=database.user, password=database.password, port=port, dbname=database.name
        )
        self._proc = subprocess.Popen(
            self.args,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            text=True,
        )
        self.stderr = ""

    def stop(self) -> str:
        if self._stderr.closed:
            return self.stderr
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait(timeout=30)
        self._stderr.seek(0)
        self.stderr = self._stderr.read()
        self._stderr.close()
        return self.stderr

    def slot_errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if any(m in line for m in SLOT_ERRORS)]


class Sampler:
    """Calls ``sample()`` every ``interval`` seconds on a thread until stopped."""

    def __init__(self, sample: Callable[[], int], *, interval: float = 0.1) -> None:
        self._sample = sample
        self._interval = interval
        self._stop = threading.Event()
        self.values: list[int] = []
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.values.append(self._sample())
            except (ServerError, subprocess.SubprocessError, ValueError) as err:
                self.errors.append(str(err))
            self._stop.wait(self._interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    @property
    def peak(self) -> int:
        return max(self.values, default=0)
