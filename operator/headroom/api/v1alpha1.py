"""ScalingProfile ``headroom.dev/v1alpha1``: the one schema.

Everything that reads a profile (the reconcile engine, the admission webhook, the
CLI) parses it with :func:`parse_profile`; the CRD is generated from these
models by :mod:`headroom.api.crd`. Field descriptions become ``kubectl explain``
text; ``x-kubernetes-validations`` carry the cross-field rules the API server
can check itself (CEL), the rest is enforced by the planner through the webhook.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict, JsonValue

from headroom.api import quantity, resources

GROUP = "headroom.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ScalingProfile"
PLURAL = "scalingprofiles"
SINGULAR = "scalingprofile"
SHORT_NAMES = ("sp",)

# RFC 1123 label / subdomain: what Kubernetes accepts for object names.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX = 40  # of metadata.name: room for the child names' suffixes
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A host is a DNS name or an IPv4 address; nothing that could carry a space,
# a quote or a newline into pgbouncer.ini.
HOST = r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$"
# Postgres database and role names we accept unquoted in pgbouncer.ini.
PG_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$"
# A Secret key (IsConfigMapKey): not ".", "..", nor starting with "..".
SECRET_KEY = r"^\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$"  # noqa: S105 - a key-name pattern
SECRET_KEY_MAX = 253
IMAGE = r"^[a-z0-9][a-z0-9./_:@-]*$"
PGBOUNCER_VERSION = r"^1\.(1[89]|2[0-9])$"

# Keys and values of the allowlisted config maps (pgbouncer.ini, redis.conf):
# the planner's allowlists decide what is valid; these bounds keep a huge body
# from ever reaching them.
ConfigKey = Annotated[str, Field(max_length=64)]
ConfigValue = Annotated[str, Field(max_length=256)]


def _int_or_string(value: Any) -> Any:
    # The CRD declares quantities int-or-string, as Kubernetes does: 1073741824
    # is as good as "1Gi" (a bool or a float is neither, and stays refused).
    return str(value) if type(value) is int else value


def _checked_quantity(text: str) -> str:
    quantity.parse(text)  # QuantityError is a ValueError: reported on the field
    return text


# A Kubernetes quantity (see headroom.api.quantity), kept as the text given.
Quantity = Annotated[
    str,
    BeforeValidator(_int_or_string),
    AfterValidator(_checked_quantity),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "pattern": quantity.PATTERN,
            "maxLength": quantity.MAX_LENGTH,
        }
    ),
]


def _checked_resource_name(name: str) -> str:
    problem = resources.name_problem(name)
    if problem:
        raise ValueError(problem)
    return name


ResourceName = Annotated[
    str, Field(max_length=resources.NAME_MAX), AfterValidator(_checked_resource_name)
]


class _Model(BaseModel):
    """Base: camelCase on the wire, unknown fields rejected, snake_case in Python.
    Strict, as the API server is: "10" is not an integer, "false" not a boolean."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
    )


def _cel(rule: str, message: str) -> JsonDict:
    return {"rule": rule, "message": message}


# Quantity fields are int-or-string: CEL sees either, string() makes it text.
# A text that is no quantity is the pattern's to report, and the API server
# runs the rules even then: they only parse what matches it.
_AS_TEXT = "string(self)"


def _is_quantity(text: str) -> str:
    return f"{text}.matches('{quantity.PATTERN}')"


MIN_REDIS_MEMORY = "32Mi"


def _quantity_rule(bound: str, message: str) -> JsonDict:
    """A CEL rule comparing a quantity field with a bound such as ``>= 32Mi``."""
    operator, limit = bound.split()
    return _cel(
        f"!{_is_quantity(_AS_TEXT)} || "
        f"quantity({_AS_TEXT}).compareTo(quantity('{limit}')) {operator} 0",
        message,
    )


class SecretKeyRef(_Model):
    """Keys of an existing Secret holding the database credentials."""

    name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)] = Field(
        description="Name of a Secret in the profile's namespace. Headroom only reads it."
    )
    username_key: Annotated[str, Field(pattern=SECRET_KEY, max_length=SECRET_KEY_MAX)] = Field(
        default="username", description="Key of the username in the Secret."
    )
    password_key: Annotated[str, Field(pattern=SECRET_KEY, max_length=SECRET_KEY_MAX)] = Field(
        default="password", description="Key of the password in the Secret."
    )


class CASecretRef(_Model):
    """A CA certificate (PEM) in an existing Secret, e.g. one cert-manager made."""

    name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)] = Field(
        description="Name of a Secret in the profile's namespace. Headroom only reads it."
    )
    key: Annotated[str, Field(pattern=SECRET_KEY, max_length=SECRET_KEY_MAX)] = Field(
        default="ca.crt", description="Key of the PEM certificate(s) in the Secret."
    )


class ReplicaRange(_Model):
    """How many pods of the app may run: the autoscaling floor and ceiling."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
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


class Capacity(_Model):
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


class App(_Model):
    """The app Headroom scales around. Its Deployment is read, never modified."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
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
    client: Literal["generic", "prisma"] = Field(
        default="generic",
        description="The app's database client, for the URLs in the binding: generic "
        "(plain URLs, DATABASE_POOL_SIZE beside them) or prisma (connection_limit on the "
        "pooled URL, pgbouncer=true when the pooler cannot keep prepared statements, "
        "DIRECT_URL for migrations).",
    )


# --- read replicas (issue 10) ---

READ_REPLICAS_MAX = 8
# Postgres images the standbys run: the primary's major version (a standby
# replays the primary's WAL, which only the same major version can read).
POSTGRES_IMAGE = "docker.io/library/postgres:15.8"


class ReplicaHost(_Model):
    """A read replica somebody else runs (a managed database's read endpoint)."""

    host: Annotated[str, Field(pattern=HOST, max_length=253)] = Field(
        description="Host name or IPv4 address of the replica."
    )
    port: int = Field(
        default=5432,
        ge=1,
        le=65535,
        description="Postgres port. Every replica shares one port: PgBouncer's host list "
        "takes a single port for all hosts.",
    )
    max_connections: int | None = Field(
        default=None,
        ge=2,
        le=262_143,
        description="The replica's max_connections. Default: spec.database.maxConnections "
        "(a hot standby's max_connections must be >= its primary's).",
    )


