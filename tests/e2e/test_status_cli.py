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
    pooler_agents: object,
) -> None:
    kube.apply(
        kubectl,
        credentials(namespace),
        *(named_app(namespace, f"{n}-web") for n in ("orders", "billing", "reports")),
    )
    # orders and billing share a server by weight; reports is alone on its own
    kube.apply(kubectl, _profile(namespace, "orders", SHARED), namespace=namespace)
    _ready(kubectl, namespace, "orders")
    small = {"app.replicas": {"min": 1, "max": 4}}
    kube.apply(kubectl, _profile(namespace, "billing", SHARED, **small), namespace=namespace)
    kube.apply(kubectl, _profile(namespace, "reports", ALONE), namespace=namespace)
    _ready(kubectl, namespace, "billing", "reports")

    def shared_view() -> dict[str, Any] | None:
        found = json.loads(_status(kubeconfig, "-n", namespace, "-o", "json").stdout)
        server = next(s for s in found["servers"] if s["server"].startswith(SHARED))
        return found if server["plannedConnections"] == 42 + 39 else None

    # 97 - 2 x (5 kept for direct use + 3 postgres_exporter) = 81: 42 and 39 (the odd 3
    # to the older one)
    kube.wait_for(shared_view, timeout=60, what="orders and billing at their shares")
    _ready(kubectl, namespace, "orders", "billing", "reports")  # resized poolers rolled out
    view = json.loads(_status(kubeconfig, "-n", namespace, "-o", "json").stdout)
    servers = {s["server"]: s for s in view["servers"]}
    shared, alone = (
        servers[f"{SHARED}.{namespace}.svc:5432"],
        servers[f"{ALONE}.{namespace}.svc:5432"],
    )
    assert [p["name"] for p in shared["profiles"]] == ["orders", "billing"]
    assert [p["name"] for p in alone["profiles"]] == ["reports"]

    listed = kube.get_json(kubectl, "scalingprofiles", "-n", namespace)["items"]
    budgets = {sp["metadata"]["name"]: sp["status"]["budget"] for sp in listed}
    # The odd 3 go to the older by creationTimestamp, then by name: whole seconds, so
    # billing, created right after orders became Ready, can share its second and win
    # by name. Which one is older is read from the stored objects, as the rule says.
    ranked = sorted(
        (sp["metadata"]["creationTimestamp"], sp["metadata"]["name"])
        for sp in listed
        if sp["metadata"]["name"] in ("orders", "billing")
    )
    shares = {ranked[0][1]: 42, ranked[1][1]: 39}
    orders_share, billing_share = shares["orders"], shares["billing"]
    # the shared total is what both profiles' statuses plan on the server
    assert budgets["orders"]["serverConnections"] == orders_share
    assert budgets["billing"]["serverConnections"] == billing_share
    assert shared["plannedConnections"] == 81
    # a profile's share and what the other holds (its pool, its 5 direct and its
    # postgres_exporter's 3)
    assert (
        shared["available"] == 100 - 3 - 5 - 3 == budgets["orders"]["available"] + billing_share + 8
    )
    assert shared["freeConnections"] == 89 - 81
    for p in shared["profiles"] + alone["profiles"]:
        assert p["plannedConnections"] == budgets[p["name"]]["serverConnections"]
        assert p["ceilingConnections"] == budgets[p["name"]]["clientDemand"]
        assert (p["ready"], p["counted"], p["refusal"]) == ("True", True, "")
    assert budgets["billing"]["clientDemand"] == 4 * 5  # 4 pods x a pool of 5
    assert view["ready"] == view["profiles"] == 3 and view["refused"] == []

    # billing changes to session mode: its 55 sessions (28 per pooler pod, 3 at peak)
    # do not fit beside orders' minimum. Admission would refuse it; with the webhook
    # off (two changes admitted at once) the pass refuses it, and its running pooler
    # keeps its size and is counted at it
    sessions = {
        "app.replicas": {"min": 1, "max": 5},
        "app.poolSizePerPod": 11,
        "pooler.poolMode": "session",
    }
    refused_change = _profile(namespace, "billing", SHARED, **sessions)
    running = kube.get_json(kubectl, "deployment", "billing-pooler", "-n", namespace)
    denied = kubectl(
        "apply", "--server-side", "--field-manager=e2e", "-n", namespace, "-f", "-",
        input=json.dumps(refused_change), check=False,
    )  # fmt: skip
    assert denied.returncode != 0 and "do not fit" in denied.stderr, denied.stderr
    operator.without_admission(
        kubectl, lambda: kube.apply(kubectl, refused_change, namespace=namespace)
    )

    def billing_refused() -> dict[str, Any] | None:
        found = json.loads(_status(kubeconfig, "-n", namespace, "-o", "json").stdout)
        return found if found["refused"] else None

    view = kube.wait_for(billing_refused, timeout=90, what="billing refused beside orders")
    (refused,) = view["refused"]
    assert (refused["name"], refused["server"]) == ("billing", f"{SHARED}.{namespace}.svc:5432")
    assert refused["refusal"].startswith("BudgetExceeded: ")
    assert "do not fit" in refused["refusal"]
    shared = next(s for s in view["servers"] if s["server"] == refused["server"])
    orders = kube.get_json(kubectl, "scalingprofile", "orders", "-n", namespace)["status"]["budget"]
    assert orders["serverConnections"] == orders_share  # orders keeps its share
    billing = next(p for p in shared["profiles"] if p["name"] == "billing")
    # billing's running pooler is counted at what it holds: its share, its 5 direct
    # and its postgres_exporter's 3
    assert (billing["ready"], billing["counted"], billing["stalled"]) == ("False", True, True)
    assert billing["plannedConnections"] == billing_share + 8
    assert shared["plannedConnections"] == orders_share + billing_share + 8 == 89
    assert view["stalled"] == 1
    config = kube.get_json(kubectl, "configmap", "billing-pooler-config", "-n", namespace)
    assert "pool_mode = transaction\n" in config["data"]["pgbouncer.ini"]  # not applied
    # the running pooler is the same object with the same pods' template: not resized
    kept = kube.get_json(kubectl, "deployment", "billing-pooler", "-n", namespace)
    assert kept["metadata"]["uid"] == running["metadata"]["uid"]
    assert kept["spec"]["template"] == running["spec"]["template"]
    assert kept["metadata"]["generation"] == running["metadata"]["generation"]

    _ready(kubectl, namespace, "orders")
    table = _status(kubeconfig, "-n", namespace)
    assert table.returncode == 0, table.stderr
    assert (
        f"SERVER {SHARED}.{namespace}.svc:5432  max_connections 100  available 89  planned 89"
        in (table.stdout)
    )
    assert "3 profiles on 2 servers: 2 ready, 1 stalled" in table.stdout
