"""The numbers the alerts compare with, from the plan: each pool's
``max_db_connections``, the primary's ``max_connections - reserved``, each Redis
``maxmemory``, each queue's drain ceiling, the app's ceiling.

Pure: called by the planner (:func:`headroom.planning.planner.plan`); the builder
(:mod:`headroom.builders.alert_rules`) turns an :class:`AlertsPlan` into rule groups
and makes no decision of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from headroom.api import quantity, v1alpha1
from headroom.planning import names

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
    """One pooler Deployment (write, or read) and its per-pod server limit."""

    role: str  # "rw" | "ro"
    database: str  # the database entry PgBouncer exports (its ``database`` label)
    max_db_connections: int  # per pooler pod
    warning: int  # server connections of one pod that warn
    critical: int


@dataclass(frozen=True)
class PrimaryLimits:
    """What the poolers may hold on the primary, over all their pods."""

    available: int  # max_connections - superuser reserved - reserved (- other profiles)
    planned: int  # the plan's server connections (write pool + read fallback)
    warning: int
    critical: int


@dataclass(frozen=True)
class RedisLimits:
    name: str
    use: str  # cache | queue
    maxmemory_bytes: int
    memory_warning_bytes: int


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
class AlertsPlan:
    settings: v1alpha1.Alerts
    pools: tuple[PoolLimits, ...]
    primary: PrimaryLimits
    redis: tuple[RedisLimits, ...]
    queues: tuple[QueueLimits, ...]
    app: AppLimits
    read_replicas: ReadReplicaLimits | None = None


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
) -> AlertsPlan | None:
    """``pools``: (role, max_db_connections per pod); ``redis``: (name, use,
    maxmemory bytes). None when the profile turns alerts off."""
    if not settings.enabled:
        return None
    pooler, db, cache = settings.pooler, settings.database, settings.cache
    return AlertsPlan(
        settings=settings,
        pools=tuple(
            PoolLimits(
                role=role,
                database=database,
                max_db_connections=limit,
                warning=share(limit, pooler.connections_warning_percent),
                critical=share(limit, pooler.connections_critical_percent),
            )
            for role, limit in pools
        ),
        primary=PrimaryLimits(
            available=available,
            planned=planned_connections,
            warning=share(available, db.connections_warning_percent),
            critical=share(available, db.connections_critical_percent),
        ),
        redis=tuple(
            RedisLimits(
                name=name,
                use=use,
                maxmemory_bytes=maxmemory,
                memory_warning_bytes=maxmemory * cache.memory_percent // 100,
            )
            for name, use, maxmemory in redis
        ),
        queues=queues,
        app=app,
        read_replicas=read_replicas,
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
