"""In-use protection (reconcile.deletion): which pods hold a profile being
deleted, and the pass that waits for them, on the fake cluster."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from headroom.reconcile import deletion, reconciler, telemetry
from tests.unit import fake_cluster, passes

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KEY = "default/shop"
BINDINGS = frozenset({"shop-binding", "shop-worker-emails-binding"})


def _pod(name: str, *, owner: tuple[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "labels": {}}
    if owner is not None:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
        if owner[0] == "ReplicaSet":
            meta["labels"]["pod-template-hash"] = owner[1].rsplit("-", 1)[1]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "c", "image": "x"}], **spec},
        "status": {"phase": "Running"},
    }


def _env_from(name: str) -> dict[str, Any]:
    return {"containers": [{"name": "c", "envFrom": [{"secretRef": {"name": name}}]}]}


def test_every_way_a_pod_reads_a_secret_holds_the_profile() -> None:
    pods = [
        _pod("web-1", owner=("ReplicaSet", "shop-web-5d9f8"), **_env_from("shop-binding")),
        _pod("web-2", owner=("ReplicaSet", "shop-web-5d9f8"), **_env_from("shop-binding")),
        _pod(
            "cron-1",
            owner=("Job", "nightly"),
            containers=[
                {
                    "name": "c",
                    "env": [
                        {
                            "name": "DATABASE_URL",
                            "valueFrom": {"secretKeyRef": {"name": "shop-binding", "key": "u"}},
                        }
                    ],
                }
            ],
        ),
        _pod("ca", volumes=[{"name": "v", "secret": {"secretName": "shop-binding"}}]),
        _pod(
            "proj",
            owner=("StatefulSet", "reports"),
            volumes=[
                {
                    "name": "v",
                    "projected": {"sources": [{"secret": {"name": "shop-worker-emails-binding"}}]},
                }
            ],
        ),
        _pod("other", **_env_from("another-binding")),
    ]
    held = deletion.holders(pods, profile="shop", bindings=BINDINGS)
    assert held == {
        "Deployment/shop-web": 2,
        "Job/nightly": 1,
        "Pod/ca": 1,
        "StatefulSet/reports": 1,
    }


def test_finished_pods_and_headroom_s_own_workers_do_not_hold_it() -> None:
    done = _pod("done", **_env_from("shop-binding"))
    done["status"]["phase"] = "Succeeded"
    worker = _pod("w", **_env_from("shop-worker-emails-binding"))
    worker["metadata"]["labels"] = {
        "app.kubernetes.io/managed-by": "headroom",
        "headroom.dev/profile": "shop",
    }
    assert deletion.holders([done, worker], profile="shop", bindings=BINDINGS) == {}


def test_binding_names_are_the_profile_s_binding_secrets() -> None:
    children = [
        "Secret/shop-binding",
        "Secret/shop-binding-avatars",
        "Secret/shop-worker-emails-binding",
        "Secret/shop-pooler-auth",
        "Deployment/shop-worker-emails",
    ]
    assert deletion.binding_names(children, profile="shop", namespace="default") == {
        "shop-binding",
        "shop-binding-avatars",
        "shop-worker-emails-binding",
    }


def _cluster(**spec: Any) -> fake_cluster.FakeCluster:
    body = yaml.safe_load((EXAMPLES / "shop.yaml").read_text())
    body["metadata"].update(namespace="default", uid="profile-uid", generation=1)
    body["spec"].update(spec)
    cluster = fake_cluster.FakeCluster()
    cluster.put(body)
    return cluster


def _delete(cluster: fake_cluster.FakeCluster) -> None:
    live = cluster.profile("default", "shop")
    assert live is not None
    live["metadata"]["deletionTimestamp"] = "2026-12-07T12:00:00Z"
    cluster.put(live)


def test_a_deleted_profile_waits_for_its_readers_and_then_lets_go() -> None:
    cluster = _cluster()
    eng = reconciler.Reconciler(cluster, telemetry.Metrics())
    passes.run(eng, KEY)
    profile = cluster.profile("default", "shop")
    assert profile is not None and profile["metadata"]["finalizers"] == [deletion.FINALIZER]
    cluster.put(_pod("web-1", owner=("ReplicaSet", "shop-web-7c4"), **_env_from("shop-binding")))
    _delete(cluster)
    waiting = asyncio.run(eng.reconcile(KEY))  # one pass: it asks to look again
    assert waiting is not None and waiting.recheck_seconds == deletion.RECHECK_SECONDS
    profile = cluster.profile("default", "shop")
    assert profile is not None and profile["metadata"]["finalizers"] == [deletion.FINALIZER]
    held = {c["type"]: c for c in profile["status"]["conditions"]}["Deletable"]
    assert (held["status"], held["reason"]) == ("False", "InUse")
    assert "Deployment/shop-web (1 pod)" in held["message"]
    cluster.objects.pop(("Pod", "default", "web-1"))
    assert passes.run(eng, KEY) is None
    profile = cluster.profile("default", "shop")
    assert profile is not None and profile["metadata"]["finalizers"] == []


def test_force_annotation_and_opt_out_let_go_at_once() -> None:
    cluster = _cluster()
    eng = reconciler.Reconciler(cluster, telemetry.Metrics())
    passes.run(eng, KEY)
    cluster.put(_pod("web-1", **_env_from("shop-binding")))
    _delete(cluster)
    live = cluster.profile("default", "shop")
    assert live is not None
    live["metadata"]["annotations"] = {deletion.FORCE_ANNOTATION: "true"}
    cluster.put(live)
    assert passes.run(eng, KEY) is None
    assert cluster.profile("default", "shop")["metadata"]["finalizers"] == []  # type: ignore[index]

    off = _cluster(inUseProtection=False)
    eng = reconciler.Reconciler(off, telemetry.Metrics())
    passes.run(eng, KEY)
    assert not off.profile("default", "shop")["metadata"].get("finalizers")  # type: ignore[index]


def test_turning_protection_off_removes_the_finalizer() -> None:
    cluster = _cluster()
    eng = reconciler.Reconciler(cluster, telemetry.Metrics())
    passes.run(eng, KEY)
    live = cluster.profile("default", "shop")
    assert live is not None
    live["spec"]["inUseProtection"] = False
    live["metadata"]["generation"] = 2
    cluster.put(live)
    passes.run(eng, KEY)
    assert cluster.profile("default", "shop")["metadata"]["finalizers"] == []  # type: ignore[index]