class CnpgReplicas(_Model):
    """The database is a CloudNativePG ``Cluster`` (read, never written)."""

    cluster: Annotated[str, Field(pattern=DNS_LABEL, max_length=50)] = Field(
        description="Name of the postgresql.cnpg.io/v1 Cluster in the profile's namespace. "
        "Its -ro Service is the read target; spec.instances and its max_connections are "
        "read from it."
    )


# A StatefulSet's volumeClaimTemplates never change once it exists.
_SAME_CLAIM = (
    "self.size == oldSelf.size && has(self.storageClassName) == "
    "has(oldSelf.storageClassName) && (!has(self.storageClassName) || "
    "self.storageClassName == oldSelf.storageClassName)"
)


class _Volume(_Model):
    """A StatefulSet's PVC: a StorageClass, and a positive ``size`` the subclass declares."""

    storage_class_name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)] | None = Field(
        default=None, description="StorageClass; the cluster default when unset."
    )

    @field_validator("size", check_fields=False)
    @classmethod
    def _positive(cls, size: str) -> str:
        if quantity.parse(size) <= 0:
            raise ValueError("must be > 0")
        return size


class _Claim(_Volume):
    """A PVC per pod of a StatefulSet, retained unless the profile says otherwise."""

    delete_with_profile: bool = Field(
        default=False,
        description="Delete the PVCs when the profile is deleted. By default they are "
        "retained: data outlives the profile unless this says otherwise.",
    )


class StandbyStorage(_Claim):
    """The volume of each standby (its copy of the database)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    _SAME_CLAIM,
                    "spec.database.readReplicas.streaming.storage.size and storageClassName "
                    "cannot change: they are the StatefulSet's volumeClaimTemplates",
                )
            ]
        }
    )

    size: Quantity = Field(
        default="10Gi",
        description="PVC size per standby: at least the primary's data directory.",
        json_schema_extra={"x-kubernetes-validations": [_quantity_rule("> 0", "must be > 0")]},
    )


class StreamingReplicas(_Model):
    """Hot standbys Headroom runs, streaming from the primary through one
    physical replication slot each."""

    standbys: int = Field(default=2, ge=1, le=READ_REPLICAS_MAX, description="Hot standbys.")
    replication_secret: SecretKeyRef = Field(
        description="Secret with a role that has REPLICATION on the primary (and a "
        "pg_hba.conf entry for replication): the standbys clone and stream with it."
    )
    image: Annotated[str, Field(pattern=IMAGE, max_length=512)] = Field(
        default=POSTGRES_IMAGE,
        description="Postgres image of the standbys: the primary's major version.",
    )
    max_connections: int | None = Field(
        default=None,
        ge=2,
        le=262_143,
        description="max_connections of each standby. Default and minimum: "
        "spec.database.maxConnections (Postgres refuses a hot standby below its primary's).",
    )
    storage: StandbyStorage = Field(default_factory=StandbyStorage)
    # Resources is defined further down: the factory looks it up when called.
    resources: Resources = Field(default_factory=lambda: Resources())  # noqa: PLW0108


class ReadPooler(_Model):
    """PgBouncer in front of the replicas (``<name>-pooler-ro``)."""

    instances: int = Field(default=2, ge=1, le=50, description="Read-pooler pods.")


class ReadReplicas(_Model):
    """Read replicas and the pooled read endpoint (DATABASE_READ_URL)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "(self.mode == 'external') == has(self.hosts)",
                    "spec.database.readReplicas.hosts is required with mode external, "
                    "and only then",
                ),
                _cel(
                    "(self.mode == 'cnpg') == has(self.cnpg)",
                    "spec.database.readReplicas.cnpg is required with mode cnpg, and only then",
                ),
                _cel(
                    "(self.mode == 'streaming') == has(self.streaming)",
                    "spec.database.readReplicas.streaming is required with mode streaming, "
                    "and only then",
                ),
            ]
        }
    )

    mode: Literal["external", "cnpg", "streaming"] = Field(
        description="external: replica hosts somebody else runs; cnpg: a CloudNativePG "
        "Cluster's replicas; streaming: hot standbys Headroom runs."
    )
    hosts: list[ReplicaHost] | None = Field(
        default=None,
        min_length=1,
        max_length=READ_REPLICAS_MAX,
        description="mode external: the replicas (unique host:port, one port for all).",
    )
    cnpg: CnpgReplicas | None = Field(default=None, description="mode cnpg.")
    streaming: StreamingReplicas | None = Field(default=None, description="mode streaming.")
    max_lag_seconds: int = Field(
        default=30,
        ge=1,
        le=86_400,
        description="A replica further behind than this leaves the read pool; it comes "
        "back when it is within half of it.",
    )
    max_lag_bytes: int | None = Field(
        default=None,
        ge=1,
        le=1 << 50,
        description="Also take a replica out when its replay is this many bytes of WAL behind.",
    )
    poll_seconds: int = Field(
        default=5, ge=1, le=300, description="How often each read-pooler pod measures the lag."
    )
    read_pool_size_per_pod: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Client-side read pool of one app pod (the connections it opens to "
        "DATABASE_READ_URL); counted in the read budget.",
    )
    reserved_connections: int = Field(
        default=5,
        ge=0,
        le=100_000,
        description="Connections kept free on each replica for direct use (reports, "
        "consoles, monitoring) beside the read pool and its lag probes.",
    )
    when_all_lagging: Literal["primary", "refuse"] = Field(
        default="primary",
        description="When every replica is out: primary sends reads to the primary, "
        "capped at primaryFallbackConnections (kept out of the write pool's budget); refuse "
        "makes the read endpoint refuse new connections until a replica is back.",
    )
    primary_fallback_connections: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="whenAllLagging primary: server connections the read pool may open on "
        "the primary while every replica is out, over all read-pooler pods (kept out of the "
        "write pool's budget). Default: a tenth of what the primary has for the poolers, "
        "at least one per read-pooler pod.",
    )
    pooler: ReadPooler = Field(default_factory=ReadPooler)


# Direct sessions a migration (Prisma migrate takes 1-2), an admin console and
# a cron job need beside the pooler.
DEFAULT_RESERVED_CONNECTIONS = 5


