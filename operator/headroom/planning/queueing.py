"""Queueing arithmetic: how many connections a declared load needs, and its chance of waiting.

A pool of ``s`` connections serving requests that arrive at ``lambda`` per second and each
hold a connection for ``W`` seconds is an M/M/s queue with offered load ``a = lambda x W``
(erlangs: the connections busy on average). Erlang's C formula gives the probability that
a request finds every connection busy and waits; this module inverts it: the smallest ``s``
whose chance of waiting is at most a target, never more than a budget allows (a refusal
with the numbers instead).

Erlang C is computed exactly through Erlang B's recurrence
``B(0) = 1, B(k) = a B(k-1) / (k + a B(k-1))`` and ``C = s B / (s - a (1 - B))``: every
step stays in [0, 1], so neither ``a**s`` nor ``s!`` is ever formed (the textbook formula
overflows a float near s = 170). Square-root staffing (Halfin and Whitt, 1981:
``s = a + beta sqrt(a)``, ``beta`` from the target) is kept as a cross-check the tests and
``headroom plan`` compare against; it is an approximation and never the answer.

Pure: called by the planner's load sizing (planning.load_sizing) and the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# No Postgres server holds more connections than this (max_connections' upper bound),
# so a load needing more busy connections on average can be refused without a search.
MAX_OFFERED_LOAD = 262_143.0
# math.exp overflows a float above this
_EXP_MAX = 709.0


@dataclass(frozen=True)
class Staffing:
    """The answer for one pool: what a load needs and whether the budget holds it."""

    offered_load: float  # erlangs: connections busy on average
    target_wait_probability: float
    budget: int  # the most connections this pool may have
    needed: int  # the fewest connections whose chance of waiting is <= the target
    wait_probability: float  # at ``needed`` connections
    square_root_estimate: int  # Halfin-Whitt's answer for the same target, a cross-check

    @property
    def fits(self) -> bool:
        return self.needed <= self.budget

    @property
    def shortfall(self) -> int:
        """Connections missing from the budget (0 when it fits)."""
        return max(0, self.needed - self.budget)

    @property
    def wait_probability_at_budget(self) -> float:
        """The chance of waiting if the pool is given its whole budget."""
        return erlang_c(servers=self.budget, offered_load=self.offered_load)


def offered_load(*, arrivals_per_second: float, seconds_per_request: float) -> float:
    """Little's law for the busy connections: ``a = lambda x W``."""
    if arrivals_per_second < 0 or seconds_per_request < 0:
        raise ValueError("arrival rate and time per request must not be negative")
    return arrivals_per_second * seconds_per_request


def arrivals_from_users(*, users: float, think_seconds: float, seconds_per_request: float) -> float:
    """The request rate of ``users`` who each wait ``think_seconds`` between requests.

    The interactive response-time law: ``lambda = N / (Z + R)`` with R the response time.
    R is at least the database time per request, so taking R = W gives the largest rate
    these users can produce: sizing for it never under-sizes.
    """
    if users < 0 or think_seconds < 0 or seconds_per_request < 0:
        raise ValueError("users, think time and time per request must not be negative")
    cycle = think_seconds + seconds_per_request
    if cycle == 0:
        raise ValueError("think time and time per request cannot both be 0")
    return users / cycle


def erlang_b(*, servers: int, offered_load: float) -> float:
    """Erlang B: the chance that all ``servers`` are busy when nobody waits (a loss system)."""
    _check(servers=servers, offered_load=offered_load)
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = offered_load * blocking / (k + offered_load * blocking)
        if blocking == 0.0:
            # underflowed: every later step keeps it 0 (far more servers than load)
            break
    return blocking


def erlang_c(*, servers: int, offered_load: float) -> float:
    """Erlang C: the chance that a request waits for one of ``servers`` connections.

    1.0 when ``servers <= offered_load``: the queue then grows without bound.
    """
    _check(servers=servers, offered_load=offered_load)
    if offered_load == 0:
        return 0.0
    if servers <= offered_load:
        return 1.0
    blocking = erlang_b(servers=servers, offered_load=offered_load)
    return _c_from_b(servers=servers, offered_load=offered_load, blocking=blocking)


def mean_wait_seconds(*, servers: int, offered_load: float, seconds_per_request: float) -> float:
    """The mean time a request waits for a connection: ``C x W / (s - a)``."""
    if servers <= offered_load:
        return math.inf
    waiting = erlang_c(servers=servers, offered_load=offered_load)
    return waiting * seconds_per_request / (servers - offered_load)


