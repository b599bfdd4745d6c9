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

import dataclasses
from collections.abc import Iterable
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
    # the workers' jobs that declare their database time (spec.queues[].load), which
    # share the pooler's server pool with the requests: their rate and busy connections
    jobs_per_second: float = 0.0
    jobs_offered_load: float = 0.0

    @property
    def offered_load(self) -> float:
        return (
            queueing.offered_load(
                arrivals_per_second=self.requests_per_second,
                seconds_per_request=self.seconds_per_request,
            )
            + self.jobs_offered_load
        )

    @property
    def mean_seconds(self) -> float:
        """The mean time a connection is held, requests and jobs together."""
        return self.offered_load / (self.requests_per_second + self.jobs_per_second)

    def describe(self) -> str:
        rate = f"{_number(self.requests_per_second)} requests/s"
        if self.users:
            rate = f"{self.users} users thinking {_number(self.think_seconds)} s (at most {rate})"
        jobs = (
            f" + {_number(self.jobs_offered_load)} for the workers' jobs"
            if self.jobs_offered_load
            else ""
        )
        return (
            f"{rate} x {_number(self.seconds_per_request)} s{jobs} = "
            f"{_number(self.offered_load)} connections busy on average"
        )

    def with_jobs(self, queues: Iterable[tuple[v1alpha1.QueueLoad, int]]) -> Load:
        """This load with the database time of ``queues`` (their load, and their
        databasePoolSize) that declare it, on the same server pool."""
        declared = [q for q, pool in queues if pool and q.database_seconds_per_job is not None]
        return dataclasses.replace(
            self,
            jobs_per_second=sum(q.peak_jobs_per_second for q in declared),
            jobs_offered_load=sum(
                q.peak_jobs_per_second * (q.database_seconds_per_job or 0.0) for q in declared
            ),
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


def split_reads(load: Load, *, read_seconds: float | None) -> tuple[Load, Load | None]:
    """``load`` on the write pool and on the read pool: each request holds a
    read-pool connection ``read_seconds`` of its database time (spec.load.
    readSecondsPerRequest) and a primary connection the rest (None: no split)."""
    if read_seconds is None:
        return load, None
    on_primary = dataclasses.replace(
        load, seconds_per_request=load.seconds_per_request - read_seconds
    )
    return on_primary, dataclasses.replace(load, seconds_per_request=read_seconds)


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
    # Erlang C is computed up to MAX_OFFERED_LOAD: a pool larger than that (worker slots
    # may be) carries at least it
    low, high = 0.0, min(float(servers), queueing.MAX_OFFERED_LOAD)
    if servers > high and queueing.erlang_c(servers=servers, offered_load=high) <= (
        target_wait_probability
    ):
        return high
    for _ in range(_CAPACITY_STEPS):
        middle = (low + high) / 2
        if queueing.erlang_c(servers=servers, offered_load=middle) <= target_wait_probability:
            low = middle
        else:
            high = middle
    return low


@dataclass(frozen=True)
class Limit:
    """How far a declared load may grow before one limit breaks."""

    what: str  # "app pool (spec.app.poolSizePerPod 10)"
    rate: float  # the largest peak this limit carries within the target
    factor: float  # that peak over the declared one
    unit: str = "requests/s"


def headroom(*, load: Load, limits: list[tuple[str, int, int]]) -> list[Limit]:
    """``limits``: (what, connections per pod, pods the load spreads over) -> the largest
    rate each carries within the target, lowest (the first bottleneck) first."""
    found = []
    for what, servers, pods in limits:
        # the requests and any jobs on the pool taken to grow together
        factor = (
            capacity(servers=servers, target_wait_probability=load.target_wait_probability)
            * pods
            / load.offered_load
        )
        found.append(Limit(what=what, rate=factor * load.requests_per_second, factor=factor))
    return sorted(found, key=lambda limit: limit.factor)


@dataclass(frozen=True)
class WorkerCheck:
    """One queue's worker slots (replicas.max x concurrencyPerPod) against its jobs.

    Every free slot takes the next job from the one Redis list, so the slots are one
    M/M/s queue of ``slots`` servers; at peak the workers are taken at their ceiling (an
    autoscaler on the backlog gets there, the backlog growing meanwhile).

    With ``databaseSecondsPerJob``, each worker pod's database pool (``databasePoolSize``)
    is checked as the app pod's is: a pool of ``concurrencyPerPod`` or more never makes a
    job wait; a smaller one is an M/M/s queue of its own, the jobs' database time spread
    over the fewest pods that meet the target (the most per pod). Erlang C takes the
    arrivals as unlimited where a pod runs at most ``concurrencyPerPod`` jobs, so it
    overstates the wait: the fewest it gives never under-sizes."""

    queue: str
    index: int  # in spec.queues
    load: Load  # the jobs, as a rate: requests_per_second = jobs/s
    pods: int  # replicas.max
    concurrency: int
    pool: PoolCheck  # the slots, as one pool
    database_pool_size: int = 0
    database_seconds_per_job: float | None = None

    @property
    def slots(self) -> int:
        return self.pods * self.concurrency

    @property
    def fits(self) -> bool:
        return self.pool.fits

    @property
    def pods_needed(self) -> int | None:
        staffing = self.pool.staffing
        return None if staffing is None else -(-staffing.needed // self.concurrency)

    def limit(self) -> Limit:
        """How far the jobs may grow before the slots break (as a factor of the peak)."""
        rate = (
            capacity(servers=self.slots, target_wait_probability=self.load.target_wait_probability)
            / self.load.seconds_per_request
        )
        return Limit(
            what=f"workers {self.queue} (spec.queues[{self.index}].replicas.max {self.pods} x "
            f"concurrencyPerPod {self.concurrency})",
            rate=rate,
            factor=rate / self.load.requests_per_second,
            unit="jobs/s",
        )

    def _head(self) -> str:
        return (
            f"{_number(self.load.requests_per_second)} jobs/s x "
            f"{_number(self.load.seconds_per_request)} s = {_number(self.pool.busy_per_pod)} "
            f"slots busy on average; {self.pods} pods x {self.concurrency} = {self.slots} slots"
        )

    def text(self) -> str:
        """The slots against the jobs: the chance a job waits, what would do."""
        busy = self.pool.busy_per_pod
        head = f"{self.queue}: {self._head()}"
        if self.slots <= busy:
            return f"{head}: the backlog grows without bound"
        if busy > queueing.MAX_OFFERED_LOAD:
            return f"{head}: more jobs at once than any worker fleet is sized for"
        waiting = queueing.erlang_c(servers=self.slots, offered_load=busy)
        wait = queueing.mean_wait_seconds(
            servers=self.slots, offered_load=busy, seconds_per_request=self.load.seconds_per_request
        )
        text = f"{head}: {percent(waiting)} chance a job waits, mean wait {_seconds(wait)}"
        if self.pool.staffing is not None:
            text += (
                f" (fewest for {self.load.target_text}: {self.pool.staffing.needed} slots, "
                f"{self.pods_needed} pods)"
            )
        return text + self._database_text()

    def database_pool(self) -> PoolCheck | None:
        """Each worker pod's database pool against the jobs' database time (None: not
        declared, or a pool of concurrencyPerPod or more, where no job ever waits)."""
        seconds, size = self.database_seconds_per_job, self.database_pool_size
        if seconds is None or not size or size >= self.concurrency:
            return None
        pods = min(self.pods_needed or self.pods, self.pods)
        held = dataclasses.replace(self.load, seconds_per_request=seconds)
        return check(load=held, what="worker pod", pods=pods, budget=size)

    def _database_text(self) -> str:
        size = self.database_pool_size
        if self.database_seconds_per_job is None or not size:
            return ""
        pool = self.database_pool()
        if pool is None:
            return (
                f"; databasePoolSize {size} >= concurrencyPerPod {self.concurrency}: no job "
                "waits for its pod's database pool"
            )
        busy = pool.busy_per_pod
        text = f"; databasePoolSize {size}, {_number(busy)} busy on each of {pool.pods} pods: "
        if size <= busy:
            return text + "the jobs' queue for it grows without bound"
        text += (
            f"{percent(queueing.erlang_c(servers=size, offered_load=busy))} chance a job waits "
            "for it"
        )
        if pool.staffing is not None:
            fewest = min(pool.staffing.needed, self.concurrency)
            text += f" (fewest for {self.load.target_text}: {fewest})"
        return text

    def shortfall(self) -> str:
        """Why the slots do not carry the jobs (for the refusal)."""
        if self.pool.staffing is None:
            return f"{self._head()}: more jobs at once than any worker fleet is sized for"
        needed = self.pool.staffing.needed
        return (
            f"{self._head()}: a {self.load.target_text} chance that a job waits needs "
            f"{needed} slots ({self.pods_needed} pods of {self.concurrency}), "
            f"{needed - self.slots} more"
        )


def workers(
    *,
    queue: str,
    index: int,
    spec: v1alpha1.QueueLoad,
    max_pods: int,
    target: float,
    database_pool_size: int = 0,
) -> WorkerCheck:
    """A queue's worker slots (and its pods' database pools) against its declared jobs,
    at ``target`` (spec.load's, or the default chance of waiting)."""
    jobs = Load(
        field=f"spec.queues[{index}].load.peakJobsPerSecond",
        requests_per_second=spec.peak_jobs_per_second,
        seconds_per_request=spec.seconds_per_job,
        target_wait_probability=target,
    )
    slots = max_pods * spec.concurrency_per_pod
    pool = check(load=jobs, what="worker slot", pods=1, budget=slots)
    return WorkerCheck(
        queue=queue,
        index=index,
        load=jobs,
        pods=max_pods,
        concurrency=spec.concurrency_per_pod,
        pool=pool,
        database_pool_size=database_pool_size,
        database_seconds_per_job=spec.database_seconds_per_job,
    )


def percent(probability: float) -> str:
    """Two significant digits: 0.05 -> "5%", 0.0394 -> "3.9%", 0.00012 -> "0.012%"."""
    value = probability * 100
    return "100%" if value >= 99.5 else f"{value:.2g}%"


def _seconds(value: float) -> str:
    """A wait: "0.19 ms" below a second, "2.5 s" above."""
    return f"{value * 1000:.2g} ms" if value < 1 else f"{value:.2g} s"


def _number(value: float) -> str:
    """Up to 3 significant decimals, no trailing zeros: 660.0 -> "660", 0.05 -> "0.05"."""
    if value >= 100:
        return f"{value:.0f}" if value == round(value) else f"{value:.1f}"
    return f"{value:.3g}"
