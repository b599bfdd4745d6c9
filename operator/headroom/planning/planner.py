"""Profile -> Plan: the one planning function.

The admission webhook, the reconcile pass and ``headroom plan`` all call
:func:`plan`; a Plan with problems is a profile that must not be applied. The
Plan holds every size and setting the builders need, so builders make no
decisions of their own.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from headroom.api import quantity, v1alpha1
from headroom.planning import (
    connection_budget,
    database_metrics,
    load_sizing,
    monitoring,
    names,
    object_storage,
    pgbouncer_params,
    profile_checks,
    queue_memory,
    read_plan,
    redis_params,
    servers,
)

POOLER_PORT = 6432
EXPORTER_PORT = 9127
STATS_USER = "headroom_stats"
# The read pooler's lag agent: PgBouncer admin (RELOAD), on 127.0.0.1 only.
AGENT_USER = "headroom_agent"
REDIS_PORT = 6379
SENTINEL_PORT = 26379
REDIS_EXPORTER_PORT = 9121
# maxmemory is this share of the container limit: the rest absorbs allocator
# fragmentation, client and replication buffers, and fork copy-on-write.
MAXMEMORY_PERCENT = 75
MIN_REDIS_MEMORY = int(quantity.parse(v1alpha1.MIN_REDIS_MEMORY))
# Redis uses; an instance named after one must have that use (the binding key
# REDIS_<USE>_URL names it).
USES = ("cache", "queue", "counters")

# Defaults Headroom renders unless the profile overrides them. query_wait_timeout
# bounds how long a client queues for a server connection before it gets an
# error instead of hanging; server_lifetime recycles connections so a failover
# or a DNS change is picked up.
_DEFAULT_SETTINGS: dict[str, str] = {
    "server_lifetime": "3600",
    "server_idle_timeout": "600",
    "query_wait_timeout": "120",
    "ignore_startup_parameters": "extra_float_digits",
    "log_connections": "0",
    "log_disconnections": "0",
    "stats_period": "60",
}
# Prepared statements survive transaction pooling from 1.21 on (Prisma, asyncpg).
_PREPARED_STATEMENTS_DEFAULT = "200"


@dataclass(frozen=True)
class PoolerPlan:
    instances: int
    pool_mode: str
    image: str
    exporter_image: str
    version: tuple[int, int]
    max_surge: int
    max_unavailable: int
    min_ready_seconds: int
    grace_seconds: int
    # The [pgbouncer] settings that are tunable, final values (sizing included).
    settings: dict[str, str]


@dataclass(frozen=True)
class AppPlan:
    deployment: str
    min_replicas: int
    max_replicas: int
    pool_size_per_pod: int
    client: str = "generic"
    # spec.app.bindingKeys: Headroom's binding key -> the name the app reads
    binding_keys: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PrimaryLimits:
    """Connection limits the primary itself reports (pg_settings)."""

    max_connections: int
    superuser_reserved_connections: int
    reserved_connections: int = 0  # Postgres 16+
    # MB of WAL a replication slot may hold back (-1: unlimited; None: not reported)
    max_slot_wal_keep_size_mb: int | None = None
    # why pg_stat_statements cannot be read in the app's database ("": it can)
    statements_missing: str = ""

    @property
    def available(self) -> int:
        return (
            self.max_connections - self.superuser_reserved_connections - self.reserved_connections
        )

    def describe(self) -> str:
        text = (
            f"max_connections {self.max_connections} - superuser_reserved_connections "
            f"{self.superuser_reserved_connections}"
        )
        if self.reserved_connections:
            text += f" - reserved_connections {self.reserved_connections}"
        return text


@dataclass(frozen=True)
class Facts:
    """What the planner needs to know about the cluster (observed, not declared)
    and about the operator that runs it."""

    keda: bool = False  # KEDA's ScaledObject/TriggerAuthentication CRDs are served
    # this profile's share of each Postgres server it uses with other profiles
    # (its primary, the replicas it lists), by server key (planning.servers):
    # divided among every profile there (planning.server_shares); a server
    # it has to itself has none
    grants: Mapping[str, connection_budget.Grant] = field(default_factory=dict)
    cnpg: bool = False  # CloudNativePG's Pooler CRD is served
    # the CNPG Cluster of readReplicas mode cnpg, as read (None: not read, or absent)
    cnpg_cluster: read_plan.CnpgCluster | None = None
    agent_image: str = v1alpha1.AGENT_IMAGE  # HEADROOM_AGENT_IMAGE
    # the operator's namespace: its lag probes may reach the standbys it runs
    operator_namespace: str = ""
    # prometheus-operator's PrometheusRule/PodMonitor/ServiceMonitor CRDs are served
    prometheus_operator: bool = False
    # what the installed Prometheus objects select, and by which labels
    prometheus_selection: monitoring.Selection = field(default_factory=monitoring.Selection)
    # the COSI version whose BucketClaim and BucketAccess are served ("": none)
    cosi: str = ""

    @property
    def shared(self) -> tuple[connection_budget.SharedUse, ...]:
        """What the other profiles hold on every server this one shares."""
        return tuple(use for grant in self.grants.values() for use in grant.others)


@dataclass(frozen=True)
class RedisPlan:
    name: str
    use: str
    eviction_policy: str
    memory: str
    maxmemory_bytes: int
    image: str
    exporter_image: str
    persistence: v1alpha1.Persistence | None
    sentinel_replicas: int  # 0: standalone
    settings: dict[str, str]
    queue_lists: tuple[str, ...]  # exported as queue-length metrics
    # HA: the master refuses writes with fewer connected replicas (0: standalone, or off)
    min_replicas_to_write: int

    @property
    def maxmemory_text(self) -> str:
        """maxmemory in whole mebibytes, as plan and status print it ("96Mi")."""
        return f"{self.maxmemory_bytes / 1024**2:.0f}Mi"


@dataclass(frozen=True)
class QueuePlan:
    name: str
    redis: str
    list_name: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    requests: dict[str, str]
    limits: dict[str, str]
    min_replicas: int
    max_replicas: int
    backlog_per_worker: int
    activation_backlog: int
    grace_seconds: int
    database_pool_size: int
    cpu_utilization: int
    scaler: str  # "keda" | "hpa"
    database_read_pool_size: int = 0
    load: v1alpha1.QueueLoad | None = None  # its jobs at peak (spec.queues[].load)


@dataclass(frozen=True)
class AutoscalingPlan:
    enabled: bool
    min_replicas: int
    max_replicas: int
    cpu_utilization: int
    scale_down_stabilization_seconds: int
    scale_up_stabilization_seconds: int
    max_unavailable: int


@dataclass(frozen=True)
class Plan:
    name: str
    namespace: str
    uid: str
    generation: int
    app: AppPlan
    database: v1alpha1.Database
    pooler: PoolerPlan
    budget: connection_budget.ConnectionBudget
    autoscaling: AutoscalingPlan
    redis: tuple[RedisPlan, ...] = ()
    queues: tuple[QueuePlan, ...] = ()
    network: v1alpha1.Network = field(default_factory=v1alpha1.Network)
    facts: Facts = field(default_factory=Facts)
    problems: tuple[connection_budget.Problem, ...] = field(default=())
    # read replicas: where reads go, and the read pooler in front of them
    read: read_plan.ReadPlan | None = None
    read_pooler: PoolerPlan | None = None
    # the alerts' numbers (None: spec.alerts.enabled false)
    alerts: monitoring.AlertsPlan | None = None
    # spec.storage.buckets, in order (the first is the binding's default)
    buckets: tuple[object_storage.BucketPlan, ...] = ()
    # what it asks of each server other profiles may share (server_shares)
    demands: tuple[connection_budget.Demand, ...] = ()
    share_weight: int = 1  # spec.database.share.weight
    # spec.load, and the app pod's client pool against it (the pooler pod's is the
    # budget's load_pool)
    load: load_sizing.Load | None = None
    app_load_pool: load_sizing.PoolCheck | None = None
    # the reads of spec.load (readSecondsPerRequest) and the app pod's read pool
    # against them (each read-pooler pod's is read.budget.load_pool); ``load`` is
    # then what the primary carries
    read_load: load_sizing.Load | None = None
    app_read_pool: load_sizing.PoolCheck | None = None
    # each queue that declares its jobs (spec.queues[].load): its slots against them
    worker_loads: tuple[load_sizing.WorkerCheck, ...] = ()
    # each queue instance whose queues declare what their jobs hold: its maxmemory
    # against them at peak
    queue_memory: tuple[queue_memory.InstanceCheck, ...] = ()
    # where the servers' own metrics come from (None: spec.database.metrics off)
    database_metrics: database_metrics.DatabaseMetricsPlan | None = None

    @property
    def exporter_connections(self) -> int:
        """What the primary's postgres_exporter holds there (0: none runs)."""
        found = self.database_metrics
        return found.connections_on(database_metrics.PRIMARY) if found else 0

    @property
    def primary_connections(self) -> int:
        """Most connections this profile may open on the primary: the write
        pool, the read pool when it falls back to the primary, the exporter."""
        fallback = self.read.fallback_connections if self.read else 0
        return self.budget.server_connections + fallback + self.exporter_connections

    @property
    def names(self) -> names.ChildNames:
        """The names and hosts of this profile's children (planning.names)."""
        return names.ChildNames(self.name, self.namespace)

    def opened(self) -> dict[str, int]:
        """Server key (planning.servers) -> the most this profile may open there,
        on every server another profile may share: what those must fit beside."""
        found = dict(self.read.opened_on_replicas()) if self.read else {}
        primary = servers.primary(self.namespace, self.database)
        found[primary] = found.get(primary, 0) + self.primary_connections
        return found

    def holds(self) -> dict[str, int]:
        """Server key -> everything this profile may open there: its pool at
        the rollout peak and what it keeps (direct connections, lag probes,
        the read fallback). While a later change is refused, its running
        poolers are counted at this in every other profile's share."""
        found: dict[str, int] = {}
        for index, demand in enumerate(self.demands):
            pool = self.budget if index == 0 or self.read is None else self.read.budget
            found[demand.server] = (
                found.get(demand.server, 0) + demand.fixed + pool.server_connections
            )
        return found

    def redis_named(self, name: str) -> RedisPlan:
        return next(r for r in self.redis if r.name == name)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem_text(self) -> str:
        return "; ".join(str(p) for p in self.problems)


