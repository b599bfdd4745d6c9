"""``spec.cache``: Redis instances declared by use (cache evicts, queue and
counters never do), their memory, persistence, Sentinel HA and allowlisted
redis.conf."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from headroom.api.v1alpha1 import images
from headroom.api.v1alpha1.pods import Claim, same_claim
from headroom.api.v1alpha1.schema import (
    LIST_MAP,
    SHORT_NAME,
    SHORT_NAME_MAX,
    Broken,
    ConfigKey,
    ConfigValue,
    ImageRef,
    Model,
    PositiveQuantity,
    Rule,
    bounded_quantity,
    unique_names,
)

MIN_REDIS_MEMORY = "32Mi"
RedisMemory = Annotated[
    str, bounded_quantity(f">= {MIN_REDIS_MEMORY}", f"must be at least {MIN_REDIS_MEMORY}")
]


class Persistence(Claim):
    """Keep Redis data on a PersistentVolumeClaim (AOF + RDB)."""

    # The StatefulSet's volumeClaimTemplates are immutable (see docs/api.md).
    RULES = (
        same_claim(
            "spec.cache.instances[].persistence.size and storageClassName cannot "
            "change: they are the StatefulSet's volumeClaimTemplates, which Kubernetes "
            "never updates. Grow the PVCs themselves (kubectl patch pvc, if the "
            "StorageClass allows expansion) or add a new instance under another name"
        ),
    )

    size: PositiveQuantity = Field(default="1Gi", description="PVC size per Redis pod.")


class Sentinel(Model):
    """Redis Sentinel HA: 3 sentinels watch 1 master and ``replicas`` replicas."""

    RULES = (
        Rule(
            "self.minReplicasToWrite <= self.replicas",
            "spec.cache.instances[].sentinel.minReplicasToWrite must be <= "
            "spec.cache.instances[].sentinel.replicas: the master would refuse every write",
            lambda s: (
                None
                if s.min_replicas_to_write <= s.replicas
                else Broken(
                    "minReplicasToWrite",
                    lambda at: (
                        f"{s.min_replicas_to_write} must be <= {at('replicas')} "
                        f"{s.replicas}: the master would refuse every write"
                    ),
                )
            ),
        ),
    )

    replicas: int = Field(default=2, ge=1, le=5, description="Redis replicas beside the master.")
    min_replicas_to_write: int = Field(
        default=1,
        ge=0,
        le=5,
        description="The master accepts a write only while at least this many replicas are "
        "connected and lag at most 10 s (min-replicas-to-write, min-replicas-max-lag): a "
        "master cut off from its replicas refuses writes instead of taking writes a failover "
        "would lose. 0 turns it off (writes go on while every replica is down, e.g. during "
        "a rolling restart with one replica).",
    )


# What evicting would silently lose on an instance of each use that must not evict.
LOST = {"queue": "drop jobs", "counters": "reset rate limits and quotas"}


class CacheInstance(Model):
    """One Redis instance, declared by what it is used for."""

    RULES = (
        Rule(
            "self.use == 'cache' || !has(self.evictionPolicy) || "
            "self.evictionPolicy == 'noeviction'",
            "spec.cache.instances[].evictionPolicy must be noeviction when use is "
            "queue or counters: an evicting queue silently loses jobs, evicted counters "
            "silently reset their limits",
            lambda i: (
                None
                if i.use == "cache" or i.eviction_policy in (None, "noeviction")
                else Broken(
                    "evictionPolicy",
                    lambda at: (
                        f"{i.eviction_policy} on a {i.use} instance ({i.name}) would silently "
                        f"{LOST[i.use]} when memory is full; {at('use')} {i.use} needs "
                        "noeviction"
                    ),
                )
            ),
        ),
        # Transition rules: the StatefulSet fields these decide are immutable.
        Rule(
            "has(self.persistence) == has(oldSelf.persistence)",
            "spec.cache.instances[].persistence cannot be added to or removed from "
            "an existing instance: it changes the StatefulSet's immutable "
            "volumeClaimTemplates. Remove the instance first (retained PVCs are "
            "reused when it comes back under the same name) or add a new instance "
            "under another name",
            lambda new, old: (
                None
                if (new.persistence is None) == (old.persistence is None)
                else Broken(
                    "persistence",
                    lambda _: (
                        "cannot be added to or removed from an existing instance (the "
                        "StatefulSet's volumeClaimTemplates are immutable); add a new instance "
                        "under another name"
                    ),
                )
            ),
            transition=True,
        ),
        Rule(
            "has(self.sentinel) == has(oldSelf.sentinel)",
            "spec.cache.instances[].sentinel cannot be added to or removed from an "
            "existing instance: it changes the StatefulSet's immutable "
            "podManagementPolicy. Add a new instance under another name, move the "
            "clients to it, then remove this one",
            lambda new, old: (
                None
                if (new.sentinel is None) == (old.sentinel is None)
                else Broken(
                    "sentinel",
                    lambda _: (
                        "cannot be added to or removed from an existing instance (the "
                        "StatefulSet's podManagementPolicy is immutable); add a new instance "
                        "under another name"
                    ),
                )
            ),
            transition=True,
        ),
    )

    name: Annotated[str, Field(pattern=SHORT_NAME, max_length=SHORT_NAME_MAX)] = Field(
        description="Instance name (DNS label, at most 20 characters)."
    )
    use: Literal["cache", "queue", "counters"] = Field(
        description="cache: evicts least-recently-used keys when full. queue: never "
        "evicts (writes fail when full, no job is lost). counters: rate limits and quotas "
        "(INCR with a TTL), never evicts (an evicted counter would reset a limit); no "
        "hit-rate or eviction alerts, persistence optional."
    )
    eviction_policy: (
        Literal[
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
            "noeviction",
        ]
        | None
    ) = Field(default=None, description="maxmemory-policy; allkeys-lru for cache by default.")
    # Whole bytes (for maxmemory) is the planner's to check: CEL's isInteger()
    # says false for 0.5Gi.
    memory: RedisMemory = Field(
        default="256Mi",
        description="Container memory limit; maxmemory is 75% of it (room for "
        "fragmentation, replication buffers and fork copy-on-write).",
    )
    persistence: Persistence | None = Field(
        default=None, description="Persist data on a PVC; unset keeps data in memory only."
    )
    sentinel: Sentinel | None = Field(default=None, description="Sentinel HA when set.")
    image: Annotated[ImageRef, images.defaulted(images.REDIS_IMAGE)] = images.field(
        images.REDIS_IMAGE,
        what="Redis image (7.x).",
    )
    config: dict[ConfigKey, ConfigValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Allowlisted redis.conf overrides (timeout, tcp-keepalive, hz, "
        "maxmemory-samples, appendfsync, slowlog-log-slower-than, ...).",
    )


class Cache(Model):
    """Redis for cache, rate limits and queues."""

    instances: Annotated[list[CacheInstance], AfterValidator(unique_names)] = Field(
        min_length=1,
        max_length=8,
        description="Redis instances; names must be unique.",
        json_schema_extra=LIST_MAP,
    )
    exporter_image: Annotated[ImageRef, images.defaulted(images.REDIS_EXPORTER_IMAGE)] = (
        images.field(
            images.REDIS_EXPORTER_IMAGE,
            what="redis_exporter sidecar image (metrics on port 9121).",
        )
    )
