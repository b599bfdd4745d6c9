"""What a pooler's observed figures say its pool should be, always inside the budget.

One pooler pod's PgBouncer reports, for the app's database, the queries it served per
second and their mean database time (``SHOW STATS``: ``avg_query_count``,
``avg_query_time``), the clients waiting and the oldest wait (``SHOW POOLS``:
``cl_waiting``, ``maxwait``), and its server connections busy and idle (``sv_active``,
``sv_idle``). From the first two the observed offered load is ``a = lambda x W`` (Little's
law), and Erlang C (:mod:`headroom.planning.queueing`) gives the fewest server connections
whose chance of waiting meets the target. :func:`recommend` compares that with the pool
the pod has and the most the budget lets it have, and says what to change with the
figures behind it: raise the pool (it fits the budget), the budget is the limit (by how
much), or lower an idle pool. A proposed size is never above the budget.

Clients seen waiting count even when the averages say the pool suffices: averages over a
stats period hide bursts, and a waiting client is a measured fact. Lowering needs the
pool to be at least twice what the load needs, so that sizes do not swing on noise.

Pure: figures in, recommendations out. Nothing calls it yet outside the tests; it is the
logic ``status.recommendations`` is meant to be written from.
"""

from __future__ import annotations

from dataclasses import dataclass

from headroom.planning import queueing

POOL_SIZE = "default_pool_size"
# lower only when the pool is at least this many times what the load needs (hysteresis)
LOWER_WHEN_OVER = 2


@dataclass(frozen=True)
class PoolObservation:
    """One pooler pod's figures for the app's pool, and what the plan allows it."""

    pool_size: int  # its default_pool_size now
    budget: int  # the most server connections the plan lets this pod hold
    queries_per_second: float  # avg_query_count
    seconds_per_query: float  # avg_query_time, in seconds
    clients_waiting: int  # cl_waiting
    max_wait_seconds: float  # maxwait
    servers_active: int  # sv_active
    servers_idle: int  # sv_idle

    def __post_init__(self) -> None:
        for name in ("pool_size", "budget", "clients_waiting", "servers_active", "servers_idle"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("queries_per_second", "seconds_per_query", "max_wait_seconds"):
            if not getattr(self, name) >= 0:  # NaN too
                raise ValueError(f"{name} must be a number >= 0")
        if self.pool_size > self.budget:
            raise ValueError(f"pool_size {self.pool_size} is above the budget {self.budget}")


@dataclass(frozen=True)
class Recommendation:
    """One change, and why, in the figures that led to it."""

    parameter: str
    current: int
    proposed: int
    needed: int  # the fewest connections that meet the target, observed load
    fits_budget: bool  # whether ``needed`` fits; ``proposed`` always does
    reason: str


def recommend(observed: PoolObservation, *, target_wait_probability: float) -> list[Recommendation]:
    """What to change in one pod's pool (nothing when it suits the observed load)."""
    load = queueing.offered_load(
        arrivals_per_second=observed.queries_per_second,
        seconds_per_request=observed.seconds_per_query,
    )
    staffing = queueing.staff(
        offered_load=load,
        target_wait_probability=target_wait_probability,
        budget=observed.budget,
    )
    # every busy connection and every waiting client wanted one at the same moment
    seen = observed.servers_active + observed.clients_waiting
    waited = observed.clients_waiting > 0 or observed.max_wait_seconds > 0
    needed = max(staffing.needed, seen if waited else 0)
    figures = (
        f"{observed.queries_per_second:g} queries/s x {observed.seconds_per_query:g} s = "
        f"{load:.3g} connections busy on average; {observed.clients_waiting} clients "
        f"waiting (oldest {observed.max_wait_seconds:g} s), {observed.servers_active} "
        f"active and {observed.servers_idle} idle server connections"
    )
    target = f"{target_wait_probability:.3g}"
    size = observed.pool_size
    if needed > size:
        proposed = min(needed, observed.budget)
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
        )
    ]
