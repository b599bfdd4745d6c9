"""``spec.app``: the app Headroom scales around, its replica floor and ceiling
(given, or derived from the load it must carry) and its client pool."""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import Field

from headroom.api.v1alpha1.schema import (
    DNS_SUBDOMAIN,
    ENV_NAME,
    Broken,
    Model,
    Rule,
    exactly_one_of,
)

# The families of keys Headroom writes into a binding (docs/api.md, "The binding"):
# what spec.app.bindingKeys may rename, and what no new name may take, so a renamed
# key can never collide with one Headroom writes.
BINDING_KEY = (
    r"^(DATABASE_[A-Z0-9_]+|DIRECT_URL|REDIS_[A-Z0-9_]+|S3_[A-Z0-9_]+|AWS_[A-Z0-9_]+"
    r"|QUEUE_[A-Z0-9_]+)$"
)
# The servicebinding.io keys, which the spec names and Headroom does not rename.
SERVICE_BINDING_KEYS = (
    "type",
    "provider",
    "host",
    "port",
    "database",
    "username",
    "password",
    "uri",
)
BINDING_KEYS_MAX = 32
_ENV_NAME_MAX = 128


class ReplicaRange(Model):
    """How many pods of the app may run: the autoscaling floor and ceiling."""

    RULES = (
        Rule(
            "self.min <= self.max",
            "spec.app.replicas.min must be <= spec.app.replicas.max",
            lambda r: (
                None
                if r.min <= r.max
                else Broken("min", lambda at: f"{r.min} must be <= {at('max')} {r.max}")
            ),
        ),
    )

    min: int = Field(default=2, ge=1, le=1000, description="Fewest app pods (HPA minReplicas).")
    max: int = Field(
        ge=1,
        le=1000,
        description="Most app pods (HPA maxReplicas); every one of them may open "
        "poolSizePerPod connections, so this ceiling drives the connection budget.",
    )


# Said by the CRD rule (CEL format) and the planner alike.
CAPACITY_MIN_MESSAGE = (
    "%d is above the ceiling ceil(targetConcurrentUsers %d / usersPerPod %d) = %d pods"
)


def _min_within_ceiling(cap: Capacity) -> Broken | None:
    ceiling = cap.ceiling
    if cap.min_replicas <= ceiling:
        return None
    return Broken(
        "minReplicas",
        lambda _: (
            CAPACITY_MIN_MESSAGE
            % (cap.min_replicas, cap.target_concurrent_users, cap.users_per_pod, ceiling)
        ),
    )


class Capacity(Model):
    """Derive the replica ceiling from the load the app must carry."""

    RULES = (
        Rule(
            "self.minReplicas <= "
            "(self.targetConcurrentUsers + self.usersPerPod - 1) / self.usersPerPod",
            "'spec.app.capacity.minReplicas " + CAPACITY_MIN_MESSAGE + "'.format(["
            "self.minReplicas, self.targetConcurrentUsers, self.usersPerPod, "
            "(self.targetConcurrentUsers + self.usersPerPod - 1) / self.usersPerPod])",
            _min_within_ceiling,
            expression=True,
        ),
    )

    target_concurrent_users: int = Field(
        ge=1, le=10_000_000, description="Concurrent users the app must serve at peak."
    )
    users_per_pod: int = Field(
        ge=1, le=1_000_000, description="Concurrent users one app pod serves (from a load test)."
    )
    min_replicas: int = Field(default=2, ge=1, le=1000, description="Fewest app pods.")

    @property
    def ceiling(self) -> int:
        """ceil(targetConcurrentUsers / usersPerPod) pods."""
        return math.ceil(self.target_concurrent_users / self.users_per_pod)


def _renamable_keys(app: App) -> Broken | None:
    wrong = next((k for k in app.binding_keys if not re.fullmatch(BINDING_KEY, k)), None)
    if wrong is None:
        return None
    return Broken(
        "bindingKeys",
        lambda _: (
            f"{wrong!r} is not a key Headroom writes (DATABASE_*, DIRECT_URL, REDIS_*, "
            "S3_*, AWS_*, QUEUE_*)"
        ),
    )


