"""Several profiles on one Postgres server: who may open how many connections.

``max_connections`` is per server, whatever database each profile uses, so
every profile that opens connections on a server shares it: the primary its
``spec.database`` points at (write pool, direct connections, read fallback),
and the read replicas it lists (its read pool, which any one replica must
carry whole, and the lag probes). Servers are keyed by
:mod:`headroom.planning.servers`; one rule serves primaries and replicas.

The rule is shares, not first come: what every profile asks of a server is
known from the profile alone (a :class:`headroom.planning.connection_budget.Demand`:
what it keeps for itself, and the bounds of its pool); :func:`divide` gives
every pool its guaranteed minimum, then the rest by weight in whole
connections per pooler pod, never past a pool's maximum (what its clients
could ask for), and leaves what nobody needs free. The result depends on the
set of profiles, never on the order they arrived in.

Only when the minimums do not fit is someone refused: the profiles that run
their current spec keep theirs first, then the older (creationTimestamp,
then name: facts stored on the object). A refused profile changes nothing
that runs, so it is counted at what its poolers hold on every server it
uses, and the others are divided beside it.

What a profile holds is what runs (:func:`running`): its pooler ConfigMap's
``max_db_connections`` x its Deployment's pods at the rollout peak, read
from the live objects, plus what it keeps for itself (direct connections,
probes, the read fallback: ``status.budget.held[].connections - pooled``).
Only where the pooler objects are not there (not cached yet, or composed
by CloudNativePG) does the status (``status.budget.held``, written by the
pass that applied them) stand in. So a pooler that runs larger than any
plan (an upgrade, one sized before shares) is counted as it is, and the
others grow only into what it does not hold.

Pure. Inputs are plain data (:class:`Peer`), so the same function serves the
runtime's table (:mod:`headroom.runtime.share_table`), admission (in its own
process) and ``headroom plan`` over several documents.

Entry point: :func:`shares` (``[peer(profile, body=...) for each profile]`` ->
every profile's :class:`headroom.planning.connection_budget.Grant` on every
server it shares); the planner takes a profile's grants as
``planner.Facts(grants=...)``. :func:`divide` is the rule on one server, for a
caller that has its own claims (a pool's bounds from measured load, say).
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from headroom.api import v1alpha1
from headroom.planning import agentfile, connection_budget, names, planner, pooler_state, servers

Rank = tuple[int, str, str]
# rounds of refusals and read-pool caps: each round refuses one more profile
# or lowers a cap, so far fewer are ever needed
_ROUNDS = 64


def server_key(namespace: str, database: v1alpha1.Database) -> str:
    """The key of a profile's primary (see :func:`headroom.planning.servers.key`)."""
    return servers.primary(namespace, database)


@dataclass(frozen=True)
class Claim:
    """One pool on one server: the input of :func:`divide`."""

    profile: str  # namespace/name
    pool: connection_budget.PoolRange
    weight: int = 1
    fixed: int = 0  # counted, never divided (direct connections, probes, fallback)
    # who keeps its minimum first when not all fit (lower first)
    rank: Rank = (0, "", "")
    # counted as it is, never refused nor resized (a refused profile's poolers)
    held: bool = False


@dataclass(frozen=True)
class Division:
    shares: dict[str, int]  # profile -> its pool's share (over every pod at peak)
    refused: tuple[str, ...]  # profiles whose minimum does not fit, in rank order
    capacity: int
    fixed: int  # what every profile there keeps for itself, the held included


