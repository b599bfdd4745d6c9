"""Which Postgres servers a profile's poolers open connections on, by a key
that is the same for every profile pointing at the same server.

A server's ``max_connections`` is shared by whatever connects to it, so the
budget of every profile on it counts what the others open (see
:mod:`headroom.planning.server_shares`): the primary (``spec.database``), and the
read replicas somebody else runs (``readReplicas.hosts``, or a CloudNativePG
Cluster's ``-ro`` Service), which other profiles may list too. The standbys of
mode streaming are the profile's own and shared with nobody.

Pure; used by the planner (which of ``Facts.shared`` are on its servers), the
shared-budget table and admission.
"""

from __future__ import annotations

from headroom.api import v1alpha1
from headroom.planning import names

_CLUSTER_DOMAIN = ".cluster.local"
# the port every CloudNativePG Service listens on
CNPG_PORT = 5432


def key(namespace: str, host: str, port: int) -> str:
    """``host:port`` of a server, a short Service name qualified with the
    profile's namespace (``db`` in ``shop`` is ``db.shop.svc``)."""
    name = host.lower().rstrip(".")
    if name.endswith(_CLUSTER_DOMAIN):
        name = name[: -len(_CLUSTER_DOMAIN)]
    if "." not in name:
        name = f"{name}.{namespace}.svc"
    return f"{name}:{port}"


def primary(namespace: str, database: v1alpha1.Database) -> str:
    return key(namespace, database.host, database.port)


def replicas(namespace: str, database: v1alpha1.Database) -> dict[str, str]:
    """Replica name (as :mod:`headroom.planning.replicas` names them) -> server
    key, for the replicas other profiles may share."""
    rr = database.read_replicas
    if rr is None:
        return {}
    if rr.mode == "external" and rr.hosts:
        return {
            f"replica-{index}": key(namespace, replica.host, replica.port)
            for index, replica in enumerate(rr.hosts)
        }
    if rr.mode == "cnpg" and rr.cnpg:
        service = names.cnpg_ro_host(rr.cnpg.cluster, namespace)
        return {"cnpg-ro": key(namespace, service, CNPG_PORT)}
    return {}


def of(profile: v1alpha1.ScalingProfile) -> tuple[str, ...]:
    """Every server ``profile`` may open connections on (the primary first)."""
    database = profile.spec.database
    found = [primary(profile.namespace, database)]
    found += [k for k in replicas(profile.namespace, database).values() if k not in found]
    return tuple(found)
