"""The checks of a profile that its schema does not state, because a CRD cannot:
containers' resources as the API server checks a Pod's (whole numbers, huge
pages, extended resources that cannot be overcommitted, the full grammar of a
resource name), the one server every builtin bucket shares, alert targets
that need the app's metrics when they are null (CEL reads a null as absent),
and alert settings that name what another section declares (a Redis instance,
the read pooler, read replicas).

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
    found += _alerts_for_what_is_declared(spec)
    return found


def _alerts_for_what_is_declared(
    spec: v1alpha1.ScalingProfileSpec,
) -> list[connection_budget.Problem]:
    """Per-instance and per-pooler alert settings name something the profile
    declares, and a setting that cannot apply is refused rather than ignored."""
    found: list[connection_budget.Problem] = []
    alerts = spec.alerts
    uses = {inst.name: inst.use for inst in (spec.cache.instances if spec.cache else [])}
    for name, own in sorted(alerts.cache.instances.items()):
        where = f"spec.alerts.cache.instances.{name}"
        if name not in uses:
            known = ", ".join(sorted(uses)) or "none declared"
            found.append(
                connection_budget.Problem(
                    where, f"{name!r} is not a spec.cache.instances name ({known})"
                )
            )
            continue
        for field, value in (("hitRateMin", own.hit_rate_min), ("evictions", own.evictions)):
            if value is not None and uses[name] != "cache":
                found.append(
                    connection_budget.Problem(
                        f"{where}.{field}",
                        f"applies to use: cache only; {name} has use: {uses[name]} (it never "
                        "evicts, and its hit rate means nothing)",
                    )
                )
    replicas = spec.database.read_replicas
    if alerts.pooler.read is not None and replicas is None:
        found.append(
            connection_budget.Problem(
                "spec.alerts.pooler.read",
                "there is no read pooler without spec.database.readReplicas",
            )
        )
    if alerts.database.replica_lag_seconds is not None and replicas is None:
        found.append(
            connection_budget.Problem(
                "spec.alerts.database.replicaLagSeconds",
                "there is no replica without spec.database.readReplicas",
            )
        )
    metrics = alerts.app.served_metrics
    if metrics is not None and alerts.app.routes and metrics.route_label in alerts.labels:
        found.append(
            connection_budget.Problem(
                f"spec.alerts.labels.{metrics.route_label}",
                "is spec.alerts.app.metrics.routeLabel, which the route alerts carry from "
                "the histogram; a label of the same name would hide the route",
            )
        )
    return found


def _targets_without_metrics(app: v1alpha1.AppAlerts) -> list[connection_budget.Problem]:
    if app.metrics.enabled:
        return []
    given = [
        field
        for field, value in (
            ("p95LatencySeconds", app.p95_latency_given),
            ("errorRatio", app.error_ratio_given),
            ("routes", app.routes or None),
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
