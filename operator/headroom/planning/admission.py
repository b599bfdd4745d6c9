"""The admission verdict: one message naming every field and number that makes
a profile impossible, or None. Shared by the validating webhook, the reconcile
pass (for profiles that predate the webhook) and ``headroom plan``."""

from __future__ import annotations

from typing import Any

from headroom.api import v1alpha1
from headroom.planning import plan as plan_mod


def review(body: dict[str, Any]) -> str | None:
    """Return the rejection message for ``body``, or None when it can be applied."""
    try:
        profile = v1alpha1.parse_profile(body)
    except v1alpha1.ProfileError as err:
        return str(err)
    planned = plan_mod.plan(profile)
    return None if planned.ok else planned.problem_text()