def _app_plan(app: v1alpha1.App) -> tuple[AppPlan, list[connection_budget.Problem]]:
    problems: list[connection_budget.Problem] = []
    if app.replicas is not None:
        low, high = app.replicas.min, app.replicas.max
        if low > high:
            problems.append(
                connection_budget.Problem(
                    "spec.app.replicas.min",
                    f"{low} must be <= spec.app.replicas.max {high}",
                )
            )
    elif app.capacity is not None:
        cap = app.capacity
        high = math.ceil(cap.target_concurrent_users / cap.users_per_pod)
        low = cap.min_replicas
        if low > high:
            # A floor above the ceiling is a contradiction, not something to clamp.
            problems.append(
                connection_budget.Problem(
                    "spec.app.capacity.minReplicas",
                    v1alpha1.CAPACITY_MIN_MESSAGE
                    % (low, cap.target_concurrent_users, cap.users_per_pod, high),
                )
            )
        if high > 1000:
            problems.append(
                connection_budget.Problem(
                    "spec.app.capacity",
                    f"targetConcurrentUsers {cap.target_concurrent_users} / usersPerPod "
                    f"{cap.users_per_pod} = {high} pods > 1000",
                )
            )
    else:
        low = high = 1
        problems.append(
            connection_budget.Problem("spec.app", "set exactly one of replicas or capacity")
        )
    if app.replicas is not None and app.capacity is not None:
        problems.append(
            connection_budget.Problem(
                "spec.app", "set exactly one of replicas or capacity, not both"
            )
        )
    return (
        AppPlan(
            deployment=app.deployment,
            min_replicas=low,
            max_replicas=high,
            pool_size_per_pod=app.pool_size_per_pod,
            client=app.client,
            binding_keys=dict(app.binding_keys),
        ),
        problems,
    )


