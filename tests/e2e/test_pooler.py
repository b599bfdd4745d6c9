"""The walking skeleton end to end: a ScalingProfile on a real API server gets a
correctly sized PgBouncer, a binding Secret and conditions; drift is repaired;
deleting the profile garbage-collects everything but the app's Deployment;
impossible profiles are rejected at admission with the field and numbers.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import kube
import operator_process
import pytest
import yaml
from apps import app_deployment, credentials
from tests import certs, profiles

from headroom.api import v1alpha1
from headroom.planning import planner, queueing

NAME = "shop"
# Drift is repaired by the watch on our children, in a second or two. The
# operator's resync (every 30 s in these tests) would also repair it, but
# rarely inside this deadline, so a broken watch makes the test fail.
DRIFT_DEADLINE = 10


def _profile(namespace: str, **overrides: Any) -> dict[str, Any]:
    body = profiles.base(name=NAME, namespace=namespace, **overrides)
    return body


def _sp(kubectl: kube.Kubectl, namespace: str) -> dict[str, Any]:
    return kube.get_json(kubectl, "scalingprofile", NAME, "-n", namespace)


def _pooler_pods(kubectl: kube.Kubectl, namespace: str) -> list[dict[str, Any]]:
    pods = kube.get_json(
        kubectl,
        "pods",
        "-n",
        namespace,
        "-l",
        f"app.kubernetes.io/instance={NAME},app.kubernetes.io/component=pooler",
    )["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def _ready(pod: dict[str, Any]) -> bool:
    return kube.condition(pod, "Ready") == "True"


def test_profile_lifecycle(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    kube.apply(kubectl, app_deployment(namespace), credentials(namespace))
    app_before = kube.get_json(kubectl, "deployment", "web", "-n", namespace)
    kube.apply(kubectl, _profile(namespace), namespace=namespace)

    # Ready, the way a user checks it.
    kubectl(
        "wait", "--for=condition=Ready", f"scalingprofile/{NAME}", "-n", namespace, "--timeout=120s"
    )
    sp = _sp(kubectl, namespace)
    assert sp["status"]["observedGeneration"] == sp["metadata"]["generation"]
    assert kube.condition(sp, "PoolerReady") == "True"
    assert kube.condition(sp, "ConnectionBudget") == "True"
    budget = sp["status"]["budget"]
    # 3 pods at peak x 29 of 100 - 3 - 5 direct - 3 postgres_exporter
    assert budget["summary"] == "87/89"
    assert budget["clientDemand"] == 50  # 10 pods x 5
    assert sp["status"]["pooler"]["endpoint"] == f"{NAME}-pooler-rw.{namespace}.svc:5432"

    # Children: pods Ready on kwok nodes, passing restricted Pod Security.
    pods = _pooler_pods(kubectl, namespace)
    assert len(pods) == 2 and all(_ready(p) for p in pods)
    assert all(p["spec"]["nodeName"].startswith("kwok-node") for p in pods)
    ini = kube.get_json(kubectl, "configmap", f"{NAME}-pooler-config", "-n", namespace)
    assert "max_db_connections = 29" in ini["data"]["pgbouncer.ini"]
    assert kube.exists(kubectl, "pdb", f"{NAME}-pooler", "-n", namespace)

    binding = kube.get_json(kubectl, "secret", sp["status"]["binding"]["name"], "-n", namespace)
    assert binding["type"] == "servicebinding.io/postgresql"
    url = base64.b64decode(binding["data"]["DATABASE_URL_POOLED"]).decode()
    assert (
        url == f"postgresql://shop_app:p%40ss%3Aw%2Frd@{NAME}-pooler-rw.{namespace}.svc:5432/shop"
    )
    # migrations go straight to the primary, on the connections the budget keeps
    direct = base64.b64decode(binding["data"]["DATABASE_URL"]).decode()
    assert direct == "postgresql://shop_app:p%40ss%3Aw%2Frd@db:5432/shop?sslmode=prefer"
    assert base64.b64decode(binding["data"]["DATABASE_POOL_SIZE"]) == b"5"
    # In-use protection's finalizer only: a deletion waits for the pods that
    # read the binding (tests/e2e/test_deletion.py), none here.
    assert sp["metadata"].get("finalizers") == ["headroom.dev/in-use-protection"]
    # Decisions are recorded as Events on the profile.
    recorded = kube.get_json(
        kubectl,
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.kind=ScalingProfile,involvedObject.name={NAME}",
    )["items"]
    assert any(e["reason"] == "Applied" and e["type"] == "Normal" for e in recorded), recorded
    # Nothing secret in status or events.
    events = kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert "p@ss:w/rd" not in json.dumps(sp) and "p@ss:w/rd" not in events

    # The pooler's agent: its identity, its rights (by name: the config it reads,
    # the state it writes, nothing else), and the state ConfigMap it writes into.
    agent = f"system:serviceaccount:{namespace}:{NAME}-pooler"
    allowed = {
        (verb, resource): kube.can_i(kubectl, agent, verb, resource, namespace=namespace)
        for verb, resource in (
            ("watch", f"configmaps/{NAME}-pooler-config"),
            ("patch", f"configmaps/{NAME}-pooler-state"),
            ("patch", f"configmaps/{NAME}-pooler-config"),
            ("get", f"secrets/{NAME}-pooler-auth"),
            ("list", "configmaps"),
        )
    }
    assert [k for k, ok in allowed.items() if ok] == [
        ("watch", f"configmaps/{NAME}-pooler-config"),
        ("patch", f"configmaps/{NAME}-pooler-state"),
    ], allowed
    state = kube.get_json(kubectl, "configmap", f"{NAME}-pooler-state", "-n", namespace)
    assert not state.get("data"), state  # the agents' keys; the operator writes none
    # an agent's report, as the agent writes it (a merge patch of its key, as its
    # ServiceAccount): kept by the operator's passes that follow
    report = {"pooler-pod-1": '{"config":"x","maxDbConnections":29,"serverConnections":0,"at":"t"}'}
    kubectl(
        "patch",
        "configmap",
        f"{NAME}-pooler-state",
        "-n",
        namespace,
        f"--as={agent}",
        "--type=merge",
        "--field-manager=headroom-agent",
        "-p",
        json.dumps({"data": report}),
    )

    # A pool parameter changes by RELOAD: the ConfigMap changes, the pods stay.
    old_pods = {p["metadata"]["uid"] for p in pods}
    kube.apply(
        kubectl,
        _profile(namespace, **{"pooler.parameters": {"server_idle_timeout": "120"}}),
        namespace=namespace,
    )
    kube.wait_for(
        lambda: (
            "server_idle_timeout = 120"
            in kube.get_json(kubectl, "configmap", f"{NAME}-pooler-config", "-n", namespace)[
                "data"
            ]["pgbouncer.ini"]
        ),
        timeout=60,
        what="the new parameter in pgbouncer.ini",
    )
    kubectl(
        "wait", "--for=condition=Ready", f"scalingprofile/{NAME}", "-n", namespace, "--timeout=60s"
    )
    assert {p["metadata"]["uid"] for p in _pooler_pods(kubectl, namespace)} == old_pods
    state = kube.get_json(kubectl, "configmap", f"{NAME}-pooler-state", "-n", namespace)
    assert state.get("data") == report, state

    # A setting PgBouncer takes only at start rolls the pods, and an Event says why.
    kube.apply(
        kubectl,
        _profile(
            namespace, **{"pooler.parameters": {"server_idle_timeout": "120", "pkt_buf": "8192"}}
        ),
        namespace=namespace,
    )

    def rolled() -> bool:
        current = _pooler_pods(kubectl, namespace)
        uids = {p["metadata"]["uid"] for p in current}
        return len(current) == 2 and not uids & old_pods and all(_ready(p) for p in current)

    kube.wait_for(rolled, timeout=120, what="pooler pods to roll after a restart setting")
    said = [
        e["message"]
        for e in kube.get_json(
            kubectl,
            "events",
            "-n",
            namespace,
            "--field-selector",
            f"involvedObject.kind=ScalingProfile,involvedObject.name={NAME}",
        )["items"]
        if e["reason"] == "PoolerRestart"
    ]
    assert said and "pkt_buf" in said[0], said
    kubectl(
        "wait", "--for=condition=Ready", f"scalingprofile/{NAME}", "-n", namespace, "--timeout=60s"
    )

    # Drift: a deleted child comes back, an edited one is put back.
    service_uid = kube.get_json(kubectl, "service", f"{NAME}-pooler-rw", "-n", namespace)[
        "metadata"
    ]["uid"]
    kubectl("delete", "service", f"{NAME}-pooler-rw", "-n", namespace)
    kube.wait_for(
        lambda: (
            kube.get_json(kubectl, "service", f"{NAME}-pooler-rw", "-n", namespace)["metadata"][
                "uid"
            ]
            != service_uid
        ),
        timeout=DRIFT_DEADLINE,
        what="deleted Service to be recreated",
    )
    kubectl(
        "patch",
        "configmap",
        f"{NAME}-pooler-config",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"data": {"pgbouncer.ini": "[pgbouncer]\nauth_type = trust\n"}}),
    )
    kube.wait_for(
        lambda: (
            "auth_type = scram-sha-256"
            in kube.get_json(kubectl, "configmap", f"{NAME}-pooler-config", "-n", namespace)[
                "data"
            ]["pgbouncer.ini"]
        ),
        timeout=DRIFT_DEADLINE,
        what="edited ConfigMap to be restored",
    )

    # Metrics exist and count our passes.
    metrics = operator.metrics()
    assert "headroom_reconcile_duration_seconds_count" in metrics
    passes = sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("headroom_reconcile_duration_seconds_count")
    )
    assert passes >= 3

    # Every replica exports the profile's conditions from its cache: exactly one
    # status of Ready is 1, the one the API server holds (asked until both agree,
    # since a status write may land between the two reads).
    def ready_series_match_status() -> bool:
        ready = next(
            c for c in _sp(kubectl, namespace)["status"]["conditions"] if c["type"] == "Ready"
        )
        series = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in operator.metrics().splitlines()
            if line.startswith("headroom_profile_condition{")
            and f'namespace="{namespace}"' in line
            and f'profile="{NAME}"' in line
            and 'condition="Ready"' in line
        }
        current = [k for k, v in series.items() if v == 1.0]
        return (
            len(series) == 3 and len(current) == 1 and f'status="{ready["status"]}"' in current[0]
        )

    kube.wait_for(ready_series_match_status, timeout=30, what="Ready in headroom_profile_condition")
    assert 'version="' in next(
        line for line in metrics.splitlines() if line.startswith("headroom_build_info")
    )

    # Delete the profile: children are garbage-collected, the app is untouched.
    kubectl("delete", "scalingprofile", NAME, "-n", namespace)
    for kind, name in [
        ("deployment", f"{NAME}-pooler"),
        ("service", f"{NAME}-pooler-rw"),
        ("configmap", f"{NAME}-pooler-config"),
        ("secret", f"{NAME}-binding"),
        ("secret", f"{NAME}-pooler-auth"),
        ("pdb", f"{NAME}-pooler"),
    ]:
        kube.wait_for(
            lambda kind=kind, name=name: not kube.exists(kubectl, kind, name, "-n", namespace),
            timeout=60,
            what=f"{kind}/{name} to be garbage-collected",
        )
    app_after = kube.get_json(kubectl, "deployment", "web", "-n", namespace)
    assert app_after["metadata"]["uid"] == app_before["metadata"]["uid"]
    assert app_after["metadata"]["generation"] == app_before["metadata"]["generation"]
    assert app_after["spec"]["replicas"] == 2
    assert kube.exists(kubectl, "secret", "db-credentials", "-n", namespace)


def test_foreign_object_is_never_taken_over(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    foreign = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": f"{NAME}-pooler-rw",
            "namespace": namespace,
            "labels": {"owner": "someone-else"},
        },
        "spec": {"ports": [{"port": 80}], "selector": {"app": "other"}},
    }
    kube.apply(kubectl, app_deployment(namespace), credentials(namespace), foreign)
    kube.apply(kubectl, _profile(namespace), namespace=namespace)

    def conflict_reported() -> bool:
        sp = _sp(kubectl, namespace)
        return any(
            c["type"] == "PoolerReady" and c["reason"] == "NameConflict"
            for c in sp.get("status", {}).get("conditions", [])
        )

    kube.wait_for(conflict_reported, timeout=60, what="NameConflict condition")
    svc = kube.get_json(kubectl, "service", f"{NAME}-pooler-rw", "-n", namespace)
    assert svc["spec"]["selector"] == {"app": "other"}
    assert not svc["metadata"].get("ownerReferences")
    # Nothing of the pooler is applied (its pods would be reached through the
    # foreign Service) and the binding does not point the app at it; the rest
    # of the profile is reconciled.
    assert not kube.exists(kubectl, "deployment", f"{NAME}-pooler", "-n", namespace)
    assert kube.exists(kubectl, "pdb", f"{NAME}-app", "-n", namespace)
    binding = kube.get_json(kubectl, "secret", f"{NAME}-binding", "-n", namespace)
    assert "DATABASE_URL_POOLED" not in binding.get("data", {})
    # Once the foreign object is gone, the pooler is applied (the resync retries
    # a profile with a conflict) and the binding points at it.
    kubectl("delete", "service", f"{NAME}-pooler-rw", "-n", namespace)
    kube.wait_for(
        lambda: (
            "DATABASE_URL_POOLED"
            in kube.get_json(kubectl, "secret", f"{NAME}-binding", "-n", namespace).get("data", {})
        ),
        timeout=90,
        what="the binding to point at the pooler once the conflict is gone",
    )
    assert kube.exists(kubectl, "deployment", f"{NAME}-pooler", "-n", namespace)


def test_missing_credentials_reported(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    kube.apply(kubectl, app_deployment(namespace))
    kube.apply(kubectl, _profile(namespace), namespace=namespace)

    def reason() -> str | None:
        sp = _sp(kubectl, namespace)
        for c in sp.get("status", {}).get("conditions", []):
            if c["type"] == "Ready" and c["status"] == "False":
                return str(c["reason"])
        return None

    assert kube.wait_for(reason, timeout=60, what="Ready=False") == "CredentialsNotFound"
    assert not kube.exists(kubectl, "deployment", f"{NAME}-pooler", "-n", namespace)
    # Creating the Secret later heals it without touching the profile (resync).
    kube.apply(kubectl, credentials(namespace))
    kubectl(
        "wait", "--for=condition=Ready", f"scalingprofile/{NAME}", "-n", namespace, "--timeout=90s"
    )


@pytest.mark.parametrize(
    ("case_id", "overrides", "needle"), profiles.BAD, ids=[c[0] for c in profiles.BAD]
)
def test_bad_profile_rejected_at_admission(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    case_id: str,
    overrides: dict[str, Any],
    needle: str,
    tmp_path: Path,
) -> None:
    body = profiles.bad(case_id)
    proc = kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
    assert proc.returncode != 0, f"{case_id} was accepted"
    assert needle in proc.stderr, proc.stderr
    assert not kube.exists(kubectl, "scalingprofile", case_id, "-n", "default")
    assert operator.alive()


def test_server_ca_is_mounted_and_a_missing_one_reported(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    kube.apply(kubectl, app_deployment(namespace), credentials(namespace))
    body = _profile(
        namespace,
        **{"database.sslMode": "verify-full", "database.serverCASecret": {"name": "db-ca"}},
    )
    kube.apply(kubectl, body, namespace=namespace)

    def pooler_reason() -> str | None:
        for c in _sp(kubectl, namespace).get("status", {}).get("conditions", []):
            if c["type"] == "PoolerReady" and c["status"] == "False":
                return str(c["reason"])
        return None

    assert kube.wait_for(pooler_reason, timeout=60, what="PoolerReady=False") == "ServerCANotFound"
    assert not kube.exists(kubectl, "deployment", f"{NAME}-pooler", "-n", namespace)

    def ca_secret(pem: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db-ca", "namespace": namespace},
            "stringData": {"ca.crt": pem},
        }

    # The PEM marker around garbage is not a certificate: refused, nothing applied.
    kube.apply(kubectl, ca_secret("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
    kube.wait_for(lambda: pooler_reason() == "ServerCAInvalid", timeout=60, what="ServerCAInvalid")
    assert not kube.exists(kubectl, "deployment", f"{NAME}-pooler", "-n", namespace)
    kube.apply(kubectl, ca_secret(certs.pem(certs.ca("shop db CA")[1])))
    kubectl(
        "wait", "--for=condition=Ready", f"scalingprofile/{NAME}", "-n", namespace, "--timeout=90s"
    )
    ini = kube.get_json(kubectl, "configmap", f"{NAME}-pooler-config", "-n", namespace)
    text = ini["data"]["pgbouncer.ini"]
    assert "server_tls_sslmode = verify-full" in text
    assert "server_tls_ca_file = /etc/pgbouncer-server-ca/ca.crt" in text
    pod_spec = kube.get_json(kubectl, "deployment", f"{NAME}-pooler", "-n", namespace)["spec"][
        "template"
    ]["spec"]
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert volumes["server-ca"]["secret"]["secretName"] == "db-ca"
    mounts = pod_spec["containers"][0]["volumeMounts"]
    assert {
        "name": "server-ca",
        "mountPath": "/etc/pgbouncer-server-ca",
        "readOnly": True,
    } in mounts


def test_a_second_profile_on_the_same_server_shares_it_by_weight(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    namespace: str,
    pooler_agents: object,
) -> None:
    kube.apply(kubectl, app_deployment(namespace), credentials(namespace))
    kube.apply(kubectl, _profile(namespace), namespace=namespace)
    kubectl(
        "wait", "--for=condition=Ready", f"scalingprofile/{NAME}", "-n", namespace, "--timeout=120s"
    )
    sp = _sp(kubectl, namespace)
    assert sp["status"]["budget"]["server"] == f"db.{namespace}.svc:5432"
    assert sp["status"]["budget"]["serverConnections"] == 87  # alone: all of its 89
    # The admin app of the same shop, on the same Postgres, with twice the weight:
    # 97 - 2 x (5 kept for direct use + 3 postgres_exporter) = 81, divided 1:2 in steps
    # of 3 pooler pods (27:54)
    admin = profiles.base(name="admin", namespace=namespace, **{"database.share": {"weight": 2}})
    kube.apply(kubectl, admin, namespace=namespace)

    def shared() -> dict[str, Any] | None:
        found = {
            sp["metadata"]["name"]: sp["status"].get("budget") or {}
            for sp in kube.get_json(kubectl, "scalingprofiles", "-n", namespace)["items"]
        }
        done = found.get("admin", {}).get("sharedWith") and found[NAME].get("sharedWith")
        return found if done else None

    budgets = kube.wait_for(shared, timeout=60, what="both profiles to share db")
    assert budgets[NAME]["serverConnections"] == 27 and budgets["admin"]["serverConnections"] == 54
    assert budgets["admin"]["sharedWith"] == [
        {"profile": f"{namespace}/{NAME}", "serverConnections": 27 + 5 + 3}
    ]
    kubectl(
        "wait", "--for=condition=Ready", "scalingprofile/admin", f"scalingprofile/{NAME}",
        "-n", namespace, "--timeout=120s",
    )  # fmt: skip
    # the shop's pooler now opens its share: 9 per pod
    config = kube.get_json(kubectl, "configmap", f"{NAME}-pooler-config", "-n", namespace)
    assert "max_db_connections = 9\n" in config["data"]["pgbouncer.ini"]
    # a session-mode app whose sessions do not fit beside both minimums is refused,
    # naming the profiles that hold them and a fix (55 sessions: 28 per pod x 3 at peak)
    reports = profiles.base(
        name="reports",
        namespace=namespace,
        **{"pooler.poolMode": "session", "app.replicas.max": 5, "app.poolSizePerPod": 11},
    )
    refused = kube.create(kubectl, reports, namespace=namespace, check=False)
    assert refused.returncode != 0
    assert "the guaranteed minimums on" in refused.stderr, refused.stderr
    assert f"{namespace}/{NAME} 11 (transaction mode" in refused.stderr
    assert f"{namespace}/admin 11 (transaction mode" in refused.stderr
    assert "spec.pooler.poolMode transaction" in refused.stderr


def test_a_declared_load_sizes_the_pooler_and_leaves_the_rest_to_others(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    # 200 requests/s x 50 ms = 10 connections busy on average, 5 on each pooler pod
    # and on each of the app's 2 pods (12 connections each); at most 5 % may wait
    load = {"peakRequestsPerSecond": 200, "databaseSecondsPerRequest": 0.05}
    body = _profile(namespace, **{"app.poolSizePerPod": 12}, load=load)
    planned = planner.plan(v1alpha1.parse_profile(body))
    assert planned.ok, planned.problem_text()
    needed, _ = queueing.servers_needed(offered_load=5, target_wait_probability=0.05)
    assert planned.budget.default_pool_size == needed
    kube.apply(kubectl, app_deployment(namespace), credentials(namespace))
    kube.apply(kubectl, body, namespace=namespace)
    kubectl(
        "wait", "--for=condition=Ready", f"scalingprofile/{NAME}", "-n", namespace, "--timeout=120s"
    )
    budget = _sp(kubectl, namespace)["status"]["budget"]
    # what the load needs, not the 87 of 89 that filling the budget takes
    assert budget["serverConnections"] == planned.budget.server_connections < 87
    ini = kube.get_json(kubectl, "configmap", f"{NAME}-pooler-config", "-n", namespace)
    assert f"default_pool_size = {needed}\n" in ini["data"]["pgbouncer.ini"]
    # the status says it with the stated chance, as headroom plan does
    assert budget["load"]["poolerPool"].startswith(
        f"{needed} per pooler pod, 5 busy on each of 2 pooler pods: "
    )
    assert budget["load"]["target"] == "5% chance a request waits for a connection"

    # another app on the same server gets all the rest, not a half
    admin = profiles.base(name="admin", namespace=namespace)
    kube.apply(kubectl, admin, namespace=namespace)

    def admin_budget() -> dict[str, Any] | None:
        found = kube.get_json(kubectl, "scalingprofile", "admin", "-n", namespace)
        shared = (found.get("status") or {}).get("budget") or {}
        return shared if shared.get("sharedWith") else None

    shared = kube.wait_for(admin_budget, timeout=60, what="admin to share db")
    # 97 - 2 x (5 kept for direct use + 3 postgres_exporter) - what the load holds
    assert shared["serverConnections"] > 81 - planned.budget.server_connections - 3
    assert _sp(kubectl, namespace)["status"]["budget"]["serverConnections"] == (
        planned.budget.server_connections
    )

    # a peak the server cannot serve is refused at admission, naming the load
    more = _profile(
        namespace, **{"app.poolSizePerPod": 12}, load={**load, "peakRequestsPerSecond": 2000}
    )
    refused = kubectl(
        "apply", "--server-side", "--field-manager=e2e", "--force-conflicts", "-f", "-",
        "-n", namespace, input=yaml.safe_dump(more), check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "spec.load.peakRequestsPerSecond: 2000 requests/s x 0.05 s" in refused.stderr
    stored = _sp(kubectl, namespace)["spec"]["load"]["peakRequestsPerSecond"]
    assert stored == 200


def test_a_rollout_leaves_only_the_new_pods_reports_in_the_state_configmap(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    namespace: str,
    pooler_agents: object,
) -> None:
    kube.apply(kubectl, app_deployment(namespace), credentials(namespace))
    kube.apply(kubectl, _profile(namespace), namespace=namespace)
    state = f"{NAME}-pooler-state"

    def reported() -> set[str] | None:
        """The pooler's pods when each has its entry and no other entry is left."""
        pods = {p["metadata"]["name"] for p in _pooler_pods(kubectl, namespace)}
        data = kube.get_json(kubectl, "configmap", state, "-n", namespace).get("data") or {}
        return pods if pods and set(data) == pods else None

    before = kube.wait_for(reported, timeout=120, what="every pooler pod's report")
    # every pod replaced: the old ones' agents wrote their keys and are gone
    kubectl("rollout", "restart", f"deployment/{NAME}-pooler", "-n", namespace)
    after = kube.wait_for(
        lambda: (found := reported()) and not found & before and found,
        timeout=180,
        what="only the new pods' reports in the state ConfigMap",
    )
    assert len(after) == len(before)
    # the operator removed keys without taking any: its field manager owns no data key
    stored = kube.get_json(kubectl, "configmap", state, "-n", namespace)
    ours = [
        m
        for m in stored["metadata"].get("managedFields") or []
        if m.get("manager") == "headroom" and "f:data" in (m.get("fieldsV1") or {})
    ]
    assert not ours, ours
