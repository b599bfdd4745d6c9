"""Everything a profile should own, as plain dicts keyed by ``Kind/name``,
grouped into components.

Pure. The reconcile pass applies exactly this set and prunes any other object
that carries our labels and owner reference. Components are the unit of
containment: when one object of a component belongs to somebody else, nothing
of that component (and of the components that depend on it) is applied, and
the binding does not point the app at it.
"""

from __future__ import annotations

from dataclasses import dataclass

from headroom.api import conditions
from headroom.builders import (
    alert_rules,
    app_autoscaler,
    binding,
    buckets,
    cnpg,
    common,
    dashboard,
    pgbouncer,
    postgres_metrics,
    read_pooler,
    redis,
    revision,
    s3_server,
    standby,
    workers,
)
from headroom.planning import credentials, planner, versitygw

POOLER = "pooler"
READ_POOLER = "pooler-ro"
STANDBYS = "standbys"
BINDING = "binding"
AUTOSCALING = "autoscaling"
MONITORING = "monitoring"
DATABASE_METRICS = "pg-metrics"  # postgres_exporter, one per database server
OBJECT_STORE = "object-store"  # the builtin S3 server (every builtin bucket's)


# What each component's condition is called; a component contained because
# somebody else's object has one of its names reports NameConflict in each.
_CONDITIONS = {
    POOLER: (conditions.POOLER_READY,),
    READ_POOLER: (conditions.READ_POOLER_READY, conditions.READ_REPLICAS_IN_POOL),
    STANDBYS: (conditions.STANDBYS_READY,),
    "redis": (conditions.CACHE_READY,),
    "queue": (conditions.WORKERS_READY, conditions.BACKLOG_SCALING),
    "bucket": (conditions.STORAGE_READY,),
    OBJECT_STORE: (conditions.STORAGE_READY,),
    AUTOSCALING: (conditions.AUTOSCALING_READY, conditions.APP_SCALING_ACTIVE),
    MONITORING: (conditions.ALERTS_SELECTED,),
}


def conditions_of(component: str) -> tuple[str, ...]:
    """The condition types that report on ``component`` (``redis/cache``: CacheReady)."""
    return _CONDITIONS.get(component, _CONDITIONS.get(component.split("/", 1)[0], ()))


def key_of(obj: common.Obj) -> str:
    """Stable key of a desired object: ``Kind/name``."""
    return f"{obj['kind']}/{obj['metadata']['name']}"


def redis_component(instance: planner.RedisPlan) -> str:
    return f"redis/{instance.name}"


def queue_component(queue: planner.QueuePlan) -> str:
    return f"queue/{queue.name}"


@dataclass(frozen=True)
class Desired:
    objects: dict[str, common.Obj]
    component_of: dict[str, str]  # object key -> component

    def keys_of(self, component: str) -> list[str]:
        return [k for k, c in self.component_of.items() if c == component]


def dependencies(plan: planner.Plan) -> dict[str, frozenset[str]]:
    """Components each component needs: queue workers read the binding and
    their Redis instance."""
    deps = {queue_component(q): frozenset({BINDING, f"redis/{q.redis}"}) for q in plan.queues}
    # the read pool reads from the standbys
    deps[READ_POOLER] = frozenset({STANDBYS}) if plan.read and plan.read.standby else frozenset()
    # a builtin bucket lives on the server
    for bucket in plan.buckets:
        if bucket.builtin is not None:
            deps[buckets.component(bucket)] = frozenset({OBJECT_STORE})
    return deps


def contained_closure(plan: planner.Plan, contained: set[str]) -> frozenset[str]:
    """``contained`` plus every component that depends on one of them."""
    closed = set(contained)
    deps = dependencies(plan)
    changed = True
    while changed:
        changed = False
        for component, needs in deps.items():
            if component not in closed and needs & closed:
                closed.add(component)
                changed = True
    return frozenset(closed)


def build_parts(
    plan: planner.Plan,
    creds: credentials.Credentials,
    *,
    app_pod_selector: common.Obj | None = None,
    without: frozenset[str] = frozenset(),
) -> Desired:
    """``app_pod_selector``: the app Deployment's label selector (matchLabels and/or
    matchExpressions; None when the Deployment is not found). Without it there is
    no app PDB and the NetworkPolicies admit only Headroom's own pods.
    ``without``: components left out (contained); the binding omits them."""
    selector = common.usable_selector(app_pod_selector)
    parts: list[tuple[str, list[common.Obj]]] = []
    if cnpg.uses_cnpg_poolers(plan):
        parts += [(POOLER, cnpg.build_write(plan)), (READ_POOLER, cnpg.build_read(plan))]
    else:
        parts += [
            (POOLER, pgbouncer.build(plan, creds, app_pod_selector=selector)),
            (READ_POOLER, read_pooler.build(plan, creds, app_pod_selector=selector)),
        ]
    parts += [
        (STANDBYS, standby.build(plan)),
        (BINDING, binding.build(plan, creds, omit=without)),
    ]
    for instance in plan.redis:
        parts.append(
            (
                redis_component(instance),
                redis.build(
                    plan,
                    instance,
                    password=creds.redis_passwords[instance.name],
                    app_pod_selector=selector,
                ),
            )
        )
    available = revision.sources(plan, creds)
    for queue in plan.queues:
        reads = binding.worker_reads(plan, creds, queue, omit=without, available=available)
        parts.append((queue_component(queue), workers.build(plan, queue, reads=reads)))
    for bucket in plan.buckets:
        parts.append((buckets.component(bucket), buckets.build(plan, bucket, creds)))
    server = versitygw.server_plan(plan.buckets)
    if server is not None:
        if creds.s3_server is None:
            raise ValueError("builtin buckets need the S3 server's generated keys")
        parts.append(
            (
                OBJECT_STORE,
                s3_server.build(plan, server, keys=creds.s3_server, app_pod_selector=selector),
            )
        )
    parts.append((AUTOSCALING, app_autoscaler.build(plan, app_pod_selector=selector)))
    parts.append((DATABASE_METRICS, postgres_metrics.build(plan, creds)))
    parts.append(
        (
            MONITORING,
            alert_rules.build(plan, app_pod_selector=selector) + dashboard.build(plan),
        )
    )
    objects: dict[str, common.Obj] = {}
    component_of: dict[str, str] = {}
    for component, built in parts:
        for obj in built:
            key = key_of(obj)
            if key in component_of:
                raise ValueError(f"two desired objects share the key {key}")
            component_of[key] = component
            if component not in without:
                objects[key] = obj
    return Desired(
        objects=objects,
        component_of={k: c for k, c in component_of.items() if c not in without},
    )


def build(
    plan: planner.Plan,
    creds: credentials.Credentials,
    *,
    app_pod_selector: common.Obj | None = None,
) -> dict[str, common.Obj]:
    """Every desired object by key (``headroom render``, golden tests)."""
    return build_parts(plan, creds, app_pod_selector=app_pod_selector).objects
