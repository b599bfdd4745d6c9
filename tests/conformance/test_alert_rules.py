"""Every rule group Headroom renders, in Debian's promtool: `promtool check rules`
accepts each profile's rule file, and `promtool test rules` shows each alert firing
on a breaching series and silent on a healthy one.

The input series are made from the plan's numbers (each pool's warning/critical
share of max_db_connections, the primary's, each Redis maxmemory, the queues'
drain ceiling, the app's thresholds and ceilings), on the two sides of each
threshold, and labelled as the exporters the pods run label them, with the pod,
HPA and key names the rendered objects carry (not the rule text). So a wrong
threshold, metric name, label or name pattern fails here. A rule without a case
below fails too: every new alert needs one.

promtool compares annotations exactly; the annotations' Go templates are checked
by `promtool check rules` and expanded by a real Prometheus in
test_alert_fire.py, so here the rules are tested without them (expressions,
``for:`` and labels untouched).

promtool evaluates every rule of a test file's rule files at every step of every
test, and the query-time baseline's tests step through a day of minutes: so each
test gets a file of its own whose rule file holds its alert name's rules (every
pool's, every instance's: a breach must still fire no other rule of the name) and
any recording rules. No alert reads another's output (ALERTS), which is checked,
so each alert sees what it would in the whole file. promtool runs a file's tests
one after the other, so the files go to a promtool per core.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import prometheus_servers
import pytest
import yaml

# the golden tests' fixed credentials (and builtin S3 keys), so every example renders
from tests.unit import test_golden

from headroom.api import v1alpha1
from headroom.builders import alert_rules, desired, pgbouncer, postgres_metrics
from headroom.planning import database_metrics, monitoring, planner, read_plan

pytestmark = pytest.mark.conformance

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
APP_SELECTOR = {"matchLabels": {"app": "web"}}
CNPG_CLUSTER = read_plan.CnpgCluster(name="shop-pg", instances=3, max_connections=200)
# A Deployment's pods are <name>-<template hash>-<suffix>, a StatefulSet's <name>-<ordinal>.
POD_HASH = "-7c9d5b8f4-x2k4p"
INTERVAL_MINUTES = 1
# promtool processes at once for a profile's cases (each runs its tests one by one)
PROMTOOLS = max(1, min(4, len(os.sched_getaffinity(0))))
# Thresholds away from every default, so that a rule ignoring spec.alerts fails.
CUSTOM_ALERTS = {
    "labels": {"team": "shop"},
    "pooler": {
        "connectionsWarningPercent": 70,
        "connectionsCriticalPercent": 95,
        "maxWaitSeconds": 5,
        "queryTimeBaselineFactor": 2,
        "queryTimeFloorSeconds": 0.2,
        "for": "2m",
    },
    "database": {
        "connectionsWarningPercent": 30,
        "connectionsCriticalPercent": 60,
        "connectionsCriticalCount": 80,
        "slowQuerySeconds": 2.5,
        "queryRatePerSecond": 250,
    },
    "cache": {
        "hitRateMin": 0.95,
        "memoryPercent": 75,
        "severity": "critical",
        "for": "1m",
        "instances": {"cache": {"hitRateMin": 0.6, "memoryPercent": 50}},
    },
    "queues": {"for": "15m"},
    "app": {
        "p95LatencySeconds": 3,
        "errorRatio": 0.02,
        "cpuPercent": 80,
        "memory": "1Gi",
        "metrics": {
            "histogram": "http_request_duration_seconds",
            "statusLabel": "code",
            "routeLabel": "route",
        },
        "routes": [
            {"route": "/checkout", "p95LatencySeconds": 0.5},
            {"prefix": "/api.v2/(beta)/", "p95LatencySeconds": 0.08},
        ],
    },
}


@dataclass
class Rendered:
    plan: planner.Plan
    objects: list[dict[str, Any]]

    @property
    def alerts(self) -> monitoring.AlertsPlan:
        assert self.plan.alerts is not None
        return self.plan.alerts

    def named(self, kind: str, **labels: str) -> list[dict[str, Any]]:
        return [
            o
            for o in self.objects
            if o["kind"] == kind
            and all(o["metadata"].get("labels", {}).get(k) == v for k, v in labels.items())
        ]

    def pooler_pod(self, role: str) -> str:
        component = pgbouncer.COMPONENT if role == "rw" else pgbouncer.READ_COMPONENT
        (deployment,) = self.named("Deployment", **{"app.kubernetes.io/component": component})
        return f"{deployment['metadata']['name']}{POD_HASH}"

    def redis_statefulset(self, instance: str) -> dict[str, Any]:
        found = [
            o
            for o in self.named("StatefulSet", **{"headroom.dev/redis": instance})
            if any(c["name"] == "exporter" for c in _containers(o))
        ]
        (statefulset,) = found
        return statefulset

    def redis_pod(self, instance: str) -> str:
        return f"{self.redis_statefulset(instance)['metadata']['name']}-0"

    def queue_key(self, queue: monitoring.QueueLimits) -> str:
        """The key the rendered redis_exporter is told to export (redis_key_size)."""
        (exporter,) = [
            c for c in _containers(self.redis_statefulset(queue.redis)) if c["name"] == "exporter"
        ]
        env = {e["name"]: e.get("value", "") for e in exporter.get("env", [])}
        keys = [
            pair.split("=", 1)[1] for pair in env["REDIS_EXPORTER_CHECK_SINGLE_KEYS"].split(",")
        ]
        assert queue.list_name in keys, keys
        return queue.list_name

    def hpa_of(self, deployment: str) -> str:
        """The HPA that scales ``deployment``: Headroom's, or KEDA's for a ScaledObject."""
        for obj in self.objects:
            target = obj.get("spec", {}).get("scaleTargetRef", {}).get("name")
            if target != deployment:
                continue
            if obj["kind"] == "HorizontalPodAutoscaler":
                return str(obj["metadata"]["name"])
            if obj["kind"] == "ScaledObject":
                return f"keda-hpa-{obj['metadata']['name']}"  # KEDA's naming
        raise AssertionError(f"nothing scales {deployment}")

    def app_pod(self) -> str:
        return f"{self.plan.app.deployment}{POD_HASH}"

    def server_pod(self, server: str) -> str:
        """A pod whose metrics are the database server's: its exporter's (as the
        rendered Deployment names it), or a CloudNativePG Cluster's instance."""
        limits = self.alerts.database
        assert limits is not None
        if limits.source == database_metrics.CNPG:
            return f"{limits.cnpg_cluster}-2"
        (deployment,) = self.named(
            "Deployment",
            **{"app.kubernetes.io/component": "pg-metrics", postgres_metrics.SERVER_LABEL: server},
        )
        return f"{deployment['metadata']['name']}{POD_HASH}"


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list(obj["spec"]["template"]["spec"]["containers"])


