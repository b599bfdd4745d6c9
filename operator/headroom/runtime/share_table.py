"""The table of Postgres servers and the profiles that share each, kept from
the profile cache by the runtime (every replica: admission needs it too).

A server is a primary or a read replica (:mod:`headroom.planning.servers`);
a profile may use several. On every change of a profile (its spec, or what
its status says its poolers hold) it is planned alone once
(:func:`headroom.planning.server_shares.peer`); on every change of its
pooler objects (:meth:`SharedBudgets.refresh`) it is counted again at what
they run (:func:`headroom.planning.server_shares.running`, read from the
children the runtime's cache holds). Then the servers it uses (and used
before), with every server linked to them through another profile, are
divided again (:func:`headroom.planning.server_shares.shares`); the profiles
whose share changed are returned so the runtime queues them. The pass asks
for its grants (:meth:`SharedBudgets.grants`); admission gets the peers of
every server (:meth:`SharedBudgets.table`) and divides with the reviewed
profile among them (:func:`beside`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from headroom.api import v1alpha1
from headroom.planning import connection_budget, names, server_shares

Obj = dict[str, Any]
# server -> the profiles that use it, as the division sees them
Table = dict[str, list[server_shares.Peer]]
# a profile's uid -> its children as the cache has them ("Kind/name" -> object)
Children = Callable[[str], Mapping[str, Obj]]


def _no_children(uid: str) -> Mapping[str, Obj]:
    return {}


class SharedBudgets:
    def __init__(self, children: Children = _no_children) -> None:
        self.children = children  # set by the runtime once its caches exist
        self._peers: dict[str, server_shares.Peer] = {}
        # a profile planned alone (before it is counted at what runs), and its uid
        self._alone: dict[str, tuple[server_shares.Peer, str]] = {}
        self._by_server: dict[str, set[str]] = {}  # server -> profile keys using it
        self._grants: server_shares.Grants = {}

    def _add(self, peer: server_shares.Peer) -> None:
        self._peers[peer.key] = peer
        for server in peer.servers:
            self._by_server.setdefault(server, set()).add(peer.key)

    def _remove(self, key: str) -> None:
        peer = self._peers.pop(key, None)
        self._alone.pop(key, None)
        self._grants.pop(key, None)
        if peer is None:
            return
        for server in peer.servers:
            users = self._by_server.get(server, set())
            users.discard(key)
            if not users:
                self._by_server.pop(server, None)

    def _rows(self, servers: set[str]) -> Table:
        return {
            server: sorted(
                (self._peers[k] for k in self._by_server.get(server, set())),
                key=lambda p: p.rank,
            )
            for server in servers
        }

    def update(self, key: str, body: Obj | None) -> tuple[set[str], set[str]]:
        """Profile ``key`` is now ``body`` (None: deleted). Returns the other
        profiles whose share changed and the servers whose table changed."""
        peer = None
        if body is not None and not (body.get("metadata") or {}).get("deletionTimestamp"):
            try:
                profile = v1alpha1.parse_profile(body)
            except v1alpha1.ProfileError:
                profile = None  # invalid: opens nothing
            if profile is not None:
                alone = server_shares.peer(profile, body=body)
                uid = str(body["metadata"].get("uid") or "")
                self._alone[key] = (alone, uid)
                peer = self._counted(key, alone, uid)
        if peer is None:
            self._alone.pop(key, None)
        return self._set(key, peer)

    def refresh(self, key: str) -> tuple[set[str], set[str]]:
        """The pooler objects of profile ``key`` changed: count it again at
        what they run. Returns what :meth:`update` returns."""
        found = self._alone.get(key)
        if found is None:
            return set(), set()
        return self._set(key, self._counted(key, *found))

    def _counted(self, key: str, alone: server_shares.Peer, uid: str) -> server_shares.Peer:
        namespace, name = key.split("/", 1)
        pools = server_shares.running(
            names.ChildNames(name, namespace),
            self.children(uid) if uid else {},
            read_servers=alone.servers[1:],
        )
        return server_shares.counted(alone, pools)

    def _set(self, key: str, peer: server_shares.Peer | None) -> tuple[set[str], set[str]]:
        old = self._peers.get(key)
        if old == peer:
            return set(), set()
        everyone = [*self._peers.values(), *([peer] if peer else [])]
        start = {*(old.servers if old else ()), *(peer.servers if peer else ())}
        servers = server_shares.linked(everyone, start)
        rows_before = self._rows(servers)
        alone = self._alone.get(key)
        self._remove(key)
        if peer is not None:
            self._add(peer)
            if alone is not None:
                self._alone[key] = alone
        members = {k for server in servers for k in self._by_server.get(server, set())}
        before = {k: self._grants.get(k) for k in members}
        self._grants.update(server_shares.shares(self._peers[k] for k in members))
        rows_after = self._rows(servers)
        changed = {s for s in servers if rows_before.get(s) != rows_after.get(s)}
        moved = {k for k in members if self._grants.get(k) != before.get(k)}
        return moved - {key}, changed

    def grants(self, key: str) -> dict[str, connection_budget.Grant]:
        """The shares of ``key`` on the servers it uses with other profiles."""
        return dict(self._grants.get(key) or {})

    def table(self, servers: set[str] | None = None) -> Table:
        chosen = set(self._by_server) if servers is None else servers
        return {server: rows for server, rows in self._rows(chosen).items() if rows or servers}


def beside(table: Table, servers: set[str], key: str) -> list[server_shares.Peer]:
    """For the webhook: every other profile on ``servers`` and on the servers
    linked to them through those profiles (what a share there depends on)."""
    everyone = {peer.key: peer for rows in table.values() for peer in rows if peer.key != key}
    reached = server_shares.linked(everyone.values(), servers)
    return [peer for peer in everyone.values() if reached.intersection(peer.servers)]
