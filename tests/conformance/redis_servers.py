"""Throwaway redis-server and redis-sentinel processes on 127.0.0.1, and a tiny
RESP2 client (no redis-py), for the conformance tests.

Like servers.py it must not import pytest. Every process listens on 127.0.0.1
only, on a free port, with its config, data and log in a private temp dir,
and is stopped (SIGTERM, then SIGKILL) and its dir removed by ``stop()``: the
start/stop machinery is servers.ServerProcess, shared with Postgres and
PgBouncer. Redis runs fine as root, so there is no user switch here.

``PodProcess`` starts them the way Headroom's pods do: the rendered init and
start scripts, with the environment the pod would have pointed at 127.0.0.1.

Binaries: ``$HEADROOM_REDIS_SERVER`` / ``$HEADROOM_REDIS_SENTINEL`` /
``$HEADROOM_REDIS_CLI`` (default: ``redis-server`` / ``redis-sentinel`` /
``redis-cli`` on PATH, then /usr/bin).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from servers import (
    HOST,
    ServerError,
    ServerProcess,
    ToolsMissingError,
    find_binary,
    free_port,
    private_dir,
    wait_until,
    write_private,
)

__all__ = [
    "HOST",
    "PodProcess",
    "Redis",
    "RedisProcess",
    "RedisTools",
    "ReplyError",
    "ServerError",
    "ToolsMissingError",
    "find_redis",
    "free_port",
    "parse_info",
    "pod_env",
    "wait_until",
]

LOG_FILE = "redis.log"
# A config is text, or a function of (port, private dir) returning it.
Config = str | Callable[[int, Path], str]


@dataclass(frozen=True)
class RedisTools:
    server: Path
    sentinel: Path | None  # None: redis-sentinel is not installed
    cli: Path | None  # None: redis-cli is not installed (the HA start script uses it)

    def script_path(self) -> str:
        """PATH for Headroom's scripts: these binaries first (as ``redis-server``,
        ``redis-cli``), then the system's sh, awk, timeout, ..."""
        dirs = [str(self.server.parent), *([str(self.cli.parent)] if self.cli else [])]
        return os.pathsep.join([*dict.fromkeys(dirs), "/usr/bin", "/bin"])

    def version(self) -> str:
        proc = subprocess.run(
            [str(self.server), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        return proc.stdout.strip()


def find_redis() -> RedisTools:
    """Locate redis-server (required) and redis-sentinel (optional)."""
    server = find_binary("HEADROOM_REDIS_SERVER", "redis-server", "/usr/bin")
    if server is None:
        raise ToolsMissingError(
            "missing redis-server (on PATH or $HEADROOM_REDIS_SERVER; "
            "on Debian: apt-get install redis-server)"
        )
    sentinel = find_binary("HEADROOM_REDIS_SENTINEL", "redis-sentinel", "/usr/bin")
    cli = find_binary("HEADROOM_REDIS_CLI", "redis-cli", "/usr/bin")
    return RedisTools(server=server, sentinel=sentinel, cli=cli)


class ReplyError(Exception):
    """A RESP error reply (``-NOAUTH ...``, ``-OOM ...``); ``str()`` is its text."""


Reply = Any  # str | int | bytes | None | list[Reply] | ReplyError


def _encode(args: Iterable[str | bytes | int]) -> bytes:
    parts = []
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    items = b"".join(parts)
    return b"*%d\r\n" % len(parts) + items


def parse_info(text: str) -> dict[str, str]:
    """The ``field:value`` lines of an INFO reply."""
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key: value for key, value in pairs}


class Redis:
    """A RESP2 connection. Bulk strings come back as str (utf-8) unless ``raw``."""

    def __init__(self, port: int, *, password: str | None = None, timeout: float = 30) -> None:
        self.port = port
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        if password is not None:
            self.call("AUTH", password)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()

    def __enter__(self) -> Redis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line(self) -> bytes:
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise ServerError(f"connection to port {self.port} closed mid-reply")
        return line[:-2]

    def _read(self, raw: bool) -> Reply:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return ReplyError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.file.read(size + 2)
            if len(data) != size + 2:
                raise ServerError(f"connection to port {self.port} closed mid-reply")
            return data[:-2] if raw else data[:-2].decode(errors="replace")
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._read(raw) for _ in range(count)]
        raise ServerError(f"unexpected RESP reply {line[:80]!r}")

    def pipeline(
        self, commands: Sequence[Sequence[str | bytes | int]], *, raw: bool = False
    ) -> list[Reply]:
        """Send all ``commands`` at once; their replies in order (errors as ReplyError)."""
        self.sock.sendall(b"".join(_encode(cmd) for cmd in commands))
        return [self._read(raw) for _ in commands]

    def call(self, *args: str | bytes | int, raw: bool = False) -> Reply:
        """One command; raises ReplyError on an error reply."""
        reply = self.pipeline([args], raw=raw)[0]
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def try_call(self, *args: str | bytes | int) -> Reply:
        """One command; an error reply is returned (as ReplyError), not raised."""
        return self.pipeline([args])[0]

    def info(self, section: str) -> dict[str, str]:
        return parse_info(self.call("INFO", section))

    def config_get(self, name: str) -> str:
        reply = self.call("CONFIG", "GET", name)
        values = dict(zip(reply[::2], reply[1::2], strict=True))
        if name not in values:
            raise ServerError(f"CONFIG GET {name}: no such setting (got {reply!r})")
        return str(values[name])