def render(body: dict[str, Any], *, engines: bool) -> Rendered | None:
    body.setdefault("metadata", {})["uid"] = "11111111-2222-3333-4444-555555555555"
    planned = planner.plan(
        v1alpha1.parse_profile(body),
        facts=planner.Facts(
            keda=engines, cnpg=engines, cnpg_cluster=CNPG_CLUSTER if engines else None
        ),
    )
    if not planned.ok or planned.alerts is None:
        return None
    creds = test_golden.fixed_credentials(planned)
    objects = list(desired.build(planned, creds, app_pod_selector=APP_SELECTOR).values())
    return Rendered(planned, objects)


def _profiles() -> Iterator[tuple[str, dict[str, Any], bool]]:
    for example in EXAMPLES:
        for index, body in enumerate(yaml.safe_load_all(example.read_text())):
            text = example.read_text()
            engines = [False] + ([True] if "queues:" in text or "mode: cnpg" in text else [])
            for engine in engines:
                suffix = f"-{index}" if index else ""
                yield f"{example.stem}{suffix}{'-engines' if engine else ''}", body, engine
    for name in ("shop-scaled", "shop-standbys"):
        body = yaml.safe_load((ROOT / "examples" / f"{name}.yaml").read_text())
        body["spec"]["alerts"] = CUSTOM_ALERTS
        if name == "shop-standbys":  # its own settings for the read pooler, a monitoring role
            body["spec"]["alerts"] = {
                **CUSTOM_ALERTS,
                "pooler": {
                    **CUSTOM_ALERTS["pooler"],
                    "read": {
                        "maxWaitSeconds": 0.5,
                        "queryTimeBaselineFactor": 4,
                        "queryTimeFloorSeconds": 0.01,
                    },
                },
                "database": {**CUSTOM_ALERTS["database"], "replicaLagSeconds": 4},
                "cache": {k: v for k, v in CUSTOM_ALERTS["cache"].items() if k != "instances"},
            }
            body["spec"]["database"]["metrics"] = {"credentialsSecret": {"name": "monitor"}}
        yield f"{name}-custom-thresholds", body, False


PROFILES = [
    (case_id, rendered)
    for case_id, body, engines in _profiles()
    if (rendered := render(body, engines=engines)) is not None
]
# the thresholds away from the defaults must plan (a refused one would go untested)
assert {"shop-scaled-custom-thresholds", "shop-standbys-custom-thresholds"} <= {
    case_id for case_id, _ in PROFILES
}


# --- series -----------------------------------------------------------------------


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def series(metric: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{inner}}}", "values": values}


@dataclass
class Case:
    """Input series and the alert's labels beyond the rule's own (None: silent)."""

    what: str
    series: list[dict[str, str]]
    labels: dict[str, str] | None = field(default=None)


