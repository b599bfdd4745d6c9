"""The builtin storage provider on a real API server: a profile with builtin
buckets gets the versitygw StatefulSet (restricted Pod Security), its
Secrets and a binding that carries the app's keys, never the root ones;
deleting the profile keeps the server's PVC when a bucket is Retain and
deletes it when every bucket is Delete.
"""

from __future__ import annotations

import base64
from typing import Any

import kube
import operator_process
from apps import app_deployment, credentials
from tests import profiles

NAME = "shop"


def _profile(namespace: str, *, policy: str) -> dict[str, Any]:
    body = profiles.base(name=NAME, namespace=namespace)
    body["spec"]["storage"] = {
        "buckets": [
            {
                "name": "meal-photos",
                "builtin": {"storage": {"size": "2Gi"}},
                "deletionPolicy": policy,
                "cors": {"allowedOrigins": ["https://app.example.com"]},
            },
            {"name": "avatars", "builtin": {}, "deletionPolicy": policy},
        ]
    }
    return body


def _secret(kubectl: kube.Kubectl, namespace: str, name: str) -> dict[str, str]:
    data = kube.get_json(kubectl, "secret", name, "-n", namespace)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def _run(kubectl: kube.Kubectl, namespace: str, *, policy: str) -> dict[str, Any]:
    kube.apply(kubectl, app_deployment(namespace), credentials(namespace))
    kube.apply(kubectl, _profile(namespace, policy=policy), namespace=namespace)
    kubectl(
        "wait", "--for=condition=Ready", f"scalingprofile/{NAME}", "-n", namespace, "--timeout=120s"
    )
    sp = kube.get_json(kubectl, "scalingprofile", NAME, "-n", namespace)
    assert kube.condition(sp, "StorageReady") == "True"
    sts = kube.get_json(kubectl, "statefulset", f"{NAME}-s3", "-n", namespace)
    assert sts["status"].get("readyReplicas") == 1
    retention = sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"]
    assert retention == ("Retain" if policy == "Retain" else "Delete")
    root = _secret(kubectl, namespace, f"{NAME}-s3-root")
    app = _secret(kubectl, namespace, f"{NAME}-s3-app")
    binding = _secret(kubectl, namespace, sp["status"]["binding"]["name"])
    assert binding["S3_ENDPOINT"] == f"http://{NAME}-s3.{namespace}.svc:7070"
    assert binding["S3_BUCKET"] == "meal-photos"
    assert binding["S3_AVATARS_BUCKET"] == "avatars"
    assert binding["S3_FORCE_PATH_STYLE"] == "true"
    assert binding["AWS_ACCESS_KEY_ID"] == app["accessKeyId"]
    assert binding["AWS_SECRET_ACCESS_KEY"] == app["secretAccessKey"]
    assert not set(root.values()) & set(binding.values())
    assert kube.exists(kubectl, "pvc", f"data-{NAME}-s3-0", "-n", namespace)
    kubectl("delete", "scalingprofile", NAME, "-n", namespace, "--wait=true", "--timeout=60s")
    kube.wait_for(
        lambda: not kube.exists(kubectl, "statefulset", f"{NAME}-s3", "-n", namespace),
        timeout=60,
        what="the server's StatefulSet to be collected with the profile",
    )
    return sp


def test_retain_keeps_the_servers_volume(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    _run(kubectl, namespace, policy="Retain")
    pvc = kube.get_json(kubectl, "pvc", f"data-{NAME}-s3-0", "-n", namespace)
    assert not pvc["metadata"].get("ownerReferences")
    assert pvc["metadata"]["annotations"]["headroom.dev/retain"] == "true"
    assert not kube.exists(kubectl, "secret", f"{NAME}-s3-root", "-n", namespace)


def test_delete_removes_the_servers_volume(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    _run(kubectl, namespace, policy="Delete")
    kube.wait_for(
        lambda: not kube.exists(kubectl, "pvc", f"data-{NAME}-s3-0", "-n", namespace),
        timeout=60,
        what="the server's PVC to be deleted with the StatefulSet",
    )
