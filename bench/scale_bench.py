#!/usr/bin/env python3
"""Scale benchmark: N full-stack profiles on one local control plane.

The profile is what platform teams run: examples/shop-scaled.yaml (pooler, two
Redis, a queue with workers, app autoscaling) plus two external read replicas,
an ``s3`` bucket and the default alerts, with prometheus-operator's CRDs
installed (PrometheusRule and monitors): 40 children of 11 kinds. Each profile
has its own primary and replicas (ports on 127.0.0.1: profiles on one server
would share its max_connections). Two scenarios:

- **full** (``--sizes 50,50,50,100,500``): the servers refuse at once (nothing
  listens on their ports), like a database that is down or not reachable;
- **slow** (``--slow-sizes 500``): the replicas' and the bucket endpoint's
  ports accept connections and never answer (a blackhole listener in a process
  of its own), so every read of them costs the connect timeout, like a server
  behind a firewall that drops packets.

Only 127.0.0.1 is ever contacted (the bucket endpoint by the machine's own
host name, which resolves to a loopback address: the API refuses a literal
one; the operator runs with HEADROOM_ALLOW_INTERNAL_ENDPOINTS for it).

For each N, on a fresh bench cluster (its own state dir and ports, movable
with HEADROOM_BENCH_CLUSTER_DIR and HEADROOM_BENCH_*_PORT; kwok nodes enough
for the pods, an audit log of the operator's ServiceAccount):

- **floor**: N namespaces, each with its app Deployment and Secrets; the
  children Headroom would render, applied in bulk with ``kubectl apply
  --server-side``, timed until every Deployment and StatefulSet among them has
  rolled out; then removed.
- **P1**: N fresh namespaces (app and Secrets pre-created), the operator
  started (webhook on, leader election on, as its ServiceAccount), N profiles
  created; timed until every profile is ``Ready=True``. Meanwhile valid
  profiles are sent as dry-run creates, so admission is measured under load.
  Ratio = P1 / floor, both measured in the same run (the machine is shared:
  the load average of each phase is recorded).
- **admission**: refused creates, and create latency as the client sees it
  (p50/p99, dry-run creates during convergence), plus the API server's own
  webhook histogram.
- **P2**: two resync periods after convergence: the operator's requests from
  the audit log (writes split into children/status/events vs. its Lease),
  reads per minute, CPU (% of one core) and the peak total RSS (and PSS) of
  every operator process: the operator, its admission webhook process and the
  multiprocessing resource tracker.
- **P3**: 20 single spec changes of ``spec.autoscaling.cpuUtilization`` until
  the app's HPA shows them (spec -> child) and until the profile reports
  ``Ready=True`` for that generation (spec -> Ready), p50/p99; 20 pooler
  parameter changes until the pooler's ConfigMap shows them (that one rolls
  the pooler, so its Ready waits for the rollout); a burst of 50 changes.

Writes Markdown to --out. Needs the control-plane binaries (make binaries).

    .venv/bin/python bench/scale_bench.py [--sizes 50,100] [--slow-sizes 500] [--out ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import datetime
import json
import math
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "operator") not in sys.path:
    sys.path.insert(0, str(REPO / "operator"))

from headroom import yamlfmt  # noqa: E402
from headroom.api import v1alpha1  # noqa: E402
from headroom.builders import desired  # noqa: E402
from headroom.kube import apiserver, kinds, kubeconfig  # noqa: E402
from headroom.planning import credentials, object_storage, planner  # noqa: E402
from headroom.reconcile import inputs, watches  # noqa: E402

DEFAULT_OUT = REPO / "bench" / "results" / "scale.md"
CACHE = Path(os.environ.get("HEADROOM_CACHE", Path.home() / ".cache" / "headroom"))
# The bench cluster's state dir and ports; HEADROOM_BENCH_CLUSTER_DIR and
# HEADROOM_BENCH_<COMPONENT>_PORT (e.g. HEADROOM_BENCH_APISERVER_PORT) move them,
# so two benches (or a bench and someone's own cluster) can run side by side.
CLUSTER_DIR = Path(os.environ.get("HEADROOM_BENCH_CLUSTER_DIR") or CACHE / "bench-cluster")
SA_USER = "system:serviceaccount:headroom-system:headroom"
PORTS = {
    key: os.environ.get(key.replace("HEADROOM_", "HEADROOM_BENCH_", 1), default)
    for key, default in (
        ("HEADROOM_ETCD_CLIENT_PORT", "23890"),
        ("HEADROOM_ETCD_PEER_PORT", "23900"),
        ("HEADROOM_APISERVER_PORT", "16543"),
        ("HEADROOM_KCM_PORT", "20357"),
        ("HEADROOM_SCHEDULER_PORT", "20359"),
    )
}
RESYNC_SECONDS = 60
PODS_PER_NODE = 400
PODS_PER_PROFILE = 10  # app 2, pooler 2, read pooler 2, Redis 2, room for workers
MONITORING_CRDS = sorted(
    (REPO.parent / "shared" / "fixtures" / "crds").glob("monitoring.coreos.com_*.yaml")
)
S3_KEYS = {"AWS_ACCESS_KEY_ID": "BENCHKEY0000", "AWS_SECRET_ACCESS_KEY": "bench-only-secret"}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
PROFILE = yaml.safe_load((REPO / "examples" / "shop-scaled.yaml").read_text())
APP_LABELS = {"app": "shop-web"}
NAMESPACE = kinds.Resource("v1", "Namespace", "namespaces", namespaced=False)
VOLUME = kinds.Resource("v1", "PersistentVolume", "persistentvolumes", namespaced=False)


def log(message: str) -> None:
    print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def loadavg() -> float:
    """The machine's 1-minute load average (other engineers share it)."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


