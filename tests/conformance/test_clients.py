"""The app's side of the contract: real apps of the seeds' kind, configured by
nothing but the binding as their pods receive it, at their ceilings at once.

A profile per client stack is planned and built by Headroom's own builders;
the rendered pgbouncer.ini (every pooler instance), redis.conf (a cache and a
queue instance) run in the real programs on 127.0.0.1 in front of the session's
Postgres. Each app pod is a process whose whole environment is the app's
binding (``envFrom: <profile>-binding``, as docs/api.md tells the app to
consume it), each worker pod one whose environment is its rendered
container's (envFrom + env, resolved as the kubelet does); only addresses are
changed (Service host:port -> 127.0.0.1:port, an app pod to one pooler pod as a
Service spreads them). Stacks:

* ``prisma7``: Prisma 7 + @prisma/adapter-pg app pods producing BullMQ jobs,
  BullMQ/ioredis workers writing through Prisma 7 (seed 000);
* ``knex``: Knex app pods (seed 002), node-postgres + BullMQ workers;
  its migration connects with the direct ``DATABASE_URL`` (sslmode as rendered);
* ``python``: psycopg_pool, SQLAlchemy, asyncpg and Django (its own pool) app
  pods, one each, redis-py list workers on psycopg_pool; its migration uses the
  direct ``DATABASE_URL`` too.

Every app pod and worker pod of the plan's maximum runs its whole pool at
once; PgBouncer's SHOW POOLS and Postgres' pg_stat_activity are sampled
throughout. Asserted: no query refused or failed in any pod, client
connections never above the plan's client demand, server connections never
above max_db_connections per pooler pod nor the plan's total, every job
processed exactly once (0 lost: workers drain what is queued when the load
ends). On PgBouncer of the default image's release (1.26,
hack/build-pgbouncer.sh) and Debian 12's 1.18 (the oldest supported: no prepared
statements across transactions, which the binding then says).

node-postgres against a Postgres whose certificate a private CA signed: the app
pod as docs/api.md shows its Deployment, a worker pod as rendered, the CA only
from the binding (DATABASE_CA_CERT, mounted where the direct URL's sslrootcert
looks), every connection encrypted and verified, refused with another CA.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis_servers
import servers
import yaml

from headroom.api import v1alpha1
from headroom.builders import binding, common, desired, redis
from headroom.planning import credentials, planner

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "tests" / "clients"
HOST = servers.HOST
STATS_PASSWORD = "stats-secret-clients"
APP_PODS = 3
POOL_PER_POD = 5
WORKER_PODS = 2
WORKER_POOL = 2
JOBS_PER_POD = 30
LOAD_SECONDS = 8.0
# Node and the clients start in a few seconds each, minutes on a shared 2-core box
# under load: the load starts once all are up.
READY_TIMEOUT = 300.0
# Jobs still queued at the end of the load are processed, not lost: the workers
# drain them (a job left after this is one the test counts as lost).
DRAIN_SECONDS = 90.0


@dataclass(frozen=True)
class Stack:
    client: str  # spec.app.client
    list_name: str
    app: Callable[[Path, int], list[str]]  # (node dir, pod index) -> argv
    worker: Callable[[Path], list[str]]
    migrate: Callable[[Path], list[str]] | None  # through the direct DATABASE_URL
    app_pods: int = APP_PODS  # spec.app.replicas.max: every one runs at once


def _node(script: str) -> Callable[..., list[str]]:
    def argv(node_dir: Path, *_: int) -> list[str]:
        return [shutil.which("node") or "node", "--import", "tsx", str(node_dir / "apps" / script)]

    return argv


# One app pod per Python client (tests/clients/python/app.py --client).
PYTHON_CLIENTS = ("psycopg", "sqlalchemy", "asyncpg", "django")


def _python(script: str, *extra: str) -> Callable[..., list[str]]:
    def argv(_node_dir: Path, index: int = 0) -> list[str]:
        client = PYTHON_CLIENTS[index % len(PYTHON_CLIENTS)]
        more = [arg.format(client=client) for arg in extra]
        return [sys.executable, str(CLIENTS / "python" / script), *more]

    return argv


STACKS = {
    "prisma7": Stack(
        client="prisma",
        list_name="bull:emails:wait",
        app=_node("prisma-app.ts"),
        worker=_node("prisma-worker.ts"),
        migrate=None,  # `prisma migrate` needs the schema engine, not installed here
    ),
    "knex": Stack(
        client="node-postgres",
        list_name="bull:emails:wait",
        app=_node("knex-app.ts"),
        worker=_node("pg-worker.ts"),
        migrate=_node("knex-migrate.ts"),
    ),
    "python": Stack(
        client="generic",
        list_name="jobs",
        app=_python("app.py", "--client", "{client}"),
        worker=_python("worker.py"),
        migrate=_python("migrate.py"),
        app_pods=len(PYTHON_CLIENTS),
    ),
}

TABLES = (
    "DROP TABLE IF EXISTS orders, jobs_done",
    "CREATE TABLE orders (id serial PRIMARY KEY, pod text NOT NULL, amount integer NOT NULL,"
    " created_at timestamp(3) NOT NULL DEFAULT now())",
    "CREATE TABLE jobs_done (job_id text PRIMARY KEY, worker text NOT NULL)",
)


def cached_by(script: str) -> Path:
    """The path a hack/ script that builds (or finds) something cached prints last."""
    out = subprocess.run(
        [str(ROOT / "hack" / script)], capture_output=True, text=True, check=True, timeout=900
    )
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def node_dir() -> Path:
    """The Node packages from the committed lockfile (hack/install-node-clients.sh)."""
    if shutil.which("node") is None:
        if os.environ.get("CI"):
            pytest.fail("node is not on PATH", pytrace=False)
        pytest.skip("the client tests need node (>= 20.19)")
    path = cached_by("install-node-clients.sh")
    apps = path / "apps"
    apps.mkdir(exist_ok=True)
    for script in (CLIENTS / "node" / "apps").glob("*.ts"):
        shutil.copy(script, apps / script.name)
    return path


def pgbouncer_binary(version: str, *, tools: servers.Tools, default: Path) -> Path:
    """``version`` "default": the default image's release (1.26); "1.18": Debian 12's,
    the oldest supported."""
    return default if version == "default" else tools.pgbouncer


def binary_version(binary: Path) -> str:
    return ".".join(map(str, servers.pgbouncer_version(binary)))


def profile_body(
    stack: Stack,
    *,
    pg_port: int,
    pgbouncer_version: str,
    database: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The profile of ``stack``'s app; ``database``: spec.database fields over the
    defaults (the session's Postgres, without TLS)."""
    return {
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "ScalingProfile",
        "metadata": {"name": "shop", "namespace": "default", "uid": "clients"},
        "spec": {
            "app": {
                "deployment": "web",
                "replicas": {"min": 1, "max": stack.app_pods},
                "poolSizePerPod": POOL_PER_POD,
                "client": stack.client,
            },
            "database": {
                "host": HOST,
                "port": pg_port,
                "name": "app",
                "credentialsSecret": {"name": "db"},
                # fewer than the clients: PgBouncer multiplexes them at the ceiling
                "maxConnections": 30,
                "superuserReservedConnections": 3,
                "sslMode": "prefer",  # the default; this Postgres has no TLS
                **(database or {}),
            },
            "pooler": {
                "instances": 2,
                "poolMode": "transaction",
                "image": f"registry.example/pgbouncer:{pgbouncer_version}.0",
            },
            "cache": {
                "instances": [
                    {"name": "cache", "use": "cache", "memory": "64Mi"},
                    {"name": "jobs", "use": "queue", "memory": "64Mi"},
                ]
            },
            "queues": [
                {
                    "name": "emails",
                    "redis": "jobs",
                    "listName": stack.list_name,
                    "image": "registry.example/worker:1",
                    "replicas": {"min": 0, "max": WORKER_PODS},
                    "databasePoolSize": WORKER_POOL,
                }
            ],
        },
    }


