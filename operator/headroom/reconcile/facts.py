"""The first phase of a pass: the cluster facts the plan is a function of,
read before anything is planned.

Which composed engines are served (KEDA, CloudNativePG, prometheus-operator,
COSI: from the cached CRDs), its share of every Postgres server it uses
with other profiles, the CloudNativePG Cluster of readReplicas mode cnpg (read, never
written), and what the cluster's Prometheus objects select (for the alerts'
labels). Everything comes from the watch caches; the inputs a profile names
are registered in ``refs`` so their changes queue it. Called by
:mod:`headroom.reconcile.reconciler`.
"""

from __future__ import annotations

from headroom.api import v1alpha1
from headroom.planning import monitoring, object_storage, planner, read_plan
from headroom.reconcile import cluster_view


async def gather(
    cluster: cluster_view.Cluster,
    profile: v1alpha1.ScalingProfile,
    *,
    refs: set[cluster_view.InputRef],
    key: str,
    agent_image: str,
    operator_namespace: str,
) -> planner.Facts:
    """The facts of ``profile`` (``key``: its namespace/name). Raises
    :class:`cluster_view.InputError` when its CNPG Cluster does not exist."""
    served = cluster.facts()
    prometheus_operator = served.get("prometheus_operator", False)
    return planner.Facts(
        keda=served.get("keda", False),
        cnpg=served.get("cnpg", False),
        prometheus_operator=prometheus_operator,
        grants=cluster.grants(key),
        agent_image=agent_image,
        operator_namespace=operator_namespace,
        cosi=object_storage.preferred_cosi_version(
            {v: served.get(f"cosi_{v}", False) for v in object_storage.COSI_VERSIONS}
        ),
        prometheus_selection=await _prometheus_selection(cluster, profile, refs=refs)
        if prometheus_operator and profile.spec.alerts.enabled
        else monitoring.Selection(),
        cnpg_cluster=await _cnpg_cluster(
            cluster, profile, refs=refs, cnpg=served.get("cnpg", False)
        ),
    )


async def _prometheus_selection(
    cluster: cluster_view.Cluster,
    profile: v1alpha1.ScalingProfile,
    *,
    refs: set[cluster_view.InputRef],
) -> monitoring.Selection:
    """What the cluster's Prometheus objects select, for the rules' and
    monitors' labels. The profile's namespace is read (its own watch) only
    when a namespace selector looks at more than its name."""
    found = cluster.prometheuses()
    labels: dict[str, str] = {}
    if any(_needs_namespace_labels(p) for p in found):
        ref: cluster_view.InputRef = ("Namespace", "", profile.namespace)
        refs.add(ref)
        namespace = await cluster.read_input(ref)
        labels = dict(((namespace or {}).get("metadata") or {}).get("labels") or {})
    return monitoring.select(
        found,
        namespace=profile.namespace,
        namespace_labels=labels,
        own_labels=monitoring.own_labels(profile.name, app_deployment=profile.spec.app.deployment),
    )


def _needs_namespace_labels(prometheus: cluster_view.Obj) -> bool:
    """A namespace selector that is neither null (own namespace) nor empty (all)
    nor only about ``kubernetes.io/metadata.name`` (which is the name itself)."""
    spec = prometheus.get("spec") or {}
    for _, ns_field in monitoring.SELECTORS.values():
        selector = spec.get(ns_field)
        if not selector:
            continue
        keys = set(selector.get("matchLabels") or {})
        keys |= {e.get("key") for e in selector.get("matchExpressions") or []}
        if keys - {"kubernetes.io/metadata.name"}:
            return True
    return False


async def _cnpg_cluster(
    cluster: cluster_view.Cluster,
    profile: v1alpha1.ScalingProfile,
    *,
    refs: set[cluster_view.InputRef],
    cnpg: bool,
) -> read_plan.CnpgCluster | None:
    """With readReplicas mode cnpg and CloudNativePG installed, the Cluster's
    instances and max_connections (read, never written)."""
    rr = profile.spec.database.read_replicas
    if rr is None or rr.cnpg is None or not cnpg:
        return None
    ref: cluster_view.InputRef = ("Cluster", profile.namespace, rr.cnpg.cluster)
    refs.add(ref)
    found = await cluster.read_input(ref)
    if found is None:
        raise cluster_view.InputError(
            "CNPGClusterNotFound",
            f"CloudNativePG Cluster {rr.cnpg.cluster} "
            "(spec.database.readReplicas.cnpg.cluster) does not exist",
        )
    return read_plan.cnpg_cluster(found)
