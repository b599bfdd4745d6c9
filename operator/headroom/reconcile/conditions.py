"""Pure condition bookkeeping (metav1.Condition semantics).

``merge`` keeps ``lastTransitionTime`` when a condition's status did not change,
so a status rewrite on every pass does not look like a flapping component.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from headroom.api import status as status_models

READY = "Ready"
POOLER_READY = "PoolerReady"
CONNECTION_BUDGET = "ConnectionBudget"


@dataclass(frozen=True)
class Cond:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""


def merge(
    previous: list[dict[str, Any]], current: list[Cond], *, now: str, generation: int
) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in previous or []}
    merged = []
    for cond in current:
        old = before.get(cond.type)
        keep = old is not None and old.get("status") == cond.status
        since = old.get("lastTransitionTime") if keep and old is not None else None
        merged.append(
            {
                "type": cond.type,
                "status": cond.status,
                "reason": cond.reason,
                "message": _bounded(cond.message),
                "observedGeneration": generation,
                "lastTransitionTime": since or now,
            }
        )
    return merged


def _bounded(message: str) -> str:
    """The CRD caps a message as metav1.Condition does; a longer one (every
    refused child, say) is cut rather than have the status write refused."""
    limit = status_models.MESSAGE_MAX
    if len(message) <= limit:
        return message
    tail = f"... ({len(message) - limit} more characters)"
    return message[: limit - len(tail)] + tail


def ready(components: list[Cond], *, informational: frozenset[str] = frozenset()) -> Cond:
    """Top-level Ready: True only when every component condition is True
    (``informational`` ones, such as an optional engine being absent, excepted)."""
    failing = [c for c in components if c.status != "True" and c.type not in informational]
    if not failing:
        return Cond(READY, "True", "AllComponentsReady", "every component is ready")
    first = failing[0]
    return Cond(READY, "False", first.reason, f"{first.type}: {first.message}")


# Reasons that mean "on its way", not "something is wrong": not worth an Event.
PROGRESSING = frozenset(
    {"NotCreated", "RollingOut", "PodsNotReady", "NotApplied", "NotReportedYet"}
)


def notable(previous: list[dict[str, Any]], current: list[Cond]) -> list[Cond]:
    """Transitions worth an Event: every change of the top-level Ready, and a
    component turning False or Unknown for a reason other than progress
    (recoveries show in Ready). Rollouts then record a handful of Events per
    profile, not one per condition flip."""
    return [
        c
        for c in transitions(previous, current)
        if c.type == READY or (c.status != "True" and c.reason not in PROGRESSING)
    ]


def transitions(previous: list[dict[str, Any]], current: list[Cond]) -> list[Cond]:
    """Conditions whose status or reason differs from ``previous`` (new ones included)."""
    before = {c.get("type"): c for c in previous or []}
    return [
        c
        for c in current
        if (before.get(c.type) or {}).get("status") != c.status
        or (before.get(c.type) or {}).get("reason") != c.reason
    ]