class RedisProcess(ServerProcess):
    """redis-server (or redis-sentinel) running a config in a private dir.

    The config file is ``<dir>/redis.conf`` (Sentinel rewrites it in place),
    ``files`` are written beside it (mode 0600) before the start, and the
    process's output goes to ``<dir>/redis.log``.
    """

    def __init__(
        self,
        binary: Path,
        config: Config,
        *,
        files: dict[str, str] | None = None,
        password: str | None = None,
        kind: str = "redis",
        start_timeout: float = 30,
    ) -> None:
        super().__init__(program=kind, log_name=LOG_FILE, start_timeout=start_timeout)
        self.binary = binary
        self.config = config
        self.files = dict(files or {})
        self.password = password
        self.kind = kind
        self.config_text = ""

    @property
    def conf_path(self) -> Path:
        return self.in_dir("redis.conf")

    def current_config(self) -> str:
        """The config file as it is now (Sentinel and CONFIG REWRITE change it)."""
        if self.dir is not None and self.conf_path.exists():
            return self.conf_path.read_text(errors="replace")
        return self.config_text

    def start(self) -> Self:
        if self.dir is None:
            self.dir = private_dir(f"headroom-{self.kind}-")
        self._prepare()
        try:
            self._first_start()
        except (ServerError, TimeoutError) as err:
            raise self._start_failed(err) from None
        return self

    def _prepare(self) -> None:
        """Write what the process needs beside its config into the new dir."""
        for name, text in self.files.items():
            write_private(self.in_dir(name), text)

    def _first_start(self) -> None:
        self._launch_until_ready(
            self._launch_on_free_port, what=f"{self.kind} on port {{port}}", attempts=3
        )

    def restart(self) -> Self:
        """Stop (SIGTERM: a clean shutdown) and start again on the same port, dir and
        config file (as the server may have rewritten it)."""
        self._halt()
        try:
            self._launch_until_ready(self._launch, what=f"{self.kind} restart", attempts=1)
        except (ServerError, TimeoutError) as err:
            raise self._start_failed(err) from None
        return self

    def _start_failed(self, err: Exception) -> ServerError:
        return ServerError(f"{err}\n--- {self.log} ---\n{self.log_text()[-4000:]}")

    def _launch_on_free_port(self) -> None:
        assert self.dir is not None
        self.port = free_port()
        text = self.config(self.port, self.dir) if callable(self.config) else self.config
        self.config_text = text
        write_private(self.conf_path, text)
        self._launch()

    def _launch(self) -> None:
        self._spawn([str(self.binary), str(self.conf_path)])

    def _accepting(self) -> bool:
        try:
            with Redis(self.port, timeout=2) as conn:
                reply = conn.try_call("PING")
        except (OSError, ServerError):
            return False
        # NOAUTH also means it is up; LOADING does not.
        return reply == "PONG" or (
            isinstance(reply, ReplyError) and str(reply).startswith("NOAUTH")
        )

    def client(self, *, authenticated: bool = True, timeout: float = 30) -> Redis:
        return Redis(self.port, password=self.password if authenticated else None, timeout=timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as when a node dies; the dir stays (for the log)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=30)


# What a PodProcess writes into its dir before the first start (name -> text) and
# the environment of its scripts, from its port and its dir.
PodSetup = Callable[[int, Path], tuple[dict[str, str], dict[str, str]]]


class PodProcess(RedisProcess):
    """redis-server or redis-sentinel started as a pod of Headroom's starts it:
    ``init`` (an init container's ``sh -c`` script) runs to completion, then
    ``command`` (the container's command: ``sh -c`` of a start script that execs
    redis-server, or the binary and its config), both with the environment
    ``setup`` returns, on the fixed ``port`` (the other processes' configs and
    environments name it). ``config_name`` is the file the server runs, in the
    dir (for failure reports). ``restart()`` runs the command again, as the
    kubelet restarts a container; the init script is not run again.
    """

    def __init__(
        self,
        *,
        kind: str,
        port: int,
        command: Callable[[Path], list[str]],
        setup: PodSetup,
        init: str | None = None,
        config_name: str = "redis.conf",
        password: str | None = None,
        start_timeout: float = 30,
    ) -> None:
        # no binary or config of its own: ``command`` and the scripts say what runs
        super().__init__(Path("sh"), "", password=password, kind=kind, start_timeout=start_timeout)
        self.port = port
        self.command = command
        self.setup = setup
        self.init = init
        self.config_name = config_name
        self.env: dict[str, str] = {}

    @property
    def conf_path(self) -> Path:
        return self.in_dir(self.config_name)

    def _prepare(self) -> None:
        assert self.dir is not None
        files, self.env = self.setup(self.port, self.dir)
        for name, text in files.items():
            write_private(self.in_dir(name), text)

    def _first_start(self) -> None:
        if self.init is not None:
            self._run_init(self.init)
        self._launch_until_ready(self._launch, what=f"{self.kind} on port {self.port}", attempts=1)

    def _run_init(self, script: str) -> None:
        assert self.dir is not None
        proc = subprocess.run(
            ["sh", "-c", script],
            env=self.env,
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        with self.log.open("a") as log:
            log.write(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise ServerError(f"the init script of {self.kind} exited with {proc.returncode}")

    def _launch(self) -> None:
        assert self.dir is not None
        self._spawn(self.command(self.dir), env=self.env)


def pod_env(
    names: Iterable[str], values: Mapping[str, str], *, tools: RedisTools
) -> dict[str, str]:
    """The environment of a container whose env list has ``names``: ``values`` for
    each of them (all must be given: a pod has no other), plus PATH and HOME."""
    names = list(names)
    missing = [name for name in names if name not in values]
    extra = [name for name in values if name not in names]
    if missing or extra:
        raise ValueError(f"the container sets {names}; missing {missing}, not set {extra}")
    return {**values, "PATH": tools.script_path(), "HOME": "/nonexistent"}