SHARE_FIELD = "spec.database.share"

# The PgBouncer releases whose settings Headroom knows (1.18 is Debian 12's).
SUPPORTED_PGBOUNCER = ((1, 18), (1, 29))
_FALLBACK_PGBOUNCER = (1, 18)  # only while reporting a problem: the oldest known


def _pooler_version(
    pooler: v1alpha1.Pooler,
) -> tuple[tuple[int, int], list[connection_budget.Problem]]:
    """The PgBouncer version settings are rendered for: declared, or read from
    the image tag; a disagreement is an error, since a setting the running
    PgBouncer does not know stops it at start-up."""
    from_tag = pgbouncer_params.image_version(pooler.image)
    if pooler.version is not None:
        declared = pgbouncer_params.parse_version(pooler.version)
        if from_tag is not None and from_tag != declared:
            tag = ".".join(map(str, from_tag))
            return declared, [
                connection_budget.Problem(
                    "spec.pooler.version",
                    f"{pooler.version} disagrees with the image tag of spec.pooler.image "
                    f"({pooler.image}, PgBouncer {tag})",
                )
            ]
        return declared, []
    if from_tag is None:
        return _FALLBACK_PGBOUNCER, [
            connection_budget.Problem(
                "spec.pooler.version",
                f"required: the tag of spec.pooler.image ({pooler.image}) does not say "
                'which PgBouncer it runs (e.g. version: "1.24")',
            )
        ]
    low, high = SUPPORTED_PGBOUNCER
    if not low <= from_tag <= high:
        tag = ".".join(map(str, from_tag))
        return _FALLBACK_PGBOUNCER, [
            connection_budget.Problem(
                "spec.pooler.image",
                f"PgBouncer {tag} (from the image tag) is not supported; use 1.18 to 1.29",
            )
        ]
    return from_tag, []


def _pooler_settings(
    pooler: v1alpha1.Pooler, *, version: tuple[int, int]
) -> tuple[dict[str, str], dict[str, int], list[connection_budget.Problem]]:
    problems: list[connection_budget.Problem] = []
    settings = dict(_DEFAULT_SETTINGS)
    if version >= (1, 21) and pooler.pool_mode == "transaction":
        settings["max_prepared_statements"] = _PREPARED_STATEMENTS_DEFAULT
    pinned: dict[str, int] = {}
    for key, value in sorted(pooler.parameters.items()):
        problem = pgbouncer_params.check(key, value, version=version)
        if problem:
            problems.append(connection_budget.Problem(f"spec.pooler.parameters.{key}", problem))
            continue
        if key in pgbouncer_params.SIZING_KEYS:
            pinned[key] = int(value)
        else:
            settings[key] = value.strip()
    return settings, pinned, problems