def divide(capacity: int, claims: Iterable[Claim]) -> Division:
    """Divide ``capacity`` server connections among ``claims``: each pool its
    minimum, then the rest by weight, one whole connection per pooler pod at a
    time to the pool furthest below its weighted part (ties by rank), never
    past its maximum; what no pool can take stays free. When the minimums do
    not fit, the lowest-ranked pools are refused until they do (the held are
    never refused). Deterministic: the same claims in any order, the same
    result."""
    every = sorted(claims, key=lambda c: (not c.held, c.rank, c.profile))
    held = [c for c in every if c.held]
    kept = [c for c in every if not c.held]
    refused: list[Claim] = []

    def need() -> int:
        return sum(c.fixed for c in held) + sum(c.fixed + c.pool.minimum for c in kept)

    # a refused pool's poolers keep running as they are: the caller counts
    # them as held at the next division
    while kept and need() > capacity:
        refused.insert(0, kept.pop())
    shares = {c.profile: c.pool.minimum for c in kept}
    left = capacity - sum(c.fixed for c in held) - sum(c.fixed + c.pool.minimum for c in kept)
    queue = [(Fraction(c.pool.minimum + c.pool.step, c.weight), c.rank, c.profile, c) for c in kept]
    heapq.heapify(queue)
    while queue and left > 0:
        _, rank, profile, claim = heapq.heappop(queue)
        grown = shares[profile] + claim.pool.step
        if grown > claim.pool.maximum or claim.pool.step > left:
            continue  # full, or no whole connection per pod left for it
        shares[profile] = grown
        left -= claim.pool.step
        heapq.heappush(
            queue, (Fraction(grown + claim.pool.step, claim.weight), rank, profile, claim)
        )
    fixed = sum(c.fixed for c in [*held, *kept])
    return Division(
        shares=shares,
        refused=tuple(c.profile for c in refused),
        capacity=capacity,
        fixed=fixed,
    )


@dataclass(frozen=True)
class Peer:
    """A profile as the division sees it: plain data, what admission gets too."""

    key: str  # namespace/name
    rank: Rank
    weight: int
    demands: tuple[connection_budget.Demand, ...]
    # server -> what it may open there now, counted in everyone's shares:
    # its running poolers as they run (see :func:`counted`), else its status
    held: Mapping[str, int] = field(default_factory=dict)
    problem: str = ""  # its plan's own problems: applied nowhere, counted as held
    # server -> status.budget.held (what the last applied plan may open)
    recorded: Mapping[str, int] = field(default_factory=dict)
    # server -> what it keeps beside its poolers (direct connections, probes,
    # the read fallback): recorded minus pooled, else its plan's
    kept: Mapping[str, int] = field(default_factory=dict)

    @property
    def servers(self) -> tuple[str, ...]:
        return tuple(d.server for d in self.demands)


def rank(*, created: str, key: str, current: bool) -> Rank:
    """``current``: it runs the generation it has (status.budget.heldGeneration).
    One not created yet (admission of a new profile) comes after every other."""
    return (0 if current else 1, created or "~", key)


def _held_rows(body: dict[str, Any] | None) -> list[dict[str, Any]]:
    budget = ((body or {}).get("status") or {}).get("budget") or {}
    return [row for row in budget.get("held") or [] if isinstance(row, dict) and row.get("server")]


def held_of(body: dict[str, Any] | None) -> tuple[dict[str, int], int]:
    """status.budget.held of a profile body: (server -> connections, the
    generation they were planned for; 0 before its first applied plan)."""
    budget = ((body or {}).get("status") or {}).get("budget") or {}
    found = {str(row["server"]): int(row.get("connections") or 0) for row in _held_rows(body)}
    return found, int(budget.get("heldGeneration") or 0)


def _kept_of(
    body: dict[str, Any] | None, demands: Iterable[connection_budget.Demand]
) -> dict[str, int]:
    """What the profile keeps beside its poolers on each server: from its
    status rows (connections - pooled), else (a row written before rows said
    what was pooled, or no row) what its plan keeps there."""
    found = {d.server: d.fixed for d in demands}
    for row in _held_rows(body):
        if "pooled" in row:
            pooled = int(row.get("pooled") or 0)
            found[str(row["server"])] = max(int(row.get("connections") or 0) - pooled, 0)
    return found