@dataclass
class Context:
    rendered: Rendered
    rule: dict[str, Any]
    samples: int  # per series
    history: int = 0  # minutes of series before the rate windows and `for:` (baselines)

    @property
    def ns(self) -> str:
        return self.rendered.plan.namespace

    def gauge(self, metric: str, labels: dict[str, str], value: float) -> dict[str, str]:
        return series(metric, labels, f"{_number(value)}x{self.samples}")

    def counter(self, metric: str, labels: dict[str, str], per_minute: float) -> dict[str, str]:
        step = per_minute * INTERVAL_MINUTES
        return series(metric, labels, f"0+{_number(step)}x{self.samples}")

    def pool(self) -> monitoring.PoolLimits:
        role = self.rule["labels"]["pool"]
        (found,) = [p for p in self.rendered.alerts.pools if p.role == role]
        return found

    def redis(self) -> monitoring.RedisLimits:
        (found,) = [r for r in self.rendered.alerts.redis if r.name == self.rule["labels"]["redis"]]
        return found

    def server(self) -> monitoring.ServerLimits:
        """The database server the rule is about (by its ``server`` label)."""
        limits = self.rendered.alerts.database
        assert limits is not None
        if limits.source == database_metrics.CNPG:
            (found,) = limits.servers
            return found
        (found,) = [s for s in limits.servers if s.name == self.rule["labels"]["server"]]
        return found

    def server_labels(self, server: str | None = None) -> dict[str, str]:
        pod = self.rendered.server_pod(server or self.server().name)
        return {"namespace": self.ns, "pod": pod}

    def queue(self) -> monitoring.QueueLimits:
        (found,) = [
            q for q in self.rendered.alerts.queues if q.name == self.rule["labels"]["queue"]
        ]
        return found


Cases = Callable[[Context], list[Case]]


def _pool_gauge(metric: str, breach: float, healthy: float, *, pools: bool) -> Cases:
    """A per-pod PgBouncer gauge: SHOW POOLS (labels database, user) or SHOW DATABASES
    (name, database, ...), on one pooler pod."""

    def cases(ctx: Context) -> list[Case]:
        pool = ctx.pool()
        pod = ctx.rendered.pooler_pod(pool.role)
        labels = {"namespace": ctx.ns, "pod": pod, "database": pool.database}
        labels |= {"user": "app"} if pools else {"name": pool.database, "pool_mode": "transaction"}
        value = {"breach": breach, "healthy": healthy}
        limits = {"pool": pool, "max_wait": pool.max_wait_seconds}
        return [
            Case(
                "breach",
                [ctx.gauge(metric, labels, _resolve(value["breach"], limits))],
                {"namespace": ctx.ns, "pod": pod},
            ),
            Case("healthy", [ctx.gauge(metric, labels, _resolve(value["healthy"], limits))]),
        ]

    return cases


def _resolve(value: Any, limits: dict[str, Any]) -> float:
    return float(value(limits) if callable(value) else value)


def _down(metric: str, pod_of: Callable[[Context], str]) -> Cases:
    def cases(ctx: Context) -> list[Case]:
        pod = pod_of(ctx)
        labels = {"namespace": ctx.ns, "pod": pod}
        target = labels | {"job": "exporters", "instance": "10.0.0.7:9000"}
        fired = {"namespace": ctx.ns, "pod": pod}
        return [
            Case(
                "exporter reports 0",
                [ctx.gauge(metric, target, 0), ctx.gauge("up", target, 1)],
                fired,
            ),
            Case("scrape fails", [ctx.gauge("up", target, 0)], fired),
            Case("healthy", [ctx.gauge(metric, target, 1), ctx.gauge("up", target, 1)]),
        ]

    return cases


def _primary(level: str) -> Cases:
    """The poolers' server connections summed over two write pooler pods."""

    def cases(ctx: Context) -> list[Case]:
        threshold = getattr(ctx.rendered.alerts.primary, level)
        (pool,) = [p for p in ctx.rendered.alerts.pools if p.role == "rw"]
        base = ctx.rendered.pooler_pod("rw")[: -len(POD_HASH)]
        pods = [f"{base}{POD_HASH}", f"{base}-7c9d5b8f4-q8w2n"]

        def split(total: int) -> list[dict[str, str]]:
            first = total // 2
            return [
                ctx.gauge(
                    "pgbouncer_databases_current_connections",
                    {
                        "namespace": ctx.ns,
                        "pod": pod,
                        "name": pool.database,
                        "database": pool.database,
                    },
                    share,
                )
                for pod, share in zip(pods, (first, total - first), strict=True)
            ]

        return [
            Case("breach", split(threshold), {"namespace": ctx.ns}),
            Case("healthy", split(threshold - 1)),
        ]

    return cases


def _redis_memory(ctx: Context) -> list[Case]:
    inst = ctx.redis()
    pod = ctx.rendered.redis_pod(inst.name)
    labels = {"namespace": ctx.ns, "pod": pod}
    return [
        Case(
            "breach",
            [ctx.gauge("redis_memory_used_bytes", labels, inst.memory_warning_bytes)],
            {"namespace": ctx.ns, "pod": pod},
        ),
        Case(
            "healthy", [ctx.gauge("redis_memory_used_bytes", labels, inst.memory_warning_bytes - 1)]
        ),
    ]


def _evicting(ctx: Context) -> list[Case]:
    inst = ctx.redis()
    labels = {"namespace": ctx.ns, "pod": ctx.rendered.redis_pod(inst.name)}
    return [
        Case(
            "breach", [ctx.counter("redis_evicted_keys_total", labels, 10)], {"namespace": ctx.ns}
        ),
        Case("healthy", [ctx.counter("redis_evicted_keys_total", labels, 0)]),
    ]