def _redis_plans(
    spec: v1alpha1.ScalingProfileSpec,
) -> tuple[tuple[RedisPlan, ...], list[connection_budget.Problem]]:
    problems: list[connection_budget.Problem] = []
    if spec.cache is None:
        return (), problems
    plans = []
    seen: set[str] = set()
    for index, inst in enumerate(spec.cache.instances):
        where = f"spec.cache.instances[{index}]"
        if inst.name in seen:
            problems.append(
                connection_budget.Problem(f"{where}.name", f"{inst.name!r} is used twice")
            )
        seen.add(inst.name)
        if inst.name in USES and inst.name != inst.use:
            problems.append(
                connection_budget.Problem(
                    f"{where}.name",
                    f"{inst.name!r} is kept for an instance with use: {inst.name} (the binding "
                    f"key REDIS_{inst.name.upper()}_URL would point at a {inst.use} instance)",
                )
            )
        default_policy = "allkeys-lru" if inst.use == "cache" else "noeviction"
        policy = inst.eviction_policy or default_policy
        if inst.use != "cache" and policy != "noeviction":
            problems.append(
                connection_budget.Problem(
                    f"{where}.evictionPolicy",
                    f"{policy} on a {inst.use} instance ({inst.name}) would silently "
                    f"{v1alpha1.LOST[inst.use]} when memory is full; use {inst.use} needs "
                    "noeviction",
                )
            )
        memory = quantity.parse(inst.memory)  # a valid quantity: the model checked it
        if memory < MIN_REDIS_MEMORY:
            problems.append(
                connection_budget.Problem(
                    f"{where}.memory",
                    f"{inst.memory!r} must be at least {v1alpha1.MIN_REDIS_MEMORY}",
                )
            )
        elif memory.denominator != 1:
            problems.append(
                connection_budget.Problem(
                    f"{where}.memory", f"{inst.memory!r} must be a whole number of bytes"
                )
            )
        limit = _memory_limit(inst.memory)
        settings: dict[str, str] = {}
        for key, value in sorted(inst.config.items()):
            problem = redis_params.check(key, value)
            if problem:
                problems.append(connection_budget.Problem(f"{where}.config.{key}", problem))
            else:
                settings[key] = value
        lists = tuple(sorted({q.list_name for q in spec.queues if q.redis == inst.name}))
        sentinel = inst.sentinel
        if sentinel is not None and sentinel.min_replicas_to_write > sentinel.replicas:
            problems.append(
                connection_budget.Problem(
                    f"{where}.sentinel.minReplicasToWrite",
                    f"{sentinel.min_replicas_to_write} must be <= sentinel.replicas "
                    f"{sentinel.replicas}: the master would refuse every write",
                )
            )
        plans.append(
            RedisPlan(
                name=inst.name,
                use=inst.use,
                eviction_policy=policy,
                memory=inst.memory,
                maxmemory_bytes=limit * MAXMEMORY_PERCENT // 100,
                image=inst.image,
                exporter_image=spec.cache.exporter_image,
                persistence=inst.persistence,
                sentinel_replicas=sentinel.replicas if sentinel else 0,
                settings=settings,
                queue_lists=lists,
                min_replicas_to_write=sentinel.min_replicas_to_write if sentinel else 0,
            )
        )
    return tuple(plans), problems


def _declares_database_time(queue: QueuePlan) -> bool:
    return queue.load is not None and queue.load.database_seconds_per_job is not None


READ_SECONDS_FIELD = "spec.load.readSecondsPerRequest"
READ_POOL_FIELD = "spec.database.readReplicas.readPoolSizePerPod"


def _app_read_pool(
    spec: v1alpha1.ScalingProfileSpec, app: AppPlan, read_load: load_sizing.Load | None
) -> load_sizing.PoolCheck | None:
    """The app pod's read pool (readPoolSizePerPod) against the declared reads,
    carried by the app's floor as its write pool is."""
    rr = spec.database.read_replicas
    if read_load is None or rr is None:
        return None
    return load_sizing.app_pool(
        load=read_load, floor=app.min_replicas, pool_size_per_pod=rr.read_pool_size_per_pod
    )


def _read_load_problems(
    spec: v1alpha1.ScalingProfileSpec,
    app: AppPlan,
    app_read_pool: load_sizing.PoolCheck | None,
    read_load: load_sizing.Load | None,
) -> list[connection_budget.Problem]:
    """Reads declared without a read pool, or more than the app's read pool carries."""
    if read_load is None:
        return []
    rr = spec.database.read_replicas
    if rr is None:
        return [
            connection_budget.Problem(
                READ_SECONDS_FIELD,
                "the profile declares no spec.database.readReplicas: there is no read pool "
                "to carry the reads (leave it out and databaseSecondsPerRequest is all "
                "on the primary)",
            )
        ]
    if app_read_pool is None or app_read_pool.fits:
        return []
    return [
        connection_budget.Problem(
            READ_POOL_FIELD,
            f"{rr.read_pool_size_per_pod} read connections per app pod; "
            + load_sizing.shortfall_text(app_read_pool, load=read_load)
            + f"; the peak is taken as carried by the app's floor, {app.min_replicas} pods",
        )
    ]


def job_loads(queues: tuple[QueuePlan, ...]) -> list[tuple[v1alpha1.QueueLoad, int]]:
    """Each queue's declared jobs and its workers' database pool (load_sizing.Load.with_jobs)."""
    return [(q.load, q.database_pool_size) for q in queues if q.load is not None]