def held_rows(
    planned: planner.Plan,
    *,
    before: dict[str, Any] | None = None,
    confirmed: bool = True,
    reported: int = 0,
    read_confirmed: bool = True,
    read_reported: int = 0,
) -> list[tuple[str, int, int]]:
    """(server, connections, pooled) of what ``planned`` may open on each
    server once applied: status.budget.held. Until every running pod of the
    write pooler has ``confirmed`` the new config, the write pool, if it
    shrank, is held on its primary at what ``before`` (the profile's stored
    body) said it held, or at what its pods report they run (``reported``,
    from :func:`reported`) where that is more (a pooler that grew past its
    plan): its pods may still run the larger size, so nobody else grows
    into it yet. The read pool is held likewise on each of its replicas
    until the read pooler's pods have confirmed (``read_confirmed``,
    ``read_reported``)."""
    pooled: dict[str, int] = {}
    for index, demand in enumerate(planned.demands):
        pool = planned.budget if index == 0 or planned.read is None else planned.read.budget
        pooled[demand.server] = pooled.get(demand.server, 0) + pool.server_connections
    kept = {server: held - pooled.get(server, 0) for server, held in planned.holds().items()}
    unconfirmed: dict[str, int] = {}  # server -> what its pods report they run
    if not confirmed and planned.demands:
        unconfirmed[planned.demands[0].server] = reported
    if not read_confirmed:
        for demand in planned.demands[1:]:
            unconfirmed[demand.server] = max(unconfirmed.get(demand.server, 0), read_reported)
    rows = {str(row["server"]): row for row in _held_rows(before) if "pooled" in row}
    for server, running_now in unconfirmed.items():
        if server not in pooled:
            continue
        if server in rows:
            pooled[server] = max(pooled[server], int(rows[server].get("pooled") or 0))
        pooled[server] = max(pooled[server], running_now)
    return [(server, kept[server] + pooled[server], pooled[server]) for server in sorted(kept)]


# -- what runs ----------------------------------------------------------------

_INI_SETTING = "max_db_connections"


def _ini_values(ini: str) -> tuple[int | None, str]:
    """(max_db_connections, ``host:port`` of the one database) of a rendered
    pgbouncer.ini; None / "" where it does not say."""
    limit: int | None = None
    target = ""
    section = ""
    for raw in ini.splitlines():
        line = raw.strip()
        if not line or line.startswith((";", "#")):
            continue
        if line.startswith("["):
            section = line.strip("[]").strip().lower()
            continue
        key, _, value = (part.strip() for part in line.partition("="))
        if section == "pgbouncer" and key == _INI_SETTING and value.isdigit():
            limit = int(value)
        elif section == "databases" and not target:
            words = dict(w.split("=", 1) for w in value.split() if "=" in w)
            if words.get("host") and words.get("port", "").isdigit():
                target = f"{words['host']}:{words['port']}"
    return limit, target


def pooler_pods(deployment: dict[str, Any]) -> int:
    """The pods of a pooler Deployment at its rollout peak: its replicas and
    the one more a rollout may run (see
    :data:`headroom.planning.connection_budget.ROLLOUT_EXTRA_PODS`), or the
    pods it has now when a rollout runs more."""
    spec = deployment.get("spec") or {}
    replicas = spec.get("replicas")
    wanted = 1 if replicas is None else int(replicas)
    now = int((deployment.get("status") or {}).get("replicas") or 0)
    return max(wanted + connection_budget.ROLLOUT_EXTRA_PODS if wanted else 0, now)


def _pool(
    config: dict[str, Any] | None, deployment: dict[str, Any] | None
) -> tuple[int, str] | None:
    """(what the pooler may open at its peak, the server its ini names) of
    one running pooler; None when it is not there to read (or says no limit)."""
    if config is None or deployment is None:
        return None
    if (deployment.get("metadata") or {}).get("deletionTimestamp"):
        return None
    limit, target = _ini_values(str((config.get("data") or {}).get("pgbouncer.ini") or ""))
    if limit is None or limit <= 0:
        return None
    return limit * pooler_pods(deployment), target


def running(
    child_names: names.ChildNames,
    children: Mapping[str, dict[str, Any]],
    *,
    read_servers: Iterable[str] = (),
) -> dict[str, int]:
    """Server -> what a profile's running poolers may open there, from its
    live children ("Kind/name" -> object): the write pooler on the server
    its pgbouncer.ini names, the read pooler on each of ``read_servers``
    (any one replica may carry all of it). A pooler not there is left out."""
    found: dict[str, int] = {}
    write = _pool(
        children.get(f"ConfigMap/{child_names.pooler_config}"),
        children.get(f"Deployment/{child_names.pooler}"),
    )
    if write is not None and write[1]:
        host, _, port = write[1].rpartition(":")
        server = servers.key(child_names.namespace, host, int(port))
        found[server] = found.get(server, 0) + write[0]
    read = _pool(
        children.get(f"ConfigMap/{child_names.read_pooler_config}"),
        children.get(f"Deployment/{child_names.read_pooler}"),
    )
    if read is not None:
        for server in read_servers:
            found[server] = found.get(server, 0) + read[0]
    return found


