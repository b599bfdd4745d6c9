"""A namespaced install (the chart's ``watchNamespaces``): the operator, as its
ServiceAccount with exactly the RBAC the chart renders, serves the profiles of
its namespaces and has no access to Secrets anywhere else.

On a control plane of its own (another operator watching every namespace
would serve the other namespace's profile too).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kube
import operator_process
import own_cluster
import pytest
import yaml
from apps import app_deployment, credentials
from tests import profiles

REPO = Path(__file__).resolve().parents[2]
SYSTEM = "headroom-system"
SERVED = ("team-a", "team-b")
OTHER = "other"
OPERATOR = f"system:serviceaccount:{SYSTEM}:headroom"
# what the operator's install needs; not the Deployment, Service, PDB (the
# operator runs here as a process) nor the monitors (no prometheus-operator)
INSTALLED = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role"}
INSTALLED |= {"RoleBinding", "CustomResourceDefinition"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[own_cluster.Cluster]:
    with own_cluster.running(tmp_path_factory.mktemp("namespaced-cluster")) as found:
        yield found


def _rendered(helm: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [
            helm,
            "template",
            "headroom",
            str(REPO / "charts" / "headroom"),
            "-n",
            SYSTEM,
            "--set",
            "watchNamespaces={" + ",".join(SERVED) + "}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def _status(kubectl: kube.Kubectl, namespace: str) -> dict[str, Any]:
    found: dict[str, Any] = kube.get_json(kubectl, "scalingprofile", "shop", "-n", namespace)
    return found.get("status") or {}


def test_a_namespaced_install_serves_its_namespaces_and_reads_no_other_secret(
    cluster: own_cluster.Cluster, helm: str, tmp_path: Path
) -> None:
    kubectl = cluster.kubectl
    for namespace in (SYSTEM, *SERVED, OTHER):
        kubectl("create", "namespace", namespace)
    objects = [d for d in _rendered(helm) if d["kind"] in INSTALLED]
    kube.apply(kubectl, *objects)

    # RBAC as the API server's authorizer judges it
    for namespace in SERVED:
        assert kube.can_i(kubectl, OPERATOR, "get", "secrets", namespace=namespace)
        assert kube.can_i(kubectl, OPERATOR, "create", "deployments.apps", namespace=namespace)
    for verb in ("get", "list", "watch", "create", "delete"):
        assert not kube.can_i(kubectl, OPERATOR, verb, "secrets", namespace=OTHER), verb
    assert not kube.can_i(kubectl, OPERATOR, "list", "secrets", namespace="kube-system")
    assert not kube.can_i(kubectl, OPERATOR, "list", "pods", namespace=OTHER)
    assert not kube.can_i(kubectl, OPERATOR, "get", "secrets/db-credentials", namespace=OTHER)
    # its own namespace: the Lease and the two Secrets it shares, by name
    assert kube.can_i(kubectl, OPERATOR, "get", "secrets/headroom-webhook-tls", namespace=SYSTEM)
    assert not kube.can_i(kubectl, OPERATOR, "get", "secrets/db-credentials", namespace=SYSTEM)
    assert not kube.can_i(kubectl, OPERATOR, "list", "secrets", namespace=SYSTEM)

    args = tuple(f"--namespace={namespace}" for namespace in SERVED)
    with operator_process.running(
        kubectl, kubeconfig=cluster.kubeconfig, workdir=tmp_path / "op", install=False, args=args
    ) as op:
        for namespace in (*SERVED, OTHER):
            kube.apply(kubectl, app_deployment(namespace), credentials(namespace))
            kube.apply(kubectl, profiles.base(name="shop", namespace=namespace))
        for namespace in SERVED:
            kubectl(
                "wait",
                "--for=condition=Ready",
                "scalingprofile/shop",
                "-n",
                namespace,
                "--timeout=90s",
            )
            assert kube.exists(kubectl, "secret", "shop-binding", "-n", namespace)
        # the other namespace's profile is admitted (the webhook is cluster-wide)
        # but never served: no status, no child, nothing read there
        assert not _status(kubectl, OTHER).get("conditions")
        assert not kube.exists(kubectl, "secret", "shop-binding", "-n", OTHER)
        assert op.alive(), op.log_tail()
        forbidden = [line for line in op.log_tail(400).splitlines() if "forbidden" in line]
        assert not forbidden, forbidden