def _worker_loads(
    queues: tuple[QueuePlan, ...], *, load: load_sizing.Load | None
) -> tuple[load_sizing.WorkerCheck, ...]:
    """The worker slots of each queue that declares its jobs, at spec.load's chance of
    waiting (the default without one)."""
    target = load.target_wait_probability if load else v1alpha1.DEFAULT_WAIT_PROBABILITY
    return tuple(
        load_sizing.workers(
            queue=q.name,
            index=index,
            spec=q.load,
            max_pods=q.max_replicas,
            target=target,
            database_pool_size=q.database_pool_size,
        )
        for index, q in enumerate(queues)
        if q.load is not None
    )


def _queue_memory(
    queues: tuple[QueuePlan, ...], *, redis: tuple[RedisPlan, ...]
) -> tuple[queue_memory.InstanceCheck, ...]:
    """Each queue instance that a queue declaring its jobs' bytes (load.redis) points at:
    its maxmemory against every such queue on it at peak."""
    found = []
    for index, instance in enumerate(redis):
        on_it = [(i, q) for i, q in enumerate(queues) if q.redis == instance.name]
        declared = [
            queue_memory.QueueJobs(
                queue=q.name,
                index=i,
                memory=q.load.redis,
                jobs_per_second=q.load.peak_jobs_per_second,
                seconds_per_job=q.load.seconds_per_job,
                slots=q.max_replicas * q.load.concurrency_per_pod,
            )
            for i, q in on_it
            if q.load is not None and q.load.redis is not None
        ]
        if instance.use != "queue" or not declared:
            continue
        found.append(
            queue_memory.InstanceCheck(
                name=instance.name,
                index=index,
                maxmemory_bytes=instance.maxmemory_bytes,
                memory=instance.memory,
                limit_bytes=_memory_limit(instance.memory),
                queues=tuple(declared),
                undeclared=tuple(
                    q.name for _, q in on_it if q.load is None or q.load.redis is None
                ),
            )
        )
    return tuple(found)


def _memory_limit(memory: str) -> int:
    """A Redis container's memory limit in bytes (at least the smallest allowed)."""
    return max(math.ceil(quantity.parse(memory)), MIN_REDIS_MEMORY)


def _queue_plans(
    spec: v1alpha1.ScalingProfileSpec, *, redis: tuple[RedisPlan, ...], facts: Facts
) -> tuple[tuple[QueuePlan, ...], list[connection_budget.Problem]]:
    problems: list[connection_budget.Problem] = []
    by_name = {r.name: r for r in redis}
    plans = []
    seen: set[str] = set()
    for index, queue in enumerate(spec.queues):
        where = f"spec.queues[{index}]"
        if queue.name in seen:
            problems.append(
                connection_budget.Problem(f"{where}.name", f"{queue.name!r} is used twice")
            )
        seen.add(queue.name)
        target = by_name.get(queue.redis)
        if target is None:
            known = ", ".join(sorted(by_name)) or "none declared"
            problems.append(
                connection_budget.Problem(
                    f"{where}.redis",
                    f"{queue.redis!r} is not a spec.cache.instances name ({known})",
                )
            )
        elif target.use != "queue":
            why = (
                "evicts keys under memory pressure (jobs would be lost)"
                if target.use == "cache"
                else "keeps rate limits and quotas, not jobs"
            )
            problems.append(
                connection_budget.Problem(
                    f"{where}.redis",
                    f"{queue.redis!r} has use: {target.use} and {why}; point the queue at an "
                    "instance with use: queue",
                )
            )
        if queue.replicas.min > queue.replicas.max:
            problems.append(
                connection_budget.Problem(
                    f"{where}.replicas.min",
                    f"{queue.replicas.min} must be <= {where}.replicas.max {queue.replicas.max}",
                )
            )
        scaler = "keda" if facts.keda else "hpa"
        plans.append(
            QueuePlan(
                name=queue.name,
                redis=queue.redis,
                list_name=queue.list_name,
                image=queue.image,
                command=tuple(queue.command),
                args=tuple(queue.args),
                requests=dict(queue.resources.requests),
                limits=dict(queue.resources.limits),
                # An HPA cannot scale to zero; only KEDA can.
                min_replicas=queue.replicas.min if scaler == "keda" else max(1, queue.replicas.min),
                max_replicas=queue.replicas.max,
                backlog_per_worker=queue.backlog_per_worker,
                activation_backlog=queue.activation_backlog,
                grace_seconds=queue.termination_grace_period_seconds,
                database_pool_size=queue.database_pool_size,
                cpu_utilization=queue.cpu_utilization,
                scaler=scaler,
                database_read_pool_size=queue.database_read_pool_size,
                load=queue.load,
            )
        )
    return tuple(plans), problems


def _min_pool_problems(
    settings: dict[str, str], budget: connection_budget.ConnectionBudget
) -> list[connection_budget.Problem]:
    """PgBouncer never opens more than the pool, so a larger min_pool_size would
    be capped without a word: say so instead."""
    min_pool = settings.get("min_pool_size")
    if min_pool is None or int(min_pool) <= budget.default_pool_size:
        return []
    return [
        connection_budget.Problem(
            "spec.pooler.parameters.min_pool_size",
            f"{min_pool} is above default_pool_size {budget.default_pool_size}, the pool the "
            "plan gives each pooler pod (PgBouncer would silently keep at most the pool); "
            "lower it, or pin a larger default_pool_size that fits the budget",
        )
    ]


