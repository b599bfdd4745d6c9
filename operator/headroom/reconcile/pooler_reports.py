"""The poolers' state ConfigMaps kept to the pods that exist.

Each pod's agent (the write pooler's and the read pooler's) writes its own
key (its pod name) into ``<pooler>-state`` (:mod:`headroom.planning.pooler_state`); a pod that goes
(a rollout, an eviction, a scale-in) leaves its key behind, so the ConfigMap
would grow with every rollout, and an entry of a pod that is gone still
reads as a pod's report. :func:`prune` removes those keys.

The operator caches no pods: the pooler's pods are listed (by its
Deployment's selector) only when the ConfigMap has more keys than the
Deployment has pods, so a steady pooler costs neither a read nor a write.
The keys go by a merge patch that sets them to null: the operator's field
manager never owns a key of that ConfigMap's data (the builder applies it
without data). Called by :mod:`headroom.reconcile.reconciler` after the
apply phase.
"""

from __future__ import annotations

import logging

from headroom.kube import errors
from headroom.planning import names, pooler_state, server_shares
from headroom.reconcile import apply, cluster_view

log = logging.getLogger(__name__)

Obj = cluster_view.Obj


def _selector(deployment: Obj) -> str:
    labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


async def prune(
    cluster: cluster_view.Cluster,
    child_names: names.ChildNames,
    *,
    children: dict[str, Obj],
    result: apply.ApplyResult,
) -> None:
    """Remove the entries of both poolers' pods that no longer exist."""
    for pooler in (server_shares.write_pooler(child_names), server_shares.read_pooler(child_names)):
        await _prune(cluster, child_names, pooler=pooler, children=children, result=result)


async def _prune(
    cluster: cluster_view.Cluster,
    child_names: names.ChildNames,
    *,
    pooler: server_shares.Pooler,
    children: dict[str, Obj],
    result: apply.ApplyResult,
) -> None:
    state = children.get(f"ConfigMap/{pooler.state}")
    deployment = children.get(f"Deployment/{pooler.deployment}")
    if state is None or deployment is None:
        return
    data = state.get("data")
    if not pooler_state.crowded(data, pods=pooler_state.pods_of(deployment)):
        return
    selector = _selector(deployment)
    if not selector:  # never list every pod of the namespace
        return
    key = f"ConfigMap/{pooler.state}"
    try:
        pods = await cluster.running_pods(child_names.namespace, selector=selector)
        # a terminating pod is gone too: nothing triggers a pass when it
        # finally disappears (no pod is watched), the rollout's status does
        # when it starts terminating
        there = [p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")]
        stale = pooler_state.gone(data, pods=there)
        if not stale:
            return
        await cluster.remove_data_keys(state, stale)
    except errors.KubeError as err:
        result.fail(key, f"remove the entries of gone pods: {err}"[:400], retry=err.retriable)
        return
    result.writes += 1
    log.debug("removed %d entries of gone pods from %s", len(stale), key)