# -- cluster --------------------------------------------------------------------


class Cluster:
    def __init__(self, *, nodes: int) -> None:
        self.env = {
            **os.environ,
            **PORTS,
            "CLUSTER_DIR": str(CLUSTER_DIR),
            "HEADROOM_KWOK_NODES": str(nodes),
            "HEADROOM_AUDIT_USER": SA_USER,
        }
        self.env.pop("KUBECONFIG", None)
        self.kubeconfig = ""
        self.kubectl_bin = ""

    def script(self, *args: str) -> str:
        proc = subprocess.run(
            [str(REPO / "hack" / args[0]), *args[1:]],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
        return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""

    def up(self) -> None:
        self.script("cluster.sh", "down")
        self.kubeconfig = self.script("cluster.sh", "up")
        self.kubectl_bin = str(Path(self.script("build-binaries.sh")) / "kubectl")

    def down(self) -> None:
        self.script("cluster.sh", "down")

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        proc = subprocess.run(
            [self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=3600,
        )
        if check and proc.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args[:3])} failed: {proc.stderr[-2000:]}")
        return proc.stdout

    def wait_established(self, crds: list[str]) -> None:
        deadline = time.monotonic() + 120
        for crd in crds:
            while True:
                found = self.kubectl(
                    "get", f"crd/{crd}", "-o",
                    "jsonpath={.status.conditions[?(@.type=='Established')].status}",
                    check=False,
                )  # fmt: skip
                if found.strip() == "True":
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"CRD {crd} not Established after 120 s")
                time.sleep(0.5)

    @property
    def audit_log(self) -> Path:
        return CLUSTER_DIR / "logs" / "audit.log"

    def sa_kubeconfig(self, workdir: Path) -> Path:
        token = self.kubectl(
            "create", "token", "headroom", "-n", "headroom-system", "--duration=12h"
        ).strip()
        admin = yaml.safe_load(Path(self.kubeconfig).read_text())
        cluster = admin["clusters"][0]
        path = workdir / "headroom-sa.kubeconfig"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [cluster],
                    "users": [{"name": "headroom", "user": {"token": token}}],
                    "contexts": [
                        {"name": "h", "context": {"cluster": cluster["name"], "user": "headroom"}}
                    ],
                    "current-context": "h",
                }
            )
        )
        path.chmod(0o600)
        return path


# -- objects ----------------------------------------------------------------------


@dataclass(frozen=True)
class Servers:
    """Where each profile's primary, replicas and bucket endpoint are: ports
    on 127.0.0.1 (one primary and one replica port per profile, the bucket
    endpoint shared). ``slow``: the replica and bucket ports are a blackhole
    listener's; otherwise nothing listens on any of them."""

    slow: bool
    primary_ports: tuple[int, ...]
    replica_ports: tuple[int, ...]
    bucket_port: int
    loopback_name: str  # a name of this machine that resolves to a loopback address

    @property
    def scenario(self) -> str:
        return "slow" if self.slow else "full"


def loopback_name() -> str:
    """This machine's own name, when it resolves to a loopback address (the
    API refuses a literal 127.0.0.1 or localhost as an S3 endpoint)."""
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError as err:
        raise SystemExit(f"the host name {name} does not resolve ({err})") from None
    if not address.startswith("127."):
        raise SystemExit(f"the host name {name} resolves to {address}, not a loopback address")
    return name


def free_ports(count: int, *, start: int) -> tuple[int, ...]:
    """``count`` ports from ``start`` on that nobody listens on now."""
    found: list[int] = []
    port = start
    while len(found) < count:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                found.append(port)
            except OSError:
                pass
        port += 1
    return tuple(found)


def servers_for(n: int, *, slow: bool) -> Servers:
    ports = free_ports(2 * n + 2, start=41000)
    return Servers(
        slow=slow,
        primary_ports=ports[:n],
        replica_ports=ports[n : 2 * n],
        bucket_port=ports[2 * n],
        loopback_name=loopback_name(),
    )


