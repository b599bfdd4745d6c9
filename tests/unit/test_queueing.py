"""Erlang C and the staffing built on it, against published values and an exact formula.

Every published value below is also recomputed here from Erlang's formula in exact
rational arithmetic (``_erlang_c_exact``: the textbook sum with ``a**k / k!``, no
recurrence, no floats), so a value is only kept when the formula itself confirms it.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom.planning import queueing


def _erlang_c_exact(servers: int, load: Fraction) -> Fraction:
    """Erlang C as printed in textbooks, in exact rationals."""
    queued = load**servers / math.factorial(servers) * servers / (servers - load)
    idle = sum(load**k / math.factorial(k) for k in range(servers))
    return queued / (idle + queued)


# (source, offered load, servers, published chance of waiting, published precision)
PUBLISHED = [
    # Call Centre Helper, "Erlang C formula - made simple with an easy worked example":
    # 100 calls in 30 minutes of 180 s each = 10 erlangs; 11..14 agents wait
    # 68.21 %, 44.94 %, 28.53 %, 17.41 %.
    ("call-centre-helper 10 erlangs, 11 agents", Fraction(10), 11, 0.6821, 5e-5),
    ("call-centre-helper 10 erlangs, 12 agents", Fraction(10), 12, 0.4494, 5e-5),
    ("call-centre-helper 10 erlangs, 13 agents", Fraction(10), 13, 0.2853, 5e-5),
    ("call-centre-helper 10 erlangs, 14 agents", Fraction(10), 14, 0.1741, 5e-5),
    # The M/M/m textbook exercise: 120 customers an hour, 3 minutes each (a = 6),
    # 10 assistants: "from the Erlang C curve, the probability of waiting is about 0.10".
    ("M/M/10 textbook exercise, a = 6", Fraction(6), 10, 0.10, 5e-3),
    # Wolfram's ErlangC documentation: two 1 Mbps lines, 150 packets/s of 10 kbit on
    # average (a = 150 / 100 = 1.5): the chance a packet queues, 9/14 by hand.
    ("two 1 Mbps lines, a = 1.5", Fraction(3, 2), 2, 9 / 14, 1e-12),
]


@pytest.mark.parametrize(
    ("source", "load", "servers", "published", "precision"),
    PUBLISHED,
    ids=[row[0] for row in PUBLISHED],
)
def test_erlang_c_matches_published_values(
    source: str, load: Fraction, servers: int, published: float, precision: float
) -> None:
    exact = float(_erlang_c_exact(servers, load))
    assert exact == pytest.approx(published, abs=precision), f"{source}: the formula disagrees"
    computed = queueing.erlang_c(servers=servers, offered_load=float(load))
    assert computed == pytest.approx(exact, rel=1e-12)


def test_staffing_answers_the_published_question() -> None:
    # Wolfram's ErlangC documentation: 30 calls an hour, 5 minutes each (a = 2.5); the
    # fewest people so that 90 % of calls are not delayed. 5 leave 13 % waiting, 6 leave 4.7 %.
    assert float(_erlang_c_exact(5, Fraction(5, 2))) > 0.10
    assert float(_erlang_c_exact(6, Fraction(5, 2))) <= 0.10
    needed, waiting = queueing.servers_needed(offered_load=2.5, target_wait_probability=0.10)
    assert needed == 6
    assert waiting == pytest.approx(float(_erlang_c_exact(6, Fraction(5, 2))), rel=1e-12)
    # the call-centre example: 10 erlangs and at most 20 % waiting needs 14 agents.
    assert queueing.servers_needed(offered_load=10, target_wait_probability=0.20)[0] == 14


@pytest.mark.parametrize(
    ("load", "servers"),
    [(Fraction(150), 170), (Fraction(1000), 1060), (Fraction(4321, 10), 470)],
)
def test_the_recurrence_is_exact_where_the_textbook_formula_overflows(
    load: Fraction, servers: int
) -> None:
    # 170! and 150**170 are beyond a float; the recurrence never forms them.
    with pytest.raises(OverflowError):
        float(load) ** servers / math.factorial(servers)
    computed = queueing.erlang_c(servers=servers, offered_load=float(load))
    assert computed == pytest.approx(float(_erlang_c_exact(servers, load)), rel=1e-9)


def test_erlang_b_matches_its_recurrence_definition() -> None:
    # B(2, 1.5) = (1.5**2 / 2) / (1 + 1.5 + 1.5**2 / 2) = 1.125 / 3.625
    assert queueing.erlang_b(servers=2, offered_load=1.5) == pytest.approx(1.125 / 3.625)


def test_edges() -> None:
    assert queueing.erlang_c(servers=5, offered_load=0) == 0
    assert queueing.erlang_c(servers=5, offered_load=5) == 1  # at capacity: always waits
    assert queueing.servers_needed(offered_load=0, target_wait_probability=0.05) == (0, 0.0)
    assert queueing.mean_wait_seconds(servers=3, offered_load=3, seconds_per_request=0.1) == (
        math.inf
    )
    # M/M/1: the mean wait is rho W / (1 - rho) = 0.5 x 0.1 / 0.5
    assert queueing.mean_wait_seconds(
        servers=1, offered_load=0.5, seconds_per_request=0.1
    ) == pytest.approx(0.1)
    for bad in (math.nan, math.inf, -1.0, queueing.MAX_OFFERED_LOAD + 1):
        with pytest.raises(ValueError, match="offered load"):
            queueing.erlang_c(servers=3, offered_load=bad)
    for target in (0.0, 1.0, math.nan, -0.1):
        with pytest.raises(ValueError, match="target wait probability"):
            queueing.servers_needed(offered_load=1, target_wait_probability=target)


def test_the_tail_of_the_wait() -> None:
    def tail(seconds: float) -> float:
        return queueing.wait_longer_than(
            servers=12, offered_load=10, seconds_per_request=0.1, seconds=seconds
        )

    # no time at all: every wait counts (Erlang C); then e^(-(12 - 10) t / 0.1)
    assert tail(0) == queueing.erlang_c(servers=12, offered_load=10)
    assert tail(0.05) == pytest.approx(0.44938822 * math.exp(-1), rel=1e-6)
    assert tail(0.1) < tail(0.05) < tail(0)


def test_load_from_rate_and_from_users() -> None:
    assert queueing.offered_load(arrivals_per_second=200, seconds_per_request=0.05) == 10
    # seed 003: 4,000 members, a request every 6 s, 50 ms of database each under load
    rate = queueing.arrivals_from_users(users=4000, think_seconds=6, seconds_per_request=0.05)
    assert rate == pytest.approx(4000 / 6.05)
    with pytest.raises(ValueError):
        queueing.arrivals_from_users(users=1, think_seconds=0, seconds_per_request=0)


loads = st.floats(min_value=0.001, max_value=2000, allow_nan=False)
targets = st.floats(min_value=0.0005, max_value=0.9, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(load=loads, target=targets)
def test_needed_is_the_fewest_meeting_the_target(load: float, target: float) -> None:
    needed, waiting = queueing.servers_needed(offered_load=load, target_wait_probability=target)
    assert needed > load
    assert waiting == pytest.approx(queueing.erlang_c(servers=needed, offered_load=load))
    assert waiting <= target
    assert queueing.erlang_c(servers=needed - 1, offered_load=load) > target


def _needed(load: float, target: float) -> int:
    return queueing.servers_needed(offered_load=load, target_wait_probability=target)[0]


@settings(max_examples=300, deadline=None)
@given(load_pair=st.tuples(loads, loads), target_pair=st.tuples(targets, targets))
def test_needed_is_monotonic_in_load_and_in_the_target(
    load_pair: tuple[float, float], target_pair: tuple[float, float]
) -> None:
    low, high = sorted(load_pair)
    strict, lax = sorted(target_pair)
    # more load never needs fewer connections; a stricter target never needs fewer
    assert _needed(low, lax) <= _needed(high, lax)
    assert _needed(low, strict) >= _needed(low, lax)


@settings(max_examples=200, deadline=None)
@given(load=loads, target=targets, budget=st.integers(min_value=0, max_value=2500))
def test_staffing_never_exceeds_the_budget(load: float, target: float, budget: int) -> None:
    staffing = queueing.staff(offered_load=load, target_wait_probability=target, budget=budget)
    if staffing.fits:
        assert staffing.needed <= budget
        assert staffing.shortfall == 0
    else:
        # refused, with by how much and what the whole budget would give instead
        assert staffing.shortfall == staffing.needed - budget > 0
        assert staffing.wait_probability_at_budget > target


@settings(max_examples=200, deadline=None)
@given(load=loads, target=st.floats(min_value=0.001, max_value=0.9, allow_nan=False))
def test_square_root_staffing_is_a_close_cross_check(load: float, target: float) -> None:
    staffing = queueing.staff(offered_load=load, target_wait_probability=target, budget=0)
    assert abs(staffing.square_root_estimate - staffing.needed) <= 2
