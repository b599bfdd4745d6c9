"""A Grafana dashboard per profile, in a ConfigMap Grafana's dashboard sidecar
loads (label ``grafana_dashboard: "1"``, the kube-prometheus-stack default).

Pure. Panels: the connection budget against what the poolers hold, clients
waiting, each database server's own connections (by state, by user and
application), its longest running query, the slowest statements, the query
rate, replication lag, the buffer cache and what the server exposes of CPU and
memory, each cache's hit rate, each queue's backlog against its drain ceiling,
the app's p95 per route, the app's and the workers' replicas against their
ceilings. The same filters as the alert expressions
(:mod:`headroom.builders.alert_rules`).
"""

from __future__ import annotations

import json
from typing import Any

from headroom.builders import alert_rules, common
from headroom.planning import database_metrics, monitoring, planner

LABEL = "grafana_dashboard"
_WIDTH = 12
_HEIGHT = 8


def _panel(index: int, title: str, targets: list[tuple[str, str]], unit: str) -> dict[str, Any]:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": _HEIGHT, "w": _WIDTH, "x": (index % 2) * _WIDTH, "y": index // 2 * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


Panel = tuple[str, list[tuple[str, str]], str]


def _database_panels(plan: planner.Plan, limits: monitoring.DatabaseLimits) -> list[Panel]:
    """The servers' own metrics (postgres_exporter's or CloudNativePG's)."""
    panels: list[Panel] = []

    def metric(what: str) -> str:
        return alert_rules.server_metric(limits, what)

    db = limits.database
    for server in limits.servers:
        name = limits.cnpg_cluster if limits.source == database_metrics.CNPG else server.name
        sel = alert_rules.server_selector(plan, server.name)
        in_db = alert_rules.server_selector(plan, server.name, datname=db)
        panels.append(
            (
                f"Database {name}: connections by state",
                [
                    (f"sum by (state) ({metric('by_state')}{sel})", "{{state}}"),
                    (f"sum({metric('connections')}{sel})", "every session"),
                    (f"vector({server.warning})", "warning"),
                    (f"vector({server.usable})", "max_connections - superuser reserved"),
                ],
                "short",
            )
        )
        panels.append(
            (
                f"Database {name}: connections by user and application",
                [
                    (
                        f"sum by (usename, application_name) ({metric('by_state')}{sel})",
                        "{{usename}} {{application_name}}",
                    )
                ],
                "short",
            )
        )
        active = {"datname": db, "state": "active"}
        if limits.source == database_metrics.EXPORTER:
            active["backend_type"] = "client backend"
        panels.append(
            (
                f"Database {name}: longest running query, buffer cache hit ratio",
                [
                    (
                        f"max({metric('active')}"
                        f"{alert_rules.server_selector(plan, server.name, **active)})",
                        "longest active (s)",
                    ),
                    (f"vector({limits.slow_query_seconds:g})", "slowQuerySeconds"),
                    (
                        f"sum(rate({metric('hits')}{in_db}[5m])) / (sum(rate({metric('hits')}"
                        f"{in_db}[5m])) + sum(rate({metric('reads')}{in_db}[5m])))",
                        "buffer cache hit ratio",
                    ),
                ],
                "s",
            )
        )
        if limits.statements:
            panels.append(
                (
                    f"Database {name}: slowest statements (mean over 5m)",
                    [
                        (
                            f"topk(10, rate(pg_stat_statements_seconds_total{in_db}[5m]) / "
                            f"rate(pg_stat_statements_calls_total{in_db}[5m]))",
                            "{{queryid}} {{user}}",
                        ),
                        (f"vector({limits.slow_query_seconds:g})", "slowQuerySeconds"),
                    ],
                    "s",
                )
            )
        if limits.replica_lag_seconds is not None and not server.primary:
            panels.append(
                (
                    f"Database {name}: replication lag",
                    [
                        (f"max by (pod) ({metric('lag')}{sel})", "{{pod}}"),
                        (f"vector({limits.replica_lag_seconds:g})", "replicaLagSeconds"),
                    ],
                    "s",
                )
            )
    every = alert_rules.every_server_selector(plan, datname=db)
    rate = [
        (
            f"sum(rate({metric('commits')}{every}[5m])) + "
            f"sum(rate({metric('rollbacks')}{every}[5m]))",
            "transactions / s",
        )
    ]
    if limits.query_rate_per_second is not None:
        rate.append((f"vector({limits.query_rate_per_second:g})", "queryRatePerSecond"))
    panels.append((f"Database {db}: queries per second, every server", rate, "reqps"))
    pods = _database_pods(plan, limits)
    if pods:
        sel = f'{{namespace="{plan.namespace}", pod=~"{pods}", container!="", container!="POD"}}'
        panels.append(
            (
                "Database pods: CPU (cores) and memory",
                [
                    (f"sum by (pod) (rate(container_cpu_usage_seconds_total{sel}[5m]))", "{{pod}}"),
                    (f"sum by (pod) (container_memory_working_set_bytes{sel})", "{{pod}} bytes"),
                ],
                "short",
            )
        )
    return panels


