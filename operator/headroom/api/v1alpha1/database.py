"""``spec.database``: the app's Postgres primary (where it is, its credentials,
its connection limits and TLS), and its read replicas."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from headroom.api.v1alpha1 import images
from headroom.api.v1alpha1.read_replicas import ReadReplicas
from headroom.api.v1alpha1.references import CASecretRef, SecretKeyRef
from headroom.api.v1alpha1.schema import HOST, PG_IDENTIFIER, Broken, ImageRef, Model, Rule

# Direct sessions a migration (Prisma migrate takes 1-2), an admin console and
# a cron job need beside the pooler.
DEFAULT_RESERVED_CONNECTIONS = 5


class Share(Model):
    """This profile's share of a Postgres server that other profiles use too."""

    RULES = (
        Rule(
            "!has(self.minimum) || !has(self.maximum) || self.minimum <= self.maximum",
            "spec.database.share.minimum must be <= spec.database.share.maximum",
            lambda share: (
                None
                if share.minimum is None or share.maximum is None or share.minimum <= share.maximum
                else Broken(
                    "minimum",
                    lambda at: f"{share.minimum} must be <= {at('maximum')} {share.maximum}",
                )
            ),
        ),
    )

    weight: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="The room of a shared server beyond every profile's guaranteed minimum "
        "is divided by weight (2 gets twice what 1 gets), never past what a profile's "
        "clients could ask for; the rest stays free. Applies on the primary and on every "
        "read replica other profiles list too.",
    )
    minimum: int | None = Field(
        default=None,
        ge=1,
        le=262_143,
        description="Server connections on the primary guaranteed to this profile's write "
        "pooler (every pod at peak, rounded up to whole connections per pod). Unset: one per "
        "pooler pod in transaction mode, every session in session mode. Admission refuses "
        "a profile whose guaranteed minimum no longer fits beside the others'.",
    )
    maximum: int | None = Field(
        default=None,
        ge=1,
        le=262_143,
        description="The most server connections the write pooler may hold on the primary "
        "(every pod at peak), whatever its weight. Unset: what its clients could ask for.",
    )


class DatabaseMetrics(Model):
    """postgres_exporter in front of every database server the profile uses."""

    enabled: bool = Field(
        default=True,
        description="Run postgres_exporter (one Deployment per server: the primary and each "
        "read replica; its connections count in the budget of each). With readReplicas mode "
        "cnpg and CloudNativePG installed, the Cluster's own metrics are scraped instead.",
    )
    image: Annotated[ImageRef, images.defaulted(images.POSTGRES_EXPORTER_IMAGE)] = images.field(
        images.POSTGRES_EXPORTER_IMAGE,
        what="postgres_exporter image (metrics on port 9187).",
    )
    credentials_secret: SecretKeyRef | None = Field(
        default=None,
        description="A monitoring role's Secret (a role granted pg_monitor sees every "
        "session's state and every statement's text). Default: spec.database.credentialsSecret "
        "(the app's role: its own sessions in full, the others' counted without their state).",
    )


class Database(Model):
    """The app's Postgres primary."""

    RULES = (
        Rule(
            "self.superuserReservedConnections + self.reservedConnections < self.maxConnections",
            "spec.database.superuserReservedConnections + "
            "spec.database.reservedConnections must be < spec.database.maxConnections",
            lambda db: (
                None
                if db.superuser_reserved_connections + db.reserved_connections < db.max_connections
                else Broken(
                    "maxConnections",
                    lambda at: (
                        f"{db.max_connections} leaves nothing after "
                        f"{at('superuserReservedConnections')} "
                        f"{db.superuser_reserved_connections} + "
                        f"{at('reservedConnections')} {db.reserved_connections}"
                    ),
                )
            ),
        ),
        Rule(
            "!has(self.sslMode) || !(self.sslMode in ['verify-ca', 'verify-full'])"
            " || has(self.serverCASecret)",
            "spec.database.serverCASecret is required when spec.database.sslMode is "
            "verify-ca or verify-full",
            lambda db: (
                None
                if db.ssl_mode not in ("verify-ca", "verify-full")
                or db.server_ca_secret is not None
                else Broken(
                    "serverCASecret",
                    lambda at: (
                        f"is required when {at('sslMode')} is {db.ssl_mode} (the CA that "
                        "signed the primary's certificate)"
                    ),
                )
            ),
        ),
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
        "everything, and the binding then has no direct URL (DATABASE_URL, Prisma's "
        "DIRECT_URL): nothing would count its connections.",
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

    share: Share = Field(
        default_factory=Share,
        description="How this profile shares the primary (and the read replicas it lists) "
        "with the other profiles on them: weight, guaranteed minimum, maximum.",
    )
    read_replicas: ReadReplicas | None = Field(
        default=None,
        description="Read replicas behind a pooled, lag-aware read endpoint (DATABASE_READ_URL).",
    )
    metrics: DatabaseMetrics = Field(
        default_factory=DatabaseMetrics,
        description="The servers' own metrics (connections by state, slow queries, "
        "per-statement times, query rate, replication lag) for the alerts and the dashboard.",
    )
