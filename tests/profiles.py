"""Profiles shared by unit and e2e tests: a valid base and a table of bad ones.

Each bad profile names the field its rejection message must mention, so both
the planner (unit) and the API server + webhook (e2e) are held to the same
messages.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

# One valid sample value for every allowed override, chosen to differ from Redis's
# defaults and from what Headroom renders (timeout 0, tcp-keepalive 60), so that a
# CONFIG GET equal to it proves the override took effect.
REDIS_SAMPLES = {
    "timeout": "300",
    "tcp-keepalive": "120",
    "hz": "25",
    "maxclients": "500",
    "maxmemory-samples": "10",
    "appendfsync": "always",
    "slowlog-log-slower-than": "5000",
    "slowlog-max-len": "256",
    "latency-monitor-threshold": "100",
    "lazyfree-lazy-eviction": "yes",
    "lazyfree-lazy-expire": "yes",
    "lazyfree-lazy-user-del": "yes",
    # Debian's redis-server is linked against the system jemalloc and refuses
    # "activedefrag yes" (see test_activedefrag_yes); "no" still proves the key parses.
    "activedefrag": "no",
    "notify-keyspace-events": "Elg",
}


def base(name: str = "shop", namespace: str = "default", **spec_overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "ScalingProfile",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "app": {"deployment": "web", "replicas": {"min": 2, "max": 10}, "poolSizePerPod": 5},
            "database": {
                "host": "db",  # a Service in the profile's namespace: one server per test
                "name": "shop",
                "credentialsSecret": {"name": "db-credentials"},
                "maxConnections": 100,
                "superuserReservedConnections": 3,
            },
            "pooler": {"instances": 2, "poolMode": "transaction"},
        },
    }
    for path, value in spec_overrides.items():
        set_path(body["spec"], path, value)
    return body


def set_path(root: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = root
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    if value is _DELETE:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


_DELETE = object()


def queue_with_load(*, pool: int = 1, most: int = 10, **load: Any) -> dict[str, Any]:
    """spec.cache (``jobs``, 128Mi) and one queue ``mail`` whose workers (at most
    ``most``, ``pool`` database connections each) declare ``load``."""
    queue = {"name": "mail", "redis": "jobs", "listName": "mail", "image": "w:1"}
    queue |= {"replicas": {"min": 1, "max": most}, "databasePoolSize": pool, "load": load}
    return {"cache": instance(memory="128Mi"), "queues": [queue]}


def instance(**fields: Any) -> dict[str, Any]:
    """spec.cache with one queue instance ``jobs`` carrying ``fields``."""
    return {"instances": [{"name": "jobs", "use": "queue", **fields}]}


def cache_profile(*, uid: str, **fields: Any) -> dict[str, Any]:
    """A profile (with ``uid``, as stored) whose spec.cache has one ``use: cache``
    instance ``cache`` of 256Mi carrying ``fields``."""
    cache = {"name": "cache", "use": "cache", "memory": "256Mi", **fields}
    body = base(cache={"instances": [cache]})
    body["metadata"]["uid"] = uid
    return body


def worker_resources(**resources: dict[str, Any]) -> dict[str, Any]:
    """spec.cache and one queue ``mail`` whose workers ask for ``resources``."""
    queue = {"name": "mail", "redis": "jobs", "listName": "mail", "image": "w:1"}
    return {"cache": instance(), "queues": [{**queue, "resources": resources}]}


COSI_BUCKET = {"bucketClassName": "standard", "bucketAccessClassName": "readwrite"}


def buckets(*entries: dict[str, Any]) -> dict[str, Any]:
    """spec.storage with these buckets."""
    return {"buckets": list(entries)}


def cosi_bucket(name: str = "uploads", **fields: Any) -> dict[str, Any]:
    return {"name": name, "cosi": dict(COSI_BUCKET), **fields}


def s3_bucket(name: str = "files", **s3_fields: Any) -> dict[str, Any]:
    s3 = {
        "endpoint": "https://acct.r2.cloudflarestorage.com",
        "region": "auto",
        "bucketName": "space-kontext-files",
        "credentialsSecret": {"name": "r2-credentials"},
        **s3_fields,
    }
    return {"name": name, "s3": s3}


def builtin_bucket(name: str = "photos", **fields: Any) -> dict[str, Any]:
    return {"name": name, "builtin": {}, **fields}


def external_replicas(*hosts: dict[str, Any]) -> dict[str, Any]:
    """spec.database.readReplicas of mode external with ``hosts``."""
    return {"mode": "external", "hosts": list(hosts)}


# (id, spec overrides, text the rejection must contain)
BAD: list[tuple[str, dict[str, Any], str]] = [
    ("bucket-name-uppercase", {"storage": buckets(cosi_bucket("Avatars"))}, "buckets[0].name"),
    ("bucket-name-too-short", {"storage": buckets(cosi_bucket("ab"))}, "buckets[0].name"),
    ("bucket-name-double-dot", {"storage": buckets(cosi_bucket("a..b"))}, "adjacent dots"),
    ("bucket-name-ip", {"storage": buckets(cosi_bucket("192.168.1.10"))}, "not an IP address"),
    (
        "bucket-any-origin-with-credentials",
        {"storage": buckets(cosi_bucket(cors={"allowedOrigins": ["*"], "allowCredentials": True}))},
        "'*' cannot be combined with",
    ),
    (
        "bucket-unknown-provider-field",
        {"storage": buckets(cosi_bucket(cosi={**COSI_BUCKET, "driverName": "x"}))},
        "spec.storage.buckets[0].cosi.driverName",
    ),
    (
        "bucket-two-providers",
        {"storage": buckets({**cosi_bucket(), "s3": s3_bucket()["s3"]})},
        "set exactly one provider",
    ),
    ("bucket-no-provider", {"storage": buckets({"name": "uploads"})}, "set exactly one provider"),
    (
        "builtin-buckets-two-servers",
        {
            "storage": buckets(
                builtin_bucket("avatars", builtin={"storage": {"size": "20Gi"}}),
                builtin_bucket("photos", builtin={"storage": {"size": "5Gi"}}),
            )
        },
        "spec.storage.buckets[1].builtin: differs from spec.storage.buckets[0].builtin",
    ),
    (
        "builtin-volume-size-zero",
        {"storage": buckets(builtin_bucket(builtin={"storage": {"size": "0"}}))},
        "spec.storage.buckets[0].builtin.storage.size",
    ),
    (
        "builtin-unknown-field",
        {"storage": buckets(builtin_bucket(builtin={"replicas": 3}))},
        "spec.storage.buckets[0].builtin.replicas",
    ),
    (
        "bucket-listed-twice",
        {"storage": buckets(cosi_bucket(), cosi_bucket())},
        "spec.storage.buckets",
    ),
    (
        "bucket-s3-name-rules",
        {"storage": buckets(s3_bucket(bucketName="Space_Files"))},
        "spec.storage.buckets[0].s3.bucketName",
    ),
    (
        "alerts-warning-over-critical",
        {"alerts.pooler.connectionsWarningPercent": 95},
        "connectionsWarningPercent",
    ),
    ("alerts-reserved-label", {"alerts.labels": {"severity": "page"}}, "spec.alerts.labels"),
    ("alerts-bad-label-name", {"alerts.labels": {"team-name": "a"}}, "spec.alerts.labels"),
    ("alerts-bad-duration", {"alerts.app.for": "5 minutes"}, "spec.alerts.app.for"),
    # exclusiveMinimum: the API server must refuse 0 itself (structural schema)
    ("alerts-zero-latency", {"alerts.app.p95LatencySeconds": 0}, "p95LatencySeconds"),
    (
        "session-ceiling-over-budget",
        {"app.replicas.max": 40, "app.poolSizePerPod": 10, "pooler.poolMode": "session"},
        "app ceiling 40 pods x 10 connections per pod = 400 session connections > 89 "
        "available on the primary (max_connections 100 - 3 reserved - 8 kept for direct "
        "connections (spec.database.reservedConnections 5) and 3 for postgres_exporter)",
    ),
    ("min-over-max", {"app.replicas.min": 8, "app.replicas.max": 4}, "spec.app.replicas.min"),
    ("negative-pool", {"app.poolSizePerPod": -1}, "poolSizePerPod"),
    ("zero-instances", {"pooler.instances": 0}, "instances"),
    ("unknown-pool-mode", {"pooler.poolMode": "statement"}, "poolMode"),
    ("bad-host", {"database.host": "db;host=evil"}, "host"),
    (
        "reserved-exceeds-max",
        {"database.maxConnections": 10, "database.reservedConnections": 8},
        "spec.database.",
    ),
    (
        "unknown-parameter",
        {"pooler.parameters": {"auth_type": "trust"}},
        "spec.pooler.parameters.auth_type",
    ),
    (
        "newline-injection",
        {"pooler.parameters": {"server_idle_timeout": "600\nauth_type = trust"}},
        "spec.pooler.parameters.server_idle_timeout",
    ),
    (
        "pinned-pool-over-budget",
        {"pooler.parameters": {"default_pool_size": "90"}},
        "spec.pooler.parameters.default_pool_size",
    ),
    (
        "pinned-max-client-too-small",
        {"pooler.parameters": {"max_client_conn": "20"}},
        "spec.pooler.parameters.max_client_conn",
    ),
    (
        "version-too-old-for-setting",
        {
            "pooler.image": "registry.example/pgbouncer:1.18.0",
            "pooler.parameters": {"max_prepared_statements": "100"},
        },
        "spec.pooler.parameters.max_prepared_statements",
    ),
    ("verify-without-ca", {"database.sslMode": "verify-full"}, "spec.database.serverCASecret"),
    (
        "both-replicas-and-capacity",
        {"app.capacity": {"targetConcurrentUsers": 1000, "usersPerPod": 100}},
        "spec.app",
    ),
    (
        "queue-on-evicting-instance",
        {
            "cache": {
                "instances": [{"name": "jobs", "use": "queue", "evictionPolicy": "allkeys-lru"}]
            }
        },
        "evictionPolicy",
    ),
    (
        "queue-on-cache-instance",
        {
            "cache": {"instances": [{"name": "hot", "use": "cache"}]},
            "queues": [{"name": "mail", "redis": "hot", "listName": "mail", "image": "w:1"}],
        },
        "spec.queues[0].redis",
    ),
    (
        "worker-min-over-max",
        {
            "cache": {"instances": [{"name": "jobs", "use": "queue"}]},
            "queues": [
                {
                    "name": "mail",
                    "redis": "jobs",
                    "listName": "mail",
                    "image": "w:1",
                    "replicas": {"min": 5, "max": 2},
                }
            ],
        },
        "replicas.min",
    ),
    (
        "negative-redis-memory",
        {"cache": {"instances": [{"name": "hot", "use": "cache", "memory": "-1Gi"}]}},
        "memory",
    ),
    (
        "redis-config-newline",
        {
            "cache": {
                "instances": [
                    {"name": "hot", "use": "cache", "config": {"timeout": "0\nrequirepass x"}}
                ]
            }
        },
        "spec.cache.instances[0].config.timeout",
    ),
    (
        "workers-break-session-budget",
        {
            "pooler.poolMode": "session",
            "cache": {"instances": [{"name": "jobs", "use": "queue"}]},
            "queues": [
                {
                    "name": "mail",
                    "redis": "jobs",
                    "listName": "mail",
                    "image": "w:1",
                    "replicas": {"min": 0, "max": 30},
                    "databasePoolSize": 2,
                }
            ],
        },
        # the app alone fits (50 of 89): the queue tips it over and is named
        "spec.queues[0].replicas.max: app ceiling 10 pods x 5 connections per pod + worker mail "
        "ceiling 30 pods x 2 connections per pod = 110 session connections > 89 available",
    ),
    (
        "queue-database-time-longer-than-the-job",
        queue_with_load(peakJobsPerSecond=5, secondsPerJob=0.2, databaseSecondsPerJob=0.5),
        # the model's message and the CRD rule's (spec.queues[]) share this
        "].load.secondsPerJob",
    ),
    (
        "queue-database-time-without-a-pool",
        queue_with_load(pool=0, peakJobsPerSecond=5, secondsPerJob=0.2, databaseSecondsPerJob=0.1),
        "].databasePoolSize > 0",
    ),
    (
        "load-reads-as-long-as-the-request",
        {
            "database.readReplicas": external_replicas({"host": "r1"}),
            "load": {
                "peakRequestsPerSecond": 10,
                "databaseSecondsPerRequest": 0.05,
                "readSecondsPerRequest": 0.05,
            },
        },
        # the model's message and the CRD rule's share this
        "must be < spec.load.databaseSecondsPerRequest",
    ),
    (
        "load-reads-without-read-replicas",
        {
            "load": {
                "peakRequestsPerSecond": 10,
                "databaseSecondsPerRequest": 0.05,
                "readSecondsPerRequest": 0.02,
            }
        },
        "spec.load.readSecondsPerRequest: the profile declares no spec.database.readReplicas",
    ),
    (
        "queue-jobs-past-maxmemory",
        queue_with_load(
            peakJobsPerSecond=5,
            secondsPerJob=0.2,
            redis={"bytesPerJob": 4096, "keptCompleted": 100_000, "keptFailed": 1000},
        ),
        # 100,000 kept jobs of 4 KiB against the 96Mi maxmemory of a 128Mi instance
        "spec.cache.instances[0].memory: its queues need",
    ),
    (
        "queue-job-of-no-bytes",
        queue_with_load(
            peakJobsPerSecond=5,
            secondsPerJob=0.2,
            redis={"bytesPerJob": 0, "keptCompleted": 10, "keptFailed": 10},
        ),
        "].load.redis.bytesPerJob",
    ),
    (
        "too-many-pooler-pods",
        {"database.maxConnections": 10, "pooler.instances": 4},
        "spec.pooler.instances",
    ),
    # Inputs the API server used to accept and then refuse in a child at apply time
    # (issue 9): each is now refused at admission, naming the field.
    (
        "storage-class-newline",
        {"cache": instance(persistence={"storageClassName": "fast\nfoo: bar"})},
        "spec.cache.instances[0].persistence.storageClassName",
    ),
    (
        "storage-class-uppercase",
        {"cache": instance(persistence={"storageClassName": "Fast"})},
        "spec.cache.instances[0].persistence.storageClassName",
    ),
    (
        "persistence-size-zero",
        {"cache": instance(persistence={"size": "0"})},
        "spec.cache.instances[0].persistence.size",
    ),
    (
        "resource-name-gpu",
        worker_resources(requests={"gpu": "1"}),
        "resource names must be cpu, memory, ephemeral-storage",
    ),
    (
        "resource-name-newline",
        worker_resources(requests={"cpu\nmemory": "1"}),
        "resource names must be cpu, memory, ephemeral-storage",
    ),
    (
        "requests-above-limits",
        worker_resources(requests={"cpu": "2"}, limits={"cpu": "1"}),
        "requests.cpu 2 must be <= limits.cpu 1",
    ),
    (
        "extended-resource-without-limit",
        worker_resources(requests={"nvidia.com/gpu": "1"}),
        "limits.nvidia.com/gpu is required",
    ),
    (
        "quantity-uppercase-k",
        worker_resources(requests={"memory": "64000K"}),
        "spec.queues[0].resources.requests.memory",
    ),
    (
        "memory-with-5000-digits",
        {"cache": instance(memory="1" * 5000)},
        "spec.cache.instances[0].memory",
    ),
    (
        "capacity-min-above-ceiling",
        {
            "app.replicas": _DELETE,
            "app.capacity": {"targetConcurrentUsers": 1000, "usersPerPod": 100, "minReplicas": 30},
        },
        "30 is above the ceiling ceil(targetConcurrentUsers 1000 / usersPerPod 100) = 10 pods",
    ),
    (
        "min-pool-size-above-pool",
        {"pooler.parameters": {"min_pool_size": "60"}},
        "spec.pooler.parameters.min_pool_size",
    ),
    (
        "huge-string",
        {"cache": instance(persistence={"storageClassName": "a" * 1024 * 1024})},
        "spec.cache.instances[0].persistence.storageClassName",
    ),
    ("integer-as-string", {"app.replicas.max": "10"}, "spec.app.replicas.max"),
    ("boolean-as-string", {"database.readLimits": "false"}, "spec.database.readLimits"),
    (
        "replica-host-with-newline",
        {"database.readReplicas": external_replicas({"host": "r1\nauth_type = trust"})},
        "spec.database.readReplicas.hosts[0].host",
    ),
    (
        "replica-lag-bound-zero",
        {"database.readReplicas": {**external_replicas({"host": "r1"}), "maxLagSeconds": 0}},
        "spec.database.readReplicas.maxLagSeconds",
    ),
    (
        "replica-host-twice",
        {"database.readReplicas": external_replicas({"host": "r1"}, {"host": "r1"})},
        "spec.database.readReplicas.hosts[1].host",
    ),
    (
        "replica-ports-differ",
        {"database.readReplicas": external_replicas({"host": "r1"}, {"host": "r2", "port": 6543})},
        "spec.database.readReplicas.hosts[1].port",
    ),
    (
        # 10 - 3 superuser - 5 reserved - 4 lag probes - 3 for postgres_exporter leaves
        # nothing for 3 read-pooler pods
        "read-pool-cannot-fit-replica",
        {"database.readReplicas": external_replicas({"host": "r1", "maxConnections": 10})},
        "spec.database.readReplicas.pooler.instances: 3 pooler pods need at least 1 server "
        "connection each, but only -5 available on the replica",
    ),
    (
        "replica-mode-without-its-section",
        {"database.readReplicas": {"mode": "external"}},
        "spec.database.readReplicas.hosts",
    ),
    (
        "standby-below-primary-max-connections",
        {
            "database.readReplicas": {
                "mode": "streaming",
                "streaming": {"replicationSecret": {"name": "repl"}, "maxConnections": 50},
            }
        },
        "spec.database.readReplicas.streaming.maxConnections",
    ),
    (
        "load-rate-and-users",
        {
            "load": {
                "peakRequestsPerSecond": 100,
                "users": {"concurrent": 1000, "thinkSeconds": 5},
                "databaseSecondsPerRequest": 0.05,
            }
        },
        "set exactly one of spec.load.peakRequestsPerSecond or spec.load.users",
    ),
    (
        # 2,000 requests/s x 50 ms = 100 connections busy on average > 92 available
        "load-beyond-the-budget",
        {"load": {"peakRequestsPerSecond": 2000, "databaseSecondsPerRequest": 0.05}},
        "spec.load.peakRequestsPerSecond",
    ),
    (
        # 200 requests/s x 50 ms = 10 busy, 5 on each of the 2 app pods' 5 connections
        "load-app-pool-too-small",
        {"load": {"peakRequestsPerSecond": 200, "databaseSecondsPerRequest": 0.05}},
        "spec.app.poolSizePerPod: 5 connections per app pod",
    ),
]


def bad(case_id: str) -> dict[str, Any]:
    for cid, overrides, _ in BAD:
        if cid == case_id:
            # (the _DELETE marker must survive the copy: it is compared by identity)
            return base(name=cid, **copy.deepcopy(overrides, memo={id(_DELETE): _DELETE}))
    raise KeyError(case_id)


def secret_values(secret: dict[str, Any]) -> dict[str, str]:
    """A Secret's values, decoded (builders write base64 ``data``)."""
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