def _name_problems(profile: v1alpha1.ScalingProfile) -> list[connection_budget.Problem]:
    """Child names built from the profile's and the instances' names must be
    valid Kubernetes names; say which field to shorten, and by how much."""
    spec = profile.spec
    children = names.ChildNames.of(profile)
    candidates: list[tuple[str, list[names.LongName]]] = [
        (
            f"spec.cache.instances[{index}].name",
            children.redis_long_names(inst.name, sentinel=inst.sentinel is not None),
        )
        for index, inst in enumerate(spec.cache.instances if spec.cache else [])
    ]
    candidates += [
        (f"spec.queues[{index}].name", children.worker_long_names(queue.name))
        for index, queue in enumerate(spec.queues)
    ]
    problems = []
    for field_path, derived in candidates:
        worst = max(derived, key=lambda n: len(n.name) - n.limit)
        if worst.too_long:
            problems.append(
                connection_budget.Problem(
                    field_path,
                    f"the {worst.what} name {worst.name!r} would be {len(worst.name)} "
                    f"characters (limit {worst.limit}); shorten metadata.name or this name "
                    f"by {len(worst.name) - worst.limit}",
                )
            )
    return problems


def _sizing(budget: connection_budget.ConnectionBudget) -> dict[str, str]:
    return {
        "default_pool_size": str(budget.default_pool_size),
        "reserve_pool_size": str(budget.reserve_pool_size),
        "max_db_connections": str(budget.max_db_connections),
        "max_client_conn": str(budget.max_client_conn),
    }


def _pooler_plan(
    pooler: v1alpha1.Pooler, *, instances: int, version: tuple[int, int], settings: dict[str, str]
) -> PoolerPlan:
    single = instances == 1
    return PoolerPlan(
        instances=instances,
        pool_mode=pooler.pool_mode,
        image=pooler.image,
        exporter_image=pooler.exporter_image,
        version=version,
        # One pod at a time: a surge pod when there is only one (no downtime),
        # else one old pod replaced at a time (see budget.ROLLOUT_EXTRA_PODS).
        max_surge=1 if single else 0,
        max_unavailable=0 if single else 1,
        min_ready_seconds=connection_budget.POOLER_MIN_READY_SECONDS,
        grace_seconds=connection_budget.POOLER_GRACE_SECONDS,
        settings=dict(sorted(settings.items())),
    )