def _hit_rate(ctx: Context) -> list[Case]:
    target = ctx.redis().hit_rate_min
    labels = {"namespace": ctx.ns, "pod": ctx.rendered.redis_pod(ctx.redis().name)}
    lookups = 10_000  # per minute; one percent of the target either side
    margin = max(1, math.ceil(target * lookups / 100))

    def lookups_with(hits: int) -> list[dict[str, str]]:
        return [
            ctx.counter("redis_keyspace_hits_total", labels, hits),
            ctx.counter("redis_keyspace_misses_total", labels, lookups - hits),
        ]

    below = max(0, math.floor(target * lookups) - margin)
    above = min(lookups, math.ceil(target * lookups) + margin)
    return [
        Case("breach", lookups_with(below), {"namespace": ctx.ns}),
        Case("healthy", lookups_with(above)),
    ]


def _backlog(ctx: Context) -> list[Case]:
    queue = ctx.queue()
    key = ctx.rendered.queue_key(queue)
    labels = {
        "namespace": ctx.ns,
        "pod": ctx.rendered.redis_pod(queue.redis),
        "db": "db0",
        "key": key,
    }
    return [
        Case(
            "breach",
            [ctx.gauge("redis_key_size", labels, queue.drain_ceiling + 1)],
            {"namespace": ctx.ns, "key": key},
        ),
        Case("healthy", [ctx.gauge("redis_key_size", labels, queue.drain_ceiling)]),
    ]


def _at_max(hpa_of: Callable[[Context], tuple[str, int]]) -> Cases:
    def cases(ctx: Context) -> list[Case]:
        hpa, ceiling = hpa_of(ctx)
        labels = {"namespace": ctx.ns, "horizontalpodautoscaler": hpa, "job": "kube-state-metrics"}

        def replicas_now(current: int) -> list[dict[str, str]]:
            return [
                ctx.gauge("kube_horizontalpodautoscaler_status_current_replicas", labels, current),
                ctx.gauge("kube_horizontalpodautoscaler_spec_max_replicas", labels, ceiling),
            ]

        return [
            Case(
                "breach",
                replicas_now(ceiling),
                {"namespace": ctx.ns, "horizontalpodautoscaler": hpa},
            ),
            Case("healthy", replicas_now(ceiling - 1)),
        ]

    return cases


def _workers_hpa(ctx: Context) -> tuple[str, int]:
    queue = ctx.queue()
    (deployment,) = [
        o["metadata"]["name"]
        for o in ctx.rendered.named("Deployment")
        if o["metadata"]["name"].endswith(f"-worker-{queue.name}")
    ]
    return ctx.rendered.hpa_of(deployment), queue.max_replicas


def _app_hpa(ctx: Context) -> tuple[str, int]:
    return ctx.rendered.hpa_of(
        ctx.rendered.plan.app.deployment
    ), ctx.rendered.alerts.app.max_replicas


def _app_metrics(ctx: Context) -> v1alpha1.AppMetrics:
    metrics = ctx.rendered.alerts.settings.app.metrics
    assert metrics is not None
    return metrics


def _latency(ctx: Context) -> list[Case]:
    limit = ctx.rendered.alerts.settings.app.p95_latency_seconds
    metrics = _app_metrics(ctx)
    labels = {"namespace": ctx.ns, "pod": ctx.rendered.app_pod(), metrics.status_label: "200"}
    # buckets 5% either side of the limit: the p95 lands within 5% of it
    bounds = [0.95 * limit, limit, 1.05 * limit]

    def requests_in(upper: float) -> list[dict[str, str]]:
        """60 requests a minute, every one in the bucket up to ``upper``: the p95 is
        interpolated inside that bucket."""
        out = []
        for le in [*bounds, math.inf]:
            count = 60 if le >= upper else 0
            name = "+Inf" if le == math.inf else f"{le:g}"
            out.append(ctx.counter(f"{metrics.histogram}_bucket", labels | {"le": name}, count))
        return out

    return [
        Case("breach", requests_in(1.05 * limit), {"namespace": ctx.ns}),  # p95 1.0475 x limit
        Case("healthy", requests_in(limit)),  # p95 0.9975 x limit
    ]


def _errors(ctx: Context) -> list[Case]:
    ratio = ctx.rendered.alerts.settings.app.error_ratio
    metrics = _app_metrics(ctx)
    total = 1_000_000  # requests a minute; one percent of the target either side
    margin = max(1, math.ceil(ratio * total / 100))
    pod = ctx.rendered.app_pod()

    def failing(count: int) -> list[dict[str, str]]:
        base = {"namespace": ctx.ns, "pod": pod}
        return [
            ctx.counter(f"{metrics.histogram}_count", base | {metrics.status_label: "503"}, count),
            ctx.counter(
                f"{metrics.histogram}_count", base | {metrics.status_label: "200"}, total - count
            ),
        ]

    return [
        Case(
            "breach", failing(min(total, math.ceil(ratio * total) + margin)), {"namespace": ctx.ns}
        ),
        Case("healthy", failing(max(0, math.floor(ratio * total) - margin))),
    ]


