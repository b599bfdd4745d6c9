"""Where a profile's database metrics come from: postgres_exporter in front of
every server the profile uses (the primary and each read replica it knows), or
CloudNativePG's own exporter when the database is a CNPG Cluster and CNPG is
installed; which role it reads them with; and the connections it holds, which
the budget of each server counts.

One exporter per profile and server, not one per server shared by every
profile on it: a child belongs to one profile (its owner reference, in the
profile's own namespace), and the profiles sharing a server may live in other
namespaces, hold other credentials and be deleted in any order. The cost is
:data:`EXPORTER_CONNECTIONS` connections per profile on each server, in that
server's budget like any other share.

Pure; called by :func:`headroom.planning.planner.plan`.
"""

from __future__ import annotations

from dataclasses import dataclass

from headroom.api import v1alpha1
from headroom.planning import names

EXPORTER_PORT = 9187
# What one postgres_exporter (0.17) holds on its server: the connection its
# default metrics keep open, and one per scrape in flight for its collectors
# (each scrape opens its own): two, from a pair of Prometheus replicas.
EXPORTER_CONNECTIONS = 3
PRIMARY = names.PRIMARY_SERVER
EXPORTER = "exporter"
CNPG = "cnpg"


@dataclass(frozen=True)
class Server:
    """One database server an exporter reads."""

    name: str  # "primary", or the replica's name (replica-0, standby-1, cnpg-ro)
    host: str
    port: int
    max_connections: int

    @property
    def primary(self) -> bool:
        return self.name == PRIMARY


@dataclass(frozen=True)
class DatabaseMetricsPlan:
    """``source``: "exporter" (Headroom runs one per server) or "cnpg" (the
    Cluster's own metrics, scraped from its pods)."""

    source: str
    servers: tuple[Server, ...]  # the exporters', primary first ("cnpg": none)
    image: str
    credentials: v1alpha1.SecretKeyRef  # the role the exporters log in with
    monitoring_role: bool  # spec.database.metrics.credentialsSecret was given
    cnpg_cluster: str | None = None

    @property
    def statements(self) -> bool:
        """Per-statement times are collected: pg_stat_statements through a
        monitoring role. (postgres_exporter 0.17 exports a statement whose query
        id its role may not see as ``queryid="unknown"``; two of them make the
        whole scrape fail, so the app's role never runs that collector.)"""
        return self.source == EXPORTER and self.monitoring_role

    def connections_on(self, server: str) -> int:
        """Connections the exporter of ``server`` holds there (0: none runs)."""
        if self.source != EXPORTER or all(s.name != server for s in self.servers):
            return 0
        return EXPORTER_CONNECTIONS


def source(spec: v1alpha1.ScalingProfileSpec, *, cnpg: bool) -> str | None:
    """Where the metrics come from (None: spec.database.metrics.enabled false)."""
    db = spec.database
    if not db.metrics.enabled:
        return None
    rr = db.read_replicas
    if cnpg and rr is not None and rr.mode == "cnpg" and rr.cnpg is not None:
        return CNPG
    return EXPORTER


def exporter_connections(found: str | None) -> int:
    """What one server's exporter holds, before the servers are known."""
    return EXPORTER_CONNECTIONS if found == EXPORTER else 0


def plan(
    spec: v1alpha1.ScalingProfileSpec,
    *,
    found: str | None,
    replicas: tuple[Server, ...],
) -> DatabaseMetricsPlan | None:
    """``found``: :func:`source`; ``replicas``: the read replicas the read pool uses."""
    if found is None:
        return None
    db = spec.database
    metrics = db.metrics
    rr = db.read_replicas
    primary = Server(PRIMARY, db.host, db.port, db.max_connections)
    return DatabaseMetricsPlan(
        source=found,
        servers=(primary, *replicas) if found == EXPORTER else (),
        image=metrics.image,
        credentials=metrics.credentials_secret or db.credentials_secret,
        monitoring_role=metrics.credentials_secret is not None,
        cnpg_cluster=rr.cnpg.cluster if found == CNPG and rr and rr.cnpg else None,
    )