class Database(_Model):
    """The app's Postgres primary."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.superuserReservedConnections + self.reservedConnections"
                    " < self.maxConnections",
                    "spec.database.superuserReservedConnections + "
                    "spec.database.reservedConnections must be < spec.database.maxConnections",
                ),
                _cel(
                    "!has(self.sslMode) || !(self.sslMode in ['verify-ca', 'verify-full'])"
                    " || has(self.serverCASecret)",
                    "spec.database.serverCASecret is required when spec.database.sslMode is "
                    "verify-ca or verify-full",
                ),
            ]
        }
    )

    host: Annotated[str, Field(pattern=HOST, max_length=253)] = Field(
        description="Host name or IPv4 address of the Postgres primary."
    )
    port: int = Field(default=5432, ge=1, le=65535, description="Postgres port.")
    name: Annotated[str, Field(pattern=PG_IDENTIFIER, max_length=63)] = Field(
        description="Database name the app uses."
    )
    credentials_secret: SecretKeyRef = Field(
        description="Secret with the app's database username and password. The pooler "
        "authenticates the app with the same credentials."
    )
    max_connections: int = Field(
        default=100,
        ge=2,
        le=262_143,
        description="The primary's max_connections (declare it for managed databases; "
        "100 is Postgres' default).",
    )
    superuser_reserved_connections: int = Field(
        default=3, ge=0, le=1000, description="The primary's superuser_reserved_connections."
    )
    reserved_connections: int = Field(
        default=DEFAULT_RESERVED_CONNECTIONS,
        ge=0,
        le=100_000,
        description="Connections kept free for everything that does not go through the "
        "pooler: migrations (the binding's direct DATABASE_URL), admin consoles, cron jobs, "
        f"replication. Default {DEFAULT_RESERVED_CONNECTIONS}; 0 gives the pooler "
        "everything.",
    )
    read_limits: bool = Field(
        default=True,
        description="Connect to the primary with the credentials and read max_connections "
        "and the reserved slots; a plan the real limits cannot carry is refused "
        "(ConnectionBudget=False) and the outcome shows in the PrimaryLimits condition.",
    )
    ssl_mode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = Field(
        default="prefer",
        description="TLS mode from the pooler (and the operator's limits check) to Postgres; "
        "verify-ca and verify-full need serverCASecret.",
    )
    server_ca_secret: CASecretRef | None = Field(
        default=None,
        alias="serverCASecret",
        description="CA that signed the primary's server certificate: mounted into the "
        "pooler pods as server_tls_ca_file. Required for sslMode verify-ca/verify-full.",
    )

    read_replicas: ReadReplicas | None = Field(
        default=None,
        description="Read replicas behind a pooled, lag-aware read endpoint (DATABASE_READ_URL).",
    )


class Pooler(_Model):
    """PgBouncer in front of the primary."""

    instances: int = Field(
        default=2, ge=1, le=50, description="PgBouncer pods. Two or more survive a node loss."
    )
    pool_mode: Literal["session", "transaction"] = Field(
        default="transaction",
        description="transaction multiplexes many clients on few server connections; "
        "session gives each client its own server connection (then the client demand must "
        "fit the server budget).",
    )
    image: Annotated[str, Field(pattern=IMAGE, max_length=512)] = Field(
        default="ghcr.io/cloudnative-pg/pgbouncer:1.24.1",
        description="PgBouncer image; its entrypoint is ignored, `pgbouncer` must be on PATH.",
    )
    version: Annotated[str, Field(pattern=PGBOUNCER_VERSION, max_length=4)] | None = Field(
        default=None,
        description="PgBouncer major.minor the image runs; only settings valid for this "
        "version are rendered. Read from the image tag (1.24.1 -> 1.24) when unset; "
        "required when the tag does not say it, and must agree with it when it does.",
    )
    parameters: dict[ConfigKey, ConfigValue] = Field(
        default_factory=dict,
        max_length=64,
        description="pgbouncer.ini [pgbouncer] overrides. Only allowlisted keys; sizing "
        "keys (default_pool_size, reserve_pool_size, max_db_connections, max_client_conn) "
        "pin the planner and must fit the budget.",
    )
    exporter_image: Annotated[str, Field(pattern=IMAGE, max_length=512)] = Field(
        default="quay.io/prometheuscommunity/pgbouncer-exporter:v0.12.1",
        description="pgbouncer_exporter sidecar image (metrics on port 9127).",
    )


REDIS_KEY = r"^[A-Za-z0-9_:.{}-]{1,128}$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
SHORT_NAME = r"^[a-z]([-a-z0-9]{0,18}[a-z0-9])?$"
SHORT_NAME_MAX = 20


class Persistence(_Claim):
    """Keep Redis data on a PersistentVolumeClaim (AOF + RDB)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                # The StatefulSet's volumeClaimTemplates are immutable (see docs/api.md).
                _cel(
                    _SAME_CLAIM,
                    "spec.cache.instances[].persistence.size and storageClassName cannot "
                    "change: they are the StatefulSet's volumeClaimTemplates, which Kubernetes "
                    "never updates. Grow the PVCs themselves (kubectl patch pvc, if the "
                    "StorageClass allows expansion) or add a new instance under another name",
                )
            ]
        }
    )

    size: Quantity = Field(
        default="1Gi",
        description="PVC size per Redis pod.",
        json_schema_extra={"x-kubernetes-validations": [_quantity_rule("> 0", "must be > 0")]},
    )


