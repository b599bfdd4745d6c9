#!/usr/bin/env python3
"""Scale benchmark: N full-stack profiles on one local control plane.

For each N (``--sizes 50,50,50,100,500``), on a fresh bench cluster (its own
state dir and ports, movable with HEADROOM_BENCH_CLUSTER_DIR and
HEADROOM_BENCH_*_PORT; kwok nodes enough for the pods, an audit log of the
operator's ServiceAccount):

- **floor**: N namespaces, each with its app Deployment and credentials
  Secret; the children Headroom would render for examples/shop-scaled.yaml,
  applied in bulk with ``kubectl apply --server-side``, timed until every
  Deployment and StatefulSet among them has rolled out; then removed.
- **P1**: N fresh namespaces (app and Secret pre-created), the operator
  started (webhook on, leader election on, as its ServiceAccount), N profiles
  created; timed until every profile is ``Ready=True``. Meanwhile valid
  profiles are sent as dry-run creates, so admission is measured under load.
  Ratio = P1 / floor.
- **admission**: refused creates, and create latency as the client sees it
  (p50/p99, dry-run creates during convergence), plus the API server's own
  webhook histogram.
- **P2**: two resync periods after convergence: the operator's requests from
  the audit log (writes split into children/status/events vs. its Lease),
  reads per minute, CPU (% of one core) and peak RSS of the operator process.
- **P3**: 20 single spec changes (a pooler parameter) until the profile's
  ConfigMap shows them, p50/p99; a burst of 50 changes until all show.

Writes Markdown to --out. Needs the control-plane binaries (make binaries).

    .venv/bin/python bench/scale_bench.py [--sizes 50,100] [--out bench/results/scale.md]
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
from headroom.planning import credentials, planner  # noqa: E402
from headroom.reconcile import watches  # noqa: E402

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


def profile(namespace: str) -> dict[str, Any]:
    body = copy.deepcopy(PROFILE)
    body["metadata"]["namespace"] = namespace
    # each app its own Postgres (a Service in its namespace): profiles on one
    # server share its max_connections, and 500 shops do not fit in one
    body["spec"]["database"]["host"] = "shop-db"
    return body


def rendered_children(namespace: str) -> list[dict[str, Any]]:
    """What Headroom would apply for the profile in ``namespace`` (no owner)."""
    parsed = v1alpha1.parse_profile(profile(namespace))
    planned = planner.plan(parsed, facts=planner.Facts(keda=False))
    creds = credentials.Credentials(
        username="shop",
        password="bench-only-password",
        stats_password="bench-stats",
        revision="1",
        redis_passwords={r.name: f"bench-password-of-{r.name}" for r in planned.redis},
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

    async def patch_profile(self, namespace: str, value: int) -> None:
        patch = {"spec": {"pooler": {"parameters": {"server_idle_timeout": str(value)}}}}
        await self.kube.request(
            "PATCH",
            watches.PROFILE.path(namespace=namespace, name="shop"),
            body=patch,
            content_type="application/merge-patch+json",
        )

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

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

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
    nodes: int
    children: int
    floor_s: float = 0.0
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
    convergence_requests: dict[str, int] = field(default_factory=dict)
    p3_single: list[float] = field(default_factory=list)
    p3_burst_s: float = 0.0
    p3_burst_n: int = 0

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


async def run_once(n: int, *, workdir: Path) -> Run:
    children = len(rendered_children("x"))
    nodes = max(2, math.ceil(n * 8 / PODS_PER_NODE))
    result = Run(n=n, nodes=nodes, children=children)
    cluster = Cluster(nodes=nodes)
    log(f"N={n}: fresh cluster with {nodes} kwok nodes")
    cluster.up()
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster.kubectl(
        "apply", "--server-side", "-f", str(REPO / "manifests" / "namespace.yaml"),
        "-f", str(REPO / "manifests" / "rbac.yaml"),
    )  # fmt: skip
    driver = Driver(cluster.kubeconfig)
    try:
        # -- floor ----------------------------------------------------------------
        floor_ns = {f"floor-{i}" for i in range(n)}
        await driver.apply_many([o for ns in sorted(floor_ns) for o in tenant_objects(ns)])
        await driver.wait_workloads(floor_ns, expected=n)
        bulk = workdir / f"floor-{n}.yaml"
        bulk.write_text(
            yamlfmt.dump_all([o for ns in sorted(floor_ns) for o in rendered_children(ns)])
        )
        workloads = sum(
            1 for o in rendered_children("x") if o["kind"] in ("Deployment", "StatefulSet")
        )
        log(f"N={n}: floor: kubectl apply --server-side of {n * children} objects")
        started = time.monotonic()
        cluster.kubectl("apply", "--server-side", "--field-manager=bench", "-f", str(bulk))
        await driver.wait_workloads(
            floor_ns, expected=n * workloads, label="app.kubernetes.io/managed-by=headroom"
        )
        result.floor_s = time.monotonic() - started
        log(f"N={n}: floor {result.floor_s:.1f}s; removing it")
        cluster.kubectl(
            "delete", "namespace", "-l", "bench=scale", "--wait=true", "--timeout=900s", check=False
        )

        # -- P1 + admission ------------------------------------------------------------
        hr_ns = [f"hr-{i}" for i in range(n)]
        await driver.apply_many([o for ns in hr_ns for o in tenant_objects(ns)])
        await driver.wait_workloads(set(hr_ns), expected=n)
        op = start_operator(cluster, workdir)
        audit_start = cluster.audit_log.stat().st_size
        log(f"N={n}: creating {n} profiles")
        started = time.monotonic()
        gate = asyncio.Semaphore(8)

        async def create(ns: str) -> tuple[float, int]:
            async with gate:
                return await driver.create_profile(profile(ns))

        converged = asyncio.Event()
        dry: list[tuple[float, int]] = []

        baseline: list[float] = []

        async def probe_admission() -> None:
            i = 0
            while not converged.is_set():
                body = profile(hr_ns[i % n])
                body["metadata"]["name"] = f"probe-{i}"
                # its own Postgres server: beside the namespace's profile on shop-db
                # it would be refused (they would share max_connections)
                body["spec"]["database"]["host"] = "probe-db"
                dry.append(await driver.create_profile(body, dry_run=True))
                baseline.append(await driver.create_configmap(hr_ns[i % n], i))
                i += 1
                await asyncio.sleep(0.2)

        histogram_before = await driver.webhook_histogram()

        prober = asyncio.create_task(probe_admission())
        creates = await asyncio.gather(*(create(ns) for ns in hr_ns))
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
                log(f"N={n}: {ready}/{total} Ready after {time.monotonic() - started:.0f}s")
                last_report = time.monotonic()
            if time.monotonic() - started > 3600:
                raise SystemExit(f"N={n}: not converged after an hour")
            await asyncio.sleep(1)
        result.p1_s = time.monotonic() - started
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
        log(f"N={n}: all Ready in {result.p1_s:.1f}s (ratio {result.ratio:.2f})")

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
        rss = op.rss_mb()
        window = 2 * RESYNC_SECONDS + 5
        log(f"N={n}: steady state for {window}s")
        while time.monotonic() - t0 < window:
            await asyncio.sleep(5)
            rss = max(rss, op.rss_mb())
        elapsed = time.monotonic() - t0
        result.p2_cpu_pct = (op.cpu_seconds() - cpu0) / elapsed * 100
        result.p2_rss_mb = rss
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
        result.p3_single = await spec_changes(driver, hr_ns)
        result.p3_burst_n = min(50, n)
        result.p3_burst_s = await burst(driver, hr_ns[: result.p3_burst_n])
        result.admission_inside_p99_ms = admission_inside_p99(op)
        op.stop()
    finally:
        await driver.close()
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


async def spec_changes(driver: Driver, namespaces: list[str], count: int = 20) -> list[float]:
    latencies = []
    for i in range(count):
        ns = random.choice(namespaces)
        value = str(200 + i)
        seen: dict[str, float] = {}
        watcher = asyncio.create_task(_watch_configmaps(driver, {ns: value}, seen))
        await asyncio.sleep(0.3)  # the watch is open
        started = time.monotonic()
        await driver.patch_profile(ns, int(value))
        await asyncio.wait_for(watcher, timeout=300)
        latencies.append(seen[ns] - started)
    return latencies


async def burst(driver: Driver, namespaces: list[str]) -> float:
    want = {ns: "321" for ns in namespaces}
    seen: dict[str, float] = {}
    watcher = asyncio.create_task(_watch_configmaps(driver, want, seen))
    await asyncio.sleep(0.5)
    started = time.monotonic()
    await asyncio.gather(*(driver.patch_profile(ns, 321) for ns in namespaces))
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


def summarize(runs: list[Run]) -> str:
    def fmt(counts: dict[str, int]) -> str:
        return (
            ", ".join(f"{v} {k}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
            or "none"
        )

    lines = [
        "# Scale benchmark (`make bench-scale`)",
        "",
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on {machine()}.",
        "Everything shares the 2 cores: etcd, kube-apiserver, controller-manager, scheduler,",
        "kwok, the operator and this driver. Profile: examples/shop-scaled.yaml (pooler,",
        "2 Redis, 1 queue with workers, app HPA/PDB; no KEDA), each in its own namespace",
        "with its app Deployment (2 pods) pre-created. Webhook and leader election on;",
        f"resync every {RESYNC_SECONDS} s. Requests are counted from the API server's audit",
        "log (the operator's ServiceAccount), not from the operator's own counters.",
        "",
        "## P1: time to all Ready vs. a bulk server-side apply of the same children",
        "",
        "| N | children | kwok nodes | floor (kubectl apply --server-side + rollout) | Headroom (create -> all Ready) | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.n} | {r.n * r.children} | {r.nodes} | {r.floor_s:.1f} s | {r.p1_s:.1f} s | {r.ratio:.2f} |"
        )
    by_n: dict[int, list[Run]] = {}
    for r in runs:
        by_n.setdefault(r.n, []).append(r)
    for n, group in sorted(by_n.items()):
        if len(group) > 1:
            ratios = [g.ratio for g in group]
            lines.append("")
            lines.append(
                f"N={n}, {len(group)} runs: ratio min {min(ratios):.2f} / median "
                f"{statistics.median(ratios):.2f} / max {max(ratios):.2f}"
            )
    lines += [
        "",
        "## Admission during convergence",
        "",
        "| N | refused creates | create p50 / p99 | dry-run profile creates during convergence (p50 / p99, refused) | same for a ConfigMap (no webhook) | the API server's webhook histogram (during convergence) | inside the webhook p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.n} | {r.refused} | {r.create_p50_ms:.0f} / {r.create_p99_ms:.0f} ms | "
            f"{r.dry_count} probes: {r.dry_p50_ms:.0f} / {r.dry_p99_ms:.0f} ms, {r.dry_refused} refused | "
            f"{r.baseline_p50_ms:.0f} / {r.baseline_p99_ms:.0f} ms | "
            f"{r.apiserver_webhook_p99} | <= {r.admission_inside_p99_ms:.1f} ms |"
        )
    lines += [
        "",
        "## P2: steady state, two resync periods after convergence",
        "",
        "| N | window | writes (children, status, events) | Lease renewals | reads / min | operator CPU | operator RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.n} | {r.p2_minutes:.1f} min | {sum(r.p2_writes.values())} ({fmt(r.p2_writes)}) | "
            f"{r.p2_lease_writes} | {r.p2_reads_per_min:.1f} ({fmt(r.p2_reads)}) | "
            f"{r.p2_cpu_pct:.1f} % of a core | {r.p2_rss_mb:.0f} MB |"
        )
    lines += [
        "",
        "Requests during convergence (create to all Ready, then until 30 s without a write):",
        "",
    ]
    for r in runs:
        total = sum(r.convergence_requests.values())
        lines.append(
            f"- N={r.n}: {total} requests, {total / r.n:.1f} per profile: {fmt(r.convergence_requests)}"
        )
    lines += [
        "",
        "## P3: a spec change until its ConfigMap shows it",
        "",
        "| N | 20 single changes p50 / p99 | burst: changes | burst: until all show |",
        "|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.n} | {pct(r.p3_single, 0.5) * 1000:.0f} / {pct(r.p3_single, 0.99) * 1000:.0f} ms | "
            f"{r.p3_burst_n} | {r.p3_burst_s:.2f} s |"
        )
    return "\n".join(lines) + "\n"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,50,50,100,500")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    runs = []
    with tempfile.TemporaryDirectory(prefix="headroom-bench-") as tmp:
        for i, n in enumerate(sizes):
            workdir = Path(tmp) / f"run-{i}"
            workdir.mkdir()
            runs.append(await run_once(n, workdir=workdir))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(summarize(runs))  # after every run: a long bench keeps what it has
    print(summarize(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