@dataclass(frozen=True)
class Pooler:
    """One of a profile's two poolers, as its children name it."""

    config: str  # its ConfigMap (pgbouncer.ini)
    deployment: str
    state: str  # the ConfigMap its pods' agents report into


def write_pooler(child_names: names.ChildNames) -> Pooler:
    return Pooler(child_names.pooler_config, child_names.pooler, child_names.pooler_state)


def read_pooler(child_names: names.ChildNames) -> Pooler:
    return Pooler(
        child_names.read_pooler_config, child_names.read_pooler, child_names.read_pooler_state
    )


def confirmed(
    child_names: names.ChildNames,
    children: Mapping[str, dict[str, Any]],
    *,
    read: bool = False,
) -> bool:
    """Whether every running pod of the write pooler (``read``: the read
    pooler) has reported (its state ConfigMap,
    :mod:`headroom.planning.pooler_state`) that it runs the pgbouncer.ini
    its ConfigMap holds now, with its server connections within that
    config's limit. A pod that never reports is not confirmed; a pooler that
    is not there has nothing to confirm."""
    pooler = read_pooler(child_names) if read else write_pooler(child_names)
    config = children.get(f"ConfigMap/{pooler.config}")
    deployment = children.get(f"Deployment/{pooler.deployment}")
    if config is None or deployment is None:
        return True
    ini = str((config.get("data") or {}).get("pgbouncer.ini") or "")
    state = children.get(f"ConfigMap/{pooler.state}") or {}
    reports = pooler_state.entries(state.get("data"))
    at = agentfile.content_hash(ini)
    pods = pooler_state.pods_of(deployment)
    return sum(1 for entry in reports.values() if entry.confirmed_at(at)) >= pods


def reported(
    child_names: names.ChildNames,
    children: Mapping[str, dict[str, Any]],
    *,
    read: bool = False,
) -> int:
    """What the write pooler's pods (``read``: the read pooler's) report they
    may open on its server (each replica, for the read pooler), at its
    rollout peak: the largest ``max_db_connections`` among their entries
    (:mod:`headroom.planning.pooler_state`) x its pods at peak; 0 when none
    reports (no agent yet: a release before them)."""
    pooler = read_pooler(child_names) if read else write_pooler(child_names)
    deployment = children.get(f"Deployment/{pooler.deployment}")
    state = children.get(f"ConfigMap/{pooler.state}") or {}
    limits = [e.max_db_connections for e in pooler_state.entries(state.get("data")).values()]
    if deployment is None or not limits:
        return 0
    return max(limits) * pooler_pods(deployment)


def counted(peer: Peer, pools: Mapping[str, int]) -> Peer:
    """``peer`` counted at what its poolers run (``pools``, from
    :func:`running`): on a server where they run, what it keeps there plus
    them, and never less than its status says until the running pods have
    confirmed a shrink (the status keeps the larger size until then, see
    :func:`held_rows`); elsewhere what its status says."""
    held = dict(peer.recorded)
    for server, pooled in pools.items():
        held[server] = max(peer.kept.get(server, 0) + pooled, peer.recorded.get(server, 0))
    return dataclasses.replace(peer, held=held)


def peer(
    profile: v1alpha1.ScalingProfile,
    *,
    body: dict[str, Any] | None = None,
    facts: planner.Facts | None = None,
    created: str | None = None,
    reviewed: bool = False,
) -> Peer:
    """``profile`` planned alone: what it asks of every server it uses.
    ``body``: the stored object (its creation time and what it runs, from its
    status); ``created`` stands in for the creation time of one not stored;
    ``reviewed``: a change under admission (not what it runs yet)."""
    meta = (body or {}).get("metadata") or {}
    key = f"{profile.namespace}/{profile.name}"
    held, generation = held_of(body)
    alone = planner.plan(profile, facts=facts or planner.Facts())
    current = not reviewed and bool(generation) and generation == int(meta.get("generation") or 0)
    return Peer(
        recorded=held,
        kept=_kept_of(body, alone.demands),
        key=key,
        rank=rank(
            created=created if created is not None else str(meta.get("creationTimestamp") or ""),
            key=key,
            current=current,
        ),
        weight=profile.spec.database.share.weight,
        demands=alone.demands,
        held=held,
        problem=alone.problem_text(),
    )


Grants = dict[str, dict[str, connection_budget.Grant]]  # profile -> server -> its grant