class Sentinel(_Model):
    """Redis Sentinel HA: 3 sentinels watch 1 master and ``replicas`` replicas."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.minReplicasToWrite <= self.replicas",
                    "spec.cache.instances[].sentinel.minReplicasToWrite must be <= replicas: "
                    "the master would refuse every write",
                )
            ]
        }
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


class CacheInstance(_Model):
    """One Redis instance, declared by what it is used for."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.use != 'queue' || !has(self.evictionPolicy) || "
                    "self.evictionPolicy == 'noeviction'",
                    "spec.cache.instances[].evictionPolicy must be noeviction when use is "
                    "queue: an evicting queue silently loses jobs",
                ),
                # Transition rules: the StatefulSet fields these decide are immutable.
                _cel(
                    "has(self.persistence) == has(oldSelf.persistence)",
                    "spec.cache.instances[].persistence cannot be added to or removed from "
                    "an existing instance: it changes the StatefulSet's immutable "
                    "volumeClaimTemplates. Remove the instance first (retained PVCs are "
                    "reused when it comes back under the same name) or add a new instance "
                    "under another name",
                ),
                _cel(
                    "has(self.sentinel) == has(oldSelf.sentinel)",
                    "spec.cache.instances[].sentinel cannot be added to or removed from an "
                    "existing instance: it changes the StatefulSet's immutable "
                    "podManagementPolicy. Add a new instance under another name, move the "
                    "clients to it, then remove this one",
                ),
            ]
        }
    )

    name: Annotated[str, Field(pattern=SHORT_NAME, max_length=SHORT_NAME_MAX)] = Field(
        description="Instance name (DNS label, at most 20 characters)."
    )
    use: Literal["cache", "queue"] = Field(
        description="cache: evicts least-recently-used keys when full. queue: never "
        "evicts (writes fail when full, no job is lost)."
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
    memory: Quantity = Field(
        default="256Mi",
        description="Container memory limit; maxmemory is 75% of it (room for "
        "fragmentation, replication buffers and fork copy-on-write).",
        # Whole bytes (for maxmemory) is the planner's to check: CEL's isInteger()
        # says false for 0.5Gi.
        json_schema_extra={
            "x-kubernetes-validations": [
                _quantity_rule(f">= {MIN_REDIS_MEMORY}", f"must be at least {MIN_REDIS_MEMORY}")
            ]
        },
    )
    persistence: Persistence | None = Field(
        default=None, description="Persist data on a PVC; unset keeps data in memory only."
    )
    sentinel: Sentinel | None = Field(default=None, description="Sentinel HA when set.")
    image: Annotated[str, Field(pattern=IMAGE, max_length=512)] = Field(
        default="docker.io/library/redis:7.2.5", description="Redis image (7.x)."
    )
    config: dict[ConfigKey, ConfigValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Allowlisted redis.conf overrides (timeout, tcp-keepalive, hz, "
        "maxmemory-samples, appendfsync, slowlog-log-slower-than, ...).",
    )


class Cache(_Model):
    """Redis for cache, rate limits and queues."""

    instances: list[CacheInstance] = Field(
        min_length=1,
        max_length=8,
        description="Redis instances; names must be unique.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    exporter_image: Annotated[str, Field(pattern=IMAGE, max_length=512)] = Field(
        default="docker.io/oliver006/redis_exporter:v1.62.0",
        description="redis_exporter sidecar image (metrics on port 9121).",
    )


def _request_within_limit(name: str) -> JsonDict:
    """CEL: requests.<name> <= limits.<name>, for a resource that may be
    overcommitted (the others must be equal, which the webhook checks)."""
    request, limit = f"self.requests['{name}']", f"self.limits['{name}']"
    return {
        "rule": f"!has(self.requests) || !has(self.limits) || !('{name}' in self.requests) || "
        f"!('{name}' in self.limits) || !{_is_quantity(f'string({request})')} || "
        f"!{_is_quantity(f'string({limit})')} || "
        f"quantity(string({request})).compareTo(quantity(string({limit}))) <= 0",
        "messageExpression": f"'{resources.over_limit(name, '%s', '%s')}'"
        f".format([{request}, {limit}])",
    }


_RESOURCE_MAP_RULES: list[JsonValue] = [
    _cel(
        "self.all(k, k in ['cpu', 'memory', 'ephemeral-storage'] || k.startsWith('hugepages-')"
        " || k.contains('/'))",
        resources.NAME_MESSAGE,
    ),
    _cel(
        f"self.all(k, !{_is_quantity('string(self[k])')} || "
        "quantity(string(self[k])).compareTo(quantity('0')) >= 0)",
        "resource quantities must not be negative",
    ),
]


class Resources(_Model):
    """Container resources, checked as the API server checks a Pod's."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [_request_within_limit(name) for name in resources.STANDARD]
        }
    )

    requests: dict[ResourceName, Quantity] = Field(
        default_factory=dict,
        max_length=16,
        description="Resources the workers' container requests (cpu, memory, ...).",
        json_schema_extra={"x-kubernetes-validations": _RESOURCE_MAP_RULES},
    )
    limits: dict[ResourceName, Quantity] = Field(
        default_factory=dict,
        max_length=16,
        description="Limits of the workers' container; each request must be <= its limit.",
        json_schema_extra={"x-kubernetes-validations": _RESOURCE_MAP_RULES},
    )

    @model_validator(mode="after")
    def _within_limits(self) -> Resources:
        problems = resources.problems(self.requests, self.limits)
        if problems:
            raise ValueError("; ".join(problems))
        return self


class WorkerReplicas(_Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("self.min <= self.max", "spec.queues[].replicas.min must be <= max")
            ]
        }
    )

    min: int = Field(default=0, ge=0, le=1000, description="0 scales to zero (KEDA only).")
    max: int = Field(default=10, ge=1, le=1000, description="Most worker pods.")


class Queue(_Model):
    """A Redis list drained by worker pods that scale on its backlog."""

    name: Annotated[str, Field(pattern=SHORT_NAME, max_length=SHORT_NAME_MAX)] = Field(
        description="Queue name."
    )
    redis: Annotated[str, Field(pattern=SHORT_NAME, max_length=SHORT_NAME_MAX)] = Field(
        description="Name of a spec.cache.instances entry with use: queue."
    )
    list_name: Annotated[str, Field(pattern=REDIS_KEY, max_length=128)] = Field(
        description="Redis list key holding the backlog (e.g. bull:emails:wait)."
    )
    image: Annotated[str, Field(pattern=IMAGE, max_length=512)] = Field(description="Worker image.")
    command: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=32
    )
    args: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=64)
    resources: Resources = Field(default_factory=Resources)
    replicas: WorkerReplicas = Field(default_factory=WorkerReplicas)
    backlog_per_worker: int = Field(
        default=10, ge=1, le=1_000_000, description="Target list length per worker pod."
    )
    activation_backlog: int = Field(
        default=0, ge=0, le=1_000_000, description="Backlog above which workers wake from zero."
    )
    termination_grace_period_seconds: int = Field(
        default=300,
        ge=1,
        le=86_400,
        description="Time a worker gets to finish in-flight jobs when scaled down.",
    )
    database_pool_size: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Connections one worker pod opens through the pooler (0: no database); "
        "counted in the connection budget.",
    )
    database_read_pool_size: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Connections one worker pod opens to the read endpoint "
        "(DATABASE_READ_URL; 0: none); counted in the read budget.",
    )
    cpu_utilization: int = Field(
        default=70, ge=1, le=100, description="CPU target of the HPA fallback (no KEDA)."
    )


class Autoscaling(_Model):
    """HPA (autoscaling/v2) and PDB for the app's own Deployment."""

    enabled: bool = Field(default=True, description="Create the HPA and the PDB.")
    cpu_utilization: int = Field(
        default=50, ge=1, le=100, description="Average CPU target (seed 000: under 50%)."
    )
    scale_down_stabilization_seconds: int = Field(
        default=300, ge=0, le=3600, description="Wait this long before scaling down."
    )
    scale_up_stabilization_seconds: int = Field(default=0, ge=0, le=3600)
    max_unavailable: int = Field(default=1, ge=1, le=100, description="PDB maxUnavailable.")


class Network(_Model):
    """Who may reach what Headroom runs. Every pooler and Redis pod gets a
    NetworkPolicy that admits the app's pods and Headroom's workers (same
    namespace) on the service port, and only the namespaces named here
    elsewhere."""

    monitoring_namespace: Annotated[str, Field(pattern=DNS_LABEL, max_length=63)] | None = Field(
        default=None,
        description="Namespace whose pods may scrape the exporters (pooler 9127, Redis "
        "9121), e.g. where Prometheus runs. Absent: only pods of the profile's namespace.",
    )
    keda_namespace: Annotated[str, Field(pattern=DNS_LABEL, max_length=63)] = Field(
        default="keda",
        description="Namespace of KEDA's operator, which reads a queue's length from Redis "
        "itself when KEDA scales its workers.",
    )


# --- object storage (issue 11) ---

# S3's bucket naming rules (general purpose buckets): 3-63 characters of
# lowercase letters, digits, dots and hyphens, starting and ending with a
# letter or digit; no "..", not an IPv4 address, none of the reserved
# prefixes and suffixes.
BUCKET_NAME = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"
_IPV4 = r"^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+$"  # [.]: a CEL string has no backslash-dot escape
_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", "--x-s3", ".mrap")


def bucket_name_problem(name: str) -> str | None:
    """Why S3 would refuse ``name`` as a bucket name (None: it would not)."""
    if not 3 <= len(name) <= 63:
        return "a bucket name has 3 to 63 characters"
    if not re.match(BUCKET_NAME, name):
        return (
            "a bucket name has only lowercase letters, digits, dots and hyphens, "
            "and starts and ends with a letter or digit"
        )
    if ".." in name:
        return "a bucket name has no two adjacent dots"
    if re.match(_IPV4, name):
        return "a bucket name is not an IP address"
    for prefix in _BUCKET_PREFIXES:
        if name.startswith(prefix):
            return f"a bucket name does not start with {prefix!r}"
    for suffix in _BUCKET_SUFFIXES:
        if name.endswith(suffix):
            return f"a bucket name does not end with {suffix!r}"
    return None


def _checked_bucket_name(name: str) -> str:
    problem = bucket_name_problem(name)
    if problem:
        raise ValueError(problem)
    return name


BucketName = Annotated[
    str,
    Field(min_length=3, max_length=63, pattern=BUCKET_NAME),
    AfterValidator(_checked_bucket_name),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 3,
            "maxLength": 63,
            "pattern": BUCKET_NAME,
            "x-kubernetes-validations": [
                _cel("!self.contains('..')", "a bucket name has no two adjacent dots"),
                _cel(f"!self.matches('{_IPV4}')", "a bucket name is not an IP address"),
            ],
        }
    ),
]
# An origin a browser sends: scheme://host[:port], one "*." wildcard label at
# most, or "*" (any origin) when asked for explicitly.
CORS_ORIGIN = r"^(\*|https?://(\*\.)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?)$"
HTTP_HEADER = r"^(\*|[A-Za-z0-9!#$%&'*+.^_`|~-]+)$"
ENDPOINT = r"^https?://[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?$"
REGION = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_UPLOAD_BYTES = 5 * 1024**3  # S3's largest single PUT / POST object
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024**2


