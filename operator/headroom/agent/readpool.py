"""The read pooler's agent: keeps lagging or lost replicas out of the read
pooler's PgBouncer, and gives it a changed pgbouncer.ini by RELOAD. Runs in
the read-pooler pod, as

- ``python -m headroom.agent.readpool --config <readpool.json> --once
  --source <mounted pgbouncer.ini> --output /run/headroom/pgbouncer.ini``
  (init container ``agent-init``): copies the mounted pgbouncer.ini into the
  file PgBouncer starts from, probes the replicas once and writes the
  include file; no RELOAD; exit 0 whatever the probes found (PgBouncer must
  start, with the fallback if need be);
- ``python -m headroom.agent.readpool --config <readpool.json> --config-map
  <name> --state <name> --output /run/headroom/pgbouncer.ini --token-dir
  <dir>`` (container ``agent``), one process with two loops:

  - the lag loop (:class:`Agent`): takes a changed ``readpool.json`` from
    the same ConfigMap (a watch of its own) at its next poll; every
    ``pollSeconds``, read the primary's
    WAL position and each replica's (``postgres.lag``), decide the membership
    (``planning.membership.decide``), write the ``[databases]`` include file
    atomically when it changed, and RELOAD PgBouncer through its admin console
    on localhost. A RELOAD that changes the host list closes the server
    connections to a removed host at the end of their transaction;
  - the config loop: :mod:`headroom.agent.pooler`'s agent, as in the write
    pooler's pod: follows the ConfigMap's pgbouncer.ini through the API
    server, writes it and RELOADs (a setting taken only at start is left to
    the pod's roll), RECONNECTs when the pool shrank, and reports into the
    state ConfigMap (planning.pooler_state).

  Both RELOAD the same PgBouncer: a RELOAD reads both files, so either
  loop's RELOAD is right for the other's file too.

Environment: PGUSER/PGPASSWORD (the app's database role, to probe replicas
and primary), HEADROOM_AGENT_PASSWORD (the admin console's), POD_NAME (the
key of its report), PGSSLROOTCERT (optional: the servers' CA file). One log
line per change; a password never appears in one. A failed probe, RELOAD,
API request or report never ends a loop; SIGTERM ends them at once.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from headroom.agent import configmap, console, pooler
from headroom.planning import membership
from headroom.postgres import lag, replicas, server_limits

log = logging.getLogger("headroom.agent.readpool")

Probe = replicas.Probe
Reload = Callable[[], "str | None"]  # None when done, else why not


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str
    admin_password: str
    server_ca_pem: str | None = None

    def __repr__(self) -> str:  # no password in a traceback
        return f"Credentials({self.user})"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Credentials:
        missing = [k for k in ("PGUSER", "PGPASSWORD", "HEADROOM_AGENT_PASSWORD") if not env.get(k)]
        if missing:
            raise SystemExit(f"readpool agent: missing environment {', '.join(missing)}")
        ca_file = env.get("PGSSLROOTCERT")
        return cls(
            user=env["PGUSER"],
            password=env["PGPASSWORD"],
            admin_password=env["HEADROOM_AGENT_PASSWORD"],
            server_ca_pem=Path(ca_file).read_text() if ca_file else None,
        )


def admin_reload(config: membership.ReadPoolConfig, creds: Credentials) -> str | None:
    """RELOAD on PgBouncer's admin console; None when done, else why not."""
    return console.Console(
        host=config.admin.host,
        port=config.admin.port,
        user=config.admin.user,
        password=creds.admin_password,
        connect_timeout_seconds=config.connect_timeout_seconds,
    ).reload()


