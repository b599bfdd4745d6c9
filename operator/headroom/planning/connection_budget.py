"""The connection budget: how many Postgres connections every piece may open.

This is the seeds' first wall: every app pod opens its own pool, autoscaling
multiplies them, and ``max_connections`` runs out (10 instances x 10 = 100
against a ~100 limit). The rules, in order:

1. ``available = max_connections - superuser_reserved - other reserved``; on a
   server other profiles use too (its ``max_connections`` is server-wide,
   whatever database each profile uses), ``available`` is this pool's share
   of it (:mod:`headroom.planning.server_shares`), which lies between the
   bounds :func:`pool_range` gives.
2. The server side must fit: every pooler pod that can hold connections at
   once (``instances`` + 1 during a rolling update, see ROLLOUT_EXTRA_PODS)
   opens at most ``max_db_connections``, and their sum is at most
   ``available``.
3. The client side is sized to the demand: ``max_client_conn`` takes every
   app pod at its ceiling times its client pool (plus workers that use the
   database, and a few admin/stats slots).
4. In session mode a client holds a server connection for its whole life, so
   the client demand itself must fit the server side.
5. Values the user pinned in ``spec.pooler.parameters`` are honoured, and are
   errors when they break rules 2-4.
6. With a declared load (``spec.load``, transaction mode), each pooler pod's pool
   is the fewest server connections that serve its share of the peak with the
   stated chance of waiting (planning.load_sizing), plus the workers' pools at
   their ceiling, instead of all the room there is; a load the room cannot serve
   (or a pinned pool that cannot) is an error naming the load and the shortfall.

Pure: called by the planner, which the webhook, the reconcile pass and the CLI
share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

from headroom.planning import load_sizing, queueing

# Client slots on each pooler pod kept for the exporter and an admin console.
ADMIN_CLIENT_SLOTS = 5
# A rolling update never has more than one pooler pod beyond ``instances``
# holding server connections: a new pod starts while at most one old pod still
# drains (a PgBouncer keeps its server connections until its clients leave or
# its grace period ends). The Deployment's strategy makes that true: one pod at
# a time (a surge pod with one instance, else maxUnavailable 1) and
# minReadySeconds longer than the grace period, so the next old pod is only
# stopped once the previous one has exited.
ROLLOUT_EXTRA_PODS = 1
POOLER_GRACE_SECONDS = 30
# Slack for the kubelet's kill and the server noticing the closed sockets.
POOLER_MIN_READY_SECONDS = POOLER_GRACE_SECONDS + 5


# What the primary's reserved connections are kept for (messages).
DIRECT_LABEL = "kept for direct connections"


@dataclass(frozen=True)
class ClientGroup:
    """Something that opens database connections through the pooler."""

    label: str  # e.g. "app" or "worker emails"
    field: str  # the spec field that sets its ceiling, for messages
    max_pods: int
    connections_per_pod: int
    pool_field: str = ""  # the spec field that sets connections_per_pod

    @property
    def connections(self) -> int:
        return self.max_pods * self.connections_per_pod


@dataclass(frozen=True)
class SharedUse:
    """What another profile's poolers may open on a Postgres server it shares."""

    server: str  # planning.servers.key of the server
    profile: str  # namespace/name
    server_connections: int


@dataclass(frozen=True)
class PoolRange:
    """What a pool may be given on its server, over every pooler pod at peak:
    at least ``minimum`` (guaranteed: a profile is refused when the minimums
    on a server do not fit), at most ``maximum`` (what its clients could ask
    for, or a declared cap), in whole connections per pod (``step`` = pods)."""

    minimum: int
    maximum: int
    step: int
    why: str  # how the minimum comes about, for other profiles' messages
    field: str  # the field that sets the minimum: what to lower to make room
    fix: str = ""  # how to lower it


