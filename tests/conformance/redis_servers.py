"""Throwaway redis-server and redis-sentinel processes on 127.0.0.1, and a tiny
RESP2 client (no redis-py), for the conformance tests.

Like servers.py it must not import pytest. Every process listens on 127.0.0.1
only, on a free port, with its config, data and log in a private temp dir,
and is stopped (SIGTERM, then SIGKILL) and its dir removed by ``stop()``.
Redis runs fine as root, so there is no user switch here.

Binaries: ``$HEADROOM_REDIS_SERVER`` / ``$HEADROOM_REDIS_SENTINEL`` (default:
``redis-server`` / ``redis-sentinel`` on PATH, then /usr/bin).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servers import HOST, ServerError, ToolsMissingError, free_port, wait_until

__all__ = [
    "HOST",
    "Redis",
    "RedisProcess",
    "RedisTools",
    "ReplyError",
    "ServerError",
    "ToolsMissingError",
    "find_redis",
    "parse_info",
    "wait_until",
]

LOG_FILE = "redis.log"
# A config is text, or a function of (port, private dir) returning it.
Config = str | Callable[[int, Path], str]


@dataclass(frozen=True)
class RedisTools:
    server: Path
    sentinel: Path | None  # None: redis-sentinel is not installed

    def version(self) -> str:
        proc = subprocess.run(
            [str(self.server), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        return proc.stdout.strip()


def _binary(env: str, name: str) -> Path | None:
    found = os.environ.get(env) or shutil.which(name)
    if not found and os.access(f"/usr/bin/{name}", os.X_OK):
        found = f"/usr/bin/{name}"
    return Path(found) if found and os.access(found, os.X_OK) else None


def find_redis() -> RedisTools:
    """Locate redis-server (required) and redis-sentinel (optional)."""
    server = _binary("HEADROOM_REDIS_SERVER", "redis-server")
    if server is None:
        raise ToolsMissingError(
            "missing redis-server (on PATH or $HEADROOM_REDIS_SERVER; "
            "on Debian: apt-get install redis-server)"
        )
    return RedisTools(server=server, sentinel=_binary("HEADROOM_REDIS_SENTINEL", "redis-sentinel"))


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


class RedisProcess:
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
        self.binary = binary
        self.config = config
        self.files = dict(files or {})
        self.password = password
        self.kind = kind
        self.start_timeout = start_timeout
        self.dir: Path | None = None
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.config_text = ""

    @property
    def conf_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "redis.conf"

    @property
    def log(self) -> Path:
        assert self.dir is not None
        return self.dir / LOG_FILE

    def log_text(self) -> str:
        if self.dir is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")

    def current_config(self) -> str:
        """The config file as it is now (Sentinel and CONFIG REWRITE change it)."""
        if self.dir is not None and self.conf_path.exists():
            return self.conf_path.read_text(errors="replace")
        return self.config_text

    def start(self) -> RedisProcess:
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix=f"headroom-{self.kind}-"))
        for name, text in self.files.items():
            path = self.dir / name
            path.write_text(text)
            path.chmod(0o600)
        for attempt in range(3):
            self.port = free_port()
            text = self.config(self.port, self.dir) if callable(self.config) else self.config
            self.config_text = text
            self.conf_path.write_text(text)
            self.conf_path.chmod(0o600)
            self._launch()
            try:
                wait_until(
                    self._ready,
                    timeout=self.start_timeout,
                    what=f"{self.kind} on port {self.port}",
                )
            except (ServerError, TimeoutError) as err:
                self._terminate()
                if attempt < 2 and "Address already in use" in self.log_text():
                    continue  # lost the race for the port: take another one
                raise ServerError(f"{err}\n--- {self.log} ---\n{self.log_text()[-4000:]}") from None
            return self
        raise AssertionError("unreachable")

    def restart(self) -> RedisProcess:
        """Stop (SIGTERM: a clean shutdown) and start again on the same port, dir and
        config file (as the server may have rewritten it)."""
        self._terminate()
        self._launch()
        try:
            wait_until(self._ready, timeout=self.start_timeout, what=f"{self.kind} restart")
        except (ServerError, TimeoutError) as err:
            self._terminate()
            raise ServerError(f"{err}\n--- {self.log} ---\n{self.log_text()[-4000:]}") from None
        return self

    def _launch(self) -> None:
        assert self.dir is not None
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), str(self.conf_path)],
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _ready(self) -> bool:
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None:
            raise ServerError(f"{self.kind} exited with {code} before accepting connections")
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

    def _terminate(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None

    def stop(self) -> None:
        self._terminate()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