def plan(profile: v1alpha1.ScalingProfile, *, facts: Facts | None = None) -> Plan:
    """Compute the whole plan for ``profile``; never raises for a parsed profile."""
    facts = facts or Facts()
    spec = profile.spec
    app, problems = _app_plan(spec.app)
    redis, redis_problems = _redis_plans(spec)
    queues, queue_problems = _queue_plans(spec, redis=redis, facts=facts)
    problems += redis_problems + queue_problems + _name_problems(profile)
    problems += profile_checks.problems(spec)
    version, version_problems = _pooler_version(spec.pooler)
    problems += version_problems
    settings, pinned, setting_problems = _pooler_settings(spec.pooler, version=version)
    problems += setting_problems

    db = spec.database
    if db.ssl_mode in ("verify-ca", "verify-full") and db.server_ca_secret is None:
        problems.append(
            connection_budget.Problem(
                "spec.database.serverCASecret",
                f"is required when spec.database.sslMode is {db.ssl_mode} (the CA that "
                "signed the primary's certificate)",
            )
        )
    if db.superuser_reserved_connections + db.reserved_connections >= db.max_connections:
        problems.append(
            connection_budget.Problem(
                "spec.database.maxConnections",
                f"{db.max_connections} leaves nothing after "
                f"superuserReservedConnections {db.superuser_reserved_connections} + "
                f"reservedConnections {db.reserved_connections}",
            )
        )
    clients = (
        connection_budget.ClientGroup(
            label="app",
            field="spec.app.replicas.max" if spec.app.replicas else "spec.app.capacity",
            max_pods=app.max_replicas,
            connections_per_pod=app.pool_size_per_pod,
            pool_field="spec.app.poolSizePerPod",
        ),
        *(
            connection_budget.ClientGroup(
                label=f"worker {q.name}",
                field=f"spec.queues[{index}].replicas.max",
                max_pods=q.max_replicas,
                connections_per_pod=q.database_pool_size,
                pool_field=f"spec.queues[{index}].databasePoolSize",
            )
            for index, q in enumerate(queues)
            if q.database_pool_size
        ),
    )
    key = f"{profile.namespace}/{profile.name}"
    primary = servers.primary(profile.namespace, db)
    grant = facts.grants.get(primary)
    metrics_source = database_metrics.source(spec, cnpg=facts.cnpg)
    # what postgres_exporter holds on each server (kept, like direct connections)
    exporter = database_metrics.exporter_connections(metrics_source)
    # the room the primary has for every pooler; the read fallback's default
    # is a tenth of it, whoever else is there
    primary_room = (
        db.max_connections - db.superuser_reserved_connections - db.reserved_connections - exporter
    )
    declared = load_sizing.declared(spec.load)
    # a request's reads (readSecondsPerRequest) go to the read pool, the rest to the primary
    load, read_load = (
        load_sizing.split_reads(declared, read_seconds=spec.load.read_seconds_per_request)
        if declared is not None and spec.load is not None
        else (None, None)
    )
    read, read_problems = read_plan.read_plan(
        profile,
        cnpg=facts.cnpg,
        cnpg_cluster=facts.cnpg_cluster,
        primary_available=primary_room,
        exporter_connections=exporter,
        app_max_pods=app.max_replicas,
        app_field=clients[0].field,
        queues=tuple(
            (index, queue, plan.max_replicas)
            for index, (queue, plan) in enumerate(zip(spec.queues, queues, strict=True))
        ),
        session_mode=spec.pooler.pool_mode == "session",
        grants=facts.grants,
        load=read_load,
    )
    problems += read_problems
    app_read_pool = _app_read_pool(spec, app, read_load)
    problems += _read_load_problems(spec, app, app_read_pool, read_load)
    app_load_pool = None
    if load is not None:
        app_load_pool = load_sizing.app_pool(
            load=load, floor=app.min_replicas, pool_size_per_pod=app.pool_size_per_pod
        )
        if not app_load_pool.fits:
            problems.append(
                connection_budget.Problem(
                    "spec.app.poolSizePerPod",
                    f"{app.pool_size_per_pod} connections per app pod; "
                    + load_sizing.shortfall_text(app_load_pool, load=load)
                    + f"; the peak is taken as carried by the app's floor, {app.min_replicas} "
                    "pods, before an autoscaler adds any",
                )
            )
    worker_loads = _worker_loads(queues, load=load)
    problems += [
        connection_budget.Problem(f"spec.queues[{w.index}].replicas.max", w.shortfall())
        for w in worker_loads
        if not w.fits
    ]
    memory_checks = _queue_memory(queues, redis=redis)
    problems += [
        connection_budget.Problem(f"spec.cache.instances[{m.index}].memory", m.shortfall())
        for m in memory_checks
        # a backlog without bound is the workers' refusal (replicas.max), not the memory's
        if not m.fits and math.isfinite(m.needed())
    ]
    fallback = read.fallback_connections if read else 0
    given = connection_budget.BudgetInput(
        max_connections=db.max_connections,
        superuser_reserved=db.superuser_reserved_connections,
        other_reserved=db.reserved_connections + exporter,
        pooler_instances=spec.pooler.instances,
        session_mode=spec.pooler.pool_mode == "session",
        clients=clients,
        pinned=pinned,
        shared=grant.others if grant else (),
        reserved_label=connection_budget.DIRECT_LABEL
        + (
            f" (spec.database.reservedConnections {db.reserved_connections}) and "
            f"{exporter} for postgres_exporter"
            if exporter
            else ""
        ),
        read_fallback=fallback,
        profile=key,
        declared_minimum=db.share.minimum,
        declared_maximum=db.share.maximum,
        share_field=SHARE_FIELD,
        # the workers' jobs that declare their database time share the server pool as
        # load; the other workers' pools keep their whole ceiling
        load=load.with_jobs(job_loads(queues)) if load else None,
        undeclared_load_connections=sum(
            q.max_replicas * q.database_pool_size
            for q in queues
            if q.database_pool_size and not _declares_database_time(q)
        ),
    )
    pool, range_problems = connection_budget.pool_range(given)
    problems += range_problems
    if grant is not None:
        if grant.refusal:
            problems.append(connection_budget.Problem(grant.refusal_field, grant.refusal))
        share = pool.minimum if grant.refusal else grant.connections
        given = dataclasses.replace(given, share=share, share_text=grant.text)
    budget, budget_problems = connection_budget.compute(given)
    demands = (
        connection_budget.Demand(
            server=primary,
            max_connections=db.max_connections,
            superuser_reserved=db.superuser_reserved_connections,
            max_connections_field="spec.database.maxConnections",
            fixed=db.reserved_connections + exporter + fallback,
            fixed_text=_fixed_text(db.reserved_connections, fallback, exporter=exporter),
            pool=pool,
        ),
        *(read.demands if read else ()),
    )
    problems += budget_problems
    problems += _min_pool_problems(settings, budget)
    settings["pool_mode"] = spec.pooler.pool_mode
    settings.update(_sizing(budget))
    settings.setdefault("server_tls_sslmode", db.ssl_mode)
    pooler = _pooler_plan(
        spec.pooler, instances=spec.pooler.instances, version=version, settings=settings
    )
    read_pooler = None
    if read is not None:
        read_settings = dict(settings)
        read_settings.update(_sizing(read.budget))
        # After a failed login to a dead replica PgBouncer refuses new server
        # connections of the whole pool for this long (default 15 s), RELOAD or
        # not: keep it short so the survivors take the reads at once.
        read_settings.setdefault("server_login_retry", "1")
        read_pooler = _pooler_plan(
            spec.pooler, instances=read.instances, version=version, settings=read_settings
        )
    metrics = database_metrics.plan(
        spec,
        found=metrics_source,
        replicas=tuple(
            database_metrics.Server(r.name, r.host, r.port, r.max_connections)
            for r in (read.replicas if read else ())
            if r.name != read_plan.NO_REPLICA
        ),
    )
    if metrics is not None and spec.alerts.enabled:
        problems += [
            connection_budget.Problem(field, message)
            for field, message in monitoring.count_problems(
                spec.alerts.database,
                tuple((s.name, s.max_connections) for s in metrics.servers)
                or (
                    (
                        "CloudNativePG",
                        (facts.cnpg_cluster.max_connections if facts.cnpg_cluster else None)
                        or db.max_connections,
                    ),
                ),
            )
        ]
    alerts = _alerts_plan(
        spec,
        budget=budget,
        read=read,
        redis=redis,
        queues=queues,
        app=app,
        metrics=metrics,
        cnpg_cluster=facts.cnpg_cluster,
    )
    return Plan(
        name=profile.name,
        namespace=profile.namespace,
        uid=profile.uid,
        generation=profile.generation,
        app=app,
        database=db,
        pooler=pooler,
        budget=budget,
        autoscaling=AutoscalingPlan(
            enabled=spec.autoscaling.enabled,
            min_replicas=app.min_replicas,
            max_replicas=app.max_replicas,
            cpu_utilization=spec.autoscaling.cpu_utilization,
            scale_down_stabilization_seconds=spec.autoscaling.scale_down_stabilization_seconds,
            scale_up_stabilization_seconds=spec.autoscaling.scale_up_stabilization_seconds,
            max_unavailable=spec.autoscaling.max_unavailable,
        ),
        redis=redis,
        queues=queues,
        network=spec.network,
        facts=facts,
        problems=tuple(problems),
        read=read,
        read_pooler=read_pooler,
        alerts=alerts,
        buckets=object_storage.bucket_plans(profile, cosi_version=facts.cosi),
        demands=demands,
        share_weight=db.share.weight,
        load=load,
        app_load_pool=app_load_pool,
        read_load=read_load if read is not None else None,
        app_read_pool=app_read_pool,
        worker_loads=worker_loads,
        queue_memory=memory_checks,
        database_metrics=metrics,
    )