def blackhole(ports: list[int]) -> None:
    """Accept connections on ``ports`` (127.0.0.1) and never answer; close each
    when its client gives up (``--blackhole``, in a process of its own)."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(4096):
                pass
        writer.close()

    async def serve() -> None:
        listeners = [
            await asyncio.start_server(hold, "127.0.0.1", port, backlog=1024) for port in ports
        ]
        print("listening", flush=True)
        await asyncio.gather(*(srv.serve_forever() for srv in listeners))

    asyncio.run(serve())


def start_blackhole(ports: list[int]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--blackhole", ",".join(map(str, ports))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "listening":
        raise SystemExit("the blackhole listener did not start")
    return proc


def tenant_objects(namespace: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": namespace,
                "labels": {"pod-security.kubernetes.io/enforce": "restricted", "bench": "scale"},
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "shop-web", "namespace": namespace},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": APP_LABELS},
                "template": {
                    "metadata": {"labels": APP_LABELS},
                    "spec": {
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": "web",
                                "image": "registry.example/shop-web:1.0",
                                "resources": {"requests": {"cpu": "100m"}},
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "shop-db", "namespace": namespace},
            "stringData": {"username": "shop", "password": "bench-only-password"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "shop-s3", "namespace": namespace},
            "stringData": S3_KEYS,
        },
        # the jobs Redis keeps its data on a PVC; there is no provisioner here,
        # so each namespace gets a volume bound to that claim ahead of time
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"{namespace}-redis-jobs", "labels": {"bench": "scale"}},
            "spec": {
                "capacity": {"storage": "2Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": "/tmp/headroom-bench"},
                "claimRef": {"namespace": namespace, "name": "data-shop-redis-jobs-0"},
            },
        },
    ]


def profile(namespace: str, *, index: int, servers: Servers) -> dict[str, Any]:
    """The full-stack profile of tenant ``index``: its own primary and replicas."""
    body = copy.deepcopy(PROFILE)
    body["metadata"]["namespace"] = namespace
    database = body["spec"]["database"]
    database.update(host="127.0.0.1", port=servers.primary_ports[index])
    replica_port = servers.replica_ports[index]
    database["readReplicas"] = {
        "mode": "external",
        # two names of this machine: the replicas' hosts must differ
        "hosts": [
            {"host": "127.0.0.1", "port": replica_port},
            {"host": servers.loopback_name, "port": replica_port},
        ],
    }
    body["spec"]["storage"] = {
        "buckets": [
            {
                "name": "files",
                "s3": {
                    "endpoint": f"http://{servers.loopback_name}:{servers.bucket_port}",
                    "region": "auto",
                    "bucketName": f"shop-files-{index}",
                    "credentialsSecret": {"name": "shop-s3"},
                },
            }
        ]
    }
    return body


def rendered_children(namespace: str, *, index: int, servers: Servers) -> list[dict[str, Any]]:
    """What Headroom would apply for the profile in ``namespace`` (no owner)."""
    parsed = v1alpha1.parse_profile(profile(namespace, index=index, servers=servers))
    planned = planner.plan(parsed, facts=planner.Facts(keda=False, prometheus_operator=True))
    bucket = planned.buckets[0]
    creds = credentials.assemble(
        planned,
        login=credentials.Login(username="shop", password="bench-only-password", revision="1"),
        kept=lambda name, key: None,
        new=inputs.new,
        buckets={bucket.name: object_storage.credentials_from(bucket, S3_KEYS, secret="shop-s3")},
    )
    objs = desired.build(planned, creds, app_pod_selector={"matchLabels": APP_LABELS})
    return list(objs.values())


# -- the driver's own API access (as admin) -----------------------------------------


class Driver:
    def __init__(self, kubeconfig_path: str) -> None:
        self.kube = apiserver.Kube(
            kubeconfig.from_kubeconfig(Path(kubeconfig_path)), timeout_seconds=60
        )
        self.kube.register(NAMESPACE)
        self.kube.register(VOLUME)
        self.kube.register(watches.PROFILE)

    async def close(self) -> None:
        await self.kube.close()

    async def apply_many(self, objects: list[dict[str, Any]], *, concurrency: int = 16) -> None:
        """Namespaces first, then the rest, ``concurrency`` at a time."""
        namespaces = [o for o in objects if o["kind"] == "Namespace"]
        if namespaces and len(namespaces) < len(objects):
            await self.apply_many(namespaces, concurrency=concurrency)
            objects = [o for o in objects if o["kind"] != "Namespace"]
        gate = asyncio.Semaphore(concurrency)

        async def one(obj: dict[str, Any]) -> None:
            async with gate:
                res = self.kube.resource_of(obj)
                meta = obj["metadata"]
                for attempt in range(10):
                    try:
                        await self.kube.request(
                            "PATCH",
                            res.path(namespace=meta.get("namespace"), name=meta["name"]),
                            body=obj,
                            query=[("fieldManager", "bench"), ("force", "true")],
                            content_type="application/apply-patch+yaml",
                        )
                        return
                    except apiserver.errors.KubeError:
                        if attempt == 9:
                            raise
                        await asyncio.sleep(1)

        await asyncio.gather(*(one(o) for o in objects))

    async def workloads_ready(self, namespaces: set[str], *, label: str = "") -> tuple[int, int]:
        ready = total = 0
        for res in (kinds.DEPLOYMENT, kinds.STATEFUL_SET):
            items, _ = await self.kube.list(res, label_selector=label)
            for item in items:
                if item["metadata"]["namespace"] not in namespaces:
                    continue
                total += 1
                st = item.get("status") or {}
                want = int((item.get("spec") or {}).get("replicas", 1))
                if (
                    int(st.get("observedGeneration") or 0) >= int(item["metadata"]["generation"])
                    and int(st.get("readyReplicas") or 0) == want
                    and int(st.get("updatedReplicas") or 0) == want
                    and int(st.get("replicas") or 0) == want
                ):
                    ready += 1
        return ready, total

    async def wait_workloads(self, namespaces: set[str], *, expected: int, label: str = "") -> None:
        while True:
            ready, total = await self.workloads_ready(namespaces, label=label)
            if total >= expected and ready == total:
                return
            await asyncio.sleep(1)

    async def profiles_ready(self) -> tuple[int, int]:
        items, _ = await self.kube.list(watches.PROFILE)
        ready = sum(
            1
            for i in items
            if any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (i.get("status") or {}).get("conditions") or []
            )
        )
        return ready, len(items)

    async def create_profile(
        self, body: dict[str, Any], *, dry_run: bool = False
    ) -> tuple[float, int]:
        res = watches.PROFILE
        started = time.perf_counter()
        try:
            await self.kube.request(
                "POST",
                res.path(namespace=body["metadata"]["namespace"]),
                body=body,
                query=[("dryRun", "All")] if dry_run else None,
            )
            code = 201
        except apiserver.errors.ApiError as err:
            code = err.status
        except apiserver.errors.UnavailableError:
            code = 0
        return time.perf_counter() - started, code

    async def patch_profile(self, namespace: str, spec: dict[str, Any]) -> int:
        """Merge ``spec`` into the profile's; its new generation."""
        found = await self.kube.request(
            "PATCH",
            watches.PROFILE.path(namespace=namespace, name="shop"),
            body={"spec": spec},
            content_type="application/merge-patch+json",
        )
        return int(found["metadata"]["generation"])

    async def webhook_histogram(self) -> dict[float, float]:
        """The API server's own histogram of our webhook's CREATE reviews
        (bucket upper bound -> cumulative count)."""
        text = await self._metrics()
        buckets: dict[float, float] = {}
        for line in text.splitlines():
            if line.startswith(
                "apiserver_admission_webhook_admission_duration_seconds_bucket"
            ) and ('name="scalingprofile.headroom.dev"' in line and 'operation="CREATE"' in line):
                le = line.split('le="')[1].split('"')[0]
                bound = math.inf if le == "+Inf" else float(le)
                buckets[bound] = buckets.get(bound, 0) + float(line.rsplit(" ", 1)[1])
        return buckets

    async def create_configmap(self, namespace: str, i: int) -> float:
        """A dry-run create of a ConfigMap: the same API server path without a webhook."""
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"probe-{i}"}}
        started = time.perf_counter()
        with contextlib.suppress(apiserver.errors.KubeError):
            await self.kube.request(
                "POST", kinds.CONFIG_MAP.path(namespace=namespace), body=body,
                query=[("dryRun", "All")],
            )  # fmt: skip
        return time.perf_counter() - started

    async def _metrics(self) -> str:
        session, _ = self.kube._sessions()  # the driver reads /metrics as admin
        async with session.get(self.kube.cfg.server + "/metrics") as response:
            return await response.text()