@dataclass(frozen=True)
class Grant:
    """A pool's share of one server, divided among every profile there
    (:func:`headroom.planning.server_shares.divide`)."""

    server: str  # planning.servers key
    connections: int  # the pool's share, over every pooler pod at peak
    text: str  # how it came about, for messages
    others: tuple[SharedUse, ...] = ()  # what the other profiles there hold
    refusal: str = ""  # why the guaranteed minimum does not fit ("": granted)
    refusal_field: str = ""
    # why the pool may not reach even its minimum yet: others still hold more
    # than their shares until their poolers shrink ("": it may apply now)
    wait: str = ""
    # what the other profiles' running poolers and kept connections hold
    # there now (their shares once they have shrunk or grown to them)
    others_now: int = 0


@dataclass(frozen=True)
class Demand:
    """What one profile asks of one server, known from the profile alone: the
    input of the division among every profile on it."""

    server: str
    max_connections: int
    superuser_reserved: int
    max_connections_field: str
    # counted, never divided: direct connections, lag probes, the read fallback
    fixed: int
    fixed_text: str
    pool: PoolRange


@dataclass(frozen=True)
class BudgetInput:
    max_connections: int
    superuser_reserved: int
    other_reserved: int
    pooler_instances: int
    session_mode: bool
    clients: tuple[ClientGroup, ...]
    pinned: dict[str, int]  # sizing keys pinned in spec.pooler.parameters
    shared: tuple[SharedUse, ...] = ()
    # the pooler section the messages name, and the server the budget is on
    pooler_field: str = "spec.pooler"
    server: str = "the primary"
    reserved_label: str = DIRECT_LABEL
    # server connections the read pool may open here when every replica is out
    read_fallback: int = 0
    profile: str = ""  # namespace/name of the profile planned, for messages
    # this pool's share of the server (server_shares), over every pod at peak:
    # when set, it is what the pool has, and ``shared`` is what the others hold
    share: int | None = None
    share_text: str = ""  # how the share came about, for messages
    # spec.database.share's bounds (total server connections), and its path
    declared_minimum: int | None = None
    declared_maximum: int | None = None
    share_field: str = ""
    # spec.load, and the client connections whose load it does not declare (the
    # workers' pools at their ceiling), which keep their whole share
    load: load_sizing.Load | None = None
    undeclared_load_connections: int = 0

    @property
    def shared_connections(self) -> int:
        return sum(s.server_connections for s in self.shared)


@dataclass(frozen=True)
class ConnectionBudget:
    max_connections: int
    reserved: int
    available: int
    client_demand: int
    pooler_pods_at_peak: int
    default_pool_size: int
    reserve_pool_size: int
    max_db_connections: int
    max_client_conn: int
    server_connections: int
    margin: int
    clients: tuple[ClientGroup, ...]
    shared: tuple[SharedUse, ...] = ()
    read_fallback: int = 0
    # each pooler pod's server pool against spec.load (None: no load declared, or
    # session mode, where the app's pools are the server connections)
    load_pool: load_sizing.PoolCheck | None = None
    undeclared_per_pod: int = 0  # of default_pool_size, kept for the workers' pools

    @property
    def summary(self) -> str:
        return f"{self.server_connections}/{self.available}"


