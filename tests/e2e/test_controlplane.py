"""Smoke tests proving the e2e control plane is a real one.

Scheduling, kwok-simulated kubelets, Pod Security admission, the garbage
collector and CRD OpenAPI/CEL validation all have to work for the operator's
e2e tests to mean anything.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kube  # tests/e2e/kube.py (conftest puts tests/e2e on sys.path)
import pytest

RESTRICTED_POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def _pod_spec() -> dict[str, Any]:
    return {
        "securityContext": copy.deepcopy(RESTRICTED_POD_SECURITY),
        "containers": [
            {
                "name": "app",
                "image": "registry.k8s.io/pause:3.10",
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                "securityContext": copy.deepcopy(RESTRICTED_CONTAINER_SECURITY),
            }
        ],
    }


def test_deployment_pods_are_scheduled_on_kwok_nodes_and_become_ready(
    kubectl: kube.Kubectl, namespace: str
) -> None:
    labels = {"app": "smoke"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "smoke", "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": _pod_spec()},
        },
    }
    kube.create(kubectl, deployment)

    def ready_replicas() -> bool:
        status = kube.get_json(kubectl, "deployment", "smoke", "-n", namespace).get("status", {})
        return bool(status.get("readyReplicas") == 2 and status.get("availableReplicas") == 2)

    kube.wait_for(ready_replicas, timeout=90, what="deployment smoke to have 2 ready replicas")

    pods = kube.get_json(kubectl, "pods", "-n", namespace, "-l", "app=smoke")["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 2, [p["metadata"]["name"] for p in pods]
    for pod in live:
        assert pod["spec"]["nodeName"].startswith("kwok-node-"), pod["spec"].get("nodeName")
        assert pod["status"]["phase"] == "Running"
        assert kube.condition(pod, "Ready") == "True"
        # Admission really ran: the ServiceAccount plugin mounted a token volume.
        assert pod["spec"]["serviceAccountName"] == "default"
        assert any(v["name"].startswith("kube-api-access-") for v in pod["spec"]["volumes"])


def test_restricted_pod_security_rejects_a_privileged_pod(
    kubectl: kube.Kubectl, namespace: str
) -> None:
    good: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "compliant", "namespace": namespace},
        "spec": _pod_spec(),
    }
    kube.create(kubectl, good)  # the same spec minus the violation is admitted

    bad = copy.deepcopy(good)
    bad["metadata"]["name"] = "privileged"
    bad["spec"]["securityContext"] = {}
    bad["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    proc = kube.create(kubectl, bad, check=False)

    assert proc.returncode != 0, "a privileged pod was admitted into a restricted namespace"
    assert "forbidden" in proc.stderr
    assert 'violates PodSecurity "restricted:latest"' in proc.stderr, proc.stderr
    assert "privileged" in proc.stderr
    assert not kube.exists(kubectl, "pod", "privileged", "-n", namespace)


def test_garbage_collector_deletes_owned_objects(kubectl: kube.Kubectl, namespace: str) -> None:
    kube.create(
        kubectl,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "owner", "namespace": namespace},
            "data": {"k": "v"},
        },
    )
    owner_uid = kube.get_json(kubectl, "configmap", "owner", "-n", namespace)["metadata"]["uid"]
    kube.create(
        kubectl,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "owned",
                "namespace": namespace,
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}
                ],
            },
            "stringData": {"k": "v"},
        },
    )
    assert kube.exists(kubectl, "secret", "owned", "-n", namespace)

    kubectl("delete", "configmap", "owner", "-n", namespace, "--cascade=background")

    kube.wait_for(
        lambda: not kube.exists(kubectl, "secret", "owned", "-n", namespace),
        timeout=90,
        what="the garbage collector to delete secret 'owned' after its owner went away",
    )


# --------------------------------------------------------------- upstream CRDs

UPSTREAM_CRDS = ("keda.sh_scaledobjects.yaml", "monitoring.coreos.com_prometheusrules.yaml")


@pytest.fixture(scope="module")
def upstream_crds(kubectl: kube.Kubectl, upstream_crds_dir: Path) -> list[str]:
    paths = [upstream_crds_dir / name for name in UPSTREAM_CRDS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"upstream CRD files missing: {missing}")
    # Left installed on purpose: other tests install the same CRDs (idempotent).
    return kube.install_crds(kubectl, paths)


def _scaled_object(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "scaleTargetRef": {"name": "web"},
        "minReplicaCount": 1,
        "maxReplicaCount": 10,
        "triggers": [
            {
                "type": "redis",
                "metadata": {
                    "address": "redis.example.svc:6379",
                    "listName": "jobs",
                    "listLength": "5",
                },
            }
        ],
    }
    base.update(spec)
    base = {k: v for k, v in base.items() if v is not None}
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": namespace},
        "spec": base,
    }


def test_keda_scaledobject_valid_is_accepted(
    kubectl: kube.Kubectl, namespace: str, upstream_crds: list[str]
) -> None:
    assert "scaledobjects.keda.sh" in upstream_crds
    kube.create(kubectl, _scaled_object("web", namespace))
    stored = kube.get_json(kubectl, "scaledobjects.keda.sh", "web", "-n", namespace)
    assert stored["spec"]["triggers"][0]["type"] == "redis"
    assert stored["spec"]["scaleTargetRef"]["name"] == "web"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"triggers": None}, "spec.triggers: Required value", id="triggers-missing"),
        pytest.param(
            {"triggers": []},
            "spec.triggers in body should have at least 1 items",
            id="triggers-empty",
        ),
        pytest.param(
            {"maxReplicaCount": "ten"},
            "spec.maxReplicaCount in body must be of type integer",
            id="maxReplicaCount-not-integer",
        ),
        pytest.param(
            {"triggers": [{"type": "redis"}]},
            "spec.triggers[0].metadata: Required value",
            id="trigger-metadata-missing",
        ),
        pytest.param(
            {"minReplicaCount": 5, "maxReplicaCount": 2},
            "minReplicaCount must be less than or equal to maxReplicaCount",
            id="cel-min-greater-than-max",
        ),
    ],
)
def test_keda_scaledobject_invalid_is_rejected(
    kubectl: kube.Kubectl,
    namespace: str,
    upstream_crds: list[str],
    spec: dict[str, Any],
    expected: str,
) -> None:
    proc = kube.create(kubectl, _scaled_object("bad", namespace, **spec), check=False)
    assert proc.returncode != 0, "the API server accepted an invalid ScaledObject"
    assert "is invalid" in proc.stderr, proc.stderr
    assert expected in proc.stderr, proc.stderr
    assert not kube.exists(kubectl, "scaledobjects.keda.sh", "bad", "-n", namespace)


def _prometheus_rule(name: str, namespace: str, groups: Any) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"groups": groups},
    }


VALID_GROUP = {
    "name": "headroom.smoke",
    "rules": [
        {
            "alert": "QueueBacklogHigh",
            "expr": "sum(redis_list_length) > 100",
            "for": "5m",
            "labels": {"severity": "warning"},
            "annotations": {"summary": "queue backlog is high"},
        }
    ],
}


def test_prometheusrule_valid_is_accepted(
    kubectl: kube.Kubectl, namespace: str, upstream_crds: list[str]
) -> None:
    assert "prometheusrules.monitoring.coreos.com" in upstream_crds
    kube.create(kubectl, _prometheus_rule("smoke", namespace, [VALID_GROUP]))
    stored = kube.get_json(
        kubectl, "prometheusrules.monitoring.coreos.com", "smoke", "-n", namespace
    )
    assert stored["spec"]["groups"][0]["rules"][0]["alert"] == "QueueBacklogHigh"


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        pytest.param(
            [{"name": "g", "rules": [{"alert": "NoExpr", "for": "5m"}]}],
            "spec.groups[0].rules[0].expr: Required value",
            id="rule-missing-expr",
        ),
        pytest.param(
            "headroom.smoke", "spec.groups in body must be of type array", id="groups-not-a-list"
        ),
        pytest.param([VALID_GROUP, VALID_GROUP], "spec.groups[1]: Duplicate value", id="dup-group"),
    ],
)
def test_prometheusrule_invalid_is_rejected(
    kubectl: kube.Kubectl,
    namespace: str,
    upstream_crds: list[str],
    groups: Any,
    expected: str,
) -> None:
    proc = kube.create(kubectl, _prometheus_rule("bad", namespace, groups), check=False)
    assert proc.returncode != 0, "the API server accepted an invalid PrometheusRule"
    assert "is invalid" in proc.stderr, proc.stderr
    assert expected in proc.stderr, proc.stderr
    assert not kube.exists(kubectl, "prometheusrules.monitoring.coreos.com", "bad", "-n", namespace)
