"""The checks of a profile that its schema does not state, because a CRD cannot:
containers' resources as the API server checks a Pod's (whole numbers, huge
pages, extended resources that cannot be overcommitted, the full grammar of a
resource name), the one server every builtin bucket shares, and alert targets
that need the app's metrics when they are null (CEL reads a null as absent).

The model (and so the CRD) refuses exactly what the API server refuses of a
ScalingProfile; these are refused by the planner, which admission, the
reconcile pass and ``headroom plan`` all run, each naming its field.

Pure; called by :func:`headroom.planning.planner.plan`.
"""

from __future__ import annotations

from headroom.api import resources, v1alpha1
from headroom.planning import connection_budget


def problems(spec: v1alpha1.ScalingProfileSpec) -> list[connection_budget.Problem]:
    found: list[connection_budget.Problem] = []
    for where, res in _containers(spec):
        named = _name_problems(res)
        found += [
            connection_budget.Problem(f"{where}.{field}.{name}", problem)
            for field, name, problem in named
        ]
        if not named:  # the other rules read the names
            found += [
                connection_budget.Problem(where, problem)
                for problem in resources.problems(res.requests, res.limits)
            ]
    if spec.storage is not None:
        differs = v1alpha1.one_server(spec.storage.buckets)
        if differs is not None:
            later, first = differs
            found.append(
                connection_budget.Problem(
                    f"spec.storage.buckets[{later}].builtin",
                    f"differs from spec.storage.buckets[{first}].builtin: builtin buckets "
                    "share one server; leave the later ones {} or set the same",
                )
            )
    found += _targets_without_metrics(spec.alerts.app)
    return found


def _targets_without_metrics(app: v1alpha1.AppAlerts) -> list[connection_budget.Problem]:
    if app.metrics.enabled:
        return []
    given = [
        field
        for field, value in (
            ("p95LatencySeconds", app.p95_latency_given),
            ("errorRatio", app.error_ratio_given),
        )
        if value is not None
    ]
    return [
        connection_budget.Problem(
            f"spec.alerts.app.{field}",
            "is set, but spec.alerts.app.metrics.enabled is false: without the app's metrics "
            "there is no latency or error alert (drop the target, or say where the metrics "
            "are)",
        )
        for field in given
    ]


def _containers(spec: v1alpha1.ScalingProfileSpec) -> list[tuple[str, v1alpha1.Resources]]:
    found = [(f"spec.queues[{i}].resources", q.resources) for i, q in enumerate(spec.queues)]
    rr = spec.database.read_replicas
    if rr is not None and rr.streaming is not None:
        found.append(("spec.database.readReplicas.streaming.resources", rr.streaming.resources))
    if spec.storage is not None:
        found += [
            (f"spec.storage.buckets[{i}].builtin.resources", b.builtin.resources)
            for i, b in enumerate(spec.storage.buckets)
            if b.builtin is not None and b.builtin.resources is not None
        ]
    return found


def _name_problems(res: v1alpha1.Resources) -> list[tuple[str, str, str]]:
    """(requests|limits, resource name, problem) for names the API server refuses."""
    return [
        (field, name, problem)
        for field, found in (("requests", res.requests), ("limits", res.limits))
        for name in sorted(found)
        if (problem := resources.name_problem(name))
    ]