@dataclass(frozen=True)
class Problem:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _reserve_for(per_pod: int, *, session: bool, pinned: dict[str, int]) -> int:
    if "reserve_pool_size" in pinned:
        return pinned["reserve_pool_size"]
    return 0 if session else min(5, per_pod // 10)


def per_pod_for(pool: int, *, session: bool, pinned: dict[str, int]) -> int:
    """The fewest server connections per pod whose plan has a pool of
    ``pool`` (the reserve on top grows with the connections per pod)."""
    per_pod = pool
    while per_pod - _reserve_for(per_pod, session=session, pinned=pinned) < pool:
        per_pod += 1
    return per_pod


def pool_range(given: BudgetInput) -> tuple[PoolRange, list[Problem]]:
    """The bounds of this pool's share of its server: a pure function of the
    profile alone, so every profile's bounds are known before any is sized."""
    pods = given.pooler_instances + ROLLOUT_EXTRA_PODS
    pinned, session = given.pinned, given.session_mode
    demand = sum(c.connections for c in given.clients)
    per_pod = partial(per_pod_for, session=session, pinned=pinned)
    if "max_db_connections" in pinned:
        low = high = pinned["max_db_connections"]
        field = f"{given.pooler_field}.parameters.max_db_connections"
        why = f"max_db_connections {low} pinned"
        fix = f"lower {field}"
    elif "default_pool_size" in pinned:
        low = high = per_pod(pinned["default_pool_size"])
        field = f"{given.pooler_field}.parameters.default_pool_size"
        why = f"default_pool_size {pinned['default_pool_size']} pinned"
        fix = f"lower {field}"
    elif session:
        sessions = -(-demand // given.pooler_instances)
        low = high = per_pod(sessions)
        first = given.clients[0] if given.clients else None
        field = first.field if first else "spec.app"
        why = f"session mode: {demand} sessions over {given.pooler_instances} pooler pods"
        fix = (
            f"lower {_ceiling_fields(given.clients, first=first)} (fewer sessions), or use "
            "spec.pooler.poolMode transaction"
        )
    elif (needed := _load_needed(given)) is not None:
        # Rule 6: what the load needs is both what the pool is guaranteed and all it
        # takes; the rest of the server stays free for the others
        low = high = per_pod(min(needed, max(demand, 1)))
        assert given.load is not None
        field = given.load.field
        why = f"spec.load: {needed} per pooler pod for a {given.load.target_text} chance of waiting"
        fix = f"lower {field}, or raise spec.load.waitProbability"
    else:
        low, high = per_pod(1), per_pod(max(demand, 1))
        field = f"{given.pooler_field}.instances"
        why = "transaction mode: 1 server connection per pooler pod"
        fix = f"lower {field}"
    problems: list[Problem] = []
    if given.declared_minimum is not None:
        wanted = -(-given.declared_minimum // pods)
        if wanted > high:
            problems.append(
                Problem(
                    f"{given.share_field}.minimum",
                    f"{given.declared_minimum} over {pods} pooler pods at peak is more than "
                    f"this pool can use: {high} per pod x {pods} = {high * pods} "
                    f"({'what its clients could ask for' if high > low else why})",
                )
            )
        elif wanted > low:
            low = wanted
            field = f"{given.share_field}.minimum"
            why = f"{field} {given.declared_minimum}"
            fix = f"lower {field}"
    if given.declared_maximum is not None:
        cap = given.declared_maximum // pods
        if cap < low:
            problems.append(
                Problem(
                    f"{given.share_field}.maximum",
                    f"{given.declared_maximum} over {pods} pooler pods at peak leaves {cap} per "
                    f"pod, fewer than the {low} per pod this pool needs ({why})",
                )
            )
        else:
            high = min(high, cap)
    why += f", {low} per pod x {pods} pods at peak"
    return PoolRange(low * pods, max(high, low) * pods, pods, why, field, fix), problems


def _load_needed(given: BudgetInput) -> int | None:
    """Rule 6: the server connections each pooler pod needs for its share of the
    declared load, the workers' pools included (None: no load, session mode, or a
    load beyond any server, which compute refuses)."""
    if given.load is None or given.session_mode:
        return None
    busy = given.load.offered_load / given.pooler_instances
    if busy > queueing.MAX_OFFERED_LOAD:
        return None
    needed, _ = queueing.servers_needed(
        offered_load=busy, target_wait_probability=given.load.target_wait_probability
    )
    return needed + math.ceil(given.undeclared_load_connections / given.pooler_instances)


def _available_text(given: BudgetInput, available: int) -> str:
    if given.share is not None:
        return f"{available} available to this pool on {given.server} ({given.share_text})"
    parts = f"max_connections {given.max_connections} - {given.superuser_reserved} reserved"
    if given.other_reserved:
        parts += f" - {given.other_reserved} {given.reserved_label}"
    if given.read_fallback:
        parts += (
            f" - {given.read_fallback} for the read pool when every replica is out "
            "(spec.database.readReplicas.whenAllLagging primary)"
        )
    if given.shared:
        others = ", ".join(f"{s.profile} {s.server_connections}" for s in given.shared)
        beside = f", beside {given.profile}" if given.profile else ""
        parts += (
            f" - {given.shared_connections} opened by the other profiles on this server "
            f"({others}{beside})"
        )
    return f"{available} available on {given.server} ({parts})"


def _demand_text(clients: tuple[ClientGroup, ...]) -> str:
    return " + ".join(
        f"{c.label} ceiling {c.max_pods} pods x {c.connections_per_pod} connections per pod"
        for c in clients
    )


def _ceiling_fields(clients: tuple[ClientGroup, ...], *, first: ClientGroup | None) -> str:
    """``a, b or c``: the fields that set the client demand, ``first``'s first."""
    ordered = sorted(clients, key=lambda group: group is not first)
    fields = [f for group in ordered for f in (group.field, group.pool_field) if f]
    if not fields:
        return "the ceiling or the per-pod pool"
    return fields[0] if len(fields) == 1 else f"{', '.join(fields[:-1])} or {fields[-1]}"


def _tipping_group(clients: tuple[ClientGroup, ...], available: int) -> ClientGroup | None:
    """The first client group (in spec order: the app, then the queues) whose
    connections take the running total past ``available``."""
    total = 0
    for group in clients:
        total += group.connections
        if total > available:
            return group
    return clients[-1] if clients else None


def compute(given: BudgetInput) -> tuple[ConnectionBudget, list[Problem]]:
    """Size the pooler for ``given``; problems explain why a profile cannot work."""
    problems: list[Problem] = []
    reserved = given.superuser_reserved + given.other_reserved
    available = given.max_connections - reserved - given.shared_connections - given.read_fallback
    if given.share is not None:
        available = given.share
    demand = sum(c.connections for c in given.clients)
    instances = given.pooler_instances
    pods_at_peak = instances + ROLLOUT_EXTRA_PODS
    per_pod = max(available, 0) // pods_at_peak
    pinned = given.pinned

    if per_pod < 1:
        problems.append(
            Problem(
                f"{given.pooler_field}.instances",
                f"{pods_at_peak} pooler pods need at least 1 server connection each, but "
                f"only {_available_text(given, available)}",
            )
        )
        per_pod = 1

    # Rule 2: server side. Reserve ~10% (at most 5) for bursts in transaction
    # mode; in session mode a reserve only delays the same shortage.
    default_reserve = 0 if given.session_mode else min(5, per_pod // 10)
    reserve = pinned.get("reserve_pool_size", default_reserve)
    max_db = pinned.get("max_db_connections", per_pod)
    undeclared = 0
    load_pool = None
    if given.load is not None and not given.session_mode:
        undeclared = math.ceil(given.undeclared_load_connections / instances)
        load_pool = _load_pool(
            given,
            problems=problems,
            room=min(pinned.get("default_pool_size", per_pod), max_db) - undeclared,
            pods_at_peak=pods_at_peak,
            available=available,
            undeclared=undeclared,
        )
    if "default_pool_size" in pinned:
        pool = pinned["default_pool_size"]
    elif load_pool is not None and load_pool.staffing is not None and load_pool.fits:
        # Rule 6: what the load needs, not all the room there is.
        pool = max(1, min(load_pool.staffing.needed + undeclared, demand))
        if "reserve_pool_size" not in pinned:
            # the reserve of the pool's own connections per pod, as pool_range counts it
            # (not of all the room), so alone or sharing the server it plans the same
            own = per_pod_for(pool, session=False, pinned=pinned) - pool
            reserve = max(0, min(own, per_pod - pool))
    else:
        # No more server connections than clients could ever ask for.
        pool = max(1, min(max_db - reserve, demand))
    if "max_db_connections" not in pinned:
        max_db = min(max_db, pool + reserve)

    if "max_db_connections" in pinned:
        if max_db > per_pod:
            problems.append(
                Problem(
                    f"{given.pooler_field}.parameters.max_db_connections",
                    f"{max_db} per pooler pod x {pods_at_peak} pods = "
                    f"{max_db * pods_at_peak} server connections > "
                    f"{_available_text(given, available)}",
                )
            )
    elif pool + reserve > per_pod:
        fields = [k for k in ("default_pool_size", "reserve_pool_size") if k in pinned]
        problems.append(
            Problem(
                f"{given.pooler_field}.parameters."
                + (fields[0] if fields else "default_pool_size"),
                f"default_pool_size {pool} + reserve_pool_size {reserve} = {pool + reserve} "
                f"server connections per pooler pod x {pods_at_peak} pods = "
                f"{(pool + reserve) * pods_at_peak} > {_available_text(given, available)}",
            )
        )
    server_connections = max_db * pods_at_peak

    # Rule 3: client side.
    needed_clients = demand + ADMIN_CLIENT_SLOTS
    max_client = pinned.get("max_client_conn", needed_clients)
    if max_client < needed_clients:
        problems.append(
            Problem(
                f"{given.pooler_field}.parameters.max_client_conn",
                f"{max_client} < {needed_clients} client connections a pooler pod must accept "
                f"({_demand_text(given.clients)} = {demand}, + {ADMIN_CLIENT_SLOTS} admin)",
            )
        )

    # Rule 4: session mode, the seeds' outage. A pooler pod serves at most
    # min(pool + reserve, max_db_connections) sessions at once; the others wait.
    sessions_per_pod = min(pool + reserve, max_db)
    if given.session_mode and demand > available:
        tipping = _tipping_group(given.clients, available)
        problems.append(
            Problem(
                tipping.field if tipping else "spec.app",
                f"{_demand_text(given.clients)} = {demand} session connections > "
                f"{_available_text(given, available)}; use spec.pooler.poolMode transaction "
                f"or lower {_ceiling_fields(given.clients, first=tipping)}",
            )
        )
    elif given.session_mode and demand > instances * sessions_per_pod:
        pinned_max_db = "max_db_connections" in pinned and max_db < pool + reserve
        problems.append(
            Problem(
                f"{given.pooler_field}.parameters.max_db_connections"
                if pinned_max_db
                else f"{given.pooler_field}.instances",
                f"in session mode {instances} pooler pods x {sessions_per_pod} server "
                f"connections = {instances * sessions_per_pod} < {demand} session connections "
                f"({_demand_text(given.clients)}): the others would wait for a free one"
                + (
                    f" (max_db_connections {max_db} caps default_pool_size {pool})"
                    if pinned_max_db
                    else f"; with {pods_at_peak} pods during a rolling update each pod gets "
                    f"{per_pod} of the {available} available"
                ),
            )
        )

    budget = ConnectionBudget(
        max_connections=given.max_connections,
        reserved=reserved,
        available=available,
        client_demand=demand,
        pooler_pods_at_peak=pods_at_peak,
        default_pool_size=pool,
        reserve_pool_size=reserve,
        max_db_connections=max_db,
        max_client_conn=max_client,
        server_connections=server_connections,
        margin=available - server_connections,
        clients=given.clients,
        shared=given.shared,
        read_fallback=given.read_fallback,
        load_pool=load_pool,
        undeclared_per_pod=undeclared,
    )
    return budget, problems


def _load_pool(
    given: BudgetInput,
    *,
    problems: list[Problem],
    room: int,
    pods_at_peak: int,
    available: int,
    undeclared: int,
) -> load_sizing.PoolCheck:
    """Rule 6: each pooler pod's pool for its share of the declared load, within
    ``room``; a problem naming the load (or the pinned pool) when it does not fit."""
    assert given.load is not None
    checked = load_sizing.server_pool(
        load=given.load, pooler_pods=given.pooler_instances, room_per_pod=max(room, 0)
    )
    if checked.fits:
        return checked
    pinned = [k for k in ("default_pool_size", "max_db_connections") if k in given.pinned]
    if pinned:
        field = f"{given.pooler_field}.parameters.{pinned[0]}"
        why = f"{pinned[0]} {given.pinned[pinned[0]]}"
    else:
        field = given.load.field
        why = (
            f"{_available_text(given, available)} / {pods_at_peak} pooler pods at peak "
            "(one more during a rolling update)"
        )
    if undeclared:
        why += f", less {undeclared} per pooler pod for the workers' pools at their ceiling"
    problems.append(
        Problem(field, f"{load_sizing.shortfall_text(checked, load=given.load)}; room: {why}")
    )
    return checked