def _held_claim(p: Peer, server: str) -> Claim:
    nothing = connection_budget.PoolRange(0, 0, 1, "", "")
    return Claim(p.key, nothing, fixed=p.held.get(server, 0), rank=p.rank, held=True)


def _claim(p: Peer, demand: connection_budget.Demand, cap: int | None) -> Claim:
    pool = demand.pool
    if cap is not None and cap < pool.maximum:
        pool = dataclasses.replace(pool, maximum=max(pool.minimum, cap))
    return Claim(p.key, pool, weight=p.weight, fixed=demand.fixed, rank=p.rank)


def _contradictions(users: list[tuple[Peer, connection_budget.Demand]]) -> dict[str, str]:
    """One server has one max_connections: a profile that declares another than
    the first-ranked one's is refused, naming both."""
    first, said = users[0]
    return {
        p.key: f"{d.max_connections} for {d.server}, but {first.key} declares "
        f"{said.max_connections} for the same server ({said.max_connections_field}); "
        "one server has one max_connections: declare the same value"
        for p, d in users[1:]
        if d.max_connections != said.max_connections
    }


def _refusal(
    server: str,
    mine: Claim,
    *,
    capacity: int,
    claims: list[Claim],
    demand: connection_budget.Demand,
) -> str:
    held = [c for c in claims if c.profile != mine.profile]
    taken = sum(c.fixed + (0 if c.held else c.pool.minimum) for c in held)
    short = taken + mine.fixed + mine.pool.minimum - capacity
    rows = ", ".join(
        f"{c.profile} {c.fixed} (what its poolers run now: its spec is refused)"
        if c.held
        else f"{c.profile} {c.pool.minimum + c.fixed} ({c.pool.why}"
        + (f"; +{c.fixed} it keeps" if c.fixed else "")
        + ")"
        for c in held
        if c.fixed or c.pool.minimum
    )
    return (
        f"the guaranteed minimums on {server} do not fit: {capacity} connections there "
        f"(max_connections {demand.max_connections} - {demand.superuser_reserved} "
        f"superuser-reserved) hold {rows or 'nothing else'}, and this profile needs "
        f"{mine.pool.minimum + mine.fixed} ({mine.pool.why}"
        + (f"; +{demand.fixed}: {demand.fixed_text}" if demand.fixed else "")
        + f"): {short} short. To fit: {mine.pool.fix or 'lower ' + mine.pool.field}"
        + ("; or lower what this profile keeps" if demand.fixed else "")
        + f" ({short} fewer in all); or free {short} among the others (their sessions, "
        "pins, kept connections or spec.database.share.minimum)"
    )


def shares(peers: Iterable[Peer]) -> Grants:
    """Every profile's share of every server it uses with other profiles.

    When the minimums do not fit, the lowest-ranked are refused and counted
    at what they run; that can refuse a higher-ranked one in turn (two
    changes admitted at once, each beside the other's running plan). Then a
    refused profile whose change fits beside what the others run is
    accepted, and the ones it displaces are ranked after it: of two changes
    that do not fit together, the one that fits beside the other's running
    poolers goes ahead, as admission accepted it, instead of both being
    refused. Deterministic: it depends on the stored ranks, not on order."""
    everyone = {p.key: p for p in peers}
    by_server: dict[str, list[tuple[Peer, connection_budget.Demand]]] = {}
    for p in sorted(everyone.values(), key=lambda p: p.rank):
        for demand in p.demands:
            by_server.setdefault(demand.server, []).append((p, demand))
    shared = {s: users for s, users in by_server.items() if len(users) > 1}
    given: dict[str, tuple[str, str]] = {}  # profile -> (field, why)
    for p in everyone.values():
        if p.problem:
            given[p.key] = ("", p.problem)
    for users in shared.values():
        for key, why in _contradictions(users).items():
            declared = next(d for p, d in users if p.key == key)
            given.setdefault(key, (declared.max_connections_field, why))
    demoted: set[str] = set()
    divisions, refused = _settle(everyone, shared, given, demoted)
    for _ in range(len(everyone)):
        divided = [k for k in refused if k not in given]
        for key in sorted(divided, key=lambda k: everyone[k].rank):
            others = {k: refused[k] for k in divided if k != key}
            start = {**given, **others}
            _, tried = _settle(everyone, shared, start, demoted)
            if tried.keys() == start.keys():  # it fits beside what the others run
                demoted |= others.keys()
                break
        else:
            break
        divisions, refused = _settle(everyone, shared, given, demoted)
    return _grants(everyone, shared, divisions, refused)


