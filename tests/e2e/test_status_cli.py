"""`headroom status` against the local cluster: three apps on two Postgres
servers, as a platform team has them. The view's sums must be the sums of what
the operator wrote in each profile's status, and the one the budget refuses
must be named with its reason, not counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import kube
import operator_process
from apps import credentials, named_app
from tests import profiles

SHARED, ALONE = "shared-db", "reports-db"


def _profile(namespace: str, name: str, host: str, **overrides: Any) -> dict[str, Any]:
    return profiles.base(
        name=name,
        namespace=namespace,
        **{"app.deployment": f"{name}-web", "database.host": host, **overrides},
    )


def _status(kubeconfig: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headroom.cli", "status", *args],
        env={**os.environ, "KUBECONFIG": kubeconfig},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _ready(kubectl: kube.Kubectl, namespace: str, *names: str) -> None:
    for name in names:
        kubectl(
            "wait", "--for=condition=Ready", f"scalingprofile/{name}", "-n", namespace,
            "--timeout=120s",
        )  # fmt: skip


def test_status_groups_profiles_by_server_with_the_right_sums(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    kubeconfig: str,
    namespace: str,
) -> None:
    kube.apply(
        kubectl,
        credentials(namespace),
        *(named_app(namespace, f"{n}-web") for n in ("orders", "billing", "reports")),
    )
    # orders leaves room on the shared server (3 pods at peak x 20), billing fits beside it
    pinned = {"pooler.parameters": {"max_db_connections": "20", "default_pool_size": "18"}}
    kube.apply(kubectl, _profile(namespace, "orders", SHARED, **pinned), namespace=namespace)
    _ready(kubectl, namespace, "orders")
    small = {"app.replicas": {"min": 1, "max": 4}}
    kube.apply(kubectl, _profile(namespace, "billing", SHARED, **small), namespace=namespace)
    kube.apply(kubectl, _profile(namespace, "reports", ALONE), namespace=namespace)
    _ready(kubectl, namespace, "billing", "reports")

    done = _status(kubeconfig, "-n", namespace, "-o", "json")
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    servers = {s["server"]: s for s in view["servers"]}
    shared, alone = (
        servers[f"{SHARED}.{namespace}.svc:5432"],
        servers[f"{ALONE}.{namespace}.svc:5432"],
    )
    assert [p["name"] for p in shared["profiles"]] == ["orders", "billing"]
    assert [p["name"] for p in alone["profiles"]] == ["reports"]

    listed = kube.get_json(kubectl, "scalingprofiles", "-n", namespace)["items"]
    budgets = {sp["metadata"]["name"]: sp["status"]["budget"] for sp in listed}
    # the shared total is what both profiles' statuses plan on the server
    both = budgets["orders"]["serverConnections"] + budgets["billing"]["serverConnections"]
    assert budgets["orders"]["serverConnections"] == 60
    assert shared["plannedConnections"] == both
    assert shared["available"] == 100 - 3 - 5 == budgets["orders"]["available"]
    assert shared["freeConnections"] == 92 - both >= 0
    assert budgets["billing"]["available"] == 92 - 60
    for p in shared["profiles"] + alone["profiles"]:
        assert p["plannedConnections"] == budgets[p["name"]]["serverConnections"]
        assert p["ceilingConnections"] == budgets[p["name"]]["clientDemand"]
        assert (p["ready"], p["counted"], p["refusal"]) == ("True", True, "")
    assert budgets["billing"]["clientDemand"] == 4 * 5  # 4 pods x a pool of 5
    assert view["ready"] == view["profiles"] == 3 and view["refused"] == []

    # orders grows into the whole server: it is the older one, so billing is the one refused
    kube.apply(kubectl, _profile(namespace, "orders", SHARED), namespace=namespace)

    def billing_refused() -> dict[str, Any] | None:
        found = json.loads(_status(kubeconfig, "-n", namespace, "-o", "json").stdout)
        return found if found["refused"] else None

    view = kube.wait_for(billing_refused, timeout=90, what="billing refused beside orders")
    (refused,) = view["refused"]
    assert (refused["name"], refused["server"]) == ("billing", f"{SHARED}.{namespace}.svc:5432")
    assert refused["refusal"].startswith("BudgetExceeded: ")
    shared = next(s for s in view["servers"] if s["server"] == refused["server"])
    orders = kube.get_json(kubectl, "scalingprofile", "orders", "-n", namespace)["status"]["budget"]
    assert shared["plannedConnections"] == orders["serverConnections"] == 90  # billing not counted
    billing = next(p for p in shared["profiles"] if p["name"] == "billing")
    assert (billing["ready"], billing["counted"], billing["stalled"]) == ("False", False, True)
    assert view["stalled"] == 1

    _ready(kubectl, namespace, "orders")  # its pooler rolled to the new size
    table = _status(kubeconfig, "-n", namespace)
    assert table.returncode == 0, table.stderr
    assert (
        f"SERVER {SHARED}.{namespace}.svc:5432  max_connections 100  available 92  planned 90"
        in (table.stdout)
    )
    assert "3 profiles on 2 servers: 2 ready, 1 stalled" in table.stdout