# -- the operator under test -----------------------------------------------------------


@dataclass
class Operator:
    proc: subprocess.Popen[bytes]
    metrics_url: str
    log_path: Path

    def pids(self) -> list[int]:
        """The operator and every process under it (the admission webhook's
        process, multiprocessing's resource tracker)."""
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        found = [self.proc.pid]
        for pid in found:
            found += [child for child, parent in parents.items() if parent == pid]
        return found

    def cpu_seconds(self) -> float:
        """CPU time of every operator process so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks
        return total

    def memory_mb(self) -> tuple[float, float, int]:
        """Total RSS and PSS (shared pages counted once) of every operator
        process, in MB, and how many processes."""
        rss = pss = 0
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        return rss / 1024, pss / 1024, len(pids)

    def metric(self, name: str) -> float:
        import urllib.request

        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:  # noqa: S310 - loopback
            for line in resp.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_operator(cluster: Cluster, workdir: Path) -> Operator:
    metrics_port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.sa_kubeconfig(workdir)),
        "HEADROOM_WEBHOOK_ADDR": "127.0.0.1",
        "HEADROOM_WEBHOOK_PORT": str(free_port()),
        "HEADROOM_WEBHOOK_CERT_DIR": str(workdir / "certs"),
        "HEADROOM_METRICS_ADDR": "127.0.0.1",
        "HEADROOM_METRICS_PORT": str(metrics_port),
        "HEADROOM_HEALTH_ADDR": "127.0.0.1",
        "HEADROOM_HEALTH_PORT": str(free_port()),
        "HEADROOM_RESYNC_SECONDS": str(RESYNC_SECONDS),
        "HEADROOM_IDENTITY": "bench",
        # the replicas' and buckets' servers are on 127.0.0.1 here
        "HEADROOM_ALLOW_INTERNAL_ENDPOINTS": "true",
    }
    log_path = workdir / "operator.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "headroom.cli", "run"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    op = Operator(proc, f"http://127.0.0.1:{metrics_port}/metrics", log_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("operator exited:\n" + log_path.read_text()[-3000:])
        out = cluster.kubectl(
            "get", "validatingwebhookconfiguration", "headroom.dev", "-o", "name", check=False
        )
        if out.strip():
            with contextlib.suppress(Exception):
                if op.metric("headroom_leader") == 1:
                    return op
        time.sleep(0.5)
    raise SystemExit("the operator did not register its webhook in 120 s")


# -- one run -----------------------------------------------------------------------------


@dataclass
class Run:
    n: int
    scenario: str
    nodes: int
    children: int
    kinds: int
    floor_s: float = 0.0
    floor_load: tuple[float, float] = (0.0, 0.0)  # load average when it started, ended
    p1_load: tuple[float, float] = (0.0, 0.0)
    p1_s: float = 0.0
    refused: int = 0
    create_p50_ms: float = 0.0
    create_p99_ms: float = 0.0
    dry_p50_ms: float = 0.0
    dry_p99_ms: float = 0.0
    dry_refused: int = 0
    dry_count: int = 0
    baseline_p50_ms: float = 0.0
    baseline_p99_ms: float = 0.0
    apiserver_webhook_p99: str = ""
    admission_inside_p99_ms: float = 0.0
    p2_minutes: float = 0.0
    p2_writes: dict[str, int] = field(default_factory=dict)
    p2_lease_writes: int = 0
    p2_reads_per_min: float = 0.0
    p2_reads: dict[str, int] = field(default_factory=dict)
    p2_cpu_pct: float = 0.0
    p2_rss_mb: float = 0.0
    p2_pss_mb: float = 0.0
    p2_processes: int = 0
    convergence_requests: dict[str, int] = field(default_factory=dict)
    p3_child: list[float] = field(default_factory=list)  # spec -> the app's HPA
    p3_ready: list[float] = field(default_factory=list)  # spec -> Ready for its generation
    p3_single: list[float] = field(default_factory=list)  # pooler parameter -> ConfigMap
    p3_burst_s: float = 0.0
    p3_burst_n: int = 0
    p3_load: tuple[float, float] = (0.0, 0.0)

    @property
    def steady_writes(self) -> int:
        return sum(self.p2_writes.values())

    @property
    def ratio(self) -> float:
        return self.p1_s / self.floor_s if self.floor_s else float("nan")


def audit_counts(path: Path, *, start: int, end: int | None = None) -> tuple[dict[str, int], int]:
    """Request counts by "verb resource" in the audit log between byte offsets."""
    counts: dict[str, int] = {}
    with path.open("rb") as handle:
        handle.seek(start)
        data = handle.read() if end is None else handle.read(end - start)
    for line in data.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if (event.get("user") or {}).get("username") != SA_USER:
            continue
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", "?") + (
            f"/{ref['subresource']}" if ref.get("subresource") else ""
        )
        key = f"{event.get('verb')} {resource}"
        counts[key] = counts.get(key, 0) + 1
    return counts, start + len(data)


async def run_once(n: int, *, slow: bool, workdir: Path) -> Run:
    servers = servers_for(n, slow=slow)
    one = rendered_children("x", index=0, servers=servers)
    nodes = max(2, math.ceil(n * PODS_PER_PROFILE / PODS_PER_NODE))
    result = Run(
        n=n,
        scenario=servers.scenario,
        nodes=nodes,
        children=len(one),
        kinds=len({o["kind"] for o in one}),
    )
    name = f"N={n} {servers.scenario}"
    cluster = Cluster(nodes=nodes)
    log(f"{name}: fresh cluster with {nodes} kwok nodes")
    cluster.up()
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster.kubectl("apply", "--server-side", *(f"-f{crd}" for crd in MONITORING_CRDS))
    cluster.wait_established(
        [f"{c.stem.split('_', 1)[1]}.{c.stem.split('_', 1)[0]}" for c in MONITORING_CRDS]
    )
    cluster.kubectl(
        "apply", "--server-side", "-f", str(REPO / "manifests" / "namespace.yaml"),
        "-f", str(REPO / "manifests" / "rbac.yaml"),
    )  # fmt: skip
    listener = (
        start_blackhole([*servers.replica_ports, servers.bucket_port]) if servers.slow else None
    )
    driver = Driver(cluster.kubeconfig)
    try:
        # -- floor ----------------------------------------------------------------
        floor_ns = {f"floor-{i}" for i in range(n)}
        await driver.apply_many([o for ns in sorted(floor_ns) for o in tenant_objects(ns)])
        await driver.wait_workloads(floor_ns, expected=n)
        bulk = workdir / f"floor-{n}.yaml"
        bulk.write_text(
            yamlfmt.dump_all(
                [
                    o
                    for i in range(n)
                    for o in rendered_children(f"floor-{i}", index=i, servers=servers)
                ]
            )
        )
        workloads = sum(1 for o in one if o["kind"] in ("Deployment", "StatefulSet"))
        log(f"{name}: floor: kubectl apply --server-side of {n * len(one)} objects")
        started, load = time.monotonic(), loadavg()
        cluster.kubectl("apply", "--server-side", "--field-manager=bench", "-f", str(bulk))
        await driver.wait_workloads(
            floor_ns, expected=n * workloads, label="app.kubernetes.io/managed-by=headroom"
        )
        result.floor_s = time.monotonic() - started
        result.floor_load = (load, loadavg())
        log(f"{name}: floor {result.floor_s:.1f}s; removing it")
        cluster.kubectl(
            "delete", "namespace", "-l", "bench=scale", "--wait=true", "--timeout=900s", check=False
        )

        # -- P1 + admission ------------------------------------------------------------
        hr_ns = [f"hr-{i}" for i in range(n)]
        await driver.apply_many([o for ns in hr_ns for o in tenant_objects(ns)])
        await driver.wait_workloads(set(hr_ns), expected=n)
        op = start_operator(cluster, workdir)
        audit_start = cluster.audit_log.stat().st_size
        log(f"{name}: creating {n} profiles")
        started, load = time.monotonic(), loadavg()
        gate = asyncio.Semaphore(8)

        async def create(i: int) -> tuple[float, int]:
            async with gate:
                return await driver.create_profile(profile(hr_ns[i], index=i, servers=servers))

        converged = asyncio.Event()
        dry: list[tuple[float, int]] = []

        baseline: list[float] = []

        async def probe_admission() -> None:
            i = 0
            while not converged.is_set():
                body = profile(hr_ns[i % n], index=i % n, servers=servers)
                body["metadata"]["name"] = f"probe-{i}"
                # servers of its own: beside the namespace's profile on the same ones
                # it would be refused (they would share max_connections)
                database = body["spec"]["database"]
                database["host"] = "probe-db"
                for k, replica in enumerate(database["readReplicas"]["hosts"]):
                    replica["host"] = f"probe-ro-{k}"
                dry.append(await driver.create_profile(body, dry_run=True))
                baseline.append(await driver.create_configmap(hr_ns[i % n], i))
                i += 1
                await asyncio.sleep(0.2)

        histogram_before = await driver.webhook_histogram()

        prober = asyncio.create_task(probe_admission())
        creates = await asyncio.gather(*(create(i) for i in range(n)))
        result.refused = sum(1 for _, code in creates if code != 201)
        latencies = [t for t, _ in creates]
        result.create_p50_ms, result.create_p99_ms = (
            pct(latencies, 0.5) * 1000,
            pct(latencies, 0.99) * 1000,
        )
        last_report = 0.0
        while True:
            ready, total = await driver.profiles_ready()
            if ready == n:
                break
            if time.monotonic() - last_report > 30:
                log(
                    f"{name}: {ready}/{total} Ready after {time.monotonic() - started:.0f}s "
                    f"(load {loadavg():.1f})"
                )
                last_report = time.monotonic()
            if time.monotonic() - started > 3600:
                raise SystemExit(f"{name}: not converged after an hour")
            await asyncio.sleep(1)
        result.p1_s = time.monotonic() - started
        result.p1_load = (load, loadavg())
        converged.set()
        await prober
        result.dry_count = len(dry)
        result.dry_refused = sum(1 for _, code in dry if code != 201)
        dry_times = [t for t, _ in dry]
        result.dry_p50_ms, result.dry_p99_ms = (
            pct(dry_times, 0.5) * 1000,
            pct(dry_times, 0.99) * 1000,
        )
        result.baseline_p50_ms = pct(baseline, 0.5) * 1000
        result.baseline_p99_ms = pct(baseline, 0.99) * 1000
        after = await driver.webhook_histogram()
        delta = {b: after[b] - histogram_before.get(b, 0) for b in after}
        reviews = delta.get(math.inf, 0)
        if reviews:
            under = {b: delta[b] / reviews * 100 for b in (0.025, 0.1) if b in delta}
            result.apiserver_webhook_p99 = f"{int(reviews)} reviews: " + ", ".join(
                f"{share:.0f} % <= {bound * 1000:.0f} ms" for bound, share in under.items()
            )
        log(f"{name}: all Ready in {result.p1_s:.1f}s (ratio {result.ratio:.2f})")

        # -- P2 -------------------------------------------------------------------------
        # Settled: the queue is empty and no write for 30 s (the HPA controller
        # reports on the app's HPA some time after Ready, a real status change).
        offset, quiet_since, settle_start = audit_start, time.monotonic(), time.monotonic()
        conv: dict[str, int] = {}
        while time.monotonic() - quiet_since < 30 and time.monotonic() - settle_start < 600:
            await asyncio.sleep(2)
            fresh, offset = audit_counts(cluster.audit_log, start=offset)
            for k, v in fresh.items():
                conv[k] = conv.get(k, 0) + v
            busy = (
                op.metric("headroom_queue_depth") > 0 or op.metric("headroom_passes_in_flight") > 0
            )
            if busy or any(k.split()[0] in WRITE_VERBS and "leases" not in k for k in fresh):
                quiet_since = time.monotonic()
        result.convergence_requests = conv
        cpu0, t0 = op.cpu_seconds(), time.monotonic()
        rss, pss, result.p2_processes = op.memory_mb()
        window = 2 * RESYNC_SECONDS + 5
        log(f"{name}: steady state for {window}s")
        while time.monotonic() - t0 < window:
            await asyncio.sleep(5)
            now_rss, now_pss, _ = op.memory_mb()
            rss, pss = max(rss, now_rss), max(pss, now_pss)
        elapsed = time.monotonic() - t0
        result.p2_cpu_pct = (op.cpu_seconds() - cpu0) / elapsed * 100
        result.p2_rss_mb, result.p2_pss_mb = rss, pss
        result.p2_minutes = elapsed / 60
        steady, offset = audit_counts(cluster.audit_log, start=offset)
        result.p2_lease_writes = sum(
            v for k, v in steady.items() if k.split()[0] in WRITE_VERBS and "leases" in k
        )
        result.p2_writes = {
            k: v for k, v in steady.items() if k.split()[0] in WRITE_VERBS and "leases" not in k
        }
        result.p2_reads = {k: v for k, v in steady.items() if k.split()[0] not in WRITE_VERBS}
        result.p2_reads_per_min = (
            sum(
                v
                for k, v in steady.items()
                if k.split()[0] not in WRITE_VERBS and "leases" not in k
            )
            / result.p2_minutes
        )

        # -- P3 -------------------------------------------------------------------------
        load = loadavg()
        result.p3_child, result.p3_ready = await autoscaling_changes(driver, hr_ns)
        result.p3_single = await spec_changes(driver, hr_ns)
        result.p3_burst_n = min(50, n)
        result.p3_burst_s = await burst(driver, hr_ns[: result.p3_burst_n])
        result.p3_load = (load, loadavg())
        result.admission_inside_p99_ms = admission_inside_p99(op)
        op.stop()
    finally:
        await driver.close()
        if listener is not None:
            listener.terminate()
            listener.wait(timeout=30)
        cluster.down()
    return result


def admission_inside_p99(op: Operator) -> float:
    import urllib.request

    with urllib.request.urlopen(op.metrics_url, timeout=5) as resp:  # noqa: S310 - loopback
        lines = resp.read().decode().splitlines()
    buckets = []
    for line in lines:
        if line.startswith("headroom_admission_duration_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((math.inf if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    if not buckets:
        return float("nan")
    buckets.sort()
    total = buckets[-1][1]
    return next(b for b, c in buckets if c >= 0.99 * total) * 1000


async def _watch_configmaps(driver: Driver, want: dict[str, str], seen: dict[str, float]) -> None:
    """Record when each namespace's pooler ConfigMap first shows ``want[ns]``."""
    version = ""
    while len(seen) < len(want):
        items, version = await driver.kube.list(
            kinds.CONFIG_MAP, label_selector="app.kubernetes.io/component=pooler"
        )
        for item in items:
            _mark(item, want, seen)
        with contextlib.suppress(apiserver.errors.KubeError):
            async for event in driver.kube.watch(
                kinds.CONFIG_MAP,
                namespace=None,
                resource_version=version,
                label_selector="app.kubernetes.io/component=pooler",
                timeout_seconds=120,
            ):
                _mark(event.get("object") or {}, want, seen)
                if len(seen) >= len(want):
                    return