HttpMethod = Literal["GET", "PUT", "POST", "HEAD", "DELETE"]


def _upload_methods() -> list[HttpMethod]:
    return ["GET", "PUT", "POST", "HEAD"]


class BucketCors(_Model):
    """Cross-origin access for browsers that upload and download directly
    (presigned URLs). No origin is allowed unless listed; ``*`` only when
    listed, and never together with allowCredentials."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!(has(self.allowCredentials) && self.allowCredentials && "
                    "has(self.allowedOrigins) && self.allowedOrigins.exists(o, o == '*'))",
                    "allowedOrigins: '*' cannot be combined with allowCredentials "
                    "(browsers refuse credentials for any origin)",
                )
            ]
        }
    )

    allowed_origins: list[Annotated[str, Field(pattern=CORS_ORIGIN, max_length=253)]] = Field(
        min_length=1,
        max_length=32,
        description="Origins whose pages may call the bucket, e.g. https://app.example.com "
        "or https://*.example.com. '*' allows any origin and must be written out.",
    )
    allowed_methods: list[HttpMethod] = Field(
        default_factory=_upload_methods,
        min_length=1,
        max_length=5,
        description="HTTP methods those origins may use (presigned PUT and POST uploads, GET).",
    )
    allowed_headers: list[Annotated[str, Field(pattern=HTTP_HEADER, max_length=128)]] = Field(
        default_factory=lambda: ["*"],
        max_length=32,
        description="Request headers a preflight may ask for.",
    )
    expose_headers: list[Annotated[str, Field(pattern=HTTP_HEADER, max_length=128)]] = Field(
        default_factory=lambda: ["ETag"],
        max_length=32,
        description="Response headers scripts may read; ETag by default (multipart uploads "
        "need it).",
    )
    max_age_seconds: int = Field(
        default=3600, ge=0, le=86400, description="How long a browser may cache a preflight."
    )
    allow_credentials: bool = Field(
        default=False,
        description="Pages may send cookies or HTTP auth along (never with origin '*').",
    )

    @model_validator(mode="after")
    def _no_credentials_for_any_origin(self) -> BucketCors:
        if self.allow_credentials and "*" in self.allowed_origins:
            raise ValueError(
                "allowedOrigins: '*' cannot be combined with allowCredentials "
                "(browsers refuse credentials for any origin)"
            )
        return self


class CosiBucket(_Model):
    """A bucket the cluster's COSI driver provisions (objectstorage.k8s.io
    BucketClaim + BucketAccess); the driver names the real bucket."""

    bucket_class_name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)] = Field(
        description="BucketClass of the BucketClaim (which driver, which parameters)."
    )
    bucket_access_class_name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)] = Field(
        description="BucketAccessClass of the BucketAccess (how credentials are minted)."
    )


class BucketCredentialsRef(_Model):
    """Keys of an existing Secret holding an access key for the bucket."""

    name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)] = Field(
        description="Name of a Secret in the profile's namespace. Headroom only reads it."
    )
    access_key_id_key: Annotated[str, Field(pattern=SECRET_KEY, max_length=SECRET_KEY_MAX)] = Field(
        default="AWS_ACCESS_KEY_ID", description="Key of the access key ID."
    )
    secret_access_key_key: Annotated[str, Field(pattern=SECRET_KEY, max_length=SECRET_KEY_MAX)] = (
        Field(default="AWS_SECRET_ACCESS_KEY", description="Key of the secret access key.")
    )


class S3Bucket(_Model):
    """An existing bucket on an S3-compatible endpoint (AWS S3, Cloudflare R2,
    ...). Headroom neither creates nor deletes it: it hands it to the app."""

    endpoint: Annotated[str, Field(pattern=ENDPOINT, max_length=253)] = Field(
        description="Endpoint URL, e.g. https://s3.eu-west-1.amazonaws.com or "
        "https://<account>.r2.cloudflarestorage.com (scheme and host, no path)."
    )
    region: Annotated[str, Field(pattern=REGION, max_length=32)] = Field(
        default="us-east-1", description="Signing region; Cloudflare R2 uses 'auto'."
    )
    bucket_name: BucketName = Field(description="The bucket's name on the endpoint.")
    force_path_style: bool = Field(
        default=False,
        description="Address the bucket as <endpoint>/<bucket> instead of "
        "<bucket>.<endpoint> (most self-hosted servers need it).",
    )
    credentials_secret: BucketCredentialsRef = Field(
        description="Secret with the access key the app uses."
    )


class BuiltinVolume(_Volume):
    """The PVC of the builtin S3 server: the data of every builtin bucket."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    _SAME_CLAIM,
                    "spec.storage.buckets[].builtin.storage.size and storageClassName cannot "
                    "change: they are the server StatefulSet's volumeClaimTemplates, which "
                    "Kubernetes never updates. Grow the PVC itself (kubectl patch pvc, if the "
                    "StorageClass allows expansion)",
                )
            ]
        }
    )

    size: Quantity = Field(
        default="10Gi",
        description="Size of the server's PVC.",
        json_schema_extra={"x-kubernetes-validations": [_quantity_rule("> 0", "must be > 0")]},
    )


