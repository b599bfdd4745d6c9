"""The admission verdict: one message naming every field and number that makes
a profile impossible, or None. Shared by the validating webhook, the reconcile
pass (for profiles that predate the webhook) and ``headroom plan``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headroom.api import v1alpha1
from headroom.planning import connection_budget, planner, servers


def review(
    body: dict[str, Any],
    *,
    shared: Callable[[str, str], tuple[connection_budget.SharedUse, ...]] | None = None,
    old: dict[str, Any] | None = None,
) -> str | None:
    """Return the rejection message for ``body``, or None when it can be applied.
    ``shared(server, profile key)``: what the other profiles on that Postgres
    server open (the webhook's table; none offline), asked for every server
    the profile uses (its primary, the replicas it shares). ``old``: the stored
    profile an update replaces (what may not change, as the CRD's oldSelf rules)."""
    try:
        profile = v1alpha1.parse_profile(body)
    except v1alpha1.ProfileError as err:
        return str(err)
    if old is not None:
        try:
            before = v1alpha1.parse_profile(old)
        except v1alpha1.ProfileError:
            before = None  # an invalid stored profile: nothing to keep
        changed = v1alpha1.profile_transition_problems(profile, before) if before else []
        if changed:
            return "; ".join(changed)
    facts = planner.Facts()
    if shared is not None:
        meta = body.get("metadata") or {}
        key = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        uses = tuple(use for server in servers.of(profile) for use in shared(server, key))
        facts = planner.Facts(shared=uses)
    planned = planner.plan(profile, facts=facts)
    return None if planned.ok else planned.problem_text()