def _mark(item: dict[str, Any], want: dict[str, str], seen: dict[str, float]) -> None:
    ns = (item.get("metadata") or {}).get("namespace")
    if ns in want and ns not in seen:
        ini = (item.get("data") or {}).get("pgbouncer.ini", "")
        if f"server_idle_timeout = {want[ns]}" in ini:
            seen[ns] = time.monotonic()


async def _first(
    driver: Driver,
    res: kinds.Resource,
    *,
    namespace: str,
    name: str,
    shows: Callable[[dict[str, Any]], bool],
    ready: asyncio.Event,
) -> float:
    """When the object first shows what ``shows`` looks for (a watch; ``ready``
    is set once it is open)."""
    items, version = await driver.kube.list(res, namespace=namespace)
    for item in items:
        if item["metadata"]["name"] == name and shows(item):
            ready.set()
            return time.monotonic()
    ready.set()
    async for event in driver.kube.watch(
        res, namespace=namespace, resource_version=version, timeout_seconds=300
    ):
        found = event.get("object") or {}
        if (found.get("metadata") or {}).get("name") == name and shows(found):
            return time.monotonic()
    raise TimeoutError(f"{res.kind} {namespace}/{name} never showed the change")


def _target_utilization(hpa: dict[str, Any]) -> int | None:
    for metric in (hpa.get("spec") or {}).get("metrics") or []:
        found = ((metric.get("resource") or {}).get("target") or {}).get("averageUtilization")
        if found is not None:
            return int(found)
    return None


