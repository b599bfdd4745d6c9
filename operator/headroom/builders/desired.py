"""Everything a profile should own, as plain dicts keyed by ``Kind/name``.

Pure; the reconcile pass applies exactly this set and prunes any other object
that carries our labels and owner reference.
"""

from __future__ import annotations

from headroom.builders import autoscaling, binding, common, pgbouncer, redis, workers
from headroom.planning import plan as plan_mod


def build(
    plan: plan_mod.Plan,
    creds: common.Credentials,
    *,
    app_pod_selector: common.Obj | None = None,
) -> dict[str, common.Obj]:
    """``app_pod_selector``: the app Deployment's label selector (matchLabels and/or
    matchExpressions; None when the Deployment is not found). Without it there is
    no app PDB and the NetworkPolicies admit only Headroom's own pods."""
    selector = common.usable_selector(app_pod_selector)
    objects = [*pgbouncer.build(plan, creds), *binding.build(plan, creds)]
    for instance in plan.redis:
        objects += redis.build(
            plan,
            instance,
            password=creds.redis_passwords[instance.name],
            app_pod_selector=selector,
        )
    for queue in plan.queues:
        objects += workers.build(plan, queue)
    objects += autoscaling.build(plan, app_pod_selector=selector)
    desired: dict[str, common.Obj] = {}
    for obj in objects:
        key = common.key_of(obj)
        if key in desired:
            raise ValueError(f"two desired objects share the key {key}")
        desired[key] = obj
    return desired