def wait_longer_than(
    *, servers: int, offered_load: float, seconds_per_request: float, seconds: float
) -> float:
    """The chance that a request waits longer than ``seconds``: ``C e^(-(s - a) t / W)``
    (a wait, when there is one, is exponential with rate ``(s - a) / W``)."""
    waiting = erlang_c(servers=servers, offered_load=offered_load)
    if servers <= offered_load:
        return waiting
    return waiting * math.exp(-(servers - offered_load) * seconds / seconds_per_request)


def servers_needed(*, offered_load: float, target_wait_probability: float) -> tuple[int, float]:
    """The fewest servers whose chance of waiting is at most the target, and that chance.

    One pass of the recurrence: Erlang C falls strictly as servers are added (above the
    load), so the first ``s`` meeting the target is the answer.
    """
    _check(servers=0, offered_load=offered_load)
    _check_target(target_wait_probability)
    if offered_load == 0:
        return 0, 0.0
    blocking = 1.0
    servers = 0
    while True:
        servers += 1
        blocking = offered_load * blocking / (servers + offered_load * blocking)
        if servers <= offered_load:
            continue
        waiting = _c_from_b(servers=servers, offered_load=offered_load, blocking=blocking)
        if waiting <= target_wait_probability:
            return servers, waiting


def staff(*, offered_load: float, target_wait_probability: float, budget: int) -> Staffing:
    """Size one pool for a load; ``fits`` says whether the budget holds it."""
    if budget < 0:
        raise ValueError("budget must not be negative")
    needed, waiting = servers_needed(
        offered_load=offered_load, target_wait_probability=target_wait_probability
    )
    return Staffing(
        offered_load=offered_load,
        target_wait_probability=target_wait_probability,
        budget=budget,
        needed=needed,
        wait_probability=waiting,
        square_root_estimate=square_root_staffing(
            offered_load=offered_load, target_wait_probability=target_wait_probability
        ),
    )


def halfin_whitt_beta(target_wait_probability: float) -> float:
    """The ``beta`` with ``P(wait) = 1 / (1 + beta Phi(beta) / phi(beta))`` (Halfin-Whitt).

    The right side falls from 1 at beta = 0 towards 0, so bisection finds it.
    """
    _check_target(target_wait_probability)
    low, high = 0.0, 40.0
    for _ in range(200):
        middle = (low + high) / 2
        if _halfin_whitt_wait(middle) > target_wait_probability:
            low = middle
        else:
            high = middle
    return high


def square_root_staffing(*, offered_load: float, target_wait_probability: float) -> int:
    """Square-root staffing: ``ceil(a + beta sqrt(a))``; close to exact for large loads."""
    _check(servers=0, offered_load=offered_load)
    if offered_load == 0:
        return 0
    beta = halfin_whitt_beta(target_wait_probability)
    return math.ceil(offered_load + beta * math.sqrt(offered_load))


def _halfin_whitt_wait(beta: float) -> float:
    # beta Phi(beta) / phi(beta), with phi's exp(-beta**2 / 2) moved up so a large beta
    # (a tiny target) gives 0 instead of dividing by an underflowed density
    exponent = beta * beta / 2
    if exponent > _EXP_MAX:
        return 0.0
    cumulative = 0.5 * (1 + math.erf(beta / math.sqrt(2)))
    return 1 / (1 + beta * cumulative * math.sqrt(2 * math.pi) * math.exp(exponent))


def _c_from_b(*, servers: int, offered_load: float, blocking: float) -> float:
    return servers * blocking / (servers - offered_load * (1 - blocking))


def _check(*, servers: int, offered_load: float) -> None:
    if servers < 0:
        raise ValueError("servers must not be negative")
    if not (0 <= offered_load <= MAX_OFFERED_LOAD):
        raise ValueError(f"offered load must be between 0 and {MAX_OFFERED_LOAD:g} erlangs")


def _check_target(target: float) -> None:
    if not (0 < target < 1):
        raise ValueError("target wait probability must be between 0 and 1 (exclusive)")


def queue_at_least(*, servers: int, offered_load: float, waiting: int) -> float:
    """The chance that, at a random moment, ``waiting`` or more requests queue:
    ``C x (a / s)^q`` (M/M/s; 1 when the load is at or above the servers)."""
    if waiting <= 0:
        return 1.0
    if servers <= offered_load:
        return 1.0
    return (
        erlang_c(servers=servers, offered_load=offered_load) * (offered_load / servers) ** waiting
    )
