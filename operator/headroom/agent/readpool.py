"""The read-pool agent: keeps lagging or lost replicas out of the read
pooler's PgBouncer (issue 10). Runs in the read-pooler pod, as

- ``python -m headroom.agent.readpool --config /etc/headroom-readpool/readpool.json``
  (container ``agent``): every ``pollSeconds``, read the primary's WAL position
  and each replica's (``postgres.lag``), decide the membership
  (``planning.membership.decide``), write the ``[databases]`` include file
  atomically when it changed, and RELOAD PgBouncer through its admin console on
  localhost. A RELOAD that changes the host list closes the server connections
  to a removed host at the end of their transaction; no pod restarts.
- the same with ``--once`` (init container ``agent-init``): probe once and
  write the include file before PgBouncer starts; no RELOAD; exit 0 whatever
  the probes found (PgBouncer must start, with the fallback if need be).

Environment: PGUSER/PGPASSWORD (the app's database role, to probe replicas
and primary), HEADROOM_AGENT_PASSWORD (the admin console's), PGSSLROOTCERT
(optional: the servers' CA file). One log line per change; a password never
appears in one. A failed probe or RELOAD never ends the loop; SIGTERM does,
at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from headroom.agent import console
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


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` atomically (temp file + rename in its dir)
    unless it holds that already; whether it wrote."""
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(text)
    partial.chmod(0o644)
    os.replace(partial, path)
    return True


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
    """The state between polls: the last membership and whether PgBouncer
    still has to RELOAD a file written earlier (the RELOAD failed)."""

    config: membership.ReadPoolConfig
    creds: Credentials
    probe: Probe
    reload: Reload | None  # None: the init step, PgBouncer is not running yet
    previous: dict[str, bool] | None = None
    reload_pending: bool = False
    last: membership.Membership | None = field(default=None, repr=False)

    def step(self) -> membership.Membership:
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
            wrote = write_if_changed(Path(self.config.output), text)
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
    parser = argparse.ArgumentParser(prog="python -m headroom.agent.readpool")
    parser.add_argument("--config", required=True, type=Path, help="readpool.json")
    parser.add_argument("--once", action="store_true", help="probe once, write, exit 0")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s readpool %(levelname)s %(message)s",
    )
    config = membership.ReadPoolConfig.model_validate_json(args.config.read_text())
    creds = Credentials.from_env(os.environ)

    def probe(target: server_limits.Target) -> lag.Position | str:
        return lag.position(target, timeout_seconds=config.connect_timeout_seconds)

    if args.once:
        try:
            Agent(config=config, creds=creds, probe=probe, reload=None).step()
        except Exception:
            log.exception("init probe failed; PgBouncer starts without the include file")
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    agent = Agent(
        config=config, creds=creds, probe=probe, reload=lambda: admin_reload(config, creds)
    )
    log.info(
        "watching %d replicas every %gs (maxLagSeconds %g)",
        len(config.replicas),
        config.poll_seconds,
        config.max_lag_seconds,
    )
    run(agent, stop=stop)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
