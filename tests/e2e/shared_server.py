"""One Postgres server shared by several profiles, with the pooler pods run for
real (pooler_pods): what tests/e2e/test_shares.py and bench/shares_bench.py
both need. The server (a real Postgres, max_connections 100, the apps' role and
their databases), the shares `headroom plan` prints and the ones the profiles'
statuses hold, whether every pooler pod runs its ConfigMap's config as its
PgBouncer reports it, pgbench through each pooler's Service, and Postgres'
client backends sampled every 100 ms against the room the server has for the
pools.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kube
import pooler_pods
import psycopg
import pytest
import yaml
from tests.conformance import servers

from headroom.api import v1alpha1
from headroom.planning import agentfile, planner, pooler_state, server_shares

HOST = "pg-main"  # the server's Service name, resolved to 127.0.0.1 in the pooler pods
USER, PASSWORD = "shop_app", "p@ss:w/rd"  # apps.credentials
MAX_CONNECTIONS, SUPERUSER_RESERVED = 100, 3
# each transaction holds its server connection 50 ms
SCRIPT = "SELECT pg_sleep(0.05);\n"
MAX_DB = re.compile(r"^max_db_connections\s*=\s*(\d+)", re.M)
SHARE = re.compile(r"^profile\s+\S+/(?P<name>\S+)$|^share\s+(?P<share>\d+) on ")


@contextlib.contextmanager
def server(databases: list[str]) -> Iterator[servers.Postgres]:
    """A real Postgres (max_connections 100) with the apps' role owning ``databases``."""
    with servers.Postgres(servers.find_tools(), max_connections=MAX_CONNECTIONS) as pg:
        pg.create_role(USER, PASSWORD)
        for name in databases:
            pg.admin().rows(f"CREATE DATABASE {servers.quote_ident(name)} OWNER {USER}")
        yield pg


@contextlib.contextmanager
def pooler_pods_of(
    kubectl: kube.Kubectl, namespace: str, pg: servers.Postgres
) -> Iterator[pooler_pods.PoolerPods]:
    """The pooler pods of ``namespace`` run here, their database host (HOST)
    resolving to ``pg`` and the API server the one of ``kubectl``."""
    with pooler_pods_here(kubectl, namespace, hosts=(HOST,), ports=(pg.port,)) as pods:
        yield pods


@contextlib.contextmanager
def pooler_pods_here(
    kubectl: kube.Kubectl, namespace: str, *, hosts: tuple[str, ...], ports: tuple[int, ...] = ()
) -> Iterator[pooler_pods.PoolerPods]:
    """The pooler pods of ``namespace`` run here: ``hosts`` resolve to
    127.0.0.1 in them, where ``ports`` (and the API server of ``kubectl``)
    are reached. Without a database server, the agents still load every
    config and report it (nobody connects through the poolers)."""
    address = kubectl("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}")
    apiserver = int(address.stdout.rsplit(":", 1)[1])
    with pooler_pods.node_dir() as workdir:
        node = pooler_pods.Node(
            kubectl=kubectl,
            apiserver_port=apiserver,
            hosts=hosts,
            egress_ports=(*ports, apiserver),
            programs=pooler_pods.default_programs(workdir),
            workdir=workdir,
        )
        with pooler_pods.running(node, namespace) as pods:
            yield pods


def needs_root() -> None:
    """pooler_pods runs each pod in namespaces of its own."""
    if os.geteuid() != 0:
        pytest.skip("pooler_pods runs each pooler pod in namespaces of its own: needs root")


@contextlib.contextmanager
def server_for_pods(databases: list[str]) -> Iterator[servers.Postgres]:
    """:func:`server` for a test whose pooler pods run here (pooler_pods); the
    test is skipped, saying why, where they or Postgres cannot run."""
    needs_root()
    try:
        servers.find_tools()
    except servers.ToolsMissingError as err:
        pytest.skip(str(err))
    with server(databases) as pg:
        yield pg