def _settle(
    everyone: dict[str, Peer],
    shared: dict[str, list[tuple[Peer, connection_budget.Demand]]],
    start: dict[str, tuple[str, str]],
    demoted: set[str],
) -> tuple[dict[str, tuple[Division, list[Claim]]], dict[str, tuple[str, str]]]:
    """The divisions of every shared server and who is refused (profile ->
    (field, why)), from the refusals in ``start``: rounds until no one more
    is refused and no read pool's cap is lowered. ``demoted``: ranked after
    every other profile (see :func:`shares`)."""
    refused = dict(start)

    def ranked(p: Peer) -> Peer:
        return dataclasses.replace(p, rank=(2, *p.rank[1:])) if p.key in demoted else p

    caps: dict[tuple[str, str], int] = {}  # (profile, server): its read pool's least share
    divisions: dict[str, tuple[Division, list[Claim]]] = {}
    for _ in range(_ROUNDS):
        divisions = {}
        newly = False
        for server, users in sorted(shared.items()):
            claims = [
                _held_claim(ranked(p), server)
                if p.key in refused
                else _claim(ranked(p), d, caps.get((p.key, server)))
                for p, d in users
            ]
            capacity = users[0][1].max_connections - max(d.superuser_reserved for _, d in users)
            division = divide(capacity, claims)
            divisions[server] = (division, claims)
            for key in division.refused:
                claim = next(c for c in claims if c.profile == key)
                demand = next(d for p, d in users if p.key == key)
                text = _refusal(server, claim, capacity=capacity, claims=claims, demand=demand)
                refused[key] = (claim.pool.field, text)
                newly = True
        if newly:
            continue
        # a read pool must fit the replica that gives it the least: what it
        # cannot use elsewhere goes back to the others there
        tighter = False
        for p in everyone.values():
            read = [
                d.server
                for d in p.demands[1:]
                if d.server in divisions and p.key in divisions[d.server][0].shares
            ]
            if not read:
                continue
            least = min(divisions[server][0].shares[p.key] for server in read)
            for server in read:
                if divisions[server][0].shares[p.key] > least:
                    caps[(p.key, server)] = least
                    tighter = True
        if not tighter:
            break
    return divisions, refused


def _grants(
    everyone: dict[str, Peer],
    shared: dict[str, list[tuple[Peer, connection_budget.Demand]]],
    divisions: dict[str, tuple[Division, list[Claim]]],
    refused: dict[str, tuple[str, str]],
) -> Grants:
    found: Grants = {key: {} for key in everyone}
    for server, users in shared.items():
        division, claims = divisions[server]
        holds = {
            c.profile: c.fixed + (0 if c.held else division.shares.get(c.profile, 0))
            for c in claims
        }
        weights = ", ".join(
            f"{p.key} {division.shares[p.key]} (weight {p.weight})"
            for p, _ in users
            if p.key in division.shares
        )
        mine = {c.profile: c for c in claims}
        for p, _ in users:
            if p.problem:
                continue  # planned alone: its own problems are what it is told
            connections, wait = _now(p, mine[p.key], server=server, users=users, division=division)
            others = tuple(
                connection_budget.SharedUse(server, q.key, holds[q.key])
                for q, _ in users
                if q.key != p.key and holds[q.key]
            )
            field_, why = refused.get(p.key, ("", ""))
            found[p.key][server] = connection_budget.Grant(
                server=server,
                connections=connections,
                text=f"its share of {server}: {division.capacity} there, "
                f"{division.fixed} kept by the profiles for direct use, probes and fallbacks, "
                f"the pools by weight: {weights}",
                others=others,
                refusal=why if field_ else "",
                refusal_field=field_,
                wait=wait,
                others_now=sum(q.held.get(server, 0) for q, _ in users if q.key != p.key),
            )
    return found


