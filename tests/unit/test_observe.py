"""Component conditions observed from applied children (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from headroom.api import conditions, v1alpha1
from headroom.planning import planner
from headroom.reconcile import observe
from tests import profiles


def _hpa(*hpa_conditions: dict[str, str]) -> dict[str, Any]:
    return {
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "shop-app"},
        "status": {"conditions": list(hpa_conditions)},
    }


def _scaling_active(applied: dict[str, Any]) -> dict[str, str] | None:
    planned = planner.plan(v1alpha1.parse_profile(profiles.base()))
    for found in observe.components(planned, applied, app_found=True):
        if found.type == conditions.APP_SCALING_ACTIVE:
            return {"status": found.status, "reason": found.reason, "message": found.message}
    return None


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        (
            [
                {
                    "type": "ScalingActive",
                    "status": "False",
                    "reason": "FailedGetResourceMetric",
                    "message": "unable to get metrics for resource cpu",
                }
            ],
            ("False", "FailedGetResourceMetric", "HPA shop-app: unable to get metrics"),
        ),
        (
            [
                {"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"},
                {
                    "type": "ScalingActive",
                    "status": "True",
                    "reason": "ValidMetricFound",
                    "message": "the HPA was able to compute the replica count",
                },
            ],
            ("True", "ValidMetricFound", "HPA shop-app: the HPA was able"),
        ),
        ([], ("Unknown", "NotReportedYet", "HPA shop-app has not been evaluated")),
    ],
)
def test_app_scaling_active_mirrors_the_hpa(
    conditions: list[dict[str, str]], expected: tuple[str, str, str]
) -> None:
    found = _scaling_active({"HorizontalPodAutoscaler/shop-app": _hpa(*conditions)})
    assert found is not None
    assert (found["status"], found["reason"]) == expected[:2]
    assert found["message"].startswith(expected[2])


def test_no_hpa_no_scaling_active_condition() -> None:
    assert _scaling_active({}) is None
    assert conditions.APP_SCALING_ACTIVE in conditions.INFORMATIONAL  # never blocks Ready