VERSITYGW_IMAGE = "ghcr.io/versity/versitygw:v1.8.0"


class BuiltinBucket(_Model):
    """A bucket on the S3 server Headroom runs itself (versitygw, Apache-2.0), for
    clusters with neither COSI nor an external S3. One server per profile holds every
    builtin bucket; the app gets keys of its own (never the server's root keys)."""

    storage: BuiltinVolume = Field(
        default_factory=BuiltinVolume, description="The server's volume (all builtin buckets)."
    )
    image: Annotated[str, Field(pattern=IMAGE, max_length=512)] = Field(
        default=VERSITYGW_IMAGE,
        description="versitygw image; /usr/local/bin/versitygw and mkdir must be in it.",
    )
    resources: Resources | None = Field(
        default=None,
        description="The server container's resources (default: requests cpu 50m, memory "
        "128Mi; limit memory 512Mi).",
    )


# Every provider of a bucket: the Bucket field that selects it. A provider is
# one model and one entry here (the CRD rule and the validator read it).
BUCKET_PROVIDERS: tuple[str, ...] = ("cosi", "s3", "builtin")


class Bucket(_Model):
    """One bucket the app uses, from exactly one provider."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "[" + ", ".join(f"has(self.{p})" for p in BUCKET_PROVIDERS) + "]"
                    ".filter(x, x).size() == 1",
                    "set exactly one provider: " + ", ".join(BUCKET_PROVIDERS),
                )
            ]
        }
    )

    name: BucketName = Field(
        description="The bucket's name in the profile and in the binding (S3_<NAME>_BUCKET); "
        "S3's naming rules apply. With provider s3 the real name is s3.bucketName; "
        "COSI's driver names its bucket itself; a builtin bucket has this name."
    )
    cosi: CosiBucket | None = Field(default=None, description="Provisioned by COSI.")
    s3: S3Bucket | None = Field(default=None, description="An existing external bucket.")
    builtin: BuiltinBucket | None = Field(
        default=None,
        description="On the S3 server Headroom runs (<profile>-s3). Every builtin bucket of a "
        "profile is on that one server: set storage/image/resources on the first, and "
        "leave later ones {} (or the same).",
    )
    cors: BucketCors | None = Field(
        default=None, description="Browser access (none unless set; see BucketCors)."
    )
    deletion_policy: Literal["Retain", "Delete"] = Field(
        default="Retain",
        description="Retain: the bucket (its claim) and its data outlive the profile; "
        "Delete: deleted with the profile or when removed from it.",
    )
    max_upload_bytes: int = Field(
        default=DEFAULT_MAX_UPLOAD_BYTES,
        ge=1,
        le=MAX_UPLOAD_BYTES,
        description="Largest upload the app should sign into a presigned POST policy "
        "(content-length-range); in the binding as S3_MAX_UPLOAD_BYTES.",
    )

    @model_validator(mode="after")
    def _one_provider(self) -> Bucket:
        chosen = [p for p in BUCKET_PROVIDERS if getattr(self, p) is not None]
        if len(chosen) != 1:
            raise ValueError(
                "set exactly one provider: "
                + ", ".join(BUCKET_PROVIDERS)
                + (f" (got {', '.join(chosen)})" if chosen else "")
            )
        return self

    @property
    def provider(self) -> str:
        return next(p for p in BUCKET_PROVIDERS if getattr(self, p) is not None)


def env_name(name: str) -> str:
    """``meal-photos`` -> ``MEAL_PHOTOS`` (for S3_<NAME>_BUCKET)."""
    return re.sub(r"[.-]", "_", name).upper()


class Storage(_Model):
    """Object storage: buckets and their credentials in the binding."""

    buckets: list[Bucket] = Field(
        min_length=1,
        max_length=16,
        description="The app's buckets; the first is the default (S3_BUCKET, S3_ENDPOINT...).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @field_validator("buckets")
    @classmethod
    def _distinct(cls, buckets: list[Bucket]) -> list[Bucket]:
        seen: dict[str, str] = {}
        for bucket in buckets:
            key = env_name(bucket.name)
            if key in seen:
                raise ValueError(
                    f"buckets {seen[key]!r} and {bucket.name!r} share the binding name "
                    f"S3_{key}_BUCKET"
                    if seen[key] != bucket.name
                    else f"bucket {bucket.name!r} is listed twice"
                )
            seen[key] = bucket.name
        return _one_server(buckets)


def _one_server(buckets: list[Bucket]) -> list[Bucket]:
    """Builtin buckets share one server: a later one's settings are the defaults
    (``{}``, which the API server fills with the defaults) or the first's."""
    builtin = [(i, b.builtin) for i, b in enumerate(buckets) if b.builtin is not None]
    if not builtin:
        return buckets
    first_index, first = builtin[0]
    for index, settings in builtin[1:]:
        if settings not in (first, BuiltinBucket()):
            raise ValueError(
                f"buckets[{index}].builtin differs from buckets[{first_index}].builtin: builtin "
                "buckets share one server; leave the later ones {} or set the same"
            )
    return buckets


