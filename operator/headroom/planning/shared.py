"""One Postgres server, several profiles: who may open how many connections.

``max_connections`` is per server, whatever database each profile uses, so
every profile whose ``spec.database`` points at the same host and port shares
it. The rule is first come, first served: profiles are ordered by creation
(then name), each is planned with what the older ones open, and a newer one
that no longer fits is refused (at admission when the webhook sees it, by the
reconcile pass when two were admitted at once). An older profile never gives
way to a newer one, so nothing oscillates.

Pure; the runtime keeps the table (:class:`headroom.reconcile.shared.SharedBudgets`),
the webhook and the pass read it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from headroom.api import v1alpha1
from headroom.planning import budget as budget_mod
from headroom.planning import plan as plan_mod

_CLUSTER_DOMAIN = ".cluster.local"


def server_key(namespace: str, database: v1alpha1.Database) -> str:
    """``host:port`` of the server, a short Service name qualified with the
    profile's namespace (``db`` in ``shop`` is ``db.shop.svc``)."""
    host = database.host.lower().rstrip(".")
    if host.endswith(_CLUSTER_DOMAIN):
        host = host[: -len(_CLUSTER_DOMAIN)]
    if "." not in host:
        host = f"{host}.{namespace}.svc"
    return f"{host}:{database.port}"


@dataclass(frozen=True)
class Peer:
    key: str  # namespace/name
    created: str  # creationTimestamp (RFC 3339); "" for one not created yet
    profile: v1alpha1.ScalingProfile
    # status.budget.plannedSince: creationTimestamp has whole seconds, so two
    # profiles created in the same second are ordered by when Headroom first
    # planned them (one already planned before one not yet), then by name
    planned_since: str = ""

    @property
    def order(self) -> tuple[int, str, int, str, str]:
        # not created yet (admission of a new profile): after every existing one
        return (
            0 if self.created else 1,
            self.created,
            0 if self.planned_since else 1,
            self.planned_since,
            self.key,
        )


def server_connections(peers: Iterable[Peer]) -> dict[str, int]:
    """What each profile of one server may open, oldest first: each is planned
    with the older ones' connections; one that does not fit opens none."""
    opened: dict[str, int] = {}
    uses: list[budget_mod.SharedUse] = []
    for peer in sorted(peers, key=lambda p: p.order):
        planned = plan_mod.plan(peer.profile, facts=plan_mod.Facts(shared=tuple(uses)))
        count = planned.primary_connections if planned.ok else 0
        opened[peer.key] = count
        if count:
            uses.append(budget_mod.SharedUse(peer.key, count))
    return opened


def older_uses(
    peers: Iterable[Peer], opened: dict[str, int], *, key: str
) -> tuple[budget_mod.SharedUse, ...]:
    """What the profiles older than ``key`` open (what ``key`` must fit beside)."""
    ordered = sorted(peers, key=lambda p: p.order)
    mine = next((p for p in ordered if p.key == key), None)
    if mine is None:
        return ()
    return tuple(
        budget_mod.SharedUse(p.key, opened[p.key])
        for p in ordered
        if p.order < mine.order and opened.get(p.key)
    )
