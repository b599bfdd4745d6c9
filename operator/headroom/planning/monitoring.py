"""The numbers the alerts compare with, from the plan: each pool's
``max_db_connections``, the primary's ``max_connections - reserved``, each
database server's own ``max_connections``, each Redis ``maxmemory``, each
queue's drain ceiling, the app's ceiling; and the settings each pool and each
Redis instance ends up with (its own over its group's).

Pure: called by the planner (:func:`headroom.planning.planner.plan`); the builder
(:mod:`headroom.builders.alert_rules`) turns an :class:`AlertsPlan` into rule groups
and makes no decision of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from headroom.api import quantity, v1alpha1
from headroom.planning import database_metrics, names

# The component label of the rules, monitors and dashboard.
COMPONENT = "monitoring"


def own_labels(profile: str, *, app_deployment: str) -> dict[str, str]:
    """Headroom's labels on the rules and monitors (a selector adds to them,
    never changes them)."""
    return names.labels(
        profile, app_deployment=app_deployment, component=COMPONENT, app_name="alerts"
    )


def share(total: int, percent: int) -> int:
    """The count that is ``percent`` of ``total``, rounded up, at least 1: the
    alert fires at ``>=`` it."""
    return max(1, math.ceil(total * percent / 100))


@dataclass(frozen=True)
class PoolLimits:
    """One pooler Deployment (write, or read), its per-pod server limit and
    the settings it ends up with (spec.alerts.pooler.write/read over the group's)."""

    role: str  # "rw" | "ro"
    database: str  # the database entry PgBouncer exports (its ``database`` label)
    max_db_connections: int  # per pooler pod
    warning: int  # server connections of one pod that warn
    critical: int
    warning_percent: int = 50
    critical_percent: int = 90
    max_wait_seconds: float = 1.0
    query_time_baseline_factor: float = 3.0
    query_time_floor_seconds: float = 0.05
    enabled: bool = True


@dataclass(frozen=True)
class PrimaryLimits:
    """What the poolers may hold on the primary, over all their pods."""

    available: int  # max_connections - superuser reserved - reserved (- other profiles)
    planned: int  # the plan's server connections (write pool + read fallback)
    warning: int
    critical: int


@dataclass(frozen=True)
class RedisLimits:
    """One Redis instance's numbers and the settings it ends up with
    (spec.alerts.cache.instances[name] over the group's)."""

    name: str
    use: str  # cache | queue | counters
    maxmemory_bytes: int
    memory_warning_bytes: int
    memory_percent: int = 90
    hit_rate_min: float = 0.8
    evictions: bool = True  # HeadroomRedisEvicting (use: cache)
    enabled: bool = True


@dataclass(frozen=True)
class QueueLimits:
    name: str
    redis: str
    list_name: str
    max_replicas: int
    backlog_per_worker: int
    scaler: str  # keda | hpa

    @property
    def drain_ceiling(self) -> int:
        """The backlog the workers' ceiling is sized for: above it, more work
        arrives than the most workers the profile allows aim to hold."""
        return self.max_replicas * self.backlog_per_worker


@dataclass(frozen=True)
class AppLimits:
    deployment: str
    max_replicas: int
    autoscaled: bool  # Headroom runs its HPA
    memory_bytes: int


@dataclass(frozen=True)
class ReadReplicaLimits:
    """The lag bound the read pool keeps its replicas within (the operator
    measures it; ``ReadReplicasInPool`` says when one is out)."""

    max_lag_seconds: int
    when_all_lagging: str  # primary | refuse


@dataclass(frozen=True)
class ServerLimits:
    """A database server's own connections that warn and go critical: the
    group's absolute count when it gives one, else its share of
    ``max_connections - superuser_reserved`` (what non-superusers may open)."""

    name: str  # "primary", a replica's name, or "cnpg" (every pod of the Cluster)
    max_connections: int
    usable: int  # max_connections - superuser_reserved_connections
    warning: int
    critical: int

    @property
    def primary(self) -> bool:
        return self.name == database_metrics.PRIMARY


@dataclass(frozen=True)
class DatabaseLimits:
    """What the rules on the servers' own metrics compare with."""

    source: str  # database_metrics.EXPORTER | database_metrics.CNPG
    database: str  # the app's database (datname)
    servers: tuple[ServerLimits, ...]
    statements: bool  # per-statement times are collected (pg_stat_statements)
    slow_query_seconds: float
    query_rate_per_second: float | None
    replica_lag_seconds: float | None  # None: no replica
    cnpg_cluster: str | None = None


@dataclass(frozen=True)
class AlertsPlan:
    settings: v1alpha1.Alerts
    pools: tuple[PoolLimits, ...]
    primary: PrimaryLimits
    redis: tuple[RedisLimits, ...]
    queues: tuple[QueueLimits, ...]
    app: AppLimits
    read_replicas: ReadReplicaLimits | None = None
    database: DatabaseLimits | None = None  # None: no server metrics


def _pool(pooler: v1alpha1.PoolerAlerts, *, role: str, database: str, limit: int) -> PoolLimits:
    own = (pooler.write if role == "rw" else pooler.read) or v1alpha1.PoolAlerts()
    warning = own.connections_warning_percent or pooler.connections_warning_percent
    critical = own.connections_critical_percent or pooler.connections_critical_percent
    return PoolLimits(
        role=role,
        database=database,
        max_db_connections=limit,
        warning=share(limit, warning),
        critical=share(limit, critical),
        warning_percent=warning,
        critical_percent=critical,
        max_wait_seconds=own.max_wait_seconds or pooler.max_wait_seconds,
        query_time_baseline_factor=own.query_time_baseline_factor
        or pooler.query_time_baseline_factor,
        query_time_floor_seconds=own.query_time_floor_seconds or pooler.query_time_floor_seconds,
        enabled=own.enabled if own.enabled is not None else True,
    )


def _redis(cache: v1alpha1.CacheAlerts, *, name: str, use: str, maxmemory: int) -> RedisLimits:
    own = cache.instances.get(name) or v1alpha1.CacheInstanceAlerts()
    percent = own.memory_percent or cache.memory_percent
    return RedisLimits(
        name=name,
        use=use,
        maxmemory_bytes=maxmemory,
        memory_warning_bytes=maxmemory * percent // 100,
        memory_percent=percent,
        hit_rate_min=own.hit_rate_min or cache.hit_rate_min,
        evictions=own.evictions if own.evictions is not None else True,
        enabled=own.enabled if own.enabled is not None else True,
    )


def count_problems(
    alerts: v1alpha1.DatabaseAlerts, servers: tuple[tuple[str, int], ...]
) -> list[tuple[str, str]]:
    """(field, message) for an absolute count no server can reach: its alert
    would never fire. ``servers``: (name, max_connections)."""
    found = []
    for field, count in (
        ("connectionsWarningCount", alerts.connections_warning_count),
        ("connectionsCriticalCount", alerts.connections_critical_count),
    ):
        over = [(name, most) for name, most in servers if count is not None and count > most]
        if over:
            name, most = over[0]
            found.append(
                (
                    f"spec.alerts.database.{field}",
                    f"{count} is above max_connections {most} of the {name} server: its "
                    "connections never reach it, so the alert could never fire",
                )
            )
    return found


def server_limits(
    alerts: v1alpha1.DatabaseAlerts, *, name: str, max_connections: int, superuser_reserved: int
) -> ServerLimits:
    usable = max(1, max_connections - superuser_reserved)
    warning = alerts.connections_warning_count or share(usable, alerts.connections_warning_percent)
    critical = alerts.connections_critical_count or share(
        usable, alerts.connections_critical_percent
    )
    return ServerLimits(
        name=name,
        max_connections=max_connections,
        usable=usable,
        warning=warning,
        critical=critical,
    )


def _database(
    alerts: v1alpha1.DatabaseAlerts,
    *,
    metrics: database_metrics.DatabaseMetricsPlan | None,
    database: str,
    superuser_reserved: int,
    cnpg_max_connections: int,
    max_lag_seconds: int | None,
) -> DatabaseLimits | None:
    if metrics is None:
        return None
    servers: tuple[ServerLimits, ...]
    if metrics.source == database_metrics.CNPG:
        servers = (
            server_limits(
                alerts,
                name=database_metrics.CNPG,
                max_connections=cnpg_max_connections,
                superuser_reserved=superuser_reserved,
            ),
        )
    else:
        servers = tuple(
            server_limits(
                alerts,
                name=s.name,
                max_connections=s.max_connections,
                superuser_reserved=superuser_reserved,
            )
            for s in metrics.servers
        )
    replicas = metrics.source == database_metrics.CNPG or len(metrics.servers) > 1
    lag = alerts.replica_lag_seconds or max_lag_seconds
    return DatabaseLimits(
        source=metrics.source,
        database=database,
        servers=servers,
        statements=metrics.statements,
        slow_query_seconds=alerts.slow_query_seconds,
        query_rate_per_second=alerts.query_rate_per_second,
        replica_lag_seconds=lag if replicas and lag is not None else None,
        cnpg_cluster=metrics.cnpg_cluster,
    )


def plan(
    settings: v1alpha1.Alerts,
    *,
    database: str,
    pools: tuple[tuple[str, int], ...],
    available: int,
    planned_connections: int,
    redis: tuple[tuple[str, str, int], ...],
    queues: tuple[QueueLimits, ...],
    app: AppLimits,
    read_replicas: ReadReplicaLimits | None = None,
    metrics: database_metrics.DatabaseMetricsPlan | None = None,
    superuser_reserved: int = 0,
    cnpg_max_connections: int = 0,
    max_lag_seconds: int | None = None,
) -> AlertsPlan | None:
    """``pools``: (role, max_db_connections per pod); ``redis``: (name, use,
    maxmemory bytes); ``metrics``: where the servers' own metrics come from.
    None when the profile turns alerts off."""
    if not settings.enabled:
        return None
    pooler, db, cache = settings.pooler, settings.database, settings.cache
    return AlertsPlan(
        settings=settings,
        pools=tuple(
            _pool(pooler, role=role, database=database, limit=limit) for role, limit in pools
        ),
        primary=PrimaryLimits(
            available=available,
            planned=planned_connections,
            warning=share(available, db.connections_warning_percent),
            critical=share(available, db.connections_critical_percent),
        ),
        redis=tuple(
            _redis(cache, name=name, use=use, maxmemory=maxmemory) for name, use, maxmemory in redis
        ),
        queues=queues,
        app=app,
        read_replicas=read_replicas,
        database=_database(
            db,
            metrics=metrics,
            database=database,
            superuser_reserved=superuser_reserved,
            cnpg_max_connections=cnpg_max_connections,
            max_lag_seconds=max_lag_seconds,
        ),
    )


def memory_bytes(text: str) -> int:
    return math.ceil(quantity.parse(text))


# --- which Prometheus picks the rules and monitors up -------------------------

# the kinds Headroom emits, with the Prometheus fields that select them
SELECTORS: dict[str, tuple[str, str]] = {
    "PrometheusRule": ("ruleSelector", "ruleNamespaceSelector"),
    "PodMonitor": ("podMonitorSelector", "podMonitorNamespaceSelector"),
    "ServiceMonitor": ("serviceMonitorSelector", "serviceMonitorNamespaceSelector"),
}


@dataclass(frozen=True)
class Pick:
    """The labels an object of one kind needs to be selected, and by whom."""

    kind: str
    labels: tuple[tuple[str, str], ...] = ()
    prometheus: str = ""  # namespace/name; "" when none would select it
    why_not: tuple[str, ...] = ()  # one line per Prometheus that would not

    @property
    def selected(self) -> bool:
        return bool(self.prometheus)


@dataclass(frozen=True)
class Selection:
    """What the cluster's Prometheus objects select (prometheus-operator installed)."""

    picks: tuple[Pick, ...] = ()
    prometheuses: int = 0

    def pick(self, kind: str) -> Pick:
        return next((p for p in self.picks if p.kind == kind), Pick(kind))

    def labels(self, kind: str) -> dict[str, str]:
        return dict(self.pick(kind).labels)


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector against a label set."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if op == "In" and (not present or labels[key] not in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def _satisfy(selector: dict[str, Any], own: dict[str, str]) -> dict[str, str] | None:
    """Labels to add to ``own`` so that ``selector`` matches, or None when it cannot."""
    wanted: dict[str, str] = {}
    for key, value in (selector.get("matchLabels") or {}).items():
        wanted[str(key)] = str(value)
    for expr in selector.get("matchExpressions") or []:
        key, values = str(expr.get("key")), expr.get("values") or []
        if key in wanted or key in own:
            continue
        if expr.get("operator") == "In" and values:
            wanted[key] = str(values[0])
        elif expr.get("operator") == "Exists":
            wanted[key] = "true"
    for key, value in wanted.items():
        if own.get(key, value) != value:
            return None  # one of Headroom's own labels would have to change
    return wanted if _matches(selector, {**own, **wanted}) else None


def select(
    prometheuses: list[dict[str, Any]],
    *,
    namespace: str,
    namespace_labels: dict[str, str],
    own_labels: dict[str, str],
    kinds: tuple[str, ...] = tuple(SELECTORS),
) -> Selection:
    """For each kind, the first Prometheus (by namespace/name) whose namespace
    selector admits ``namespace`` and whose selector Headroom's objects can
    satisfy, and the labels that satisfy it (when none admits the namespace,
    the labels of the first whose selector they satisfy). A null selector selects nothing;
    a null namespace selector only the Prometheus' own namespace (as
    prometheus-operator reads them)."""
    ordered = sorted(
        prometheuses,
        key=lambda p: (p["metadata"].get("namespace", ""), p["metadata"]["name"]),
    )
    ns_labels = {"kubernetes.io/metadata.name": namespace, **namespace_labels}
    picks = []
    for kind in kinds:
        field, ns_field = SELECTORS[kind]
        why_not = []
        chosen: Pick | None = None
        # labels a Prometheus would select were the namespace admitted: carried
        # anyway, so labelling the namespace is all it then takes
        fallback: tuple[tuple[str, str], ...] = ()
        for prom in ordered:
            meta, spec = prom["metadata"], prom.get("spec") or {}
            who = f"{meta.get('namespace', '')}/{meta['name']}"
            selector = spec.get(field)
            if selector is None:
                why_not.append(f"{who}: no {field} (selects no {kind})")
                continue
            labels = _satisfy(selector, own_labels)
            if labels is None:
                why_not.append(f"{who}: {field} cannot match Headroom's labels")
                continue
            ns_selector = spec.get(ns_field)
            if ns_selector is None:
                admitted = meta.get("namespace") == namespace
            else:
                admitted = _matches(ns_selector, ns_labels)
            if not admitted:
                why_not.append(f"{who}: {ns_field} does not admit namespace {namespace}")
                fallback = fallback or tuple(sorted(labels.items()))
                continue
            chosen = Pick(kind, tuple(sorted(labels.items())), who)
            break
        picks.append(chosen or Pick(kind, labels=fallback, why_not=tuple(why_not)))
    return Selection(picks=tuple(picks), prometheuses=len(prometheuses))