def secret_env(secret: common.Obj) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}


def container_env(container: common.Obj, objects: Mapping[str, common.Obj]) -> dict[str, str]:
    """The environment the kubelet gives ``container``: envFrom Secrets in order
    (with their prefix), then env (value or secretKeyRef), later names winning."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["secretRef"]["name"]
        prefix = source.get("prefix", "")
        env |= {prefix + k: v for k, v in secret_env(objects[f"Secret/{ref}"]).items()}
    for entry in container.get("env", []):
        if "value" in entry:
            assert "$(" not in entry["value"], "no dependent env values are rendered"
            env[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secret_env(objects[f"Secret/{ref['name']}"])[ref["key"]]
    return env


def pod_files(pod: common.Obj, objects: Mapping[str, common.Obj], root: Path) -> dict[str, Path]:
    """The Secret volumes the kubelet mounts into ``pod``'s container, written under
    ``root`` (the pod's file system): {mountPath: where it is here}. A key a volume
    names that its Secret lacks fails, as the kubelet would not start the pod."""
    (container,) = pod["containers"]
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    mounted = {}
    for mount in container.get("volumeMounts", []):
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        data = secret_env(objects[f"Secret/{secret['secretName']}"])
        items = secret.get("items") or [{"key": key, "path": key} for key in data]
        here = root / mount["mountPath"].lstrip("/")
        here.mkdir(parents=True, exist_ok=True)
        for item in items:
            assert item["key"] in data, f"Secret {secret['secretName']} has no {item['key']}"
            (here / item["path"]).write_text(data[item["key"]])
        mounted[mount["mountPath"]] = here
    return mounted


def localize(
    env: Mapping[str, str],
    addresses: Mapping[str, int],
    files: Mapping[str, Path] | None = None,
) -> dict[str, str]:
    """Service ``host:port`` -> 127.0.0.1:port and a mount path -> where its files
    are here (pod_files), in every value; nothing else changes."""
    out = {}
    for key, value in env.items():
        local = value
        for address, port in addresses.items():
            local = local.replace(address, f"{HOST}:{port}")
        for mount_path, here in (files or {}).items():
            local = local.replace(mount_path, str(here))
        out[key] = local
    for address, port in addresses.items():
        host = address.partition(":")[0]
        if out.get("host") == host:  # the servicebinding.io keys of the pooler
            out["host"], out["port"] = HOST, str(port)
    return out


class Pod:
    """One pod's process: its stdout and stderr read as they come (a pod that says
    READY waits for ``go``), its ``REPORT {json}`` line at the end."""

    def __init__(self, name: str, proc: subprocess.Popen[str]) -> None:
        self.name, self.proc = name, proc
        self.out: list[str] = []
        self.err: list[str] = []
        self.ready = threading.Event()
        self.readers = [
            threading.Thread(target=self._read, args=(proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(proc.stderr, self.err), daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)
            if into is self.out and line.strip() == "READY":
                self.ready.set()

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    def _tail(self) -> str:
        return f"{self.stdout[-3000:]}\n{''.join(self.err)[-3000:]}"

    def wait_ready(self, deadline: float) -> None:
        """Until the pod says READY; fails (with its output) when it exits first
        or ``deadline`` (time.monotonic()) passes."""
        while not self.ready.wait(timeout=0.2):
            code = self.proc.poll()
            assert code is None, f"{self.name} exited {code} before READY\n{self._tail()}"
            assert time.monotonic() < deadline, f"{self.name} not READY in time\n{self._tail()}"

    def go(self, until_ms: float, drain_ms: float) -> None:
        assert self.proc.stdin is not None
        # a pod that died since READY shows in its report
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write(f"GO {int(until_ms)} {int(drain_ms)}\n")
            self.proc.stdin.close()

    def report(self, timeout: float) -> dict[str, Any]:
        self.proc.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=30)
        lines = [line for line in self.out if line.startswith("REPORT ")]
        assert self.proc.returncode == 0 and lines, (
            f"{self.name} exited {self.proc.returncode}\n{self._tail()}"
        )
        report: dict[str, Any] = json.loads(lines[-1].removeprefix("REPORT "))
        return report


def start_pod(name: str, argv: list[str], env: Mapping[str, str], cwd: Path) -> Pod:
    # The pod's environment is the binding and nothing else (PATH and HOME aside).
    full = {**env, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd)}
    proc = subprocess.Popen(
        [*argv, "--pod", name] if "--pod" not in argv else argv,
        env=full,
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return Pod(name, proc)


def start_together(pods: list[Pod], *, seconds: float) -> None:
    """Once every pod is set up (READY), their load for ``seconds`` from now; the
    workers then go on with what is still queued for up to DRAIN_SECONDS."""
    deadline = time.monotonic() + READY_TIMEOUT
    for pod in pods:
        pod.wait_ready(deadline)
    until = (time.time() + seconds) * 1000
    for pod in pods:
        pod.go(until, until + DRAIN_SECONDS * 1000)


@dataclass
class Rendered:
    plan: planner.Plan
    objects: dict[str, common.Obj]
    redis_passwords: dict[str, str]

    @property
    def app_env(self) -> dict[str, str]:
        return secret_env(self.objects[f"Secret/{self.plan.names.binding}"])

    @property
    def worker_pod(self) -> common.Obj:
        (queue,) = self.plan.queues
        deployment = self.objects[f"Deployment/{self.plan.names.worker(queue.name)}"]
        pod: common.Obj = deployment["spec"]["template"]["spec"]
        return pod

    @property
    def worker_env(self) -> dict[str, str]:
        (container,) = self.worker_pod["containers"]
        return container_env(container, self.objects)


def render(
    stack: Stack,
    *,
    database: servers.AppDatabase,
    pgbouncer_version: str,
    database_spec: Mapping[str, Any] | None = None,
    server_ca_pem: str | None = None,
) -> Rendered:
    """Plan and build the profile of ``stack`` (``database_spec`` over its
    spec.database) with the credentials of ``database`` (and the CA's PEM the
    operator reads from spec.database.serverCASecret)."""
    profile = v1alpha1.parse_profile(
        profile_body(
            stack,
            pg_port=database.port,
            pgbouncer_version=pgbouncer_version,
            database={"name": database.name, **(database_spec or {})},
        )
    )
    planned = planner.plan(profile)
    assert planned.ok, planned.problem_text()
    passwords = {"cache": secrets.token_hex(16), "jobs": secrets.token_hex(16)}
    creds = credentials.Credentials(
        username=database.user,
        password=database.password,
        stats_password=STATS_PASSWORD,
        revision="1",
        redis_passwords=passwords,
        server_ca_pem=server_ca_pem,
    )
    objects = desired.build(planned, creds, app_pod_selector={"matchLabels": {"app": "web"}})
    return Rendered(planned, objects, passwords)


def pool_counts(bouncer: servers.PgBouncer) -> tuple[int, int]:
    """(client, server) connections of the app's pool on one PgBouncer."""
    rows = bouncer.show("POOLS", user=planner.STATS_USER, password=STATS_PASSWORD)
    clients = server = 0
    for row in rows:
        if row["database"] != "app":
            continue
        clients += int(row["cl_active"]) + int(row["cl_waiting"])
        server += sum(
            int(row[k]) for k in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login")
        )
    return clients, server


