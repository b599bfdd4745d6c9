"""Several profiles on one Postgres server: who may open how many connections.

``max_connections`` is per server, whatever database each profile uses, so
every profile that opens connections on a server shares it: the primary its
``spec.database`` points at (write pool and read fallback), and the read
replicas it lists (its read pool, which any one replica must carry whole, and
the lag probes). Servers are keyed by :mod:`headroom.planning.servers`; one
rule serves primaries and replicas alike.

The rule is first come, first served: profiles are ordered by creation (then
name), each is planned with what the older ones open on every server it uses,
and a newer one that no longer fits is refused (at admission when the webhook
sees it, by the reconcile pass when two were admitted at once). An older
profile never gives way to a newer one, so nothing oscillates. A refused
profile opens nothing anywhere, so profiles linked through any shared server
are planned together.

Pure; the runtime keeps the table (:class:`headroom.runtime.server_shares.SharedBudgets`),
admission, the pass and ``headroom plan`` read it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from headroom.api import v1alpha1
from headroom.planning import connection_budget, planner, servers


def planned_since(body: dict[str, Any] | None) -> str:
    """status.budget.plannedSince of a profile body ("" before its first pass)."""
    budget = ((body or {}).get("status") or {}).get("budget") or {}
    return str(budget.get("plannedSince") or "")


def server_key(namespace: str, database: v1alpha1.Database) -> str:
    """The key of a profile's primary (see :func:`headroom.planning.servers.key`)."""
    return servers.primary(namespace, database)


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

    @property
    def servers(self) -> tuple[str, ...]:
        return servers.of(self.profile)


Opened = dict[str, dict[str, int]]  # profile key -> server key -> connections


def shares(peers: Iterable[Peer], *, facts: planner.Facts | None = None) -> Opened:
    """What each profile may open on each server, oldest first: each is planned
    with what the older ones open on its servers; one that does not fit opens
    nothing. ``facts``: the cluster's (the CLI plans without one)."""
    base = facts or planner.Facts()
    opened: Opened = {}
    uses: list[connection_budget.SharedUse] = []
    for peer in sorted(peers, key=lambda p: p.order):
        mine = set(peer.servers)
        beside = tuple(use for use in uses if use.server in mine)
        planned = planner.plan(peer.profile, facts=dataclasses.replace(base, shared=beside))
        counts = {s: n for s, n in planned.opened().items() if n} if planned.ok else {}
        opened[peer.key] = counts
        uses += [connection_budget.SharedUse(s, peer.key, n) for s, n in sorted(counts.items())]
    return opened


def older_uses(
    peers: Iterable[Peer], opened: Opened, *, key: str
) -> tuple[connection_budget.SharedUse, ...]:
    """What the profiles older than ``key`` open on the servers ``key`` uses
    (what ``key`` must fit beside)."""
    ordered = sorted(peers, key=lambda p: p.order)
    mine = next((p for p in ordered if p.key == key), None)
    if mine is None:
        return ()
    wanted = set(mine.servers)
    return tuple(
        connection_budget.SharedUse(server, p.key, count)
        for p in ordered
        if p.order < mine.order
        for server, count in sorted(opened.get(p.key, {}).items())
        if server in wanted and count
    )


def linked(peers: Iterable[Peer], start: Iterable[str]) -> set[str]:
    """The servers linked to ``start`` through the peers that use them (a
    refused profile frees every server it uses, so these are planned together)."""
    by_server: dict[str, list[Peer]] = {}
    for peer in peers:
        for server in peer.servers:
            by_server.setdefault(server, []).append(peer)
    found: set[str] = set()
    todo = list(start)
    while todo:
        server = todo.pop()
        if server in found:
            continue
        found.add(server)
        for peer in by_server.get(server, []):
            todo += [s for s in peer.servers if s not in found]
    return found