def _cpu(ctx: Context) -> list[Case]:
    percent = ctx.rendered.alerts.settings.app.cpu_percent
    request = 0.5  # cores
    pod = ctx.rendered.app_pod()
    container = {"namespace": ctx.ns, "pod": pod, "container": "app"}

    def using(share_percent: float) -> list[dict[str, str]]:
        cores = request * share_percent / 100
        return [
            ctx.counter("container_cpu_usage_seconds_total", container, cores * 60),
            # the pod's own cgroup (container="") and the pause container are not the app's
            ctx.counter("container_cpu_usage_seconds_total", container | {"container": ""}, 600),
            ctx.counter("container_cpu_usage_seconds_total", container | {"container": "POD"}, 600),
            ctx.gauge(
                "kube_pod_container_resource_requests",
                container | {"resource": "cpu", "unit": "core"},
                request,
            ),
        ]

    return [
        Case("breach", using(percent * 1.02), {"namespace": ctx.ns}),
        Case("healthy", using(percent * 0.98)),
    ]


def _memory(ctx: Context) -> list[Case]:
    limit = ctx.rendered.alerts.app.memory_bytes
    pod = ctx.rendered.app_pod()
    base = {"namespace": ctx.ns, "pod": pod}

    def working_set(total: int) -> list[dict[str, str]]:
        first = total // 2
        return [
            ctx.gauge("container_memory_working_set_bytes", base | {"container": "app"}, first),
            ctx.gauge(
                "container_memory_working_set_bytes", base | {"container": "sidecar"}, total - first
            ),
            ctx.gauge("container_memory_working_set_bytes", base | {"container": ""}, 4 * limit),
        ]

    return [
        Case("breach", working_set(limit + 1), {"namespace": ctx.ns, "pod": pod}),
        Case("healthy", working_set(limit)),
    ]


def _replica_lag(ctx: Context) -> list[Case]:
    plan = ctx.rendered.plan
    base = {
        "namespace": ctx.ns,
        "profile": plan.name,
        "condition": "ReadReplicasInPool",
        "pod": "headroom-0",
    }

    def verdict(in_pool: bool) -> list[dict[str, str]]:
        return [
            ctx.gauge("headroom_profile_condition", base | {"status": "True"}, int(in_pool)),
            ctx.gauge("headroom_profile_condition", base | {"status": "False"}, int(not in_pool)),
        ]

    return [
        Case("breach", verdict(False), {"namespace": ctx.ns, "profile": plan.name}),
        Case("healthy", verdict(True)),
    ]


def _db(ctx: Context) -> monitoring.DatabaseLimits:
    found = ctx.rendered.alerts.database
    assert found is not None
    return found


def _metric(ctx: Context, what: str) -> str:
    return alert_rules.server_metric(_db(ctx), what)


def _activity(ctx: Context, extra: dict[str, str]) -> dict[str, str]:
    """A pg_stat_activity group as the exporter labels it (CNPG's has no
    backend type or wait event)."""
    labels = {"usename": "app", "application_name": "web"} | extra
    if _db(ctx).source == database_metrics.EXPORTER:
        labels |= {"backend_type": "client backend", "wait_event_type": "", "wait_event": ""}
    return labels


def _server_connections(level: str) -> Cases:
    """Every session on the server, split over two databases and two states."""

    def cases(ctx: Context) -> list[Case]:
        server = ctx.server()
        threshold = getattr(server, level)
        base = ctx.server_labels()
        exporter = _db(ctx).source == database_metrics.EXPORTER

        def sessions(total: int) -> list[dict[str, str]]:
            first = total // 2
            if exporter:  # pg_stat_database: one series per database
                return [
                    ctx.gauge(
                        "pg_stat_database_numbackends",
                        base | {"datid": str(16384 + i), "datname": name},
                        count,
                    )
                    for i, (name, count) in enumerate(
                        ((_db(ctx).database, first), ("admin", total - first))
                    )
                ]
            return [
                ctx.gauge(
                    "cnpg_backends_total",
                    base | _activity(ctx, {"datname": _db(ctx).database, "state": state}),
                    count,
                )
                for state, count in (("idle", first), ("active", total - first))
            ]

        return [
            Case("breach", sessions(threshold), {"namespace": ctx.ns, "pod": base["pod"]}),
            Case("healthy", sessions(threshold - 1)),
        ]

    return cases


def _slow_query(ctx: Context) -> list[Case]:
    limits = _db(ctx)
    slow = limits.slow_query_seconds
    base = ctx.server_labels()
    metric = _metric(ctx, "active")
    # never the rule's: a long idle transaction, another database's long query
    noise = [
        ctx.gauge(
            metric,
            base | _activity(ctx, {"datname": limits.database, "state": "idle in transaction"}),
            600,
        ),
        ctx.gauge(metric, base | _activity(ctx, {"datname": "admin", "state": "active"}), 600),
    ]
    if limits.source == database_metrics.EXPORTER:  # an autovacuum worker's long run
        vacuum = _activity(ctx, {"datname": limits.database, "state": "active"})
        noise.append(ctx.gauge(metric, base | vacuum | {"backend_type": "autovacuum worker"}, 600))
    labels = base | _activity(ctx, {"datname": limits.database, "state": "active"})
    return [
        Case("breach", [*noise, ctx.gauge(metric, labels, slow * 1.05)], dict(base)),
        Case("healthy", [*noise, ctx.gauge(metric, labels, slow)]),
    ]