def planned(documents: list[dict[str, Any]], tmp_path: Path) -> dict[str, int]:
    """Each profile's share as `headroom plan` prints it for ``documents``."""
    path = tmp_path / "apps.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    out = subprocess.run(
        [str(Path(sys.executable).parent / "headroom"), "plan", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    shares: dict[str, int] = {}
    name = ""
    for line in out.splitlines():
        match = SHARE.match(line)
        if match and match["name"]:
            name = match["name"]
        elif match:
            shares[name] = int(match["share"])
    assert len(shares) == len(documents), out
    return shares


def shares(kubectl: kube.Kubectl, namespace: str) -> dict[str, int] | None:
    """Every profile's share once all are Ready at their generation."""
    found = {}
    for sp in kube.get_json(kubectl, "scalingprofiles", "-n", namespace)["items"]:
        status = sp.get("status") or {}
        if status.get("observedGeneration") != sp["metadata"]["generation"]:
            return None
        if kube.condition(sp, "Ready") != "True":
            return None
        found[sp["metadata"]["name"]] = status["budget"]["serverConnections"]
    return found


def settled(
    kubectl: kube.Kubectl, namespace: str, expected: dict[str, int], *, timeout: float = 180
) -> dict[str, int]:
    """Until every profile is Ready at the share ``expected`` says."""

    def at_shares() -> dict[str, int]:
        found = shares(kubectl, namespace)
        assert found == expected, f"shares now {found}"  # shown if the wait times out
        return found

    return kube.wait_for(
        at_shares, timeout=timeout, what=f"{sorted(expected)} Ready at their shares {expected}"
    )


def planned_as_stored(
    kubectl: kube.Kubectl,
    namespace: str,
    *,
    unstored: tuple[dict[str, Any], ...] = (),
    created: str = "",
) -> dict[str, int]:
    """Each profile's share as a fresh operator would plan it from the stored
    objects (server_shares over them, creationTimestamp and status included:
    the last connections of a tie go to the older profile, and an apply of
    several documents may straddle a second, unlike `headroom plan`'s one
    go); ``unstored`` documents count as created at ``created`` (after now)."""
    stored = kube.get_json(kubectl, "scalingprofiles", "-n", namespace)["items"]
    bodies = [*stored, *unstored]
    parsed = [v1alpha1.parse_profile(body) for body in bodies]
    peers = [
        server_shares.peer(
            profile,
            body=body,
            created=None if body in stored else created,
        )
        for profile, body in zip(parsed, bodies, strict=True)
    ]
    grants = server_shares.shares(peers)
    return {
        profile.name: planner.plan(
            profile, facts=planner.Facts(grants=grants[f"{namespace}/{profile.name}"])
        ).budget.server_connections
        for profile in parsed
    }


class Budget:
    """Postgres' client backends of the apps' role, sampled every 100 ms on one
    superuser connection, each sample held to the limit in force when it was
    taken (``allow``)."""

    def __init__(self, pg: servers.Postgres) -> None:
        self._conninfo = (
            f"host={servers.HOST} port={pg.port} dbname=postgres "
            f"user={pg.superuser} password={pg.superuser_password} sslmode=disable"
        )
        self.samples: list[tuple[float, int]] = []
        self.limits: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def allow(self, limit: int, why: str) -> None:
        self.limits.append((time.monotonic(), limit, why))

    def _loop(self) -> None:
        with psycopg.connect(self._conninfo, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE usename = %s AND backend_type = 'client backend'",
                    (USER,),
                ).fetchone()
                assert row is not None
                self.samples.append((time.monotonic(), int(row[0])))
                self._stop.wait(0.1)

    def __enter__(self) -> Budget:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def over(self) -> list[str]:
        """Every sample above the limit in force when it was taken."""
        found = []
        for at, count in self.samples:
            in_force = [(limit, why) for since, limit, why in self.limits if since <= at]
            if in_force and count > in_force[-1][0]:
                found.append(f"{count} > {in_force[-1][0]} ({in_force[-1][1]})")
        return found

    @property
    def peak(self) -> int:
        return max((count for _, count in self.samples), default=0)


def room(kubectl: kube.Kubectl, namespace: str, names: list[str]) -> int:
    """What the server has for the pools of ``names``: max_connections minus the
    superuser's and what each profile keeps (direct connections, postgres_exporter),
    as their statuses say."""
    kept = 0
    for name in names:
        budget = kube.get_json(kubectl, "scalingprofile", name, "-n", namespace)["status"]["budget"]
        assert budget["maxConnections"] == MAX_CONNECTIONS
        kept += budget["reserved"] - SUPERUSER_RESERVED
    return MAX_CONNECTIONS - SUPERUSER_RESERVED - kept


class Traffic:
    """pgbench through each profile's pooler Service (pooler_pods.service),
    started and stopped per profile, its stderr in a file: the client errors
    of every run so far, stopped or running."""

    def __init__(
        self,
        pods: pooler_pods.PoolerPods,
        *,
        tools: servers.Tools,
        clients: dict[str, int],
        workdir: Path,
        pooler: str = "pooler",
    ) -> None:
        """``clients``: how many pgbench clients each profile has; ``pooler``:
        through which of its poolers (``pooler-ro``: its read pooler)."""
        self._pods = pods
        self._pooler = pooler
        self._tools = tools
        self.clients = clients
        self._dir = workdir / "traffic"
        self._dir.mkdir(exist_ok=True)
        self._script = self._dir / "hold.sql"
        self._script.write_text(SCRIPT)
        self._ports: dict[str, int] = {}
        self._runs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[Path] = []

    def start(self, *names: str) -> None:
        for name in names:
            if name not in self._ports:
                self._ports[name] = self._pods.service(f"{name}-{self._pooler}", "pgbouncer")
            servers.raise_nofile(sum(self.clients.values()) + 256)
            log = self._dir / f"{name}-{len(self._logs)}.log"
            self._logs.append(log)
            env = servers.libpq_env(
                user=USER, password=PASSWORD, port=self._ports[name], dbname=name
            )
            with log.open("wb") as out:
                self._runs[name] = subprocess.Popen(
                    [
                        self._tools.pg("pgbench"), "-n", "-c", str(self.clients[name]), "-j", "1",
                        "-f", str(self._script), "-T", "3600",
                    ],
                    env=env, stdout=subprocess.DEVNULL, stderr=out,
                )  # fmt: skip

    def stop(self, *names: str) -> None:
        for name in names or list(self._runs):
            proc = self._runs.pop(name)
            proc.kill()
            proc.wait(timeout=30)

    def failed(self) -> dict[str, list[str]]:
        """Every client error so far, by log; a pgbench that ended by itself
        ended on an error."""
        found = {}
        for log in self._logs:
            lines = [
                line
                for line in log.read_text(errors="replace").splitlines()
                if "error" in line or "abort" in line
            ]
            if lines:
                found[log.name] = lines
        for name, proc in self._runs.items():
            if proc.poll() is not None:
                found.setdefault(name, []).append(f"pgbench exited {proc.returncode}")
        return found

    @contextmanager
    def held(self) -> Iterator[None]:
        """No client may fail inside the block."""
        before = {name: len(lines) for name, lines in self.failed().items()}
        yield
        after = self.failed()
        assert {n: v for n, v in after.items() if len(v) > before.get(n, 0)} == {}


def poolers_running(
    kubectl: kube.Kubectl, namespace: str, pods: pooler_pods.PoolerPods, tools: servers.Tools
) -> dict[str, str] | None:
    """The pooler pods' uids by name once every pooler Deployment has rolled
    out, the harness runs exactly its pods, each running PgBouncer reports the
    max_db_connections of its ConfigMap (SHOW CONFIG, as the stats user), and
    each pod's agent has reported it confirmed at that config (the state
    ConfigMap: its hash, its server connections within the limit)."""
    listed = kube.get_json(kubectl, "deployments,pods,configmaps,secrets", "-n", namespace)["items"]
    by = {(o["kind"], o["metadata"]["name"]): o for o in listed}
    found = {}
    for deployment in (o for o in listed if o["kind"] == "Deployment"):
        name = deployment["metadata"]["name"]
        if deployment["metadata"].get("labels", {}).get("app.kubernetes.io/component") != "pooler":
            continue
        status, want = deployment.get("status") or {}, deployment["spec"]["replicas"]
        if status.get("observedGeneration") != deployment["metadata"]["generation"]:
            return None
        if not status.get("updatedReplicas") == status.get("replicas") == want:
            return None
        uids = {
            o["metadata"]["uid"]: o["metadata"]["name"]
            for o in listed
            if o["kind"] == "Pod" and o["metadata"]["name"].rsplit("-", 2)[0] == name
        }
        runs = pods.running(name)
        if {r.uid for r in runs} != set(uids) or len(uids) != want:
            return None
        ini = by[("ConfigMap", f"{name}-config")]["data"]["pgbouncer.ini"]
        configured = MAX_DB.search(ini)
        state = pooler_state.entries((by.get(("ConfigMap", f"{name}-state")) or {}).get("data"))
        config = agentfile.content_hash(ini)
        if not all(r.name in state and state[r.name].confirmed_at(config) for r in runs):
            return None
        stats = base64.b64decode(by[("Secret", f"{name}-auth")]["data"]["stats-password"])
        for run in runs:
            psql = servers.Psql(
                tools, run.port("pgbouncer"), "headroom_stats", stats.decode(),
                "pgbouncer",
            )  # fmt: skip
            loaded = {r["key"]: r["value"] for r in psql.table("SHOW CONFIG")}
            expected = configured[1] if configured else "0"
            if loaded["max_db_connections"] != expected:
                return None
        found |= {f"pods/{n}": uid for uid, n in uids.items()}
    return found


def converged(
    kubectl: kube.Kubectl,
    namespace: str,
    pods: pooler_pods.PoolerPods,
    tools: servers.Tools,
    expected: dict[str, int],
    *,
    timeout: float = 180,
) -> dict[str, str]:
    """Until every profile is Ready at its share and every pooler runs its
    config (poolers_running); the pooler pods' uids."""
    settled(kubectl, namespace, expected, timeout=timeout)

    def running() -> dict[str, str] | None:
        assert pods.errors == [], pods.errors
        return poolers_running(kubectl, namespace, pods, tools)

    return kube.wait_for(
        running, timeout=timeout, what="every pooler pod running its ConfigMap's config"
    )


READ_POD = "app.kubernetes.io/component=pooler-ro"


def read_pooler_pods(kubectl: kube.Kubectl, namespace: str, name: str) -> set[str]:
    """The uids of profile ``name``'s read-pooler pods."""
    found = kube.get_json(
        kubectl, "pods", "-n", namespace, "-l", f"headroom.dev/profile={name},{READ_POD}"
    )
    return {p["metadata"]["uid"] for p in found["items"]}


class ReadOrder:
    """Samples the namespace's ConfigMaps every 100 ms while a second profile
    arrives on a replica the ``first`` reads from: the first's read pool size
    (its ConfigMap's max_db_connections), whether all its read-pooler pods have
    confirmed that config (their reports in ``<first>-pooler-ro-state``), and
    whether the ``second``'s read pooler ConfigMap exists (its read pool grew)."""

    def __init__(self, kubectl: kube.Kubectl, namespace: str, *, first: str, second: str) -> None:
        self.kubectl, self.namespace = kubectl, namespace
        self.first, self.second = first, second
        self.samples: list[tuple[int | None, bool, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @property
    def seen_second(self) -> bool:
        return any(second for _, _, second in self.samples)

    def _sample(self) -> tuple[int | None, bool, bool]:
        maps = {
            c["metadata"]["name"]: c.get("data") or {}
            for c in kube.get_json(self.kubectl, "configmaps", "-n", self.namespace)["items"]
        }
        ini = maps.get(f"{self.first}-pooler-ro-config", {}).get("pgbouncer.ini", "")
        limit = MAX_DB.search(ini)
        reports = pooler_state.entries(maps.get(f"{self.first}-pooler-ro-state"))
        pods = len(read_pooler_pods(self.kubectl, self.namespace, self.first))
        at = agentfile.content_hash(ini)
        confirmed = sum(1 for e in reports.values() if e.confirmed_at(at)) >= pods > 0
        return (
            int(limit[1]) if limit else None,
            confirmed,
            f"{self.second}-pooler-ro-config" in maps,
        )

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            self.samples.append(self._sample())

    def check(self, *, limit: int) -> None:
        """Every sample where the second's read pool exists shows the first's
        at its new size (``limit``) and confirmed by all its pods, and the
        first sample, taken before the second was applied, shows the first at
        another size (so the shrink happened while sampled). Whether the
        window between the first's new config and its pods' confirmation is
        caught depends on timing (the agents confirm within a second); the
        unit tests of server_shares hold that the second waits for it."""
        grown = [(size, confirmed) for size, confirmed, second in self.samples if second]
        assert grown, self.samples
        assert all(size == limit and confirmed for size, confirmed in grown), self.samples
        assert self.samples[0][0] != limit and not self.samples[0][2], self.samples

    def __enter__(self) -> ReadOrder:
        self.samples.append(self._sample())  # before the caller applies the second
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