def _now(
    p: Peer,
    claim: Claim,
    *,
    server: str,
    users: list[tuple[Peer, connection_budget.Demand]],
    division: Division,
) -> tuple[int, str]:
    """What ``p``'s pool may hold now, and why it must wait ("": it need not).
    A pool shrinks to its share at once; it grows only into what the others'
    poolers do not hold now (their status.budget.held, written once their
    shrink is applied), so the server's sum never passes its capacity while
    a rebalance moves connections from one profile to another. Below its
    minimum it waits: the others are shrinking to make room."""
    share = division.shares.get(p.key, 0)
    if claim.held:
        return share, ""
    others = {q.key: q.held.get(server, 0) for q, _ in users if q.key != p.key}
    room = division.capacity - sum(others.values()) - claim.fixed
    running = max(p.held.get(server, 0) - claim.fixed, 0)
    if share <= running:
        return share, ""
    step = claim.pool.step
    allowed = min(share, max(running, room // step * step))
    if allowed >= claim.pool.minimum:
        return allowed, ""
    holders = ", ".join(f"{key} {held}" for key, held in sorted(others.items()) if held)
    return share, (
        f"waiting for room on {server}: the others' poolers hold {holders} "
        f"until they shrink to their shares, which leaves {max(room, 0)} for this pool "
        f"and its minimum is {claim.pool.minimum} ({claim.pool.why}); it grows as they shrink"
    )


def overruns(planned: planner.Plan, pools: Mapping[str, int]) -> list[str]:
    """What ``planned``, applied, does on each server that its running
    poolers (``pools``, from :func:`running`) and the others' hold more of
    than it has (an upgrade, a pooler sized before the shares): its poolers
    shrink to its share, and the others' passes do likewise, so the server
    comes back inside its budget. Empty where it already is inside."""
    found = []
    holds = planned.holds()
    for server, pooled_before in sorted(pools.items()):
        demand = next((d for d in planned.demands if d.server == server), None)
        if demand is None or server not in holds:
            continue
        capacity = demand.max_connections - demand.superuser_reserved
        grant = planned.facts.grants.get(server)
        others = grant.others_now if grant is not None else 0
        pooled_after = holds[server] - demand.fixed
        now = demand.fixed + pooled_before + others
        if now <= capacity or pooled_after >= pooled_before:
            continue
        found.append(
            f"{server} was over its budget: {now} server connections at the rollout peak "
            f"(this profile's poolers {pooled_before}, what it keeps {demand.fixed}, the "
            f"other profiles {others}) against {capacity} (max_connections "
            f"{demand.max_connections} - {demand.superuser_reserved} superuser-reserved); "
            f"its poolers go from {pooled_before} to {pooled_after}, its share, and the "
            "others' to theirs"
        )
    return found


def over_budget(planned: planner.Plan, held: Iterable[tuple[str, int, int]]) -> list[str]:
    """What ``planned``'s profile is told while a server it uses is over its
    budget and its poolers are the ones brought down: ``held`` (its
    :func:`held_rows`: what it holds there until its pods confirm the smaller
    size) and what the others hold there (its grant's ``others_now``) pass
    the server's budget, and it holds more than its plan. Empty once the
    pods have confirmed (then it holds its plan) or the server is inside."""
    found = []
    holds = planned.holds()
    for server, connections, _ in held:
        demand = next((d for d in planned.demands if d.server == server), None)
        if demand is None or connections <= holds.get(server, 0):
            continue
        capacity = demand.max_connections - demand.superuser_reserved
        grant = planned.facts.grants.get(server)
        others = grant.others_now if grant is not None else 0
        if connections + others <= capacity:
            continue
        found.append(
            f"{server} is over its budget: {connections + others} server connections held "
            f"(this profile {connections}, the other profiles {others}) against {capacity} "
            f"(max_connections {demand.max_connections} - {demand.superuser_reserved} "
            f"superuser-reserved). Bringing it inside online: this profile's poolers go to "
            f"{holds[server]} with what it keeps (its share) by RELOAD, the others' to "
            "theirs; held at the larger size until every pooler pod's agent confirms the "
            "new config"
        )
    return found


def linked(peers: Iterable[Peer], start: Iterable[str]) -> set[str]:
    """The servers linked to ``start`` through the peers that use them (a
    share on one depends on what a peer gets on the others)."""
    by_server: dict[str, list[Peer]] = {}
    for p in peers:
        for server in p.servers:
            by_server.setdefault(server, []).append(p)
    found: set[str] = set()
    todo = list(start)
    while todo:
        server = todo.pop()
        if server in found:
            continue
        found.add(server)
        for p in by_server.get(server, []):
            todo += [s for s in p.servers if s not in found]
    return found