def _slow_statements(ctx: Context) -> list[Case]:
    limits = _db(ctx)
    slow = limits.slow_query_seconds
    base = ctx.server_labels() | {"datname": limits.database, "user": "app", "queryid": "42"}
    calls = 600  # a minute

    def taking(mean: float) -> list[dict[str, str]]:
        return [
            ctx.counter("pg_stat_statements_calls_total", base, calls),
            ctx.counter("pg_stat_statements_seconds_total", base, calls * mean),
        ]

    fired = {"namespace": ctx.ns, "pod": base["pod"], "queryid": "42", "user": "app"}
    return [Case("breach", taking(slow * 1.05), fired), Case("healthy", taking(slow * 0.95))]


def _replica_lag_reported(ctx: Context) -> list[Case]:
    limits = _db(ctx)
    assert limits.replica_lag_seconds is not None
    base = ctx.server_labels()
    metric = _metric(ctx, "lag")
    return [
        Case("breach", [ctx.gauge(metric, base, limits.replica_lag_seconds + 1)], dict(base)),
        Case("healthy", [ctx.gauge(metric, base, limits.replica_lag_seconds)]),
    ]


def _database_down(ctx: Context) -> list[Case]:
    return _down(_metric(ctx, "up"), lambda c: c.server_labels()["pod"])(ctx)


def _query_rate(ctx: Context) -> list[Case]:
    """Transactions over every server of the profile (two of them when it has replicas)."""
    limits = _db(ctx)
    assert limits.query_rate_per_second is not None
    servers = [s.name for s in limits.servers][:2]

    def per_second(rate: float) -> list[dict[str, str]]:
        out = []
        for index, name in enumerate(servers):
            share = rate / len(servers) * 60  # a minute
            labels = ctx.server_labels(name) | {"datname": limits.database}
            if limits.source == database_metrics.EXPORTER:
                labels["datid"] = "16384"
            out.append(ctx.counter(_metric(ctx, "commits"), labels, share * 0.9))
            out.append(ctx.counter(_metric(ctx, "rollbacks"), labels, share * 0.1))
            # another database of the server is not the app's
            other = labels | {"datname": "admin"}
            out.append(ctx.counter(_metric(ctx, "commits"), other, 10 * rate * 60 + index))
        return out

    target = limits.query_rate_per_second
    return [
        Case("breach", per_second(target * 1.02), {"namespace": ctx.ns}),
        Case("healthy", per_second(target * 0.98)),
    ]


def _route_latency(ctx: Context) -> list[Case]:
    """Each route target's p95 on either side of its threshold, at a route the
    target matches (a prefix: a route under it); the rule judges a route by the
    first target that names it."""
    app = ctx.rendered.alerts.settings.app
    metrics = _app_metrics(ctx)
    label = metrics.route_label
    cases = []
    for index, target in enumerate(app.routes):
        route = target.route if target.route is not None else f"{target.prefix}orders/[id]"
        first = next(
            t
            for t in app.routes
            if t.route == route or (t.prefix is not None and route.startswith(t.prefix))
        )
        assert first == target, f"route target {index} is shadowed by an earlier one"
        limit = target.p95_latency_seconds
        base = {"namespace": ctx.ns, "pod": ctx.rendered.app_pod(), label: route}
        bounds = [0.95 * limit, limit, 1.05 * limit]

        def requests_in(
            upper: float, base: dict[str, str] = base, bounds: list[float] = bounds
        ) -> list[dict[str, str]]:
            out = []
            for le in [*bounds, math.inf]:
                count = 60 if le >= upper else 0
                name = "+Inf" if le == math.inf else f"{le:g}"
                out.append(ctx.counter(f"{metrics.histogram}_bucket", base | {"le": name}, count))
            return out

        cases += [
            Case(f"breach {route}", requests_in(1.05 * limit), {"namespace": ctx.ns, label: route}),
            Case(f"healthy {route}", requests_in(limit)),
        ]
    return cases


def _query_time(ctx: Context) -> list[Case]:
    """A day at a usual database time per query, then the rate window and the whole
    `for:` at another: fires only when the rise passes the factor and the floor."""
    pool = ctx.pool()  # its own settings over the group's
    factor, floor = pool.query_time_baseline_factor, pool.query_time_floor_seconds
    pod = ctx.rendered.pooler_pod(pool.role)
    labels = {"namespace": ctx.ns, "pod": pod, "database": pool.database}
    queries = 60  # a minute
    after = ctx.samples - 1  # minutes at the new time per query, up to the evaluation

    def per_query(usual: float, now: float, *, prefix: str = "totals_") -> list[dict[str, str]]:
        """v0.11 and later name the counters pgbouncer_stats_totals_*, v0.10 pgbouncer_stats_*."""
        step, later = usual * queries, now * queries
        reached = step * ctx.history
        return [
            series(
                f"pgbouncer_stats_{prefix}queries_duration_seconds_total",
                labels,
                f"0+{_number(step)}x{ctx.history} "
                f"{_number(reached + later)}+{_number(later)}x{after - 1}",
            ),
            series(
                f"pgbouncer_stats_{prefix}queries_pooled_total",
                labels,
                f"0+{queries}x{ctx.history + after}",
            ),
        ]

    usual = 10 * floor
    # The day's average takes in the rise itself: risen = factor x (usual x history +
    # risen x after) / (history + after) at the threshold; 1.25 x that clears it.
    assert ctx.history + after > factor * after
    risen = 1.25 * factor * usual * ctx.history / (ctx.history + after - factor * after)
    return [
        Case("breach", per_query(usual, risen), {"namespace": ctx.ns}),
        Case("breach, v0.10 names", per_query(usual, risen, prefix=""), {"namespace": ctx.ns}),
        Case("below the factor", per_query(usual, 0.9 * factor * usual)),
        Case("steady", per_query(usual, usual)),
        # far above its baseline, but under the floor: a fast app's noise
        Case("below the floor", per_query(floor / 10, 0.9 * floor)),
    ]


