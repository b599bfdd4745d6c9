"""A Grafana dashboard per profile, in a ConfigMap Grafana's dashboard sidecar
loads (label ``grafana_dashboard: "1"``, the kube-prometheus-stack default).

Pure. Panels: the connection budget against what the poolers hold, clients
waiting, each cache's hit rate, each queue's backlog against its drain
ceiling, the app's and the workers' replicas against their ceilings. The same
filters as the alert expressions (:mod:`headroom.builders.alert_rules`).
"""

from __future__ import annotations

import json
from typing import Any

from headroom.builders import alert_rules, common
from headroom.planning import monitoring, planner

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


def dashboard(plan: planner.Plan) -> dict[str, Any]:
    """The dashboard JSON model (schemaVersion 39)."""
    assert plan.alerts is not None
    ns = plan.namespace
    panels: list[tuple[str, list[tuple[str, str]], str]] = []
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
