"""``spec.database.readReplicas``: read replicas somebody else runs (external),
a CloudNativePG Cluster's (cnpg) or hot standbys Headroom runs (streaming), and
the lag-aware read pool in front of them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from headroom.api.v1alpha1 import images
from headroom.api.v1alpha1.pods import Claim, Resources, same_claim
from headroom.api.v1alpha1.references import SecretKeyRef
from headroom.api.v1alpha1.schema import (
    DNS_LABEL,
    HOST,
    Broken,
    ImageRef,
    Model,
    PositiveQuantity,
    Rule,
)

READ_REPLICAS_MAX = 8


class ReplicaHost(Model):
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


class CnpgReplicas(Model):
    """The database is a CloudNativePG ``Cluster`` (read, never written)."""

    cluster: Annotated[str, Field(pattern=DNS_LABEL, max_length=50)] = Field(
        description="Name of the postgresql.cnpg.io/v1 Cluster in the profile's namespace. "
        "Its -ro Service is the read target; spec.instances and its max_connections are "
        "read from it."
    )


class StandbyStorage(Claim):
    """The volume of each standby (its copy of the database)."""

    RULES = (
        same_claim(
            "spec.database.readReplicas.streaming.storage.size and storageClassName "
            "cannot change: they are the StatefulSet's volumeClaimTemplates"
        ),
    )

    size: PositiveQuantity = Field(
        default="10Gi", description="PVC size per standby: at least the primary's data directory."
    )


class StreamingReplicas(Model):
    """Hot standbys Headroom runs, streaming from the primary through one
    physical replication slot each."""

    standbys: int = Field(default=2, ge=1, le=READ_REPLICAS_MAX, description="Hot standbys.")
    replication_secret: SecretKeyRef = Field(
        description="Secret with a role that has REPLICATION on the primary (and a "
        "pg_hba.conf entry for replication): the standbys clone and stream with it."
    )
    image: Annotated[ImageRef, images.defaulted(images.POSTGRES_IMAGE)] = images.field(
        images.POSTGRES_IMAGE,
        what="Postgres image of the standbys: the primary's major version.",
    )
    max_connections: int | None = Field(
        default=None,
        ge=2,
        le=262_143,
        description="max_connections of each standby. Default and minimum: "
        "spec.database.maxConnections (Postgres refuses a hot standby below its primary's).",
    )
    storage: StandbyStorage = Field(default_factory=StandbyStorage)
    resources: Resources = Field(default_factory=Resources)


class ReadPooler(Model):
    """PgBouncer in front of the replicas (``<name>-pooler-ro``)."""

    instances: int = Field(default=2, ge=1, le=50, description="Read-pooler pods.")


FIELD = "spec.database.readReplicas"


def _section_of(mode: str, section: str) -> Rule:
    """The section of ``mode`` is given with that mode, and only then."""

    def check(rr: ReadReplicas) -> Broken | None:
        given = getattr(rr, section) is not None
        if (rr.mode == mode) == given:
            return None
        return Broken(
            section,
            lambda at: f"is required with {at('mode')} {mode}, and only then (mode is {rr.mode})",
        )

    return Rule(
        f"(self.mode == '{mode}') == has(self.{section})",
        f"{FIELD}.{section} is required with mode {mode}, and only then",
        check,
    )


def _fallback_only_to_the_primary(rr: ReadReplicas) -> Broken | None:
    if rr.when_all_lagging != "refuse" or rr.primary_fallback_connections is None:
        return None
    return Broken(
        "primaryFallbackConnections",
        lambda at: (
            f"{rr.primary_fallback_connections} is set, but {at('whenAllLagging')} is "
            "refuse: the read pool never falls back to the primary (drop one of them)"
        ),
    )


def _poll_within_lag(rr: ReadReplicas) -> Broken | None:
    if rr.poll_seconds <= rr.max_lag_seconds:
        return None
    return Broken(
        "pollSeconds",
        lambda at: (
            f"{rr.poll_seconds} is above {at('maxLagSeconds')} {rr.max_lag_seconds}: "
            "a replica could stay in the read pool for a whole poll past the lag bound; poll at "
            "least as often as the bound"
        ),
    )


class ReadReplicas(Model):
    """Read replicas and the pooled read endpoint (DATABASE_READ_URL)."""

    RULES = (
        _section_of("external", "hosts"),
        _section_of("cnpg", "cnpg"),
        _section_of("streaming", "streaming"),
        Rule(
            "self.whenAllLagging != 'refuse' || !has(self.primaryFallbackConnections)",
            f"{FIELD}.primaryFallbackConnections is only for {FIELD}.whenAllLagging primary",
            _fallback_only_to_the_primary,
        ),
        Rule(
            "self.pollSeconds <= self.maxLagSeconds",
            f"{FIELD}.pollSeconds must be <= {FIELD}.maxLagSeconds",
            _poll_within_lag,
        ),
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
        default=5,
        ge=1,
        le=300,
        description="How often each read-pooler pod measures the lag; at most maxLagSeconds.",
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
        description="whenAllLagging primary only: server connections the read pool may open "
        "on the primary while every replica is out, over all read-pooler pods (kept out of "
        "the write pool's budget). Default: a tenth of what the primary has for the poolers, "
        "at least one per read-pooler pod; at most half of it, and at most what the read "
        "pool's pods can open.",
    )
    pooler: ReadPooler = Field(default_factory=ReadPooler)
