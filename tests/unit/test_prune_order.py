"""The order in which the reconcile pass deletes its own leftovers."""

from __future__ import annotations

from headroom.builders import common
from headroom.reconcile import engine


def _objs(*keys: str) -> dict[str, common.Obj]:
    return {
        key: {"kind": key.split("/")[0], "metadata": {"name": key.split("/")[1]}} for key in keys
    }


def test_a_leftover_hpa_goes_before_the_scaledobject_replacing_it() -> None:
    # KEDA just got installed: the worker's CPU HPA must be gone before the
    # ScaledObject is applied, or KEDA's webhook refuses the ScaledObject.
    existing = _objs(
        "Deployment/shop-worker-emails",
        "HorizontalPodAutoscaler/shop-worker-emails",
        "ConfigMap/shop-old",
    )
    wanted = _objs(
        "Deployment/shop-worker-emails",
        "ScaledObject/shop-worker-emails",
        "TriggerAuthentication/shop-worker-emails-redis",
    )
    first, after = engine.prune_order(wanted=wanted, existing=existing)
    assert first == ["HorizontalPodAutoscaler/shop-worker-emails"]
    assert after == ["ConfigMap/shop-old"]


def test_a_leftover_scaledobject_goes_before_the_hpa_replacing_it() -> None:
    existing = _objs(
        "ScaledObject/shop-worker-emails", "TriggerAuthentication/shop-worker-emails-redis"
    )
    wanted = _objs("HorizontalPodAutoscaler/shop-worker-emails")
    first, after = engine.prune_order(wanted=wanted, existing=existing)
    assert first == ["ScaledObject/shop-worker-emails"]
    assert after == ["TriggerAuthentication/shop-worker-emails-redis"]


def test_nothing_wanted_is_pruned() -> None:
    both = _objs("HorizontalPodAutoscaler/shop-app", "Service/shop-pooler-rw")
    assert engine.prune_order(wanted=both, existing=both) == ([], [])