def _ready_for(generation: int) -> Callable[[dict[str, Any]], bool]:
    def ready(body: dict[str, Any]) -> bool:
        st = body.get("status") or {}
        return int(st.get("observedGeneration") or 0) >= generation and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in st.get("conditions") or []
        )

    return ready


async def autoscaling_changes(
    driver: Driver, namespaces: list[str], count: int = 20
) -> tuple[list[float], list[float]]:
    """``count`` changes of spec.autoscaling.cpuUtilization (no pod rolls):
    seconds until the app's HPA shows it, and until the profile reports
    Ready=True for that generation."""
    to_child, to_ready = [], []
    for i in range(count):
        ns = random.choice(namespaces)
        value = 41 + i
        opened = asyncio.Event()
        child = asyncio.create_task(
            _first(driver, kinds.HPA, namespace=ns, name="shop-app",
                   shows=lambda hpa, v=value: _target_utilization(hpa) == v, ready=opened)
        )  # fmt: skip
        await asyncio.wait_for(opened.wait(), timeout=60)
        started = time.monotonic()
        generation = await driver.patch_profile(ns, {"autoscaling": {"cpuUtilization": value}})
        # (opened after the change: a status already Ready counts from when it is read)
        reported = asyncio.create_task(
            _first(driver, watches.PROFILE, namespace=ns, name="shop",
                   shows=_ready_for(generation), ready=asyncio.Event())
        )  # fmt: skip
        to_child.append(await asyncio.wait_for(child, timeout=300) - started)
        to_ready.append(await asyncio.wait_for(reported, timeout=300) - started)
    return to_child, to_ready


