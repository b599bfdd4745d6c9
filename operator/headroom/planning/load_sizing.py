"""``spec.load`` -> what the pools need for the declared peak, with a stated chance of waiting.

Two queues stand between a request and the database, and both are M/M/s queues sized by
Erlang C (planning.queueing):

- the app pod's client pool (Prisma's connection_limit, SQLAlchemy's pool): a request
  waits in the pod when all of that pod's connections are busy. The peak is taken as
  carried by the app's floor (``replicas.min``): load arrives before an autoscaler adds
  pods, and pod-local waits are what turn a quiet database into 503s;
- each pooler pod's server pool (``default_pool_size``): a transaction waits in PgBouncer
  when all of that pod's server connections are busy. The load spreads over the pooler
  pods; the workers' database pools, whose load is not declared, keep their whole ceiling
  (counted as always busy) on top.

The server side is sized here and checked against the room the connection budget leaves
(planning.connection_budget calls :func:`server_pool`); the app side is checked against
``spec.app.poolSizePerPod`` (:func:`app_pool_problem`): the plan shows the size it needs,
the user's pool stays the user's. :func:`headroom` says how far the load may grow before
each limit breaks (``headroom plan``'s first bottleneck).

Pure: called by the planner and the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from headroom.api import v1alpha1
from headroom.planning import queueing

# Bisection steps for the largest load a number of connections carries (a relative
# precision of 2**-40, far below what the plan prints).
_CAPACITY_STEPS = 40


@dataclass(frozen=True)
class Load:
    """The declared peak, resolved to a rate."""

    field: str  # the spec field that declares it, for messages
    requests_per_second: float
    seconds_per_request: float
    target_wait_probability: float
    users: int = 0  # given as users (else a rate)
    think_seconds: float = 0.0

    @property
    def offered_load(self) -> float:
        return queueing.offered_load(
            arrivals_per_second=self.requests_per_second,
            seconds_per_request=self.seconds_per_request,
        )

    def describe(self) -> str:
        rate = f"{_number(self.requests_per_second)} requests/s"
        if self.users:
            rate = f"{self.users} users thinking {_number(self.think_seconds)} s (at most {rate})"
        return (
            f"{rate} x {_number(self.seconds_per_request)} s = "
            f"{_number(self.offered_load)} connections busy on average"
        )

    @property
    def target_text(self) -> str:
        return percent(self.target_wait_probability)


def declared(spec: v1alpha1.Load | None) -> Load | None:
    """The profile's ``spec.load``, as a rate (users with a think time become their
    largest rate: see queueing.arrivals_from_users)."""
    if spec is None:
        return None
    if spec.users is not None:
        rate = queueing.arrivals_from_users(
            users=spec.users.concurrent,
            think_seconds=spec.users.think_seconds,
            seconds_per_request=spec.database_seconds_per_request,
        )
        return Load(
            field="spec.load.users.concurrent",
            requests_per_second=rate,
            seconds_per_request=spec.database_seconds_per_request,
            target_wait_probability=spec.wait_probability,
            users=spec.users.concurrent,
            think_seconds=spec.users.think_seconds,
        )
    return Load(
        field="spec.load.peakRequestsPerSecond",
        requests_per_second=spec.peak_requests_per_second or 0.0,
        seconds_per_request=spec.database_seconds_per_request,
        target_wait_probability=spec.wait_probability,
    )


@dataclass(frozen=True)
class PoolCheck:
    """One pool (an app pod's, a pooler pod's) against the load it carries."""

    what: str  # "app pod", "pooler pod"
    pods: int  # pods the load spreads over
    busy_per_pod: float  # erlangs on each
    # None: more load per pod than any Postgres server has connections (no search)
    staffing: queueing.Staffing | None
    budget: int  # the most connections this pool may have

    @property
    def fits(self) -> bool:
        return self.staffing is not None and self.staffing.fits

    @property
    def wait_probability_at_budget(self) -> float:
        return queueing.erlang_c(
            servers=self.budget, offered_load=min(self.busy_per_pod, queueing.MAX_OFFERED_LOAD)
        )


def check(*, load: Load, what: str, pods: int, budget: int) -> PoolCheck:
    """Size one pool per pod for ``load`` spread over ``pods``, within ``budget``."""
    busy = load.offered_load / max(pods, 1)
    staffing = None
    # beyond what any Postgres server holds, no search: the answer is "no" whatever it is
    if busy <= queueing.MAX_OFFERED_LOAD:
        staffing = queueing.staff(
            offered_load=busy,
            target_wait_probability=load.target_wait_probability,
            budget=max(budget, 0),
        )
    return PoolCheck(what=what, pods=pods, busy_per_pod=busy, staffing=staffing, budget=budget)


def shortfall_text(pool: PoolCheck, *, load: Load) -> str:
    """Why ``pool`` does not carry ``load``: what it needs, and what its budget gives."""
    busy = _number(pool.busy_per_pod)
    spread = f"{busy} busy on each of {pool.pods} {pool.what}s"
    if pool.staffing is None:
        return (
            f"{load.describe()}, {spread}: more than any Postgres server has connections, "
            f"let alone the {pool.budget} each may have"
        )
    needed = pool.staffing.needed
    if pool.busy_per_pod >= pool.budget:
        at_budget = f"{pool.budget} would all be busy and the queue would grow without bound"
    else:
        at_budget = f"{pool.budget} leave {percent(pool.wait_probability_at_budget)} waiting"
    return (
        f"{load.describe()}, {spread}: a {load.target_text} chance of waiting needs "
        f"{needed} connections per {pool.what}, {needed - pool.budget} more than the "
        f"{pool.budget} each may have ({at_budget})"
    )


def app_pool(*, load: Load, floor: int, pool_size_per_pod: int) -> PoolCheck:
    """The app's client pool against the peak carried by its floor of pods."""
    return check(load=load, what="app pod", pods=floor, budget=pool_size_per_pod)


