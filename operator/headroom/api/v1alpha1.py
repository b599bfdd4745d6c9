"""ScalingProfile ``headroom.dev/v1alpha1``: the one schema.

Everything that reads a profile (the kopf handlers, the admission webhook, the
CLI) parses it with :func:`parse_profile`; the CRD is generated from these
models by :mod:`headroom.api.crd`. Field descriptions become ``kubectl explain``
text; ``x-kubernetes-validations`` carry the cross-field rules the API server
can check itself (CEL), the rest is enforced by the planner through the webhook.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

GROUP = "headroom.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ScalingProfile"
PLURAL = "scalingprofiles"
SINGULAR = "scalingprofile"
SHORT_NAMES = ("sp",)

# RFC 1123 label / subdomain: what Kubernetes accepts for object names.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A host is a DNS name or an IPv4 address; nothing that could carry a space,
# a quote or a newline into pgbouncer.ini.
HOST = r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$"
# Postgres database and role names we accept unquoted in pgbouncer.ini.
PG_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"  # noqa: S105 - a key-name pattern
IMAGE = r"^[a-z0-9][a-z0-9./_:@-]*$"
PGBOUNCER_VERSION = r"^1\.(1[89]|2[0-9])$"


class _Model(BaseModel):
    """Base: camelCase on the wire, unknown fields rejected, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


def _cel(rule: str, message: str) -> JsonDict:
    return {"rule": rule, "message": message}


class SecretKeyRef(_Model):
    """Keys of an existing Secret holding the database credentials."""

    name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)] = Field(
        description="Name of a Secret in the profile's namespace. Headroom only reads it."
    )
    username_key: Annotated[str, Field(pattern=SECRET_KEY)] = Field(
        default="username", description="Key of the username in the Secret."
    )
    password_key: Annotated[str, Field(pattern=SECRET_KEY)] = Field(
        default="password", description="Key of the password in the Secret."
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


class Capacity(_Model):
    """Derive the replica ceiling from the load the app must carry."""

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
                )
            ]
        }
    )

    host: Annotated[str, Field(pattern=HOST, max_length=253)] = Field(
        description="Host name or IPv4 address of the Postgres primary."
    )
    port: int = Field(default=5432, ge=1, le=65535, description="Postgres port.")
    name: Annotated[str, Field(pattern=PG_IDENTIFIER)] = Field(
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
        default=0,
        ge=0,
        le=100_000,
        description="Connections kept free for everything that is not the pooler: "
        "migrations, admin consoles, cron jobs, replication.",
    )
    ssl_mode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = Field(
        default="prefer", description="TLS mode from the pooler to Postgres."
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
    version: Annotated[str, Field(pattern=PGBOUNCER_VERSION)] = Field(
        default="1.24",
        description="PgBouncer major.minor of the image; only settings valid for this "
        "version are rendered.",
    )
    parameters: dict[str, str] = Field(
        default_factory=dict,
        description="pgbouncer.ini [pgbouncer] overrides. Only allowlisted keys; sizing "
        "keys (default_pool_size, reserve_pool_size, max_db_connections, max_client_conn) "
        "pin the planner and must fit the budget.",
    )
    exporter_image: Annotated[str, Field(pattern=IMAGE, max_length=512)] = Field(
        default="quay.io/prometheuscommunity/pgbouncer-exporter:v0.10.2",
        description="pgbouncer_exporter sidecar image (metrics on port 9127).",
    )


class ScalingProfileSpec(_Model):
    """What the app needs to scale."""

    app: App = Field(description="The app (its Deployment, replica ceiling, client pool).")
    database: Database = Field(description="The app's Postgres primary.")
    pooler: Pooler = Field(
        default_factory=Pooler, description="PgBouncer connection pooling in front of it."
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
        if not isinstance(name, str) or not re.match(DNS_LABEL, name) or len(name) > 40:
            # Child names are "<profile>-pooler-rw" etc. and must stay valid DNS labels.
            raise ValueError("metadata.name must be a DNS label of at most 40 characters")
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
    """One line per problem, each starting with the field path in wire (camelCase) form."""
    lines = []
    for problem in err.errors():
        path = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}" if path else message)
    return "; ".join(lines)