async def spec_changes(driver: Driver, namespaces: list[str], count: int = 20) -> list[float]:
    latencies = []
    for i in range(count):
        ns = random.choice(namespaces)
        value = str(200 + i)
        seen: dict[str, float] = {}
        watcher = asyncio.create_task(_watch_configmaps(driver, {ns: value}, seen))
        await asyncio.sleep(0.3)  # the watch is open
        started = time.monotonic()
        await driver.patch_profile(ns, _pooler_parameter(value))
        await asyncio.wait_for(watcher, timeout=300)
        latencies.append(seen[ns] - started)
    return latencies


def _pooler_parameter(value: str) -> dict[str, Any]:
    return {"pooler": {"parameters": {"server_idle_timeout": value}}}


async def burst(driver: Driver, namespaces: list[str]) -> float:
    want = {ns: "321" for ns in namespaces}
    seen: dict[str, float] = {}
    watcher = asyncio.create_task(_watch_configmaps(driver, want, seen))
    await asyncio.sleep(0.5)
    started = time.monotonic()
    await asyncio.gather(*(driver.patch_profile(ns, _pooler_parameter("321")) for ns in namespaces))
    await asyncio.wait_for(watcher, timeout=600)
    return max(seen.values()) - started


# -- report ------------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def _ms(values: list[float], q: float) -> str:
    return f"{pct(values, q) * 1000:.0f}"


