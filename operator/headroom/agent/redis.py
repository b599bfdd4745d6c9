"""The Redis agent: Redis takes a new redis.conf by ``CONFIG SET``, never by
a restart, wherever Redis can. Runs in each Redis pod of an instance, as

- ``python -m headroom.agent.redis --once --source <mounted redis.conf>
  --output /run/headroom/redis.conf`` (init container ``agent-init``): copies
  the instance's ConfigMap, as mounted, into the file redis-server starts
  from (an emptyDir; kubelet updates a mounted ConfigMap lazily). In HA mode
  the start script builds its run config from that file;
- ``python -m headroom.agent.redis --config-map <name> --output
  /run/headroom/redis.conf --password-file <auth Secret's password>
  --token-dir <dir>`` (container ``agent``): watches that one ConfigMap
  through the API server; when its ``redis.conf`` changes, writes the file
  atomically (what a restarted container starts from) and ``CONFIG SET``s
  each changed setting on 127.0.0.1 (the port the file names), a removed one
  at Redis's default (planning.redis_params.online_changes). A change of a
  directive Redis takes only at start (planning.redis_params.restart_changes)
  is not applied here: the pod rolls for it, and the file is left for the
  new pod's init step. Once Redis answers after the agent's own start, it
  sets each setting the file holds and the server runs otherwise (an agent
  that restarted between writing the file and setting it).

A larger ``maxmemory`` than the Redis container's memory limit allows
(REDIS_MEMORY_LIMIT, from the Downward API) is left to the pod's roll, which a
larger ``memory`` brings anyway: the data must not outgrow the old limit.

Environment: KUBERNETES_SERVICE_HOST/PORT, REDIS_MEMORY_LIMIT; the namespace,
token and CA come from ``--token-dir`` (a projected service-account token). One log line per
change; the password never appears in one. A CONFIG SET that could not reach
Redis is retried; one Redis refuses is logged; neither ends the loop;
SIGTERM ends it at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from headroom.agent import configmap
from headroom.planning import planner, redis_params

log = logging.getLogger("headroom.agent.redis")

CONFIG_KEY = "redis.conf"
HOST = "127.0.0.1"
TICK_SECONDS = 1.0  # retries while Redis does not answer
IDLE_SECONDS = 3600.0  # nothing pending: only the watch wakes the loop
TIMEOUT_SECONDS = 5.0
MEMORY_LIMIT_ENV = "REDIS_MEMORY_LIMIT"  # the Redis container's limit (Downward API)


class RedisError(Exception):
    """Redis could not be reached, or refused the login."""


class Server(Protocol):
    def config_get(self, key: str) -> str: ...

    def config_set(self, settings: dict[str, str]) -> dict[str, str]: ...


def _encode(*args: str) -> bytes:
    parts = [b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(parts)


@dataclass(frozen=True)
class Local:
    """redis-server on 127.0.0.1: one short connection per call, AUTH first.
    Replies are read as RESP2 (simple strings, errors, bulk strings, arrays)."""

    port: int
    password: str = field(repr=False)
    timeout_seconds: float = TIMEOUT_SECONDS

    @contextlib.contextmanager
    def _session(self) -> Iterator[Callable[..., object]]:
        try:
            sock = socket.create_connection((HOST, self.port), timeout=self.timeout_seconds)
        except OSError as err:
            raise RedisError(f"redis on {HOST}:{self.port}: {err.strerror or err}") from None
        reader = sock.makefile("rb")

        def read() -> object:
            line = reader.readline()
            if not line.endswith(b"\r\n"):
                raise RedisError(f"redis on {HOST}:{self.port} closed the connection")
            kind, rest = line[:1], line[1:-2].decode(errors="replace")
            if kind == b"+":
                return rest
            if kind == b"-":
                return RedisError(rest)
            if kind == b":":
                return int(rest)
            if kind == b"$":
                size = int(rest)
                return None if size < 0 else reader.read(size + 2)[:-2].decode(errors="replace")
            if kind == b"*":
                return [read() for _ in range(max(int(rest), 0))]
            raise RedisError(f"unexpected reply from redis: {line[:40]!r}")

        def call(*args: str) -> object:
            sock.sendall(_encode(*args))
            return read()

        try:
            refused = call("AUTH", self.password)
            if isinstance(refused, RedisError):  # its text names no password
                raise RedisError(f"AUTH refused: {refused}")
            yield call
        except OSError as err:
            raise RedisError(f"redis on {HOST}:{self.port}: {err}") from None
        finally:
            reader.close()
            sock.close()

    def config_get(self, key: str) -> str:
        with self._session() as call:
            reply = call("CONFIG", "GET", key)
        if isinstance(reply, list) and len(reply) == 2 and isinstance(reply[1], str):
            return reply[1]
        raise RedisError(f"CONFIG GET {key}: unexpected reply {reply!r}")

    def config_set(self, settings: dict[str, str]) -> dict[str, str]:
        """Each setting by a CONFIG SET of its own (one refusal leaves the
        others applied); what Redis refused, with its answer."""
        refused: dict[str, str] = {}
        with self._session() as call:
            for key, value in settings.items():
                reply = call("CONFIG", "SET", key, value)
                if isinstance(reply, RedisError):
                    refused[key] = str(reply)
        return refused


@dataclass(kw_only=True)
class Agent(configmap.FileAgent):
    """What the file says (``loaded``: Redis runs its online settings, or is
    being given them), what Redis still has to take, and what it refused."""

    server: Server
    pending: dict[str, str] = field(default_factory=dict)  # still to CONFIG SET
    checked: bool = False  # what Redis runs compared with the file (at start)
    failures: dict[str, str] = field(default_factory=dict)  # refusals, by key, logged
    memory_limit: int | None = None  # the Redis container's, in bytes (None: unknown)

    log = log

    def start_only_changes(self, before: str, after: str) -> list[str]:
        return redis_params.restart_changes(before, after)

    def _check(self) -> None:
        """Once Redis answers: each online setting of the file whose running
        value differs is set (CONFIG GET answers in the file's own forms)."""
        wanted = self._within_limit(redis_params.online_changes("", self.loaded))  # all
        try:
            differ = {k: v for k, v in wanted.items() if self.server.config_get(k) != v}
        except RedisError as err:
            if not self.failures.get(""):
                log.info("waiting for Redis: %s", err)
            self.failures[""] = str(err)
            return
        self.failures.pop("", None)
        self.pending, self.checked = {**differ, **self.pending}, True

    def step(self, stop: threading.Event) -> None:
        if not self.checked:
            self._check()
        wanted = self.take_wanted()
        if wanted is not None and wanted != self.loaded and self.write(wanted):
            changes = self._within_limit(redis_params.online_changes(self.loaded, wanted))
            self.loaded, self.pending = wanted, {**self.pending, **changes}
        if self.checked and self.pending and not stop.is_set():
            self._apply()

    def next_wait(self) -> float:
        busy = self.pending or not self.checked or self.offered
        return TICK_SECONDS if busy else IDLE_SECONDS

    def _within_limit(self, changes: dict[str, str]) -> dict[str, str]:
        """``changes`` without a ``maxmemory`` this pod's container could not
        hold: a larger ``memory`` raises the limit too, which only the pod's
        roll gives (the new pod starts from the file); until then the data
        must not grow past the old limit, or the kernel kills Redis."""
        wanted = changes.get("maxmemory", "")
        if self.memory_limit is None or not wanted.isdigit():
            return changes
        room = self.memory_limit * planner.MAXMEMORY_PERCENT // 100
        if int(wanted) <= room:
            return changes
        self.log.info(
            "maxmemory %s left for the pod's roll: above %d%% of its memory limit (%d bytes)",
            wanted,
            planner.MAXMEMORY_PERCENT,
            self.memory_limit,
        )
        return {k: v for k, v in changes.items() if k != "maxmemory"}

    def _apply(self) -> None:
        """CONFIG SET what is pending. Redis unreachable: all of it stays
        pending (retried). A setting Redis refuses (a build without its own
        jemalloc refuses ``activedefrag yes``, a low open-files limit a large
        ``maxclients``) is logged once and not retried: the file keeps it
        for the next start, and its next change is tried again."""
        settings = dict(self.pending)
        try:
            refused = self.server.config_set(settings)
        except RedisError as err:
            log.warning("CONFIG SET not done (retried): %s", err)
            return
        for key, value in settings.items():
            if key not in refused:
                log.info("CONFIG SET %s %r", key, value)
                self.failures.pop(key, None)
            elif self.failures.get(key) != refused[key]:
                log.warning("CONFIG SET %s %r refused: %s", key, value, refused[key])
        self.failures.update(refused)
        self.pending = {}


def main(argv: list[str] | None = None) -> int:
    parser = configmap.arguments(agent="redis", program="Redis", config_file=CONFIG_KEY)
    parser.add_argument("--password-file", type=Path, help="the auth Secret's password")
    args = parser.parse_args(argv)
    if configmap.begin(parser, args, name="redis-agent"):
        return 0
    if args.password_file is None:
        parser.error("--password-file is needed without --once")
    password = args.password_file.read_text().strip()
    client, namespace = configmap.in_pod_client(args.token_dir, who="redis agent")
    port = int(
        redis_params.conf_settings(args.output.read_text()).get("port") or planner.REDIS_PORT
    )
    limit = os.environ.get(MEMORY_LIMIT_ENV, "")
    agent = Agent(
        output=args.output,
        server=Local(port=port, password=password),
        memory_limit=int(limit) if limit.isdigit() else None,
    )
    agent.start()
    log.info("watching ConfigMap %s/%s; Redis on %s:%d", namespace, args.config_map, HOST, port)
    configmap.follow(client, namespace=namespace, name=args.config_map, key=CONFIG_KEY, agent=agent)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
