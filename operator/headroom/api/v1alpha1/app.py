"""``spec.app``: the app Headroom scales around, its replica floor and ceiling
(given, or derived from the load it must carry) and its client pool."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from headroom.api.v1alpha1.schema import DNS_SUBDOMAIN, Model, cel


class ReplicaRange(Model):
    """How many pods of the app may run: the autoscaling floor and ceiling."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.min <= self.max",
                    "spec.app.replicas.min must be <= spec.app.replicas.max",
                )
            ]
        }
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


class Capacity(Model):
    """Derive the replica ceiling from the load the app must carry."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.minReplicas <= "
                    "(self.targetConcurrentUsers + self.usersPerPod - 1) / self.usersPerPod",
                    "messageExpression": "'spec.app.capacity.minReplicas "
                    + CAPACITY_MIN_MESSAGE
                    + "'.format(["
                    "self.minReplicas, self.targetConcurrentUsers, self.usersPerPod, "
                    "(self.targetConcurrentUsers + self.usersPerPod - 1) / self.usersPerPod])",
                }
            ]
        }
    )

    target_concurrent_users: int = Field(
        ge=1, le=10_000_000, description="Concurrent users the app must serve at peak."
    )
    users_per_pod: int = Field(
        ge=1, le=1_000_000, description="Concurrent users one app pod serves (from a load test)."
    )
    min_replicas: int = Field(default=2, ge=1, le=1000, description="Fewest app pods.")


class App(Model):
    """The app Headroom scales around. Its Deployment is read, never modified."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.replicas) != has(self.capacity)",
                    "set exactly one of spec.app.replicas or spec.app.capacity",
                )
            ]
        }
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