def server_pool(*, load: Load, pooler_pods: int, room_per_pod: int) -> PoolCheck:
    """Each pooler pod's server pool against the peak spread over the pooler pods."""
    return check(load=load, what="pooler pod", pods=pooler_pods, budget=room_per_pod)


def capacity(*, servers: int, target_wait_probability: float) -> float:
    """The largest load (erlangs) ``servers`` connections carry within the target.

    Erlang C rises with the load for a fixed number of servers, so bisection finds it.
    """
    if servers <= 0:
        return 0.0
    low, high = 0.0, float(servers)
    for _ in range(_CAPACITY_STEPS):
        middle = (low + high) / 2
        if queueing.erlang_c(servers=servers, offered_load=middle) <= target_wait_probability:
            low = middle
        else:
            high = middle
    return low


@dataclass(frozen=True)
class Limit:
    """How far the declared load may grow before one limit breaks."""

    what: str  # "app pool (spec.app.poolSizePerPod 10)"
    requests_per_second: float  # the largest peak this limit carries within the target

    def factor(self, load: Load) -> float:
        return self.requests_per_second / load.requests_per_second


def headroom(*, load: Load, limits: list[tuple[str, int, int]]) -> list[Limit]:
    """``limits``: (what, connections per pod, pods the load spreads over) -> the largest
    rate each carries within the target, lowest (the first bottleneck) first."""
    found = [
        Limit(
            what=what,
            requests_per_second=capacity(
                servers=servers, target_wait_probability=load.target_wait_probability
            )
            * pods
            / load.seconds_per_request,
        )
        for what, servers, pods in limits
    ]
    return sorted(found, key=lambda limit: limit.requests_per_second)


def percent(probability: float) -> str:
    """Two significant digits: 0.05 -> "5%", 0.0394 -> "3.9%", 0.00012 -> "0.012%"."""
    value = probability * 100
    return "100%" if value >= 99.5 else f"{value:.2g}%"


def _number(value: float) -> str:
    """Up to 3 significant decimals, no trailing zeros: 660.0 -> "660", 0.05 -> "0.05"."""
    if value >= 100:
        return f"{value:.0f}" if value == round(value) else f"{value:.1f}"
    return f"{value:.3g}"
