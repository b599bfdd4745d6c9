"""The table of Postgres servers and the profiles that share each, kept from
the profile cache by the runtime (every replica: admission needs it too).

A server is a primary or a read replica (:mod:`headroom.planning.servers`);
a profile may use several. On every change of a profile's spec the servers
it uses (and used before), with every server linked to them through another
profile, are planned again, oldest profile first
(:func:`headroom.planning.server_shares.shares`); the profiles whose share changed
are returned so the runtime queues them. The pass asks what the older
profiles open on its servers (:meth:`SharedBudgets.older`); admission what
all the others open (:meth:`SharedBudgets.table`).
"""

from __future__ import annotations

from typing import Any

from headroom.api import v1alpha1
from headroom.planning import connection_budget, server_shares

Obj = dict[str, Any]
# server -> [(profile key, creationTimestamp, server connections)]
Table = dict[str, list[tuple[str, str, int]]]


class SharedBudgets:
    def __init__(self) -> None:
        self._peers: dict[str, server_shares.Peer] = {}
        self._by_server: dict[str, set[str]] = {}  # server -> profile keys using it
        self._opened: server_shares.Opened = {}

    def _add(self, peer: server_shares.Peer) -> None:
        self._peers[peer.key] = peer
        for server in peer.servers:
            self._by_server.setdefault(server, set()).add(peer.key)

    def _remove(self, key: str) -> set[str]:
        peer = self._peers.pop(key, None)
        self._opened.pop(key, None)
        if peer is None:
            return set()
        for server in peer.servers:
            users = self._by_server.get(server, set())
            users.discard(key)
            if not users:
                self._by_server.pop(server, None)
        return set(peer.servers)

    def _rows(self, servers: set[str]) -> Table:
        return {
            server: sorted(
                (key, self._peers[key].created, self._opened.get(key, {}).get(server, 0))
                for key in self._by_server.get(server, set())
                if self._opened.get(key, {}).get(server)
            )
            for server in servers
        }

    def update(self, key: str, body: Obj | None) -> tuple[set[str], set[str]]:
        """Profile ``key`` is now ``body`` (None: deleted). Returns the other
        profiles to look at again and the servers whose table changed."""
        peer = None
        if body is not None and not (body.get("metadata") or {}).get("deletionTimestamp"):
            try:
                profile = v1alpha1.parse_profile(body)
            except v1alpha1.ProfileError:
                profile = None  # invalid: opens nothing
            if profile is not None:
                peer = server_shares.Peer(
                    key=key,
                    created=str(body["metadata"].get("creationTimestamp") or ""),
                    profile=profile,
                    planned_since=server_shares.planned_since(body),
                )
        old = self._peers.get(key)
        everyone = [*self._peers.values(), *([peer] if peer else [])]
        start = {*(old.servers if old else ()), *(peer.servers if peer else ())}
        servers = server_shares.linked(everyone, start)
        rows_before = self._rows(servers)
        self._remove(key)
        if peer is not None:
            self._add(peer)
        members = {k for server in servers for k in self._by_server.get(server, set())}
        self._opened.update(server_shares.shares(self._peers[k] for k in members))
        rows_after = self._rows(servers)
        changed = {s for s in servers if rows_before.get(s) != rows_after.get(s)}
        # every other profile linked to what changed may get another share
        return members - {key}, changed

    def older(self, key: str) -> tuple[connection_budget.SharedUse, ...]:
        peer = self._peers.get(key)
        if peer is None:
            return ()
        near = {k for server in peer.servers for k in self._by_server.get(server, set())}
        return server_shares.older_uses((self._peers[k] for k in near), self._opened, key=key)

    def table(self, servers: set[str] | None = None) -> Table:
        chosen = set(self._by_server) if servers is None else servers
        return {server: rows for server, rows in self._rows(chosen).items() if rows or servers}


def others(table: Table, server: str, key: str) -> tuple[connection_budget.SharedUse, ...]:
    """For the webhook: what every other profile on ``server`` opens."""
    return tuple(
        connection_budget.SharedUse(server, other, count)
        for other, _, count in table.get(server, [])
        if other != key and count
    )