def named_parses(bouncer: servers.PgBouncer) -> int:
    """Named prepared statements clients created on one PgBouncer (SHOW STATS, 1.21+;
    0 where the column does not exist)."""
    rows = bouncer.show("STATS", user=planner.STATS_USER, password=STATS_PASSWORD)
    return sum(int(r.get("total_client_parse_count", 0)) for r in rows if r["database"] == "app")


@pytest.fixture
def tables(database: servers.AppDatabase) -> Iterator[servers.Psql]:
    psql = database.server.admin(database.name)
    for statement in TABLES:
        psql.run(statement)
    psql.run(f"ALTER TABLE orders OWNER TO {database.user}")
    psql.run(f"ALTER TABLE jobs_done OWNER TO {database.user}")
    yield psql
    for statement in TABLES[:1]:
        psql.run(statement)


@pytest.mark.parametrize("version", ["default", "1.18"])
@pytest.mark.parametrize("stack_name", sorted(STACKS))
def test_every_pod_and_worker_at_its_ceiling(
    stack_name: str,
    version: str,
    database: servers.AppDatabase,
    tables: servers.Psql,
    node_dir: Path,
    default_pgbouncer: Path,
    tools: servers.Tools,
    start_redis: Callable[..., redis_servers.RedisProcess],
) -> None:
    stack = STACKS[stack_name]
    servers.raise_nofile(10_000)
    binary = pgbouncer_binary(version, tools=tools, default=default_pgbouncer)
    rendered = render(stack, database=database, pgbouncer_version=binary_version(binary))
    planned, budget = rendered.plan, rendered.plan.budget

    # The rendered pgbouncer.ini, once per pooler pod, in the PgBouncer of that version.
    bouncer_tools = dataclasses.replace(tools, pgbouncer=binary)
    bouncers = []
    for _ in range(planned.pooler.instances):
        bouncer = servers.PgBouncer(
            bouncer_tools, servers.ini_for(planned), database.userlist(STATS_PASSWORD)
        )
        bouncers.append(bouncer.start())
    # The rendered redis.conf of both instances.
    redis_ports = {}
    for instance in planned.redis:

        def conf(port: int, workdir: Path, instance: planner.RedisPlan = instance) -> str:
            return redis.render_conf(
                instance,
                bind=HOST,
                port=port,
                data_dir=str(workdir),
                auth_file=str(workdir / "auth.conf"),
            )

        password = rendered.redis_passwords[instance.name]
        started = start_redis(
            conf, files={"auth.conf": redis.render_auth(password)}, password=password
        )
        redis_ports[f"{planned.names.redis_host(instance.name)}:{planner.REDIS_PORT}"] = (
            started.port
        )

    pooler_address = planned.names.pooler_endpoint

    def pod_env(env: Mapping[str, str], index: int) -> dict[str, str]:
        pooler = bouncers[index % len(bouncers)]  # a Service spreads pods over its endpoints
        return localize(env, {pooler_address: pooler.port, **redis_ports})

    app_env, worker_env = rendered.app_env, rendered.worker_env
    # What each consumer is told is what the plan counts for it.
    assert app_env["DATABASE_POOL_SIZE"] == str(POOL_PER_POD)
    assert worker_env["DATABASE_POOL_SIZE"] == str(WORKER_POOL)
    assert budget.client_demand == stack.app_pods * POOL_PER_POD + WORKER_PODS * WORKER_POOL

    try:
        if stack.migrate is not None:
            migrate = start_pod("migrate", stack.migrate(node_dir), pod_env(app_env, 0), node_dir)
            migrated = migrate.report(timeout=120)
            assert migrated["errors"] == 0, migrated
        pods = [
            start_pod(
                f"app-{i}",
                [*stack.app(node_dir, i), "--jobs", str(JOBS_PER_POD)],
                pod_env(app_env, i),
                node_dir,
            )
            for i in range(stack.app_pods)
        ] + [
            start_pod(f"worker-{i}", stack.worker(node_dir), pod_env(worker_env, i), node_dir)
            for i in range(WORKER_PODS)
        ]
        samplers = [servers.Sampler(database.backends, interval=0.3)]
        per_pooler = [
            (
                servers.Sampler(lambda b=b: pool_counts(b)[0], interval=0.3),
                servers.Sampler(lambda b=b: pool_counts(b)[1], interval=0.3),
            )
            for b in bouncers
        ]
        for sampler in [*samplers, *(s for pair in per_pooler for s in pair)]:
            sampler.__enter__()
        try:
            start_together(pods, seconds=LOAD_SECONDS)
            reports = [pod.report(timeout=LOAD_SECONDS + DRAIN_SECONDS + 120) for pod in pods]
        finally:
            for sampler in [*samplers, *(s for pair in per_pooler for s in pair)]:
                sampler.__exit__(None, None, None)
        # Named prepared statements (psycopg prepares after 5 runs of a query) went
        # through transaction pooling where the binding says they survive it.
        parses = sum(named_parses(b) for b in bouncers)
    finally:
        for bouncer in bouncers:
            bouncer.stop()
    if stack_name == "python" and app_env["DATABASE_PREPARED_STATEMENTS"] == "true":
        assert parses > 0, "no named prepared statement reached PgBouncer"

    clients_peak = sum(c.peak for c, _ in per_pooler)
    servers_peak = [s.peak for _, s in per_pooler]
    postgres_peak = samplers[0].peak
    enqueued = sum(r.get("jobs") or 0 for r in reports)
    done = int(tables.value("SELECT count(*) FROM jobs_done"))
    # The figures README quotes (pytest -s shows them).
    print(
        f"\nclients[{stack_name}, PgBouncer {binary_version(binary)}]: "
        f"{sum(r['queries'] for r in reports)} transactions, "
        f"{sum(r['errors'] for r in reports)} errors; client connections peak {clients_peak} "
        f"(demand {budget.client_demand}); server connections peak {servers_peak} per pooler "
        f"(max_db_connections {budget.max_db_connections}), Postgres {postgres_peak} "
        f"(plan {budget.server_connections}); jobs {done}/{enqueued}; "
        f"named prepared statements {parses}; transactions per app pod "
        f"{[r['queries'] for r in reports if r['pod'].startswith('app-')]}"
    )
    failed = [r for r in reports if r["errors"]]
    assert not failed, json.dumps(failed, indent=1)
    apps = [r for r in reports if r["pod"].startswith("app-")]
    assert all(r["queries"] > 0 for r in apps), apps

    # Connections, as the servers report them.
    assert clients_peak <= budget.client_demand, (clients_peak, budget)
    assert max(servers_peak) <= budget.max_db_connections, (servers_peak, budget)
    assert postgres_peak <= planned.pooler.instances * budget.max_db_connections, postgres_peak
    assert postgres_peak <= budget.server_connections
    # the ceiling was reached: every pod's whole pool was open at some point
    assert clients_peak >= budget.client_demand * 0.8, (clients_peak, budget.client_demand)

    # Jobs: every one enqueued was processed exactly once.
    assert (enqueued, done) == (stack.app_pods * JOBS_PER_POD, enqueued), "jobs lost"


