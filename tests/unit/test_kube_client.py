"""The kube client's error handling, against a stand-in transport (no cluster)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from headroom.kube import client, errors

KEDA_DISCOVERY = {
    "kind": "APIResourceList",
    "groupVersion": "keda.sh/v1alpha1",
    "resources": [{"name": "scaledobjects", "kind": "ScaledObject", "namespaced": True}],
}


@dataclass
class _Response:
    status: int
    data: bytes

    def read(self) -> None:
        return None


class _Transport:
    """Answers requests with canned responses, in order (the last one repeats)."""

    def __init__(self, responses: Iterable[tuple[int, bytes]]) -> None:
        self.responses = [_Response(status, data) for status, data in responses]
        self.paths: list[str] = []

    def param_serialize(self, *, resource_path: str, **_: Any) -> tuple[str, str, Any, Any]:
        self.paths.append(resource_path)
        return ("GET", resource_path, {}, None)

    def call_api(self, *_: Any, **__: Any) -> _Response:
        return self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]


def test_unserved_group_is_not_served() -> None:
    # GET /apis/keda.sh/v1alpha1 without KEDA: text/plain, not a Status object.
    kube = client.Kube(_Transport([(404, b"404 page not found\n")]))
    assert kube.served("keda.sh/v1alpha1", "ScaledObject") is False
    with pytest.raises(errors.NotServedError):
        kube.resource("keda.sh/v1alpha1", "ScaledObject")


def test_plain_text_error_becomes_api_error() -> None:
    kube = client.Kube(_Transport([(503, b"service unavailable")]))
    with pytest.raises(errors.ApiError) as caught:
        kube.request("GET", "/apis/keda.sh/v1alpha1")
    assert caught.value.status == 503
    assert caught.value.retriable
    assert "service unavailable" in caught.value.message


def test_status_object_error_keeps_reason() -> None:
    status = {"kind": "Status", "reason": "NotFound", "message": 'secrets "x" not found'}
    kube = client.Kube(_Transport([(404, json.dumps(status).encode())]))
    with pytest.raises(errors.ApiError) as caught:
        kube.request("GET", "/api/v1/namespaces/d/secrets/x")
    assert (caught.value.status, caught.value.reason) == (404, "NotFound")


def test_missing_object_is_none_but_a_removed_crd_is_not_served() -> None:
    not_found = {"kind": "Status", "reason": "NotFound", "message": "not found"}
    transport = _Transport(
        [
            (200, json.dumps(KEDA_DISCOVERY).encode()),
            (404, json.dumps(not_found).encode()),  # the object does not exist
            (404, b"404 page not found\n"),  # the CRD went away since discovery
            (404, b"404 page not found\n"),  # discovery, asked again
        ]
    )
    kube = client.Kube(transport)
    assert kube.get("keda.sh/v1alpha1", "ScaledObject", namespace="d", name="w") is None
    with pytest.raises(errors.NotServedError):
        kube.list("keda.sh/v1alpha1", "ScaledObject", namespace="d")
    # the stale discovery was dropped: the next question goes to the API server
    assert kube.served("keda.sh/v1alpha1", "ScaledObject") is False
    assert transport.paths[-1] == "/apis/keda.sh/v1alpha1"


def test_namespace_terminating_is_recognised() -> None:
    err = errors.ApiError(
        status=403,
        reason="Forbidden",
        message='configmaps "x" is forbidden: unable to create new content in namespace '
        "e2e because it is being terminated",
    )
    assert err.namespace_terminating and not err.retriable
    assert not errors.ApiError(status=403, reason="Forbidden", message="no").namespace_terminating


def test_crd_being_deleted_is_being_removed() -> None:
    apiextensions = {
        "kind": "APIResourceList",
        "resources": [
            {
                "name": "customresourcedefinitions",
                "kind": "CustomResourceDefinition",
                "namespaced": False,
            }
        ],
    }
    crd = {
        "metadata": {"name": "scaledobjects.keda.sh", "deletionTimestamp": "2026-01-01T00:00:00Z"}
    }
    transport = _Transport(
        [
            (200, json.dumps(KEDA_DISCOVERY).encode()),
            (200, json.dumps(apiextensions).encode()),
            (200, json.dumps(crd).encode()),
        ]
    )
    kube = client.Kube(transport)
    assert kube.served("keda.sh/v1alpha1", "ScaledObject")
    assert kube.being_removed("keda.sh/v1alpha1", "ScaledObject")
    assert transport.paths[-1] == (
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/scaledobjects.keda.sh"
    )


def test_create_refused_by_a_terminating_crd_is_not_served() -> None:
    refused = {
        "kind": "Status",
        "reason": "Forbidden",
        "message": 'triggerauthentications.keda.sh "w" is forbidden: create not allowed '
        "while custom resource definition is terminating",
    }
    transport = _Transport(
        [(200, json.dumps(KEDA_DISCOVERY).encode()), (403, json.dumps(refused).encode())]
    )
    kube = client.Kube(transport)
    obj = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "w", "namespace": "d"},
    }
    with pytest.raises(errors.NotServedError, match="being removed"):
        kube.apply(obj)