def _database_pods(plan: planner.Plan, limits: monitoring.DatabaseLimits) -> str:
    """The pods the servers run in, when they run in the cluster (the standbys
    Headroom runs, a CNPG Cluster's): only their containers' CPU and memory
    are known (a managed server exposes neither through SQL)."""
    if limits.cnpg_cluster is not None:
        return f"{limits.cnpg_cluster}-[0-9]+"
    if plan.read is not None and plan.read.standby is not None:
        return f"{plan.names.standbys}-[0-9]+"
    return ""


def _route_panels(plan: planner.Plan) -> list[Panel]:
    assert plan.alerts is not None
    app = plan.alerts.settings.app
    metrics = app.served_metrics
    if metrics is None or not app.routes:
        return []
    sel = f'{{namespace="{plan.namespace}", pod=~"{alert_rules.app_pods(plan)}"}}'
    label = metrics.route_label
    targets = [
        (
            f"histogram_quantile(0.95, sum by ({label}, le) "
            f"(rate({metrics.histogram}_bucket{sel}[5m])))",
            f"{{{{{label}}}}}",
        )
    ]
    targets += [
        (f"vector({t.p95_latency_seconds:g})", f"target {t.route or f'{t.prefix}*'}")
        for t in app.routes
    ]
    return [(f"{plan.app.deployment}: p95 per route", targets, "s")]


def dashboard(plan: planner.Plan) -> dict[str, Any]:
    """The dashboard JSON model (schemaVersion 39)."""
    assert plan.alerts is not None
    ns = plan.namespace
    panels: list[Panel] = []
    write = [p for p in plan.alerts.pools if p.role == "rw"]
    if write:
        sel = alert_rules.pooler_selector(plan, write[0])
        panels.append(
            (
                "Primary connections: budget vs held",
                [
                    (
                        f"sum(pgbouncer_databases_current_connections{sel})",
                        "held by the poolers",
                    ),
                    (f"vector({plan.alerts.primary.available})", "available (max - reserved)"),
                    (f"vector({plan.alerts.primary.planned})", "planned"),
                ],
                "short",
            )
        )
    for pool in plan.alerts.pools:
        sel = alert_rules.pooler_selector(plan, pool)
        panels.append(
            (
                f"Pooler {pool.role}: clients waiting, server connections per pod",
                [
                    (
                        f"sum by (pod) (pgbouncer_pools_client_waiting_connections{sel})",
                        "waiting {{pod}}",
                    ),
                    (
                        f"max by (pod) (pgbouncer_databases_current_connections{sel})",
                        "server {{pod}}",
                    ),
                    (f"vector({pool.max_db_connections})", "max_db_connections"),
                ],
                "short",
            )
        )
    if plan.alerts.database is not None:
        panels += _database_panels(plan, plan.alerts.database)
    for inst in plan.alerts.redis:
        sel = alert_rules.redis_selector(plan, inst.name)
        if inst.use == "cache":
            hits = f"rate(redis_keyspace_hits_total{sel}[5m])"
            misses = f"rate(redis_keyspace_misses_total{sel}[5m])"
            panels.append(
                (
                    f"Redis {inst.name}: hit rate",
                    [
                        (f"sum({hits}) / sum({hits} + {misses})", "hit rate"),
                        (f"vector({plan.alerts.settings.cache.hit_rate_min:g})", "target"),
                    ],
                    "percentunit",
                )
            )
        panels.append(
            (
                f"Redis {inst.name}: memory",
                [
                    (f"max by (pod) (redis_memory_used_bytes{sel})", "used {{pod}}"),
                    (f"vector({inst.maxmemory_bytes})", "maxmemory"),
                ],
                "bytes",
            )
        )
    for queue in plan.alerts.queues:
        sel = alert_rules.redis_selector(plan, queue.redis, key=queue.list_name)
        panels.append(
            (
                f"Queue {queue.name}: backlog",
                [
                    (f"max(redis_key_size{sel})", queue.list_name),
                    (f"vector({queue.drain_ceiling})", "workers' ceiling drains"),
                ],
                "short",
            )
        )
    panels += _route_panels(plan)
    hpas = [(plan.names.app_autoscaler, plan.app.deployment)] if plan.alerts.app.autoscaled else []
    hpas += [(alert_rules.worker_hpa(plan, q), f"workers {q.name}") for q in plan.alerts.queues]
    if hpas:
        targets = []
        for hpa, legend in hpas:
            sel = f'{{namespace="{ns}", horizontalpodautoscaler="{hpa}"}}'
            targets += [
                (f"max(kube_horizontalpodautoscaler_status_current_replicas{sel})", legend),
                (f"max(kube_horizontalpodautoscaler_spec_max_replicas{sel})", f"{legend} max"),
            ]
        panels.append(("Replicas vs ceilings", targets, "short"))
    return {
        "title": f"Headroom {ns}/{plan.name}",
        "uid": common.content_hash("headroom-dashboard", ns, plan.name),
        "tags": ["headroom"],
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                }
            ]
        },
        "panels": [_panel(i, title, t, unit) for i, (title, t, unit) in enumerate(panels)],
    }


def build(plan: planner.Plan) -> list[common.Obj]:
    if plan.alerts is None:
        return []
    meta = common.metadata(
        plan, name=plan.names.dashboard, component=monitoring.COMPONENT, app_name="dashboard"
    )
    meta["labels"][LABEL] = "1"
    text = json.dumps(dashboard(plan), indent=1, sort_keys=False) + "\n"
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "data": {f"headroom-{plan.namespace}-{plan.name}.json": text},
        }
    ]