def summarize(runs: list[Run]) -> str:
    def fmt(counts: dict[str, int]) -> str:
        return (
            ", ".join(f"{v} {k}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
            or "none"
        )

    first = runs[0]
    lines = [
        "# Scale benchmark (`make bench-scale`)",
        "",
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on {machine()}.",
        "Everything shares the 2 cores: etcd, kube-apiserver, controller-manager, scheduler,",
        "kwok, the operator, this driver, and whatever else runs on the machine (its load",
        "average is given per phase). Profile: examples/shop-scaled.yaml plus two external read",
        "replicas, an `s3` bucket and the default alerts, prometheus-operator's CRDs installed",
        f"({first.children} children of {first.kinds} kinds per profile), each in its own",
        "namespace with its app Deployment (2 pods) pre-created and servers of its own on",
        "127.0.0.1. Scenario *full*: nothing listens on the servers' ports (they refuse at",
        "once); *slow*: the replicas' and the bucket endpoint's ports accept and never answer",
        "(each read costs its connect timeout). Webhook and leader election on; resync every",
        f"{RESYNC_SECONDS} s. Requests are counted from the API server's audit log (the",
        "operator's ServiceAccount), not from the operator's own counters.",
        "",
        "| N | scenario | floor | Headroom, all Ready | ratio | refused creates | writes in 2 resyncs | spec -> child p99 | spec -> Ready p99 | total RSS (PSS), processes | load (floor / Headroom) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.n} | {r.scenario} | {r.floor_s:.1f} s | {r.p1_s:.1f} s | **{r.ratio:.2f}** | "
            f"{r.refused} | {r.steady_writes} | {_ms(r.p3_child, 0.99)} ms | "
            f"{_ms(r.p3_ready, 0.99)} ms | {r.p2_rss_mb:.0f} MB ({r.p2_pss_mb:.0f} MB), "
            f"{r.p2_processes} | {r.floor_load[0]:.1f}-{r.floor_load[1]:.1f} / "
            f"{r.p1_load[0]:.1f}-{r.p1_load[1]:.1f} |"
        )
    groups: dict[tuple[int, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.n, r.scenario), []).append(r)
    for (n, scenario), group in sorted(groups.items()):
        if len(group) > 1:
            ratios = [g.ratio for g in group]
            lines += [
                "",
                f"N={n} {scenario}, {len(group)} runs: ratio min {min(ratios):.2f} / median "
                f"{statistics.median(ratios):.2f} / max {max(ratios):.2f}",
            ]
    lines += [
        "",
        "## P1: time to all Ready vs. a bulk server-side apply of the same children",
        "",
        "| N | scenario | children | kwok nodes | floor (kubectl apply --server-side + rollout) | Headroom (create -> all Ready) | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.n} | {r.scenario} | {r.n * r.children} | {r.nodes} | {r.floor_s:.1f} s | "
            f"{r.p1_s:.1f} s | {r.ratio:.2f} |"
        )
    lines += [
        "",
        "## Admission during convergence",
        "",
        "| N | scenario | refused creates | create p50 / p99 | dry-run profile creates during convergence (p50 / p99, refused) | same for a ConfigMap (no webhook) | the API server's webhook histogram (during convergence) | inside the webhook p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.n} | {r.scenario} | {r.refused} | {r.create_p50_ms:.0f} / {r.create_p99_ms:.0f} ms | "
            f"{r.dry_count} probes: {r.dry_p50_ms:.0f} / {r.dry_p99_ms:.0f} ms, {r.dry_refused} refused | "
            f"{r.baseline_p50_ms:.0f} / {r.baseline_p99_ms:.0f} ms | "
            f"{r.apiserver_webhook_p99} | <= {r.admission_inside_p99_ms:.1f} ms |"
        )
    lines += [
        "",
        "## P2: steady state, two resync periods after convergence",
        "",
        "| N | scenario | window | writes (children, status, events) | Lease renewals | reads / min | CPU of the operator's processes | their total RSS (PSS) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.n} | {r.scenario} | {r.p2_minutes:.1f} min | {r.steady_writes} ({fmt(r.p2_writes)}) | "
            f"{r.p2_lease_writes} | {r.p2_reads_per_min:.1f} ({fmt(r.p2_reads)}) | "
            f"{r.p2_cpu_pct:.1f} % of a core | {r.p2_rss_mb:.0f} MB ({r.p2_pss_mb:.0f} MB) "
            f"in {r.p2_processes} processes |"
        )
    lines += [
        "",
        "Requests during convergence (create to all Ready, then until 30 s without a write):",
        "",
    ]
    for r in runs:
        total = sum(r.convergence_requests.values())
        lines.append(
            f"- N={r.n} {r.scenario}: {total} requests, {total / r.n:.1f} per profile: "
            f"{fmt(r.convergence_requests)}"
        )
    lines += [
        "",
        "## P3: spec changes in steady state",
        "",
        "`spec.autoscaling.cpuUtilization` (20 changes, one at a time) until the app's HPA shows",
        "it and until the profile reports Ready for its generation; a pooler parameter (20",
        "changes) until the pooler's ConfigMap shows it; a burst of pooler parameter changes",
        "until every ConfigMap shows its own.",
        "",
        "| N | scenario | HPA: spec -> child p50 / p99 | spec -> Ready p50 / p99 | pooler parameter -> ConfigMap p50 / p99 | burst: changes | burst: until all show | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.n} | {r.scenario} | {_ms(r.p3_child, 0.5)} / {_ms(r.p3_child, 0.99)} ms | "
            f"{_ms(r.p3_ready, 0.5)} / {_ms(r.p3_ready, 0.99)} ms | "
            f"{_ms(r.p3_single, 0.5)} / {_ms(r.p3_single, 0.99)} ms | "
            f"{r.p3_burst_n} | {r.p3_burst_s:.2f} s | {r.p3_load[0]:.1f}-{r.p3_load[1]:.1f} |"
        )
    return "\n".join(lines) + "\n"


async def main(args: argparse.Namespace) -> int:
    plan = [(int(n), False) for n in args.sizes.split(",") if n]
    plan += [(int(n), True) for n in args.slow_sizes.split(",") if n]
    runs = []
    with tempfile.TemporaryDirectory(prefix="headroom-bench-") as tmp:
        for i, (n, slow) in enumerate(plan):
            workdir = (args.keep or Path(tmp)) / f"run-{i}"
            workdir.mkdir(parents=True)
            runs.append(await run_once(n, slow=slow, workdir=workdir))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(summarize(runs))  # after every run: a long bench keeps what it has
    print(summarize(runs))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,50,50,100,500", help="full-stack runs")
    parser.add_argument("--slow-sizes", default="500", help="slow-dependency runs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--keep", type=Path, help="keep each run's operator log here")
    parser.add_argument("--blackhole", help=argparse.SUPPRESS)  # ports: the listener's process
    cli = parser.parse_args()
    if cli.blackhole:
        blackhole([int(port) for port in cli.blackhole.split(",")])
        raise SystemExit(0)
    raise SystemExit(asyncio.run(main(cli)))
