"""The write pooler's agent: PgBouncer takes a new pgbouncer.ini by RELOAD,
never by a restart, and says when it runs it. Runs in the write-pooler pod, as

- ``python -m headroom.agent.pooler --once --source <mounted ini> --output
  /run/headroom/pgbouncer.ini`` (init container ``agent-init``): copies the
  pooler's ConfigMap, as mounted, into the file PgBouncer starts from (an
  emptyDir; kubelet updates a mounted ConfigMap lazily, a minute or more late);
- ``python -m headroom.agent.pooler --config-map <name> --state <name>
  --output /run/headroom/pgbouncer.ini --token-dir <dir>`` (container
  ``agent``): watches that one ConfigMap through the API server; when its
  ``pgbouncer.ini`` changes, writes the file atomically and RELOADs PgBouncer
  on its admin console (127.0.0.1, the port the file names). A change of a
  setting PgBouncer takes only at start (planning.pgbouncer_params
  .RESTART_SETTINGS) is not applied here: the pod rolls for it. When the
  server connections exceed the new ``max_db_connections`` it issues
  ``RECONNECT`` (each server connection is closed when its client releases
  it, so no transaction fails) and reads ``SHOW POOLS`` until they are within
  it, for ``--shrink-seconds`` at most. Then it reports into the state
  ConfigMap (planning.pooler_state): at start, after every applied change,
  when its server connections cross the limit, and when its load figures
  (SHOW STATS/POOLS, planning.recommendations) move materially; never on a
  timer.

Environment: HEADROOM_AGENT_PASSWORD (the admin console's), POD_NAME (the
key of its report), KUBERNETES_SERVICE_HOST/PORT. The namespace, token and CA
come from ``--token-dir`` (a projected service-account token). One log line
per change; a password never appears in one. A failed RELOAD, API request or
report is retried and never ends the loop; SIGTERM ends it at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from headroom.agent import configmap, console
from headroom.kube import errors, sync_client
from headroom.planning import (
    agentfile,
    pgbouncer_params,
    planner,
    pooler_state,
    recommendations,
)

log = logging.getLogger("headroom.agent.pooler")

CONFIG_KEY = "pgbouncer.ini"
ADMIN_HOST = "127.0.0.1"
TICK_SECONDS = 1.0  # retries of a failed RELOAD or report
CHECK_SECONDS = 10.0  # the server connections against the limit, between changes
SHRINK_POLL_SECONDS = 0.1


class Console(Protocol):
    def run(self, command: str) -> list[dict[str, str]]: ...


Report = Callable[[pooler_state.Entry], None]  # raises on failure


def _limit(config: list[dict[str, str]]) -> int:
    for row in config:
        if row.get("key") == "max_db_connections":
            value = row.get("value", "0")
            return int(value) if value.isdigit() else 0
    return 0


@dataclass(kw_only=True)
class Agent(configmap.FileAgent):
    """What PgBouncer runs (``loaded``: the text it has loaded) and what is
    still to do."""

    console: Console
    report: Report
    shrink_seconds: float = 30.0
    clock: Callable[[], float] = time.monotonic
    reload_pending: str | None = None  # written, not yet RELOADed
    report_pending: bool = True  # the start is reported
    last: pooler_state.Entry | None = None  # what was reported last
    figures: recommendations.PoolFigures | None = None  # the load figures reported last
    next_check: float = 0.0

    log = log

    def start_only_changes(self, before: str, after: str) -> list[str]:
        return pgbouncer_params.restart_changes(before, after)

    def step(self, stop: threading.Event) -> None:
        wanted = self.take_wanted()
        in_file = self.loaded if self.reload_pending is None else self.reload_pending
        if wanted is not None and wanted != in_file and self.write(wanted):
            self.reload_pending = wanted
        if self.reload_pending is not None:
            self._reload(self.reload_pending, stop)
        if self.clock() >= self.next_check:
            self.next_check = self.clock() + CHECK_SECONDS
            self._check()
        if self.report_pending:
            self._report()

    def _reload(self, text: str, stop: threading.Event) -> None:
        failed = _reload(self.console)
        if failed is not None:
            log.warning("PgBouncer RELOAD failed (retried): %s", failed)
            return
        self.loaded, self.reload_pending = text, None
        log.info("PgBouncer reloaded (config %s)", agentfile.content_hash(text))
        try:
            limit = _limit(self.console.run("SHOW CONFIG"))
            held = self._held()
            if limit and held > limit:
                self._bring_within(limit, held, stop)
        except console.ConsoleError as err:
            log.warning("after RELOAD: %s", err)
        self.report_pending = True

    def _held(self) -> int:
        return pooler_state.server_connections(self.console.run("SHOW POOLS"))

    def _bring_within(self, limit: int, held: int, stop: threading.Event) -> None:
        """RECONNECT (the pooler's one database), then wait (bounded) until
        the server connections are within ``limit``."""
        started = self.clock()
        self.console.run("RECONNECT")
        while held > limit and self.clock() - started < self.shrink_seconds:
            if stop.wait(SHRINK_POLL_SECONDS):
                return
            held = self._held()
        seconds = self.clock() - started
        if held > limit:
            log.warning(
                "%d server connections after %.1fs, over max_db_connections %d (checked again)",
                held,
                seconds,
                limit,
            )
        else:
            log.info(
                "server connections within max_db_connections %d after %.1fs (%d)",
                limit,
                seconds,
                held,
            )

    def _entry(self) -> tuple[pooler_state.Entry, recommendations.PoolFigures | None]:
        pools = self.console.run("SHOW POOLS")
        stats = self.console.run("SHOW STATS")
        database = pooler_state.database_of(stats)
        try:
            figures = (
                None
                if database is None
                else recommendations.figures_from_show(stats=stats, pools=pools, database=database)
            )
        except (KeyError, ValueError):  # a PgBouncer whose columns differ: no figures
            figures = None
        entry = pooler_state.Entry(
            config=agentfile.content_hash(self.loaded),
            max_db_connections=_limit(self.console.run("SHOW CONFIG")),
            server_connections=pooler_state.server_connections(pools),
            at=pooler_state.now(),
            observed=None if figures is None else figures.report(),
        )
        return entry, figures

    def _check(self) -> None:
        """Between changes: a report when the pod crossed its limit (either
        way) or its load figures moved; over the limit, RECONNECT again."""
        if self.last is None or self.report_pending:
            return
        try:
            found, figures = self._entry()
            if found.within_limit != self.last.within_limit:
                self.report_pending = True
            if figures is not None and recommendations.moved(self.figures, figures):
                self.report_pending = True
            if not found.within_limit:
                self.console.run("RECONNECT")
        except console.ConsoleError as err:
            log.warning("checking the server connections: %s", err)

    def _report(self) -> None:
        try:
            entry, figures = self._entry()
        except console.ConsoleError as err:
            log.warning("reading what PgBouncer runs (retried): %s", err)
            return
        try:
            self.report(entry)
        except errors.KubeError as err:
            log.warning("report not written (retried): %s", err)
            return
        self.last, self.figures, self.report_pending = entry, figures, False
        log.info("reported %s", entry.text())

    @property
    def idle(self) -> bool:
        return self.reload_pending is None and not self.report_pending

    def next_wait(self) -> float:
        """Every TICK_SECONDS while something is pending, else until the next check."""
        return TICK_SECONDS if not self.idle else max(0.0, self.next_check - self.clock())


def run(agent: Agent, *, stop: threading.Event) -> None:
    """Step until ``stop`` is set (configmap.run)."""
    configmap.run(agent, stop=stop)


def _reload(admin: Console) -> str | None:
    try:
        admin.run("RELOAD")
    except console.ConsoleError as err:
        return str(err)
    return None


def report_to(client: sync_client.Client, *, namespace: str, state: str, pod: str) -> Report:
    """Merge this pod's entry into the state ConfigMap: a merge patch of its
    own key, so the pods of one pooler (one field manager) never take each
    other's keys away, as one apply configuration per pod would."""

    def write(entry: pooler_state.Entry) -> None:
        client.request(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/configmaps/{state}",
            query={"fieldManager": pooler_state.FIELD_MANAGER},
            body={"data": {pod: entry.text()}},
            content_type="application/merge-patch+json",
        )

    return write


def arguments(*, agent: str, optional: bool = False) -> argparse.ArgumentParser:
    """The command line of an agent that follows a pooler's pgbouncer.ini
    (this one, and headroom.agent.readpool that runs one beside its lag
    loop: ``optional``, see :func:`headroom.agent.configmap.arguments`)."""
    parser = configmap.arguments(
        agent=agent, program="PgBouncer", config_file=CONFIG_KEY, optional=optional
    )
    parser.add_argument("--state", help="the ConfigMap this pod reports into")
    parser.add_argument("--shrink-seconds", type=float, default=30.0)
    return parser


def in_pod(
    parser: argparse.ArgumentParser, args: argparse.Namespace, *, who: str
) -> tuple[sync_client.Client, str, Agent]:
    """The API client, namespace and agent of the sidecar ``args`` describe,
    from its pod's environment and token; exits naming what is missing."""
    if not args.state:
        parser.error("--state is needed without --once")
    password, pod = os.environ.get("HEADROOM_AGENT_PASSWORD"), os.environ.get("POD_NAME")
    if not password or not pod:
        raise SystemExit(f"{who}: HEADROOM_AGENT_PASSWORD and POD_NAME must be set")
    client, namespace = configmap.in_pod_client(args.token_dir, who=who)
    loaded = args.output.read_text()
    port = int(pgbouncer_params.ini_settings(loaded).get("listen_port") or planner.POOLER_PORT)
    agent = Agent(
        output=args.output,
        console=console.Console(
            host=ADMIN_HOST, port=port, user=planner.AGENT_USER, password=password
        ),
        report=report_to(client, namespace=namespace, state=args.state, pod=pod),
        shrink_seconds=args.shrink_seconds,
    )
    agent.start()
    # A RELOAD first: an agent that restarted between writing the file and
    # RELOADing it must not report a config PgBouncer has not loaded.
    agent.reload_pending = agent.loaded
    log.info(
        "watching ConfigMap %s/%s; PgBouncer's console on %s:%d",
        namespace,
        args.config_map,
        ADMIN_HOST,
        port,
    )
    return client, namespace, agent


def main(argv: list[str] | None = None) -> int:
    parser = arguments(agent="pooler")
    args = parser.parse_args(argv)
    if configmap.begin(parser, args, name="pooler-agent"):
        return 0
    client, namespace, agent = in_pod(parser, args, who="pooler agent")
    configmap.follow(client, namespace=namespace, name=args.config_map, key=CONFIG_KEY, agent=agent)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