def _new_names(app: App) -> Broken | None:
    for key, name in app.binding_keys.items():
        if not re.fullmatch(ENV_NAME, name):
            return _bad_new_name(key, f"{name!r} is not an environment variable name")
        if re.fullmatch(BINDING_KEY, name) or name in SERVICE_BINDING_KEYS:
            return _bad_new_name(
                key,
                f"{name!r} is a name Headroom writes itself; choose one outside "
                "DATABASE_*, DIRECT_URL, REDIS_*, S3_*, AWS_*, QUEUE_*",
            )
    return None


def _bad_new_name(key: str, text: str) -> Broken:
    return Broken("bindingKeys", lambda _: f"{key}: {text}")


def _distinct_new_names(app: App) -> Broken | None:
    taken: dict[str, str] = {}
    for key, name in app.binding_keys.items():
        if name in taken:
            return _bad_new_name(key, f"{taken[name]} and {key} are both renamed to {name!r}")
        taken[name] = key
    return None


class App(Model):
    """The app Headroom scales around. Its Deployment is read, never modified."""

    RULES = (
        exactly_one_of("replicas", "capacity", path="spec.app"),
        Rule(
            f"!has(self.bindingKeys) || self.bindingKeys.all(k, k.matches('{BINDING_KEY}'))",
            "spec.app.bindingKeys: a key to rename must be one Headroom writes "
            "(DATABASE_*, DIRECT_URL, REDIS_*, S3_*, AWS_*, QUEUE_*)",
            _renamable_keys,
        ),
        Rule(
            "!has(self.bindingKeys) || self.bindingKeys.all(k, "
            f"self.bindingKeys[k].matches('{ENV_NAME}') && "
            f"!self.bindingKeys[k].matches('{BINDING_KEY}') && "
            f"!(self.bindingKeys[k] in {list(SERVICE_BINDING_KEYS)!r}))".replace('"', "'"),
            "spec.app.bindingKeys: a new name must be an environment variable name "
            "outside the names Headroom writes",
            _new_names,
        ),
        Rule(
            "!has(self.bindingKeys) || self.bindingKeys.all(k, self.bindingKeys.all(j, "
            "k == j || self.bindingKeys[k] != self.bindingKeys[j]))",
            "spec.app.bindingKeys: two keys renamed to the same name",
            _distinct_new_names,
        ),
    )

    deployment: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)] = Field(
        description="Name of the app's existing Deployment in the profile's namespace."
    )
    replicas: ReplicaRange | None = Field(
        default=None, description="Replica floor and ceiling. Exclusive with capacity."
    )
    capacity: Capacity | None = Field(
        default=None,
        description="Derive the ceiling as ceil(targetConcurrentUsers / usersPerPod). "
        "Exclusive with replicas.",
    )
    pool_size_per_pod: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Client-side connection pool size of one app pod (e.g. Prisma "
        "connection_limit, SQLAlchemy pool_size + max_overflow).",
    )
    client: Literal["generic", "prisma", "node-postgres"] = Field(
        default="generic",
        description="The app's database client, for the URLs in the binding (docs/api.md, "
        '"The binding"): generic (libpq URLs: psycopg, SQLAlchemy, Django, asyncpg, pgx; '
        "DATABASE_URL direct, DATABASE_URL_POOLED through the pooler), prisma (Prisma 5-7: "
        "DATABASE_URL through the pooler with connection_limit, pgbouncer=true when the "
        "pooler cannot keep prepared statements, DIRECT_URL for migrations) or "
        "node-postgres (pg, Knex, drizzle, TypeORM: an sslmode node-postgres reads as "
        "libpq means it). Every dialect has DATABASE_POOL_SIZE.",
    )
    binding_keys: dict[
        Annotated[str, Field(max_length=_ENV_NAME_MAX)],
        Annotated[str, Field(max_length=_ENV_NAME_MAX)],
    ] = Field(
        default_factory=dict,
        max_length=BINDING_KEYS_MAX,
        description="Binding keys under the names the app already reads, e.g. "
        "{AWS_ACCESS_KEY_ID: R2_ACCESS_KEY_ID, S3_BUCKET: R2_BUCKET_NAME, S3_PUBLIC_URL: "
        "R2_PUBLIC_URL}: each key Headroom writes (DATABASE_*, DIRECT_URL, REDIS_*, S3_*, "
        "AWS_*, QUEUE_*) appears under the new name instead, in the app's and the workers' "
        "bindings. New names are environment variable names outside those families (so "
        "none collides with a key Headroom writes) and distinct.",
    )
