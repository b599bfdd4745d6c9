"""Object storage end to end, with the upstream COSI CRDs installed by the test.

No COSI controller or driver runs here (none can be built from Go modules
alone and run against this control plane without a storage backend and its
sidecar); the test does what they would do: it marks the BucketClaim bound and
the BucketAccess granted (status subresource) and writes the credentials
Secret the driver writes, in v1alpha1's ``BucketInfo`` JSON and in v1alpha2's
``COSI_S3_*`` keys. What is checked is the operator's side: detection of the
served version, objects the upstream schemas accept, the translation into the
binding, StorageReady, and retention when the profile is deleted (garbage
collection by the real kube-controller-manager).

The CRDs are removed afterwards, so every other test sees COSI absent.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kube
import operator_process
import pytest
from apps import app_deployment, credentials
from tests import profiles

NAME = "bkt"
CRD_NAMES = (
    "bucketclaims.objectstorage.k8s.io",
    "bucketaccesses.objectstorage.k8s.io",
    "bucketclasses.objectstorage.k8s.io",
    "bucketaccessclasses.objectstorage.k8s.io",
    "buckets.objectstorage.k8s.io",
)


@pytest.fixture
def cosi_cleanup(kubectl: kube.Kubectl) -> Iterator[None]:
    """Whatever a test installs, no COSI CRD outlives it."""
    yield
    kube.uninstall_crds(kubectl, CRD_NAMES)


def _crds(directory: Path) -> list[Path]:
    return sorted(directory.glob("objectstorage.k8s.io_*.yaml"))


def _profile(namespace: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return profiles.base(
        name=NAME,
        namespace=namespace,
        storage=profiles.buckets(*entries),
        **{"database.readLimits": False},
    )


def _sp(kubectl: kube.Kubectl, namespace: str) -> dict[str, Any]:
    return kube.get_json(kubectl, "scalingprofile", NAME, "-n", namespace)


def _storage(kubectl: kube.Kubectl, namespace: str) -> dict[str, Any]:
    for c in _sp(kubectl, namespace).get("status", {}).get("conditions", []):
        if c["type"] == "StorageReady":
            return dict(c)
    return {}


def _wait_storage(kubectl: kube.Kubectl, namespace: str, reason: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        found = _storage(kubectl, namespace)
        return found if found.get("reason") == reason else None

    result: dict[str, Any] = kube.wait_for(reached, timeout=90, what=f"StorageReady {reason}")
    return result


def _binding(kubectl: kube.Kubectl, namespace: str, name: str = f"{NAME}-binding") -> Any:
    secret = kube.get_json(kubectl, "secret", name, "-n", namespace)
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def _driver_secret(namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": data,
    }


def _set_status(
    kubectl: kube.Kubectl, namespace: str, resource: str, name: str, status: dict[str, Any]
) -> None:
    kubectl(
        "patch",
        resource,
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def test_cosi_v1alpha1_from_absent_to_bound_and_retained_after_the_profile(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    namespace: str,
    upstream_crds_dir: Path,
    cosi_cleanup: None,
) -> None:
    kube.uninstall_crds(kubectl, CRD_NAMES)  # from an aborted run
    kube.apply(kubectl, app_deployment(namespace), credentials(namespace))
    body = _profile(
        namespace,
        profiles.cosi_bucket("avatars", maxUploadBytes=524288),
        profiles.cosi_bucket("scratch", deletionPolicy="Delete"),
    )
    kube.apply(kubectl, body, namespace=namespace)

    # COSI absent: the profile says so, and nothing of COSI is asked for
    absent = _wait_storage(kubectl, namespace, "COSINotInstalled")
    assert absent["status"] == "False"
    assert kube.condition(_sp(kubectl, namespace), "Ready") == "False"

    # COSI v1alpha1 arrives: claims and accesses, accepted by its schema
    kube.install_crds(kubectl, _crds(upstream_crds_dir / "cosi-v1alpha1"))
    _wait_storage(kubectl, namespace, "ClaimPending")
    claims = "bucketclaims.objectstorage.k8s.io"
    accesses = "bucketaccesses.objectstorage.k8s.io"
    for bucket in ("avatars", "scratch"):
        claim = kube.get_json(kubectl, claims, f"{NAME}-{bucket}", "-n", namespace)
        assert claim["apiVersion"] == "objectstorage.k8s.io/v1alpha1"
        assert claim["spec"] == {"bucketClassName": "standard", "protocols": ["S3"]}
        access = kube.get_json(kubectl, accesses, f"{NAME}-{bucket}", "-n", namespace)
        assert access["spec"]["bucketClaimName"] == f"{NAME}-{bucket}"
        assert access["spec"]["bucketAccessClassName"] == "readwrite"
        assert access["spec"]["credentialsSecretName"] == f"{NAME}-bucket-{bucket}"
    retained = kube.get_json(kubectl, claims, f"{NAME}-avatars", "-n", namespace)
    assert "ownerReferences" not in retained["metadata"]
    assert retained["metadata"]["annotations"]["headroom.dev/retain"] == "true"
    owned = kube.get_json(kubectl, claims, f"{NAME}-scratch", "-n", namespace)
    assert owned["metadata"]["ownerReferences"][0]["kind"] == "ScalingProfile"

    # what the COSI controller and driver would do, for both buckets
    for bucket in ("avatars", "scratch"):
        _set_status(
            kubectl,
            namespace,
            claims,
            f"{NAME}-{bucket}",
            {"bucketReady": True, "bucketName": f"bc-{bucket}"},
        )
    _wait_storage(kubectl, namespace, "AccessPending")
    for bucket in ("avatars", "scratch"):
        _set_status(kubectl, namespace, accesses, f"{NAME}-{bucket}", {"accessGranted": True})
        info = {
            "metadata": {"name": f"bc-{bucket}"},
            "spec": {
                "bucketName": f"bc-{bucket}",
                "authenticationType": "KEY",
                "secretS3": {
                    "endpoint": "https://objects.example.net",
                    "region": "us-east-1",
                    "accessKeyID": f"AK{bucket.upper()}",
                    "accessSecretKey": f"secret-of-{bucket}",
                },
                "secretAzure": None,
                "protocols": ["S3"],
            },
        }
        kube.apply(
            kubectl,
            _driver_secret(namespace, f"{NAME}-bucket-{bucket}", {"BucketInfo": json.dumps(info)}),
        )
    ready = _wait_storage(kubectl, namespace, "Ready")
    assert ready["status"] == "True"
    data = _binding(kubectl, namespace)
    assert data["S3_BUCKET"] == data["S3_AVATARS_BUCKET"] == "bc-avatars"
    assert data["S3_ENDPOINT"] == "https://objects.example.net"
    assert data["AWS_ACCESS_KEY_ID"] == "AKAVATARS"
    assert data["AWS_SECRET_ACCESS_KEY"] == "secret-of-avatars"
    assert data["S3_MAX_UPLOAD_BYTES"] == "524288"
    assert data["S3_FORCE_PATH_STYLE"] == "true"
    assert data["S3_SCRATCH_BUCKET"] == "bc-scratch"
    assert data["S3_SCRATCH_ACCESS_KEY_ID"] == "AKSCRATCH"  # its own key
    typed = kube.get_json(kubectl, "secret", f"{NAME}-binding-avatars", "-n", namespace)
    assert typed["type"] == "servicebinding.io/s3"
    # no secret in the profile's status or Events
    status_text = json.dumps(_sp(kubectl, namespace)["status"])
    events = kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    for secret in ("secret-of-avatars", "secret-of-scratch"):
        assert secret not in status_text and secret not in events
    assert operator.alive()

    # the profile goes: the Delete bucket's claim and every access with it; the
    # Retain bucket's claim stays
    kubectl("delete", "scalingprofile", NAME, "-n", namespace, "--wait=true")

    def collected() -> bool:
        return not kube.exists(
            kubectl, claims, f"{NAME}-scratch", "-n", namespace
        ) and not kube.exists(kubectl, accesses, f"{NAME}-avatars", "-n", namespace)

    kube.wait_for(collected, timeout=90, what="the owned claim and the accesses collected")
    assert kube.exists(kubectl, claims, f"{NAME}-avatars", "-n", namespace)
    # a revoked access: the driver deletes the Secret it wrote
    kubectl("delete", "secret", f"{NAME}-bucket-avatars", f"{NAME}-bucket-scratch", "-n", namespace)

    # made anew, the profile adopts the retained claim instead of refusing it
    kube.apply(kubectl, body, namespace=namespace)

    def adopted() -> bool:
        sp = _sp(kubectl, namespace)
        state = {
            c["type"]: (c["status"], c["reason"], c["message"][:300])
            for c in sp.get("status", {}).get("conditions", [])
            if c["type"] in ("ChildrenApplied", "ChildrenOwned", "StorageReady")
        }
        assert state.get("ChildrenApplied", ("",))[0] == "True", state
        assert state.get("ChildrenOwned", ("True",))[0] == "True", state
        assert state.get("StorageReady", ("", ""))[1] == "AccessPending", state
        return True

    kube.wait_for(adopted, timeout=90, what="the re-created profile adopting the claim")
    assert kube.exists(kubectl, accesses, f"{NAME}-avatars", "-n", namespace)
    claim = kube.get_json(kubectl, claims, f"{NAME}-avatars", "-n", namespace)
    assert "ownerReferences" not in claim["metadata"]


def test_cosi_v1alpha2_keys_go_into_the_binding(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    namespace: str,
    upstream_crds_dir: Path,
    cosi_cleanup: None,
) -> None:
    kube.uninstall_crds(kubectl, CRD_NAMES)
    kube.install_crds(kubectl, _crds(upstream_crds_dir))  # v1alpha2 only
    kube.apply(kubectl, app_deployment(namespace), credentials(namespace))
    kube.apply(
        kubectl,
        _profile(namespace, profiles.cosi_bucket("uploads", deletionPolicy="Delete")),
        namespace=namespace,
    )
    _wait_storage(kubectl, namespace, "ClaimPending")
    claims = "bucketclaims.objectstorage.k8s.io"
    accesses = "bucketaccesses.objectstorage.k8s.io"
    claim = kube.get_json(kubectl, claims, f"{NAME}-uploads", "-n", namespace)
    assert claim["apiVersion"] == "objectstorage.k8s.io/v1alpha2"
    assert claim["spec"]["bucketClassName"] == "standard"
    access = kube.get_json(kubectl, accesses, f"{NAME}-uploads", "-n", namespace)
    assert access["spec"]["bucketAccessClassName"] == "readwrite"
    assert access["spec"]["bucketClaims"] == [
        {
            "bucketClaimName": f"{NAME}-uploads",
            "accessMode": "ReadWrite",
            "accessSecretName": f"{NAME}-bucket-uploads",
        }
    ]
    _set_status(
        kubectl,
        namespace,
        claims,
        f"{NAME}-uploads",
        {"readyToUse": True, "boundBucketName": "bc-uploads", "protocols": ["S3"]},
    )
    _set_status(kubectl, namespace, accesses, f"{NAME}-uploads", {"readyToUse": True})
    kube.apply(
        kubectl,
        _driver_secret(
            namespace,
            f"{NAME}-bucket-uploads",
            {
                "COSI_PROTOCOL": "S3",
                "COSI_S3_BUCKET_ID": "uploads-7f3a",
                "COSI_S3_ENDPOINT": "https://s3.objects.example:8443",
                "COSI_S3_REGION": "eu-central-1",
                "COSI_S3_ADDRESSING_STYLE": "virtual",
                "COSI_S3_ACCESS_KEY_ID": "AKV2",
                "COSI_S3_ACCESS_SECRET_KEY": "v2-secret",
            },
        ),
    )
    _wait_storage(kubectl, namespace, "Ready")
    data = _binding(kubectl, namespace)
    assert data["S3_BUCKET"] == "uploads-7f3a"
    assert data["S3_ENDPOINT"] == "https://s3.objects.example:8443"
    assert data["S3_REGION"] == data["AWS_REGION"] == "eu-central-1"
    assert data["S3_FORCE_PATH_STYLE"] == "false"
    assert (data["AWS_ACCESS_KEY_ID"], data["AWS_SECRET_ACCESS_KEY"]) == ("AKV2", "v2-secret")

    # a Delete bucket: its claim goes with the profile
    kubectl("delete", "scalingprofile", NAME, "-n", namespace, "--wait=true")
    kube.wait_for(
        lambda: not kube.exists(kubectl, claims, f"{NAME}-uploads", "-n", namespace),
        timeout=90,
        what="the Delete bucket's claim collected",
    )


def test_an_s3_bucket_reports_its_missing_secret_then_binds(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    kube.apply(kubectl, app_deployment(namespace), credentials(namespace))
    kube.apply(
        kubectl,
        _profile(
            namespace,
            profiles.s3_bucket(
                "files",
                credentialsSecret={
                    "name": "r2-credentials",
                    "accessKeyIdKey": "R2_ACCESS_KEY_ID",
                    "secretAccessKeyKey": "R2_SECRET_ACCESS_KEY",
                },
            ),
        ),
        namespace=namespace,
    )
    missing = _wait_storage(kubectl, namespace, "CredentialsSecretMissing")
    assert "spec.storage.buckets[0].s3.credentialsSecret.name" in missing["message"]
    kube.apply(
        kubectl,
        _driver_secret(namespace, "r2-credentials", {"R2_ACCESS_KEY_ID": "r2-id"}),
    )
    key_missing = _wait_storage(kubectl, namespace, "CredentialsKeyMissing")
    assert "R2_SECRET_ACCESS_KEY" in key_missing["message"]
    kube.apply(
        kubectl,
        _driver_secret(
            namespace,
            "r2-credentials",
            {"R2_ACCESS_KEY_ID": "r2-id", "R2_SECRET_ACCESS_KEY": "r2-secret"},
        ),
    )
    _wait_storage(kubectl, namespace, "Ready")
    data = _binding(kubectl, namespace)
    assert data["S3_BUCKET"] == "space-kontext-files"
    assert data["S3_REGION"] == "auto"
    assert data["S3_ENDPOINT"] == "https://acct.r2.cloudflarestorage.com"
    assert data["AWS_SECRET_ACCESS_KEY"] == "r2-secret"
    sp = _sp(kubectl, namespace)
    assert "r2-secret" not in json.dumps(sp["status"])
