"""What a pooler's observed figures say its pool should be, always inside the budget.

One write-pooler pod's PgBouncer counts, for the app's database, the transactions it
served per second and their mean time on a server connection (``SHOW STATS``:
``avg_xact_count``, and ``avg_xact_time`` less ``avg_wait_time``, which it includes;
averages over its ``stats_period``), the clients
waiting and the oldest wait (``SHOW POOLS``: ``cl_waiting``, ``maxwait``), and its server
connections busy and idle (``sv_active``, ``sv_idle``). In transaction mode a client holds
a server connection for a transaction, so the observed offered load is ``a = lambda x W``
over transactions (Little's law), and Erlang C (:mod:`headroom.planning.queueing`) gives
the fewest server connections whose chance of waiting meets the target.
:func:`recommend` compares that with the pool the pod has and the most the budget lets
it have, and says what to change with the figures behind it: raise the pool (it fits the
budget), the budget is the limit (by how much), or lower an idle pool. A proposed size
is never above the budget. When the server's room is what limits it,
:func:`max_connections` says what ``max_connections`` the plan needs; from the same
figures, with the transactions' time as the clients see it (``avg_xact_time``, the wait
included) and their connections (``cl_active`` + ``cl_waiting``), :func:`app_pool` says
when the app's own client pool is mostly idle and how far to lower it. Each has a stable
kind (api.status.RecommendationKind); only the server pool's is ever applied (autoTune).

Waiting clients are expected at a target chance of waiting above 0; a snapshot counts
beyond the averages only when the model at the pool's size cannot explain it (a queue
that long, or a wait that old, has less than :data:`UNEXPLAINED` chance): then the busy
connections and the waiting clients all wanted one at once (a burst the averages hide).
Lowering needs the pool to be at least twice what the load needs, so that sizes do not
swing on noise.

The figures reach the operator through the write pooler's agent, which reads them from
PgBouncer's admin console (:func:`figures_from_show`) and reports them in its entry of
the pooler's state ConfigMap (:meth:`PoolFigures.report`, rewritten only when
:func:`moved` says they moved materially, so a steady pooler writes nothing). The
reconcile pass reads them back (:func:`figures_from_state`), recommends per pod and
combines (:func:`combine`), and :func:`settle` keeps the last recommendation in status
while a new one is within a small band of it: the status changes when the figures move
materially, not on every pass.

The read pooler's agents report the same figures for its pods (``for_plan(read=True)``):
against the read plan they say when the smallest replica's ``max_connections`` is what
limits the read pool (:func:`replica_max_connections`, the write side's arithmetic on
that replica) and when the app's read pool is mostly idle (:func:`app_pool`); with
``readSecondsPerRequest`` declared, :func:`baseline` judges its time per transaction as
it judges the write pooler's against the rest of the request.

Pure: rows and report text in, recommendations out.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from headroom.api import status, v1alpha1
from headroom.planning import connection_budget, planner, pooler_state, queueing, read_plan

POOL_SIZE = "default_pool_size"
FIELD = "spec.pooler.parameters.default_pool_size"
APP_POOL_FIELD = "spec.app.poolSizePerPod"
READ_APP_POOL_FIELD = f"{read_plan.FIELD}.readPoolSizePerPod"
MAX_CONNECTIONS_FIELD = "spec.database.maxConnections"
# lower only when the pool is at least this many times what the load needs (hysteresis)
LOWER_WHEN_OVER = 2
# a queue or a wait the model gives less than this chance is one the averages miss
UNEXPLAINED = 0.001
# PgBouncer's stats_period default: the averages are over this many seconds
STATS_PERIOD_SECONDS = 60
# transactions in one stats period behind a "high" (5 % error on the mean time of an
# exponential holding time: 1 / sqrt(400)) and a "medium" (20 %: 1 / sqrt(25)) answer
HIGH_CONFIDENCE_SAMPLES = 400
MEDIUM_CONFIDENCE_SAMPLES = 25
# figures move materially when the offered load moves by this share (and by at least
# half a connection), or waiting starts or stops
MOVED_SHARE = 0.25
MOVED_CONNECTIONS = 0.5
# status keeps the last recommended size while a new one is within this share of it
# (and within one connection)
SETTLE_SHARE = 0.1
# the key of the figures in an agent's entry of the state ConfigMap
REPORT_KEY = "observed"
# status.recommendations[].why holds this much (the CRD's maxLength)
WHY_MAX = 1024

Confidence = Literal["low", "medium", "high"]


@dataclasses.dataclass(frozen=True)
class PoolFigures:
    """What one pooler pod counts itself for the app's database."""

    transactions_per_second: float  # avg_xact_count
    seconds_per_transaction: float  # avg_xact_time - avg_wait_time, in seconds
    clients_waiting: int  # cl_waiting
    max_wait_seconds: float  # maxwait + maxwait_us
    servers_active: int  # sv_active
    servers_idle: int  # sv_idle + sv_used (connected, not serving a client)
    # avg_xact_time, its wait for a server included: how long a client connection is
    # inside a transaction (None: from an agent that does not report it)
    client_seconds_per_transaction: float | None = None
    clients_open: int | None = None  # cl_active + cl_waiting: the clients' connections

    def __post_init__(self) -> None:
        for name in ("clients_waiting", "servers_active", "servers_idle", "clients_open"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative")
        for name in (
            "transactions_per_second",
            "seconds_per_transaction",
            "max_wait_seconds",
            "client_seconds_per_transaction",
        ):
            value = getattr(self, name)
            if value is not None and (not value >= 0 or math.isinf(value)):  # NaN too
                raise ValueError(f"{name} must be a finite number >= 0")

    @property
    def clients_in_transaction(self) -> float | None:
        """Little's law on the client side: the client connections inside a
        transaction on average, waiting for a server or holding one."""
        if self.client_seconds_per_transaction is None:
            return None
        return self.transactions_per_second * self.client_seconds_per_transaction

    @property
    def offered_load(self) -> float:
        return queueing.offered_load(
            arrivals_per_second=self.transactions_per_second,
            seconds_per_request=self.seconds_per_transaction,
        )

    def report(self) -> dict[str, float | int]:
        """The figures as the agent writes them (JSON, camelCase like the rest)."""
        found: dict[str, float | int] = {
            "transactionsPerSecond": round(self.transactions_per_second, 3),
            "secondsPerTransaction": round(self.seconds_per_transaction, 6),
            "clientsWaiting": self.clients_waiting,
            "maxWaitSeconds": round(self.max_wait_seconds, 6),
            "serversActive": self.servers_active,
            "serversIdle": self.servers_idle,
        }
        if self.client_seconds_per_transaction is not None:
            found["clientSecondsPerTransaction"] = round(self.client_seconds_per_transaction, 6)
        if self.clients_open is not None:
            found["clientsOpen"] = self.clients_open
        return found

    @classmethod
    def from_report(cls, found: Mapping[str, Any]) -> PoolFigures:
        """The figures of one report; ValueError naming the key that is missing or wrong."""
        numbers: dict[str, float] = {}
        # the client-side figures are optional: an agent of an older release has none
        optional = ("clientSecondsPerTransaction", "clientsOpen")
        for key in (
            "transactionsPerSecond",
            "secondsPerTransaction",
            "clientsWaiting",
            "maxWaitSeconds",
            "serversActive",
            "serversIdle",
            *optional,
        ):
            value = found.get(key)
            if value is None and key in optional:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{REPORT_KEY}.{key} must be a number, not {value!r}")
            numbers[key] = value
        for key in ("clientsWaiting", "serversActive", "serversIdle", "clientsOpen"):
            if key in numbers and numbers[key] != int(numbers[key]):
                raise ValueError(f"{REPORT_KEY}.{key} must be a whole number")
        client = numbers.get("clientSecondsPerTransaction")
        clients = numbers.get("clientsOpen")
        return cls(
            transactions_per_second=float(numbers["transactionsPerSecond"]),
            seconds_per_transaction=float(numbers["secondsPerTransaction"]),
            clients_waiting=int(numbers["clientsWaiting"]),
            max_wait_seconds=float(numbers["maxWaitSeconds"]),
            servers_active=int(numbers["serversActive"]),
            servers_idle=int(numbers["serversIdle"]),
            client_seconds_per_transaction=None if client is None else float(client),
            clients_open=None if clients is None else int(clients),
        )


def figures_from_show(
    *, stats: Iterable[Mapping[str, Any]], pools: Iterable[Mapping[str, Any]], database: str
) -> PoolFigures | None:
    """The figures of ``database`` from PgBouncer's ``SHOW STATS`` and ``SHOW POOLS``
    rows (column name -> value); None when PgBouncer has no stats for it yet."""
    row = next((r for r in stats if r.get("database") == database), None)
    if row is None:
        return None
    mine = [p for p in pools if p.get("database") == database]
    oldest = max(
        (int(p.get("maxwait") or 0) + int(p.get("maxwait_us") or 0) / 1e6 for p in mine),
        default=0.0,
    )
    # avg_xact_time runs from the client's first query, its wait for a server included
    # (measured on 1.26: 557 ms of which 291 ms waiting, for a 250 ms hold); the hold
    # is what is left after the mean wait per assignment, one per transaction here
    held = float(row["avg_xact_time"]) - float(row.get("avg_wait_time") or 0)
    return PoolFigures(
        transactions_per_second=float(row["avg_xact_count"]),
        seconds_per_transaction=max(held, 0.0) / 1e6,
        clients_waiting=sum(int(p.get("cl_waiting") or 0) for p in mine),
        max_wait_seconds=oldest,
        servers_active=sum(int(p.get("sv_active") or 0) for p in mine),
        servers_idle=sum(int(p.get("sv_idle") or 0) + int(p.get("sv_used") or 0) for p in mine),
        client_seconds_per_transaction=float(row["avg_xact_time"]) / 1e6,
        clients_open=sum(
            int(p.get("cl_active") or 0) + int(p.get("cl_waiting") or 0) for p in mine
        ),
    )


def moved(before: PoolFigures | None, after: PoolFigures) -> bool:
    """Whether ``after`` is worth reporting over ``before``: the offered load moved by
    :data:`MOVED_SHARE` (and :data:`MOVED_CONNECTIONS`), or clients started or stopped
    waiting. A steady pooler's averages wobble inside that band, and write nothing."""
    if before is None:
        return True
    if (before.clients_waiting > 0) != (after.clients_waiting > 0):
        return True
    if (before.max_wait_seconds > 0) != (after.max_wait_seconds > 0):
        return True
    was, now = before.offered_load, after.offered_load
    change = abs(now - was)
    return change >= MOVED_CONNECTIONS and change > MOVED_SHARE * min(was, now)


def figures_from_state(
    data: Mapping[str, str] | None, *, pods: Iterable[str] | None = None
) -> dict[str, PoolFigures]:
    """Each pod's figures from the state ConfigMap's ``data`` (a key per pod, its
    :class:`~headroom.planning.pooler_state.Entry` with the figures under ``observed``);
    only ``pods`` when given (entries of pods that are gone are ignored). An entry
    without figures, or with figures that do not parse, is skipped: the agent of an
    older release writes none."""
    wanted = None if pods is None else set(pods)
    found: dict[str, PoolFigures] = {}
    for pod, entry in sorted(pooler_state.entries(data).items()):
        if entry.observed is None or (wanted is not None and pod not in wanted):
            continue
        try:
            found[pod] = PoolFigures.from_report(entry.observed)
        except ValueError:
            continue
    return found


@dataclasses.dataclass(frozen=True, kw_only=True)
class PoolObservation(PoolFigures):
    """One pooler pod's figures for the app's pool, and what the plan allows it."""

    pool_size: int  # its default_pool_size now
    budget: int  # the most the pool may be given inside the profile's share

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("pool_size", "budget"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.pool_size > self.budget:
            raise ValueError(f"pool_size {self.pool_size} is above the budget {self.budget}")

    @classmethod
    def of(cls, figures: PoolFigures, *, pool_size: int, budget: int) -> PoolObservation:
        return cls(**dataclasses.asdict(figures), pool_size=pool_size, budget=budget)


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """One change, and why, in the figures that led to it."""

    parameter: str
    current: int
    proposed: int
    needed: int  # the fewest connections that meet the target, observed load
    fits_budget: bool  # whether ``needed`` fits; ``proposed`` always does
    reason: str
    kind: status.RecommendationKind
    confidence: Confidence = "medium"
    field: str = FIELD  # the spec field it changes
    figures: str = ""  # the observed figures behind it, in words


def confidence(
    observed: PoolObservation,
    *,
    unexplained: bool,
    stats_period_seconds: int = STATS_PERIOD_SECONDS,
) -> Confidence:
    """How far the figures can be trusted: a wait the model cannot explain is a
    measured fact ("high"); else the transactions one stats period averaged over."""
    if unexplained:
        return "high"
    return _sampled(observed.transactions_per_second, stats_period_seconds=stats_period_seconds)


def _sampled(transactions_per_second: float, *, stats_period_seconds: int) -> Confidence:
    samples = transactions_per_second * stats_period_seconds
    if samples >= HIGH_CONFIDENCE_SAMPLES:
        return "high"
    return "medium" if samples >= MEDIUM_CONFIDENCE_SAMPLES else "low"


def _unexplained(observed: PoolObservation, load: float) -> bool:
    """Whether the snapshot's queue or oldest wait is one the model at the pool's
    size gives less than :data:`UNEXPLAINED` chance."""
    size = observed.pool_size
    if size <= load:  # overloaded: any queue is what the model says
        return False
    longest = observed.clients_waiting > 0 and (
        queueing.queue_at_least(servers=size, offered_load=load, waiting=observed.clients_waiting)
        < UNEXPLAINED
    )
    oldest = observed.max_wait_seconds > 0 and (
        load == 0
        or queueing.wait_longer_than(
            servers=size,
            offered_load=load,
            seconds_per_request=observed.seconds_per_transaction,
            seconds=observed.max_wait_seconds,
        )
        < UNEXPLAINED
    )
    return longest or oldest


def recommend(
    observed: PoolObservation,
    *,
    target_wait_probability: float,
    stats_period_seconds: int = STATS_PERIOD_SECONDS,
) -> list[Recommendation]:
    """What to change in one pod's pool (nothing when it suits the observed load)."""
    load = queueing.offered_load(
        arrivals_per_second=observed.transactions_per_second,
        seconds_per_request=observed.seconds_per_transaction,
    )
    staffing = queueing.staff(
        offered_load=load,
        target_wait_probability=target_wait_probability,
        budget=observed.budget,
    )
    unexplained = _unexplained(observed, load)
    # every busy connection and every waiting client wanted one at the same moment
    seen = observed.servers_active + observed.clients_waiting
    needed = max(staffing.needed, seen if unexplained else 0)
    waited = observed.clients_waiting > 0 or observed.max_wait_seconds > 0
    figures = (
        f"{observed.transactions_per_second:g} transactions/s x "
        f"{observed.seconds_per_transaction:g} s = {load:.3g} connections busy on average; "
        f"{observed.clients_waiting} clients waiting (oldest {observed.max_wait_seconds:g} s"
        + (", more than the load explains" if unexplained else "")
        + f"), {observed.servers_active} active and {observed.servers_idle} idle server "
        "connections"
    )
    target = f"{target_wait_probability:.3g}"
    size = observed.pool_size
    kind: status.RecommendationKind
    if needed > size:
        proposed = min(needed, observed.budget)
        kind = "RaiseServerPool" if needed <= observed.budget else "ServerPoolOverBudget"
        if needed <= observed.budget:
            reason = (
                f"raise {POOL_SIZE} to {proposed} (fits the budget {observed.budget}): "
                f"{figures}; {needed} meet a chance of waiting of {target}"
            )
        else:
            reason = (
                f"the budget is the limit: the load needs {needed} server connections, "
                f"the budget allows {observed.budget} ({needed - observed.budget} short; "
                f"raise max_connections or lower the pods that share it)"
                + (f"; raise {POOL_SIZE} to {proposed} meanwhile" if proposed > size else "")
                + f": {figures}"
            )
    elif not waited and size >= LOWER_WHEN_OVER * max(needed, 1) and size > 1:
        proposed = max(needed, 1)
        kind = "LowerServerPool"
        servers = observed.servers_active + observed.servers_idle
        idle = f"{observed.servers_idle / servers:.0%}" if servers else "all"
        reason = (
            f"lower {POOL_SIZE} to {proposed}: the pool is {idle} idle; "
            f"{figures}; {needed} meet a chance of waiting of {target}"
        )
    else:
        return []
    return [
        Recommendation(
            parameter=POOL_SIZE,
            current=size,
            proposed=proposed,
            needed=needed,
            fits_budget=needed <= observed.budget,
            reason=reason,
            kind=kind,
            confidence=confidence(
                observed, unexplained=unexplained, stats_period_seconds=stats_period_seconds
            ),
            figures=figures,
        )
    ]


def combine(per_pod: Mapping[str, list[Recommendation]]) -> Recommendation | None:
    """One recommendation for the pooler from each pod's: the largest raise when any
    pod needs one (the Service spreads clients, the busiest pod sets the size), a
    lowering only when every pod asks for one (then the least of a lowering)."""
    found = [recs[0] for recs in per_pod.values() if recs]
    raises = [r for r in found if r.proposed > r.current]
    if raises:
        return max(raises, key=lambda r: (r.proposed, r.needed))
    if per_pod and len(found) == len(per_pod):
        return max(found, key=lambda r: r.proposed)
    return None


def settle(
    previous: Mapping[str, Any] | None, fresh: Recommendation | None
) -> dict[str, Any] | None:
    """``status.recommendations[]``'s entry: ``previous`` (as status holds it) while
    ``fresh`` is of its kind and field and goes the same way to a size within
    :data:`SETTLE_SHARE` (and one connection) of it, else ``fresh`` shaped for status;
    None when there is none."""
    if fresh is None:
        return None
    shaped = {
        "kind": fresh.kind,
        "field": fresh.field,
        "current": fresh.current,
        "recommended": fresh.proposed,
        "why": fresh.reason[:WHY_MAX],
        "confidence": fresh.confidence,
    }
    if not previous or previous.get("field") != fresh.field or previous.get("kind") != fresh.kind:
        return shaped
    try:
        before, was = int(previous["recommended"]), int(previous["current"])
    except (KeyError, TypeError, ValueError):
        return shaped
    same_way = (before > was) == (fresh.proposed > fresh.current) and was == fresh.current
    band = max(1, math.ceil(SETTLE_SHARE * before))
    if same_way and abs(fresh.proposed - before) <= band:
        return dict(previous)
    return shaped


def pool_ceiling(
    *, available: int, pooler_pods_at_peak: int, reserve_pool_size: int, client_demand: int
) -> int:
    """The most ``default_pool_size`` the profile's share lets each pooler pod have
    (the planner's "fill the budget" answer): its share per pod at the rollout's peak,
    less the reserve, and never more than every client could ask for."""
    per_pod = max(available, 0) // max(pooler_pods_at_peak, 1)
    return max(1, min(per_pod - reserve_pool_size, client_demand))


def _server_pool(
    seen: Mapping[str, PoolFigures],
    *,
    budget: connection_budget.ConnectionBudget,
    target_wait_probability: float,
    stats_period_seconds: int,
) -> Recommendation | None:
    """One recommendation for a pooler's server pool (``budget``'s) from each of its
    pods' figures (:func:`recommend`, :func:`combine`)."""
    ceiling = pool_ceiling(
        available=budget.available,
        pooler_pods_at_peak=budget.pooler_pods_at_peak,
        reserve_pool_size=budget.reserve_pool_size,
        client_demand=budget.client_demand,
    )
    return combine(
        {
            pod: recommend(
                PoolObservation.of(
                    found,
                    pool_size=budget.default_pool_size,
                    budget=max(ceiling, budget.default_pool_size),
                ),
                target_wait_probability=target_wait_probability,
                stats_period_seconds=stats_period_seconds,
            )
            for pod, found in seen.items()
        }
    )


def _settled(
    fresh: Iterable[Recommendation | None], previous: Iterable[Mapping[str, Any]] | None
) -> list[dict[str, Any]]:
    """The status entries of ``fresh``, each :func:`settle`d against the one status
    holds for its field and kind."""
    held = {(p.get("field"), p.get("kind")): p for p in previous or ()}
    found = [settle(held.get((rec.field, rec.kind)), rec) for rec in fresh if rec is not None]
    return [entry for entry in found if entry is not None]


def _reporting(
    plan: planner.Plan, *, read: bool
) -> tuple[planner.PoolerPlan, connection_budget.ConnectionBudget] | None:
    """The pooler whose agents report the figures read here, with its budget: the
    write pooler, or (``read``) the read pooler, when Headroom runs it in transaction
    mode (session mode's pool is its clients; a CloudNativePG Pooler has no agent)."""
    if plan.read is not None and plan.read.cnpg_poolers:
        return None
    found = (plan.pooler, plan.budget)
    if read:
        if plan.read is None or plan.read_pooler is None:
            return None
        found = (plan.read_pooler, plan.read.budget)
    return found if found[0].pool_mode == "transaction" else None


def for_plan(
    plan: planner.Plan,
    *,
    state: Mapping[str, str] | None,
    previous: Iterable[Mapping[str, Any]] | None,
    pods: Iterable[str] | None = None,
    read: bool = False,
) -> list[dict[str, Any]]:
    """``status.recommendations`` of ``plan`` from its write pooler's state ConfigMap
    (``state``: its data) and the entries status holds now (``previous``). Only a
    transaction-mode pooler Headroom runs (session mode's pool is its clients; a
    CloudNativePG Pooler has no agent).

    ``read``: the read side's, from the read pooler's state ConfigMap (each
    read-pooler pod's agent reports the same figures): :func:`replica_max_connections`
    when the read load needs more than the smallest replica's room, and
    :func:`app_pool` when the app's read pool is mostly idle. There is no "raise" or
    "lower" of the read server pool itself: no field sets it. Its ``default_pool_size``
    is the replica's room per read-pooler pod (or what spec.load's reads need, when
    declared), never more than the read clients could open. A larger pool than the load
    needs costs nothing it does not use on a replica that serves only reads: PgBouncer
    opens a server connection only when no idle one is free, and closes idle ones after
    ``server_idle_timeout``; where the clients' own pools cap it, lowering the app's
    read pool lowers it. A pool sized from spec.load's reads that the observed load
    outgrows inside the room says the declared reads are off (readSecondsPerRequest),
    which no integer in status can carry: nothing is said of it here."""
    reporting = _reporting(plan, read=read)
    if reporting is None:
        return []
    pooler, budget = reporting
    seen = figures_from_state(state, pods=pods)
    if not seen:
        return []
    target = plan.load.target_wait_probability if plan.load else v1alpha1.DEFAULT_WAIT_PROBABILITY
    period = int(pooler.settings.get("stats_period") or STATS_PERIOD_SECONDS)
    server = _server_pool(
        seen, budget=budget, target_wait_probability=target, stats_period_seconds=period
    )
    limit = replica_max_connections if read else max_connections
    return _settled(
        [
            None if read else server,
            None if server is None else limit(plan, server=server),
            app_pool(
                seen.values(),
                plan=plan,
                target_wait_probability=target,
                stats_period_seconds=period,
                read=read,
            ),
        ],
        previous,
    )


def _pods(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


@dataclasses.dataclass(frozen=True)
class _Limit:
    """How a server-room recommendation reads for one pooler (the write pooler's on the
    primary, the read pooler's on the smallest replica)."""

    lead: str  # what limits, and what needs more
    pods: str  # the pooler's pods, singular
    fix: str  # what to raise
    field: str
    kind: status.RecommendationKind
    observed: str  # what the figures are of, and the figures


def _room_limit(
    budget: connection_budget.ConnectionBudget,
    *,
    server: Recommendation,
    share_maximum: int | None,
    limit: _Limit,
) -> Recommendation | None:
    """The ``max_connections`` of ``budget``'s server at which every pooler pod at the
    rollout's peak gets what ``server`` says the load needs plus its reserve, the rest
    of the server kept as it is; None when the room is not what limits it."""
    pods = budget.pooler_pods_at_peak
    room = max(budget.available, 0) // pods - budget.reserve_pool_size
    if server.fits_budget or server.needed <= room or server.needed > budget.client_demand:
        return None
    # the reserve grows with the connections per pod as the plan counts it (never less
    # than the plan's own)
    per_pod = max(
        connection_budget.per_pod_for(server.needed, session=False, pinned={}),
        server.needed + budget.reserve_pool_size,
    )
    short = per_pod * pods - budget.available
    if short <= 0 or (share_maximum is not None and per_pod * pods > share_maximum):
        return None
    needed = budget.max_connections + short
    others = ", the other profiles on this server keeping their shares" if budget.shared else ""
    reason = (
        f"{limit.lead} {needed} (now {budget.max_connections}): {server.needed} server "
        f"connections per {limit.pods} + {per_pod - server.needed} reserve, x {pods} "
        f"{limit.pods}s at peak (one more during a rolling update) = {per_pod * pods}, "
        f"{short} more than the {budget.available} available{others}; {limit.fix} "
        f"({limit.observed})"
    )
    return Recommendation(
        parameter="max_connections",
        current=budget.max_connections,
        proposed=needed,
        needed=needed,
        fits_budget=False,
        reason=reason,
        kind=limit.kind,
        confidence=server.confidence,
        field=limit.field,
    )


def max_connections(plan: planner.Plan, *, server: Recommendation) -> Recommendation | None:
    """ "max_connections is the limit: the plan needs Z", beside a server-pool
    recommendation the budget cannot hold when the server's room is what limits it
    (not the clients' own pools, nor a declared spec.database.share.maximum): the
    ``max_connections`` at which every pooler pod at the rollout's peak gets what the
    load needs plus its reserve, the rest of the server kept as it is (what is
    reserved, the read fallback, and the other profiles' shares there)."""
    return _room_limit(
        plan.budget,
        server=server,
        share_maximum=plan.database.share.maximum,
        limit=_Limit(
            lead="max_connections is the limit: the plan needs",
            pods="pooler pod",
            fix=f"raise the server's max_connections and {MAX_CONNECTIONS_FIELD} with it",
            field=MAX_CONNECTIONS_FIELD,
            kind="MaxConnectionsLimit",
            observed=f"the observed load: {server.reason}",
        ),
    )


def replica_field(read: read_plan.ReadPlan, replica: read_plan.Replica) -> str:
    """The spec field that sets ``replica``'s max_connections as the read plan counts
    it: the standbys' own (Headroom runs them; raising the primary's would raise both),
    an external replica's own entry (declare what the server runs), or, with mode
    cnpg, where the plan read it from."""
    if read.mode == "streaming":
        return f"{read_plan.FIELD}.streaming.maxConnections"
    if read.mode == "external" and replica.name.startswith("replica-"):
        return f"{read_plan.FIELD}.hosts[{replica.name.removeprefix('replica-')}].maxConnections"
    return replica.field


def replica_max_connections(plan: planner.Plan, *, server: Recommendation) -> Recommendation | None:
    """ "The replica's max_connections is the limit: the read pool needs Z", when the
    read load (``server``: the read pooler's pods' figures, :func:`recommend` and
    :func:`combine` against the read budget) needs more server connections per
    read-pooler pod than the smallest replica's room gives: any one replica must carry
    the whole read pool when the others are out, so the smallest sets the read budget
    (planning.read_plan). The arithmetic is the write side's (:func:`max_connections`),
    on that replica; where other profiles share it, its share grows with it (or with
    spec.database.share.weight, which the reason names)."""
    read = plan.read
    if read is None:
        return None
    smallest = read.smallest
    field = replica_field(read, smallest)
    weight = " (or raise spec.database.share.weight)" if read.budget.shared else ""
    found = _room_limit(
        read.budget,
        server=server,
        share_maximum=None,
        limit=_Limit(
            lead=f"the max_connections of replica {smallest.host}:{smallest.port} is the read "
            "pool's limit (the smallest: any one replica must carry the whole read pool): it "
            "needs",
            pods="read-pooler pod",
            fix=f"raise the replica's max_connections and {field} with it{weight}",
            field=field,
            kind="ReadPoolOverBudget",
            observed=f"the observed read load: {server.figures}; {server.needed} meet a chance "
            "of waiting at the target",
        ),
    )
    if found is None:
        return None
    # every other replica below it would be the limit next: it must rise as far
    below = [
        r
        for r in read.replicas
        if r is not smallest
        and r.max_connections < found.proposed
        and replica_field(read, r) != field
    ]
    if not below:
        return found
    others = ", ".join(
        f"{replica_field(read, r)} ({r.host}:{r.port}, {r.max_connections})" for r in below
    )
    return dataclasses.replace(
        found,
        reason=f"{found.reason}; raise {others} to {found.proposed} too, or it is the limit next",
    )


@dataclasses.dataclass(frozen=True)
class _AppPool:
    """How one of the app's client pools is named, and the pooler that sees it."""

    noun: str  # "pool", "read pool"
    parameter: str
    field: str
    kind: status.RecommendationKind
    pooler: str  # the pooler's pods, singular


_APP_POOL = _AppPool("pool", "poolSizePerPod", APP_POOL_FIELD, "LowerAppPool", "pooler pod")
_APP_READ_POOL = _AppPool(
    "read pool", "readPoolSizePerPod", READ_APP_POOL_FIELD, "LowerAppReadPool", "read-pooler pod"
)


def app_pool(
    seen: Iterable[PoolFigures],
    *,
    plan: planner.Plan,
    target_wait_probability: float,
    stats_period_seconds: int = STATS_PERIOD_SECONDS,
    read: bool = False,
) -> Recommendation | None:
    """ "The app's pool is idle N %: lower poolSizePerPod to Y", from what the write
    pooler sees of the app's clients; None when the pool is not at least
    :data:`LOWER_WHEN_OVER` times what they need.

    The estimator: a client connection is in use by the app while it is inside a
    transaction, waiting for a server or holding one (transaction mode, one statement
    outside ``BEGIN`` being a transaction of its own), so by Little's law the app's
    connections in use are, per pooler pod, its transactions per second times
    ``avg_xact_time`` (the wait included), summed over the pooler's ``instances``
    (the pods' mean times the instances: a gone pod's report counts once at most).
    They spread over the app's floor (``replicas.min``: the fewest pods that carry it,
    so the most per pod), and Erlang C at the profile's target gives the fewest per
    app pod, never fewer than spec.load needs (admission would refuse it), nor than 1.

    Its limits, all of which make it err towards a larger pool except the first: an app
    that checks a connection out and holds it between separate statements
    (node-postgres ``pool.connect()`` without a transaction) uses it longer than the
    pooler sees; the workers' transactions through the same pooler count as the app's;
    more app pods than the floor each need fewer; the averages are a stats period's.
    The pooler cannot see a request waiting in the app pod for its own pool, so it
    never recommends raising the app's pool: spec.load's check does (planning.load_sizing).
    autoTune never applies it: the app's pool is the user's.

    ``read``: the app's read pool (spec.database.readReplicas.readPoolSizePerPod), from
    what the read pooler sees of the app's read clients, over its instances, never
    below what spec.load's reads need (readSecondsPerRequest); the workers' read pools
    count as the app's.
    """
    if read:
        if plan.read is None:
            return None
        pool, size, instances = _APP_READ_POOL, plan.read.pool_size_per_pod, plan.read.instances
        check = plan.app_read_pool
        workers = any(q.database_read_pool_size for q in plan.queues)
    else:
        pool, size, instances = _APP_POOL, plan.app.pool_size_per_pod, plan.pooler.instances
        check = plan.app_load_pool
        workers = any(q.database_pool_size for q in plan.queues)
    seen = list(seen)
    clients = [(f.transactions_per_second, f.clients_in_transaction) for f in seen]
    known = [(rate, busy) for rate, busy in clients if busy is not None]
    if not known:
        return None
    instances = max(instances, 1)
    in_use = sum(busy for _, busy in known) / len(known) * instances
    rate = sum(r for r, _ in known) / len(known) * instances
    floor = max(plan.app.min_replicas, 1)
    per_pod = in_use / floor
    needed, _ = queueing.servers_needed(
        offered_load=min(per_pod, queueing.MAX_OFFERED_LOAD),
        target_wait_probability=target_wait_probability,
    )
    declared = check.staffing.needed if check and check.staffing else 0
    proposed = max(needed, declared, 1)
    if size <= proposed or size < LOWER_WHEN_OVER * proposed:
        return None
    opened = [f.clients_open for f in seen if f.clients_open is not None]
    reason = (
        f"the app's {pool.noun} is {1 - per_pod / size:.0%} idle: lower {pool.parameter} to "
        f"{proposed}: {rate:.3g} transactions/s x {in_use / rate if rate else 0:.3g} s "
        f"(a server's wait included) = {in_use:.3g} client connections in a transaction "
        f"on average over {_pods(instances, pool.pooler)}"
        + (" (the workers' transactions counted too)" if workers else "")
        + f", {per_pod:.3g} on each of the app's floor of {_pods(floor, 'pod')} of {size}"
        + (
            f" ({sum(opened)} client connections open on the {_pods(len(opened), pool.pooler)} "
            "that report)"
            if opened
            else ""
        )
        + f"; {needed} meet a chance of waiting of {target_wait_probability:.3g}"
        + (f", spec.load needs {declared}" if declared > needed else "")
    )
    return Recommendation(
        parameter=pool.parameter,
        current=size,
        proposed=proposed,
        needed=proposed,
        fits_budget=True,
        reason=reason,
        kind=pool.kind,
        confidence=_sampled(rate, stats_period_seconds=stats_period_seconds),
        field=pool.field,
    )


@dataclasses.dataclass(frozen=True)
class Baseline:
    """The observed time per transaction against the declared one (spec.load)."""

    above: bool
    message: str


def _query_time_thresholds(plan: planner.Plan, role: str) -> tuple[float, float]:
    """The pooler ``role``'s (rw, ro) alert thresholds as planned, its own over the
    group's: queryTimeBaselineFactor and queryTimeFloorSeconds."""
    pool = next((p for p in plan.alerts.pools if p.role == role), None) if plan.alerts else None
    if pool is not None:
        return pool.query_time_baseline_factor, pool.query_time_floor_seconds
    defaults = v1alpha1.PoolerAlerts()
    return defaults.query_time_baseline_factor, defaults.query_time_floor_seconds


def _judge(
    state: Mapping[str, str] | None,
    *,
    declared: float,
    field: str,
    thresholds: tuple[float, float],
    slower: str,
) -> Baseline | None:
    """The slowest busy pod of a pooler's report against ``declared`` seconds (what
    ``field`` says); None without figures of a pod that served transactions."""
    busy = {pod: f for pod, f in figures_from_state(state).items() if f.transactions_per_second > 0}
    if not busy:
        return None
    factor, floor = thresholds
    pod, slowest = max(busy.items(), key=lambda item: item[1].seconds_per_transaction)
    observed = slowest.seconds_per_transaction
    above = observed > factor * declared and observed > floor
    message = (
        f"{pod}: {observed:.3g} s per transaction over {slowest.transactions_per_second:g} "
        f"transactions/s, {'above' if above else 'within'} {factor:g} x the declared "
        f"{declared:g} s ({field})" + (f" and the floor {floor:g} s" if above else "")
    )
    if above:
        message += f": {slower}"
    return Baseline(above=above, message=message)


def baseline(
    plan: planner.Plan,
    *,
    state: Mapping[str, str] | None,
    read_state: Mapping[str, str] | None = None,
) -> Baseline | None:
    """Whether a pooler's pods hold a server connection per transaction well above what
    spec.load declares: above the pooler's ``queryTimeBaselineFactor`` times it and
    above its ``queryTimeFloorSeconds``, the thresholds of its
    HeadroomPoolerQueryTimeAboveBaseline alert (which compares with the last day
    instead), its own (``write``/``read``) over the group's. The slowest pod that served
    transactions speaks for each pooler.

    The write pooler (``state``: its state ConfigMap's data) against
    ``databaseSecondsPerRequest``, less ``readSecondsPerRequest`` when that is declared
    (the part of a request on the read pool; the plan sizes the write pool for the
    rest). The read pooler (``read_state``) against ``readSecondsPerRequest``, only when
    that is declared: without it nothing declares how long a request's reads hold a
    read-pool connection, and no baseline is invented for them (the read pooler's alert
    still compares with its own last day).

    Above when either is; the message names each pooler judged, by its slowest pod, with
    the figures. None without a declared load, or when neither pooler has figures."""
    if plan.load is None:
        return None
    judged: list[tuple[str, Baseline]] = []
    if _reporting(plan, read=False) is not None:
        split = plan.read_load is not None
        write = _judge(
            state,
            declared=plan.load.seconds_per_request,
            field="spec.load.databaseSecondsPerRequest"
            + (" less readSecondsPerRequest" if split else ""),
            thresholds=_query_time_thresholds(plan, "rw"),
            slower="the database got slower for this app, or the declared time is off; the "
            "pools sized from it are too small (status.recommendations says how much)",
        )
        if write is not None:
            judged.append(("write pooler", write))
    reads = plan.read_load
    if reads is not None and _reporting(plan, read=True) is not None:
        read = _judge(
            read_state,
            declared=reads.seconds_per_request,
            field="spec.load.readSecondsPerRequest",
            thresholds=_query_time_thresholds(plan, "ro"),
            slower="the replicas got slower for this app's reads, or the declared read time "
            "is off; the read pools sized from it (each read-pooler pod's, the app's "
            "readPoolSizePerPod) are too small for the declared rate",
        )
        if read is not None:
            judged.append(("read pooler", read))
    if not judged:
        return None
    above = any(j.above for _, j in judged)
    if len(judged) == 1 and judged[0][0] == "write pooler":
        # no read side judged: the write pooler's pod names itself
        return Baseline(above=above, message=judged[0][1].message)
    return Baseline(above=above, message="; ".join(f"{which} {j.message}" for which, j in judged))


# autoTune: a change needs at least this confidence
TUNE_CONFIDENCE = frozenset({"medium", "high"})
# autoTune applies a recommendation with headroom of the agent's reporting band
# (at least one connection): the figures may be that far off before a new report
# comes, and without the margin each high reading would walk the pool up a
# connection at a time (the tests run the loop on the M/M/s model); it leaves a
# pool alone when the change is within TUNE_BAND of it
TUNE_HEADROOM = MOVED_SHARE
TUNE_BAND = SETTLE_SHARE
_HOUR = datetime.timedelta(hours=1)


def tuned_size(
    profile: v1alpha1.ScalingProfile, previous_status: Mapping[str, Any] | None
) -> int | None:
    """The pool size spec.pooler.autoTune applied last (status.tuning), while it is on
    and the user pins no default_pool_size of their own; None otherwise."""
    pooler = profile.spec.pooler
    if not pooler.auto_tune.enabled or POOL_SIZE in pooler.parameters:
        return None
    found = (previous_status or {}).get("tuning")
    size = found.get("defaultPoolSize") if isinstance(found, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 1 else None


def with_pool_size(profile: v1alpha1.ScalingProfile, size: int) -> v1alpha1.ScalingProfile:
    """``profile`` with its write pooler's default_pool_size pinned at ``size``: the
    plan then checks it against the budget (and spec.load) as it checks a user's pin."""
    pooler = profile.spec.pooler
    tuned = pooler.model_copy(update={"parameters": {**pooler.parameters, POOL_SIZE: str(size)}})
    spec = profile.spec.model_copy(update={"pooler": tuned})
    return profile.model_copy(update={"spec": spec})


@dataclasses.dataclass(frozen=True)
class Tuning:
    """What autoTune decided in one pass: status.tuning, and the change (None: none)."""

    status: dict[str, Any] | None
    change: str | None = None
    size: int | None = None


def _when(text: Any) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(str(text))
    except ValueError:
        return None


def tune(
    profile: v1alpha1.ScalingProfile,
    *,
    previous: Mapping[str, Any] | None,
    recommended: Iterable[Mapping[str, Any]],
    current: int,
    now: datetime.datetime,
    fits: Callable[[int], bool],
) -> Tuning:
    """Apply a recommendation to the write pooler's pool when autoTune is on: one of
    medium confidence or better, with as much of :data:`TUNE_HEADROOM` on top as
    ``fits`` the plan (the budget, the share, spec.load), when it moves the pool by
    more than :data:`TUNE_BAND` of it, while fewer than ``maxChangesPerHour`` changes
    were made in the hour before ``now``. The recommendations' own hysteresis (a raise
    only above what the target needs, a lowering only from twice it, the status band)
    keeps it from swinging; ``previous`` (status.tuning) is kept as it is when nothing
    changes."""
    pooler = profile.spec.pooler
    if not pooler.auto_tune.enabled or POOL_SIZE in pooler.parameters:
        return Tuning(status=None)
    kept = dict(previous) if previous else None
    entry = next((r for r in recommended if r.get("field") == FIELD), None)
    if entry is None or entry.get("confidence") not in TUNE_CONFIDENCE:
        return Tuning(status=kept)
    proposed = entry.get("recommended")
    if not isinstance(proposed, int) or proposed < 1 or proposed == current:
        return Tuning(status=kept)
    headroom = max(1, round(TUNE_HEADROOM * proposed))
    recent = [
        str(t)
        for t in (kept or {}).get("changes") or []
        if (when := _when(t)) is not None and now - when < _HOUR
    ]
    if len(recent) >= pooler.auto_tune.max_changes_per_hour:
        return Tuning(status=kept)
    # as much of the headroom as fits (the plan checks each: budget, share, spec.load)
    size = next((n for n in range(proposed + headroom, proposed - 1, -1) if fits(n)), None)
    if size is None or size == current or abs(size - current) <= int(TUNE_BAND * current):
        return Tuning(status=kept)
    why = str(entry.get("why", ""))[:WHY_MAX]
    stamp = now.astimezone(datetime.UTC).isoformat(timespec="seconds")
    return Tuning(
        status={"defaultPoolSize": size, "changes": [*recent, stamp], "why": why},
        change=f"autoTune: {POOL_SIZE} {current} -> {size} ({len(recent) + 1} of at most "
        f"{pooler.auto_tune.max_changes_per_hour} an hour): {why}",
        size=size,
    )