CASES: dict[str, Cases] = {
    "HeadroomPoolerConnectionsHigh": _pool_gauge(
        "pgbouncer_databases_current_connections",
        lambda x: x["pool"].warning,
        lambda x: x["pool"].warning - 1,
        pools=False,
    ),
    "HeadroomPoolerConnectionsCritical": _pool_gauge(
        "pgbouncer_databases_current_connections",
        lambda x: x["pool"].critical,
        lambda x: x["pool"].critical - 1,
        pools=False,
    ),
    "HeadroomPoolerClientsWaiting": _pool_gauge(
        "pgbouncer_pools_client_waiting_connections", 1, 0, pools=True
    ),
    # the exporter reports whole seconds
    "HeadroomPoolerMaxWaitHigh": _pool_gauge(
        "pgbouncer_pools_client_maxwait_seconds",
        lambda x: math.floor(x["max_wait"]) + 1,
        lambda x: math.floor(x["max_wait"]),
        pools=True,
    ),
    "HeadroomPoolerQueryTimeAboveBaseline": _query_time,
    "HeadroomPoolerDown": _down(
        "pgbouncer_up", lambda ctx: ctx.rendered.pooler_pod(ctx.pool().role)
    ),
    "HeadroomPrimaryConnectionsHigh": _primary("warning"),
    "HeadroomPrimaryConnectionsCritical": _primary("critical"),
    "HeadroomReadReplicaLagging": _replica_lag,
    "HeadroomRedisMemoryHigh": _redis_memory,
    "HeadroomRedisEvicting": _evicting,
    "HeadroomQueueRedisEvicting": _evicting,
    "HeadroomRedisHitRateLow": _hit_rate,
    "HeadroomRedisDown": _down("redis_up", lambda ctx: ctx.rendered.redis_pod(ctx.redis().name)),
    "HeadroomQueueBacklogHigh": _backlog,
    "HeadroomWorkersAtMax": _at_max(_workers_hpa),
    "HeadroomAppAtMaxReplicas": _at_max(_app_hpa),
    "HeadroomAppLatencyHigh": _latency,
    "HeadroomAppErrorRatioHigh": _errors,
    "HeadroomAppCPUHigh": _cpu,
    "HeadroomAppMemoryHigh": _memory,
    "HeadroomDatabaseConnectionsHigh": _server_connections("warning"),
    "HeadroomDatabaseConnectionsCritical": _server_connections("critical"),
    "HeadroomQuerySlow": _slow_query,
    "HeadroomStatementsSlow": _slow_statements,
    "HeadroomReplicaLagHigh": _replica_lag_reported,
    "HeadroomDatabaseDown": _database_down,
    "HeadroomDatabaseQueryRateHigh": _query_rate,
    "HeadroomCountersRedisEvicting": _evicting,
    "HeadroomRouteLatencyHigh": _route_latency,
}

# Minutes of series before the rate windows: a day for the rules that compare with one.
HISTORY_MINUTES = {"HeadroomPoolerQueryTimeAboveBaseline": 24 * 60}
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def seconds(duration: str) -> float:
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * _UNITS[u] for n, u in parts)


# --- promtool ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool(prometheus_tools: prometheus_servers.PrometheusTools) -> str:
    return str(prometheus_tools.promtool)