def _fixed_text(reserved: int, fallback: int, *, exporter: int) -> str:
    parts = (
        [f"{reserved} kept for direct connections (spec.database.reservedConnections)"]
        if reserved
        else []
    )
    if exporter:
        parts.append(f"{exporter} for postgres_exporter")
    if fallback:
        parts.append(
            f"{fallback} for its read pool when every replica is out "
            "(spec.database.readReplicas.whenAllLagging primary)"
        )
    return " and ".join(parts)


def _alerts_plan(
    spec: v1alpha1.ScalingProfileSpec,
    *,
    budget: connection_budget.ConnectionBudget,
    read: read_plan.ReadPlan | None,
    redis: tuple[RedisPlan, ...],
    queues: tuple[QueuePlan, ...],
    app: AppPlan,
    metrics: database_metrics.DatabaseMetricsPlan | None,
    cnpg_cluster: read_plan.CnpgCluster | None,
) -> monitoring.AlertsPlan | None:
    pools: list[tuple[str, int]] = []
    # CloudNativePG runs the poolers of mode cnpg: its own exporter, its own names
    cnpg_poolers = read is not None and read.cnpg_poolers
    if not cnpg_poolers:
        pools.append(("rw", budget.max_db_connections))
        if read is not None:
            pools.append(("ro", read.budget.max_db_connections))
    return monitoring.plan(
        spec.alerts,
        database=spec.database.name,
        pools=tuple(pools),
        available=budget.available,
        planned_connections=budget.server_connections + budget.read_fallback,
        redis=tuple((r.name, r.use, r.maxmemory_bytes) for r in redis),
        queues=tuple(
            monitoring.QueueLimits(
                name=q.name,
                redis=q.redis,
                list_name=q.list_name,
                max_replicas=q.max_replicas,
                backlog_per_worker=q.backlog_per_worker,
                scaler=q.scaler,
            )
            for q in queues
        ),
        app=monitoring.AppLimits(
            deployment=app.deployment,
            max_replicas=app.max_replicas,
            autoscaled=spec.autoscaling.enabled,
            memory_bytes=monitoring.memory_bytes(spec.alerts.app.memory),
        ),
        # the operator measures the replicas (not CNPG's, and only where it may read them)
        read_replicas=monitoring.ReadReplicaLimits(
            max_lag_seconds=read.max_lag_seconds, when_all_lagging=read.when_all_lagging
        )
        if read is not None and not read.cnpg_poolers and spec.database.read_limits
        else None,
        metrics=metrics,
        superuser_reserved=spec.database.superuser_reserved_connections,
        cnpg_max_connections=(cnpg_cluster.max_connections if cnpg_cluster else None)
        or spec.database.max_connections,
        max_lag_seconds=read.max_lag_seconds if read is not None else None,
    )