# --- alerts (issue 12) ---

# A Prometheus duration (``for:``): what promtool accepts, e.g. 5m, 1h30m, 90s.
DURATION = r"^(([0-9]+)(ms|s|m|h|d|w|y))+$"
Duration = Annotated[str, Field(pattern=DURATION, max_length=16)]
PROM_LABEL = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
# label values are data in the rule file (YAML quoted), never expression text
LabelValue = Annotated[str, Field(max_length=128, pattern=r"^[^\n\r]*$")]
URL_PATH = r"^/[A-Za-z0-9._~/-]*$"
Severity = Literal["info", "warning", "critical"]


class _AlertGroup(_Model):
    """What every group of alerts has: a switch, a ``for:`` and a severity."""

    enabled: bool = Field(default=True, description="Render this group's alerts.")
    for_: Duration = Field(
        default="5m",
        alias="for",
        description="How long a threshold must be breached before the alert fires.",
    )
    severity: Severity = Field(
        default="warning",
        description="Severity label of the group's threshold alerts (the ones that mean "
        "lost work or a component down are always critical).",
    )


class PoolerAlerts(_AlertGroup):
    """PgBouncer: server connections against each pool's planned max_db_connections,
    clients waiting for one, the pooler's exporter down."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.connectionsWarningPercent < self.connectionsCriticalPercent",
                    "spec.alerts.pooler.connectionsWarningPercent must be < "
                    "connectionsCriticalPercent",
                )
            ]
        }
    )

    connections_warning_percent: int = Field(
        default=50,
        ge=1,
        le=100,
        description="Warn when a pooler pod holds this share of its max_db_connections "
        "(seed 004: a safe limit of 50 of 100 connections).",
    )
    connections_critical_percent: int = Field(
        default=90,
        ge=1,
        le=100,
        description="Critical at this share: the next clients wait for a server connection.",
    )

    @model_validator(mode="after")
    def _warning_below_critical(self) -> PoolerAlerts:
        if self.connections_warning_percent >= self.connections_critical_percent:
            raise ValueError(
                f"connectionsWarningPercent {self.connections_warning_percent} must be < "
                f"connectionsCriticalPercent {self.connections_critical_percent}"
            )
        return self

    max_wait_seconds: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="Critical when the oldest waiting client has waited longer than this "
        "(seed 004: queries over 1 s are slow).",
    )


class DatabaseAlerts(_AlertGroup):
    """The primary's connections: what the poolers hold against max_connections -
    reserved (nothing Headroom runs reads Postgres' own pg_stat_activity)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.connectionsWarningPercent < self.connectionsCriticalPercent",
                    "spec.alerts.database.connectionsWarningPercent must be < "
                    "connectionsCriticalPercent",
                )
            ]
        }
    )

    connections_warning_percent: int = Field(
        default=50,
        ge=1,
        le=100,
        description="Warn when the poolers' server connections reach this share of "
        "max_connections - reserved (seed 004: safe limit 50 of 100).",
    )
    connections_critical_percent: int = Field(
        default=90,
        ge=1,
        le=100,
        description="Critical at this share of max_connections - reserved.",
    )

    @model_validator(mode="after")
    def _warning_below_critical(self) -> DatabaseAlerts:
        if self.connections_warning_percent >= self.connections_critical_percent:
            raise ValueError(
                f"connectionsWarningPercent {self.connections_warning_percent} must be < "
                f"connectionsCriticalPercent {self.connections_critical_percent}"
            )
        return self


class CacheAlerts(_AlertGroup):
    """Redis: memory against maxmemory, evictions, hit rate, Redis down."""

    hit_rate_min: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Warn when a use: cache instance serves fewer hits than this share of "
        "lookups (seed 000: cache hit rate > 80%).",
    )
    memory_percent: int = Field(
        default=90,
        ge=1,
        le=100,
        description="Warn when used memory reaches this share of maxmemory (a queue "
        "instance then refuses writes, a cache evicts).",
    )


class QueueAlerts(_AlertGroup):
    """Queues: a backlog the workers' ceiling cannot drain, workers at their maximum."""

    for_: Duration = Field(
        default="10m",
        alias="for",
        description="How long the backlog must stay above what the workers' ceiling "
        "drains before the alert fires.",
    )


class AppMetrics(_Model):
    """Where the app's pods serve their HTTP metrics (a PodMonitor scrapes them)."""

    port: int = Field(
        default=9464,
        ge=1,
        le=65535,
        description="Container port of the metrics endpoint (9464: the OpenTelemetry "
        "Prometheus exporter's default).",
    )
    path: Annotated[str, Field(pattern=URL_PATH, max_length=256)] = Field(
        default="/metrics", description="HTTP path of the metrics endpoint."
    )
    histogram: Annotated[str, Field(pattern=PROM_LABEL, max_length=128)] = Field(
        default="http_server_request_duration_seconds",
        description="Request-duration histogram in seconds, without _bucket (OpenTelemetry "
        "HTTP semantic conventions by default).",
    )
    status_label: Annotated[str, Field(pattern=PROM_LABEL, max_length=128)] = Field(
        default="http_response_status_code",
        description="Label of the histogram carrying the HTTP status code (5xx are errors).",
    )


