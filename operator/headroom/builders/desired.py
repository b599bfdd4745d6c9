"""Everything a profile should own, as plain dicts keyed by ``Kind/name``.

Pure; the reconcile pass applies exactly this set and prunes any other object
that carries our labels and owner reference.
"""

from __future__ import annotations

from headroom.builders import binding, common, pgbouncer
from headroom.planning import plan as plan_mod


def build(plan: plan_mod.Plan, creds: common.Credentials) -> dict[str, common.Obj]:
    objects = [*pgbouncer.build(plan, creds), *binding.build(plan, creds)]
    desired: dict[str, common.Obj] = {}
    for obj in objects:
        key = common.key_of(obj)
        if key in desired:
            raise ValueError(f"two desired objects share the key {key}")
        desired[key] = obj
    return desired