def _promtool(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def _unit_tests(rendered: Rendered) -> tuple[list[dict[str, Any]], int]:
    """promtool tests: per rule, one per case; and how many rules."""
    tests = []
    rules = [r for g in alert_rules.rule_groups(rendered.plan) for r in g["rules"] if "alert" in r]
    for rule in rules:
        name = rule["alert"]
        assert name in CASES, f"no promtool case for alert {name}: add one to CASES"
        wait = seconds(rule.get("for", "0s"))
        # the rate windows (5m) filled, then the whole `for:` breached
        history = HISTORY_MINUTES.get(name, 0)
        breached = math.ceil(wait / 60) + 10
        eval_minutes = history + breached
        ctx = Context(rendered, rule, samples=breached // INTERVAL_MINUTES + 1, history=history)
        cases = CASES[name](ctx)
        assert any(c.labels for c in cases) and any(c.labels is None for c in cases), name
        for case in cases:
            fired = [] if case.labels is None else [{"exp_labels": rule["labels"] | case.labels}]
            tests.append(
                {
                    "name": f"{name} {rule['labels']} {case.what}",
                    "interval": f"{INTERVAL_MINUTES}m",
                    "input_series": case.series,
                    "alert_rule_test": [
                        {"eval_time": f"{eval_minutes}m", "alertname": name, "exp_alerts": fired}
                    ],
                }
            )
    return tests, len(rules)


def _promtool_tests(
    promtool: str, rule_file: str, tests: list[dict[str, Any]], *, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """``promtool test rules`` of ``tests`` against ``rule_file``: a test file per test,
    whose rule file keeps its alert name's rules and the recording rules; the files
    spread over PROMTOOLS processes (the answer: the first failing exit code, every
    process's output)."""
    groups = yaml.safe_load(rule_file)["groups"]
    exprs = [str(r["expr"]) for g in groups for r in g["rules"]]
    assert not any("ALERTS" in e for e in exprs), "a rule reads ALERTS: test the whole file"
    by_name: dict[str, list[dict[str, Any]]] = {}
    for test in tests:
        by_name.setdefault(test["alert_rule_test"][0]["alertname"], []).append(test)
    files: list[tuple[float, str]] = []  # (the evaluations it takes, file)
    for index, (name, named) in enumerate(sorted(by_name.items())):
        kept = [
            {**g, "rules": [r for r in g["rules"] if r.get("alert", name) == name]} for g in groups
        ]
        kept = [g for g in kept if g["rules"]]
        (cwd / f"rules-{index}.yaml").write_text(yaml.safe_dump({"groups": kept}, sort_keys=False))
        rules = sum(len(g["rules"]) for g in kept)
        for number, test in enumerate(named):
            path = f"tests-{index}-{number}.yaml"
            (cwd / path).write_text(
                yaml.safe_dump(
                    {
                        "rule_files": [f"rules-{index}.yaml"],
                        "evaluation_interval": "1m",
                        "tests": [test],
                    },
                    sort_keys=False,
                )
            )
            steps = seconds(test["alert_rule_test"][0]["eval_time"]) / 60 + 1
            files.append((steps * rules, path))
    # promtool runs its tests one after the other on about one core: the costliest
    # first, each to the process with the least so far
    shares: list[list[str]] = [[] for _ in range(PROMTOOLS)]
    costs = [0.0] * PROMTOOLS
    for cost, path in sorted(files, reverse=True):
        least = costs.index(min(costs))
        shares[least].append(path)
        costs[least] += cost
    command = [promtool, "test", "rules"]
    running = [
        subprocess.Popen(
            [*command, *sorted(share)],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for share in shares
        if share
    ]
    try:
        outputs = [proc.communicate(timeout=300)[0] for proc in running]
    finally:
        for proc in running:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    code = next((proc.returncode for proc in running if proc.returncode), 0)
    return subprocess.CompletedProcess(command, code, "".join(outputs), "")


def _without_annotations(rendered: Rendered) -> str:
    groups = alert_rules.rule_groups(rendered.plan)
    stripped = [
        {**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
        for g in groups
    ]
    return yaml.safe_dump({"groups": stripped}, sort_keys=False)


@pytest.mark.parametrize(("case_id", "rendered"), PROFILES, ids=[p[0] for p in PROFILES])
def test_rendered_rules_pass_promtool_check(
    promtool: str, tmp_path: Path, case_id: str, rendered: Rendered
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(alert_rules.rule_file(rendered.plan))
    done = _promtool(promtool, "check", "rules", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    count = sum(len(g["rules"]) for g in alert_rules.rule_groups(rendered.plan))
    assert count > 0
    assert f"SUCCESS: {count} rules found" in done.stdout, done.stdout


@pytest.mark.parametrize(("case_id", "rendered"), PROFILES, ids=[p[0] for p in PROFILES])
def test_each_alert_fires_on_a_breach_and_stays_silent_when_healthy(
    promtool: str, tmp_path: Path, case_id: str, rendered: Rendered
) -> None:
    tests, rules = _unit_tests(rendered)
    assert rules > 0
    done = _promtool_tests(promtool, _without_annotations(rendered), tests, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-8000:]
    # one SUCCESS per test's file
    assert done.stdout.count("SUCCESS") == len(tests), done.stdout[-8000:]


def test_every_alert_is_rendered_by_some_profile_so_its_cases_run() -> None:
    rendered = {
        r["alert"]
        for _, found in PROFILES
        for g in alert_rules.rule_groups(found.plan)
        for r in g["rules"]
        if "alert" in r
    }
    assert set(CASES) - rendered == set(), "alerts no profile here renders: their cases never run"


def test_a_wrong_threshold_fails_the_promtool_cases(promtool: str, tmp_path: Path) -> None:
    """The cases are not vacuous: the shop profile's rules with one threshold moved
    by one connection no longer pass."""
    (_, rendered) = next(p for p in PROFILES if p[0] == "shop")
    groups = alert_rules.rule_groups(rendered.plan)
    (pool,) = [p for p in rendered.alerts.pools if p.role == "rw"]
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
            if rule.get("alert") == "HeadroomPoolerConnectionsHigh":
                rule["expr"] = rule["expr"].replace(f">= {pool.warning}", f">= {pool.warning + 1}")
    tests, _ = _unit_tests(rendered)
    done = _promtool_tests(
        promtool, yaml.safe_dump({"groups": groups}, sort_keys=False), tests, cwd=tmp_path
    )
    assert done.returncode != 0
    assert "HeadroomPoolerConnectionsHigh" in done.stdout + done.stderr