class AppAlerts(_AlertGroup):
    """The app's own pods: p95 latency, error ratio, CPU, memory, HPA at max."""

    p95_latency_seconds: float = Field(
        default=0.2,
        gt=0,
        le=600,
        description="Warn when the 95th percentile request duration exceeds this "
        "(seed 000: p95 < 200 ms; seed 003: p95 < 3 s).",
    )
    error_ratio: float = Field(
        default=0.001,
        gt=0,
        le=1,
        description="Warn when this share of requests answers 5xx (seed 000: errors < 0.1%).",
    )
    cpu_percent: int = Field(
        default=50,
        ge=1,
        le=1000,
        description="Warn when the pods' CPU, averaged over them, exceeds this percent of "
        "their CPU requests (what an HPA target means; seed 000: CPU < 50% on average).",
    )
    memory: Quantity = Field(
        default="2G",
        description="Warn when a pod's working set exceeds this (seed 000: < 2 GB per server).",
        json_schema_extra={"x-kubernetes-validations": [_quantity_rule("> 0", "must be > 0")]},
    )
    metrics: AppMetrics | None = Field(
        default_factory=AppMetrics,
        description="The app's HTTP metrics; null when it serves none (then no latency "
        "and error alerts, and no PodMonitor).",
    )


class Alerts(_Model):
    """Prometheus alerts on the plan's numbers, scrape targets and a Grafana dashboard."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.labels) || !self.labels.exists(k, k in "
                    "['alertname', 'severity', 'namespace', 'profile', 'component'])",
                    "spec.alerts.labels: alertname, severity, namespace, profile and "
                    "component are set by Headroom",
                )
            ]
        }
    )

    enabled: bool = Field(
        default=True,
        description="Render the rules (PrometheusRule, or a ConfigMap without "
        "prometheus-operator), the monitors and the dashboard.",
    )
    # (a key pattern would be patternProperties, which structural schemas refuse: CEL instead)
    labels: dict[Annotated[str, Field(max_length=64)], LabelValue] = Field(
        default_factory=dict,
        max_length=16,
        description="Extra labels on every alert (e.g. team: shop), for routing.",
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    f"self.all(k, k.matches('{PROM_LABEL}'))",
                    "spec.alerts.labels: keys must be Prometheus label names "
                    "([a-zA-Z_][a-zA-Z0-9_]*)",
                )
            ]
        },
    )
    pooler: PoolerAlerts = Field(default_factory=PoolerAlerts)
    database: DatabaseAlerts = Field(default_factory=DatabaseAlerts)
    cache: CacheAlerts = Field(default_factory=CacheAlerts)
    queues: QueueAlerts = Field(default_factory=QueueAlerts)
    app: AppAlerts = Field(default_factory=AppAlerts)

    @field_validator("labels")
    @classmethod
    def _not_ours(cls, labels: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in labels if not re.match(PROM_LABEL, k))
        if bad:
            raise ValueError(f"{', '.join(map(repr, bad))}: not Prometheus label names")
        taken = sorted(set(labels) & RESERVED_ALERT_LABELS)
        if taken:
            raise ValueError(f"{', '.join(taken)} are set by Headroom")
        return labels


# Labels every alert carries from Headroom itself.
RESERVED_ALERT_LABELS = frozenset({"alertname", "severity", "namespace", "profile", "component"})


class ScalingProfileSpec(_Model):
    """What the app needs to scale."""

    app: App = Field(description="The app (its Deployment, replica ceiling, client pool).")
    database: Database = Field(description="The app's Postgres primary.")
    pooler: Pooler = Field(
        default_factory=Pooler, description="PgBouncer connection pooling in front of it."
    )
    cache: Cache | None = Field(default=None, description="Redis instances by use.")
    queues: list[Queue] = Field(
        default_factory=list,
        max_length=16,
        description="Queues and their workers, scaled on backlog.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    autoscaling: Autoscaling = Field(
        default_factory=Autoscaling, description="HPA and PDB for the app's Deployment."
    )
    network: Network = Field(
        default_factory=Network, description="NetworkPolicies: who may reach the pods."
    )
    storage: Storage | None = Field(
        default=None, description="Object storage: buckets and their credentials."
    )
    alerts: Alerts = Field(
        default_factory=Alerts,
        description="Alerts on the plan's numbers (PrometheusRule or a rule-file ConfigMap), "
        "monitors for the exporters and the app, a Grafana dashboard.",
    )


class ScalingProfile(_Model):
    """A ScalingProfile as read from the API server or a file."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["headroom.dev/v1alpha1"] = "headroom.dev/v1alpha1"
    kind: Literal["ScalingProfile"] = "ScalingProfile"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ScalingProfileSpec

    @model_validator(mode="after")
    def _has_name(self) -> ScalingProfile:
        name = self.metadata.get("name", "")
        if not isinstance(name, str) or not re.match(DNS_LABEL, name) or len(name) > NAME_MAX:
            # Child names are "<profile>-pooler-rw" etc. and must stay valid DNS labels.
            raise ValueError(f"metadata.name must be a DNS label of at most {NAME_MAX} characters")
        return self

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace") or "default")

    @property
    def uid(self) -> str:
        return str(self.metadata.get("uid", ""))

    @property
    def generation(self) -> int:
        return int(self.metadata.get("generation", 0))


class ProfileError(ValueError):
    """A profile that cannot be parsed; ``str()`` names every offending field."""


def parse_profile(body: dict[str, Any]) -> ScalingProfile:
    """Parse a ScalingProfile body (dict) or raise ProfileError naming the fields."""
    try:
        return ScalingProfile.model_validate(body)
    except ValidationError as err:
        raise ProfileError(format_validation_error(err)) from None


def format_validation_error(err: ValidationError) -> str:
    """Every problem on one line, each starting with the field path as the API
    server writes it (camelCase, ``instances[0]``)."""
    lines = []
    for problem in err.errors():
        path = field_path(problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}" if path else message)
    return "; ".join(lines)


_PART_MAX = 64
_PLAIN_PART = re.compile(r"[A-Za-z0-9_./:-]*")


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("spec", "queues", 0, "name")`` -> ``spec.queues[0].name``; a map key
    that is itself the problem (pydantic's ``[key]``) is named once, and one
    that is too long to repeat is cut."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        if part == "[key]":
            continue
        name = part
        if len(part) > _PART_MAX:
            name = f"{part[:16]!r}...({len(part)} characters)"
        elif not _PLAIN_PART.fullmatch(part):
            name = repr(part)  # a map key with a newline stays on the one line
        text = f"{text}.{name}" if text else name
    return text
