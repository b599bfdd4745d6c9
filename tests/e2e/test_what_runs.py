"""What runs is what is counted, on a real API server: a change that does not
fit (two changes admitted at the same moment) is refused, the running pooler
keeps its size, its Deployment and its pods, its status says it runs its last
accepted plan, and the other profile's plan counts it at what it runs; a
server found over its budget (a pooler grown while the operator was away) is
brought back inside it by the shares, and an Event says what was done.

What runs is read from the objects the API server holds (the pooler
ConfigMap's max_db_connections x the Deployment's pods at peak), as the
operator reads it; the pooler pods run for real (tests/e2e/pooler_pods.py:
PgBouncer and its agent), so a pool grows only once the agents of the one
that shrank have confirmed it in their state ConfigMap.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

import kube
import operator_process
from apps import credentials, named_app
from tests import profiles

CAPACITY = 100 - 3
KEPT = 5 + 3  # direct connections, postgres_exporter
SESSIONS = {"pooler.poolMode": "session"}


def _profile(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return profiles.base(
        name=name,
        namespace=namespace,
        **{"app.deployment": name, "database.host": "pg-main", "database.readLimits": False},
        **spec,
    )


def _start(kubectl: kube.Kubectl, namespace: str, *bodies: dict[str, Any]) -> None:
    """Each profile applied once the one before is Ready: the first is the older
    (creationTimestamp), whatever the names."""
    apps = [named_app(namespace, b["spec"]["app"]["deployment"]) for b in bodies]
    kube.apply(kubectl, credentials(namespace), *apps)
    for body in bodies:
        kube.apply(kubectl, body, namespace=namespace)
        name = body["metadata"]["name"]
        _wait(kubectl, namespace, name, "Ready", "True")
        # creationTimestamp has whole seconds, and within one the names rank: the
        # next profile is created in a later second, so it is the newer
        stored = kube.get_json(kubectl, "scalingprofile", name, "-n", namespace)
        later = datetime.datetime.fromisoformat(
            stored["metadata"]["creationTimestamp"]
        ) + datetime.timedelta(seconds=1)
        kube.wait_for(
            lambda at=later: datetime.datetime.now(datetime.UTC) >= at,
            timeout=5,
            what=f"a second later than {name}'s creation",
        )


def _profile_status(kubectl: kube.Kubectl, namespace: str, name: str) -> dict[str, Any]:
    sp = kube.get_json(kubectl, "scalingprofile", name, "-n", namespace)
    status: dict[str, Any] = sp.get("status") or {}
    if status.get("observedGeneration") != sp["metadata"]["generation"]:
        return {}
    return status


def _wait(kubectl: kube.Kubectl, namespace: str, name: str, kind: str, value: str) -> None:
    def reached() -> bool:
        status = _profile_status(kubectl, namespace, name)
        return any(
            c["type"] == kind and c["status"] == value for c in status.get("conditions") or []
        )

    try:
        kube.wait_for(reached, timeout=180, what=f"{name} {kind}={value} at its generation")
    except AssertionError as err:
        sp = kube.get_json(kubectl, "scalingprofile", name, "-n", namespace)
        raise AssertionError(f"{err}; status: {sp.get('status')}") from None


def _condition(kubectl: kube.Kubectl, namespace: str, name: str, kind: str) -> dict[str, Any]:
    status = _profile_status(kubectl, namespace, name)
    found: dict[str, Any] = next(c for c in status["conditions"] if c["type"] == kind)
    return found


def _max_db(kubectl: kube.Kubectl, namespace: str, name: str) -> int:
    config = kube.get_json(kubectl, "configmap", f"{name}-pooler-config", "-n", namespace)
    found = re.search(r"^max_db_connections = (\d+)$", config["data"]["pgbouncer.ini"], re.M)
    assert found is not None
    return int(found[1])


def _set_max_db(kubectl: kube.Kubectl, namespace: str, name: str, old: int, new: int) -> None:
    """Somebody else's edit of a pooler's pgbouncer.ini."""
    config = kube.get_json(kubectl, "configmap", f"{name}-pooler-config", "-n", namespace)
    ini = config["data"]["pgbouncer.ini"].replace(
        f"max_db_connections = {old}", f"max_db_connections = {new}"
    )
    kubectl(
        "patch", "configmap", f"{name}-pooler-config", "-n", namespace, "--type=merge",
        "-p", json.dumps({"data": {"pgbouncer.ini": ini}}),
    )  # fmt: skip


def _pooler(kubectl: kube.Kubectl, namespace: str, name: str) -> dict[str, str]:
    """The pooler Deployment's and its pods' uids."""
    deployment = kube.get_json(kubectl, "deployment", f"{name}-pooler", "-n", namespace)
    pods = kube.get_json(
        kubectl, "pods", "-n", namespace, "-l",
        f"app.kubernetes.io/instance={name},app.kubernetes.io/component=pooler",
    )["items"]  # fmt: skip
    found = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods}
    return {"deployment": deployment["metadata"]["uid"], **found}


def test_a_refused_change_keeps_what_runs_and_is_counted_as_it_runs(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    namespace: str,
    pooler_agents: object,
) -> None:
    shop = _profile(namespace, "shop")
    # 20 sessions: 10 per pooler pod, 3 pods at peak
    admin = _profile(namespace, "admin", **SESSIONS, **{"app.replicas": {"min": 1, "max": 4}})
    _start(kubectl, namespace, shop, admin)
    before = _pooler(kubectl, namespace, "admin")
    size = _max_db(kubectl, namespace, "admin")

    # each change fits beside the other's stored spec, not beside the other's change:
    # shop 30 sessions (45 + 8), admin 40 (60 + 8), in 97
    shop_change = _profile(namespace, "shop", **SESSIONS, **{"app.replicas.max": 6})
    admin_change = _profile(
        namespace, "admin", **SESSIONS, **{"app.replicas": {"min": 1, "max": 8}}
    )
    operator.without_admission(
        kubectl, lambda: kube.apply(kubectl, shop_change, admin_change, namespace=namespace)
    )
    # the older one keeps its minimum; admin, the newer, is refused
    _wait(kubectl, namespace, "admin", "Stalled", "True")
    # (its pooler rolls for the new pool mode, which takes a while on kwok)
    _wait(kubectl, namespace, "shop", "ConnectionBudget", "True")
    budget = _condition(kubectl, namespace, "admin", "ConnectionBudget")
    assert budget["reason"] == "BudgetExceeded"
    stalled = _condition(kubectl, namespace, "admin", "Stalled")["message"]
    assert "spec.app.replicas.max" in stalled and "To fit:" in stalled, stalled
    assert "runs its last accepted plan (generation 1" in stalled, stalled

    # what runs stays as it was: the same Deployment, the same pods, the same size
    assert _max_db(kubectl, namespace, "admin") == size
    assert _pooler(kubectl, namespace, "admin") == before
    # and shop's plan counts it at what it runs
    status = _profile_status(kubectl, namespace, "shop")
    held = 3 * size + KEPT
    assert status["budget"]["sharedWith"] == [
        {"profile": f"{namespace}/admin", "serverConnections": held}
    ]
    assert 3 * _max_db(kubectl, namespace, "shop") + KEPT + held <= CAPACITY

    # counted as its objects say it runs, not as its status says: somebody raises its
    # max_db_connections by 2 (the refused profile's pass applies nothing, so it stays)
    _set_max_db(kubectl, namespace, "admin", size, size + 2)
    kube.wait_for(
        lambda: (
            _profile_status(kubectl, namespace, "shop")["budget"]["sharedWith"]
            == [{"profile": f"{namespace}/admin", "serverConnections": held + 3 * 2}]
        ),
        timeout=60,
        what="shop's plan counting admin's pooler as it runs",
    )
    status = _profile_status(kubectl, namespace, "admin")
    assert status["budget"]["held"][0]["connections"] == held  # its status: the last plan


def test_a_server_over_its_budget_is_brought_inside_it(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    namespace: str,
    pooler_agents: object,
) -> None:
    shop, admin = _profile(namespace, "shop"), _profile(namespace, "admin")
    _start(kubectl, namespace, shop, admin)
    size, other = _max_db(kubectl, namespace, "shop"), _max_db(kubectl, namespace, "admin")
    admin_pooler = _pooler(kubectl, namespace, "admin")

    # while the operator is away, shop's pooler grows past the server (as one sized
    # before the shares would run after an upgrade)
    operator.kill()
    _set_max_db(kubectl, namespace, "shop", size, 40)
    assert 3 * 40 + KEPT + 3 * other + KEPT > CAPACITY
    operator.kill_and_restart()

    def said() -> str:
        events = kube.get_json(
            kubectl, "events", "-n", namespace,
            "--field-selector", "involvedObject.name=shop,reason=ServerOverBudget",
        )["items"]  # fmt: skip
        return str(events[0]["message"]) if events else ""

    message = kube.wait_for(said, timeout=120, what="the ServerOverBudget Event on shop")
    assert "was over its budget" in message and f"from 120 to {3 * size}" in message, message
    kube.wait_for(
        lambda: _max_db(kubectl, namespace, "shop") == size,
        timeout=60,
        what="shop's pooler back at its share",
    )
    assert 3 * size + KEPT + 3 * other + KEPT <= CAPACITY

    # held at what its pods ran (ConnectionBudget OverBudget) until their agents confirm
    # the smaller size; then inside, and the condition says so
    def inside() -> bool:
        sp = kube.get_json(kubectl, "scalingprofile", "shop", "-n", namespace)
        held = [h["connections"] for h in sp["status"]["budget"]["held"]]
        return kube.condition(sp, "ConnectionBudget") == "True" and held == [3 * size + KEPT]

    kube.wait_for(inside, timeout=60, what="shop's ConnectionBudget back to WithinBudget")
    # the other profile's pooler was not touched
    assert _max_db(kubectl, namespace, "admin") == other
    assert _pooler(kubectl, namespace, "admin") == admin_pooler