@dataclass
class Agent:
    """The state between polls: the last membership, whether PgBouncer
    still has to RELOAD a file written earlier (the RELOAD failed), and the
    newest readpool.json the ConfigMap's watch offered (taken at the next poll)."""

    config: membership.ReadPoolConfig
    creds: Credentials
    probe: Probe
    reload: Reload | None  # None: the init step, PgBouncer is not running yet
    previous: dict[str, bool] | None = None
    reload_pending: bool = False
    last: membership.Membership | None = field(default=None, repr=False)
    _offered: str | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def offer(self, text: str) -> None:
        """readpool.json as the watch saw it (another thread)."""
        with self._lock:
            self._offered = text

    def _take_offered(self) -> None:
        """A new readpool.json (the replicas, the lag bounds, the fallback's
        limit) replaces the config at once; one that does not parse, or would
        move the include file or the console, is refused with a log line (the
        pod rolls for those)."""
        with self._lock:
            text, self._offered = self._offered, None
        if text is None:
            return
        try:
            found = membership.ReadPoolConfig.model_validate_json(text)
        except ValueError as err:
            log.warning("readpool.json refused (kept the one running): %s", err)
            return
        if found == self.config:
            return
        if (found.output, found.admin) != (self.config.output, self.config.admin):
            log.warning("readpool.json moves the include file or the console: not applied")
            return
        self.config = found
        log.info(
            "readpool.json changed: %d replicas, maxLagSeconds %g, poll %gs",
            len(found.replicas),
            found.max_lag_seconds,
            found.poll_seconds,
        )

    def step(self) -> membership.Membership:
        self._take_offered()
        observed = replicas.observe(
            self.config,
            user=self.creds.user,
            password=self.creds.password,
            server_ca_pem=self.creds.server_ca_pem,
            probe=self.probe,
        )
        found = membership.decide(self.config, observed=observed, previous=self.previous)
        if self.previous is None:
            for verdict in found.verdicts:
                state = "in" if verdict.member else "out"
                log.info("replica %s %s: %s", verdict.name, state, verdict.reason)
            log.info("membership: %s", _summary(found))
        for change in found.changes:
            log.info("%s", change)
        self.previous = found.previous()
        self.last = found
        text = membership.render_databases(self.config, found.members)
        try:
            wrote = configmap.write_if_changed(Path(self.config.output), text)
        except OSError as err:
            log.warning("could not write %s: %s", self.config.output, err)
            return found
        if wrote:
            log.info("wrote %s: %s", self.config.output, _summary(found))
        if self.reload is not None and (wrote or self.reload_pending):
            failed = self.reload()
            self.reload_pending = failed is not None
            if failed is None:
                log.info("PgBouncer reloaded")
            else:
                log.warning("PgBouncer RELOAD failed (retried at the next poll): %s", failed)
        return found


def _summary(found: membership.Membership) -> str:
    if found.target == "replicas":
        return f"reads go to {', '.join(found.members)}"
    if found.target == "fallback":
        return "every replica is out: reads go to the fallback"
    return "every replica is out: reads are refused"


def run(agent: Agent, *, stop: threading.Event) -> None:
    """Poll until ``stop`` is set."""
    while not stop.is_set():
        try:
            agent.step()
        except Exception:  # a bug must not leave the pool frozen without a word
            log.exception("poll failed; trying again at the next one")
        stop.wait(agent.config.poll_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = pooler.arguments(agent="readpool", optional=True)
    parser.add_argument("--config", required=True, type=Path, help="readpool.json")
    args = parser.parse_args(argv)
    # without --config-map (or --source with --once) the lag loop runs alone,
    # as in a pod whose template predates the config loop
    follows = args.config_map is not None or args.source is not None
    once = configmap.begin(parser, args, name="readpool", follows=follows)
    config = membership.ReadPoolConfig.model_validate_json(args.config.read_text())
    creds = Credentials.from_env(os.environ)

    def probe(target: server_limits.Target) -> lag.Position | str:
        return lag.position(target, timeout_seconds=config.connect_timeout_seconds)

    if once:
        try:
            Agent(config=config, creds=creds, probe=probe, reload=None).step()
        except Exception:
            log.exception("init probe failed; PgBouncer starts without the include file")
        return 0
    agent = Agent(config=config, creds=creds, probe=probe, reload=None)
    agent.reload = lambda: admin_reload(agent.config, creds)  # as readpool.json says now
    log.info(
        "watching %d replicas every %gs (maxLagSeconds %g)",
        len(config.replicas),
        config.poll_seconds,
        config.max_lag_seconds,
    )
    if not follows:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        run(agent, stop=stop)
        log.info("stopped")
        return 0
    client, namespace, online = pooler.in_pod(parser, args, who="readpool agent")
    configmap.follow(
        client,
        namespace=namespace,
        name=args.config_map,
        key=pooler.CONFIG_KEY,
        agent=online,
        beside=[
            lambda stop: run(agent, stop=stop),
            # readpool.json too: replicas, lag bounds and the fallback's limit online
            lambda stop: configmap.watch(
                client,
                namespace=namespace,
                name=args.config_map,
                key=membership.CONFIG_FILE,
                offer=agent.offer,
                stop=stop,
            ),
        ],
    )
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
