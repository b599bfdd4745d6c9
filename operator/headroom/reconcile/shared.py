"""The table of Postgres servers and the profiles that share each, kept from
the profile cache by the runtime (every replica: the webhook needs it too).

On every change of a profile's spec the server it points at (and the one it
pointed at before) is planned again, oldest profile first
(:func:`headroom.planning.shared.server_connections`); the profiles whose share
changed are returned so the runtime queues them. The engine asks what the
older profiles open (:meth:`SharedBudgets.older`); the webhook what all the
others open (:meth:`SharedBudgets.table`).
"""

from __future__ import annotations

from typing import Any

from headroom.api import v1alpha1
from headroom.planning import budget as budget_mod
from headroom.planning import shared as shared_mod

Obj = dict[str, Any]
# server -> [(profile key, creationTimestamp, server connections)]
Table = dict[str, list[tuple[str, str, int]]]


def planned_since(body: Obj | None) -> str:
    """status.budget.plannedSince of a profile ("" before its first pass)."""
    budget = ((body or {}).get("status") or {}).get("budget") or {}
    return str(budget.get("plannedSince") or "")


class SharedBudgets:
    def __init__(self) -> None:
        self._peers: dict[str, dict[str, shared_mod.Peer]] = {}
        self._server_of: dict[str, str] = {}
        self._opened: dict[str, dict[str, int]] = {}

    def update(self, key: str, body: Obj | None) -> tuple[set[str], set[str]]:
        """Profile ``key`` is now ``body`` (None: deleted). Returns the other
        profiles to look at again and the servers whose table changed."""
        touched: set[str] = set()
        old_server = self._server_of.pop(key, None)
        if old_server is not None:
            self._peers[old_server].pop(key, None)
            touched.add(old_server)
        if body is not None and not (body.get("metadata") or {}).get("deletionTimestamp"):
            try:
                profile = v1alpha1.parse_profile(body)
            except v1alpha1.ProfileError:
                profile = None  # invalid: opens nothing
            if profile is not None:
                meta = body["metadata"]
                server = shared_mod.server_key(
                    str(meta.get("namespace", "")), profile.spec.database
                )
                self._peers.setdefault(server, {})[key] = shared_mod.Peer(
                    key=key,
                    created=str(meta.get("creationTimestamp") or ""),
                    profile=profile,
                    planned_since=planned_since(body),
                )
                self._server_of[key] = server
                touched.add(server)
        requeue: set[str] = set()
        changed: set[str] = set()
        for server in touched:
            peers = self._peers.get(server, {})
            before = self._opened.get(server, {})
            after = shared_mod.server_connections(peers.values()) if peers else {}
            if after:
                self._opened[server] = after
            else:
                self._opened.pop(server, None)
                self._peers.pop(server, None)
            if before != after:
                changed.add(server)
            if len(peers) > 1 or before:
                requeue |= set(peers) | set(before)
        requeue.discard(key)
        return requeue, changed

    def older(self, key: str) -> tuple[budget_mod.SharedUse, ...]:
        server = self._server_of.get(key)
        if server is None:
            return ()
        return shared_mod.older_uses(
            self._peers[server].values(), self._opened.get(server, {}), key=key
        )

    def table(self, servers: set[str] | None = None) -> Table:
        chosen = self._opened if servers is None else {s: self._opened.get(s, {}) for s in servers}
        return {
            server: [
                (key, self._peers.get(server, {})[key].created, count)
                for key, count in sorted(opened.items())
                if key in self._peers.get(server, {})
            ]
            for server, opened in chosen.items()
        }


def others(table: Table, server: str, key: str) -> tuple[budget_mod.SharedUse, ...]:
    """For the webhook: what every other profile on ``server`` opens."""
    return tuple(
        budget_mod.SharedUse(other, count)
        for other, _, count in table.get(server, [])
        if other != key and count
    )