# --- TLS to the primary with a private CA --------------------------------------------


def documented_app_pod() -> common.Obj:
    """The app Deployment's pod template docs/api.md shows for a private CA."""
    text = (ROOT / "docs" / "api.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if binding.CA_KEY in b]
    pod: common.Obj = yaml.safe_load(block)["spec"]["template"]["spec"]
    return pod


def test_node_postgres_verifies_the_private_ca_the_binding_delivers(
    tls_primary: servers.TLSPrimary, node_dir: Path, tmp_path: Path
) -> None:
    """A Postgres whose certificate a private CA signed, a node-postgres profile with
    sslMode verify-full and that CA in serverCASecret. The app pod is the Deployment
    docs/api.md shows (envFrom the binding, its DATABASE_CA_CERT mounted), a worker
    pod its rendered Deployment; both get nothing else (no NODE_EXTRA_CA_CERTS).
    Knex's migration and pg.Pool (drizzle-kit's way) on the direct DATABASE_URL
    connect over TLS, verified; with another CA in the file they are refused."""
    database = tls_primary.database
    admin = tls_primary.server.admin(database.name)
    admin.run(TABLES[1])
    admin.run(f"ALTER TABLE orders OWNER TO {database.user}")
    rendered = render(
        STACKS["knex"],
        database=database,
        pgbouncer_version="1.26",
        database_spec={"sslMode": "verify-full", "serverCASecret": {"name": "db-ca"}},
        server_ca_pem=tls_primary.ca_file.read_text(),
    )
    app_env, worker_env = rendered.app_env, rendered.worker_env
    for env in (app_env, worker_env):
        assert env["DATABASE_URL"].endswith(f"?sslmode=verify-full&sslrootcert={binding.CA_FILE}")
        assert env[binding.CA_KEY] == tls_primary.ca_file.read_text()
        assert not any(key.startswith("NODE_") for key in env)
    pods = {
        "app-0": (app_env, pod_files(documented_app_pod(), rendered.objects, tmp_path / "app")),
        "worker-0": (worker_env, pod_files(rendered.worker_pod, rendered.objects, tmp_path / "w")),
    }
    for files in (files for _, files in pods.values()):
        assert list(files) == [binding.CA_DIR]

    app_files = pods["app-0"][1]
    knex_migrate = STACKS["knex"].migrate
    assert knex_migrate is not None

    def migrate() -> dict[str, Any]:
        argv = knex_migrate(node_dir)
        return start_pod("migrate", argv, localize(app_env, {}, app_files), node_dir).report(120)

    migrated = migrate()
    assert (migrated["queries"], migrated["errors"]) == (1, 0), migrated
    for name, (env, files) in pods.items():
        report = start_pod(
            name, _node("pg-direct.ts")(node_dir), localize(env, {}, files), node_dir
        ).report(timeout=120)
        size = int(env["DATABASE_POOL_SIZE"])
        # the whole pool, every connection encrypted as the server itself reports
        assert (report["queries"], report["encrypted"], report["errors"]) == (size, size, 0), report

    # The same pod with another CA's certificate where the URL looks: refused.
    (app_files[binding.CA_DIR] / "ca.crt").write_text(tls_primary.other_ca_file.read_text())
    refused = migrate()
    assert (refused["queries"], refused["errors"]) == (0, 1), refused
    # Node's words for a chain no CA it was given signed
    assert refused["firstErrors"] == ["unable to verify the first certificate"], refused


# --- object storage: what a browser gets from the app ------------------------------

PUBLIC_HOST = "files.shop.example.test"


def _browser_request(
    gateway_endpoint: str,
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    host: str = PUBLIC_HOST,
) -> tuple[int, bytes]:
    """``url`` (which names the public host) sent as the Ingress forwards it: to the
    server, with the Host header the browser sent."""
    parts = urllib.parse.urlsplit(url)
    target = gateway_endpoint + parts.path + (f"?{parts.query}" if parts.query else "")
    request = urllib.request.Request(  # noqa: S310 - 127.0.0.1
        target, data=body, method=method, headers={"Host": host, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_browser_uploads_are_presigned_for_the_public_host(
    node_dir: Path, start_versitygw: Callable[..., Any], tmp_path: Path
) -> None:
    """Seed 003: the builtin server with a public host. An AWS SDK v3 app pod on the
    binding alone stores objects in-cluster and presigns for the public host; the
    browser's POST (through the Ingress, Host kept) is accepted under the limit and
    refused over it, and a presigned GET verifies only for the host it names."""
    import test_buckets_s3 as builtin

    body = builtin._profile()
    body["spec"]["storage"]["buckets"][0]["builtin"]["public"] = {"host": PUBLIC_HOST}
    rendered = builtin._render(body)
    ingress = rendered.find("Ingress", "shop-s3")
    assert ingress["spec"]["rules"][0]["host"] == PUBLIC_HOST
    gateway = builtin._start_rendered(start_versitygw, rendered)
    assert builtin._agent(rendered, gateway, tmp_path / "run" / "ready").step()
    env = builtin._binding(rendered)
    public = f"https://{PUBLIC_HOST}"
    assert (env["S3_PUBLIC_ENDPOINT"], env["S3_PUBLIC_URL"]) == (public, f"{public}/meal-photos")
    in_cluster = env["AWS_ENDPOINT_URL_S3"].removeprefix("http://")
    pod = start_pod(
        "s3-app",
        [*_node("s3-app.ts")(node_dir)],
        localize(env, {in_cluster: gateway.port}),
        node_dir,
    )
    report = pod.report(timeout=180)
    assert report["errors"] == 0, report
    (line,) = [x for x in pod.stdout.splitlines() if x.startswith("PRESIGNED ")]
    presigned = json.loads(line.removeprefix("PRESIGNED "))
    post, get_url = presigned["post"], presigned["getUrl"]
    # the URLs a browser gets name the public host, never the in-cluster one
    assert post["url"] == f"{public}/meal-photos"
    assert get_url.startswith(f"{public}/meal-photos/from-app.txt?")
    limit = int(env["S3_MAX_UPLOAD_BYTES"])
    origin = {"Origin": builtin.ORIGIN}
    # the browser's CORS preflight for the POST, through the public host
    preflight = {**origin, "Access-Control-Request-Method": "POST"}
    status, _ = _browser_request(gateway.endpoint, post["url"], method="OPTIONS", headers=preflight)
    assert status == 200
    refused = {**preflight, "Origin": builtin.OTHER_ORIGIN}
    status, _ = _browser_request(gateway.endpoint, post["url"], method="OPTIONS", headers=refused)
    assert status == 403
    for size, accepted in ((limit // 2, True), (limit * 2, False)):
        form, content_type = builtin.multipart_form(post["fields"], secrets.token_bytes(size))
        status, answer = _browser_request(
            gateway.endpoint,
            post["url"],
            method="POST",
            body=form,
            headers={"Content-Type": content_type, **origin},
        )
        assert (status < 300) is accepted, (size, status, answer[:300])
        if not accepted:
            assert b"EntityTooLarge" in answer, answer[:300]
    status, answer = _browser_request(gateway.endpoint, get_url)
    assert (status, answer) == (200, b"stored by the app")
    # signed for the public host: the same URL under another Host is refused
    status, _ = _browser_request(gateway.endpoint, get_url, host=in_cluster)
    assert status == 403
