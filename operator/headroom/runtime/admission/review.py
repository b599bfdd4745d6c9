"""An AdmissionReview request -> the answer (pure): the planner decides, with
what the other profiles on the same Postgres server open. Called by the
webhook server (:mod:`headroom.runtime.admission.server`) for every review.
"""

from __future__ import annotations

from typing import Any

from headroom.planning import admission, server_shares
from headroom.runtime import share_table


def review(request: dict[str, Any], table: share_table.Table | None = None) -> dict[str, Any]:
    """AdmissionReview request -> response (pure). ``table``: the Postgres
    servers and the profiles on them (the operator keeps it)."""
    uid = request.get("uid", "")
    body = request.get("object") or {}
    old = request.get("oldObject")
    problem = None
    if not (old is not None and old.get("spec") == body.get("spec")):
        # metadata-only changes (labels, finalizers) always pass
        lookup = None
        if table is not None:
            known = table

            def lookup(servers: set[str], key: str) -> list[server_shares.Peer]:
                return share_table.beside(known, servers, key)

        problem = admission.review(body, beside=lookup, old=old)
    response: dict[str, Any] = {"uid": uid, "allowed": problem is None}
    if problem is not None:
        response["status"] = {"code": 422, "reason": "Invalid", "message": problem}
    return response
