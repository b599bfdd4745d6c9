"""Redis by use, queue workers and app autoscaling, end to end on a real API server.

A profile like examples/shop-scaled.yaml (a cache and a queue Redis, a queue
whose workers use the database, an HPA for the app) is applied next to the
app's Deployment. Without KEDA the workers scale on CPU through an HPA and
BacklogScaling says why; installing KEDA's upstream CRDs swaps that HPA for a
ScaledObject + TriggerAuthentication (checked by the API server against KEDA's
own schema), removing them swaps it back, and nothing else changes. Impossible
scaling profiles are rejected at admission; deleting a profile collects its
children and keeps Redis data (PVCs) unless told otherwise.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kube
import operator_process
import pytest
from apps import APP_LABELS, APP_NAME, app_deployment, credentials
from tests import profiles

NAME = "shop"
PROFILE_SELECTOR = f"headroom.dev/profile={NAME}"
KEDA_CRDS = ("scaledobjects.keda.sh", "triggerauthentications.keda.sh")
KEDA_CRD_FILES = ("keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml")
WORKERS = f"{NAME}-worker-emails"
TRIGGER_AUTH = f"{NAME}-worker-emails-redis"
APP_AUTOSCALER = f"{NAME}-app"
LIST = "bull:emails:wait"
# The operator re-plans every profile as soon as KEDA's CRDs come or go (a few
# seconds here); the deadline stays under its resync period (30 s in these
# tests) so that a switch left to the resync timer alone would be noticed.
SWITCH_DEADLINE = 20.0

# app ceiling 10 pods x 5 + worker ceiling 20 pods x 2 (databasePoolSize)
CLIENT_DEMAND = 10 * 5 + 20 * 2

Kinds = set[tuple[str, str]]


def scaled_profile(namespace: str, **overrides: Any) -> dict[str, Any]:
    """examples/shop-scaled.yaml for the e2e app (`web`, `db-credentials`).

    The jobs instance keeps its data in memory here (the persistence tests add
    a claim; the local cluster's default StorageClass binds it).
    """
    body = profiles.base(name=NAME, namespace=namespace)
    body["spec"]["cache"] = {
        "instances": [
            {"name": "cache", "use": "cache", "memory": "512Mi"},
            {"name": "jobs", "use": "queue", "memory": "256Mi"},
        ]
    }
    body["spec"]["queues"] = [
        {
            "name": "emails",
            "redis": "jobs",
            "listName": LIST,
            "image": "registry.example/shop-worker:1.0",
            "command": ["node", "dist/worker.js"],
            "replicas": {"min": 0, "max": 20},
            "backlogPerWorker": 25,
            "databasePoolSize": 2,
            "terminationGracePeriodSeconds": 120,
        }
    ]
    body["spec"]["autoscaling"] = {"cpuUtilization": 50, "scaleDownStabilizationSeconds": 120}
    for path, value in overrides.items():
        profiles.set_path(body["spec"], path, value)
    return body


# ------------------------------------------------------------------ helpers


def _persistent_profile(
    namespace: str, persistence: dict[str, str] | None = None, **overrides: Any
) -> dict[str, Any]:
    """scaled_profile with the jobs instance on a claim (1Gi unless ``persistence``)."""
    body = scaled_profile(namespace, **overrides)
    body["spec"]["cache"]["instances"][1]["persistence"] = persistence or {"size": "1Gi"}
    return body


def _sp(kubectl: kube.Kubectl, namespace: str, name: str = NAME) -> dict[str, Any]:
    return kube.get_json(kubectl, "scalingprofile", name, "-n", namespace)


def _condition(sp: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in sp.get("status", {}).get("conditions") or []:
        if cond["type"] == type_:
            found: dict[str, Any] = cond
            return found
    return {}


def _wait_ready(kubectl: kube.Kubectl, namespace: str, timeout: int = 120) -> None:
    kubectl(
        "wait",
        "--for=condition=Ready",
        f"scalingprofile/{NAME}",
        "-n",
        namespace,
        f"--timeout={timeout}s",
    )


def _get(kubectl: kube.Kubectl, namespace: str, kind: str, name: str) -> dict[str, Any]:
    return kube.get_json(kubectl, kind, name, "-n", namespace)


def _secret(kubectl: kube.Kubectl, namespace: str, name: str) -> dict[str, str]:
    data = _get(kubectl, namespace, "secret", name).get("data") or {}
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def _live_pods(kubectl: kube.Kubectl, namespace: str, selector: str) -> list[dict[str, Any]]:
    pods = kube.get_json(kubectl, "pods", "-n", namespace, "-l", selector)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def _matches(match_labels: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in match_labels.items())


def _labelled(
    kubectl: kube.Kubectl,
    namespace: str,
    selector: str = PROFILE_SELECTOR,
    *,
    terminating: bool = False,
) -> Kinds:
    """Every object of every listable namespaced kind served right now that
    carries ``selector``, as (kind, name): what a user sees with
    ``kubectl get $(kubectl api-resources --verbs=list -o name) -l ...``.
    Objects already being deleted count only with ``terminating``."""
    resources = kubectl(
        "api-resources", "--verbs=list", "--namespaced", "-o", "name"
    ).stdout.split()
    resources = [r for r in resources if r not in ("events", "events.events.k8s.io")]
    listing = kubectl("get", ",".join(resources), "-n", namespace, "-l", selector, "-o", "json")
    items = json.loads(listing.stdout or "{}").get("items", [])
    return {
        (item["kind"], item["metadata"]["name"])
        for item in items
        if terminating or not item["metadata"].get("deletionTimestamp")
    }


def _hpa_metric_target(hpa: dict[str, Any]) -> tuple[str, int]:
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource"
    return metric["resource"]["name"], metric["resource"]["target"]["averageUtilization"]


def _keda_files(upstream_crds_dir: Path) -> list[Path]:
    paths = [upstream_crds_dir / name for name in KEDA_CRD_FILES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"upstream KEDA CRD files missing: {missing}")
    return paths


def _keda_served(kubectl: kube.Kubectl) -> bool:
    return kubectl("get", "scaledobjects.keda.sh", "-A", "-o", "name", check=False).returncode == 0


def _wait_hpa_fallback(kubectl: kube.Kubectl, namespace: str) -> None:
    def fallback() -> bool:
        sp = _sp(kubectl, namespace)
        scaling = _condition(sp, "BacklogScaling")
        return (
            scaling.get("status") == "False"
            and scaling.get("reason") == "KEDANotInstalled"
            and _condition(sp, "WorkersReady").get("reason") == "ScaledByHPA"
            and kube.exists(kubectl, "hpa", WORKERS, "-n", namespace)
        )

    kube.wait_for(
        fallback, timeout=SWITCH_DEADLINE, what="workers on the HPA fallback (KEDANotInstalled)"
    )


def _wait_keda(kubectl: kube.Kubectl, namespace: str) -> None:
    def switched() -> bool:
        sp = _sp(kubectl, namespace)
        scaling = _condition(sp, "BacklogScaling")
        return (
            scaling.get("status") == "True"
            and _condition(sp, "WorkersReady").get("reason") == "ScaledByKEDA"
            and kube.exists(kubectl, "scaledobject", WORKERS, "-n", namespace)
            and kube.exists(kubectl, "triggerauthentication", TRIGGER_AUTH, "-n", namespace)
            and not kube.exists(kubectl, "hpa", WORKERS, "-n", namespace)
        )

    kube.wait_for(
        switched,
        timeout=SWITCH_DEADLINE,
        what="the worker HPA to be replaced by a ScaledObject + TriggerAuthentication",
    )


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def keda_absent(kubectl: kube.Kubectl) -> None:
    """Start without KEDA (test_controlplane.py leaves its CRD installed)."""
    kube.uninstall_crds(kubectl, KEDA_CRDS)


@pytest.fixture(scope="module")
def scaled(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, keda_absent: None
) -> Iterator[str]:
    """The scaled shop in its own namespace, shared by the KEDA switch tests."""
    with kube.fresh_namespace(kubectl) as namespace:
        kube.apply(kubectl, app_deployment(namespace), credentials(namespace))
        kube.apply(kubectl, scaled_profile(namespace), namespace=namespace)
        yield namespace
        # Leave the cluster as we found it for the rest of the session: no KEDA.
        kube.uninstall_crds(kubectl, KEDA_CRDS)


# -------------------------------------------------------------------- tests


def test_without_keda_everything_runs_and_workers_scale_on_cpu(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, scaled: str
) -> None:
    ns = scaled
    _wait_ready(kubectl, ns)
    sp = _sp(kubectl, ns)
    assert sp["status"]["observedGeneration"] == sp["metadata"]["generation"]
    for type_ in ("ConnectionBudget", "PoolerReady", "CacheReady", "WorkersReady"):
        assert _condition(sp, type_)["status"] == "True", _condition(sp, type_)
    assert _condition(sp, "AutoscalingReady")["status"] == "True"
    scaling = _condition(sp, "BacklogScaling")
    assert (scaling["status"], scaling["reason"]) == ("False", "KEDANotInstalled")
    assert "install KEDA" in scaling["message"]
    assert _condition(sp, "WorkersReady")["reason"] == "ScaledByHPA"
    # the workers count in the connection budget
    assert sp["status"]["budget"]["clientDemand"] == CLIENT_DEMAND

    # The HPA controller's verdict on the app's HPA is passed on: this cluster has
    # no metrics-server, so it cannot read CPU (informational: Ready stays True).
    def scaling_active_reported() -> dict[str, str] | None:
        found = _condition(_sp(kubectl, ns), "AppScalingActive")
        return found if found and found["status"] == "False" else None

    active = kube.wait_for(scaling_active_reported, timeout=90, what="AppScalingActive=False")
    assert active["reason"] == "FailedGetResourceMetric", active
    assert f"HPA {NAME}-app:" in active["message"]
    assert _condition(_sp(kubectl, ns), "Ready")["status"] == "True"

    # Workers: a Deployment reading the binding, scaled by a CPU HPA it never fights.
    workers = kube.get_json(kubectl, "deployment", WORKERS, "-n", ns, "--show-managed-fields")
    (container,) = workers["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/shop-worker:1.0"
    assert container["command"] == ["node", "dist/worker.js"]
    # the queue's own binding: its pool size, its Redis, BullMQ's name and prefix
    assert container["envFrom"] == [{"secretRef": {"name": f"{WORKERS}-binding"}}]
    assert "env" not in container
    worker_binding = _secret(kubectl, ns, f"{WORKERS}-binding")
    assert (worker_binding["QUEUE_NAME"], worker_binding["QUEUE_LIST"]) == ("emails", LIST)
    assert workers["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 120
    ours = [m for m in workers["metadata"]["managedFields"] if m["manager"] == "headroom"]
    assert ours, workers["metadata"]["managedFields"]
    for entry in ours:
        assert "f:replicas" not in entry["fieldsV1"].get("f:spec", {}), entry
    worker_pods = _live_pods(kubectl, ns, f"headroom.dev/queue=emails,{PROFILE_SELECTOR}")
    assert worker_pods and all(kube.condition(p, "Ready") == "True" for p in worker_pods)

    hpa = _get(kubectl, ns, "hpa", WORKERS)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": WORKERS,
    }
    # an HPA cannot scale to zero: min 0 becomes 1 until KEDA is installed
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 20)
    assert _hpa_metric_target(hpa) == ("cpu", 70)

    # Redis: one StatefulSet per instance, pods Ready, eviction by use.
    for instance, policy, memory in (("cache", "allkeys-lru", 512), ("jobs", "noeviction", 256)):
        base = f"{NAME}-redis-{instance}"
        sts = _get(kubectl, ns, "statefulset", base)
        assert sts["status"].get("readyReplicas") == 1, sts["status"]
        pods = _live_pods(kubectl, ns, f"headroom.dev/redis={instance},{PROFILE_SELECTOR}")
        assert len(pods) == 1 and kube.condition(pods[0], "Ready") == "True"
        assert pods[0]["spec"]["nodeName"].startswith("kwok-node")
        conf = _get(kubectl, ns, "configmap", f"{base}-config")["data"]["redis.conf"]
        assert f"maxmemory-policy {policy}\n" in conf, conf
        assert f"maxmemory {memory * 1024**2 * 75 // 100}\n" in conf, conf
        assert "requirepass" not in conf  # the password lives in the auth Secret only

    # Passwords: generated per instance, and the binding carries them.
    passwords = {
        instance: _secret(kubectl, ns, f"{NAME}-redis-{instance}-auth")["password"]
        for instance in ("cache", "jobs")
    }
    assert all(len(pw) >= 16 for pw in passwords.values())
    assert passwords["cache"] != passwords["jobs"]
    binding = _secret(kubectl, ns, f"{NAME}-binding")
    cache_url = f"redis://:{passwords['cache']}@{NAME}-redis-cache.{ns}.svc:6379/0"
    queue_url = f"redis://:{passwords['jobs']}@{NAME}-redis-jobs.{ns}.svc:6379/0"
    assert binding["REDIS_URL"] == queue_url  # never the evicting one when a queue exists
    assert binding["REDIS_CACHE_URL"] == cache_url
    assert binding["REDIS_QUEUE_URL"] == queue_url
    assert binding["DATABASE_URL_POOLED"].startswith("postgresql://shop_app:")
    events = kubectl("get", "events", "-n", ns, "-o", "json").stdout
    for pw in passwords.values():
        assert pw not in json.dumps(sp) and pw not in events

    # NetworkPolicy: selects the Redis pods, admits the app's and the workers' pods.
    app_pods = _live_pods(kubectl, ns, "app=web")
    assert app_pods
    for instance in ("cache", "jobs"):
        policy = _get(kubectl, ns, "networkpolicy", f"{NAME}-redis-{instance}")
        redis_pods = _live_pods(kubectl, ns, f"headroom.dev/redis={instance},{PROFILE_SELECTOR}")
        selector = policy["spec"]["podSelector"]["matchLabels"]
        assert all(_matches(selector, p["metadata"]["labels"]) for p in redis_pods)
        redis_port = next(rule for rule in policy["spec"]["ingress"] if rule.get("from"))
        assert redis_port["ports"] == [{"port": 6379, "protocol": "TCP"}]
        admitted = [peer["podSelector"]["matchLabels"] for peer in redis_port["from"]]
        assert APP_LABELS in admitted
        for pod in [*app_pods, *worker_pods]:
            labels = pod["metadata"]["labels"]
            assert any(_matches(sel, labels) for sel in admitted), (pod["metadata"]["name"], policy)

    # The app: an HPA and a PDB, its Deployment untouched.
    app_hpa = _get(kubectl, ns, "hpa", APP_AUTOSCALER)
    assert app_hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": APP_NAME,
    }
    assert (app_hpa["spec"]["minReplicas"], app_hpa["spec"]["maxReplicas"]) == (2, 10)
    assert _hpa_metric_target(app_hpa) == ("cpu", 50)
    assert app_hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 120
    pdb = _get(kubectl, ns, "pdb", APP_AUTOSCALER)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == {"matchLabels": APP_LABELS}
    assert all(_matches(APP_LABELS, p["metadata"]["labels"]) for p in app_pods)
    app = kube.get_json(kubectl, "deployment", APP_NAME, "-n", ns, "--show-managed-fields")
    assert all(m["manager"] != "headroom" for m in app["metadata"]["managedFields"])
    assert not app["metadata"].get("ownerReferences")


def test_installing_keda_swaps_the_hpa_for_a_scaledobject(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    scaled: str,
    upstream_crds_dir: Path,
) -> None:
    ns = scaled
    paths = _keda_files(upstream_crds_dir)
    _wait_hpa_fallback(kubectl, ns)
    _wait_ready(kubectl, ns)
    before = _labelled(kubectl, ns)

    kube.install_crds(kubectl, paths)
    _wait_keda(kubectl, ns)

    scaled_object = _get(kubectl, ns, "scaledobject", WORKERS)
    spec = scaled_object["spec"]
    assert spec["scaleTargetRef"]["name"] == WORKERS
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 20)  # scales to zero
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == LIST
    assert trigger["metadata"]["listLength"] == "25"
    assert trigger["metadata"]["address"] == f"{NAME}-redis-jobs.{ns}.svc:6379"
    assert trigger["authenticationRef"]["name"] == TRIGGER_AUTH
    auth = _get(kubectl, ns, "triggerauthentication", TRIGGER_AUTH)
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": f"{NAME}-redis-jobs-auth", "key": "password"}
    ]
    assert "password" in _secret(kubectl, ns, f"{NAME}-redis-jobs-auth")

    sp = _sp(kubectl, ns)
    assert _condition(sp, "BacklogScaling")["reason"] == "KEDAInstalled"
    _wait_ready(kubectl, ns, timeout=60)
    # The worker Deployment is the same object; it still carries no replicas of ours.
    workers = kube.get_json(kubectl, "deployment", WORKERS, "-n", ns, "--show-managed-fields")
    for entry in workers["metadata"]["managedFields"]:
        if entry["manager"] == "headroom":
            assert "f:replicas" not in entry["fieldsV1"].get("f:spec", {}), entry

    after = _labelled(kubectl, ns)
    swapped_in = {("ScaledObject", WORKERS), ("TriggerAuthentication", TRIGGER_AUTH)}
    expected = (before - {("HorizontalPodAutoscaler", WORKERS)}) | swapped_in
    assert after == expected, sorted(after ^ expected)


def test_removing_keda_brings_the_hpa_back_and_leaks_nothing(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    scaled: str,
    upstream_crds_dir: Path,
) -> None:
    ns = scaled
    kube.install_crds(kubectl, _keda_files(upstream_crds_dir))  # no-op after the test above
    _wait_keda(kubectl, ns)
    _wait_ready(kubectl, ns, timeout=60)
    before = _labelled(kubectl, ns)

    kube.uninstall_crds(kubectl, KEDA_CRDS)
    _wait_hpa_fallback(kubectl, ns)

    # The ScaledObject and TriggerAuthentication went with their CRDs.
    assert not _keda_served(kubectl)
    hpa = _get(kubectl, ns, "hpa", WORKERS)
    assert hpa["spec"]["scaleTargetRef"]["name"] == WORKERS
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 20)
    _wait_ready(kubectl, ns, timeout=60)

    after = _labelled(kubectl, ns)
    swapped_out = {("ScaledObject", WORKERS), ("TriggerAuthentication", TRIGGER_AUTH)}
    expected = (before - swapped_out) | {("HorizontalPodAutoscaler", WORKERS)}
    assert after == expected, sorted(after ^ expected)
    # The operator outlived the CRDs it composes, and still guards admission.
    assert operator.alive(), operator.log_tail()
    assert kube.exists(kubectl, "validatingwebhookconfiguration", operator_process.WEBHOOK_CONFIG)


# ----------------------------------------------------------------- admission


def test_raising_the_app_ceiling_beyond_the_budget_is_rejected(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    # session mode: every client holds a server connection, workers included:
    # 10 x 5 + 10 x 2 = 70 sessions on 5 pooler pods x 14 (89 / 6 pods at peak)
    profile = scaled_profile(namespace, **{"pooler.poolMode": "session", "pooler.instances": 5})
    profile["spec"]["queues"][0]["replicas"]["max"] = 10
    kube.apply(kubectl, profile, namespace=namespace)
    stored = _sp(kubectl, namespace)
    assert stored["spec"]["app"]["replicas"]["max"] == 10

    raised = copy.deepcopy(profile)
    raised["spec"]["app"]["replicas"]["max"] = 20
    proc = kubectl("apply", "-f", "-", input=json.dumps(raised), check=False)
    assert proc.returncode != 0, proc.stdout
    assert "spec.app.replicas.max: " in proc.stderr, proc.stderr
    assert (
        "app ceiling 20 pods x 5 connections per pod + worker emails ceiling 10 pods x 2 "
        "connections per pod = 120 session connections > 89 available on the primary"
    ) in proc.stderr, proc.stderr

    # The app still fits; the workers' ceiling is what tips it over, and is named.
    workers = copy.deepcopy(profile)
    workers["spec"]["queues"][0]["replicas"]["max"] = 30
    proc = kubectl("apply", "-f", "-", input=json.dumps(workers), check=False)
    assert proc.returncode != 0, proc.stdout
    assert "spec.queues[0].replicas.max: " in proc.stderr, proc.stderr
    assert "spec.queues[0].databasePoolSize" in proc.stderr, proc.stderr

    after = _sp(kubectl, namespace)
    assert after["spec"] == stored["spec"]
    assert after["metadata"]["generation"] == stored["metadata"]["generation"]


def _queue_on_cache(body: dict[str, Any]) -> None:
    body["spec"]["queues"][0]["redis"] = "cache"


def _evicting_queue(body: dict[str, Any]) -> None:
    body["spec"]["cache"]["instances"][1]["evictionPolicy"] = "allkeys-lru"


def _workers_min_over_max(body: dict[str, Any]) -> None:
    body["spec"]["queues"][0]["replicas"] = {"min": 5, "max": 2}


def _newline_in_config(body: dict[str, Any]) -> None:
    body["spec"]["cache"]["instances"][0]["config"] = {"timeout": "0\nrequirepass x"}


def _memory(value: str) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        body["spec"]["cache"]["instances"][0]["memory"] = value

    return change


BAD_SCALING: list[tuple[str, Callable[[dict[str, Any]], None], tuple[str, ...]]] = [
    ("queue-on-cache-instance", _queue_on_cache, ("spec.queues[0].redis", "use: queue")),
    (
        "evicting-queue-instance",
        _evicting_queue,
        ("spec.cache.instances[1]", "evictionPolicy", "noeviction"),
    ),
    ("workers-min-over-max", _workers_min_over_max, ("spec.queues[0].replicas",)),
    (
        "newline-in-redis-config",
        _newline_in_config,
        ("spec.cache.instances[0].config.timeout", "single line"),
    ),
    ("negative-memory", _memory("-1Gi"), ("spec.cache.instances[0].memory",)),
    (
        "fractional-memory",
        _memory("33554432.5"),
        ("spec.cache.instances[0].memory", "whole number of bytes"),
    ),
    ("too-little-memory", _memory("16Mi"), ("spec.cache.instances[0].memory", "at least 32Mi")),
]


@pytest.mark.parametrize(
    ("case_id", "change", "needles"), BAD_SCALING, ids=[c[0] for c in BAD_SCALING]
)
def test_bad_scaling_profile_rejected_at_admission(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    namespace: str,
    case_id: str,
    change: Callable[[dict[str, Any]], None],
    needles: tuple[str, ...],
) -> None:
    body = scaled_profile(namespace)
    body["metadata"]["name"] = case_id
    change(body)
    proc = kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
    assert proc.returncode != 0, f"{case_id} was accepted"
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    assert not kube.exists(kubectl, "scalingprofile", case_id, "-n", namespace)


def test_a_cache_policy_or_setting_change_reaches_the_configmap_and_replaces_no_redis_pod(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    """The Redis pods' agent takes a redis.conf change by CONFIG SET
    (tests/conformance/test_redis_online.py runs it with a real redis-server):
    here, on the cluster, the change reaches the ConfigMap it watches, the
    StatefulSet's template is not touched and the Redis pod keeps its uid."""
    kube.apply(kubectl, app_deployment(namespace), credentials(namespace))
    profile = scaled_profile(namespace)
    kube.apply(kubectl, profile, namespace=namespace)
    _wait_ready(kubectl, namespace)
    selector = f"headroom.dev/redis=cache,{PROFILE_SELECTOR}"
    (pod,) = _live_pods(kubectl, namespace, selector)
    sts = _get(kubectl, namespace, "statefulset", f"{NAME}-redis-cache")

    changed = copy.deepcopy(profile)
    cache = changed["spec"]["cache"]["instances"][0]
    cache |= {"evictionPolicy": "allkeys-lfu", "config": {"hz": "50"}}
    kube.apply(kubectl, changed, namespace=namespace)
    generation = _sp(kubectl, namespace)["metadata"]["generation"]
    kube.wait_for(
        lambda: _sp(kubectl, namespace).get("status", {}).get("observedGeneration") == generation,
        timeout=60,
        what="the pass of the changed profile",
    )
    conf = _get(kubectl, namespace, "configmap", f"{NAME}-redis-cache-config")["data"]
    assert "maxmemory-policy allkeys-lfu\n" in conf["redis.conf"], conf
    assert "hz 50\n" in conf["redis.conf"], conf
    after = _get(kubectl, namespace, "statefulset", f"{NAME}-redis-cache")
    assert after["metadata"]["generation"] == sts["metadata"]["generation"]
    assert after["spec"]["template"] == sts["spec"]["template"]
    assert [p["metadata"]["uid"] for p in _live_pods(kubectl, namespace, selector)] == [
        pod["metadata"]["uid"]
    ]
    _wait_ready(kubectl, namespace)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("sentinel", {"replicas": 2}, "sentinel cannot be added to or removed from"),
        ("persistence", {"size": "1Gi"}, "persistence cannot be added to or removed from"),
    ],
)
def test_a_change_behind_an_immutable_statefulset_field_is_refused_with_the_safe_path(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    namespace: str,
    field: str,
    value: dict[str, Any],
    needle: str,
) -> None:
    profile = scaled_profile(namespace)
    kube.apply(kubectl, profile, namespace=namespace)
    stored = _sp(kubectl, namespace)

    changed = copy.deepcopy(profile)
    changed["spec"]["cache"]["instances"][1][field] = value
    proc = kubectl("apply", "-f", "-", input=json.dumps(changed), check=False)
    assert proc.returncode != 0, proc.stdout
    assert "spec.cache.instances[1]" in proc.stderr, proc.stderr
    assert needle in proc.stderr and "another name" in proc.stderr, proc.stderr
    assert _sp(kubectl, namespace)["metadata"]["generation"] == stored["metadata"]["generation"]

    # The same field on a new instance is fine from the start.
    added = copy.deepcopy(profile)
    added["spec"]["cache"]["instances"].append({"name": "ha", "use": "cache", field: value})
    kube.apply(kubectl, added, namespace=namespace)


