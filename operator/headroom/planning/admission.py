"""The admission verdict: one message naming every field and number that makes
a profile impossible, or None. Shared by the validating webhook, the reconcile
pass (for profiles that predate the webhook) and ``headroom plan``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from headroom.api import v1alpha1
from headroom.planning import planner, server_shares

# the servers a profile uses -> every other profile whose share there a
# newcomer could change (the webhook's table; none offline)
Beside = Callable[[set[str], str], Iterable[server_shares.Peer]]


def review(
    body: dict[str, Any],
    *,
    beside: Beside | None = None,
    old: dict[str, Any] | None = None,
) -> str | None:
    """Return the rejection message for ``body``, or None when it can be applied.
    ``beside(servers, profile key)``: the other profiles on the Postgres
    servers the profile uses (its primary, the replicas it lists) and on those
    linked to them; the profile is divided among them as the pass will divide
    it, and refused only when its guaranteed minimum does not fit. ``old``:
    the stored profile an update replaces (what may not change, as the CRD's
    oldSelf rules)."""
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
    if beside is not None:
        mine = server_shares.peer(profile, body=body, reviewed=True)
        others = [p for p in beside(set(mine.servers), mine.key) if p.key != mine.key]
        if others:
            grants = server_shares.shares([*others, mine])
            facts = planner.Facts(grants=grants.get(mine.key, {}))
    planned = planner.plan(profile, facts=facts)
    return None if planned.ok else planned.problem_text()
