"""HPA (autoscaling/v2) and PDB for the app's own Deployment.

Pure. Headroom owns these two objects, never the app's Deployment: the HPA
points at it by name and the PDB selects its pods by the Deployment's own
selector, read from the cluster.
"""

from __future__ import annotations

import copy

from headroom.builders import common
from headroom.planning import planner

COMPONENT = "autoscaling"


def build(plan: planner.Plan, *, app_pod_selector: common.Obj) -> list[common.Obj]:
    auto = plan.autoscaling
    if not auto.enabled:
        return []
    meta = common.metadata(
        plan, name=plan.names.app_autoscaler, component=COMPONENT, app_name="app"
    )
    hpa = common.cpu_hpa(
        metadata=meta,
        deployment=plan.app.deployment,
        min_replicas=auto.min_replicas,
        max_replicas=auto.max_replicas,
        cpu_utilization=auto.cpu_utilization,
        behavior={
            "scaleDown": {
                "stabilizationWindowSeconds": auto.scale_down_stabilization_seconds,
                "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
            },
            "scaleUp": {
                "stabilizationWindowSeconds": auto.scale_up_stabilization_seconds,
                "selectPolicy": "Max",
                "policies": [
                    {"type": "Percent", "value": 100, "periodSeconds": 30},
                    {"type": "Pods", "value": 4, "periodSeconds": 30},
                ],
            },
        },
    )
    objects = [hpa]
    if app_pod_selector:
        objects.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": common.metadata(
                    plan, name=plan.names.app_autoscaler, component=COMPONENT, app_name="app"
                ),
                "spec": {
                    "maxUnavailable": auto.max_unavailable,
                    "selector": copy.deepcopy(app_pod_selector),
                },
            }
        )
    return objects
