"""The install manifests are valid for a real API server: the operator's pod
passes the restricted Pod Security Standard and its RBAC grants what the
operator does and nothing it does not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kube
import pytest

REPO = Path(__file__).resolve().parents[2]
SA = "system:serviceaccount:headroom-system:headroom"


@pytest.fixture(scope="module")
def installed(kubectl: kube.Kubectl) -> Iterator[None]:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl("apply", "--server-side", "--force-conflicts", "-k", str(REPO / "manifests"))
    yield
    # Only the operator's own objects go: the namespace, its ServiceAccount and
    # the RBAC stay. The session's operator process (operator_process.py)
    # authenticates with a token of that ServiceAccount, and a deleted
    # ServiceAccount invalidates it: every later request would be 401
    # Unauthorized for the rest of the session when an earlier test had
    # started that process already.
    kubectl(
        "delete",
        "-f",
        str(REPO / "manifests" / "operator.yaml"),
        "--ignore-not-found",
        "--wait=true",
        "--timeout=120s",
        check=False,
    )


def test_operator_pod_runs_under_restricted_pod_security(
    installed: None, kubectl: kube.Kubectl
) -> None:
    ns = kube.get_json(kubectl, "namespace", "headroom-system")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    kubectl("rollout", "status", "deployment/headroom", "-n", "headroom-system", "--timeout=90s")
    pods = kube.get_json(
        kubectl, "pods", "-n", "headroom-system", "-l", "app.kubernetes.io/name=headroom"
    )["items"]
    # two replicas (one leader), spread over nodes where there are several
    assert len(pods) == 2 and all(kube.condition(p, "Ready") == "True" for p in pods)


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("patch", "scalingprofiles.headroom.dev/status", True),
        ("create", "deployments.apps", True),
        ("delete", "statefulsets.apps", True),
        ("get", "secrets", True),
        ("create", "scaledobjects.keda.sh", True),
        ("create", "horizontalpodautoscalers.autoscaling", True),
        ("create", "events", True),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io", True),
        # the write pooler's agent: its ServiceAccount, Role and RoleBinding, which grant
        # only ConfigMap verbs the operator holds itself (no escalate, no bind)
        ("create", "serviceaccounts", True),
        ("create", "roles.rbac.authorization.k8s.io", True),
        ("create", "rolebindings.rbac.authorization.k8s.io", True),
        # what it never needs
        ("escalate", "roles.rbac.authorization.k8s.io", False),
        ("bind", "roles.rbac.authorization.k8s.io", False),
        ("create", "clusterroles.rbac.authorization.k8s.io", False),
        ("delete", "scalingprofiles.headroom.dev", False),
        ("delete", "customresourcedefinitions.apiextensions.k8s.io", False),
        ("delete", "persistentvolumeclaims", False),
        ("create", "pods", False),
        ("delete", "namespaces", False),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", False),
        ("update", "nodes", False),
    ],
)
def test_rbac_is_least_privilege(
    installed: None, kubectl: kube.Kubectl, verb: str, resource: str, allowed: bool
) -> None:
    assert kube.can_i(kubectl, SA, verb, resource, namespace="default") is allowed


@pytest.mark.parametrize(
    ("namespace", "verb", "resource", "allowed"),
    [
        ("headroom-system", "update", "leases.coordination.k8s.io", True),
        ("default", "update", "leases.coordination.k8s.io", False),
        ("headroom-system", "update", "secrets/headroom-webhook-tls", True),
        ("headroom-system", "update", "secrets/other", False),
    ],
)
def test_lease_and_certificate_rights_stay_in_the_operator_namespace(
    installed: None, kubectl: kube.Kubectl, namespace: str, verb: str, resource: str, allowed: bool
) -> None:
    assert kube.can_i(kubectl, SA, verb, resource, namespace=namespace) is allowed
