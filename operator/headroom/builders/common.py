"""Shared pieces of every child object: names, standard labels, owner reference,
restricted security contexts and content hashes.

Pure; used by every builder module.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from typing import Any

from headroom.api import v1alpha1
from headroom.planning import agentfile, names, object_storage, planner

CONFIG_HASH_ANNOTATION = "headroom.dev/config-hash"
# one function for the hash of a config file, in the builders and the agents
content_hash = agentfile.content_hash

Obj = dict[str, Any]


def selector_labels(plan: planner.Plan, *, component: str, name: str) -> dict[str, str]:
    """Labels a workload selects its pods by; stable for the life of the object."""
    return names.selector_labels(plan.name, component=component, app_name=name)


def labels(plan: planner.Plan, *, component: str, name: str) -> dict[str, str]:
    return names.labels(
        plan.name, app_deployment=plan.app.deployment, component=component, app_name=name
    )


def owner_reference(plan: planner.Plan) -> Obj:
    return {
        "apiVersion": v1alpha1.API_VERSION,
        "kind": v1alpha1.KIND,
        "name": plan.name,
        "uid": plan.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(
    plan: planner.Plan,
    *,
    name: str,
    component: str,
    app_name: str,
    annotations: dict[str, str] | None = None,
    retain: bool = False,
) -> Obj:
    """``retain``: the object must outlive the profile (deletionPolicy Retain):
    no owner reference, so garbage collection leaves it, and the retain
    annotation, so pruning never deletes it and a profile of the same name
    adopts it again (see :mod:`headroom.reconcile.apply`)."""
    meta: Obj = {
        "name": name,
        "namespace": plan.namespace,
        "labels": labels(plan, component=component, name=app_name),
    }
    if retain:
        annotations = {**(annotations or {}), object_storage.RETAIN_ANNOTATION: "true"}
    elif plan.uid:  # rendered offline (headroom render) there is no owner yet
        meta["ownerReferences"] = [owner_reference(plan)]
    if annotations:
        meta["annotations"] = annotations
    return meta


def secret_revision(secret: str, *, salt: str) -> str:
    """A short revision of a secret Headroom generated, for a pod template
    annotation that rolls the pods reading it when it is made anew.

    A salted, domain-separated sha256 cut to 64 bits: no lookup table matches
    it, and the secrets it is used for are random (192 bits), so it tells
    nothing about them beyond "changed".
    """
    digest = hashlib.sha256(b"headroom.dev/secret-revision\0")
    digest.update(salt.encode() + b"\0" + secret.encode())
    return digest.hexdigest()[:16]


def pod_security_context(uid: int) -> Obj:
    """Restricted Pod Security Standard, pod level."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Obj:
    """Restricted Pod Security Standard, container level."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def spread_constraints(selector: dict[str, str]) -> list[Obj]:
    """Spread pods over nodes and zones, without blocking scheduling on small clusters."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(selector)},
        }
        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
    ]


def client_peers(plan: planner.Plan, app_pod_selector: Obj | None) -> list[Obj]:
    """NetworkPolicy peers that use what Headroom runs: its worker pods and the
    app's pods (when its Deployment was found), in the profile's namespace."""
    workers = selector_labels(plan, component="worker", name="worker")
    workers.pop("app.kubernetes.io/name")
    peers: list[Obj] = [{"podSelector": {"matchLabels": workers}}]
    if app_pod_selector:
        peers.append({"podSelector": copy.deepcopy(app_pod_selector)})
    return peers


def metrics_peer(plan: planner.Plan) -> Obj:
    """Who may scrape the exporters: spec.network.monitoringNamespace, else the
    profile's own namespace."""
    namespace = plan.network.monitoring_namespace
    if namespace is None:
        return {"podSelector": {}}
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}


def keda_peer(plan: planner.Plan, operator_pod: dict[str, str]) -> Obj:
    """KEDA's operator pods, in spec.network.kedaNamespace only."""
    return {
        "namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": plan.network.keda_namespace}
        },
        "podSelector": {"matchLabels": dict(operator_pod)},
    }


def usable_selector(selector: Obj | None) -> Obj:
    """A Deployment's label selector as the PDB and NetworkPolicy take it; empty
    when it selects nothing specific (an empty selector would match every pod)."""
    if not selector:
        return {}
    usable = {
        key: selector[key] for key in ("matchLabels", "matchExpressions") if selector.get(key)
    }
    return usable


def secret_data(values: dict[str, str]) -> dict[str, str]:
    """Secret ``data`` (base64). Builders never use ``stringData``: under
    server-side apply its keys are owned as ``f:stringData``, so a key dropped
    from the desired Secret would stay in ``.data`` (kubernetes#108008)."""
    return {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}


def pod_spec(
    *,
    uid: int,
    selector: dict[str, str],
    containers: list[Obj],
    volumes: list[Obj],
    init_containers: list[Obj] | None = None,
    grace_seconds: int | None = None,
) -> Obj:
    """A restricted pod spec: no API token, no service links, spread over nodes."""
    spec: Obj = {"automountServiceAccountToken": False, "enableServiceLinks": False}
    if grace_seconds is not None:
        spec["terminationGracePeriodSeconds"] = grace_seconds
    spec["securityContext"] = pod_security_context(uid)
    spec["topologySpreadConstraints"] = spread_constraints(selector)
    if init_containers:
        spec["initContainers"] = init_containers
    spec["containers"] = containers
    spec["volumes"] = volumes
    return spec


def claim_templates(
    *, volume: str, labels: dict[str, str], claim: v1alpha1.Persistence | v1alpha1.StandbyStorage
) -> Obj:
    """A StatefulSet's volumeClaimTemplates and retention policy: one claim per
    pod, retained when the StatefulSet goes (with the profile) or scales down,
    unless ``claim.delete_with_profile``."""
    spec: Obj = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": claim.size}},
    }
    if claim.storage_class_name:
        spec["storageClassName"] = claim.storage_class_name
    return {
        "volumeClaimTemplates": [{"metadata": {"name": volume, "labels": labels}, "spec": spec}],
        "persistentVolumeClaimRetentionPolicy": {
            "whenDeleted": "Delete" if claim.delete_with_profile else "Retain",
            "whenScaled": "Retain",
        },
    }


def deployment_ref(name: str) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}


def cpu_hpa(
    *,
    metadata: Obj,
    deployment: str,
    min_replicas: int,
    max_replicas: int,
    cpu_utilization: int,
    behavior: Obj,
) -> Obj:
    """autoscaling/v2 HPA of a Deployment on average CPU utilization."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": deployment_ref(deployment),
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": cpu_utilization},
                    },
                }
            ],
            "behavior": behavior,
        },
    }
