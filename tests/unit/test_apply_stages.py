"""The apply phase's order against the API server's own rules: a RoleBinding is
only accepted once the RBAC authorizer's cache holds its Role (the operator has
neither ``bind`` nor ``escalate``), which a Role sent in the same concurrent
batch is not yet."""

from __future__ import annotations

import asyncio
from typing import Any

from headroom.builders import desired
from headroom.kube import errors
from headroom.reconcile import apply, telemetry

Obj = dict[str, Any]
RBAC_GROUP = "rbac.authorization.k8s.io"


class RbacCheckingCluster:
    """Serves every kind; ``apply`` of a RoleBinding fails as kube-apiserver's
    does when its Role had not been stored before the request began."""

    def __init__(self) -> None:
        self.stored: dict[str, Obj] = {}
        self.order: list[str] = []

    def served(self, kind: str) -> bool:
        return True

    async def apply(self, obj: Obj) -> Obj:
        key = desired.key_of(obj)
        if obj["kind"] == "RoleBinding":
            role = f"Role/{obj['roleRef']['name']}"
            if role not in self.stored:
                name = obj["metadata"]["name"]
                raise errors.ApiError(
                    status=404,
                    reason="NotFound",
                    message=f'rolebindings.rbac.authorization.k8s.io "{name}" not found',
                )
        await asyncio.sleep(0)  # the request is in flight: others of its batch start
        stored = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(len(self.stored))}}
        self.stored[key] = stored
        self.order.append(key)
        return stored


def _obj(kind: str, name: str, **extra: Any) -> Obj:
    api = "rbac.authorization.k8s.io/v1" if kind.startswith("Role") else "v1"
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {"name": name, "namespace": "team", "annotations": {}, "labels": {}},
        **extra,
    }


def test_a_new_role_binding_is_applied_after_its_role_and_accepted() -> None:
    objects = [
        _obj("ServiceAccount", "shop-pooler"),
        _obj("Role", "shop-pooler", rules=[{"apiGroups": [""], "resources": ["configmaps"]}]),
        _obj(
            "RoleBinding",
            "shop-pooler",
            roleRef={"apiGroup": RBAC_GROUP, "kind": "Role", "name": "shop-pooler"},
            subjects=[{"kind": "ServiceAccount", "name": "shop-pooler", "namespace": "team"}],
        ),
        _obj("ConfigMap", "shop-pooler-config", data={"pgbouncer.ini": "[pgbouncer]\n"}),
    ]
    wanted = desired.Desired(
        objects={desired.key_of(o): o for o in objects},
        component_of={desired.key_of(o): "pooler" for o in objects},
    )
    cluster = RbacCheckingCluster()
    applier = apply.Applier(cluster, telemetry.Metrics())  # type: ignore[arg-type]
    events: list[Any] = []

    result = asyncio.run(
        applier.apply_all("team/shop", wanted=wanted, children={}, frozen=set(), events=events)
    )

    assert result.failures == []
    assert cluster.order.index("RoleBinding/shop-pooler") > cluster.order.index("Role/shop-pooler")
    assert result.writes == len(objects)


class SlowServices(RbacCheckingCluster):
    """A Service's create waits for its cluster IP: here until the pass has
    applied its autoscaler (on a busy API server, seconds)."""

    async def apply(self, obj: Obj) -> Obj:
        if obj["kind"] == "Service":
            while "HorizontalPodAutoscaler/shop-app" not in self.stored:
                await asyncio.sleep(0.01)
        return await super().apply(obj)


def test_what_nothing_waits_for_is_applied_beside_the_stages() -> None:
    objects = [
        _obj("ConfigMap", "shop-pooler-config", data={"pgbouncer.ini": "[pgbouncer]\n"}),
        _obj("Service", "shop-pooler-rw", spec={"ports": [{"port": 5432}]}),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "shop-pooler", "namespace": "team", "annotations": {}},
            "spec": {"replicas": 2},
        },
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "shop-app", "namespace": "team", "annotations": {}},
            "spec": {"maxReplicas": 4},
        },
    ]
    wanted = desired.Desired(
        objects={desired.key_of(o): o for o in objects},
        component_of={desired.key_of(o): "pooler" for o in objects},
    )
    cluster = SlowServices()
    applier = apply.Applier(cluster, telemetry.Metrics())  # type: ignore[arg-type]

    async def run() -> apply.ApplyResult:
        return await asyncio.wait_for(
            applier.apply_all("team/shop", wanted=wanted, children={}, frozen=set(), events=[]),
            timeout=10,
        )

    result = asyncio.run(run())  # a Service between the stages would never finish

    assert result.failures == []
    order = cluster.order
    assert order.index("ConfigMap/shop-pooler-config") < order.index("Deployment/shop-pooler")
    assert order.index("Deployment/shop-pooler") < order.index("HorizontalPodAutoscaler/shop-app")
    assert order[-1] == "Service/shop-pooler-rw"