# ------------------------------------------------------------------ deletion


def test_deleting_the_profile_collects_children_and_keeps_redis_data(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    ns = namespace
    kube.apply(kubectl, app_deployment(ns), credentials(ns))
    kube.apply(kubectl, _persistent_profile(ns), namespace=ns)

    jobs = f"{NAME}-redis-jobs"
    expected = {
        ("StatefulSet", f"{NAME}-redis-cache"),
        ("StatefulSet", jobs),
        ("Deployment", WORKERS),
        ("Deployment", f"{NAME}-pooler"),
        ("HorizontalPodAutoscaler", WORKERS),
        ("HorizontalPodAutoscaler", APP_AUTOSCALER),
        ("PodDisruptionBudget", APP_AUTOSCALER),
        ("NetworkPolicy", f"{NAME}-redis-cache"),
        ("NetworkPolicy", jobs),
        ("Secret", f"{NAME}-binding"),
        ("Secret", f"{jobs}-auth"),
        ("ConfigMap", f"{jobs}-config"),
        ("Service", jobs),
    }
    kube.wait_for(
        lambda: expected <= _labelled(kubectl, ns),
        timeout=60,
        what="the profile's children to be applied",
    )
    sts = _get(kubectl, ns, "statefulset", jobs)
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    (template,) = sts["spec"]["volumeClaimTemplates"]
    assert template["spec"]["resources"]["requests"]["storage"] == "1Gi"
    # The StatefulSet controller creates the claim.
    pvc = f"data-{jobs}-0"
    kube.wait_for(
        lambda: kube.exists(kubectl, "pvc", pvc, "-n", ns),
        timeout=60,
        what=f"PVC {pvc} created by the StatefulSet controller",
    )
    pvc_uid = _get(kubectl, ns, "pvc", pvc)["metadata"]["uid"]
    app_before = _get(kubectl, ns, "deployment", APP_NAME)

    kubectl("delete", "scalingprofile", NAME, "-n", ns, "--wait=true", "--timeout=60s")

    kube.wait_for(
        lambda: not _labelled(kubectl, ns, terminating=True),
        timeout=90,
        what="every object labelled with the profile to be garbage-collected",
    )
    # The data outlives the profile; the app and its credentials are untouched.
    kept = _get(kubectl, ns, "pvc", pvc)
    assert kept["metadata"]["uid"] == pvc_uid
    assert not kept["metadata"].get("deletionTimestamp")
    app_after = _get(kubectl, ns, "deployment", APP_NAME)
    assert app_after["metadata"]["uid"] == app_before["metadata"]["uid"]
    assert app_after["metadata"]["generation"] == app_before["metadata"]["generation"]
    assert kube.exists(kubectl, "secret", "db-credentials", "-n", ns)


def test_a_persistent_queue_goes_ready_and_a_pending_claim_is_named(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    ns = namespace
    kube.apply(kubectl, app_deployment(ns), credentials(ns))
    kube.apply(kubectl, _persistent_profile(ns), namespace=ns)
    # The cluster's default StorageClass binds the claim: the profile goes Ready.
    _wait_ready(kubectl, ns)
    assert _condition(_sp(kubectl, ns), "CacheReady")["status"] == "True"
    claim = _get(kubectl, ns, "pvc", f"data-{NAME}-redis-jobs-0")
    assert claim["status"]["phase"] == "Bound"

    # A class that does not exist: the claim stays Pending, and CacheReady says
    # so, naming the claim, the class and the field, instead of PodsNotReady.
    other = _persistent_profile(
        ns,
        {"size": "1Gi", "storageClassName": "no-such-class"},
        **{"database.host": "archive-db"},  # its own server
    )
    other["metadata"]["name"] = "archive"
    kube.apply(kubectl, other, namespace=ns)

    def claim_pending() -> dict[str, Any] | None:
        cache = _condition(_sp(kubectl, ns, "archive"), "CacheReady")
        return cache if cache.get("reason") == "ClaimPending" else None

    cache = kube.wait_for(claim_pending, timeout=60, what="CacheReady=False ClaimPending")
    assert cache["status"] == "False"
    assert (
        "PersistentVolumeClaim data-archive-redis-jobs-0 is Pending: StorageClass "
        "no-such-class does not exist (spec.cache.instances[1].persistence.storageClassName)"
    ) in cache["message"], cache["message"]
